"""The public interface every front end calls: tasks.py, the workflows, the runner allocator, the service.

Each function takes resolved Settings and plain arguments, does one pipeline action, and returns
a value object; printing and exit codes stay with the caller. Long-running callers (the runner
allocator, the image service) use the same functions as the command line:

- progress: pass `listeners`, callables receiving every `ci.pipeline.executor.Event` (a step of an image
  started, finished, failed, was skipped or cancelled) and `ci.pipeline.executor.Note` (messages about the
  run as a whole: what was planned, a lock taken over, a retried status query). Nothing here
  prints; the command line attaches `ci.pipeline.progress.ProgressPrinter`.
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

import os
import posixpath
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ci.buildhosts import BuildPool, open_pool
from ci.config.settings import Settings
from ci.definitions import Catalog, load_catalog
from ci.definitions.model import KNOWN_ARCHES
from ci.docker.engine import DockerEngine
from ci.docker.registry import Registry
from ci.engines import select_engine
from ci.errors import CIError, ConfigError, DefinitionError, Problem
from ci.hosts import Host, LocalHost, SSHHost
from ci.local import base_image, images
from ci.openstack import vm
from ci.pipeline.executor import Executor, Listener, Note, Work
from ci.pipeline.report import SUMMARY_KEY, RunReport, build_report, to_json, to_junit, to_markdown
from ci.pipeline.runs import RunFolder
from ci.pipeline.steps import BuildStep, Chain, SiteServices, chosen, image_steps
from ci.pipeline.steps.publish import tested_image
from ci.plan import Action, Plan, make_plan
from ci.publish import Outcome, Publishing, publishing_for
from ci.publish.prune import Pruning, prune
from ci.publish.verify import Verification, verify
from ci.resources import Resources
from ci.schedulers import Scheduler, run_job_prefix, select_scheduler
from ci.schedulers.base import settled
from ci.schedulers.watch import JobWatcher
from ci.shutdown import CancelToken
from ci.site import address as site_address
from ci.site import environment as site_env
from ci.site.layout import DEFAULT_LEASE, Site, SiteLease, SiteListing, owner_is_dead
from ci.spack import images as spack_images

SITE_STEPS = ("build", "transfer", "convert", "test", "promote", "publish")
Environment = Callable[[Settings], AbstractContextManager[Settings]]


def catalog(settings: Settings, *, allow_empty: bool = True) -> Catalog:
    """The definitions of `settings`; with `allow_empty=False` a tree holding none is a DefinitionError.

    A plan or a run of nothing would say "0 images" and succeed, so a mistyped `--definitions` (or
    `--arch`) looked like success; the workflow generator and the service's listing may see an empty
    tree and keep the default.
    """
    options = {"spack": settings.spack, "base_image": {"tag": settings.base_image.tag}}
    found = load_catalog(settings.definitions, settings.arches, options)
    if not allow_empty and not (found.images or found.problems or found.unsupported):
        arches = "/, ".join(settings.arches or KNOWN_ARCHES) + "/"
        raise DefinitionError([Problem(found.root, "", f"holds no definition (looked in {arches})",
                                       "check --definitions (ci.definitions) and --arch (ci.arch), or pass "
                                       "--allow-empty when an empty tree is meant")])
    return found


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
                        network=settings.docker_network)


def ensure_local_images(settings: Settings, *, arm64: bool, can_emulate: bool) -> list[str]:
    """The images the local profile builds FROM, made on this machine when missing (ci.local.images)."""
    return images.ensure_local_images(settings, docker_engine(settings), arm64=arm64, can_emulate=can_emulate)


def ensure_base_image(settings: Settings, *, force: bool = False) -> str:
    """The local Debian base image that the local default's definitions start FROM (made when missing)."""
    return base_image.ensure_base_image(docker_engine(settings), settings.base_image, force=force)


@dataclass
class PlanResult:
    plan: Plan
    engine_note: str = ""


def plan(settings: Settings, *, only: Sequence[str] = (), force: bool = False,
         engine: DockerEngine | None = None, require_engine: bool = False, site: bool = False,
         retry_failed: bool = False, allow_empty: bool = False) -> PlanResult:
    """Plan the selected images; without a reachable engine every image counts as not built.

    With `site`, the site's tested/ and failed/ decide too, as in build-all (`site_listing`). A tree
    with no definition is an error unless `allow_empty` (`catalog`).
    """
    found = catalog(settings, allow_empty=allow_empty)
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
    the_plan = make_plan(found, only=only, inventory=inventory, force=force, registry_prefix=settings.registry_prefix,
                         site=site_listing(settings) if site else None, retry_failed=retry_failed,
                         extra_parents=site_env.extra_parents(settings.site_env, env_engine))
    spack_images.resolve_versions(the_plan, inventory.known_images if inventory is not None else None,
                                  settings.registry_prefix)  # every live build host's images, as make_plan saw
    return PlanResult(the_plan, note)


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
          cancel: CancelToken | None = None, allow_empty: bool = False) -> RunReport:
    """Build what the plan says needs building, in dependency order, `jobs` at a time (no site)."""
    cancel = cancel or CancelToken()
    found = catalog(settings, allow_empty=allow_empty)  # before any engine is asked
    pool = build_pool(settings, jobs=jobs, listeners=listeners, cancel=cancel)
    engine = pool.live()[0].engine()
    the_plan = make_plan(found, only=only, inventory=pool, force=force,
                         registry_prefix=settings.registry_prefix,
                         extra_parents=site_env.extra_parents(settings.site_env, engine))
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
    limits.setdefault("publish", 1)  # one publication at a time: uploads share the uplink, catalogs are rewritten
    limits["build"] = pool.capacity if jobs is None else min(jobs, pool.capacity)  # each host's slots: the pool
    executor = Executor(limits, [*listeners, run.record], cancel=cancel)
    try:
        outcomes = executor.run(works)
    finally:
        shutil.rmtree(stage_root, ignore_errors=True)
    report = build_report(run.run_id, settings.profile, the_plan, outcomes, started)
    write_reports(run, report, listeners)
    return report


def write_reports(run: RunFolder, report: RunReport, listeners: Sequence[Listener] = ()) -> None:
    """The run's reports in its folder; the listeners get the summary (a front end may show it elsewhere)."""
    run.write("report.json", to_json(report))
    run.write("junit.xml", to_junit(report))
    markdown = to_markdown(report, run.events())
    run.write("summary.md", markdown)
    _Notes(listeners)(f"reports of run {run.run_id} written to {run.path}", run_id=run.run_id,
                      **{SUMMARY_KEY: markdown})


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
                 cancel: CancelToken | None = None, environment: Environment | None = None,
                 allow_empty: bool = False) -> RunReport:
    """Run the chosen steps of every image that needs them, pipelined, under the site lock.

    `resume` continues a run that crashed (its finished steps are not redone); without it and
    without `run_id`, a crashed run of this machine that still holds the site lock is resumed and
    said so. `run_id` (a workflow's steps) joins that run's lock when another step of it holds it.
    `environment` is entered once the lock is held and yields the settings to build with (the
    build VM: `build_environment`). A tree with no definition is an error unless `allow_empty`
    (`catalog`), said before the site is opened.
    """
    cancel = cancel or CancelToken()
    say = _Notes(listeners)
    if not allow_empty:
        catalog(settings, allow_empty=False)
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
                                 extra_parents=site_env.extra_parents(settings.site_env, engine))
            spack_images.resolve_versions(the_plan, pool.known_images, settings.registry_prefix)  # every live host
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
    publishing = publishing_for(settings.publish, settings.project_dir) if "publish" in steps else None
    with registry.reachable(), watcher, publishing or nullcontext():
        services = SiteServices(site=site, registry=registry, engine=engine_backend, scheduler=scheduler,
                                watcher=watcher, job_prefix=settings.site.job_prefix, account=settings.site.account,
                                partition=settings.site.partition, convert_job=_conversion_job(settings),
                                image_engine=pool.engine_holding,
                                binds=tuple(settings.site.binds), cancel=cancel,
                                require_tests=settings.site.require_tests,
                                arch_partitions={arch: partition for arch in settings.site.arch
                                                 if (partition := settings.site.partition_for(arch))},
                                publishing=publishing)
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


# ------------------------------------------------------------------------------------------------
# Publishing outside a run: what tested/ holds, to the configured targets (inv publish.*)
# ------------------------------------------------------------------------------------------------


def publish_tested(settings: Settings, *, targets: Sequence[str] = (), only: Sequence[str] = (),
                   force: bool = False) -> list[Outcome]:
    """Publish every tested image of the site (or those named in `only`) that a target lacks.

    What a tag's workflow run calls, and what catches up after a target was added or was down
    during a run: the same checks as the pipeline's publish step (only tested/, only what is
    missing unless `force`), under the site lock, so no run promotes while this reads tested/.
    """
    publishing = publishing_for(settings.publish, settings.project_dir, targets=tuple(targets))
    if publishing is None:
        raise CIError("no publish targets configured (ci.publish.targets); see docs/publish.md")
    host = site_host(settings)
    outcomes: list[Outcome] = []
    try:
        site = open_site(settings, host)
        registry = settings.site.registry
        push_address = f"127.0.0.1:{registry.local_port}" if registry.tunnel else registry.address
        found = host.run(["find", site.path("tested"), "-mindepth", "3", "-maxdepth", "3", "-name", "result.json",
                          "-print0"], check=False).stdout.split("\0")
        folders = sorted(posixpath.dirname(path) for path in found if path.endswith("/result.json"))
        run = RunFolder(settings.state_dir / "runs", None)
        tunnel = host.tunnel(registry.local_port, registry.remote_port) \
            if registry.tunnel and isinstance(host, SSHHost) else nullcontext()
        with hold_site(site, f"publish-{run.run_id}", lease=lock_lease(settings)), tunnel, publishing:
            for folder in folders:
                name, stem = posixpath.basename(posixpath.dirname(folder)), posixpath.basename(folder)
                if only and name not in only:
                    continue
                image = tested_image(site, registry, push_address, name, stem, run.path / "publish")
                if image is not None:
                    outcomes += publishing.publish(image, force=force)
        return outcomes
    finally:
        host.close()


def verify_target(settings: Settings, target: str, *, trusted_key: bytes | None = None) -> Verification:
    """`inv publish.verify`: one target against its catalog (see ci/publish/verify.py)."""
    publishing = publishing_for(settings.publish, settings.project_dir, targets=(target,))
    if publishing is None:
        raise CIError("no publish targets configured (ci.publish.targets); see docs/publish.md")
    with publishing:
        signer = publishing.signer if trusted_key is None and _has_signing_key(publishing) else None
        return verify(publishing.publisher(publishing.targets[0]), trusted_key=trusted_key, signer=signer)


def prune_target(settings: Settings, target: str, *, keep: int, apply: bool) -> Pruning:
    """`inv publish.prune`: keep the newest `keep` versions per image at one target (a dry run unless `apply`)."""
    publishing = publishing_for(settings.publish, settings.project_dir, targets=(target,))
    if publishing is None:
        raise CIError("no publish targets configured (ci.publish.targets); see docs/publish.md")
    with publishing:
        return prune(publishing.publisher(publishing.targets[0]), keep, apply=apply,
                     signer=publishing.signer if apply else None)


def _has_signing_key(publishing: Publishing) -> bool:
    signing = publishing.settings.signing
    return bool(os.environ.get(signing.key_env)) or (settings_path(publishing.project_dir, signing.key_file)).is_file()


def settings_path(project_dir: Path, value: str) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else project_dir / path
