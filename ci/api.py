"""The public interface the front ends call (tasks.py, workflows, the service).

Each function takes resolved Settings and plain arguments, does one pipeline action, and
returns a value object; printing and exit codes stay with the caller.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from ci import base_image, site_address, site_env
from ci.build import BuildStep
from ci.config import Settings
from ci.definitions import Catalog, SlurmResources, load_catalog
from ci.docker import DockerEngine
from ci.engines import select_engine
from ci.errors import CIError
from ci.hosts import Host, LocalHost, SSHHost
from ci.jobwatch import JobWatcher
from ci.openstack import vm
from ci.pipeline import Executor, Work
from ci.plan import Action, Plan, make_plan
from ci.progress import ProgressPrinter
from ci.report import RunReport, build_report, publish_step_summary, to_json, to_junit, to_markdown
from ci.runs import RunFolder
from ci.schedulers import select_scheduler
from ci.schedulers.base import settled
from ci.site import Site, SiteListing, SiteLocked, owner_is_dead
from ci.stages import ImageChain, SiteServices
from ci.transfer import Registry


def catalog(settings: Settings) -> Catalog:
    return load_catalog(settings.definitions, settings.arches)


def docker_engine(settings: Settings) -> DockerEngine:
    settings = vm.remote_settings(settings)  # the running build VM's engine when ci.vm.enabled
    return DockerEngine(client_call=[settings.docker_client] if settings.docker_client != "auto" else None,
                        host=settings.docker_host, buildkit=settings.buildkit)


def ensure_base_image(settings: Settings, *, force: bool = False) -> str:
    """The local Debian base image that the local default's definitions start FROM (made when missing)."""
    return base_image.ensure_base_image(docker_engine(settings), settings.base_image, force=force)


@dataclass
class PlanResult:
    plan: Plan
    engine_note: str = ""


def plan(settings: Settings, *, only: Sequence[str] = (), force: bool = False,
         engine: DockerEngine | None = None, require_engine: bool = False, site: bool = False,
         retry_failed: bool = False) -> PlanResult:
    """Plan the selected images; without a reachable engine every image counts as not built.

    With `site`, the site's tested/ and failed/ decide too, as in build-all (`site_listing`).
    """
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
                                registry_prefix=settings.registry_prefix,
                                site=site_listing(settings) if site else None, retry_failed=retry_failed,
                                extra_parents=site_env.extra_parents(settings.section("site_env"), inventory)), note)


def build(settings: Settings, *, only: Sequence[str] = (), jobs: int | None = None, force: bool = False,
          no_cache: bool = False, console: Console | None = None, run_id: str | None = None) -> RunReport:
    """Build what the plan says needs building, in dependency order, `jobs` at a time (no site)."""
    console = console or Console(stderr=True)
    engine = docker_engine(settings)
    engine.ping()
    the_plan = plan(settings, only=only, force=force, engine=engine, require_engine=True).plan
    run = RunFolder(settings.state_dir / "runs", run_id)
    console.print(f"run {run.run_id}: {len(the_plan.images)} images planned, {len(the_plan.to_build())} to build "
                  f"(logs in {run.logs})", highlight=False)
    return _run_chains(settings, the_plan, run, engine, None, {}, ("build",), jobs, no_cache, console)


def _run_chains(settings: Settings, the_plan: Plan, run: RunFolder, engine: DockerEngine,
                services: SiteServices | None, previous: dict[str, dict[str, dict[str, Any]]],
                steps: Sequence[str], jobs: int | None, no_cache: bool, console: Console) -> RunReport:
    """Run the chosen steps of every planned image through the executor; write the run's reports."""
    started = time.time()
    stage_root = settings.state_dir / "stage" / run.run_id
    works = []
    for image in the_plan.images.values():
        build_step = None
        if image.action is not Action.SKIP:
            parent_tags = {the_plan.images[p].name: the_plan.images[p].tag for p in image.parents}
            build_step = BuildStep(engine, image, parent_tags, stage_root, run.log_path(image.name, "build"),
                                   no_cache)
        chain = ImageChain(image, run, services, build_step, previous.get(image.key, {}))
        chosen = [step for step in chain.steps() if step.name in steps]
        if chosen:
            works.append(Work(key=image.key, steps=chosen, parents=[
                p for p in image.parents if the_plan.images[p].action is not Action.SKIP and "build" in steps]))
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
    markdown = to_markdown(report, run.events())
    run.write("summary.md", markdown)
    publish_step_summary(markdown)


# ------------------------------------------------------------------------------------------------
# The full chain: build, transfer, convert, test, promote
# ------------------------------------------------------------------------------------------------

SITE_STEPS = ("build", "transfer", "convert", "test", "promote")


def site_host(settings: Settings) -> Host:
    return SSHHost(site_address.pinned(settings.site.ssh)) if settings.site.ssh is not None else LocalHost()


def open_site(settings: Settings, host: Host | None = None) -> Site:
    site = Site(host or site_host(settings), settings.site.root)
    site.ensure_layout()
    return site


def site_listing(settings: Settings) -> SiteListing:
    """Which digests the site holds in tested/ and failed/ (one `find` on the site host)."""
    host = site_host(settings)
    try:
        return open_site(settings, host).listing()
    finally:
        host.close()


@contextmanager
def _run_lock(site: Site, run_id: str, resume: bool) -> Iterator[None]:
    """The site lock for a run. A step whose run already holds it (parallel workflow jobs of one
    run, e.g. the convert + test matrix) joins a live holder and leaves the release to it."""
    joined = False
    for attempt in range(3):
        try:
            site.acquire(run_id, take_over_dead=run_id if resume else None)
            break
        except SiteLocked as exc:
            if exc.owner is None and attempt < 2:
                time.sleep(1.0)  # the holder made the lock but has not written its owner file yet
                continue
            if exc.owner is None or exc.owner.run_id != run_id or exc.stale:
                raise  # another run's lock, or a dead holder of this one (resume it: --resume)
            joined = True
            break
    if joined:
        yield
        return
    try:
        yield
    finally:
        site.release(run_id)


def _previous_steps(run: RunFolder) -> dict[str, dict[str, dict[str, Any]]]:
    """Data of the steps an earlier attempt of this run finished, by image key and step."""
    done: dict[str, dict[str, dict[str, Any]]] = {}
    for event in run.events():
        if event.get("state") == "done" and event.get("step"):
            done.setdefault(event["image"], {})[event["step"]] = event.get("data") or {}
    return done


def _resumable_run(site: Site) -> str | None:
    """The run id of a crashed run on this machine that still holds the site lock, if any."""
    owner = site.read_lock()
    if owner is not None and owner_is_dead(owner):
        return owner.run_id
    return None


def run_pipeline(settings: Settings, *, only: Sequence[str] = (), steps: Sequence[str] = SITE_STEPS,
                 jobs: int | None = None, force: bool = False, retry_failed: bool = False, no_cache: bool = False,
                 resume: str | None = None, run_id: str | None = None, console: Console | None = None) -> RunReport:
    """Run the chosen steps of every image that needs them, pipelined, under the site lock.

    `resume` continues a run that crashed (its finished steps are not redone); without it, a
    crashed run of this machine that still holds the site lock is resumed and said so.
    """
    console = console or Console(stderr=True)
    engine = docker_engine(settings)
    engine.ping()
    host = site_host(settings)
    try:
        site = open_site(settings, host)
        if resume is None and run_id is None:
            resume = _resumable_run(site)
            if resume is not None:
                console.print(f"[yellow]run {resume} crashed while holding the site lock; resuming it[/]")
        the_plan = make_plan(catalog(settings), only=only, inventory=engine, force=force,
                             registry_prefix=settings.registry_prefix, site=site.listing(),
                             retry_failed=retry_failed,
                             extra_parents=site_env.extra_parents(settings.section("site_env"), engine))
        run = RunFolder(settings.state_dir / "runs", resume or run_id)
        previous = _previous_steps(run) if resume or run_id else {}
        with _run_lock(site, run.run_id, resume=resume is not None):
            return _execute(settings, the_plan, run, site, engine, previous, steps, jobs, no_cache, console)
    finally:
        host.close()


def _execute(settings: Settings, the_plan: Plan, run: RunFolder, site: Site, engine: DockerEngine,
             previous: dict[str, dict[str, dict[str, Any]]], steps: Sequence[str], jobs: int | None,
             no_cache: bool, console: Console) -> RunReport:
    registry = Registry(settings.site.registry, engine, site.host)
    engine_backend = select_engine(settings.site.engine, site.host, compression=settings.site.compression)
    scheduler = select_scheduler(settings.site.scheduler, site.host)
    watcher = JobWatcher(scheduler.poll, interval=settings.site.poll_interval, settled=settled,
                         on_error=lambda exc: console.print(f"[yellow]status query failed, retrying:[/] {exc}"))
    work_count = sum(1 for image in the_plan.images.values() if the_plan.has_work(image))
    console.print(f"run {run.run_id}: {len(the_plan.images)} images planned, {work_count} with work "
                  f"(site {site.host.name}:{site.root}, engine {engine_backend.name}, scheduler {scheduler.name})",
                  highlight=False)
    with registry.reachable(), watcher:
        services = SiteServices(site=site, registry=registry, engine=engine_backend, scheduler=scheduler,
                                watcher=watcher, job_prefix=settings.site.job_prefix, account=settings.site.account,
                                partition=settings.site.partition,
                                convert_job=_conversion_job(settings))
        report = _run_chains(settings, the_plan, run, engine, services, previous, steps, jobs, no_cache, console)
    for name in ("report.json", "junit.xml", "summary.md"):
        site.host.put(run.path / name, site.path("runs", run.run_id, name))
    return report


def _conversion_job(settings: Settings) -> SlurmResources | None:
    """The batch resources for conversions on compute nodes, or None to convert on the site host."""
    return settings.site.convert_job if settings.site.convert_on == "compute" else None


def cleanup(settings: Settings, *, days: float | None = None, dry_run: bool = False) -> list[str]:
    """Cancel test jobs of runs that no longer hold the site, and remove old staging folders."""
    host = site_host(settings)
    try:
        site = open_site(settings, host)
        owner = site.read_lock()
        active = owner.run_id if owner is not None and not owner_is_dead(owner) else None
        scheduler = select_scheduler(settings.site.scheduler, host)
        prefix = f"{settings.site.job_prefix}-"
        dangling = [job for job in scheduler.find(prefix) if active is None or f"-{active}-" not in job.name]
        lines = [f"{'would cancel' if dry_run else 'cancelled'} job {job.job_id} ({job.name})" for job in dangling]
        if dangling and not dry_run:
            scheduler.cancel([job.job_id for job in dangling])
        keep = {active} if active else set()
        age = settings.site.staging_days if days is None else days
        if dry_run:
            lines.append(f"would remove staging folders older than {age:g} days (except the active run)")
        else:
            removed = site.clean_staging(age, keep=keep)
            lines += [f"removed {path}" for path in removed]
        return lines or ["nothing to clean"]
    finally:
        host.close()


def build_environment(settings: Settings, say: Callable[[str], None]) -> AbstractContextManager[Settings]:
    """The settings a run builds with: unchanged, or (ci.vm.enabled, e.g. profile cpouta) those of a fresh
    build VM, started and prepared on entry and torn down on every way out (see ci/vm.py)."""
    return vm.for_run(settings, say)
