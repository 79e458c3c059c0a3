"""The public interface the front ends call (tasks.py, workflows, the service).

Each function takes resolved Settings and plain arguments, does one pipeline action, and
returns a value object; printing and exit codes stay with the caller.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console

from ci.build import BuildStep
from ci.config import Settings
from ci.definitions import Catalog, load_catalog
from ci.docker import DockerEngine
from ci.errors import CIError
from ci.pipeline import Executor, Step, Work
from ci.plan import Action, Plan, make_plan
from ci.progress import ProgressPrinter
from ci.report import RunReport, build_report, publish_step_summary, to_json, to_junit, to_markdown
from ci.runs import RunFolder


def catalog(settings: Settings) -> Catalog:
    return load_catalog(settings.definitions, settings.arches)


def docker_engine(settings: Settings) -> DockerEngine:
    return DockerEngine(client_call=[settings.docker_client] if settings.docker_client != "auto" else None,
                        host=settings.docker_host, buildkit=settings.buildkit)


@dataclass
class PlanResult:
    plan: Plan
    engine_note: str = ""


def plan(settings: Settings, *, only: Sequence[str] = (), force: bool = False,
         engine: DockerEngine | None = None, require_engine: bool = False) -> PlanResult:
    """Plan the selected images; without a reachable engine every image counts as not built."""
    found = catalog(settings)
    note = ""
    inventory = None
    try:
        engine = engine or docker_engine(settings)
        engine.ping()
        inventory = engine
    except CIError as exc:
        if require_engine:
            raise
        note = f"{exc}; skip decisions below ignore already built images"
    return PlanResult(make_plan(found, only=only, inventory=inventory, force=force,
                                registry_prefix=settings.registry_prefix), note)


def build(settings: Settings, *, only: Sequence[str] = (), jobs: int | None = None, force: bool = False,
          no_cache: bool = False, console: Console | None = None, run_id: str | None = None) -> RunReport:
    """Build what the plan says needs building, in dependency order, `jobs` at a time."""
    console = console or Console(stderr=True)
    engine = docker_engine(settings)
    engine.ping()
    the_plan = plan(settings, only=only, force=force, engine=engine, require_engine=True).plan
    run = RunFolder(settings.state_dir / "runs", run_id)
    stage_root = settings.state_dir / "stage" / run.run_id
    started = time.time()
    todo = the_plan.to_build()
    console.print(f"run {run.run_id}: {len(the_plan.images)} images planned, {len(todo)} to build "
                  f"(logs in {run.logs})", highlight=False)
    works = []
    for image in the_plan.images.values():
        if image.action is Action.SKIP:
            continue
        parent_tags = {the_plan.images[p].name: the_plan.images[p].tag for p in image.parents}
        step = BuildStep(engine, image, parent_tags, stage_root, run.log_path(image.name, "build"), no_cache)
        works.append(Work(key=image.key, steps=[Step("build", "build", step)],
                          parents=[p for p in image.parents if the_plan.images[p].action is not Action.SKIP]))
    limits = dict(settings.limits)
    if jobs is not None:
        limits["build"] = jobs
    executor = Executor(limits, [ProgressPrinter(console, len(works)), run.record])
    try:
        outcomes = executor.run(works)
    finally:
        shutil.rmtree(stage_root, ignore_errors=True)
    report = build_report(run.run_id, settings.profile, the_plan, outcomes, started)
    write_reports(run, report)
    return report


def write_reports(run: RunFolder, report: RunReport) -> None:
    run.write("report.json", to_json(report))
    run.write("junit.xml", to_junit(report))
    markdown = to_markdown(report)
    run.write("summary.md", markdown)
    publish_step_summary(markdown)
