"""The everyday entry points at the root of the namespace: plan, build, build-all, the single site
steps (push, validate), cleanup and render.

`inv build-all` is the whole chain; the others run one step each, for debugging a step by hand or for a
workflow job that runs only that step.
"""

from __future__ import annotations

import sys
from pathlib import Path

from invoke.exceptions import Exit
from invoke.tasks import task

from ci.cli.common import emit_json, explained, names, run_control, show, stderr, stdout
from ci.cli.help import COMMON_HELP, EMPTY_HELP, SITE_HELP
from ci.cli.shared import (
    build_environment,
    finish,
    finish_retest,
    run_steps,
    settings_for,
    site_settings_for,
)


@task(iterable=["only"], help={**COMMON_HELP, **EMPTY_HELP, "force": "Plan every selected image as a rebuild."})
@explained
def plan(c, definitions=None, profile=None, only=None, arch=None, force=False, json=False,  # type: ignore[no-untyped-def]
         allow_empty=False):
    """Show what would be built: name, version, digest, action and reason, parents.

    Reads and validates every definition (all problems at once, one line each), computes the
    digests, and checks the local Docker engine for images that already carry them.
    Works without a Docker engine too: then every image counts as not built.
    """
    from ci import api
    from ci.pipeline.report import render_plan
    settings = settings_for(c, definitions, profile, arch)
    result = api.plan(settings, only=names(only), force=force, allow_empty=allow_empty)
    if result.engine_note:
        show(("note:", "yellow"), f" {result.engine_note}", err=True)
    for warning in result.plan.warnings:
        stderr.print(f"warning: {warning}", highlight=False, markup=False)
    if json:
        emit_json(result.plan.as_dict())
    else:
        render_plan(result.plan, stdout)


@task(iterable=["only"], help={
    **COMMON_HELP,
    **EMPTY_HELP,
    "jobs": "How many images build at once (default: ci.limits.build = 2).",
    "force": "Rebuild the selected images even when their digest is already built.",
    "no_cache": "Build without Docker's layer cache.",
})
@explained
def build(c, definitions=None, profile=None, only=None, arch=None, jobs=None, force=False, no_cache=False,  # type: ignore[no-untyped-def]
          json=False, allow_empty=False):
    """Build the images the plan says need building, with Docker, in dependency order.

    A child starts as soon as its parent is built; a failed build marks the images built on it
    "skipped: parent failed" while the others go on. One log per image, reports and an event
    stream under the run folder. Exits non-zero if anything failed.
    """
    from ci import api
    settings = settings_for(c, definitions, profile, arch)
    with run_control() as (listeners, cancel):
        report = api.build(settings, only=names(only), jobs=int(jobs) if jobs is not None else None, force=force,
                           no_cache=no_cache, listeners=listeners, cancel=cancel, allow_empty=allow_empty)
    finish(report, json)


@task(iterable=["only"], help={
    **{k: v for k, v in SITE_HELP.items() if k != "run"},
    **EMPTY_HELP,
    "jobs": "How many images build at once (default: ci.limits.build = 2).",
    "no_cache": "Build without Docker's layer cache.",
    "resume": "Continue the run with this id after a crash, without redoing its finished steps.",
    "retest": "Then re-run the tests of the images already in tested/ (see site.retest).",
})
@explained
def build_all(c, definitions=None, profile=None, only=None, arch=None, site_root=None, jobs=None, force=False,  # type: ignore[no-untyped-def]
              retry_failed=False, no_cache=False, resume=None, retest=False, json=False, allow_empty=False):
    """The whole chain: plan, build, transfer, convert, test as batch jobs, promote, report.

    Pipelined: an image moves to its next step as soon as its inputs are ready, within the
    limits of ci.limits (builds, transfers, conversions, jobs in flight). Images already in
    tested/ are skipped, those in failed/ too unless --retry-failed. The local profile creates
    the local Debian base image first when it is missing. Exits non-zero if anything failed.
    """
    from ci import api
    from ci.api import retest as retest_module
    from ci.local import services as local
    settings = site_settings_for(c, definitions, profile, arch, site_root)
    if settings.profile == "local":  # the local default builds offline: its base image is made here
        if not allow_empty:
            api.catalog(settings, allow_empty=False)  # an empty tree is said before the base image is made
        arm64 = "arm64" in settings.arches
        for line in api.ensure_local_images(settings, arm64=arm64, can_emulate=arm64 and local.binfmt_ready()):
            stderr.print(line, highlight=False, markup=False)
    with run_control() as (listeners, cancel):
        report = api.run_pipeline(settings, only=names(only), jobs=int(jobs) if jobs is not None else None,
                                  force=force, retry_failed=retry_failed, no_cache=no_cache, resume=resume,
                                  listeners=listeners, cancel=cancel,
                                  environment=build_environment, allow_empty=allow_empty)
        if retest and not cancel.is_set():  # the images settled before (and by) this run, tested again
            revalidated = retest_module.retest(settings, only=names(only), listeners=listeners, cancel=cancel)
            finish_retest(revalidated, json, run=report)
            if not report.ok:
                raise Exit(code=1)
            return
    finish(report, json)


@task(iterable=["only"], help={**SITE_HELP, **EMPTY_HELP})
@explained
def push(c, definitions=None, profile=None, only=None, arch=None, site_root=None, run=None, force=False,  # type: ignore[no-untyped-def]
         retry_failed=False, json=False, allow_empty=False):
    """Transfer step: push built images to the site's registry and stage their tests.

    Only layers the registry lacks are sent (through an SSH tunnel for a remote site).
    """
    run_steps(c, ("transfer",), definitions, profile, only, arch, site_root, run, force, retry_failed, json,
              allow_empty=allow_empty)


@task(iterable=["only"], help={**SITE_HELP, **EMPTY_HELP})
@explained
def validate(c, definitions=None, profile=None, only=None, arch=None, site_root=None, run=None, force=False,  # type: ignore[no-untyped-def]
             retry_failed=False, json=False, allow_empty=False):
    """Wait for a run's test jobs, judge them, promote to tested/ or failed/, and report.

    Jobs already submitted for the run are adopted by name, never submitted twice. Writes
    report.json, junit.xml and summary.md to the run folder (and, in GitHub Actions, its step summary).
    """
    run_steps(c, ("test", "promote"), definitions, profile, only, arch, site_root, run, force, retry_failed, json,
              allow_empty=allow_empty)


@task(help={"site_root": SITE_HELP["site_root"], "profile": COMMON_HELP["profile"],
            "days": "Remove staging folders older than this many days (default: ci.site.staging_days = 7).",
            "dry_run": "Only list what would be cancelled and removed."})
@explained
def cleanup(c, profile=None, site_root=None, days=None, dry_run=False):  # type: ignore[no-untyped-def]
    """Cancel dangling test jobs of earlier runs and remove old staging folders on the site."""
    from ci import api
    settings = site_settings_for(c, None, profile, None, site_root)
    for line in api.cleanup(settings, days=float(days) if days is not None else None, dry_run=dry_run):
        stdout.print(line, highlight=False)


@task(help={
    "name": "The image to render, e.g. tools-minimal (or amd64/tools-minimal when several arches have it).",
    "definitions": COMMON_HELP["definitions"],
    "profile": COMMON_HELP["profile"],
    "arch": COMMON_HELP["arch"],
    "out": "Write the recipe to DIR/<name>/<file> (e.g. DIR/tools-minimal/Dockerfile) instead of printing it.",
    "json": "Print the recipe, its kind, builder and build args as JSON.",
})
@explained
def render(c, name, definitions=None, profile=None, arch=None, out=None, json=False):  # type: ignore[no-untyped-def]
    """Print the exact recipe an image is built from: for Docker, the composed Dockerfile.

    It is the text the digest hashes and the builder gets (fragments and compose order applied,
    `files:` copies appended), before parent images are pinned to their tags. Byte for byte, so it
    can be compared with what another tool composes.
    """
    from ci import api
    from ci.definitions import render as render_recipe
    settings = settings_for(c, definitions, profile, arch)
    rendered = render_recipe(api.catalog(settings), name)
    path = rendered.write(Path(out)) if out else None
    if json:
        spec = rendered.spec
        emit_json({"name": spec.name, "key": spec.key, "kind": spec.kind, "builder": spec.builder,
                   "build_args": dict(spec.build_args), "recipe": rendered.recipe,
                   "file": str(path) if path else None})
    elif path is not None:
        stderr.print(f"wrote {path}", highlight=False, markup=False)
    else:
        sys.stdout.write(rendered.recipe)


TASKS = [plan, build, build_all, push, validate, cleanup, render]  # the root of the namespace
