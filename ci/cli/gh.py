"""`inv gh.*`: what the generated GitHub workflow's jobs call beyond the plain steps, and the workflow
itself (`gh.workflow`).
"""

from __future__ import annotations

from pathlib import Path

from invoke.collection import Collection
from invoke.exceptions import Exit
from invoke.tasks import task

from ci.cli.common import PROJECT_DIR, emit_json, explained, names, say, show, stderr, stdout
from ci.cli.help import SITE_HELP
from ci.cli.shared import finish, seconds, site_settings_for, workflow_text
from ci.errors import CIError


@task(iterable=["path"], help={
    "path": "A file or folder to watch, relative to the repository; repeat for more.",
    "since": "The commit to compare HEAD with (in a push: github.event.before); empty: a manual run, unchanged.",
    "output": "Name of the step output that gets true or false (default: changed).",
})
@explained
def gh_changed(c, path=None, since=None, output="changed"):  # type: ignore[no-untyped-def]
    """Say whether the watched files changed since a commit; writes <output>=true|false to $GITHUB_OUTPUT.

    Used to rebuild the OpenStack helper image only when its Dockerfile changed. A new branch or a
    commit git does not know counts as changed; exits 0 either way.
    """
    from ci.github import changes, outputs
    change = changes.changed_paths(names(path), since, cwd=PROJECT_DIR)
    outputs.write_outputs({output: "true" if change.changed else "false"})
    stdout.print(f"{output}: {'true' if change.changed else 'false'} ({change.reason})", highlight=False,
                 markup=False)


@task(help={"check": "Only check that the committed file is current; exit 1 (with a diff summary) if not."})
@explained
def gh_workflow_task(c, check=False):  # type: ignore[no-untyped-def]
    """Write .github/workflows/containers-build.yml from the definitions: one job chain per image.

    build -> transfer -> test per image, a child's build after its ancestors' builds, per-image
    timeouts from ci.workflow (build_timeout, transfer_timeout, test_timeout, images.<name>.*).
    Run it after adding, removing or renaming a definition, and commit the result.
    """
    from ci.github import workflow as gh_workflow
    text, settings = workflow_text(c)
    target = PROJECT_DIR / gh_workflow.WORKFLOW_FILE
    current = target.read_text(encoding="utf-8") if target.exists() else ""
    if check:
        if current != text:
            show((f"{gh_workflow.WORKFLOW_FILE} is not current for {settings.definitions}", "bold red"),
                 "; run `inv gh.workflow` and commit the file", err=True)
            raise Exit(code=1)
        stdout.print(f"{gh_workflow.WORKFLOW_FILE} is current", highlight=False)
        return
    target.write_text(text, encoding="utf-8")
    stdout.print(f"wrote {gh_workflow.WORKFLOW_FILE} ({'unchanged' if current == text else 'changed'})",
                 highlight=False)


@task(iterable=["only"], help={**{k: v for k, v in SITE_HELP.items() if k != "run"},
                               "json": "Print JSON: the step outputs and each image's work and reason."})
@explained
def gh_plan(c, definitions=None, profile=None, only=None, arch=None, site_root=None, force=False,  # type: ignore[no-untyped-def]
            retry_failed=False, json=False):
    """Which image needs a build and which the site steps in this run: the generated workflow's switches.

    Writes build-<image> and test-<image> (true/false), has_work and images to $GITHUB_OUTPUT, and
    the plan to the step summary. A build that failed before is reported with its log, not retried
    (unless --retry-failed), and the images built on it are blocked.
    """
    from ci.github import outputs
    from ci.github import workflow_calls as gh_jobs
    from ci.github.outputs import publish_step_summary
    settings = site_settings_for(c, definitions, profile, arch, site_root)
    work = gh_jobs.plan_work(settings, only=names(only), force=force, retry_failed=retry_failed)
    found = work.outputs()
    outputs.write_outputs(found)
    publish_step_summary(work.markdown())
    if json:
        emit_json({"outputs": found, "images": [image.__dict__ for image in work.images]})
        return
    for line in work.lines():
        stdout.print(line, highlight=False, markup=False)


@task(iterable=["only"], help={**{k: v for k, v in SITE_HELP.items() if k != "retry_failed"},
                               "run": "Run id (the workflow's RUN_ID), for the run records and the failed/ entry.",
                               "retry_failed": "Build a digest whose build failed before (else it is reported)."})
@explained
def gh_build(c, definitions=None, profile=None, only=None, arch=None, site_root=None, run=None, force=False,  # type: ignore[no-untyped-def]
             retry_failed=False, json=False):
    """Build the selected images; a failed build is filed on the site under failed/ with its log.

    So the next run reports it ("its build failed in run ...; log: ...") instead of building it
    again, until the definition changes (a new digest) or --retry-failed is given.
    """
    from ci.github import workflow_calls as gh_jobs
    from ci.pipeline import failures as build_failures
    settings = site_settings_for(c, definitions, profile, arch, site_root)
    try:
        report, recorded = gh_jobs.build_and_record(settings, only=names(only), run_id=run, force=force,
                                                    retry_failed=retry_failed, console=stderr)
    except build_failures.RecordedFailure as exc:
        for line in exc.lines:
            show(("not built again:", "bold red"), f" {line}", err=True)
        raise Exit(code=1) from None
    for path in recorded:
        show(("build failure recorded:", "red"), f" {path}", err=True)
    finish(report, json)


@task(help={"records": "Folder with this run's downloaded run records (one sub-folder per job).",
            "run": "The workflow run's RUN_ID: only its run folders are read."})
@explained
def gh_summary(c, records=".ci-artifacts", run=None):  # type: ignore[no-untyped-def]
    """The whole workflow run in one step summary: every image's steps and a Mermaid timeline."""
    from ci.github import summary as gh_summary_module
    from ci.github.outputs import publish_step_summary

    text = gh_summary_module.markdown(gh_summary_module.events_under(Path(records), run), run or "?")
    publish_step_summary(text)
    stdout.print(text, highlight=False, markup=False)


@task(help={"workflow": "Workflow file name or id (default: this run's workflow, else containers-build.yml).",
            "branch": "Branch whose runs count (default: $GITHUB_REF_NAME, else main).",
            "output": "Name of the step output that gets the commit (default: since)."})
@explained
def gh_last_success(c, workflow=None, branch=None, output="since"):  # type: ignore[no-untyped-def]
    """The commit of the workflow's last successful run, for `inv gh.changed --since` ($GITHUB_TOKEN).

    Not github.event.before: a push whose pending run was replaced would never be compared. With no
    successful run yet, or when the API cannot tell, the answer is the null commit: "changed".
    """
    import os

    from ci.github import actions as gh_actions
    from ci.github import changes, outputs
    from ci.github import workflow as gh_workflow

    name = workflow or (os.environ.get("GITHUB_WORKFLOW_REF", "").split("@", 1)[0].rsplit("/", 1)[-1]
                        or gh_workflow.WORKFLOW_FILE.name)
    ref = branch or os.environ.get("GITHUB_REF_NAME") or "main"
    gh_actions.check_workflow(name)  # a bad --workflow is the caller's mistake: exit 2, not "changed"
    try:
        github = gh_actions.from_environment()
        try:
            sha = github.last_successful_commit(name, ref)
        finally:
            github.close()
        reason = f"last successful run of {name} on {ref}" if sha else f"no successful run of {name} on {ref} yet"
    except CIError as exc:
        sha, reason = None, f"cannot ask GitHub ({exc}); counting everything as changed"
    outputs.write_outputs({output: sha or changes.NULL_COMMIT})
    stdout.print(f"{output}: {sha or changes.NULL_COMMIT} ({reason})", highlight=False, markup=False)


@task(iterable=["label"], help={
    "label": "A runner label that needs an online runner; repeat for more.",
    "wait": "Wait until every label has one (else only list the runners).",
    "timeout": "Seconds to wait before failing (default: 900).",
    "interval": "Seconds between two looks (default: 10).",
})
@explained
def gh_runners(c, label=None, wait=False, timeout=None, interval=None):  # type: ignore[no-untyped-def]
    """List the repository's self-hosted runners; with --wait, fail unless each label has an online one.

    Needs $GITHUB_TOKEN with "Administration: read" (the workflow's RUNNERS_TOKEN secret).
    """
    from ci.github import actions as gh_actions
    github = gh_actions.from_environment()
    try:
        if wait:
            found = gh_actions.wait_for_runners(github, names(label), timeout=seconds(timeout, "--timeout", 900),
                                                interval=seconds(interval, "--interval", 10), say=say)
        else:
            found = github.runners()
    finally:
        github.close()
    for runner in found:
        state = "online" if runner.online else "offline"
        stdout.print(f"{runner.name}: {state} ({', '.join(sorted(runner.label_names))})", highlight=False, markup=False)


ns = Collection("gh")
ns.add_task(gh_changed, name="changed")
ns.add_task(gh_workflow_task, name="workflow")
ns.add_task(gh_plan, name="plan")
ns.add_task(gh_build, name="build")
ns.add_task(gh_summary, name="summary")
ns.add_task(gh_last_success, name="last-success")
ns.add_task(gh_runners, name="runners")
