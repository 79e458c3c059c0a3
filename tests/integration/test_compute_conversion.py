"""Conversion as a batch job on a compute node (ci.site.convert_on: compute), on the real Slurm."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.site_helpers import SiteProject, assert_complete, image_report, isolated_project, passing, step_data

pytestmark = [pytest.mark.docker, pytest.mark.slurm, pytest.mark.registry]


@pytest.fixture
def project(tmp_path: Path) -> Iterator[SiteProject]:
    yield from isolated_project(tmp_path)


def test_an_image_converted_by_a_slurm_job_is_tested_and_promoted(project: SiteProject) -> None:
    project.add("onnode", [passing()])
    report = project.run(project.settings(convert_on="compute", convert_job={"time": "00:10:00"}))
    assert report.ok, report.as_dict()
    convert = step_data(report, "onnode", "convert")
    job_id = convert["job_id"]
    (folder,) = project.site_path("tested", "onnode").iterdir()
    assert_complete(folder, ["smoke"])
    script = (folder / "convert.job.sh").read_text()
    assert "#SBATCH --time=00:10:00" in script and f"--job-name={project.job_prefix}-" in script
    log = (folder / "logs" / "convert.out").read_text()
    assert "exit status 0" in log
    assert job_id in {job for job, _, _ in project.jobs()}


def test_a_conversion_job_that_can_never_start_fails_with_slurm_s_reason(project: SiteProject) -> None:
    project.add("toobig", [passing()])
    report = project.run(project.settings(convert_on="compute",
                                          convert_job={"time": "00:10:00", "extra": ["--cpus-per-task=4096"]}))
    assert not report.ok
    image = image_report(report, "toobig")
    assert image.state == "failed"
    assert "can never start as submitted" in image.detail and "ci.site.convert_job" in image.detail
    assert not project.site_path("tested", "toobig").exists()
    assert not project.jobs(all_states=False), "the job that could never start was left in the queue"
