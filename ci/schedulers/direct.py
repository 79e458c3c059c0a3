"""No scheduler: run each job script as a detached background process on the site host.

For a laptop or a CI box without Slurm, with the same interface as the Slurm backend, so the
pipeline does not care. Each job gets a state folder `<state_dir>/<job id>/` holding the job's
name, its process id, its end reason (TIMEOUT, CANCELLED) and its exit status; the job survives
our process (it runs in its own session, `setsid`), so an interrupted run can still find and
judge it. The `--time` limit is enforced by a watchdog that stops the job's process group, and
every poll reads all state folders with one shell command.
"""

from __future__ import annotations

import posixpath
import uuid
from collections.abc import Sequence

from ci.errors import CIError, SchedulerError
from ci.hosts import Host
from ci.resources import Resources
from ci.schedulers.base import JobSpec, JobState, JobStatus, with_env

# The wrapper around a job script: records the process id, enforces the time limit, writes the
# exit status last (atomically), and marks why it was stopped when it was.
WRAPPER = r"""#!/bin/sh
# containers-ci direct job wrapper (generated)
state=$1 workdir=$2 output=$3 script=$4 limit=$5
echo $$ > "$state/pid"
child= watchdog=
stop() {
    [ -e "$state/reason" ] || echo CANCELLED > "$state/reason"
    [ -n "$child" ] && kill -TERM "$child" 2>/dev/null
    ( sleep 10; kill -KILL -- "-$$" ) </dev/null >/dev/null 2>&1 &
}
trap stop TERM INT HUP
if ! cd "$workdir"; then echo 126 > "$state/rc.tmp"; mv -f "$state/rc.tmp" "$state/rc"; exit 126; fi
if [ -x "$script" ]; then "$script" > "$output" 2>&1 & else sh "$script" > "$output" 2>&1 & fi
child=$!
if [ "$limit" -gt 0 ]; then
    (
        sleep "$limit" & nap=$!
        trap 'kill "$nap" 2>/dev/null; exit 0' TERM
        wait "$nap"
        echo TIMEOUT > "$state/reason"
        kill -TERM -- "-$$"
    ) </dev/null >/dev/null 2>&1 &
    watchdog=$!
fi
while :; do
    wait "$child"; rc=$?
    kill -0 "$child" 2>/dev/null || break
done
[ -n "$watchdog" ] && kill "$watchdog" 2>/dev/null
echo "$rc" > "$state/rc.tmp" && mv -f "$state/rc.tmp" "$state/rc"
"""

LAUNCH = 'setsid -f sh "$1/run" "$@" </dev/null >/dev/null 2>&1'

# One line per job: id|pid|alive|rc|end|name; `end` is the reason file on one line: its first word
# is the end state (TIMEOUT, CANCELLED), the rest why.
STATUS = r"""root=$1; shift
for id in "$@"; do
    d="$root/$id"
    if [ ! -d "$d" ]; then echo "$id|missing|||||"; continue; fi
    pid=$(cat "$d/pid" 2>/dev/null); rc=$(cat "$d/rc" 2>/dev/null)
    reason=$(tr '\n|' '  ' < "$d/reason" 2>/dev/null); name=$(cat "$d/name" 2>/dev/null)
    alive=0; if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then alive=1; fi
    echo "$id|$pid|$alive|$rc|$reason|$name"
done
"""

LIST = r"""root=$1
[ -d "$root" ] || exit 0
for d in "$root"/*/; do
    [ -f "$d/name" ] || continue
    basename "$d"
done
"""

CANCEL = r"""root=$1 why=$2; shift 2
for id in "$@"; do
    d="$root/$id"
    [ -d "$d" ] || continue
    [ -e "$d/rc" ] && continue
    [ -e "$d/reason" ] || printf 'CANCELLED\n%s\n' "$why" > "$d/reason"
    pid=$(cat "$d/pid" 2>/dev/null)
    [ -n "$pid" ] && kill -TERM -- "-$pid" 2>/dev/null
done
true
"""


def parse_status_line(line: str, reasons: dict[str, str]) -> JobStatus | None:
    """Turn one STATUS line into a JobStatus (None for a line that is not one)."""
    parts = line.split("|", 5)
    if len(parts) != 6:
        return None
    job_id, pid, alive, rc, end, name = parts
    if pid == "missing":
        return JobStatus(job_id, JobState.UNKNOWN, reason="the job's state folder is gone (removed by hand?)")
    end_state, _, why = end.strip().partition(" ")
    exit_code = int(rc) if rc.strip().lstrip("-").isdigit() else None
    if end_state == "TIMEOUT":
        state, reason = JobState.TIMEOUT, "TimeLimit"
    elif end_state == "CANCELLED":
        state, reason = JobState.CANCELLED, reasons.get(job_id) or why.strip() or "cancelled"
    elif exit_code is not None:
        state, reason = (JobState.COMPLETED, "") if exit_code == 0 else (JobState.FAILED, "NonZeroExitCode")
    elif not pid:
        state, reason = JobState.PENDING, "starting"
    elif alive == "1":
        state, reason = JobState.RUNNING, ""
    else:
        state, reason = JobState.FAILED, "the process ended without an exit status (killed, or the host rebooted)"
    if not state.terminal:
        return JobStatus(job_id, state, reason=reason, name=name, raw_state=state.value)
    signal = exit_code - 128 if exit_code is not None and exit_code > 128 and end_state else None
    return JobStatus(job_id, state, exit_code, signal, reason, name, end_state or state.value)


class DirectScheduler:
    """Background processes on a host, behind the Scheduler interface."""

    name = "direct"

    def __init__(self, host: Host, state_dir: str | None = None):
        self.host = host
        self._state_dir = state_dir
        self._known: dict[str, JobStatus] = {}
        self._reasons: dict[str, str] = {}

    @property
    def state_dir(self) -> str:
        """Where job state folders live; by default under the site user's ~/.local/state."""
        if self._state_dir is None:
            home = self.host.run(["sh", "-c", 'printf %s "$HOME"']).stdout.strip() or "/tmp"
            self._state_dir = posixpath.join(home, ".local/state/containers-ci/direct-jobs")
        return self._state_dir

    def submit(self, job: JobSpec) -> str:
        job_id = f"direct-{uuid.uuid4().hex[:12]}"
        folder = posixpath.join(self.state_dir, job_id)
        self.host.run(["mkdir", "-p", folder, job.workdir, posixpath.dirname(job.output) or "."])
        script = job.script_path or posixpath.join(folder, "script")
        if job.script is not None:
            self.host.write_text(script, job.script, mode=0o755)
        self.host.write_text(posixpath.join(folder, "run"), WRAPPER, mode=0o755)
        self.host.write_text(posixpath.join(folder, "name"), job.name)
        limit = job.time_limit or 0
        launch = ["sh", "-c", LAUNCH, "sh", folder, job.workdir, job.output, script, str(limit)]
        result = self.host.run(with_env(launch, job.env), check=False)
        if not result.ok:
            raise SchedulerError(f"cannot start job {job.name} on {self.host.name}: {result.stderr.strip()}; "
                                 "check that `setsid` (util-linux) is installed there")
        return job_id

    def poll(self, ids: Sequence[str]) -> dict[str, JobStatus]:
        wanted = list(dict.fromkeys(ids))
        statuses = {i: self._known[i] for i in wanted if i in self._known and self._known[i].terminal}
        todo = [i for i in wanted if i not in statuses]
        if todo:
            try:
                result = self.host.run(["sh", "-c", STATUS, "sh", self.state_dir, *todo], check=False)
            except CIError:  # the host did not answer: not a failed job; ask again next time
                result = None
            if result is not None and result.ok:
                for line in result.stdout.splitlines():
                    status = parse_status_line(line, self._reasons)
                    if status is not None and status.job_id in todo:
                        self._known[status.job_id] = status
                        statuses[status.job_id] = status
            for job_id in todo:
                statuses.setdefault(job_id, self._known.get(job_id) or JobStatus(
                    job_id, JobState.PENDING, reason=f"{self.host.name} did not answer the status query"))
        return {i: statuses[i] for i in wanted}

    def cancel(self, ids: Sequence[str], reason: str = "") -> None:
        targets = [i for i in dict.fromkeys(ids) if i]
        if not targets:
            return
        why = (reason or "cancelled by containers-ci").replace("\n", " ")
        for job_id in targets:
            self._reasons[job_id] = why
        self.host.run(["sh", "-c", CANCEL, "sh", self.state_dir, why, *targets])

    def directives(self, job: JobSpec) -> list[str]:
        """No header: the wrapper is told the time limit; the script's own lines say the rest."""
        return []

    def task_launch(self, resources: Resources) -> list[str]:
        """One process: without a scheduler there is no task launcher (job scripts fall back to
        starting N local processes where a test asks for N tasks)."""
        return []

    def find(self, prefix: str) -> list[JobStatus]:
        listed = self.host.run(["sh", "-c", LIST, "sh", self.state_dir]).stdout.split()
        if not listed:
            return []
        statuses = self.poll(listed)
        return sorted((s for s in statuses.values() if not s.terminal and s.name.startswith(prefix)),
                      key=lambda s: s.job_id)

    def forget(self, ids: Sequence[str]) -> None:
        """Drop what is remembered of these (ended) jobs: a long-running caller polls thousands."""
        for job_id in ids:
            self._known.pop(job_id, None)
            self._reasons.pop(job_id, None)
