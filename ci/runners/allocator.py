"""The allocator: poll GitHub's demand, count it against our runners, start and cancel Slurm jobs.

One `step()` is one poll:
1. every `reconcile_interval` (and first thing after a start): `reconcile()` against squeue and
   GitHub's runner list (adopt, cancel, delete; see there);
2. Slurm: one batched query for our live runner jobs;
3. demand: the workflow runs that are `queued` or `in_progress` (a job gated by `needs:` becomes
   queued while its run is already in progress), each run's jobs (`filter=latest`), every request
   conditional, so an idle poll is two 304s; then the Slurm answers are applied: ended jobs are
   settled (a job that died before its runner took work gets its GitHub runner deleted and backs
   its target off). Slurm is asked *before* GitHub: a runner can take a job, finish it and end
   between the two reads, and only in this order does the job then show as taken (never as
   demand whose runner already ended, which would start a runner too many);
4. `logic.decide` turns the counts into starts and cancels; a cancel deletes the GitHub runner
   first (GitHub refuses to delete a busy runner, which closes the race with a job just taken),
   then scancels; a start writes the row, asks GitHub for a JIT config, writes it to a 0600
   file and submits the job, several at a time.
Nothing binds a runner to a job, so a restart only has to count again.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ci.config.runners import RunnersSettings, Target
from ci.errors import CIError, SchedulerError
from ci.github.actions import Actions
from ci.github.client import GitHubError, RateLimited, Stopping
from ci.github.models import Job, WorkflowRun
from ci.hosts import Host
from ci.runners import batch as runner_jobs
from ci.runners import imagecache, nodework
from ci.runners.logic import Backoff, Demand, Phase, Plan, QueuedJob, count_demand, decide, label_set
from ci.runners.metrics import Metrics
from ci.runners.state import Runner, State
from ci.schedulers import JobState, JobStatus, Scheduler
from ci.schedulers.base import never_starts

log = logging.getLogger("ci.runners")

UNSERVABLE_RETRY = 600.0  # seconds before a target marked not servable gets one runner again
WEBHOOK_MIN_GAP = 0.5  # seconds between webhook-triggered polls (a burst of deliveries is one poll)
LISTING_WORKERS = 8  # job listings fetched at once during a poll


@dataclass
class Observed:
    """What one read of GitHub's runs and jobs says."""

    queued: list[QueuedJob] = field(default_factory=list)
    used: dict[str, str] = field(default_factory=dict)  # runner name -> status of the job it took
    runs: int = 0


@dataclass
class StartResult:
    name: str
    target: str
    github_id: int | None = None
    job_id: str | None = None
    submitted: float | None = None  # when sbatch answered
    error: str = ""
    sbatch_failed: bool = False
    github_deleted: bool = False


def observe(github: Actions, runner_prefix: str, hosted: Sequence[str] = ()) -> Observed:
    """Queued jobs of every queued or in-progress run, and which of our runners took a job.

    Jobs for GitHub-hosted runners (a label matching one of the `hosted` patterns) are not demand.
    """
    observed = Observed()
    runs: dict[int, WorkflowRun] = {}
    for status in ("queued", "in_progress"):
        for run in github.runs(status):
            runs.setdefault(run.id, run)
    observed.runs = len(runs)
    listings: dict[int, list[Job]]
    if len(runs) > 1:  # one conditional GET per run: ask for several at once (httpx's pool is shared)
        with ThreadPoolExecutor(max_workers=min(LISTING_WORKERS, len(runs)),
                                thread_name_prefix="runners-jobs") as pool:
            listings = dict(zip(runs, pool.map(github.jobs, runs), strict=True))
    else:
        listings = {run_id: github.jobs(run_id) for run_id in runs}
    for run_id, jobs in listings.items():
        for job in jobs:
            runner = job.runner_name or ""
            if runner.startswith(runner_prefix) and job.status in ("in_progress", "completed"):
                observed.used[runner] = job.status
            labels = label_set(job.labels)
            if job.status == "queued" and not any(fnmatch.fnmatchcase(label, pattern) for label in labels
                                                  for pattern in hosted):
                observed.queued.append(QueuedJob(job.id, run_id, labels, job.name, job.created))
    return observed


class Allocator:
    def __init__(self, settings: RunnersSettings, *, state: State, github: Actions, scheduler: Scheduler,
                 host: Host, job_dir: str, account: str | None = None, partition: str | None = None,
                 clock: Callable[[], float] = time.time, metrics: Metrics | None = None):
        self.settings = settings
        self.state = state
        self.github = github
        self.scheduler = scheduler
        self.host = host
        self.job_dir = job_dir
        self.account = account
        self.partition = partition
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.backoff = Backoff(base=max(settings.poll_interval, 1.0))
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.last_reconcile = 0.0
        self.first_seen: dict[int, float] = {}
        self.reported_unservable: set[int] = set()
        self.errors: list[str] = []  # recent problems, for status and the log (bounded)
        self.last_demand = Demand()
        self.last_plan = Plan()
        self.last_poll = 0.0
        self._prepared = False
        self.digests = imagecache.Digests(host)
        # target -> (why it cannot be served, until when no runner is started for it): a job found
        # the node lacking what the target needs (docs/runners-docker.md), or it asks more node-local
        # disk than any node of its partition offers.
        self.unservable_targets: dict[str, tuple[str, float]] = {}

    # -- small helpers --------------------------------------------------------------------------

    @property
    def runner_prefix(self) -> str:
        return f"{self.settings.prefix}-"

    def _problem(self, text: str) -> None:
        log.warning("%s", text)
        self.errors = [*self.errors[-19:], f"{time.strftime('%H:%M:%S')} {text}"]

    def _prepare(self) -> None:
        """The cluster-side folders: jit/ is 0700 so that only we and our jobs can list it."""
        if self._prepared:
            return
        jit = runner_jobs.jit_folder(self.job_dir)
        self.host.run(["mkdir", "-p", jit, f"{self.job_dir}/logs", f"{self.job_dir}/work"])
        self.host.run(["chmod", "700", jit])
        self._prepared = True

    def _remove_jit(self, names: Sequence[str]) -> None:
        if names:
            self.host.run(["rm", "-f", *(runner_jobs.jit_path(self.job_dir, name) for name in names)], check=False)

    def _mark_unservable(self, target: str, reason: str, until: float) -> None:
        if self.unservable_targets.get(target, ("", 0.0))[0] != reason:
            self._problem(f"target {target} is not servable: {reason}")
        self.unservable_targets[target] = (reason, until)

    def _unservable_reason(self, row: Runner) -> str:
        """What the job's log says the node lacks (its `ci-runner-unservable:` line)."""
        try:
            text = self.host.read_text(f"{self.job_dir}/logs/{row.name}.out")
        except (CIError, OSError):
            text = ""
        for line in text.splitlines():
            if line.startswith(nodework.UNSERVABLE_MARK):  # printable only: it reaches logs and terminals
                said = line[len(nodework.UNSERVABLE_MARK):]
                return "".join(c if c.isprintable() else "?" for c in said).strip()[:400]
        return f"runner job {row.job_id} ended with exit {nodework.UNSERVABLE_EXIT} (the node lacks what the " \
               f"target needs); log: {self.job_dir}/logs/{row.name}.out"

    def check_capacity(self) -> None:
        """Targets asking more node-local disk (slurm.tmpdisk) than every node of their partition has."""
        from ci.config.runners import tmpdisk_mb

        now = self.clock()
        for target in self.settings.targets:
            if not target.slurm.tmpdisk:
                continue
            partition = target.slurm.partition or self.partition
            command = ["sinfo", "-h", "-N", "-o", "%d", *(["-p", partition] if partition else [])]
            try:
                result = self.host.run(command, check=False, timeout=30)
            except CIError:
                continue
            sizes = [int(word) for word in result.stdout.split() if word.isdigit()]
            if result.returncode != 0 or not sizes:
                continue  # Slurm does not answer: nothing to conclude
            wanted, offered = tmpdisk_mb(target.slurm.tmpdisk), max(sizes)
            if wanted > offered:
                self._mark_unservable(target.name, f"it asks {target.slurm.tmpdisk} of node-local disk (slurm.tmpdisk) "
                                      f"but the largest node of {partition or 'the default partition'} offers "
                                      f"{offered} MB (TmpDisk in slurm.conf)", now + self.settings.reconcile_interval)
            elif self.unservable_targets.get(target.name, ("",))[0].startswith("it asks"):
                del self.unservable_targets[target.name]

    def _unregister(self, runner_id: int | None, name: str) -> str:
        """Delete a registration: "deleted", "gone" (GitHub had already removed it, as it does with an
        ephemeral runner after its job) or "busy" (GitHub refuses: the runner took a job)."""
        if runner_id is None:
            return "gone"
        try:
            if not self.github.delete_runner(runner_id):
                return "gone"
        except GitHubError as exc:
            if exc.status == 422:
                return "busy"
            raise
        log.info("deleted GitHub runner %s (id %s)", name, runner_id)
        return "deleted"

    # -- 2. demand ------------------------------------------------------------------------------

    def observe(self) -> Observed:
        return observe(self.github, self.runner_prefix, self.settings.hosted_labels)

    # -- 3. Slurm -------------------------------------------------------------------------------

    def poll_slurm(self) -> tuple[list[Runner], dict[str, JobStatus]]:
        """Our started runners and what Slurm says of their jobs (read before GitHub's demand, see step)."""
        rows = [row for row in self.state.live() if row.phase is not Phase.CREATING]
        return rows, self.scheduler.poll([row.job_id for row in rows if row.job_id]) if rows else {}

    def refresh(self, used: dict[str, str], polled: tuple[list[Runner], dict[str, JobStatus]] | None = None) -> None:
        """Apply Slurm's answers (`polled`, asked now when not given) and who took a job (`used`) to the rows."""
        now = self.clock()
        rows, statuses = polled if polled is not None else self.poll_slurm()
        ended: list[str] = []
        for row in rows:
            took_job = row.used or row.name in used
            if took_job and not row.used:
                self.state.update(row.name, used=1)
            status = statuses.get(row.job_id or "")
            if status is None:
                if took_job and row.phase is not Phase.BUSY:
                    self.state.update(row.name, phase=Phase.BUSY)
                continue
            if status.terminal:
                ended.append(row.name)
                self._settle(row, status, took_job, now)
            elif never_starts(status):
                self._problem(f"runner {row.name}: Slurm will never start job {row.job_id} ({status.reason}); "
                              f"fix ci.runners.targets[{row.target}].slurm")
                self.backoff.failed(row.target, now, status.reason)
                self._cancel_rows([row], f"Slurm cannot start it: {status.reason}")
            elif status.state in (JobState.RUNNING, JobState.COMPLETING):
                if took_job:
                    self.state.update(row.name, phase=Phase.BUSY)
                else:
                    self.state.update(row.name, phase=Phase.RUNNING, idle_since=row.idle_since or now)
            elif not took_job:
                self.state.update(row.name, phase=Phase.PENDING)
        self.state.commit()
        self._remove_jit(ended)
        self._forget([row.job_id for row in rows if row.name in ended and row.job_id])

    def _forget(self, job_ids: Sequence[str]) -> None:
        """The scheduler backends remember every job they were asked about; ours end by the thousand."""
        forget = getattr(self.scheduler, "forget", None)
        if forget is not None and job_ids:
            forget(list(job_ids))

    def _settle(self, row: Runner, status: JobStatus, took_job: bool, now: float) -> None:
        """A runner's Slurm job ended: done if it served a job, else failed (and its registration deleted)."""
        if took_job:
            # An ephemeral runner is removed by GitHub after its job; nothing to delete.
            self.state.update(row.name, phase=Phase.DONE, ended=now, github_gone=1, note=status.describe())
            self.backoff.succeeded(row.target)
            self.unservable_targets.pop(row.target, None)
            return
        try:
            outcome = self._unregister(row.github_id, row.name)
        except GitHubError as exc:
            self._problem(f"could not delete GitHub runner {row.name}: {exc}")
            outcome = "unknown"
        if outcome == "gone" and row.github_id is not None:
            # GitHub removed it itself: an ephemeral runner that served a job between two polls
            # (its run finished before a poll saw the job in progress).
            self.state.update(row.name, phase=Phase.DONE, ended=now, github_gone=1, used=1,
                              note=f"served a job between polls: {status.describe()}")
            self.backoff.succeeded(row.target)
            return
        phase = Phase.CANCELLED if status.state is JobState.CANCELLED else Phase.FAILED
        self.state.update(row.name, phase=phase, ended=now, github_gone=int(outcome in ("deleted", "gone")),
                          note=f"ended before taking a job: {status.describe()}")
        if phase is Phase.FAILED and status.succeeded:
            log.info("runner %s ended without a job (%s); demand is counted again", row.name, status.describe())
        elif phase is Phase.FAILED and status.exit_code == nodework.UNSERVABLE_EXIT:
            self._mark_unservable(row.target, self._unservable_reason(row), now + UNSERVABLE_RETRY)
        elif phase is Phase.FAILED:
            delay = self.backoff.failed(row.target, now, status.describe())
            self._problem(f"runner {row.name} ({row.target}) ended before taking a job ({status.describe()}); "
                          f"its registration is deleted, demand is counted again (target backs off {delay:.0f}s); "
                          f"log: {self.job_dir}/logs/{row.name}.out")

    # -- 4. acting ------------------------------------------------------------------------------

    def _cancel_rows(self, rows: Sequence[Runner], reason: str) -> list[str]:
        """Delete each registration (skipping busy ones), then scancel their jobs in one call."""
        cancelled: list[Runner] = []
        for row in rows:
            try:
                if self._unregister(row.github_id, row.name) == "busy":
                    log.info("runner %s took a job meanwhile; not cancelled", row.name)
                    self.state.update(row.name, used=1, phase=Phase.BUSY)
                    continue
            except GitHubError as exc:
                self._problem(f"could not delete GitHub runner {row.name} before cancelling it: {exc}")
                continue
            cancelled.append(row)
        ids = [row.job_id for row in cancelled if row.job_id]
        if ids:
            try:
                self.scheduler.cancel(ids, reason)
            except SchedulerError as exc:
                self._problem(f"scancel failed: {exc}")
        now = self.clock()
        for row in cancelled:
            self.state.update(row.name, phase=Phase.CANCELLED, ended=now, github_gone=1, note=reason)
            log.info("cancelled runner %s (Slurm job %s): %s", row.name, row.job_id, reason)
            self.metrics.inc("ci_runners_cancelled_total", target=row.target)
        self.state.commit()
        self._remove_jit([row.name for row in cancelled])
        self._forget(ids)
        return [row.name for row in cancelled]

    def _create(self, target: Target, name: str) -> StartResult:
        """JIT config, 0600 file, sbatch; runs in a worker thread (no database access here)."""
        result = StartResult(name, target.name)
        try:
            result.github_id, config = self.github.generate_jitconfig(
                name, list(target.labels), self.settings.github.runner_group_id,
                nodework.work_link(self.settings, name))
        except GitHubError as exc:
            result.error = f"GitHub gave no runner config: {exc}"
            return result
        path = runner_jobs.jit_path(self.job_dir, name)
        try:
            self.host.write_text(path, config, mode=0o600)
            del config
            container = self.settings.container
            image = self.digests.resolve(container.image) if container is not None else None
            spec = runner_jobs.job_spec(self.settings, target, name, self.job_dir, account=self.account,
                                        partition=self.partition, image=image)
            spec = runner_jobs.with_directives(spec, self.scheduler.directives(spec))
            result.job_id = self.scheduler.submit(spec)
            result.submitted = self.clock()
        except CIError as exc:
            result.error = str(exc)
            result.sbatch_failed = True
            self.host.run(["rm", "-f", path], check=False)
            try:
                result.github_deleted = self._unregister(result.github_id, name) != "busy"
            except GitHubError:
                result.github_deleted = False
        return result

    def start(self, target: Target, count: int, queued: Sequence[QueuedJob]) -> list[StartResult]:
        self._prepare()
        now = self.clock()
        names = [runner_jobs.runner_name(self.settings.prefix, target.name) for _ in range(count)]
        self.state.insert([(name, target.name) for name in names], now)
        workers = min(self.settings.submit_workers, count)
        if workers <= 1:
            results = [self._create(target, name) for name in names]
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="runners-submit") as pool:
                results = list(pool.map(lambda name: self._create(target, name), names))
        done = self.clock()
        waiting = sorted(queued, key=lambda job: self.first_seen.get(job.id, done))
        started = 0
        for result in sorted(results, key=lambda r: r.submitted or done):
            if result.job_id:
                submitted = result.submitted or done
                self.state.update(result.name, phase=Phase.PENDING, github_id=result.github_id,
                                  job_id=result.job_id, submitted=submitted)
                log.info("submitted runner %s for %s as job %s", result.name, target.name, result.job_id)
                self.metrics.inc("ci_runners_submitted_total", target=target.name)
                if started < len(waiting):
                    seen = self.first_seen.get(waiting[started].id, submitted)
                    self.metrics.observe_latency(max(0.0, submitted - seen))
                started += 1
            else:
                self.state.update(result.name, phase=Phase.FAILED, github_id=result.github_id, ended=done,
                                  github_gone=int(result.github_deleted or result.github_id is None),
                                  note=result.error[:500])
                if result.sbatch_failed:
                    delay = self.backoff.failed(target.name, done, result.error)
                    self.metrics.inc("ci_runners_submit_failures_total", target=target.name)
                    self._problem(f"sbatch failed for target {target.name} (backing off {delay:.0f}s): "
                                  f"{result.error}")
                else:
                    self._problem(result.error)
        if started:
            self.backoff.succeeded(target.name)
        self.state.commit()
        return results

    def apply(self, plan: Plan, demand: Demand) -> None:
        live = {row.name: row for row in self.state.live()}
        by_reason: dict[str, list[Runner]] = {}
        for cancel in plan.cancel:
            if cancel.name in live:
                by_reason.setdefault(cancel.reason, []).append(live[cancel.name])
        for reason, rows in by_reason.items():
            self._cancel_rows(rows, reason)
        now = self.clock()
        for target in self.settings.targets:
            count = plan.start.get(target.name, 0)
            reason, until = self.unservable_targets.get(target.name, ("", 0.0))
            if count and reason and until > now:
                plan.held_back[target.name] = f"not servable: {reason}"
                plan.start.pop(target.name, None)
                continue
            if count and reason:  # time to try again: one runner, whose job tells whether the node is fixed
                count = plan.start[target.name] = 1
                self.unservable_targets[target.name] = (reason, now + UNSERVABLE_RETRY)
            if count:
                self.start(target, count, demand.per_target.get(target.name, []))

    # -- one poll -------------------------------------------------------------------------------

    def step(self) -> Plan:
        now = self.clock()
        if not self.last_reconcile or now - self.last_reconcile >= self.settings.reconcile_interval:
            self.reconcile()
        polled = self.poll_slurm()  # before GitHub: see the module's docstring
        observed = self.observe()
        self.github.client.forget_untouched(keep_prefix=f"{self.github.client.api_url}{self.github.scope.runners_path}")
        now = self.clock()
        queued_ids = {job.id for job in observed.queued}
        self.first_seen = {job_id: self.first_seen.get(job_id, now) for job_id in queued_ids}
        self.refresh(observed.used, polled)
        demand = count_demand(observed.queued, self.settings.targets)
        fresh = [job for job in demand.unservable if job.id not in self.reported_unservable]
        for job in fresh:
            self._problem(f"job {job.id} ({job.name or 'unnamed'}, run {job.run_id}) asks for labels "
                          f"{sorted(job.labels)}, which no target has; add a target to ci.runners.targets "
                          "whose labels contain them")
        self.reported_unservable = {job.id for job in demand.unservable}
        views = [row.view() for row in self.state.live()]
        plan = decide(self.settings.targets, demand, views, self.clock(), self.backoff.until)
        self.apply(plan, demand)
        self.last_demand, self.last_plan, self.last_poll = demand, plan, self.clock()
        self.publish()
        return plan

    # -- reconcile ------------------------------------------------------------------------------

    def reconcile(self) -> list[str]:
        """Make our rows agree with squeue and GitHub's runner list; returns what was done.

        - a Slurm job of ours that no row knows is adopted (its target and runner are in its name),
          or cancelled when its target is gone or GitHub no longer has its runner;
        - a row still `creating` (a start was interrupted) is adopted when its job exists, else its
          GitHub registration and JIT file are removed;
        - a live Slurm job whose GitHub runner is gone (and that took no job) is cancelled;
        - a registration of ours that no live job backs is deleted (unless GitHub says it is busy);
        - old finished rows are forgotten.
        """
        self._prepare()
        now = self.clock()
        actions: list[str] = []
        prefix = self.settings.prefix
        in_slurm: dict[str, tuple[str, JobStatus]] = {}
        for status in self.scheduler.find(f"{prefix}."):
            parsed = runner_jobs.parse_job_name(prefix, status.name)
            if parsed is not None and not status.terminal:
                in_slurm[parsed[1]] = (parsed[0], status)
        registered = {r.name: r for r in self.github.runners() if r.name.startswith(self.runner_prefix)}
        rows = {row.name: row for row in self.state.live()}
        orphans: list[Runner] = []

        def phase_of(status: JobStatus, busy: bool) -> Phase:
            if busy:
                return Phase.BUSY
            return Phase.RUNNING if status.state in (JobState.RUNNING, JobState.COMPLETING) else Phase.PENDING

        for name, (target_name, status) in in_slurm.items():
            if name in rows:
                continue
            github = registered.get(name)
            busy = bool(github and github.busy)
            self.state.adopt(name, target_name, status.job_id, phase_of(status, busy), now,
                             "adopted from squeue")
            self.state.update(name, github_id=github.id if github else None, used=int(busy),
                              idle_since=now if status.state is JobState.RUNNING else None)
            self.state.commit()
            row = self.state.get(name)
            assert row is not None
            if self.settings.target(target_name) is None or github is None:
                orphans.append(row)
            else:
                actions.append(f"adopted Slurm job {status.job_id} of runner {name} ({target_name})")
        for name, row in rows.items():
            github = registered.get(name)
            github_id = github.id if github else row.github_id
            if github and github.busy and not row.used:
                self.state.update(name, used=1)
            if row.phase is Phase.CREATING:
                if name in in_slurm:
                    status = in_slurm[name][1]
                    self.state.update(name, job_id=status.job_id, github_id=github_id, submitted=now,
                                      phase=phase_of(status, bool(github and github.busy)),
                                      note="adopted after an interrupted start")
                    actions.append(f"adopted Slurm job {status.job_id} of interrupted start {name}")
                else:
                    if github is not None:
                        self._unregister(github.id, name)
                    self.state.update(name, phase=Phase.FAILED, ended=now, github_id=github_id, github_gone=1,
                                      note="start interrupted before sbatch; registration removed")
                    self._remove_jit([name])
                    actions.append(f"undid interrupted start {name}")
                continue
            if name in in_slurm and github is None and not row.used:
                orphans.append(row)
        self.state.commit()
        if orphans:
            for row in orphans:
                why = "its target is gone" if self.settings.target(row.target) is None else "its GitHub runner is gone"
                actions.append(f"cancelled Slurm job {row.job_id} of runner {row.name}: {why}")
            self._cancel_rows(orphans, "its GitHub runner or target is gone")
        live = {row.name for row in self.state.live()}
        for name, github in registered.items():
            if name in live:
                continue
            if github.busy:
                actions.append(f"left busy GitHub runner {name} alone (no live job of ours backs it)")
                continue
            if self._unregister(github.id, name) != "busy":
                actions.append(f"deleted GitHub runner {name}: no live Slurm job backs it")
                self.state.update(name, github_gone=1)
        for row in self.state.ended_needing_cleanup():
            if row.name not in registered:
                self.state.update(row.name, github_gone=1)
        self.state.commit()
        pruned = self.state.prune(now - self.settings.keep_finished)
        if pruned:
            actions.append(f"forgot {pruned} finished runner(s)")
        self.check_capacity()
        self.last_reconcile = self.clock()
        for action in actions:
            log.info("reconcile: %s", action)
        return actions

    # -- reporting ------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        counts = self.state.counts()
        client = self.github.client
        targets = []
        for target in self.settings.targets:
            targets.append({
                "name": target.name, "labels": list(target.labels), "max": target.max,
                "idle_timeout": target.idle_timeout, "demand": self.last_demand.count(target.name),
                "runners": {phase: n for phase, n in counts.get(target.name, {}).items()
                            if Phase(phase).live},
                "starting_now": self.last_plan.start.get(target.name, 0),
                "held_back": self.last_plan.held_back.get(target.name, ""),
                "backoff_until": self.backoff.until.get(target.name),
                "last_failure": self.backoff.last_error.get(target.name, ""),
                "unservable": self.unservable_targets.get(target.name, ("",))[0],
                "docker": target.docker or "",
            })
        return {
            "time": self.last_poll, "poll_interval": self.settings.poll_interval,
            "repository": self.settings.github.repository, "targets": targets,
            "unservable": [{"id": job.id, "run_id": job.run_id, "name": job.name, "labels": sorted(job.labels)}
                           for job in self.last_demand.unservable],
            "rate_limit": client.rate.as_dict(),
            "api": {"calls": client.calls, "not_modified": client.not_modified, "errors": client.errors},
            "problems": list(self.errors),
        }

    def publish(self) -> None:
        snapshot = self.snapshot()
        self.state.save_snapshot(snapshot)
        metrics = self.metrics
        client = self.github.client
        metrics.inc("ci_runners_polls_total")
        metrics.set_counter("ci_runners_github_api_calls_total", client.calls)
        metrics.set_counter("ci_runners_github_not_modified_total", client.not_modified)
        metrics.set_counter("ci_runners_github_errors_total", client.errors)
        if client.rate.remaining is not None:
            metrics.gauge("ci_runners_github_rate_limit_remaining", client.rate.remaining)
        metrics.clear_gauge("ci_runners_runners")
        for target in snapshot["targets"]:
            metrics.gauge("ci_runners_demand", target["demand"], target=target["name"])
            for phase in (Phase.CREATING, Phase.PENDING, Phase.RUNNING, Phase.BUSY):
                metrics.gauge("ci_runners_runners", target["runners"].get(phase.value, 0), target=target["name"],
                              phase=phase.value)
        metrics.gauge("ci_runners_unservable_jobs", len(snapshot["unservable"]))

    # -- the loop -------------------------------------------------------------------------------

    def on_webhook(self, payload: dict[str, Any]) -> None:
        if payload.get("action") in ("queued", "completed", "in_progress"):
            self.wake.set()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def run(self) -> None:
        """Poll until stop(); every failure is logged and the next poll tries again."""
        while not self.stopping.is_set():
            began = time.monotonic()
            pause = self.settings.poll_interval
            try:
                self.step()
            except Stopping:
                break
            except RateLimited as exc:
                # No call can be made before GitHub's time: sleep until then (a webhook still wakes us).
                pause = min(max(exc.until - time.time(), pause), 900.0)
                self._problem(f"{exc}; polling resumes then")
            except CIError as exc:
                self._problem(f"poll failed: {exc}")
                self.state.db.rollback()
                self.last_reconcile = 0.0  # whatever was half done, the next poll reconciles first
            elapsed = time.monotonic() - began
            self.wake.wait(max(pause - elapsed, 0.0))
            if self.wake.is_set() and not self.stopping.is_set():
                self.wake.clear()
                self.stopping.wait(max(0.0, WEBHOOK_MIN_GAP - (time.monotonic() - began)))
