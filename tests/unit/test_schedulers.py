"""Slurm and direct schedulers against a fake Host that answers like squeue, scontrol and sacct do.

The canned outputs are copied from Slurm 22.05 on this machine (`squeue -O 'JobID:0|,...'`,
`scontrol show job -o`, `sacct -c`), including its messages for unknown ids and disabled
accounting; the real thing is exercised in tests/integration/test_slurm.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

from ci.definitions import SlurmResources
from ci.errors import SchedulerError
from ci.hosts import CommandResult
from ci.schedulers import (
    SCHEDULERS,
    DirectScheduler,
    JobSpec,
    JobState,
    SlurmScheduler,
    job_name,
    normalise_state,
    run_job_prefix,
    select_scheduler,
    time_limit_seconds,
)
from ci.schedulers.base import decode_exit
from ci.schedulers.direct import parse_status_line
from ci.schedulers.slurm import COMMENT_PREFIX, SQUEUE_FORMAT, parse_scontrol, sbatch_options

Answer = CommandResult | tuple[int, str, str]


class ScriptedHost:
    """A Host whose commands are answered by handlers keyed by the command's name."""

    name = "login-node"

    def __init__(self, handlers: Mapping[str, Callable[[tuple[str, ...]], Answer]] | None = None):
        self.handlers = dict(handlers or {})
        self.commands: list[tuple[str, ...]] = []
        self.envs: list[Mapping[str, str]] = []
        self.files: dict[str, tuple[str, int | None]] = {}

    def run(self, command: Sequence[str], *, env: Mapping[str, str] | None = None, stdin: str | None = None,
            timeout: float | None = None, check: bool = True, cwd: str | None = None) -> CommandResult:
        argv = tuple(command)
        self.commands.append(argv)
        self.envs.append(dict(env or {}))
        handler = self.handlers.get(argv[0])
        answer: Answer = handler(argv) if handler else (0, "", "")
        if isinstance(answer, tuple):
            answer = CommandResult(argv, *answer)
        if check and not answer.ok:
            raise AssertionError(f"unexpected failure of {argv}")
        return answer

    def named(self, name: str) -> list[tuple[str, ...]]:
        return [c for c in self.commands if c[0] == name]

    def write_text(self, remote: str, text: str, mode: int | None = None) -> None:
        self.files[remote] = (text, mode)

    def put(self, local: Path, remote: str) -> None:
        raise NotImplementedError

    def get(self, remote: str, local: Path) -> None:
        raise NotImplementedError

    def read_text(self, remote: str) -> str:
        return self.files[remote][0]

    def exists(self, remote: str) -> bool:
        return remote in self.files

    def close(self) -> None:
        return None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def slurm(host: ScriptedHost, clock: Clock | None = None, **options: float) -> SlurmScheduler:
    clock = clock or Clock()
    return SlurmScheduler(host, sleep=clock.sleep, clock=clock, **options)  # type: ignore[arg-type]


def squeue_rows(*rows: str) -> Callable[[tuple[str, ...]], Answer]:
    return lambda argv: (0, "".join(f"{row}\n" for row in rows), "")


JOB = JobSpec(name="cci-20261124-base-release", workdir="/site/staging/r/base",
              output="/site/staging/r/base/logs/t.out",
              script="#!/bin/sh\necho hi\n", resources=SlurmResources(ntasks=2, time="00:05:00", gpus=1,
                                                                        extra=("--exclusive",)),
              account="project_462000000", partition="small", env={"CI_RUN": "20261124"})


# -- pure helpers ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "state"), [
    ("RUNNING", JobState.RUNNING), ("CANCELLED by 0", JobState.CANCELLED), ("COMPLETED+", JobState.COMPLETED),
    ("CD", JobState.COMPLETED), ("OUT_OF_MEMORY", JobState.OUT_OF_MEMORY), ("PD", JobState.PENDING),
    ("CONFIGURING", JobState.PENDING), ("COMPLETING", JobState.COMPLETING), ("NODE_FAIL", JobState.NODE_FAIL),
    ("REQUEUED", JobState.REQUEUED), ("something new", JobState.UNKNOWN),
])
def test_states_are_normalised(text: str, state: JobState) -> None:
    assert normalise_state(text) is state


def test_terminal_states() -> None:
    assert {s for s in JobState if not s.terminal} == {JobState.PENDING, JobState.RUNNING, JobState.COMPLETING,
                                                       JobState.SUSPENDED, JobState.REQUEUED}


@pytest.mark.parametrize(("text", "decoded"), [
    ("768", (3, 0)), ("0", (0, 0)), ("15", (0, 15)), ("3:0", (3, 0)), ("0:15", (0, 15)), ("", (None, None)),
    ("N/A", (None, None)),
])
def test_exit_codes_from_raw_status_and_scontrol_form(text: str, decoded: tuple[int | None, int | None]) -> None:
    assert decode_exit(text) == decoded


@pytest.mark.parametrize(("text", "seconds"), [
    ("10", 600), ("1:30", 90), ("00:10:00", 600), ("1-0", 86400), ("1-02:03", 93780), ("2-00:00:05", 172805),
    ("UNLIMITED", None), ("0", None),
])
def test_time_limits(text: str, seconds: int | None) -> None:
    assert time_limit_seconds(text) == seconds


def test_job_names_carry_prefix_run_image_and_test() -> None:
    name = job_name("cci", "20261124-1200", "tools-minimal", "tools", arch="amd64")
    assert re.fullmatch(r"cci-20261124-1200-tools-minimal-tools-[0-9a-f]{8}", name)
    assert job_name("cci", "r 1", "a/b", "t").startswith("cci-r_1-a_b-t-")
    assert name.startswith(run_job_prefix("cci", "20261124-1200"))


def test_job_names_are_unique_per_arch_image_and_test() -> None:
    """`mpi` + `hello-world` and `mpi-hello` + `world` read the same; the same name in two arches too."""
    names = {job_name("cci", "r", "mpi", "hello-world", arch="amd64"), job_name("cci", "r", "mpi-hello", "world",
                                                                                   arch="amd64"),
             job_name("cci", "r", "mpi", "hello-world", arch="arm64")}
    assert len(names) == 3


def test_each_scheduler_renders_its_own_header_and_launcher() -> None:
    job = JobSpec(name="cci-r-a-t-12345678", workdir="/w", output="/w/o.log", script_path="/w/j.sh",
                  resources=SlurmResources(nodes=2, ntasks=4, gpus=1, time="00:05:00"), partition="small")
    assert SCHEDULERS.keys() == {"slurm", "direct"}
    assert slurm(ScriptedHost()).directives(job) == [
        "#SBATCH --job-name=cci-r-a-t-12345678", "#SBATCH --output=/w/o.log", "#SBATCH --nodes=2",
        "#SBATCH --ntasks=4", "#SBATCH --time=00:05:00", "#SBATCH --partition=small", "#SBATCH --gpus=1"]
    assert slurm(ScriptedHost()).task_launch(job.resources) == ["srun", "--nodes=2", "--ntasks=4", "--gpus=1"]
    direct = select_scheduler("direct", ScriptedHost())
    assert direct.directives(job) == [] and direct.task_launch(job.resources) == []


def test_jobspec_needs_exactly_one_script() -> None:
    with pytest.raises(SchedulerError, match="either the script text or the path"):
        JobSpec(name="x", workdir="/w", output="/w/o")
    with pytest.raises(SchedulerError):
        JobSpec(name="x", workdir="/w", output="/w/o", script="a", script_path="/w/s")


def test_scontrol_values_with_spaces() -> None:
    fields = parse_scontrol("JobId=5 JobName=cci-x JobState=CANCELLED Reason=None Comment=containers-ci: run "
                            "interrupted ExitCode=0:15 NtasksPerN:B:S:C=0:0:*:* CPUs/Task=1")
    assert fields["Comment"] == "containers-ci: run interrupted"
    assert fields["ExitCode"] == "0:15" and fields["CPUs/Task"] == "1"


# -- submit --------------------------------------------------------------------------------------------

def test_submit_writes_the_script_and_calls_sbatch_parsable() -> None:
    host = ScriptedHost({"env": lambda argv: (0, "4242;cluster\n", "")})
    job_id = slurm(host).submit(JOB)
    assert job_id == "4242"
    script_path = "/site/staging/r/base/cci-20261124-base-release.sbatch"
    assert host.files[script_path] == (JOB.script, 0o755)
    assert ("mkdir", "-p", "/site/staging/r/base", "/site/staging/r/base/logs") in host.commands
    (sbatch,) = host.named("env")
    assert sbatch[:2] == ("env", "CI_RUN=20261124")
    assert sbatch[2:] == ("sbatch", "--parsable", "--job-name=cci-20261124-base-release",
                      "--output=/site/staging/r/base/logs/t.out", "--chdir=/site/staging/r/base", "--nodes=1",
                      "--ntasks=2", "--time=00:05:00", "--partition=small", "--account=project_462000000", "--gpus=1",
                      "--exclusive", script_path)


def test_submit_uses_an_existing_script_file() -> None:
    host = ScriptedHost({"sbatch": lambda argv: (0, "7\n", "")})
    job = JobSpec(name="n", workdir="/w", output="/w/o.log", script_path="/w/job.sh",
                  resources=SlurmResources(partition="gpu"), partition="small")
    slurm(host).submit(job)
    assert host.files == {}
    assert host.named("sbatch")[0][-1] == "/w/job.sh"
    assert "--partition=gpu" in host.named("sbatch")[0]  # the test's own partition wins
    assert sbatch_options(job).count("--partition=gpu") == 1


def test_submit_refusal_names_the_fix() -> None:
    host = ScriptedHost({"env": lambda argv: (1, "", "sbatch: error: Batch job submission failed: "
                                                    "Invalid account or account/partition combination specified")})
    with pytest.raises(SchedulerError, match=r"set ci\.site\.account"):
        slurm(host).submit(JOB)
    assert len(host.named("env")) == 1  # a refusal is not retried


def test_submit_retries_a_lost_controller_and_adopts_a_queued_job() -> None:
    answers = iter([(1, "", "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation")])
    host = ScriptedHost({
        "env": lambda argv: next(answers, (0, "99\n", "")),
        "squeue": squeue_rows("77|PENDING|Priority|0|cci-20261124-base-release|"),
    })
    clock = Clock()
    assert slurm(host, clock).submit(JOB) == "77"
    assert len(host.named("env")) == 1 and clock.sleeps == [1.0]


# -- poll ------------------------------------------------------------------------------------------------

def test_one_squeue_for_many_jobs() -> None:
    host = ScriptedHost({"squeue": squeue_rows(
        "11|COMPLETED|None|0|cci-r-a-t|",
        "12|FAILED|NonZeroExitCode|768|cci-r-b-t|",
        "13|RUNNING|None|0|cci-r-c-t|",
        "14|TIMEOUT|TimeLimit|15|cci-r-d-t|",
        "15|PENDING|Resources|0|cci-r-e-t|",
    )})
    statuses = slurm(host).poll(["11", "12", "13", "14", "15"])
    assert host.named("squeue") == [("squeue", "-h", "-t", "all", "-j", "11,12,13,14,15", "-O", SQUEUE_FORMAT)]
    assert [(s.state, s.exit_code, s.terminal) for s in statuses.values()] == [
        (JobState.COMPLETED, 0, True), (JobState.FAILED, 3, True), (JobState.RUNNING, None, False),
        (JobState.TIMEOUT, 0, True), (JobState.PENDING, None, False)]
    assert statuses["14"].signal == 15 and statuses["14"].reason == "TimeLimit"
    assert statuses["15"].reason == "Resources" and statuses["12"].name == "cci-r-b-t"


def test_finished_jobs_are_not_asked_about_again() -> None:
    host = ScriptedHost({"squeue": squeue_rows("11|COMPLETED|None|0|a|", "13|RUNNING|None|0|c|")})
    scheduler = slurm(host)
    scheduler.poll(["11", "13"])
    scheduler.poll(["11", "13"])
    assert [c[5] for c in host.named("squeue")] == ["11,13", "13"]


def test_cancel_records_the_reason_in_slurm_and_reports_it() -> None:
    host = ScriptedHost({"squeue": squeue_rows(f"21|CANCELLED|None|15|a|{COMMENT_PREFIX}run interrupted")})
    scheduler = slurm(host)
    scheduler.cancel(["21", "22"], reason="run interrupted")
    assert host.commands[0] == ("scontrol", "update", "JobId=21,22", f"Comment={COMMENT_PREFIX}run interrupted")
    assert host.named("scancel") == [("scancel", "21", "22")]
    assert scheduler.poll(["21"])["21"].reason == "run interrupted"
    # another process (a resumed run) reads the reason from the comment
    fresh = slurm(host).poll(["21"])["21"]
    assert (fresh.state, fresh.reason) == (JobState.CANCELLED, "run interrupted")


def test_cancel_by_someone_else_says_so() -> None:
    host = ScriptedHost({"squeue": squeue_rows("21|CANCELLED|None|15|a|")})
    assert "outside containers-ci" in slurm(host).poll(["21"])["21"].reason


def test_scancel_of_finished_jobs_is_fine() -> None:
    host = ScriptedHost({"scancel": lambda argv: (1, "", "scancel: error: Kill job error on job id 5: "
                                                          "Job/step already completing or completed")})
    slurm(host).cancel(["5"])  # no error: the job it was to stop has already stopped
    assert [argv[-1] for argv in host.named("scancel")] == ["5"]


def test_scontrol_fills_in_a_missing_exit_code() -> None:
    host = ScriptedHost({
        "squeue": squeue_rows("31|FAILED|NonZeroExitCode||a|"),
        "scontrol": lambda argv: (0, "JobId=31 JobName=a JobState=FAILED Reason=NonZeroExitCode ExitCode=2:0 "
                                     "RunTime=00:00:01\n", ""),
    })
    status = slurm(host).poll(["31"])["31"]
    assert host.named("scontrol") == [("scontrol", "show", "job", "-o", "31")]
    assert (status.state, status.exit_code) == (JobState.FAILED, 2)


def test_jobs_gone_from_squeue_come_from_the_completion_log_when_accounting_is_off() -> None:
    def sacct(argv: tuple[str, ...]) -> Answer:
        if "-c" in argv:
            return 0, "41|cci-r-a-t|COMPLETED|0:0\n42|cci-r-b-t|CANCELLED|0:15\n", ""
        return 1, "", "Slurm accounting storage is disabled"

    host = ScriptedHost({"squeue": lambda argv: (1, "", "slurm_load_jobs error: Invalid job id specified"),
                         "sacct": sacct})
    scheduler = slurm(host)
    statuses = scheduler.poll(["41", "42"])
    assert statuses["41"].state is JobState.COMPLETED and statuses["41"].exit_code == 0
    assert statuses["42"].state is JobState.CANCELLED
    assert [c[:3] for c in host.named("sacct")] == [("sacct", "-n", "-P"), ("sacct", "-c", "-n")]
    scheduler.poll(["43"])
    assert host.named("sacct")[-1][:3] == ("sacct", "-c", "-n")  # remembers which source answers


def test_sacct_with_accounting_reports_who_cancelled() -> None:
    host = ScriptedHost({"squeue": squeue_rows(),
                         "sacct": lambda argv: (0, "51|cci-x|CANCELLED by 1234|0:15|None\n"
                                                   "51.batch|batch|CANCELLED|0:15|\n", "")})
    status = slurm(host).poll(["51"])["51"]
    assert (status.state, status.reason, status.name) == (JobState.CANCELLED, "cancelled by uid 1234", "cci-x")


def test_a_job_nobody_remembers_becomes_unknown_after_a_grace_period() -> None:
    host = ScriptedHost({"squeue": squeue_rows(), "sacct": lambda argv: (1, "", "accounting storage is disabled")})
    clock = Clock()
    scheduler = slurm(host, clock, missing_grace=60.0)
    assert scheduler.poll(["61"])["61"].state is JobState.PENDING
    clock.now += 61
    status = scheduler.poll(["61"])["61"]
    assert status.state is JobState.UNKNOWN and status.terminal and "MinJobAge" in status.reason


def test_a_failed_poll_is_not_a_failed_job() -> None:
    down = (1, "", "squeue: error: slurm_load_jobs error: Unable to contact slurm controller (connect failure)")
    answers = iter([(0, "71|RUNNING|None|0|a|\n", ""), down, down, down, down])
    host = ScriptedHost({"squeue": lambda argv: next(answers, down)})
    clock = Clock()
    scheduler = slurm(host, clock, retries=4, backoff=1.0, unreachable_after=600.0)
    assert scheduler.poll(["71"])["71"].state is JobState.RUNNING
    status = scheduler.poll(["71", "72"])
    assert status["71"].state is JobState.RUNNING  # the last known state, not FAILED
    assert status["72"].state is JobState.PENDING and "not answering" in status["72"].reason
    assert clock.sleeps == [1.0, 2.0, 4.0]
    clock.now += 600
    with pytest.raises(SchedulerError, match=r"has not answered for .*scontrol ping"):
        scheduler.poll(["71"])


def test_find_lists_unfinished_jobs_by_prefix() -> None:
    host = ScriptedHost({"squeue": squeue_rows("81|RUNNING|None|0|cci-old-base-t|", "82|PENDING|None|0|other|",
                                               "83|PENDING|Priority|0|cci-old-mpi-t|")})
    found = slurm(host).find("cci-old-")
    assert [(s.job_id, s.name) for s in found] == [("81", "cci-old-base-t"), ("83", "cci-old-mpi-t")]
    assert host.named("squeue")[0][:3] == ("squeue", "-h", "--me")


def test_missing_slurm_commands_name_the_alternative() -> None:
    host = ScriptedHost({"squeue": lambda argv: (127, "", "sh: squeue: not found")})
    with pytest.raises(SchedulerError, match="direct scheduler"):
        slurm(host).poll(["1"])


# -- direct scheduler ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("line", "state", "exit_code", "reason"), [
    ("direct-1|123|1||||n", JobState.RUNNING, None, ""),
    ("direct-1||0||||n", JobState.PENDING, None, "starting"),
    ("direct-1|123|0|0||n", JobState.COMPLETED, 0, ""),
    ("direct-1|123|0|3||n", JobState.FAILED, 3, "NonZeroExitCode"),
    ("direct-1|123|0|143|TIMEOUT |n", JobState.TIMEOUT, 143, "TimeLimit"),
    ("direct-1|123|0|143|CANCELLED  run interrupted |n", JobState.CANCELLED, 143, "run interrupted"),
    ("direct-1|123|0||||n", JobState.FAILED, None, "the process ended without an exit status"),
    ("direct-1|missing|||||", JobState.UNKNOWN, None, "state folder is gone"),
])
def test_direct_status_lines(line: str, state: JobState, exit_code: int | None, reason: str) -> None:
    status = parse_status_line(line, {})
    assert status is not None
    assert (status.state, status.exit_code) == (state, exit_code)
    assert reason in status.reason


def test_direct_polls_all_jobs_with_one_command() -> None:
    host = ScriptedHost({"sh": lambda argv: (0, "direct-a|1|1||||x\ndirect-b|2|0|0||y\n", "")})
    statuses = DirectScheduler(host, "/state").poll(["direct-a", "direct-b"])
    assert len(host.commands) == 1 and host.commands[0][-3:] == ("/state", "direct-a", "direct-b")
    assert statuses["direct-a"].state is JobState.RUNNING and statuses["direct-b"].state is JobState.COMPLETED


def test_select_scheduler() -> None:
    assert select_scheduler("auto", ScriptedHost()).name == "slurm"
    assert select_scheduler("auto", ScriptedHost({"sh": lambda argv: (1, "", "")})).name == "direct"
    assert select_scheduler("direct", ScriptedHost()).name == "direct"
    with pytest.raises(SchedulerError, match="choose slurm, direct or auto"):
        select_scheduler("pbs", ScriptedHost())
