"""Test jobs: the batch script that runs one test inside one image, and the judge of its output.

The script is self-contained (its #SBATCH lines say everything the job asks for), so a person
can resubmit it by hand with `sbatch FILE` and see exactly what the CI ran. It mounts the staged
test folder into the image through the engine's own bind syntax, runs the test under `srun` when
it has several tasks (or as N local processes without Slurm), prints the exit status, and writes
it to an exit file so a resumed run can judge a job that finished while nobody watched.

The judge is ReFrame-style: the exit code must match, every pattern must appear in the output,
and every metric is pulled out by its regex and compared with its bounds. Values are recorded
even when they pass, so the report can show performance over time.
"""

from __future__ import annotations

import math
import posixpath
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ci.definitions import Expectation, MetricCheck, SlurmResources, TestSpec
from ci.engines.base import Bind, Engine, ImageSource, with_env
from ci.schedulers.slurm import resource_options

MARKER = "== containers-ci:"
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


def sbatch_directives(test: TestSpec, *, output: str, job_name: str | None = None, account: str | None = None,
                      partition: str | None = None) -> list[str]:
    """#SBATCH lines: the job's name and log, then its resources (the test's partition wins)."""
    options = ([f"--job-name={job_name}"] if job_name else []) + [f"--output={output}"]
    options += resource_options(test.slurm, partition=partition, account=account)
    return [f"#SBATCH {option}" for option in options]


def _launch(command: Sequence[str], ntasks: int, nodes: int) -> str:
    """Shell text running `command` once, or as `ntasks` tasks (srun under Slurm, else local
    processes); it leaves the exit status in $status."""
    line = shlex.join(command)
    if ntasks <= 1 and nodes <= 1:
        return f"{line}\nstatus=$?"
    return (
        'if [ -n "${SLURM_JOB_ID:-}" ] && command -v srun >/dev/null 2>&1; then\n'
        f"    srun --nodes={nodes} --ntasks={ntasks} {line}\n"
        "    status=$?\n"
        "else\n"
        f"    # no Slurm: {ntasks} local processes, numbered like Slurm's tasks\n"
        '    pids=""; task=0; status=0\n'
        f'    while [ "$task" -lt {ntasks} ]; do\n'
        f"        SLURM_PROCID=$task SLURM_NTASKS={ntasks} {line} &\n"
        '        pids="$pids $!"; task=$((task + 1))\n'
        "    done\n"
        '    for pid in $pids; do wait "$pid" || status=$?; done\n'
        "fi"
    )


def render_job_script(*, test: TestSpec, engine: Engine, image_file: str, script: str, workdir: str, output: str,
                      exit_file: str | None = None, account: str | None = None, partition: str | None = None,
                      job_name: str | None = None, test_dir: str | None = None, image: str = "",
                      env: Mapping[str, str] | None = None) -> str:
    """The batch script for one test.

    `script` is the test script's path on the site host, `test_dir` the staged folder mounted
    into the image (default: the script's folder), `output` the job's log, `exit_file` where the
    test's exit status is written at the end. `env` adds non-secret variables for the test.
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
    lines = ["#!/bin/sh", *sbatch_directives(test, output=output, job_name=job_name, account=account,
                                             partition=partition)]
    lines += [
        f"# containers-ci test job (generated): test {test.name}" + (f" of {image}" if image else "")
        + f", engine {engine.name}. Resubmit by hand with: sbatch <this file>",
        "set -u",
        f"cd {shlex.quote(workdir)} || exit 126",
        'USER="${USER:-$(id -un)}"; export USER  # ch-run refuses to start without it',
        *(f"export {name}={shlex.quote(value)}" for name, value in variables.items()),
        f'echo "{MARKER} test {test.name} with {engine.name} on $(uname -n) at $(date -u +%Y-%m-%dT%H:%M:%SZ)"',
        _launch(command, test.slurm.ntasks, test.slurm.nodes),
        f'echo "{MARKER} exit status $status"',
    ]
    if exit_file:
        part = shlex.quote(f"{exit_file}.part")
        lines.append(f'echo "$status" > {part} && mv -f {part} {shlex.quote(exit_file)}')
    lines.append('exit "$status"')
    return "\n".join(lines) + "\n"


def render_conversion_script(*, engine: Engine, source: ImageSource, output: str, log: str,
                             resources: SlurmResources, job_name: str | None = None, account: str | None = None,
                             partition: str | None = None) -> str:
    """A batch script converting one image on a compute node (large images, busy login nodes).

    Like `Engine.convert`, it writes `<output>.part` and renames it only on success, so a killed
    job never leaves a half-written image file. Registry credentials are not available in a job
    script: use it with a registry the compute nodes reach without them, or a docker archive.
    """
    part = f"{output}.part"
    command = with_env(engine.conversion_command(source, part), engine.conversion_env(source))
    options = ([f"--job-name={job_name}"] if job_name else []) + [f"--output={log}"]
    options += resource_options(resources, partition=partition, account=account)
    lines = ["#!/bin/sh", *(f"#SBATCH {option}" for option in options),
             f"# containers-ci conversion job (generated): {source.describe()} with {engine.name}",
             "set -u",
             f"rm -rf {shlex.quote(part)}",
             f'echo "{MARKER} converting on $(uname -n) at $(date -u +%Y-%m-%dT%H:%M:%SZ)"',
             shlex.join(command),
             "status=$?",
             f'if [ "$status" -eq 0 ]; then mv -f {shlex.quote(part)} {shlex.quote(output)} || status=$?; '
             f"else rm -rf {shlex.quote(part)}; fi",
             f'echo "{MARKER} exit status $status"',
             'exit "$status"']
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


own_output.__test__ = False  # type: ignore[attr-defined]  # not a pytest test, whatever it is imported as
test_output = own_output  # the name ci.stages imports


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


def measure(metric: MetricCheck, output: str) -> tuple[Measurement, str | None]:
    """Extract one metric (its first match, as ReFrame does) and check it; returns (value, problem)."""
    match = re.search(metric.regex, output, re.MULTILINE)
    if match is None:
        return (Measurement(metric.name, None, metric.unit, metric.minimum, metric.maximum, False),
                f"metric {metric.name}: /{metric.regex}/ found nothing in the output")
    value = _number(match.group(1))
    if value is None:
        return (Measurement(metric.name, None, metric.unit, metric.minimum, metric.maximum, False),
                f"metric {metric.name}: '{match.group(1)}' is not a number")
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
        if re.search(pattern, text, re.MULTILINE) is None:
            reasons.append(f"pattern /{pattern}/ does not appear in the output")
    measurements = []
    for metric in expectation.metrics:
        measurement, problem = measure(metric, text)
        measurements.append(measurement)
        if problem:
            reasons.append(problem)
    return Verdict(passed=not reasons, reasons=tuple(reasons), metrics=tuple(measurements), exit_code=exit_code)
