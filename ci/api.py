"""The public interface every front end calls: tasks.py, the workflows, the runner allocator, the service.

Each function takes resolved Settings and plain arguments, does one pipeline action, and returns
a value object; printing and exit codes stay with the caller. Long-running callers (the runner
allocator, the image service) use the same functions as the command line:

- progress: pass `listeners`, callables receiving every `ci.executor.Event` (a step of an image
  started, finished, failed, was skipped or cancelled) and `ci.executor.Note` (messages about the
  run as a whole: what was planned, a lock taken over, a retried status query). Nothing here
  prints; the command line attaches `ci.progress.ProgressPrinter`.
- cancellation: pass `cancel`, a `ci.shutdown.CancelToken`, and call `cancel.cancel("why")` from
  any thread. The run starts no further step, stops waiting for its batch jobs, cancels them
  (scancel), promotes nothing more, releases the site lock, and returns a report whose images
  that did not finish are `cancelled`. Signal handling is the caller's (`ci.shutdown`).
- concurrency: a run keeps all its state in its own objects (site, scheduler, watcher, run
  folder, lease), so runs on different sites can go on in one process at once, each on its own
  thread; two runs on one site exclude each other through the site lock.
- the build VM: `run_pipeline(..., environment=...)` enters the build environment (e.g.
  `build_environment`, which starts a VM for profile cpouta) only once the site lock is held, so a
  run that cannot have the site never starts (or deletes) a VM.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from ci import base_image, site_address, site_env
from ci.buildhosts import BuildPool, open_pool
from ci.config import Settings
from ci.definitions import Catalog, load_catalog
from ci.docker import DockerEngine
from ci.engines import select_engine
from ci.errors import CIError, ConfigError
from ci.executor import Executor, Listener, Note, Work
from ci.hosts import Host, LocalHost, SSHHost
from ci.jobwatch import JobWatcher
from ci.openstack import vm
from ci.plan import Action, Plan, make_plan
from ci.report import RunReport, build_report, publish_step_summary, to_json, to_junit, to_markdown
from ci.resources import Resources
from ci.runs import RunFolder
from ci.schedulers import Scheduler, run_job_prefix, select_scheduler
from ci.schedulers.base import settled
from ci.shutdown import CancelToken
from ci.site import DEFAULT_LEASE, Site, SiteLease, SiteListing, owner_is_dead
from ci.steps import BuildStep, Chain, SiteServices, chosen, image_steps
from ci.transfer import Registry

SITE_STEPS = ("build", "transfer", "convert", "test", "promote")
Environment = Callable[[Settings], AbstractContextManager[Settings]]


def catalog(settings: Settings) -> Catalog:
    options = {"spack": settings.section("spack"), "base_image": {"tag": settings.base_image.tag}}
    return load_catalog(settings.definitions, settings.arches, options)


def build_pool(settings: Settings, *, jobs: int | None = None, listeners: Sequence[Listener] = (),
               cancel: CancelToken | None = None) -> BuildPool:
    """The run's build hosts (`ci.build_hosts`, else the one engine of ci.docker / the build VM), checked:
    a host that does not answer is marked down (a warning note), none answering is an error."""
    pool = open_pool(vm.remote_settings(settings), jobs=jobs, say=_Notes(listeners), cancel=cancel)
    pool.check()
    return pool


def docker_engine(settings: Settings) -> DockerEngine:
    settings = vm.remote_settings(settings)  # the running build VM's engine when ci.vm.enabled
    return DockerEngine(client_call=[settings.docker_client] if settings.docker_client != "auto" else None,
                        host=settings.docker_host, buildkit=settings.buildkit,
                        network=settings.section("docker").get("network") or None)


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
    inventory: DockerEngine | BuildPool | None = None
    try:
        if engine is None:
            pool = build_pool(settings)
            engine, inventory = pool.live()[0].engine(), pool
        else:
            engine.ping()
            inventory = engine
    except ConfigError:
        raise
    except CIError as exc:
        if require_engine:
            raise
        note = f"{exc}; skip decisions below ignore already built images"
    env_engine = engine if inventory is not None else None
    return PlanResult(make_plan(found, only=only, inventory=inventory, force=force,
                                registry_prefix=settings.registry_prefix,
                                site=site_listing(settings) if site else None, retry_failed=retry_failed,
                                extra_parents=site_env.extra_parents(settings.section("site_env"), env_engine)), note)


class _Notes:
    """Sends notes to a run's listeners."""

    def __init__(self, listeners: Sequence[Listener]):
        self.listeners = list(listeners)

    def __call__(self, text: str, level: str = "info", **data: Any) -> None:
        note = Note(time.time(), text, level, data)
        for listener in self.listeners:
            listener(note)


def build(settings: Settings, *, only: Sequence[str] = (), jobs: int | None = None, force: bool = False,
          no_cache: bool = False, run_id: str | None = None, listeners: Sequence[Listener] = (),
          cancel: CancelToken | None = None) -> RunReport:
    """Build what the plan says needs building, in dependency order, `jobs` at a time (no site)."""
    cancel = cancel or CancelToken()
    pool = build_pool(settings, jobs=jobs, listeners=listeners, cancel=cancel)
    engine = pool.live()[0].engine()
    the_plan = make_plan(catalog(settings), only=only, inventory=pool, force=force,
                         registry_prefix=settings.registry_prefix,
                         extra_parents=site_env.extra_parents(settings.section("site_env"), engine))
    run = RunFolder(settings.state_dir / "runs", run_id)
    _Notes(listeners)(f"run {run.run_id}: {len(the_plan.images)} images planned, {len(the_plan.to_build())} to build "
                      f"(logs in {run.logs}){_hosts_note(pool)}", run_id=run.run_id, work=len(the_plan.to_build()))
    return _run_chains(settings, the_plan, run, pool, None, {}, ("build",), jobs, no_cache, listeners, cancel)


def _hosts_note(pool: BuildPool) -> str:
    """`, build hosts a (2), b (2)` when the run has more than one build host."""
    if len(pool.hosts) < 2:
        return ""
    return ", build hosts " + ", ".join(f"{host.name} ({host.capacity})" for host in pool.live())


def _run_chains(settings: Settings, the_plan: Plan, run: RunFolder, pool: BuildPool,
                services: SiteServices | None, previous: dict[str, dict[str, dict[str, Any]]],
                steps: Sequence[str], jobs: int | None, no_cache: bool, listeners: Sequence[Listener],
                cancel: CancelToken) -> RunReport:
    """Run the chosen steps of every planned image through the executor; write the run's reports."""
    started = time.time()
    stage_root = settings.state_dir / "stage" / run.run_id
    works = []
    for image in the_plan.images.values():
        chain = Chain(image, run, services, previous.get(image.key, {}), cancel)
        build_step = None
        if image.action is not Action.SKIP:
            parent_tags = {the_plan.images[p].name: the_plan.images[p].tag for p in image.parents}
            build_step = BuildStep(chain, pool, parent_tags, stage_root, no_cache)
        selected = chosen(image_steps(chain, build_step), steps)
        if selected:
            works.append(Work(key=image.key, steps=selected, parents=[
                p for p in image.parents if the_plan.images[p].action is not Action.SKIP and "build" in steps]))
    limits = dict(settings.limits)
    limits["build"] = pool.capacity if jobs is None else min(jobs, pool.capacity)  # each host's slots: the pool
    executor = Executor(limits, [*listeners, run.record], cancel=cancel)
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


def lock_lease(settings: Settings) -> float:
    """`ci.site.lock_lease`: seconds without a heartbeat after which a run's site lock expires."""
    return float(settings.site.lock_lease or DEFAULT_LEASE)


@contextmanager
def hold_site(site: Site, run_id: str, *, resume: bool = False, join: bool = False, lease: float = DEFAULT_LEASE,
              cancel: CancelToken | None = None, say: Callable[..., None] | None = None) -> Iterator[SiteLease]:
    """The site lock for one run, for the duration of the block (released on every way out).

    `resume` takes over a dead lock of this same run; `join` makes this process one more holder of
    the run's live lock (the parallel workflow jobs of one run, `--run RUN`), each holding it until
    the last one leaves. A lock lost on the way (its lease expired and another run took it)
    cancels `cancel`.
    """
    def lost(reason: str) -> None:
        if cancel is not None:
            cancel.cancel(reason)

    lease_held = site.lock(run_id, lease=lease, resume=resume, join=join, on_lost=lost)
    if say is not None and lease_held.took_over is not None:
        say(f"took over the site lock of {lease_held.took_over.describe()}, which stopped renewing it",
            level="warning")
    try:
        yield lease_held
    finally:
        lease_held.release()


def _previous_steps(run: RunFolder) -> dict[str, dict[str, dict[str, Any]]]:
    """Data of the steps an earlier attempt of this run finished, by image key and step."""
    done: dict[str, dict[str, dict[str, Any]]] = {}
    for event in run.events():
        if event.get("state") == "done" and event.get("step"):
            done.setdefault(event["image"], {})[event["step"]] = event.get("data") or {}
    return done


def _resumable_run(site: Site) -> str | None:
    """The run id of a crashed run on this machine that still holds the site lock, if any."""
    state = site.read_state()
    if state is not None and state.members and all(owner_is_dead(m) for m in state.members):
        return state.run_id
    return None


def run_pipeline(settings: Settings, *, only: Sequence[str] = (), steps: Sequence[str] = SITE_STEPS,
                 jobs: int | None = None, force: bool = False, retry_failed: bool = False, no_cache: bool = False,
                 resume: str | None = None, run_id: str | None = None, listeners: Sequence[Listener] = (),
                 cancel: CancelToken | None = None, environment: Environment | None = None) -> RunReport:
    """Run the chosen steps of every image that needs them, pipelined, under the site lock.

    `resume` continues a run that crashed (its finished steps are not redone); without it and
    without `run_id`, a crashed run of this machine that still holds the site lock is resumed and
    said so. `run_id` (a workflow's steps) joins that run's lock when another step of it holds it.
    `environment` is entered once the lock is held and yields the settings to build with (the
    build VM: `build_environment`).
    """
    cancel = cancel or CancelToken()
    say = _Notes(listeners)
    host = site_host(settings)
    try:
        site = open_site(settings, host)
        if resume is None and run_id is None:
            resume = _resumable_run(site)
            if resume is not None:
                say(f"run {resume} crashed while holding the site lock; resuming it", level="warning")
        run = RunFolder(settings.state_dir / "runs", resume or run_id)
        with hold_site(site, run.run_id, resume=resume is not None, join=run_id is not None and resume is None,
                       lease=lock_lease(settings), cancel=cancel, say=say), \
                (environment(settings) if environment is not None else nullcontext(settings)) as settings:
            cancel.check()
            pool = build_pool(settings, jobs=jobs, listeners=listeners, cancel=cancel)
            engine = pool.live()[0].engine()
            the_plan = make_plan(catalog(settings), only=only, inventory=pool, force=force,
                                 registry_prefix=settings.registry_prefix, site=site.listing(),
                                 retry_failed=retry_failed,
                                 extra_parents=site_env.extra_parents(settings.section("site_env"), engine))
            previous = _previous_steps(run) if resume or run_id else {}
            return _execute(settings, the_plan, run, site, pool, previous, steps, jobs, no_cache, listeners, cancel)
    finally:
        host.close()


def _execute(settings: Settings, the_plan: Plan, run: RunFolder, site: Site, pool: BuildPool,
             previous: dict[str, dict[str, dict[str, Any]]], steps: Sequence[str], jobs: int | None,
             no_cache: bool, listeners: Sequence[Listener], cancel: CancelToken) -> RunReport:
    say = _Notes(listeners)
    registry = Registry(settings.site.registry, pool.live()[0].engine(), site.host)
    engine_backend = select_engine(settings.site.engine, site.host, compression=settings.site.compression)
    scheduler = select_scheduler(settings.site.scheduler, site.host)
    watcher = JobWatcher(scheduler.poll, interval=settings.site.poll_interval, settled=settled,
                         on_error=lambda exc: say(f"status query failed, retrying: {exc}", level="warning"))
    work_count = sum(1 for image in the_plan.images.values() if the_plan.has_work(image))
    say(f"run {run.run_id}: {len(the_plan.images)} images planned, {work_count} with work "
        f"(site {site.host.name}:{site.root}, engine {engine_backend.name}, scheduler {scheduler.name}"
        f"{_hosts_note(pool)})",
        run_id=run.run_id, work=work_count)
    with registry.reachable(), watcher:
        services = SiteServices(site=site, registry=registry, engine=engine_backend, scheduler=scheduler,
                                watcher=watcher, job_prefix=settings.site.job_prefix, account=settings.site.account,
                                partition=settings.site.partition, convert_job=_conversion_job(settings),
                                image_engine=pool.engine_holding,
                                binds=tuple(settings.site.binds), cancel=cancel,
                                arch_partitions={arch: partition for arch in settings.site.arch
                                                 if (partition := settings.site.partition_for(arch))})
        try:
            report = _run_chains(settings, the_plan, run, pool, services, previous, steps, jobs, no_cache,
                                 listeners, cancel)
        finally:
            if cancel.is_set():
                cancelled = cancel_run_jobs(scheduler, settings.site.job_prefix, run.run_id,
                                            reason=cancel.reason or "run cancelled")
                if cancelled:
                    say(f"cancelled {len(cancelled)} job(s) of run {run.run_id}: {' '.join(cancelled)}",
                        level="warning")
    for name in ("report.json", "junit.xml", "summary.md"):
        site.host.put(run.path / name, site.path("runs", run.run_id, name))
    return report


def cancel_run_jobs(scheduler: Scheduler, job_prefix: str, run_id: str, *, reason: str) -> list[str]:
    """Cancel every unfinished batch job of one run (found by its name prefix); returns their ids."""
    try:
        jobs = [job.job_id for job in scheduler.find(run_job_prefix(job_prefix, run_id))]
        if jobs:
            scheduler.cancel(jobs, reason=reason)
        return jobs
    except CIError:
        return []


def _conversion_job(settings: Settings) -> Resources | None:
    """The batch resources for conversions on compute nodes, or None to convert on the site host."""
    return settings.site.convert_job if settings.site.convert_on == "compute" else None


def cleanup(settings: Settings, *, days: float | None = None, dry_run: bool = False) -> list[str]:
    """Cancel the batch jobs of runs that no longer hold the site (dead or finished), and remove old
    staging folders; the run holding the site keeps its jobs and its staging."""
    host = site_host(settings)
    try:
        site = open_site(settings, host)
        state = site.read_state()
        active = state.run_id if state is not None and state.members and not state.dead else None
        scheduler = select_scheduler(settings.site.scheduler, host)
        prefix = f"{settings.site.job_prefix}-"
        mine = run_job_prefix(settings.site.job_prefix, active) if active else None
        dangling = [job for job in scheduler.find(prefix) if mine is None or not job.name.startswith(mine)]
        lines = [f"{'would cancel' if dry_run else 'cancelled'} job {job.job_id} ({job.name})" for job in dangling]
        if dangling and not dry_run:
            scheduler.cancel([job.job_id for job in dangling], reason="its run no longer holds the site (inv cleanup)")
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
    build VM, started and prepared on entry and torn down on every way out (see ci/openstack/vm.py). Give it to
    `run_pipeline(environment=...)` so that the VM starts only once the site lock is held."""
    return vm.for_run(settings, say)
