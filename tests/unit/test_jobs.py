"""Test job scripts (rendered, and run by /bin/sh with a stand-in engine) and the judge."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import pytest

from ci import definitions
from ci.definitions import Expectation, MetricCheck, SlurmResources
from ci.engines import ApptainerEngine, CharliecloudEngine
from ci.engines.base import BaseEngine, Bind, EngineSettings, RegistryCredentials
from ci.hosts import LocalHost
from ci.pipeline import testjobs as jobs
from ci.pipeline.testjobs import (
    MARKER,
    JobScriptError,
    exit_status_from_log,
    interpreter,
    judge,
    own_output,
    render_host_test_script,
    render_job_script,
    scmd,
)
from ci.schedulers import DirectScheduler, JobSpec
from ci.schedulers.slurm import sbatch_directives, srun_launch


class HostShellEngine(BaseEngine):
    """Runs the "container" command straight on this machine, with the bind as a path rewrite."""

    name: ClassVar[str] = "host-shell"

    def exec_command(self, image_file: str, argv: Sequence[str], binds: Sequence[Bind] = (), *,
                     pass_env: Sequence[str] = ()) -> list[str]:
        return list(argv)

    def secret_env(self, credentials: RegistryCredentials) -> dict[str, str]:
        return {}


def _test(tmp_path: Path, body: str, shebang: str = "#!/bin/sh", **slurm: object) -> definitions.TestSpec:
    script = tmp_path / "tests" / "check.sh"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(f"{shebang}\n{body}\n")
    return definitions.TestSpec(name="check", script=script, slurm=SlurmResources(**slurm))  # type: ignore[arg-type]


def _render(tmp_path: Path, test: definitions.TestSpec, engine: BaseEngine | None = None, *, job_name: str = "",
            account: str | None = None, partition: str | None = None, launch: Sequence[str] | None = None,
            **extra: object) -> str:
    output = str(tmp_path / "logs" / "check.out")
    job = JobSpec(name=job_name, workdir=str(tmp_path), output=output, script_path=str(tmp_path / "job.sh"),
                  resources=test.slurm, account=account, partition=partition)
    return render_job_script(test=test, engine=engine or HostShellEngine(), image_file="/site/img.sif",
                             script=str(tmp_path / "tests" / "check.sh"), workdir=str(tmp_path), output=output,
                             exit_file=str(tmp_path / "check.exit"), header=sbatch_directives(job),
                             launch=srun_launch(test.slurm) if launch is None else launch, **extra)  # type: ignore[arg-type]


def test_sbatch_lines_come_from_the_test_resources(tmp_path: Path) -> None:
    test = _test(tmp_path, "true", nodes=2, ntasks=4, time="01:00:00", partition="gpu", gpus=2,
                 extra=("--exclusive", "--mem=0"))
    script = _render(tmp_path, test, ApptainerEngine(), job_name="cci-r-base-check", account="project_1",
                     partition="small")
    directives = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert directives == [
        "#SBATCH --job-name=cci-r-base-check", f"#SBATCH --output={tmp_path}/logs/check.out", "#SBATCH --nodes=2",
        "#SBATCH --ntasks=4", "#SBATCH --time=01:00:00", "#SBATCH --partition=gpu", "#SBATCH --account=project_1",
        "#SBATCH --gpus=2", "#SBATCH --exclusive", "#SBATCH --mem=0"]
    assert script.startswith("#!/bin/sh\n#SBATCH")
    assert (f"srun --nodes=2 --ntasks=4 --gpus=2 apptainer exec --bind {tmp_path}/tests:{tmp_path}/tests "
            "/site/img.sif sh -c" in script)


def test_partition_defaults_to_the_site_one(tmp_path: Path) -> None:
    script = _render(tmp_path, _test(tmp_path, "true"), partition="small")
    assert "#SBATCH --partition=small" in script
    assert "srun" not in script  # one task runs in the batch step itself


def test_charliecloud_mounts_the_tests_on_mnt(tmp_path: Path) -> None:
    script = _render(tmp_path, _test(tmp_path, "true", shebang="#!/usr/bin/env bash"), CharliecloudEngine(),
                     image="base")
    assert (f"ch-run --set-env -b {tmp_path}/tests:/mnt/0 /site/img.sif -- sh -c 'cd \"$1\" && shift && exec \"$@\"'"
            " sh /mnt/0 /usr/bin/env bash /mnt/0/check.sh") in script
    assert "export CI_TEST_DIR=/mnt/0" in script and "export CI_IMAGE=base" in script
    assert 'USER="${USER:-$(id -un)}"; export USER' in script


def test_interpreter_from_the_shebang(tmp_path: Path) -> None:
    for first, expected in [("#!/bin/bash", ["/bin/bash"]), ("#!/usr/bin/env python3", ["/usr/bin/env", "python3"]),
                            ("#!/bin/sh -eu", ["/bin/sh", "-eu"]), ("echo no shebang", ["sh"])]:
        path = tmp_path / "s"
        path.write_text(first + "\n")
        assert interpreter(path) == expected
    assert interpreter(tmp_path / "missing") == ["sh"]


def _run(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "job.sh"
    path.write_text(script)
    env = {"PATH": "/usr/bin:/bin"}
    return subprocess.run(["sh", str(path)], capture_output=True, text=True, env=env, timeout=30, check=False)


def test_the_script_runs_the_test_and_records_its_status(tmp_path: Path) -> None:
    test = _test(tmp_path, 'echo "in $(pwd) as $CI_TEST"; echo "busbw 42.5"; exit 3')
    done = _run(_render(tmp_path, test), tmp_path)
    assert done.returncode == 3
    assert (tmp_path / "check.exit").read_text() == "3\n"
    assert f"in {tmp_path}/tests as check" in done.stdout
    assert f"{MARKER} exit status 3" in done.stdout
    assert exit_status_from_log(done.stdout) == 3


def test_several_tasks_without_slurm_run_as_local_processes(tmp_path: Path) -> None:
    test = _test(tmp_path, 'echo "task $SLURM_PROCID of $SLURM_NTASKS"; [ "$SLURM_PROCID" != 1 ] || exit 5',
                 ntasks=3)
    done = _run(_render(tmp_path, test, launch=DirectScheduler(LocalHost()).task_launch(test.slurm)), tmp_path)
    assert sorted(line for line in done.stdout.splitlines() if line.startswith("task")) == [
        "task 0 of 3", "task 1 of 3", "task 2 of 3"]
    assert done.returncode == 5 and (tmp_path / "check.exit").read_text() == "5\n"


def test_script_outside_the_mounted_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not inside"):
        render_job_script(test=_test(tmp_path, "true"), engine=HostShellEngine(), image_file="/i",
                          script="/elsewhere/check.sh", workdir="/w", output="/w/o", test_dir="/site/tests")


# -- judge ----------------------------------------------------------------------------------------------

BUSBW = MetricCheck(name="busbw", regex=r"busbw\s+([0-9.]+)", minimum=60, unit="GB/s")
LATENCY = MetricCheck(name="latency", regex=r"latency\s+([0-9.]+)", maximum=5, unit="us")


def test_a_passing_test_still_records_its_numbers() -> None:
    verdict = judge(Expectation(patterns=("Test success",), metrics=(BUSBW, LATENCY)), 0,
                    "busbw 75.5\nlatency 2.5\nTest success\n")
    assert verdict.passed and verdict.reasons == ()
    assert [(m.name, m.value, m.unit, m.passed) for m in verdict.metrics] == [
        ("busbw", 75.5, "GB/s", True), ("latency", 2.5, "us", True)]
    assert verdict.as_dict()["metrics"] == [
        {"name": "busbw", "value": 75.5, "unit": "GB/s", "min": 60, "max": None, "passed": True},
        {"name": "latency", "value": 2.5, "unit": "us", "min": None, "max": 5, "passed": True}]


def test_every_failure_is_a_reason() -> None:
    verdict = judge(Expectation(patterns=("Test success", "^rank 0"), metrics=(BUSBW, LATENCY)), 1,
                    "busbw 42\nlatency 9.25\n")
    assert not verdict.passed
    assert verdict.reasons == (
        "exited 1, expected 0",
        "pattern /Test success/ does not appear in the output",
        "pattern /^rank 0/ does not appear in the output",
        "metric busbw: 42 GB/s is below the minimum 60 GB/s",
        "metric latency: 9.25 us is above the maximum 5 us",
    )
    assert [m.value for m in verdict.metrics] == [42.0, 9.25]


def test_exit_code_alone_does_not_pass_a_test_with_checks() -> None:
    verdict = judge(Expectation(metrics=(BUSBW,)), 0, "no numbers here")
    assert not verdict.passed
    assert verdict.reasons == ("metric busbw: /busbw\\s+([0-9.]+)/ found nothing in the output",)
    assert verdict.metrics[0].value is None


def test_expected_nonzero_exit_and_missing_exit() -> None:
    assert judge(Expectation(exit_code=2), 2, "").passed
    assert judge(Expectation(), None, "").reasons == ("no exit code: the job did not finish normally (see its state)",)


def test_marker_lines_are_not_own_output() -> None:
    log = f"{MARKER} test check with docker on vm\nreal output\n{MARKER} exit status 0\n"
    assert own_output(log) == "real output"
    assert not judge(Expectation(patterns=("exit status",)), 0, log).passed


def test_a_match_that_is_not_a_number() -> None:
    metric = MetricCheck(name="x", regex=r"x=(\S+)", minimum=1)
    assert judge(Expectation(metrics=(metric,)), 0, "x=nan").reasons == ("metric x: 'nan' is not a number",)


# -- hostile values, slow expressions ---------------------------------------------------------------


def test_a_catastrophic_pattern_fails_the_test_with_a_reason_instead_of_freezing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the limit, each of these takes hours (it doubles with every character of output)."""
    monkeypatch.setattr(jobs, "MATCH_SECONDS", 0.1)
    verdict = judge(Expectation(patterns=(r"(a|aa)+$", "fine"), metrics=(
        MetricCheck(name="slow", regex=r"(x|xx)+y([0-9]+)"),)), 0, "a" * 60 + "b\n" + "x" * 60 + "\nfine\n")
    assert not verdict.passed and len(verdict.reasons) == 2
    assert any("took longer than" in reason and "(a|aa)+$" in reason for reason in verdict.reasons)
    assert any(reason.startswith("metric slow:") and "took longer than" in reason for reason in verdict.reasons)


def test_a_newline_in_a_value_never_adds_a_shell_line(tmp_path: Path) -> None:
    test = _test(tmp_path, "true")
    evil = replace(test, name="check\ntouch /tmp/pwned")
    with pytest.raises(JobScriptError, match="control character"):
        _render(tmp_path, evil)
    with pytest.raises(JobScriptError, match="control character"):
        _render(tmp_path, test, env={"NOTE": "a\nrm -rf /"})
    with pytest.raises(JobScriptError):
        render_job_script(test=test, engine=HostShellEngine(), image_file="/i", script=str(tmp_path / "tests/check.sh"),
                          workdir=str(tmp_path), output="/o", header=["#SBATCH --partition=a\nrm -rf /"])


def test_values_with_shell_characters_are_quoted(tmp_path: Path) -> None:
    test = replace(_test(tmp_path, 'echo "name=$CI_TEST"'), name="$(touch pwned)`x`;y")
    done = _run(_render(tmp_path, test, image="img'$(id)"), tmp_path)
    assert "name=$(touch pwned)`x`;y" in done.stdout
    assert not (tmp_path / "pwned").exists()


# -- host-side tests ----------------------------------------------------------------------------------


def test_a_host_side_test_gets_the_image_as_1_and_scmd_in_its_own_working_folder(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    test = _test(tmp_path, 'echo "image=$1 cwd=$(pwd)"\necho helper > run.sh\n$SCMD -B "$(pwd):/myrun" "$1" a b\n'
                 'FLAVOUR=two $SCMD "$1" c', shebang="#!/bin/sh -e")
    launcher = scmd(["env"], ["SCMD_WORD=1", "sh", str(tmp_path / "fake-engine.sh")])
    (tmp_path / "fake-engine.sh").write_text('echo "engine: $* flavour=${FLAVOUR:-one}"\n')
    script = render_host_test_script(test=test, engine=HostShellEngine(), image_file="/site/img.sif",
                                     script=str(test.script), workdir=str(work), output=str(tmp_path / "out"),
                                     scmd_value=launcher, header=["#SBATCH --ntasks=1"],
                                     exit_file=str(tmp_path / "check.exit"), image="base")
    done = _run(script, tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"image=/site/img.sif cwd={work}" in done.stdout
    assert f"engine: -B {work}:/myrun /site/img.sif a b flavour=one" in done.stdout
    assert "engine: /site/img.sif c flavour=two" in done.stdout
    assert (work / "run.sh").read_text() == "helper\n"


def test_scmd_words_must_survive_word_splitting() -> None:
    assert scmd(["srun", "--nodes=1", "--ntasks=2"], ["singularity", "exec", "-B", "/opt/cray:/opt/cray"]) == \
        "srun --nodes=1 --ntasks=2 singularity exec -B /opt/cray:/opt/cray"
    for bad in ("/path with space", "/x;rm", "$(id)", "a\nb"):
        with pytest.raises(JobScriptError, match="cannot be part of SCMD"):
            scmd(["srun"], ["-B", bad])


def test_the_charliecloud_launcher_speaks_singularity_exec(tmp_path: Path) -> None:
    """`$SCMD -B SRC:DST IMAGE CMD` becomes `ch-run --set-env -b SRC:DST IMAGE -- CMD` (ch-run played by echo)."""
    engine = CharliecloudEngine(EngineSettings(binary=str(tmp_path / "ch-run")))
    (tmp_path / "ch-run").write_text('#!/bin/sh\nfor a; do printf "[%s]" "$a"; done; echo\n')
    (tmp_path / "ch-run").chmod(0o755)
    helper = tmp_path / "scmd.sh"
    helper.write_text(engine.launcher_helper() or "")
    words = engine.launcher([Bind("/opt/cray", "/opt/cray")], str(helper))
    assert words == ["bash", str(helper), "-B", "/opt/cray:/opt/cray"]
    done = subprocess.run([*words, "-B", "/w:/mnt/1,/x", "--bind=/y:/z:ro", "/s/img.sqfs", "/mnt/1/run.sh", "-x"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("[--set-env][-b][/opt/cray:/opt/cray][-b][/w:/mnt/1][-b][/x:/x][-b][/y:/z]"
                                   "[/s/img.sqfs][--][/mnt/1/run.sh][-x]")
    refused = subprocess.run([*words, "--nv", "/s/img.sqfs", "true"], capture_output=True, text=True, check=False)
    assert refused.returncode == 125 and "not understood" in refused.stderr


def test_apptainer_needs_no_launcher_helper() -> None:
    engine = ApptainerEngine()
    assert engine.launcher_helper() is None
    assert engine.launcher([Bind("/var/spool/slurmd", "/var/spool/slurmd")], "/unused") == [
        "apptainer", "exec", "-B", "/var/spool/slurmd:/var/spool/slurmd"]
