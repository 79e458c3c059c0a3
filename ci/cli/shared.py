"""Edge helpers several collections share: settings from flags, running steps, finishing a run.

Library modules are imported inside the functions, so that loading the task namespace stays fast."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from invoke.exceptions import Exit

from ci.cli.common import emit_json, names, run_control, say, settings_from, show, stderr, stdout


def settings_for(c: Any, definitions: str | None, profile: str | None, arch: str | None) -> Any:
    return settings_from(c, profile=profile, definitions=definitions, arch=names(arch) or None)


def site_settings_for(c: Any, definitions: str | None, profile: str | None, arch: str | None,
                   site_root: str | None) -> Any:
    return settings_from(c, profile=profile, definitions=definitions, arch=names(arch) or None, site_root=site_root)


def run_steps(c: Any, steps: tuple[str, ...], definitions: str | None, profile: str | None, only: Any, arch: str | None,
           site_root: str | None, run: str | None, force: bool, retry_failed: bool, json: bool, *,
           allow_empty: bool = False) -> None:
    from ci import api
    settings = site_settings_for(c, definitions, profile, arch, site_root)
    with run_control() as (listeners, cancel):
        report = api.run_pipeline(settings, only=names(only), steps=steps, force=force, retry_failed=retry_failed,
                                  run_id=run, listeners=listeners, cancel=cancel, allow_empty=allow_empty)
    finish(report, json)


@contextlib.contextmanager
def build_environment(settings: Any) -> Iterator[Any]:
    """Entered by the run once it holds the site: the build VM (if any), then the site environment
    image, captured before planning because its digest is a parent of the definitions' digests."""
    from ci import api
    with api.build_environment(settings, say=say) as built:
        capture_site_env(built, quiet_when_off=True)
        yield built


def finish(report: Any, json: bool) -> None:
    from ci.pipeline.report import render_table, to_json
    if json:
        print(to_json(report))
    else:
        render_table(report, stdout)
    if not report.ok:
        raise Exit(code=1)



def vm_overrides(cloud: str | None, name: str | None, **more: Any) -> dict[str, Any]:
    return {"cloud": cloud, "name": name, **more}


def workflow_text(c: Any) -> tuple[str, Any]:
    from ci import api
    from ci.github import workflow as gh_workflow
    base = settings_from(c)
    options = base.workflow
    settings = settings_from(c, profile=options.default_profile)
    profiles = [str(name) for name in (c.config.get("ci", {}).get("profiles") or {"local": {}})]
    return gh_workflow.render(api.catalog(settings), options, profiles), settings


def seconds(value: Any, flag: str, default: float) -> float:
    try:
        seconds = float(value) if value is not None else default
    except ValueError:
        raise Exit(f"{flag} takes a number of seconds; got {value!r}", code=2) from None
    if seconds < 0:
        raise Exit(f"{flag} takes a number of seconds >= 0; got {value!r}", code=2)
    return seconds


def capture_site_env(settings: Any, quiet_when_off: bool = False) -> None:
    from ci import api
    from ci.site import environment as site_env
    options = settings.site_env
    if not options.enabled:
        if not quiet_when_off:
            stdout.print("ci.site_env.paths is empty: no site environment to capture", highlight=False)
        return
    host = api.site_host(settings)
    try:
        site = api.open_site(settings, host)
        image = site_env.capture(host, site.path("staging"), options, api.docker_engine(settings), say=say)
    finally:
        host.close()
    (stderr if quiet_when_off else stdout).print(image.describe(), highlight=False, markup=False)


def finish_retest(result: Any, json: bool, run: Any = None) -> None:
    from ci.pipeline.report import render_table
    if json:
        emit_json({"run": run.as_dict(), "retest": result.as_dict()} if run is not None else result.as_dict())
    else:
        if run is not None:
            render_table(run, stdout)
        render_table(result.report, stdout)
    for name in result.regressions:
        show(("REGRESSION:", "bold red"), f" {name} passed its tests when it was promoted and fails them now; "
             "it stays in tested/ (see its history.jsonl)", err=True)
    if not result.ok:
        raise Exit(code=1)
