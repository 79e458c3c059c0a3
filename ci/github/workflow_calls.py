"""What the generated workflow's jobs call beyond the plain steps: the plan of the run's jobs, and a
build that files its failure on the site (`inv gh.plan`, `inv gh.build`)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console

from ci import api
from ci.config.settings import Settings
from ci.github.work import Work, work_for
from ci.pipeline import failures as build_failures
from ci.pipeline import terminal
from ci.pipeline.progress import ProgressPrinter
from ci.pipeline.report import RunReport
from ci.pipeline.runs import RunFolder
from ci.plan import make_plan
from ci.site import environment as site_env


def plan_work(settings: Settings, *, only: Sequence[str] = (), force: bool = False,
              retry_failed: bool = False) -> Work:
    """Which images of the selection need a build and which the site steps, as `inv build-all` plans it."""
    engine = api.docker_engine(settings)
    engine.ping()
    host = api.site_host(settings)
    try:
        site = api.open_site(settings, host)
        plan = make_plan(api.catalog(settings), only=only, inventory=engine, force=force,
                         registry_prefix=settings.registry_prefix, site=site.listing(), retry_failed=retry_failed,
                         extra_parents=site_env.extra_parents(settings.site_env, engine))
        return work_for(plan, build_failures.failures_in(site, plan))
    finally:
        host.close()


def build_and_record(settings: Settings, *, only: Sequence[str], run_id: str | None, force: bool = False,
                     retry_failed: bool = False, console: Console | None = None) -> tuple[RunReport, list[str]]:
    """Build the selected images; file each failed build on the site under failed/ with its log.

    A digest whose build failed before is not built again unless `retry_failed` (or `force`): its
    recorded failure is reported instead, and the call fails as the first build did.
    """
    console = console or terminal.console(stderr=True)
    if not (retry_failed or force):
        work = plan_work(settings, only=only)
        refused = [image for image in work.images if "build failed in run" in image.reason
                   or image.reason.startswith("blocked:")]
        if refused:
            raise build_failures.RecordedFailure([f"{image.name}: {image.reason}" for image in refused])
    report = api.build(settings, only=only, force=force, listeners=[ProgressPrinter(console)], run_id=run_id)
    if report.ok:
        return report, []
    host = api.site_host(settings)
    try:
        site = api.open_site(settings, host)
        recorded = build_failures.record(site, RunFolder(settings.state_dir / "runs", report.run_id), report)
    finally:
        host.close()
    return report, recorded
