"""Slurm: `sbatch --parsable` to submit, one `squeue` per poll, `sacct` for what squeue forgot.

How a job's end is learned, in order:

1. `squeue -t all -j ID,ID,... -O ...` - one query for every job still being watched. It lists
   finished jobs too while they are in slurmctld's memory (MinJobAge, 300 s by default) and its
   `exit_code` field carries the exit status, so the common case needs nothing else.
2. `scontrol show job -o ID` - only for a finished job whose exit status squeue left empty.
3. `sacct` - for jobs squeue no longer lists: accounting when the site has it, else the job
   completion log (`sacct -c`, JobCompType=jobcomp/filetxt, as the local default enables). A job
   nobody remembers is reported UNKNOWN (terminal) after a grace period, with the fix.

A failed query is not a failed job: queries are retried with backoff, and while Slurm does not
answer, poll() returns the last known states; only after `unreachable_after` seconds of silence
does it raise SchedulerError. Cancelling writes the reason into the job's Comment first, so the
reason survives in squeue for any later observer (Slurm itself only says "None").
"""

from __future__ import annotations

import posixpath
import re
import time
from collections.abc import Callable, Mapping, Sequence

from ci.errors import SchedulerError
from ci.hosts import CommandResult, Host
from ci.resources import Resources
from ci.schedulers.base import JobSpec, JobState, JobStatus, decode_exit, normalise_state, with_env

SQUEUE_FIELDS = ("JobID", "State", "Reason", "exit_code", "Name", "Comment")
SQUEUE_FORMAT = ",".join(f"{name}:0|" for name in SQUEUE_FIELDS[:-1]) + f",{SQUEUE_FIELDS[-1]}:0"
SACCT_FIELDS = ("JobIDRaw", "JobName", "State", "ExitCode", "Reason")
SACCT_COMPLETION_FIELDS = ("JobID", "JobName", "State", "ExitCode")
COMMENT_PREFIX = "containers-ci: "

_TRANSIENT = re.compile(r"unable to contact slurm controller|socket timed out|connection refused|"
                        r"resource temporarily unavailable|slurm_receive_msg|zero bytes were transmitted|"
                        r"communication connection failure|timed out after|try again", re.IGNORECASE)
_INVALID_ID = re.compile(r"invalid job id", re.IGNORECASE)
_ACCOUNTING_OFF = re.compile(r"accounting storage is disabled|no job completion|jobcomp/none",
                             re.IGNORECASE)
_SCONTROL_FIELD = re.compile(r"(?:^|\s)([A-Za-z][\w/:]*)=(.*?)(?=\s[A-Za-z][\w/:]*=|$)")


def resource_options(resources: Resources, *, partition: str | None = None,
                     account: str | None = None) -> list[str]:
    """sbatch options for a job's resources; also its script's #SBATCH lines (`directives`)."""
    options = [f"--nodes={resources.nodes}", f"--ntasks={resources.ntasks}", f"--time={resources.time}"]
    if resources.cpus_per_task:
        options.append(f"--cpus-per-task={resources.cpus_per_task}")
    if resources.mem:
        options.append(f"--mem={resources.mem}")
    chosen = resources.partition or partition
    if chosen:
        options.append(f"--partition={chosen}")
    if account:
        options.append(f"--account={account}")
    if resources.gpus:
        options.append(f"--gpus={resources.gpus}")
    options.extend(resources.extra)
    return options


def sbatch_directives(job: JobSpec) -> list[str]:
    """The #SBATCH header of a job script: its name and log, then its resources (the job's own
    partition wins over the site's). One option per line, each checked to hold no line break."""
    options = ([f"--job-name={job.name}"] if job.name else []) + [f"--output={job.output}"]
    options += resource_options(job.resources, partition=job.partition, account=job.account)
    for option in options:
        if any(ord(character) < 32 or ord(character) == 127 for character in option):
            raise SchedulerError(f"job {job.name!r}: the sbatch option {option!r} holds a control character")
    return [f"#SBATCH {option}" for option in options]


def srun_launch(resources: Resources) -> list[str]:
    """`srun --nodes=N --ntasks=M [--gpus=G]`: the tasks of a test, inside its allocation."""
    argv = ["srun", f"--nodes={resources.nodes}", f"--ntasks={resources.ntasks}"]
    if resources.cpus_per_task:
        argv.append(f"--cpus-per-task={resources.cpus_per_task}")
    if resources.gpus:
        argv.append(f"--gpus={resources.gpus}")
    return argv


def sbatch_options(job: JobSpec) -> list[str]:
    """Everything sbatch is told about a job, in the order a person would write it."""
    return [f"--job-name={job.name}", f"--output={job.output}", f"--chdir={job.workdir}",
            *resource_options(job.resources, partition=job.partition, account=job.account)]


def parse_job_id(stdout: str) -> str:
    """`--parsable` prints `id` or `id;cluster`."""
    text = stdout.strip().splitlines()[-1].strip() if stdout.strip() else ""
    job_id = text.split(";", 1)[0]
    if not re.fullmatch(r"\d+(_\d+)?", job_id):
        raise SchedulerError(f"sbatch answered {stdout.strip()!r} instead of a job id; check `sbatch --version` "
                             "on the site host (--parsable needs Slurm 14.03 or newer)")
    return job_id


def parse_squeue(stdout: str) -> dict[str, dict[str, str]]:
    """Rows of `squeue -O SQUEUE_FORMAT`, keyed by job id."""
    rows: dict[str, dict[str, str]] = {}
    for line in stdout.splitlines():
        if not line.strip():
            continue
        values = line.split("|", len(SQUEUE_FIELDS) - 1)
        if len(values) < len(SQUEUE_FIELDS):
            continue
        row = {name: value.strip() for name, value in zip(SQUEUE_FIELDS, values, strict=True)}
        rows[row["JobID"]] = row
    return rows


def parse_sacct(stdout: str, fields: Sequence[str]) -> dict[str, dict[str, str]]:
    """Rows of `sacct -n -P -o FIELDS` keyed by job id (the first field); job steps are skipped."""
    rows: dict[str, dict[str, str]] = {}
    for line in stdout.splitlines():
        values = line.split("|")
        if len(values) < len(fields):
            continue
        row = {name: value.strip() for name, value in zip(fields, values, strict=False)}
        job_id = row[fields[0]]
        if "." in job_id or not job_id:
            continue
        rows[job_id] = row
    return rows


def parse_scontrol(stdout: str) -> dict[str, str]:
    """`scontrol show job -o ID`: Key=Value pairs (values may contain spaces)."""
    line = stdout.strip().splitlines()[0] if stdout.strip() else ""
    return {key: value for key, value in _SCONTROL_FIELD.findall(line)}


def _reason(text: str) -> str:
    return "" if text in ("None", "(null)", "") else text


class SlurmScheduler:
    """Slurm on a host (this machine, or a login node over SSH)."""

    name = "slurm"

    def __init__(self, host: Host, *, retries: int = 4, backoff: float = 1.0, unreachable_after: float = 600.0,
                 missing_grace: float = 60.0, command_timeout: float = 60.0,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic):
        self.host = host
        self.retries = retries
        self.backoff = backoff
        self.unreachable_after = unreachable_after
        self.missing_grace = missing_grace
        self.command_timeout = command_timeout
        self._sleep = sleep
        self._clock = clock
        self._known: dict[str, JobStatus] = {}
        self._cancel_reasons: dict[str, str] = {}
        self._missing_since: dict[str, float] = {}
        self._failing_since: float | None = None
        self._sacct_mode: str | None = None  # "accounting", "completion", "none"; None until first asked
        self.last_error = ""

    # -- running commands ---------------------------------------------------------------------

    def _query(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> CommandResult | None:
        """Run a read-only Slurm command with retries; None when Slurm did not answer (transient)."""
        delay = self.backoff
        result: CommandResult | None = None
        for attempt in range(self.retries):
            result = self.host.run(argv, env=env, check=False, timeout=self.command_timeout)
            if result.returncode == 127:
                raise SchedulerError(f"{argv[0]} is not installed on {self.host.name}; install the Slurm client "
                                     "commands or choose the direct scheduler (ci.site.scheduler)")
            if result.ok or not _TRANSIENT.search(result.stderr + result.stdout):
                self._failing_since = None
                return result
            if attempt + 1 < self.retries:
                self._sleep(delay)
                delay *= 2
        assert result is not None
        self.last_error = (result.stderr or result.stdout).strip()
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._failing_since >= self.unreachable_after:
            raise SchedulerError(f"Slurm on {self.host.name} has not answered for {now - self._failing_since:.0f}s: "
                                 f"{self.last_error}; check `sinfo` and `scontrol ping` there")
        return None

    # -- the interface ------------------------------------------------------------------------

    def submit(self, job: JobSpec) -> str:
        directories = sorted({job.workdir, posixpath.dirname(job.output) or "."})
        self.host.run(["mkdir", "-p", *directories])  # Slurm drops the output of a job whose folder is missing
        script_path = job.script_path or posixpath.join(job.workdir, f"{job.name}.sbatch")
        if job.script is not None:
            self.host.write_text(script_path, job.script, mode=0o755)
        argv = ["sbatch", "--parsable", *sbatch_options(job), script_path]
        delay = self.backoff
        for attempt in range(self.retries):
            result = self.host.run(with_env(argv, job.env), check=False, timeout=self.command_timeout)
            if result.ok:
                return parse_job_id(result.stdout)
            message = (result.stderr or result.stdout).strip()
            if result.returncode == 127:
                raise SchedulerError(f"sbatch is not installed on {self.host.name}; install the Slurm client "
                                     "commands or choose the direct scheduler (ci.site.scheduler)")
            if not _TRANSIENT.search(message) or attempt + 1 == self.retries:
                raise SchedulerError(f"sbatch refused job {job.name} on {self.host.name}: {message}; "
                                     f"{_submit_hint(message)}")
            self._sleep(delay)
            delay *= 2
            # The first attempt may have been queued even though its answer was lost.
            for status in self.find(job.name):
                if status.name == job.name:
                    return status.job_id
        raise SchedulerError(f"sbatch did not answer for job {job.name}")  # pragma: no cover

    def poll(self, ids: Sequence[str]) -> dict[str, JobStatus]:
        wanted = list(dict.fromkeys(ids))
        statuses = {i: self._known[i] for i in wanted if i in self._known and self._known[i].terminal}
        todo = [i for i in wanted if i not in statuses]
        if not todo:
            return statuses
        result = self._query(["squeue", "-h", "-t", "all", "-j", ",".join(todo), "-O", SQUEUE_FORMAT])
        if result is None:
            return {**statuses, **{i: self._stale(i) for i in todo}}
        rows = parse_squeue(result.stdout) if result.ok else {}
        if not result.ok and not _INVALID_ID.search(result.stderr):
            self.last_error = result.stderr.strip()
            return {**statuses, **{i: self._stale(i) for i in todo}}
        missing = []
        for job_id in todo:
            if job_id in rows:
                self._missing_since.pop(job_id, None)
                statuses[job_id] = self._remember(self._from_squeue(rows[job_id]))
            else:
                missing.append(job_id)
        if missing:
            records = self._sacct(missing)
            for job_id in missing:
                if job_id in records:
                    statuses[job_id] = self._remember(records[job_id])
                else:
                    statuses[job_id] = self._remember(self._vanished(job_id))
        return {i: statuses[i] for i in wanted}

    def cancel(self, ids: Sequence[str], reason: str = "") -> None:
        targets = [i for i in dict.fromkeys(ids) if i]
        if not targets:
            return
        if reason:
            for job_id in targets:
                self._cancel_reasons[job_id] = reason
            comment = (COMMENT_PREFIX + reason).replace("|", "/").replace("\n", " ")[:250]
            self.host.run(["scontrol", "update", f"JobId={','.join(targets)}", f"Comment={comment}"], check=False,
                          timeout=self.command_timeout)
        result = self._query(["scancel", *targets])
        if result is None:
            raise SchedulerError(f"scancel did not reach Slurm on {self.host.name}: {self.last_error}; "
                                 f"cancel jobs {' '.join(targets)} by hand")
        message = (result.stderr or result.stdout).strip()
        if not result.ok and not re.search(r"already|invalid job id", message, re.IGNORECASE):
            raise SchedulerError(f"scancel failed on {self.host.name}: {message}")

    def find(self, prefix: str) -> list[JobStatus]:
        result = self._query(["squeue", "-h", "--me", "-O", SQUEUE_FORMAT])
        if result is None or not result.ok:
            raise SchedulerError(f"cannot list jobs on {self.host.name}: "
                                 f"{self.last_error if result is None else result.stderr.strip()}")
        found = [self._from_squeue(row) for row in parse_squeue(result.stdout).values()
                 if row["Name"].startswith(prefix)]
        return sorted(found, key=lambda status: status.job_id)

    def forget(self, ids: Sequence[str]) -> None:
        """Drop what is remembered of these (ended) jobs: a long-running caller polls thousands."""
        for job_id in ids:
            self._known.pop(job_id, None)
            self._cancel_reasons.pop(job_id, None)
            self._missing_since.pop(job_id, None)

    def directives(self, job: JobSpec) -> list[str]:
        return sbatch_directives(job)

    def task_launch(self, resources: Resources) -> list[str]:
        return srun_launch(resources)

    # -- turning answers into statuses --------------------------------------------------------

    def _remember(self, status: JobStatus) -> JobStatus:
        self._known[status.job_id] = status
        return status

    def _stale(self, job_id: str) -> JobStatus:
        known = self._known.get(job_id)
        if known is not None:
            return known
        return JobStatus(job_id, JobState.PENDING, reason=f"Slurm is not answering: {self.last_error}")

    def _cancel_reason(self, job_id: str, comment: str, slurm_reason: str) -> str:
        if job_id in self._cancel_reasons:
            return self._cancel_reasons[job_id]
        if comment.startswith(COMMENT_PREFIX):
            return comment[len(COMMENT_PREFIX):]
        return _reason(slurm_reason) or "cancelled outside containers-ci (scancel or an administrator)"

    def _from_squeue(self, row: Mapping[str, str]) -> JobStatus:
        job_id = row["JobID"]
        state = normalise_state(row["State"])
        exit_code, signal = decode_exit(row["exit_code"]) if state.terminal else (None, None)
        reason = _reason(row["Reason"])
        if state is JobState.CANCELLED:
            reason = self._cancel_reason(job_id, row.get("Comment", ""), row["Reason"])
        elif state is JobState.TIMEOUT and not reason:
            reason = "TimeLimit"
        if state.terminal and exit_code is None:
            exit_code, signal, reason = self._scontrol_exit(job_id, exit_code, signal, reason)
        return JobStatus(job_id, state, exit_code, signal, reason, row["Name"], row["State"])

    def _scontrol_exit(self, job_id: str, exit_code: int | None, signal: int | None,
                       reason: str) -> tuple[int | None, int | None, str]:
        """squeue left the exit status empty: ask `scontrol show job` while slurmctld still has it."""
        result = self._query(["scontrol", "show", "job", "-o", job_id])
        if result is None or not result.ok:
            return exit_code, signal, reason
        fields = parse_scontrol(result.stdout)
        code, sig = decode_exit(fields.get("ExitCode", ""))
        return code, sig, reason or _reason(fields.get("Reason", ""))

    def _sacct(self, ids: Sequence[str]) -> dict[str, JobStatus]:
        """Finished jobs squeue has forgotten, from accounting or else the job completion log."""
        if self._sacct_mode == "none":
            return {}
        for mode in [self._sacct_mode] if self._sacct_mode else ["accounting", "completion"]:
            fields = SACCT_FIELDS if mode == "accounting" else SACCT_COMPLETION_FIELDS
            argv = ["sacct", "-n", "-P", "-X"] if mode == "accounting" else ["sacct", "-c", "-n", "-P"]
            result = self._query([*argv, "-j", ",".join(ids), "-o", ",".join(fields)])
            if result is None:
                return {}  # transient: ask again at the next poll
            if not result.ok or _ACCOUNTING_OFF.search(result.stderr):
                continue  # this source does not answer on this site
            self._sacct_mode = mode
            return {job_id: self._from_sacct(job_id, row) for job_id, row in parse_sacct(result.stdout, fields).items()}
        self._sacct_mode = "none"
        return {}

    def _from_sacct(self, job_id: str, row: Mapping[str, str]) -> JobStatus:
        state = normalise_state(row["State"])
        exit_code, signal = decode_exit(row.get("ExitCode", ""))
        reason = _reason(row.get("Reason", ""))
        if state is JobState.CANCELLED:
            by = row["State"].partition(" by ")[2]
            reason = self._cancel_reasons.get(job_id) or (f"cancelled by uid {by}" if by else reason)
        return JobStatus(job_id, state, exit_code, signal, reason, row.get("JobName", ""), row["State"])

    def _vanished(self, job_id: str) -> JobStatus:
        """Neither squeue nor sacct knows the job: wait out a short grace, then say so."""
        now = self._clock()
        since = self._missing_since.setdefault(job_id, now)
        known = self._known.get(job_id)
        if now - since < self.missing_grace:
            return known or JobStatus(job_id, JobState.PENDING, reason="not visible in squeue yet")
        return JobStatus(job_id, JobState.UNKNOWN, name=known.name if known else "",
                         reason=("Slurm no longer knows this job and keeps no record of its end "
                                 "(it left slurmctld's memory after MinJobAge); enable accounting or "
                                 "JobCompType=jobcomp/filetxt, or raise MinJobAge"))


def _submit_hint(message: str) -> str:
    lowered = message.lower()
    if "invalid account" in lowered or "association" in lowered:
        return "set ci.site.account to a project you may charge"
    if "invalid partition" in lowered:
        return "set ci.site.partition (or the test's slurm.partition) to one `sinfo -s` lists"
    if "node configuration is not available" in lowered or "more processors" in lowered:
        return "the test asks for more nodes, tasks or GPUs than the partition has; lower its slurm: resources"
    if "time limit" in lowered:
        return "lower the test's slurm.time below the partition's limit (`sinfo -o '%P %l'`)"
    return "see the message above and the test's slurm: section"
