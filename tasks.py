"""Entry points of the containers CI: one task per pipeline step, and the whole chain.

Every task parses its flags, calls the `ci` package, and prints; see `inv --list` and
`inv <task> --help`. Defaults come from invoke.yaml (profile `local`), `INVOKE_CI_*`
variables or `-f FILE`; a flag overrides them for one call.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from invoke.collection import Collection
from invoke.exceptions import Exit
from invoke.tasks import task

from ci import api, build_failures, local, site_address, site_env
from ci import retest as retest_module
from ci.cli import PROJECT_DIR, emit_json, explained, names, run_control, say, settings_from, stderr, stdout
from ci.definitions import render as render_recipe
from ci.errors import CIError
from ci.github import changes, matrix, outputs
from ci.github import jobs as gh_jobs
from ci.github import rest as gh_rest
from ci.github import summary as gh_summary_module
from ci.github import workflow as gh_workflow
from ci.local_images import foreign_base, spack_builder
from ci.openstack import helper_image, vm
from ci.report import publish_step_summary, render_plan, render_table, to_json
from ci.service import cli as service_cli
from ci.spack import buildcache as spack_buildcache
from ci.spack import janitor as spack_janitor_module
from ci.spack.settings import spack_settings

COMMON_HELP = {
    "definitions": "Folder of container definitions (default: ci.definitions, i.e. container_definitions/).",
    "profile": "Configuration profile from invoke.yaml: local, lumi, cpouta (default: ci.profile).",
    "only": "Images to select, by name or glob; repeat or separate with commas (default: all).",
    "arch": "Architecture folders to read, e.g. amd64 (default: ci.arch).",
    "json": "Print machine-readable JSON on stdout instead of the table.",
}


def _settings(c: Any, definitions: str | None, profile: str | None, arch: str | None) -> Any:
    return settings_from(c, profile=profile, definitions=definitions, arch=names(arch) or None)


@task(iterable=["only"], help={**COMMON_HELP, "force": "Plan every selected image as a rebuild."})
@explained
def plan(c, definitions=None, profile=None, only=None, arch=None, force=False, json=False):  # type: ignore[no-untyped-def]
    """Show what would be built: name, version, digest, action and reason, parents.

    Reads and validates every definition (all problems at once, one line each), computes the
    digests, and checks the local Docker engine for images that already carry them.
    Works without a Docker engine too: then every image counts as not built.
    """
    settings = _settings(c, definitions, profile, arch)
    result = api.plan(settings, only=names(only), force=force)
    if result.engine_note:
        stderr.print(f"[yellow]note:[/] {result.engine_note}", highlight=False)
    for warning in result.plan.warnings:
        stderr.print(f"warning: {warning}", highlight=False, markup=False)
    if json:
        emit_json(result.plan.as_dict())
    else:
        render_plan(result.plan, stdout)


@task(iterable=["only"], help={
    **COMMON_HELP,
    "jobs": "How many images build at once (default: ci.limits.build = 2).",
    "force": "Rebuild the selected images even when their digest is already built.",
    "no_cache": "Build without Docker's layer cache.",
})
@explained
def build(c, definitions=None, profile=None, only=None, arch=None, jobs=None, force=False, no_cache=False,  # type: ignore[no-untyped-def]
          json=False):
    """Build the images the plan says need building, with Docker, in dependency order.

    A child starts as soon as its parent is built; a failed build marks the images built on it
    "skipped: parent failed" while the others go on. One log per image, reports and an event
    stream under the run folder. Exits non-zero if anything failed.
    """
    settings = _settings(c, definitions, profile, arch)
    with run_control() as (listeners, cancel):
        report = api.build(settings, only=names(only), jobs=int(jobs) if jobs is not None else None, force=force,
                           no_cache=no_cache, listeners=listeners, cancel=cancel)
    _finish(report, json)


SITE_HELP = {
    **COMMON_HELP,
    "site_root": "Root folder of the HPC site (default: ci.site.root; locally ~/.local/share/containers-ci/site).",
    "run": "Run id whose steps to continue (default: a new run).",
    "retry_failed": "Also redo images whose digest is in failed/.",
    "force": "Redo every step of the selected images, even for tested digests.",
}


def _site_settings(c: Any, definitions: str | None, profile: str | None, arch: str | None,
                   site_root: str | None) -> Any:
    return settings_from(c, profile=profile, definitions=definitions, arch=names(arch) or None, site_root=site_root)


def _steps(c: Any, steps: tuple[str, ...], definitions: str | None, profile: str | None, only: Any, arch: str | None,
           site_root: str | None, run: str | None, force: bool, retry_failed: bool, json: bool) -> None:
    settings = _site_settings(c, definitions, profile, arch, site_root)
    with run_control() as (listeners, cancel):
        report = api.run_pipeline(settings, only=names(only), steps=steps, force=force, retry_failed=retry_failed,
                                  run_id=run, listeners=listeners, cancel=cancel)
    _finish(report, json)


@task(iterable=["only"], help={
    **{k: v for k, v in SITE_HELP.items() if k != "run"},
    "jobs": "How many images build at once (default: ci.limits.build = 2).",
    "no_cache": "Build without Docker's layer cache.",
    "resume": "Continue the run with this id after a crash, without redoing its finished steps.",
    "retest": "Then re-run the tests of the images already in tested/ (see site.retest).",
})
@explained
def build_all(c, definitions=None, profile=None, only=None, arch=None, site_root=None, jobs=None, force=False,  # type: ignore[no-untyped-def]
              retry_failed=False, no_cache=False, resume=None, retest=False, json=False):
    """The whole chain: plan, build, transfer, convert, test as batch jobs, promote, report.

    Pipelined: an image moves to its next step as soon as its inputs are ready, within the
    limits of ci.limits (builds, transfers, conversions, jobs in flight). Images already in
    tested/ are skipped, those in failed/ too unless --retry-failed. The local profile creates
    the local Debian base image first when it is missing. Exits non-zero if anything failed.
    """
    settings = _site_settings(c, definitions, profile, arch, site_root)
    if settings.profile == "local":  # the local default builds offline: its base image is made here
        stderr.print(api.ensure_base_image(settings), highlight=False)
        stderr.print(_spack_builder(settings), highlight=False)  # and the stand-in Spack builder
        if "arm64" in settings.arches:  # and the arm64 busybox base, built through QEMU
            made = foreign_base.ensure_foreign_base(api.docker_engine(settings), can_emulate=local.binfmt_ready())
            stderr.print(made, highlight=False)
    with run_control() as (listeners, cancel):
        report = api.run_pipeline(settings, only=names(only), jobs=int(jobs) if jobs is not None else None,
                                  force=force, retry_failed=retry_failed, no_cache=no_cache, resume=resume,
                                  listeners=listeners, cancel=cancel,
                                  environment=_build_environment)
        if retest and not cancel.is_set():  # the images settled before (and by) this run, tested again
            revalidated = retest_module.retest(settings, only=names(only), listeners=listeners, cancel=cancel)
            _finish_retest(revalidated, json, run=report)
            if not report.ok:
                raise Exit(code=1)
            return
    _finish(report, json)


@contextlib.contextmanager
def _build_environment(settings: Any) -> Iterator[Any]:
    """Entered by the run once it holds the site: the build VM (if any), then the site environment
    image, captured before planning because its digest is a parent of the definitions' digests."""
    with api.build_environment(settings, say=say) as built:
        _capture_site_env(built, quiet_when_off=True)
        yield built


@task(iterable=["only"], help=SITE_HELP)
@explained
def push(c, definitions=None, profile=None, only=None, arch=None, site_root=None, run=None, force=False,  # type: ignore[no-untyped-def]
         retry_failed=False, json=False):
    """Transfer step: push built images to the site's registry and stage their tests.

    Only layers the registry lacks are sent (through an SSH tunnel for a remote site).
    """
    _steps(c, ("transfer",), definitions, profile, only, arch, site_root, run, force, retry_failed, json)


@task(iterable=["only"], help=SITE_HELP)
@explained
def validate(c, definitions=None, profile=None, only=None, arch=None, site_root=None, run=None, force=False,  # type: ignore[no-untyped-def]
             retry_failed=False, json=False):
    """Wait for a run's test jobs, judge them, promote to tested/ or failed/, and report.

    Jobs already submitted for the run are adopted by name, never submitted twice. Writes
    report.json, junit.xml and summary.md to the run folder (and $GITHUB_STEP_SUMMARY).
    """
    _steps(c, ("test", "promote"), definitions, profile, only, arch, site_root, run, force, retry_failed, json)


@task(help={"site_root": SITE_HELP["site_root"], "profile": COMMON_HELP["profile"],
            "days": "Remove staging folders older than this many days (default: ci.site.staging_days = 7).",
            "dry_run": "Only list what would be cancelled and removed."})
@explained
def cleanup(c, profile=None, site_root=None, days=None, dry_run=False):  # type: ignore[no-untyped-def]
    """Cancel dangling test jobs of earlier runs and remove old staging folders on the site."""
    settings = _site_settings(c, None, profile, None, site_root)
    for line in api.cleanup(settings, days=float(days) if days is not None else None, dry_run=dry_run):
        stdout.print(line, highlight=False)


@task(iterable=["only"], help=SITE_HELP)
@explained
def site_convert(c, definitions=None, profile=None, only=None, arch=None, site_root=None, run=None, force=False,  # type: ignore[no-untyped-def]
                 retry_failed=False, json=False):
    """Convert step: make the HPC image files (.sif / .sqfs) from the site's registry.

    Uses ci.site.engine (apptainer, singularity, charliecloud, docker, or auto) and the squashfs
    compressor of ci.site.compression; an image file already converted is not made again.
    """
    _steps(c, ("convert",), definitions, profile, only, arch, site_root, run, force, retry_failed, json)


@task(iterable=["only"], help=SITE_HELP)
@explained
def site_test(c, definitions=None, profile=None, only=None, arch=None, site_root=None, run=None, force=False,  # type: ignore[no-untyped-def]
              retry_failed=False, json=False):
    """Test step: run each image's tests as batch jobs (Slurm, or directly) and judge them.

    Job names are <prefix>-<run-id>-<image>-<test>-<hash8> (the hash keeps arch, image and test apart);
    logs land in the run's staging folder.
    """
    _steps(c, ("test",), definitions, profile, only, arch, site_root, run, force, retry_failed, json)


@task(help={"site_root": SITE_HELP["site_root"], "profile": COMMON_HELP["profile"]})
@explained
def site_unlock(c, profile=None, site_root=None):  # type: ignore[no-untyped-def]
    """Remove the site lock after you checked that the run holding it is gone."""
    settings = _site_settings(c, None, profile, None, site_root)
    owner = api.open_site(settings).force_unlock()
    stdout.print(f"removed the lock of {owner.describe()}" if owner else "the site was not locked", highlight=False)


def _finish(report: Any, json: bool) -> None:
    if json:
        print(to_json(report))
    else:
        render_table(report, stdout)
    if not report.ok:
        raise Exit(code=1)


@task(help={"force": "Recreate the image even if it exists.", "profile": COMMON_HELP["profile"]})
@explained
def base_image_task(c, force=False, profile=None):  # type: ignore[no-untyped-def]
    """Create the local Debian base image (debootstrap, then docker import); a no-op when present.

    No registry can be reached from the build machines this targets, so definitions start FROM
    this image (ci.base_image.tag, default containers-ci/debian:bookworm).
    """
    settings = settings_from(c, profile=profile)
    stdout.print(api.ensure_base_image(settings, force=force))


@task()
@explained
def up(c):  # type: ignore[no-untyped-def]
    """Install (from Debian) and start the local services: Docker, sshd, Slurm, registry, Charliecloud.

    Then create the local Debian base image if it is missing (no registry can be reached).
    Idempotent: a service that already answers is left alone. Needs root to install.
    sshd listens on 127.0.0.1:2222 only, with a throw-away key, for the SSH code paths.
    """
    for line in local.up(local.ALL_SERVICES, say=lambda text: stderr.print(text)):
        stdout.print(line)
    settings = settings_from(c)
    stdout.print("base image: " + api.ensure_base_image(settings))
    stdout.print("spack builder: " + _spack_builder(settings))
    if local.binfmt_ready():
        made = foreign_base.ensure_foreign_base(api.docker_engine(settings), can_emulate=True)
        stdout.print("arm64 base image: " + made)


local_tasks = Collection("local")
local_tasks.add_task(up, name="up", default=True)
local_tasks.add_task(base_image_task, name="base-image")

site_tasks = Collection("site")
site_tasks.add_task(site_convert, name="convert")
site_tasks.add_task(site_test, name="test")
site_tasks.add_task(site_unlock, name="unlock")

ns = Collection(plan, build, build_all, push, validate, cleanup)
ns.add_collection(local_tasks)
ns.add_collection(site_tasks)


# --- build VM (OpenStack) ---
# `inv vm.start`, `vm.prepare`, `vm.status`, `vm.teardown` are the steps build-all chains on a
# profile with ci.vm.enabled (cpouta); run them one by one to debug a step on the VM by hand.


VM_COUNT_HELP = "How many build VMs (default: ci.vm.count = 1); N > 1 names them <name>-1 .. <name>-N."
VM_HELP = {
    "profile": "Configuration profile from invoke.yaml (default: ci.profile); ci.vm of that profile applies.",
    "cloud": "clouds.yaml entry (default: ci.vm.cloud, else $OS_CLOUD, else the OS_* variables).",
    "name": "Server name (default: ci.vm.name = containers-ci-build).",
}


def _say(text: str) -> None:
    stderr.print(text, highlight=False, markup=False)


def _vm_overrides(cloud: str | None, name: str | None, **more: Any) -> dict[str, Any]:
    return {"cloud": cloud, "name": name, **more}


@task(help={**VM_HELP, "json": COMMON_HELP["json"], "count": VM_COUNT_HELP,
            "image": "Image (name or id) for a new server (default: ci.vm.image, else $OS_MY_IMAGE).",
            "flavor": "Flavor for a new server (default: ci.vm.flavor, else $OS_MY_FLAVOUR, else hpc.5.64core)."})
@explained
def vm_start(c, profile=None, cloud=None, name=None, image=None, flavor=None, json=False, count=None):  # type: ignore[no-untyped-def]
    """Create the build VM, or find it again: server, key pair, security group, volume, floating IP.

    Idempotent: whatever exists is reused and only what is missing is created (a server in
    ERROR is reported, not replaced: `inv vm.teardown` first). Waits until the server is
    ACTIVE and then until SSH accepts ci.vm.ssh_key, each with a deadline (ci.vm.timeouts).
    Credentials: a clouds.yaml entry or the OS_* variables (see secrets.example/README.md).
    By hand: `openstack server show <name>`, `openstack console log show <name>`.
    Next step: `inv vm.prepare`.
    """
    settings = settings_from(c, profile=profile)
    overrides = _vm_overrides(cloud, name, image=image, flavor=flavor, count=_count(count))
    if vm.config_from(settings, **overrides).count > 1:
        _fleet_start(settings, overrides, json)
        return
    info = vm.start(settings, _say, **overrides)
    if json:
        emit_json(info.as_dict())
        return
    for line in vm.describe(settings, info, **overrides):
        stdout.print(line, highlight=False, markup=False)


@task(help={**VM_HELP,
            "address": "SSH to this address instead of asking the cloud (e.g. 127.0.0.1 for a loopback VM).",
            "device": "The volume's block device on the VM, when /dev/disk/by-id cannot tell (default: ci.vm.device)."})
@explained
def vm_prepare(c, profile=None, cloud=None, name=None, address=None, device=None):  # type: ignore[no-untyped-def]
    """Run ci/vm/prepare-vm on the build VM over SSH, then check its Docker answers from here.

    prepare-vm (copied to ~/.containers-ci/prepare-vm, run as root through sudo) mounts the
    volume at ci.vm.mount_point (formatting it only when it has no file system), points
    /var/lib/docker to it, restarts Docker and waits until it answers. Idempotent: a second
    run only checks. By hand on the VM: `sudo sh ~/.containers-ci/prepare-vm --help`.
    Then the VM's engine is DOCKER_HOST=ssh://<user>@<address> (see `inv vm.status`).
    """
    settings = settings_from(c, profile=profile)
    for line in vm.prepare(settings, _say, address=address, device=device, **_vm_overrides(cloud, name)):
        stdout.print(line, highlight=False, markup=False)


@task(help={**VM_HELP, "json": COMMON_HELP["json"], "count": VM_COUNT_HELP})
@explained
def vm_status(c, profile=None, cloud=None, name=None, json=False, count=None):  # type: ignore[no-untyped-def]
    """Show the build VM as the cloud sees it: server, address, volume, and how to reach it."""
    settings = settings_from(c, profile=profile)
    overrides = _vm_overrides(cloud, name, count=_count(count))
    if vm.config_from(settings, **overrides).count > 1:
        _fleet_status(settings, overrides, json)
        return
    info = vm.status(settings, **overrides)
    if json:
        emit_json(info.as_dict())
        return
    for line in vm.describe(settings, info, **overrides):
        stdout.print(line, highlight=False, markup=False)


@task(help={**VM_HELP, "count": VM_COUNT_HELP})
@explained
def vm_teardown(c, profile=None, cloud=None, name=None, count=None):  # type: ignore[no-untyped-def]
    """Delete the build VM and wait until it is gone; release its floating IP; keep the volume.

    Idempotent: with nothing to delete it says so and succeeds. Only a server carrying our
    mark (metadata managed-by=containers-ci) is ever deleted. build-all runs this on every
    way out of a run on a VM profile: success, failure, exception, Ctrl-C and SIGTERM.
    """
    settings = settings_from(c, profile=profile)
    overrides = _vm_overrides(cloud, name, count=_count(count))
    teardown = vm.teardown_fleet if vm.config_from(settings, **overrides).count > 1 else vm.teardown
    for line in teardown(settings, _say, **overrides):
        stdout.print(line, highlight=False, markup=False)


@task(help={"profile": COMMON_HELP["profile"], "force": "Build even if an image with the same digest exists.",
            "push": "Push after building (default: when ci.registry_prefix names a registry).",
            "no_push": "Never push, even with a registry configured."})
@explained
def openstack_image_task(c, profile=None, force=False, push=False, no_push=False):  # type: ignore[no-untyped-def]
    """Build the OpenStack helper image (ci/openstack/Dockerfile) when its inputs changed.

    The image holds the OpenStack client and this project, for CI jobs that run `inv vm.*`.
    Its tag and label carry the digest of the staged context (Dockerfile, the package, extra
    CA certificates) and the build arguments, so an unchanged image is not rebuilt. Builds
    FROM the local base image by default (ci.openstack_image.base_image), so no registry is
    needed. Usage: docker run --rm -it --env-file secrets/openrc.env <tag> openstack server list
    """
    settings = settings_from(c, profile=profile)
    result = helper_image.ensure_helper_image(api.docker_engine(settings), settings, force=force,
                                                 push=False if no_push else (True if push else None), say=_say)
    stdout.print(result.describe(), highlight=False, markup=False)


vm_tasks = Collection("vm")
vm_tasks.add_task(vm_start, name="start")
vm_tasks.add_task(vm_prepare, name="prepare")
vm_tasks.add_task(vm_status, name="status", default=True)
vm_tasks.add_task(vm_teardown, name="teardown")
openstack_tasks = Collection("openstack")
openstack_tasks.add_task(openstack_image_task, name="image")
ns.add_collection(vm_tasks)
ns.add_collection(openstack_tasks)


# --- GitHub Actions glue ---
# `inv gh.matrix` and `inv gh.changed` are what .github/workflows/containers-build.yml asks the
# package, so that the workflow itself decides nothing (see the README, "GitHub Actions").



@task(iterable=["only"], help={
    **{k: v for k, v in SITE_HELP.items() if k != "run"},
    "json": "Print the matrix as JSON ({\"include\": [...]}) instead of one line per image.",
})
@explained
def gh_matrix(c, definitions=None, profile=None, only=None, arch=None, site_root=None, force=False,  # type: ignore[no-untyped-def]
              retry_failed=False, json=False):
    """The per-image job matrix of the workflow: the images that need the site steps.

    Plans as build-all does (digests, the Docker engine, the site's tested/ and failed/). In GitHub
    Actions, writes the step outputs matrix ({"include": [...]}, empty when nothing is to do),
    has_work (true/false), images (comma separated, for --only) and count to $GITHUB_OUTPUT, and
    the plan to the step summary.
    """
    settings = _site_settings(c, definitions, profile, arch, site_root)
    result = api.plan(settings, only=names(only), force=force, site=True, retry_failed=retry_failed)
    if result.engine_note:
        stderr.print(f"[yellow]note:[/] {result.engine_note}", highlight=False)
    found = matrix.matrix_for(result.plan)
    for line in matrix.publish(result.plan, found):
        stderr.print(line, highlight=False, markup=False)
    if json:
        emit_json(found.as_github())
        return
    for item in found.entries:
        stdout.print(f"{item['image']}: {item['reason']} (build: {item['build']})", highlight=False, markup=False)
    if not found.has_work:
        stdout.print("nothing to do: every selected image is settled at the site", highlight=False)


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
    change = changes.changed_paths(names(path), since, cwd=PROJECT_DIR)
    outputs.write_outputs({output: "true" if change.changed else "false"})
    stdout.print(f"{output}: {'true' if change.changed else 'false'} ({change.reason})", highlight=False,
                 markup=False)


gh_tasks = Collection("gh")
gh_tasks.add_task(gh_matrix, name="matrix")
gh_tasks.add_task(gh_changed, name="changed")
ns.add_collection(gh_tasks)


# --- migrate (from other CIs' layouts) ---
# `inv migrate.lumi CHECKOUT --out DIR` reads a LUMI containers CI checkout (never writes to it) and
# writes our definitions; ci/migrate/lumi.py does the work and explains every refusal.


@task(help={
    "checkout": "Root of a LUMI-containers checkout (the folder holding RecipesDocker/ and Recipes/); only read.",
    "out": "Folder to write the definitions tree to (a definitions root: common/, amd64/...); must be new, empty "
           "or an earlier migration's output, which is replaced in one step.",
    "partial": "Write the recipes that translate even when others are refused (they are listed; exit 0).",
    "arch": "Architecture folder to write the definitions under (default: amd64).",
    "json": COMMON_HELP["json"],
})
@explained
def migrate_lumi(c, checkout, out, partial=False, arch="amd64", json=False):  # type: ignore[no-untyped-def]
    """Write our container definitions from a LUMI containers CI checkout.

    One variant per build-*.sh (per $DOCKERBUILD line) with its composition order, build args and
    its .test as a host-side test; common/ fragments once; helper-files/ as the image `h`;
    Recipes/*.def as .def definitions. A line of a build script it cannot translate faithfully is
    reported with its number and text, and nothing is written (exit 2) unless --partial.
    Running it twice writes the same tree.
    """
    from pathlib import Path

    from ci.migrate import lumi

    report = lumi.migrate(Path(checkout), Path(out), partial=partial, arch=arch)
    if json:
        emit_json(report.as_dict())
    else:
        for line in report.lines():
            stdout.print(line, highlight=False, markup=False)
        for problem in report.all_problems:
            stderr.print(f"problem: {problem}", highlight=False, markup=False)
        for note in report.notes:
            stderr.print(f"note: {note}", highlight=False, markup=False)
    if not report.ok:
        raise Exit(code=2)


migrate_tasks = Collection("migrate")
migrate_tasks.add_task(migrate_lumi, name="lumi")
ns.add_collection(migrate_tasks)


# --- the generated per-image workflow (gh) ---
# .github/workflows/containers-build.yml is generated from the definitions by `inv gh.workflow`; its
# jobs call `inv gh.plan` (which images need which jobs), `inv gh.build` (a build that files its
# failure on the site), `inv site.resolve` (one login node for the run) and `inv gh.summary`.


def _workflow_text(c: Any) -> tuple[str, Any]:
    base = settings_from(c)
    options = base.workflow
    settings = settings_from(c, profile=options.default_profile)
    profiles = [str(name) for name in (c.config.get("ci", {}).get("profiles") or {"local": {}})]
    return gh_workflow.render(api.catalog(settings), options, profiles), settings


@task(help={"check": "Only check that the committed file is current; exit 1 (with a diff summary) if not."})
@explained
def gh_workflow_task(c, check=False):  # type: ignore[no-untyped-def]
    """Write .github/workflows/containers-build.yml from the definitions: one job chain per image.

    build -> transfer -> test per image, a child's build after its ancestors' builds, per-image
    timeouts from ci.workflow (build_timeout, transfer_timeout, test_timeout, images.<name>.*).
    Run it after adding, removing or renaming a definition, and commit the result.
    """
    text, settings = _workflow_text(c)
    target = PROJECT_DIR / gh_workflow.WORKFLOW_FILE
    current = target.read_text(encoding="utf-8") if target.exists() else ""
    if check:
        if current != text:
            stderr.print(f"[bold red]{gh_workflow.WORKFLOW_FILE} is not current for {settings.definitions}[/]; "
                         "run `inv gh.workflow` and commit the file", highlight=False)
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
    settings = _site_settings(c, definitions, profile, arch, site_root)
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
    settings = _site_settings(c, definitions, profile, arch, site_root)
    try:
        report, recorded = gh_jobs.build_and_record(settings, only=names(only), run_id=run, force=force,
                                                    retry_failed=retry_failed, console=stderr)
    except build_failures.RecordedFailure as exc:
        for line in exc.lines:
            stderr.print(f"[bold red]not built again:[/] {line}", highlight=False)
        raise Exit(code=1) from None
    for path in recorded:
        stderr.print(f"[red]build failure recorded:[/] {path}", highlight=False)
    _finish(report, json)


@task(help={"records": "Folder with this run's downloaded run records (one sub-folder per job).",
            "run": "The workflow run's RUN_ID: only its run folders are read."})
@explained
def gh_summary(c, records=".ci-artifacts", run=None):  # type: ignore[no-untyped-def]
    """The whole workflow run in one step summary: every image's steps and a Mermaid timeline."""
    from pathlib import Path

    text = gh_summary_module.markdown(gh_summary_module.events_under(Path(records), run), run or "?")
    publish_step_summary(text)
    stdout.print(text, highlight=False, markup=False)


@task(help={"profile": COMMON_HELP["profile"],
            "output": "Name of the step output that gets the address (default: address)."})
@explained
def site_resolve(c, profile=None, output="address"):  # type: ignore[no-untyped-def]
    """Resolve the site's login host once; later jobs use that address (CI_SITE_ADDRESS) for the run.

    A round-robin name (lumi.csc.fi) would otherwise give each job another login node: another
    registry behind the tunnel, other host keys. A local site writes an empty address.
    """
    settings = settings_from(c, profile=profile)
    address = site_address.resolve(settings.site.ssh.host, settings.site.ssh.port) if settings.site.ssh else ""
    outputs.write_outputs({output: address})
    stdout.print(f"{output}: {address or '(the site is this machine)'}", highlight=False, markup=False)


gh_tasks.add_task(gh_workflow_task, name="workflow")
gh_tasks.add_task(gh_plan, name="plan")
gh_tasks.add_task(gh_build, name="build")
gh_tasks.add_task(gh_summary, name="summary")
site_tasks.add_task(site_resolve, name="resolve")


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

    name = workflow or (os.environ.get("GITHUB_WORKFLOW_REF", "").split("@", 1)[0].rsplit("/", 1)[-1]
                        or gh_workflow.WORKFLOW_FILE.name)
    ref = branch or os.environ.get("GITHUB_REF_NAME") or "main"
    try:
        sha = gh_rest.last_successful_commit(gh_rest.GitHub.from_environment(), name, ref)
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
    github = gh_rest.GitHub.from_environment()
    if wait:
        found = gh_rest.wait_for_runners(github, names(label), timeout=_seconds(timeout, "--timeout", 900),
                                         interval=_seconds(interval, "--interval", 10), say=_say)
    else:
        found = gh_rest.runners(github)
    for runner in found:
        stdout.print(f"{runner.name}: {'online' if runner.online else 'offline'} ({', '.join(sorted(runner.labels))})",
                     highlight=False, markup=False)


def _seconds(value: Any, flag: str, default: float) -> float:
    try:
        seconds = float(value) if value is not None else default
    except ValueError:
        raise Exit(f"{flag} takes a number of seconds; got {value!r}", code=2) from None
    if seconds < 0:
        raise Exit(f"{flag} takes a number of seconds >= 0; got {value!r}", code=2)
    return seconds


gh_tasks.add_task(gh_last_success, name="last-success")
gh_tasks.add_task(gh_runners, name="runners")


# --- Spack: the build cache janitor and the stand-in builder ---
# `inv spack.janitor` prunes the binary build cache (ci.spack.buildcache); `inv local.spack-builder`
# makes the stand-in builder image local runs use instead of a real Spack image.


@task(iterable=["lock"], help={
    "profile": COMMON_HELP["profile"],
    "definitions": COMMON_HELP["definitions"],
    "cache": "The build cache: a directory (v2 or v3 layout) or oci://host/name, oci+http://host/name "
             "(default: ci.spack.buildcache).",
    "max_age": "Keep unreferenced entries younger than this many days (default: 30).",
    "lock": "Another spack.lock whose hashes are kept; repeat for more (the current definitions' recorded "
            "locks are always kept).",
    "yes": "Really delete (default: a dry run that lists the entries and bytes that would go).",
    "json": COMMON_HELP["json"],
})
@explained
def spack_janitor(c, profile=None, definitions=None, cache=None, max_age=30, lock=None, yes=False, json=False):  # type: ignore[no-untyped-def]
    """Prune the Spack binary build cache: keep what current environments use and what is young.

    An entry stays when a current definition's recorded spack.lock references it or when it is
    younger than --max-age days; every other entry goes, with every entry that depends on one that
    goes (the cascade ends on any input, cycles included). Without --yes nothing is deleted: the
    listing shows what would go and how many bytes. After deleting, the cache index is rewritten.
    """
    settings = settings_from(c, profile=profile, definitions=definitions)
    spack = spack_settings(settings.section("spack"))
    url = cache or spack.buildcache
    if not url:
        raise Exit("no build cache: set ci.spack.buildcache or pass --cache", code=2)
    locks, warnings = spack_janitor_module.current_locks(settings, [Path(p) for p in names(lock)])
    keep, problems = spack_janitor_module.referenced_hashes(locks)
    store = spack_buildcache.open_store(url)
    result = spack_janitor_module.plan(store, keep_hashes=keep, max_age_days=float(max_age), now=spack_buildcache.now(),
                          warnings=[*warnings, *problems])
    spack_janitor_module.run(store, result, yes=yes)
    if json:
        emit_json(result.as_dict())
        return
    for line in spack_janitor_module.describe(result):
        stdout.print(line, highlight=False, markup=False)


@task(help={"force": "Rebuild the image even when its inputs did not change.", "profile": COMMON_HELP["profile"]})
@explained
def spack_builder_task(c, force=False, profile=None):  # type: ignore[no-untyped-def]
    """Create the STAND-IN Spack builder image (ci.spack.builder_image) FROM the local base image.

    Spack cannot be installed here, so local runs and tests build Spack definitions with a small
    program (ci/spack/standin/spack_standin.py) that implements only the spack subcommands of the
    generated Dockerfile, in Spack's file formats. Production uses a real Spack image. A no-op when
    the image exists with the same inputs.
    """
    settings = settings_from(c, profile=profile)
    stdout.print(api.ensure_base_image(settings), highlight=False)
    stdout.print(_spack_builder(settings, force=force), highlight=False)


def _spack_builder(settings: Any, force: bool = False) -> str:
    """The stand-in builder, when ci.spack.builder_image names it (a real Spack image is left alone)."""
    spack = spack_settings(settings.section("spack"))
    if spack.builder_image != spack_builder.STANDIN_TAG:
        return f"{spack.builder_image} is a real Spack image (the stand-in is not needed)"
    return spack_builder.ensure_standin_builder(api.docker_engine(settings), spack.builder_image,
                                                settings.base_image.tag, force=force)


@task(help={"force": "Recreate the image even if it exists.", "profile": COMMON_HELP["profile"]})
@explained
def arm64_base_task(c, force=False, profile=None):  # type: ignore[no-untyped-def]
    """Create the tiny arm64 base image (containers-ci/busybox:arm64) that arm64/ definitions start FROM.

    Debian's busybox-static for arm64 is fetched with apt in an amd64 stage and installed into an empty
    linux/arm64 image; its RUN steps run under QEMU, which `inv local.up` registers with binfmt_misc.
    No registry is needed. A no-op when the image exists.
    """
    settings = settings_from(c, profile=profile)
    stdout.print(foreign_base.ensure_foreign_base(api.docker_engine(settings), force=force,
                                                   can_emulate=local.binfmt_ready()), highlight=False)


spack_tasks = Collection("spack")
spack_tasks.add_task(spack_janitor, name="janitor")
local_tasks.add_task(spack_builder_task, name="spack-builder")
local_tasks.add_task(arm64_base_task, name="arm64-base")
ns.add_collection(spack_tasks)


# --- GitHub Actions runners as Slurm jobs (ci/runners) ---
# `inv runners.serve` is the long-running allocator (a systemd unit on a login node); `status` and
# `reconcile` are for the person looking after it. See the README, "GitHub Actions runners as Slurm jobs".

RUNNERS_HELP = {
    "profile": COMMON_HELP["profile"] + " ci.runners and ci.site of that profile apply.",
    "json": COMMON_HELP["json"],
}


@task(help={"profile": RUNNERS_HELP["profile"]})
@explained
def runners_serve(c, profile=None):  # type: ignore[no-untyped-def]
    """Allocate one ephemeral GitHub runner per queued job, as Slurm jobs, until SIGINT or SIGTERM.

    Polls GitHub every ci.runners.poll_interval seconds (conditional requests: an idle poll costs no
    rate limit), matches each queued job to a target of ci.runners.targets, and submits just-in-time
    runners through the site's scheduler. Reconciles with squeue and GitHub's runner list at start and
    every ci.runners.reconcile_interval seconds. Exits 0 after a clean stop; runners keep running and
    are adopted at the next start. Token from CI_GITHUB_TOKEN; one allocator per state folder (a lock).
    """
    from ci.runners import control

    control.serve(settings_from(c, profile=profile), say=_say)


@task(help=RUNNERS_HELP)
@explained
def runners_status(c, profile=None, json=False):  # type: ignore[no-untyped-def]
    """Targets, demand, runners by state, unservable jobs and the rate limit left.

    Reads the serving allocator's last poll from its state folder; when none serves, asks GitHub
    now (read-only: nothing is started or cancelled).
    """
    from ci.runners import control

    data = control.status(settings_from(c, profile=profile))
    if json:
        emit_json(data)
        return
    for line in control.render_status(data):
        stdout.print(line, highlight=False, markup=False)


@task(help=RUNNERS_HELP)
@explained
def runners_reconcile(c, profile=None, json=False):  # type: ignore[no-untyped-def]
    """One reconcile pass: adopt live runner jobs, cancel jobs whose runner is gone, delete stale runners.

    Takes the allocator's lock, so it refuses while `inv runners.serve` runs (which reconciles by itself).
    """
    from ci.runners import control

    actions = control.reconcile(settings_from(c, profile=profile))
    if json:
        emit_json({"ok": True, "actions": actions})
        return
    for line in actions:
        stdout.print(line, highlight=False, markup=False)


runners_tasks = Collection("runners")
runners_tasks.add_task(runners_serve, name="serve")
runners_tasks.add_task(runners_status, name="status", default=True)
runners_tasks.add_task(runners_reconcile, name="reconcile")
ns.add_collection(runners_tasks)


# --- image-creation service (ci/service) ---
# `inv service.serve` runs one replica; `service.token` makes an API token; `service.request` builds one
# request without a server (library mode); `service.client` talks to a running server. See the README.


@task(help={"profile": COMMON_HELP["profile"], "host": "Address to listen on (default: ci.service.host = 127.0.0.1).",
            "port": "Port to listen on (default: ci.service.port = 8080).",
            "no_workers": "Serve the API only; builds are run by other replicas."})
@explained
def service_serve(c, profile=None, host=None, port=None, no_workers=False):  # type: ignore[no-untyped-def]
    """Run the image-creation service (one replica) with uvicorn; Ctrl-C re-queues running builds.

    SQLite in the state folder by default; several replicas share a PostgreSQL database
    (ci.service.database, or $CI_SERVICE_DATABASE_URL when it holds a password).
    """
    service_cli.serve(settings_from(c, profile=profile), host=host, port=int(port) if port else None,
                      workers=not no_workers)


@task(help={"profile": COMMON_HELP["profile"], "user": "The user the token is for (created when new).",
            "admin": "Give the user the admin role (sees every build)."})
@explained
def service_token(c, user, profile=None, admin=False):  # type: ignore[no-untyped-def]
    """Make an API token for USER and print it once (only its hash is stored)."""
    print(service_cli.token(settings_from(c, profile=profile), user, admin=admin))


@task(help={"profile": COMMON_HELP["profile"], "json": COMMON_HELP["json"],
            "request": "The request file: eFlows4HPC's JSON, or {\"definition\": NAME, \"arch\", \"force\"}."})
@explained
def service_request(c, request, profile=None, json=False):  # type: ignore[no-untyped-def]
    """Build one request without a server (library mode), in the service's database and image store.

    Joins a build with the same content if one is running or finished; exits 1 if the build fails.
    """
    result = service_cli.request(settings_from(c, profile=profile), request,
                                 say=lambda text: stderr.print(text, highlight=False, markup=False))
    if json:
        emit_json(result)
    else:
        stdout.print(f"{result['status']}: {result['message']}" + (f"\n{result['path']}" if result["path"] else ""),
                     highlight=False, markup=False)
    if not result["ok"]:
        raise Exit(code=1)


@task(positional=["action"], help={
    "profile": COMMON_HELP["profile"], "action": "build, status, logs, cancel or download.",
    "id": "The build id (status, logs, cancel, download).",
    "request": "build: the request file (eFlows4HPC's JSON or ours).",
    "definition": "build: a definition name instead of a request file.",
    "arch": "build: the definition's architecture (default amd64).", "force": "build: rebuild even if built.",
    "follow": "logs: stream until the build ends.", "out": "download: the folder to write to (default: .).",
    "url": "The service (default: ci.service.url, else http://HOST:PORT of ci.service)."})
@explained
def service_client(c, action, id=None, request=None, definition=None, arch=None, force=False, follow=False,  # type: ignore[no-untyped-def]
                   out=".", url=None, profile=None):
    """Talk to a running service; the token comes from $CI_SERVICE_TOKEN (and $CI_SERVICE_USER for HTTP basic).

    Prints JSON for build, status and cancel; the log text for logs; the written file for download
    (checked against the build's sha256).
    """
    service_cli.client(settings_from(c, profile=profile), action, build_id=id, request=request,
                       definition=definition, arch=arch, force=force, follow=follow, out=out, url=url)


service_tasks = Collection("service")
service_tasks.add_task(service_serve, name="serve")
service_tasks.add_task(service_token, name="token")
service_tasks.add_task(service_request, name="request")
service_tasks.add_task(service_client, name="client")
ns.add_collection(service_tasks)

# --- the site's programming environment ---


@task(help={"profile": COMMON_HELP["profile"], "site_root": SITE_HELP["site_root"]})
@explained
def site_env_task(c, profile=None, site_root=None):  # type: ignore[no-untyped-def]
    """Tar ci.site_env.paths on the site host into the site-env image (definitions COPY --from it).

    Its content digest counts as a parent of every definition that uses the image, so a site update
    rebuilds them and an unchanged site nothing. Without ci.site_env.paths there is nothing to do.
    """
    _capture_site_env(_site_settings(c, None, profile, None, site_root))


def _capture_site_env(settings: Any, quiet_when_off: bool = False) -> None:
    options = site_env.site_env_settings(settings.section("site_env"))
    if not options.enabled:
        if not quiet_when_off:
            stdout.print("ci.site_env.paths is empty: no site environment to capture", highlight=False)
        return
    host = api.site_host(settings)
    try:
        site = api.open_site(settings, host)
        image = site_env.capture(host, site.path("staging"), options, api.docker_engine(settings), say=_say)
    finally:
        host.close()
    (stderr if quiet_when_off else stdout).print(image.describe(), highlight=False, markup=False)


site_tasks.add_task(site_env_task, name="env")


# -- definitions: the exact recipe of one image ------------------------------------------------


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
    settings = _settings(c, definitions, profile, arch)
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


ns.add_task(render)


# --- re-validation of tested images ---


@task(iterable=["only"], help={**{k: v for k, v in SITE_HELP.items() if k not in ("force", "retry_failed")},
                               "run": "Run id of this re-validation (default: a new one)."})
@explained
def site_retest(c, definitions=None, profile=None, only=None, arch=None, site_root=None, run=None,  # type: ignore[no-untyped-def]
                json=False):
    """Re-run the tests of images already in tested/: no build, no conversion, each test once.

    Each image's tested folder gets a line in its history.jsonl (verdict, metrics). A tested image
    that fails now is a REGRESSION: reported, exit 1, and the image stays in tested/ untouched.
    """
    settings = _site_settings(c, definitions, profile, arch, site_root)
    with run_control() as (listeners, cancel):
        result = retest_module.retest(settings, only=names(only), run_id=run, listeners=listeners, cancel=cancel)
    _finish_retest(result, json)


def _finish_retest(result: Any, json: bool, run: Any = None) -> None:
    if json:
        emit_json({"run": run.as_dict(), "retest": result.as_dict()} if run is not None else result.as_dict())
    else:
        if run is not None:
            render_table(run, stdout)
        render_table(result.report, stdout)
    for name in result.regressions:
        stderr.print(f"[bold red]REGRESSION:[/] {name} passed its tests when it was promoted and fails them now; "
                     "it stays in tested/ (see its history.jsonl)", highlight=False)
    if not result.ok:
        raise Exit(code=1)


site_tasks.add_task(site_retest, name="retest")


# ---- build hosts tasks (issue 23) ----
# Several build VMs (`inv vm.start --count N`, ci.vm.count) and the pool of build hosts
# (ci.build_hosts, ci.build_pool; docs/build-hosts.md). The vm.* tasks above call these helpers
# when more than one VM is asked for.

def _count(count: Any) -> int | None:
    """--count as a number (None: ci.vm.count); a bad value is one sentence, exit 2."""
    if count is None:
        return None
    try:
        value = int(str(count), 10)
    except ValueError:
        raise Exit(f"--count: {str(count)[:40]!r} is not a whole number; write e.g. --count 2", code=2) from None
    if not 1 <= value <= 64:
        raise Exit(f"--count: {value} is out of range; write a number from 1 to 64", code=2)
    return value


def _fleet_start(settings: Any, overrides: dict[str, Any], json: bool) -> None:
    infos = vm.start_fleet(settings, _say, **overrides)
    if json:
        emit_json([info.as_dict() for info in infos])
        return
    for info, name in zip(infos, vm.names(settings, **overrides), strict=True):
        for line in vm.describe(settings, info, **{**overrides, "name": name, "count": 1}):
            stdout.print(line, highlight=False, markup=False)


def _fleet_status(settings: Any, overrides: dict[str, Any], json: bool) -> None:
    found = vm.status_fleet(settings, **overrides)
    if json:
        emit_json([info.as_dict() for _, info in found])
        return
    for config, info in found:
        for line in vm.describe(settings, info, **{**overrides, "name": config.name, "count": 1}):
            stdout.print(line, highlight=False, markup=False)


@task(help={"profile": COMMON_HELP["profile"], "count": VM_COUNT_HELP,
            "output": "Also write the names as a JSON list to this GitHub step output (e.g. vms)."})
@explained
def vm_names(c, profile=None, count=None, output=None):  # type: ignore[no-untyped-def]
    """The build VMs' server names, one per line: the label each VM's runners carry besides the common ones.

    The generated workflow prepares each VM on a runner with its own label (a matrix over these names).
    """
    settings = settings_from(c, profile=profile)
    found = vm.names(settings, count=_count(count))
    if output:
        import json as json_module

        outputs.write_outputs({output: json_module.dumps(found)})
    for name in found:
        stdout.print(name, highlight=False, markup=False)


vm_tasks.add_task(vm_names, name="names")
