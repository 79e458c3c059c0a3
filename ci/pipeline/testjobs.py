"""Test jobs: the batch scripts that run one test, and the judge of its output.

A script is self-contained (its header, the scheduler's `directives`, says everything the job asks
for), so a person can resubmit it by hand and see exactly what the CI ran. Two kinds:

- a test inside the image (`run: image`, the default): the staged test folder is mounted into the
  image through the engine's own bind syntax, and the test runs under the scheduler's task
  launcher when it has several tasks (or as N local processes without one);
- a host-side test (`run: host`, LUMI's style): the script runs in the job on the node, in its own
  working folder, with `$1` = the image file and `SCMD` = the launcher (task launch + the engine's
  exec command + the site's binds), and starts its container commands itself.

Both print the exit status and write it to an exit file, so a resumed run can judge a job that
finished while nobody watched. Every value that reaches a script is quoted, and none may hold a
control character: a newline can never add a shell line.

The judge is ReFrame-style: the exit code must match, every pattern must appear in the output,
and every metric is pulled out by its regex and compared with its bounds. Values are recorded
even when they pass, so the report can show performance over time. Expressions are matched with
the `regex` module under a time limit (MATCH_SECONDS) and without holding the GIL, so a
catastrophically backtracking pattern fails its test with a reason instead of freezing the run.
"""

from __future__ import annotations

import math
import posixpath
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import regex

from ci.definitions import Expectation, MetricCheck, TestSpec
from ci.engines.base import Bind, Engine
from ci.errors import CIError

MARKER = "== containers-ci:"
# How long one pattern or metric regex may take on a test's output: a backtracking expression
# (`(a|aa)+$` on 40 characters) would otherwise freeze the run with the site lock held.
MATCH_SECONDS = 2.0
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class JobScriptError(CIError):
    """A value that cannot be put into a job script safely."""
# Variables the test sees inside the container (Docker does not pass the environment on its own).
PASS_ENV = ("CI_IMAGE", "CI_TEST", "CI_TEST_DIR", "SLURM_JOB_ID", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID",
            "SLURM_NTASKS")


def interpreter(script: Path) -> list[str]:
    """The test's `#!` line as an argument list (the kernel's rule: one optional argument), else sh.

    Running `<interpreter> <script>` instead of the script itself does not depend on the execute
    bit surviving the copy to the site.
    """
    try:
        with script.open("rb") as handle:
            first = handle.readline(256).decode("utf-8", "replace").strip()
    except OSError:
        return ["sh"]
    if not first.startswith("#!"):
        return ["sh"]
    parts = first[2:].strip().split(None, 1)
    return parts or ["sh"]


_SCMD_WORD = re.compile(r"[A-Za-z0-9_@%+=:,./-]+\Z")


def one_line(value: str, what: str) -> str:
    """`value` unchanged if it holds no control character (a newline would add a shell line)."""
    if any(ord(character) < 32 or ord(character) == 127 for character in value):
        raise JobScriptError(f"{what} {value!r} holds a control character (a line break, tab or escape); "
                             "use plain text")
    return value


def _launch(command: Sequence[str], ntasks: int, nodes: int, launch: Sequence[str]) -> str:
    """Shell text running `command` once, or as `ntasks` tasks (the scheduler's launcher, e.g. srun;
    without one, N local processes numbered like Slurm's tasks); it leaves the exit status in $status."""
    line = shlex.join(command)
    if ntasks <= 1 and nodes <= 1:
        return f"{line}\nstatus=$?"
    if launch:
        return f"{shlex.join(launch)} {line}\nstatus=$?"
    return (
        f"# no task launcher: {ntasks} local processes, numbered like Slurm's tasks\n"
        'pids=""; task=0; status=0\n'
        f'while [ "$task" -lt {ntasks} ]; do\n'
        f"    SLURM_PROCID=$task SLURM_NTASKS={ntasks} {line} &\n"
        '    pids="$pids $!"; task=$((task + 1))\n'
        "done\n"
        'for pid in $pids; do wait "$pid" || status=$?; done'
    )


def _preamble(header: Sequence[str], comment: str, workdir: str, variables: Mapping[str, str]) -> list[str]:
    for line in header:
        one_line(line, "the job directive")
    lines = ["#!/bin/sh", *header, "# " + one_line(comment, "the job description"), "set -u",
             f"cd {shlex.quote(workdir)} || exit 126",
             'USER="${USER:-$(id -un)}"; export USER  # ch-run refuses to start without it']
    for name, value in variables.items():
        if not _ENV_NAME.match(name):
            raise JobScriptError(f"{name!r} is not a valid environment variable name")
        lines.append(f"export {name}={shlex.quote(one_line(value, f'the value of {name}'))}")
    return lines


def _ending(exit_file: str | None) -> list[str]:
    lines = [f'echo "{MARKER} exit status $status"']
    if exit_file:
        part = shlex.quote(f"{exit_file}.part")
        lines.append(f'echo "$status" > {part} && mv -f {part} {shlex.quote(exit_file)}')
    lines.append('exit "$status"')
    return lines


def render_job_script(*, test: TestSpec, engine: Engine, image_file: str, script: str, workdir: str, output: str,
                      header: Sequence[str] = (), launch: Sequence[str] = (), exit_file: str | None = None,
                      test_dir: str | None = None, image: str = "", env: Mapping[str, str] | None = None) -> str:
    """The batch script for one test that runs inside the image.

    `header` is the scheduler's directives (`Scheduler.directives`), `launch` its task launcher
    (`Scheduler.task_launch`); `script` is the test script's path on the site host, `test_dir` the
    staged folder mounted into the image (default: the script's folder), `output` the job's log,
    `exit_file` where the test's exit status is written at the end. `env` adds non-secret
    variables for the test. Every value is quoted, and none may hold a control character.
    """
    folder = test_dir or posixpath.dirname(script)
    relative = posixpath.relpath(script, folder)
    if relative.startswith(".."):
        raise ValueError(f"the test script {script} is not inside the mounted folder {folder}")
    guest = engine.guest_path(0, folder)
    guest_script = posixpath.join(guest, relative)
    inner = ["sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", guest, *interpreter(test.script), guest_script]
    command = engine.exec_command(image_file, inner, [Bind(folder, guest)], pass_env=PASS_ENV)
    variables = {"CI_IMAGE": image, "CI_TEST": test.name, "CI_TEST_DIR": guest, "CI_IMAGE_FILE": image_file,
                 **(env or {})}
    about = f"containers-ci test job (generated): test {test.name}" + (f" of {image}" if image else "") + \
        f", engine {engine.name}. Resubmit by hand with: sbatch <this file>"
    lines = _preamble(header, about, workdir, variables)
    lines += [
        f'echo "{MARKER} test "{shlex.quote(test.name)}" with {engine.name} on $(uname -n) at '
        '$(date -u +%Y-%m-%dT%H:%M:%SZ)"',
        _launch(command, test.slurm.ntasks, test.slurm.nodes, launch),
        *_ending(exit_file),
    ]
    return "\n".join(lines) + "\n"


def scmd(launch: Sequence[str], engine_words: Sequence[str]) -> str:
    """The `SCMD` of a host-side test: the task launcher, then the engine's exec command with the site's
    binds. Tests expand it unquoted (`$SCMD -B $(pwd):/myrun $1 cmd`), so every word must survive
    the shell's word splitting as it is: plain characters only, no spaces, no quotes."""
    words = [*launch, *engine_words]
    for word in words:
        if not _SCMD_WORD.match(word):
            raise JobScriptError(f"{word!r} cannot be part of SCMD: a host-side test splits SCMD at spaces, "
                                 "so launcher words, bind paths and the engine's options must be plain "
                                 "(letters, digits, _@%+=:,./-)")
    return " ".join(words)


def render_host_test_script(*, test: TestSpec, engine: Engine, image_file: str, script: str, workdir: str,
                            output: str, scmd_value: str, header: Sequence[str] = (),
                            exit_file: str | None = None, image: str = "", test_dir: str = "",
                            env: Mapping[str, str] | None = None) -> str:
    """The batch script for a host-side test (`run: host`, LUMI's style): the test script runs in the
    job on the node, not inside the image, in its own working folder `workdir` (made fresh), with
    the image file as `$1` and `SCMD` the launcher it puts in front of its container commands."""
    variables = {"CI_IMAGE": image, "CI_TEST": test.name, "CI_TEST_DIR": test_dir, "CI_IMAGE_FILE": image_file,
                 "SCMD": scmd_value, **(env or {})}
    about = f"containers-ci host-side test job (generated): test {test.name}" + (f" of {image}" if image else "") + \
        f", engine {engine.name}: the script runs on the node with $1 = the image file and $SCMD = the launcher"
    lines = _preamble(header, about, workdir, variables)
    lines += [
        f'echo "{MARKER} host-side test "{shlex.quote(test.name)}" with {engine.name} on $(uname -n) at '
        '$(date -u +%Y-%m-%dT%H:%M:%SZ)"',
        shlex.join([*interpreter(test.script), script, image_file]),
        "status=$?",
        *_ending(exit_file),
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Judging
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    """One metric as measured: its value (None when the regex found nothing) and its verdict."""

    name: str
    value: float | None
    unit: str
    minimum: float | None
    maximum: float | None
    passed: bool

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "value": self.value, "unit": self.unit, "min": self.minimum,
                "max": self.maximum, "passed": self.passed}


@dataclass(frozen=True)
class Verdict:
    """A test's judgement: passed or not, every reason it did not, and the numbers it produced."""

    passed: bool
    reasons: tuple[str, ...]
    metrics: tuple[Measurement, ...]
    exit_code: int | None

    def as_dict(self) -> dict[str, object]:
        return {"passed": self.passed, "reasons": list(self.reasons), "exit_code": self.exit_code,
                "metrics": [m.as_dict() for m in self.metrics]}


def own_output(log: str) -> str:
    """The test's own output: the job log without our marker lines (so a pattern cannot match them)."""
    return "\n".join(line for line in log.splitlines() if not line.startswith(MARKER))


def exit_status_from_log(log: str) -> int | None:
    """The exit status the job script printed, for when the scheduler has forgotten the job."""
    found = re.findall(rf"^{re.escape(MARKER)} exit status (\d+)$", log, re.MULTILINE)
    return int(found[-1]) if found else None


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _fmt(value: float, unit: str) -> str:
    return f"{value:g}" + (f" {unit}" if unit else "")


def search(pattern: str, text: str, seconds: float | None = None) -> regex.Match[str] | None:
    """The first match of a user's expression in `text`, given at most `seconds`.

    Raises JudgeError (with the reason a report shows) when the expression takes longer (it
    backtracks catastrophically) or the `regex` module does not accept it.
    """
    seconds = MATCH_SECONDS if seconds is None else seconds
    try:
        return regex.search(pattern, text, regex.MULTILINE, timeout=seconds, concurrent=True)
    except TimeoutError:
        raise JudgeError(f"/{pattern}/ took longer than {seconds:g}s to match the output and was stopped "
                         "(it backtracks catastrophically; simplify it, e.g. no nested repetition "
                         "such as (a+)+)") from None
    except regex.error as exc:
        raise JudgeError(f"/{pattern}/ is not a usable regular expression ({exc})") from None


class JudgeError(CIError):
    """An expression of a test's `expect:` could not be judged (too slow, or not valid)."""


def measure(metric: MetricCheck, output: str) -> tuple[Measurement, str | None]:
    """Extract one metric (its first match, as ReFrame does) and check it; returns (value, problem)."""
    try:
        match = search(metric.regex, output)
    except JudgeError as exc:
        return (Measurement(metric.name, None, metric.unit, metric.minimum, metric.maximum, False),
                f"metric {metric.name}: {exc}")
    if match is None:
        return (Measurement(metric.name, None, metric.unit, metric.minimum, metric.maximum, False),
                f"metric {metric.name}: /{metric.regex}/ found nothing in the output")
    captured = match.group(1) if match.re.groups else match.group(0)
    value = _number(captured)
    if value is None:
        return (Measurement(metric.name, None, metric.unit, metric.minimum, metric.maximum, False),
                f"metric {metric.name}: '{captured}' is not a number")
    problem = None
    measured = f"metric {metric.name}: {_fmt(value, metric.unit)}"
    if metric.minimum is not None and value < metric.minimum:
        problem = f"{measured} is below the minimum {_fmt(metric.minimum, metric.unit)}"
    elif metric.maximum is not None and value > metric.maximum:
        problem = f"{measured} is above the maximum {_fmt(metric.maximum, metric.unit)}"
    return Measurement(metric.name, value, metric.unit, metric.minimum, metric.maximum, problem is None), problem


def judge(expectation: Expectation, exit_code: int | None, output: str) -> Verdict:
    """Judge a test from its exit code and output: all checks run, every failure is reported."""
    text = own_output(output)
    reasons: list[str] = []
    if exit_code is None:
        reasons.append("no exit code: the job did not finish normally (see its state)")
    elif exit_code != expectation.exit_code:
        reasons.append(f"exited {exit_code}, expected {expectation.exit_code}")
    for pattern in expectation.patterns:
        try:
            found = search(pattern, text)
        except JudgeError as exc:
            reasons.append(f"pattern {exc}")
            continue
        if found is None:
            reasons.append(f"pattern /{pattern}/ does not appear in the output")
    measurements = []
    for metric in expectation.metrics:
        measurement, problem = measure(metric, text)
        measurements.append(measurement)
        if problem:
            reasons.append(problem)
    return Verdict(passed=not reasons, reasons=tuple(reasons), metrics=tuple(measurements), exit_code=exit_code)
