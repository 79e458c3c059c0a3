"""Entry points of the containers CI: one task per pipeline step, and the whole chain.

Every task parses its flags, calls the `ci` package, and prints; see `inv --list` and
`inv <task> --help`. Defaults come from invoke.yaml (profile `local`), `INVOKE_CI_*`
variables or `-f FILE`; a flag overrides them for one call.
"""

from __future__ import annotations

from typing import Any

from invoke import Collection, task
from invoke.exceptions import Exit

from ci import api, base_image, local
from ci.cli import emit_json, explained, names, settings_from, stderr, stdout
from ci.report import render_plan, render_table, to_json

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
    report = api.build(settings, only=names(only), jobs=int(jobs) if jobs is not None else None, force=force,
                       no_cache=no_cache, console=stderr)
    _finish(report, json)


@task(iterable=["only"], help={
    **COMMON_HELP,
    "jobs": "How many images build at once (default: ci.limits.build = 2).",
    "force": "Redo every step of the selected images.",
    "no_cache": "Build without Docker's layer cache.",
})
@explained
def build_all(c, definitions=None, profile=None, only=None, arch=None, jobs=None, force=False, no_cache=False,  # type: ignore[no-untyped-def]
              json=False):
    """The whole chain for every selected definition: plan, then build.

    With the local profile this creates the local Debian base image first when it is missing,
    so the bundled examples build on a machine that cannot reach any registry.
    """
    settings = _settings(c, definitions, profile, arch)
    if settings.profile == "local":
        stderr.print(base_image.ensure_base_image(api.docker_engine(settings), settings.base_image), highlight=False)
    report = api.build(settings, only=names(only), jobs=int(jobs) if jobs is not None else None, force=force,
                       no_cache=no_cache, console=stderr)
    _finish(report, json)


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
    stdout.print(base_image.ensure_base_image(api.docker_engine(settings), settings.base_image, force=force))


@task
@explained
def up(c):  # type: ignore[no-untyped-def]
    """Install (from Debian) and start what the local profile needs: the Docker engine.

    Idempotent: a service that already answers is left alone. Needs root to install.
    """
    for line in local.up([local.DOCKER], say=lambda text: stderr.print(text)):
        stdout.print(line)


local_tasks = Collection("local")
local_tasks.add_task(up, name="up", default=True)
local_tasks.add_task(base_image_task, name="base-image")

ns = Collection(plan, build, build_all)
ns.add_collection(local_tasks)
