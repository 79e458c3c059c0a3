"""The compute-node conversion job: its script, and the settings that switch it on."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ci.config.settings import load_settings
from ci.definitions import SlurmResources
from ci.engines import make_engine
from ci.engines.base import ImageSource
from ci.errors import ConfigError
from ci.pipeline.steps.convert import render_conversion_script
from ci.schedulers import JobSpec
from ci.schedulers.slurm import sbatch_directives
from tests.support.paths import PROJECT_DIR


def _script(tmp_path: Path) -> str:
    engine = make_engine("apptainer", compression="zstd:3")
    return render_conversion_script(
        engine=engine, source=ImageSource.registry("127.0.0.1:5000/mpi:4.1-abc", insecure=True),
        output=str(tmp_path / "mpi.sif"), header=sbatch_directives(JobSpec(
            name="cci-run-mpi-convert", workdir=str(tmp_path), output=str(tmp_path / "convert.out"),
            script_path=str(tmp_path / "job.sh"), account="project_1", partition="small",
            resources=SlurmResources(time="01:00:00", extra=("--cpus-per-task=8",)))))


def test_the_job_asks_for_its_resources_and_converts_through_a_part_file(tmp_path: Path) -> None:
    script = _script(tmp_path)
    lines = script.splitlines()
    assert "#SBATCH --job-name=cci-run-mpi-convert" in lines
    assert f"#SBATCH --output={tmp_path / 'convert.out'}" in lines
    for option in ("--time=01:00:00", "--partition=small", "--account=project_1", "--cpus-per-task=8"):
        assert f"#SBATCH {option}" in lines
    build = next(line for line in lines if " build " in line)
    assert "--fix-perms" in build and f"{tmp_path / 'mpi.sif'}.part" in build
    assert "docker://127.0.0.1:5000/mpi:4.1-abc" in build
    assert "APPTAINER_NOHTTPS" in build  # a plain-http registry, said through the environment
    assert f"mv -f {tmp_path / 'mpi.sif'}.part {tmp_path / 'mpi.sif'}" in script


def test_a_failing_conversion_leaves_no_image_file(tmp_path: Path) -> None:
    """Run the generated script with a stand-in `apptainer` that fails: nothing may be left behind."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "apptainer"
    fake.write_text('#!/bin/sh\nfor last; do :; done\necho partial > "$last"\nexit 3\n')
    fake.chmod(0o755)
    script = tmp_path / "job.sh"
    script.write_text(_script(tmp_path))
    result = subprocess.run(["sh", str(script)], env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 3
    assert "exit status 3" in result.stdout
    assert not (tmp_path / "mpi.sif").exists() and not (tmp_path / "mpi.sif.part").exists()


def test_convert_on_compute_is_a_setting_with_resources() -> None:
    settings = load_settings({"site": {"convert_on": "compute", "convert_job": {"time": "02:00:00",
                                                                                "extra": ["--mem=64G"]}}}, PROJECT_DIR)
    assert settings.site.convert_on == "compute"
    assert settings.site.convert_job == SlurmResources(time="02:00:00", extra=("--mem=64G",))


@pytest.mark.parametrize("site", [{"convert_on": "gpu"}, {"convert_job": {"cpus": 8}}])
def test_bad_conversion_settings_are_named(site: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=r"ci\.site\.convert_"):
        load_settings({"site": site}, PROJECT_DIR)
