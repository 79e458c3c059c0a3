"""The production workflow, generated from the definitions: one job chain per image (`inv gh.workflow`).

GitHub runs a job as soon as the jobs it `needs` are done, so a chain per image gives the pipelining
`inv build-all` has, across runners: `build-<image>` (main runner) → `transfer-<image>` (transfer
runner) → `test-<image>` (a test runner: convert, then test + promote), and a child's build waits
only for its ancestors' builds. A failure stops that image's chain and its descendants' (their jobs
check the builds they depend on), while every other image goes on to tested/. Each build job has
its own `timeout-minutes` (ci.workflow), instead of one timeout for all builds.

The job set depends on the definitions, not on what needs doing: `inv gh.plan` (the prepare job)
writes a `build-<image>` / `test-<image>` step output per image, and each job's `if:` reads it, so
an image with nothing to do has its jobs skipped. The committed file must match the definitions:
`inv gh.workflow --check` (a unit test, and the prepare job) says when it does not.

Every step that runs `inv` runs it as `exec inv ...`: GitHub signals only the step's shell on a
cancel (SIGINT, SIGTERM 7.5 s later), so `inv` must *be* that process to release the site lock.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ci.config.settings import MAX_WORKFLOW_JOBS as MAX_JOBS
from ci.config.settings import WorkflowSettings
from ci.definitions import Catalog
from ci.errors import CIError, ConfigError

WORKFLOW_FILE = Path(".github") / "workflows" / "containers-build.yml"
# GitHub's documented limits: a matrix makes at most 256 jobs, a workflow file at most 500 KB. The
# generated workflow has no matrix, but keeps under the same job budget so no run meets a limit that
# GitHub applies only at run time (the run would be cancelled, the VM already billed).
MAX_FILE_BYTES = 500_000
RUNNER_LABELS = {"main": "cpouta", "transfer": "cpouta-transfer", "test": "cpouta-test"}
WEEKLY = "17 3 * * 1"  # Mondays 03:17 UTC: re-validate tested/ and keep the runners registered (14 days)


_SLUG = re.compile(r"[^A-Za-z0-9_-]")


def slug(key: str) -> str:
    """`amd64/tools-minimal` -> `amd64-tools-minimal`: a job id / output name GitHub accepts."""
    return _SLUG.sub("_", key.replace("/", "-"))


@dataclass(frozen=True)
class ImageJobs:
    """The job ids of one image's chain."""

    key: str
    name: str
    arch: str
    secrets: tuple[str, ...] = ()  # the image's BuildKit secrets: GitHub secrets of the same names

    @property
    def id(self) -> str:
        return slug(self.key)

    @property
    def build(self) -> str:
        return f"build-{self.id}"

    @property
    def transfer(self) -> str:
        return f"transfer-{self.id}"

    @property
    def test(self) -> str:
        return f"test-{self.id}"

    @property
    def build_output(self) -> str:
        return f"build-{self.id}"

    @property
    def test_output(self) -> str:
        return f"test-{self.id}"


def image_jobs(catalog: Catalog) -> list[ImageJobs]:
    """One chain per image of the catalog, parents first; two keys that map to one job id are an error."""
    from ci.plan import topological_order

    order = topological_order({key: catalog.parents.get(key, ()) for key in catalog.images})
    chains = [ImageJobs(key, catalog.images[key].name, catalog.images[key].arch, tuple(catalog.images[key].secrets))
              for key in order]
    seen: dict[str, str] = {}
    for chain in chains:
        if chain.id in seen:
            raise ConfigError(f"the images {seen[chain.id]} and {chain.key} give the same job id {chain.id}; "
                              "rename one (a '.' and a '_' read alike in job ids)")
        seen[chain.id] = chain.key
    return chains


def ancestors(catalog: Catalog, key: str) -> list[str]:
    """Every image `key` is built on, directly or not, parents first."""
    found: list[str] = []
    todo = list(catalog.parents.get(key, ()))
    while todo:
        parent = todo.pop(0)
        if parent not in found and parent in catalog.images:
            found.append(parent)
            todo += list(catalog.parents.get(parent, ()))
    return found


# --------------------------------------------------------------------------------------------
# building blocks of jobs
# --------------------------------------------------------------------------------------------

FLAGS = "${{ inputs.force && '--force' || '' }} ${{ inputs.retry-failed && '--retry-failed' || '' }}"
OPENSTACK_ENV = {
    "OS_AUTH_TYPE": "v3applicationcredential",
    "OS_AUTH_URL": "${{ vars.OS_AUTH_URL }}",
    "OS_IDENTITY_API_VERSION": "3",
    "OS_INTERFACE": "public",
    "OS_REGION_NAME": "${{ vars.OS_REGION_NAME || 'regionOne' }}",
    "OS_APPLICATION_CREDENTIAL_ID": "${{ secrets.OS_APPLICATION_CREDENTIAL_ID }}",
    "OS_APPLICATION_CREDENTIAL_SECRET": "${{ secrets.OS_APPLICATION_CREDENTIAL_SECRET }}",
}
SITE_ENV = {
    "CI_SSH_KEY_PASSPHRASE": "${{ secrets.CI_SSH_KEY_PASSPHRASE }}",
    "CI_SITE_ADDRESS": "${{ needs.prepare.outputs.site_address }}",  # one login node for the whole run
}
REGISTRY_ENV = {
    "CI_REGISTRY_USER": "${{ secrets.CI_REGISTRY_USER }}",
    "CI_REGISTRY_TOKEN": "${{ secrets.CI_REGISTRY_TOKEN }}",
}
PUBLISH_ENV = {  # ci.publish targets name these variables (docs/publish.md)
    "CI_PUBLISH_SIGNING_KEY": "${{ secrets.CI_PUBLISH_SIGNING_KEY }}",
    "CI_PUBLISH_SIGNING_PASSPHRASE": "${{ secrets.CI_PUBLISH_SIGNING_PASSPHRASE }}",
    "CI_PUBLISH_REGISTRY_USER": "${{ secrets.CI_PUBLISH_REGISTRY_USER }}",
    "CI_PUBLISH_REGISTRY_TOKEN": "${{ secrets.CI_PUBLISH_REGISTRY_TOKEN }}",
    "AWS_ACCESS_KEY_ID": "${{ secrets.CI_PUBLISH_S3_ACCESS_KEY }}",
    "AWS_SECRET_ACCESS_KEY": "${{ secrets.CI_PUBLISH_S3_SECRET_KEY }}",
}
# Pull requests from forks never reach the self-hosted runners (nor any secret): the chain's root jobs
# and the teardown run only for pushes, tags, schedules, dispatches and pull requests of this repository.
SAME_REPOSITORY = ("(github.event_name != 'pull_request' || "
                   "github.event.pull_request.head.repo.full_name == github.repository)")
PULL_REQUEST = "github.event_name == 'pull_request'"
HELPER_CONTAINER = {
    "image": "${{ vars.HELPER_IMAGE }}:latest",
    "credentials": {"username": "${{ github.actor }}", "password": "${{ secrets.GITHUB_TOKEN }}"},
    "options": "--user root",
}


def checkout(**extra: Any) -> dict[str, Any]:
    return {"uses": "actions/checkout@v5", **({"with": extra} if extra else {})}


def install_venv() -> dict[str, Any]:
    return {"name": "Install the project", "run": (
        'python3 -m venv "$RUNNER_TEMP/venv"\n'
        '"$RUNNER_TEMP/venv/bin/pip" install --quiet -e .\n'
        'echo "$RUNNER_TEMP/venv/bin" >> "$GITHUB_PATH"\n')}


def setup_python() -> list[dict[str, Any]]:
    return [{"uses": "actions/setup-python@v6", "with": {"python-version": "3.11"}},
            {"name": "Install the project", "run": "pip install --quiet -e .\n"}]


def vm_key() -> dict[str, Any]:
    return {"name": "Build VM key from the secret", "run": (
        "install -m 700 -d secrets\n"
        "(umask 077 && printf '%s\\n' \"$BUILD_VM_SSH_KEY\" > secrets/build-vm-key)\n"
        "ssh-keygen -y -f secrets/build-vm-key > secrets/build-vm-key.pub\n"),
        "env": {"BUILD_VM_SSH_KEY": "${{ secrets.BUILD_VM_SSH_KEY }}"}}


def site_known_hosts() -> dict[str, Any]:
    """The site's host keys from the repository variable SITE_KNOWN_HOSTS (host keys are public, not secrets).

    SSH to the site is strict about host keys: without this variable the runner user's own
    ~/.ssh/known_hosts must already hold the login node's key, or every site step stops.
    """
    return {"name": "Site host keys", "if": "vars.SITE_KNOWN_HOSTS != ''", "run": (
        "printf '%s\\n' \"$SITE_KNOWN_HOSTS\" > \"$RUNNER_TEMP/site_known_hosts\"\n"
        'echo "INVOKE_CI_SITE_KNOWN_HOSTS=$RUNNER_TEMP/site_known_hosts" >> "$GITHUB_ENV"\n'),
        "env": {"SITE_KNOWN_HOSTS": "${{ vars.SITE_KNOWN_HOSTS }}"}}


def inv(name: str, command: str, **extra: Any) -> dict[str, Any]:
    """A step running one `inv` command as the shell's own process (`exec`), so a cancel reaches it."""
    return {"name": name, **extra, "run": f"exec inv {command}\n"}


def upload(artifact: str) -> dict[str, Any]:
    """The job's run records; one name per attempt and job, so "Re-run all jobs" never meets an old one."""
    return {"name": "Upload the run records", "if": "always()", "uses": "actions/upload-artifact@v6", "with": {
        "name": f"runs-${{{{ github.run_attempt }}}}-{artifact}", "path": ".ci-state/runs/",
        "if-no-files-found": "ignore", "overwrite": True}}


def not_broken(jobs: Sequence[str]) -> list[str]:
    """Conditions: none of these jobs failed or was cancelled (a skipped one is fine: nothing to do)."""
    return [f"needs.{job}.result != 'failure' && needs.{job}.result != 'cancelled'" for job in jobs]


def condition(*parts: str) -> str:
    return "${{ " + " && ".join(["!cancelled()", *parts]) + " }}"


# --------------------------------------------------------------------------------------------
# the workflow
# --------------------------------------------------------------------------------------------


def render(catalog: Catalog, settings: WorkflowSettings, profiles: Sequence[str]) -> str:
    """The workflow file for these definitions, as text (deterministic: same input, same bytes)."""
    data = workflow(catalog, settings, profiles)
    text = HEADER + yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=1000, allow_unicode=True)
    if len(text.encode()) > MAX_FILE_BYTES:
        raise CIError(f"the generated workflow has {len(text.encode())} bytes, more than GitHub's "
                      f"{MAX_FILE_BYTES}; split the definitions (e.g. by architecture, ci.arch)")
    return text


def workflow(catalog: Catalog, settings: WorkflowSettings, profiles: Sequence[str]) -> dict[str, Any]:
    chains = image_jobs(catalog)
    if settings.default_profile not in profiles:
        raise ConfigError(f"ci.workflow.default_profile {settings.default_profile!r} is not a profile; "
                          f"choose one of: {', '.join(profiles)}")
    jobs: dict[str, Any] = {}
    jobs["helper-image"] = helper_image_job()
    jobs["start-vm"] = start_vm_job()
    jobs["prepare-vms"] = prepare_vms_job()
    jobs["prepare"] = prepare_job(chains)
    by_key = {chain.key: chain for chain in chains}
    for chain in chains:
        built_on = [by_key[key] for key in ancestors(catalog, chain.key)]
        jobs.update(image_chain(chain, built_on, settings))
    image_job_ids = [job for chain in chains for job in (chain.build, chain.transfer, chain.test)]
    jobs["retest"] = retest_job([chain.test for chain in chains])
    jobs["spack-janitor"] = spack_janitor_job([chain.build for chain in chains])
    jobs["publish"] = publish_job([chain.test for chain in chains])
    jobs["summary"] = summary_job([*image_job_ids, "retest", "publish"])
    jobs["teardown"] = teardown_job(["start-vm", "prepare-vms", "prepare", *image_job_ids, "retest", "spack-janitor",
                                     "publish"])
    if len(jobs) > settings.max_jobs:
        raise CIError(f"{len(chains)} images need {len(jobs)} jobs, more than ci.workflow.max_jobs "
                      f"({settings.max_jobs}; GitHub makes at most {MAX_JOBS} jobs of a matrix); split the "
                      "definitions (e.g. one workflow per architecture, ci.arch)")
    return {
        "name": "containers-build",
        "on": triggers(profiles, settings.default_profile),
        "concurrency": {"group": "containers-pipeline", "cancel-in-progress": False},
        "permissions": {"contents": "read"},
        "env": {
            "RUN_ID": "gh-${{ github.run_id }}-${{ github.run_attempt }}",
            "CI_PROFILE": f"${{{{ inputs.profile || '{settings.default_profile}' }}}}",
            "CONTAINERS": "${{ inputs.containers }}",
            "INVOKE_CI_STATE_DIR": ".ci-state",
            "INVOKE_CI_DOCKER_HOST": "unix:///var/run/docker.sock",
            # Several build VMs (docs/build-hosts.md): how many, and the build registry they share
            # (images by digest, BuildKit cache); one VM and no build registry when unset.
            "INVOKE_CI_VM_COUNT": "${{ vars.BUILD_VMS || '1' }}",
            "INVOKE_CI_BUILD_POOL_REGISTRY": "${{ vars.BUILD_REGISTRY }}",
            "PYTHONUNBUFFERED": "1",
        },
        "jobs": jobs,
    }


def triggers(profiles: Sequence[str], default_profile: str) -> dict[str, Any]:
    return {
        "workflow_dispatch": {"inputs": {
            "containers": {"description": "Images to build, by name or glob, comma separated (empty: every "
                                          "image that needs work)", "type": "string", "default": ""},
            "force": {"description": "Redo every step of the selected images, even for tested digests",
                      "type": "boolean", "default": False},
            "retry-failed": {"description": "Also redo images whose digest is in failed/ (a failed build too)",
                             "type": "boolean", "default": False},
            "profile": {"description": "Configuration profile from invoke.yaml", "type": "choice",
                        "options": list(profiles), "default": default_profile},
            "retest": {"description": "Also re-run the tests of every image in tested/ (as the weekly run does)",
                       "type": "boolean", "default": False},
            "helper-image": {"description": "Rebuild the OpenStack helper image even if its inputs did not change",
                             "type": "boolean", "default": False},
        }},
        # a tag runs the whole chain and publishes (tags are not filtered by paths)
        "push": {"branches": ["main"], "tags": ["**"],
                 "paths": ["container_definitions/**", "ci/**", "pyproject.toml"]},
        # a pull request runs plan, build and test; its result is the PR's status check; nothing is
        # promoted into tested/ nor published
        "pull_request": {"branches": ["main"], "paths": ["container_definitions/**", "ci/**", "pyproject.toml"]},
        "schedule": [{"cron": WEEKLY}],
    }


def helper_image_job() -> dict[str, Any]:
    rebuild = "steps.changed.outputs.rebuild == 'true' || inputs.helper-image"
    return {
        "name": "helper image", "if": "${{ " + SAME_REPOSITORY + " }}", "runs-on": "ubuntu-latest",
        "timeout-minutes": 30,
        "permissions": {"contents": "read", "packages": "write", "actions": "read"},
        "steps": [
            checkout(**{"fetch-depth": 0}), *setup_python(),
            # The commit of the last successful run, not github.event.before: a push whose pending run
            # was replaced (the concurrency group keeps one) would otherwise never be compared.
            inv("The commit of the last successful run", "gh.last-success --output since", id="last",
                env={"GITHUB_TOKEN": "${{ secrets.GITHUB_TOKEN }}"}),
            # The image holds the OpenStack client and the project's dependencies; the jobs that use it
            # run the checked-out tasks.py and ci/, so only the Dockerfile and pyproject.toml matter.
            inv("Did the helper image's inputs change?", 'gh.changed --path ci/openstack/Dockerfile --path '
                'pyproject.toml --since "$SINCE" --output rebuild', id="changed",
                env={"SINCE": "${{ steps.last.outputs.since }}"}),
            {"name": "Log in to the registry", "if": rebuild, "uses": "docker/login-action@v4",
             "with": {"registry": "ghcr.io", "username": "${{ github.actor }}",
                      "password": "${{ secrets.GITHUB_TOKEN }}"}},
            {"name": "Pull the base image", "if": rebuild, "run": "docker pull debian:bookworm\n"},
            inv("Build and push the helper image", "openstack.image --profile local --push", **{"if": rebuild},
                env={"INVOKE_CI_OPENSTACK_IMAGE_REPOSITORY": "${{ vars.HELPER_IMAGE }}",
                     "INVOKE_CI_OPENSTACK_IMAGE_BASE_IMAGE": "debian:bookworm"}),
        ],
    }


def start_vm_job() -> dict[str, Any]:
    labels = " ".join(f"--label {label}" for label in RUNNER_LABELS.values())
    return {
        "name": "start VM", "needs": "helper-image", "runs-on": "ubuntu-latest", "timeout-minutes": 45,
        "permissions": {"contents": "read", "packages": "read"}, "container": HELPER_CONTAINER,
        "outputs": {"vms": "${{ steps.vms.outputs.vms }}"},
        "env": {**OPENSTACK_ENV, "OS_MY_IMAGE": "${{ vars.OS_MY_IMAGE }}",
                "OS_MY_FLAVOUR": "${{ vars.OS_MY_FLAVOUR }}"},
        "steps": [
            checkout(), vm_key(),
            # A VM left by a force-cancelled run (its teardown never ran) is deleted, never reused: its
            # Docker and runners are in an unknown state. One pipeline at a time, so it is no one's.
            inv("Delete a VM left by an earlier run", "vm.teardown"),
            inv("Start the build VM", "vm.start"),
            # The VM bills from here on: if its runners do not come online, fail now (teardown follows)
            # instead of letting the prepare job queue for 24 hours.
            inv("Wait for the VM's runners to come online", f"gh.runners --wait {labels} --timeout 900",
                env={"GITHUB_TOKEN": "${{ secrets.RUNNERS_TOKEN }}"}),
            # Each VM's runners carry the common labels plus the VM's name: the matrix of prepare-vms.
            inv("The build VMs' names", "vm.names --output vms", id="vms"),
        ],
    }


def prepare_vms_job() -> dict[str, Any]:
    """prepare-vm on every build VM (vars.BUILD_VMS of them), each on a runner of that VM (its name as label).

    Build jobs then run on whichever VM has a free runner (the common label); a child built on
    another VM than its parent gets the parent from the build registry by digest.
    """
    return {
        "name": "prepare ${{ matrix.vm }}", "needs": "start-vm",
        "strategy": {"matrix": {"vm": "${{ fromJSON(needs.start-vm.outputs.vms) }}"}, "fail-fast": True},
        "runs-on": ["self-hosted", "${{ matrix.vm }}"], "timeout-minutes": 60,
        "env": {"CI_SSH_KEY_PASSPHRASE": "${{ secrets.CI_SSH_KEY_PASSPHRASE }}"},
        "steps": [checkout(), install_venv(), vm_key(),
                  inv("Prepare this VM (volume, Docker)", "vm.prepare --address 127.0.0.1"),
                  upload("prepare-${{ matrix.vm }}")],
    }


def prepare_job(chains: Sequence[ImageJobs]) -> dict[str, Any]:
    outputs = {"has_work": "${{ steps.plan.outputs.has_work }}",
               "site_address": "${{ steps.site.outputs.address }}"}
    for chain in chains:
        outputs[chain.build_output] = f"${{{{ steps.plan.outputs.{chain.build_output} }}}}"
        outputs[chain.test_output] = f"${{{{ steps.plan.outputs.{chain.test_output} }}}}"
    return {
        "needs": ["start-vm", "prepare-vms"], "runs-on": ["self-hosted", RUNNER_LABELS["main"]],
        "timeout-minutes": 60,
        "env": {"CI_SSH_KEY_PASSPHRASE": "${{ secrets.CI_SSH_KEY_PASSPHRASE }}"}, "outputs": outputs,
        "steps": [
            checkout(), install_venv(), site_known_hosts(), vm_key(),
            inv("The workflow matches the definitions", "gh.workflow --check"),
            # This runner is on the VM: no cloud credential is needed (nor sent) to find its address.
            inv("Prepare the VM (volume, Docker)", "vm.prepare --address 127.0.0.1"),
            inv("Pin one address of the site's login host for the run", "site.resolve --output address", id="site"),
            inv("Cancel the jobs of dead runs, remove old staging folders", "cleanup",
                env={"CI_SITE_ADDRESS": "${{ steps.site.outputs.address }}"}),
            inv("Capture the site's programming environment (ci.site_env)", "site.env",
                env={"CI_SITE_ADDRESS": "${{ steps.site.outputs.address }}"}),
            inv("Plan: which images need which jobs", f'gh.plan --only "$CONTAINERS" {FLAGS}', id="plan",
                env={"CI_SITE_ADDRESS": "${{ steps.site.outputs.address }}"}),
            upload("prepare"),
        ],
    }


def image_chain(chain: ImageJobs, built_on: Sequence[ImageJobs], settings: WorkflowSettings) -> dict[str, Any]:
    """build → transfer → test for one image; each job stops when a build it depends on broke."""
    ancestor_builds = [parent.build for parent in built_on]
    only = f'--only "{chain.name}"'
    build = {
        "name": f"build {chain.name} ({chain.arch})", "needs": ["prepare", *ancestor_builds],
        "if": condition("needs.prepare.result == 'success'", f"needs.prepare.outputs.{chain.build_output} == 'true'",
                        *not_broken(ancestor_builds)),
        "runs-on": ["self-hosted", RUNNER_LABELS["main"]], "timeout-minutes": settings.timeout(chain.name, "build"),
        "env": {**SITE_ENV, "IMAGE": chain.name, **{name: f"${{{{ secrets.{name} }}}}" for name in chain.secrets}},
        "steps": [checkout(), install_venv(), site_known_hosts(),
                  inv("Build (a failure is recorded for its digest on the site)",
                      f'gh.build --run "$RUN_ID" {only} {FLAGS}'),
                  upload(chain.build)],
    }
    transfer = {
        "name": f"transfer {chain.name} ({chain.arch})", "needs": ["prepare", chain.build, *ancestor_builds],
        "if": condition("needs.prepare.result == 'success'", f"needs.prepare.outputs.{chain.test_output} == 'true'",
                        *not_broken([chain.build, *ancestor_builds])),
        "runs-on": ["self-hosted", RUNNER_LABELS["transfer"]],
        "timeout-minutes": settings.timeout(chain.name, "transfer"),
        "env": {**SITE_ENV, **REGISTRY_ENV},
        "steps": [checkout(), install_venv(), site_known_hosts(),
                  inv("Push to the site's registry, stage the tests", f'push --run "$RUN_ID" {only} {FLAGS}'),
                  upload(chain.transfer)],
    }
    test = {
        "name": f"test {chain.name} ({chain.arch})", "needs": ["prepare", chain.transfer],
        "if": condition(f"needs.{chain.transfer}.result == 'success'"),
        "runs-on": ["self-hosted", RUNNER_LABELS["test"]], "timeout-minutes": settings.timeout(chain.name, "test"),
        "env": {**SITE_ENV, **REGISTRY_ENV},
        "steps": [checkout(), install_venv(), site_known_hosts(),
                  inv("Convert to the site's image format", f'site.convert --run "$RUN_ID" {only} {FLAGS}'),
                  # after a failed conversion this step does not run: no test job is submitted for it
                  inv("Run the tests as batch jobs, judge, promote", f'validate --run "$RUN_ID" {only} {FLAGS}',
                      **{"if": f"${{{{ !({PULL_REQUEST}) }}}}"}),
                  # a pull request's images are tested in staging and never promoted into tested/
                  inv("Run the tests as batch jobs and judge them (pull request: no promotion)",
                      f'site.test --run "$RUN_ID" {only}', **{"if": f"${{{{ {PULL_REQUEST} }}}}"}),
                  upload(chain.test)],
    }
    return {chain.build: build, chain.transfer: transfer, chain.test: test}


def retest_job(test_jobs: Sequence[str]) -> dict[str, Any]:
    """Weekly (and on request): the tests of every image in tested/ again, after this run's own tests."""
    return {
        "name": "re-validate tested images", "needs": ["prepare", *test_jobs],
        "if": condition("needs.prepare.result == 'success'",
                        "(github.event_name == 'schedule' || inputs.retest)"),
        "runs-on": ["self-hosted", RUNNER_LABELS["test"]], "timeout-minutes": 360,
        "env": {**SITE_ENV, **REGISTRY_ENV},
        "steps": [checkout(), install_venv(), site_known_hosts(),
                  inv("Re-run the tests of every image in tested/", 'site.retest --run "$RUN_ID-retest"'),
                  upload("retest")],
    }


def spack_janitor_job(build_jobs: Sequence[str]) -> dict[str, Any]:
    """Weekly: prune the Spack build cache after this run's builds (their locks are what is kept).

    The listing goes to the step summary; it deletes only when ci.spack.janitor.delete is true
    (`inv spack.janitor --scheduled`). An S3 cache is pruned in place with the credentials below.
    """
    return {
        "name": "prune the Spack build cache", "needs": ["prepare", *build_jobs],
        "if": condition("needs.prepare.result == 'success'", "github.event_name == 'schedule'"),
        "runs-on": ["self-hosted", RUNNER_LABELS["main"]], "timeout-minutes": 120,
        "env": {name: f"${{{{ secrets.{name} }}}}" for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
        "steps": [checkout(), install_venv(), inv("Prune the build cache (report in the step summary)",
                                                  "spack.janitor --scheduled"), upload("spack-janitor")],
    }


def publish_job(test_jobs: Sequence[str]) -> dict[str, Any]:
    """Pushes to the default branch and tags: what tested/ holds goes to the targets of ci.publish that
    lack it (`inv publish`: only tested digests, only once), after every image's tests."""
    return {
        "name": "publish tested images", "needs": ["prepare", *test_jobs],
        "if": condition("needs.prepare.result == 'success'", "github.event_name == 'push'"),
        "runs-on": ["self-hosted", RUNNER_LABELS["main"]], "timeout-minutes": 360,
        "env": {**SITE_ENV, **REGISTRY_ENV, **PUBLISH_ENV},
        "steps": [checkout(), install_venv(), site_known_hosts(),
                  inv("Publish what was tested and is not published yet", "publish"),
                  upload("publish")],
    }


def summary_job(image_jobs: Sequence[str]) -> dict[str, Any]:
    return {
        "name": "summary", "needs": ["prepare", *image_jobs], "if": "always()",
        "runs-on": "ubuntu-latest", "timeout-minutes": 15,
        "steps": [checkout(), *setup_python(),
                  {"name": "Download this attempt's run records", "uses": "actions/download-artifact@v7",
                   "with": {"pattern": "runs-${{ github.run_attempt }}-*", "path": ".ci-artifacts"}},
                  inv("Table and timeline of the run (step summary)", 'gh.summary --records .ci-artifacts '
                      '--run "$RUN_ID"')],
    }


def teardown_job(vm_users: Sequence[str]) -> dict[str, Any]:
    return {
        "name": "teardown",
        # Every job that uses the VM, so the VM outlives them; always(): after success, failure,
        # skipped jobs and cancellation alike. The volume (Docker's layer cache) is kept.
        "needs": list(vm_users), "if": "${{ always() && " + SAME_REPOSITORY + " }}", "runs-on": "ubuntu-latest",
        "timeout-minutes": 30,
        "permissions": {"contents": "read", "packages": "read"}, "container": HELPER_CONTAINER,
        "env": dict(OPENSTACK_ENV),
        "steps": [checkout(), inv("Delete the build VM", "vm.teardown")],
    }


HEADER = """\
# GENERATED by `inv gh.workflow` from container_definitions/ and ci.workflow (invoke.yaml): do not edit by
# hand; change ci/github/workflow.py or the definitions and run `inv gh.workflow` again. The prepare job
# and a unit test check that this file is current (`inv gh.workflow --check`).
#
# The pipeline in production: helper image -> start VM -> prepare -> per image: build -> transfer ->
# test (convert, test, promote) -> publish (pushes and tags) -> summary; teardown always. Pull requests of
# this repository build and test without promoting or publishing; those of forks run nothing here.
# See docs/frontends/github-workflow.md and docs/publish.md.
"""


class _Dumper(yaml.SafeDumper):
    """Block style; multi-line strings (run: scripts) as literal blocks."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _string)
