"""The whole chain on the local site, for real: `inv build-all` builds with Docker, pushes to the
loopback registry, converts with Charliecloud, runs each test as a Slurm job and promotes.

One run of five tiny images covers the verdicts: `good` (a passing test and a metric above its
threshold), `derived` (FROM good: a dependency edge through the site steps), `bad` (one of its two
tests exits 3), `slow` (a metric under its threshold) and `nowhere` (its test asks for a partition
that does not exist, so there is no verdict at all). The run goes through the real task, as a
person or a workflow would start it, so its exit code is part of what is checked.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ci.schedulers import job_name
from tests.support.services import require_site_services
from tests.support.site_helpers import (
    SiteProject,
    assert_complete,
    assert_site_consistent,
    failing,
    job_label,
    metric,
    passing,
    promoted,
    step_data,
)

pytestmark = [pytest.mark.docker, pytest.mark.slurm, pytest.mark.registry]

TESTS = {"good": ["smoke", "bandwidth"], "derived": ["smoke"], "bad": ["broken", "smoke"], "slow": ["bandwidth"]}


class Outcome:
    def __init__(self, project: SiteProject, process: subprocess.CompletedProcess[str]):
        self.project = project
        self.process = process
        self.report: dict[str, Any] = json.loads(process.stdout)
        self.run_id: str = self.report["run_id"]

    def image(self, name: str) -> dict[str, Any]:
        (found,) = [image for image in self.report["images"] if image["name"] == name]
        return dict(found)

    def tests(self, name: str) -> dict[str, dict[str, Any]]:
        (step,) = [step for step in self.image(name)["steps"] if step["name"] == "test"]
        return {test["name"]: test for test in step["data"]["tests"]}


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    require_site_services()
    project = SiteProject(tmp_path_factory.mktemp("pipeline"))
    project.add("good", [passing(), metric(value=42.5, minimum=10)])
    project.add("derived", [passing()], parent="good")
    project.add("bad", [failing(code=3), passing()])
    project.add("slow", [metric(value=1.5, minimum=10)])
    project.add("nowhere", [replace(passing(), partition="nosuchpartition")])
    try:
        process = project.inv("build-all", "--json", "--definitions", str(project.definitions),
                              "--site-root", project.site_root)
        assert process.stdout.strip(), process.stderr
        yield Outcome(project, process)
    finally:
        project.cleanup()


def test_a_failing_test_fails_the_run_with_exit_code_1(outcome: Outcome) -> None:
    assert outcome.process.returncode == 1, outcome.process.stderr
    assert outcome.report["ok"] is False
    states = {image["name"]: image["state"] for image in outcome.report["images"]}
    assert states == {"good": "done", "derived": "done", "bad": "failed", "slow": "failed", "nowhere": "failed"}, \
        outcome.process.stderr
    assert outcome.report["counts"] == {"done": 2, "failed": 3}


def test_failed_images_land_in_failed_and_the_others_in_tested(outcome: Outcome) -> None:
    site = outcome.project.site_root
    assert set(promoted(site, "tested")) == {"good", "derived"}
    assert set(promoted(site, "failed")) == {"bad", "slow"}
    assert_site_consistent(site, TESTS)
    for verdict, names in (("tested", ("good", "derived")), ("failed", ("bad", "slow"))):
        for name in names:
            image = outcome.image(name)
            folder = Path(site, verdict, name, f"{name}-{image['version']}-{image['digest12']}")
            result = assert_complete(folder, TESTS[name])
            assert (result["verdict"], result["run_id"], result["digest"][:12]) == (
                verdict, outcome.run_id, image["digest12"])


def test_the_failing_test_is_reported_with_its_reason(outcome: Outcome) -> None:
    tests = outcome.tests("bad")
    assert tests["broken"]["passed"] is False
    assert tests["broken"]["exit_code"] == 3
    assert tests["broken"]["state"] == "FAILED"
    assert "exited 3, expected 0" in tests["broken"]["reasons"]
    assert "about to fail with 3" in tests["broken"]["output_tail"]
    assert tests["smoke"]["passed"] is True, "the image's other test still ran and passed"
    assert "broken: exited 3, expected 0" in outcome.image("bad")["detail"]
    assert "FAILED" in outcome.process.stderr  # the progress lines say so as it happens


def test_an_image_without_a_verdict_is_not_promoted(outcome: Outcome) -> None:
    """sbatch refuses the job: the test step fails without judging anything, so the image must go
    neither to tested/ (it was not tested) nor to failed/ (a retry should not need --retry-failed)."""
    image = outcome.image("nowhere")
    steps = {step["name"]: step for step in image["steps"]}
    assert steps["test"]["state"] == "failed"
    assert "sbatch refused job" in steps["test"]["detail"] and "partition" in steps["test"]["detail"]
    assert steps["promote"]["detail"].startswith("not promoted")
    assert image["detail"].startswith("test: sbatch refused job")
    for verdict in ("tested", "failed"):
        assert "nowhere" not in promoted(outcome.project.site_root, verdict)
    stem = f"nowhere-{image['version']}-{image['digest12']}"
    staged = Path(outcome.project.site_root, "staging", outcome.run_id, "amd64", "nowhere", stem)
    assert (staged / f"{stem}.sqfs").is_file(), "it stays in staging"


def test_a_metric_under_its_threshold_fails_with_the_measured_value(outcome: Outcome) -> None:
    (measured,) = outcome.tests("slow")["bandwidth"]["metrics"]
    assert measured == {"name": "busbw", "value": 1.5, "unit": "GB/s", "min": 10.0, "max": None, "passed": False}
    assert "metric busbw: 1.5 GB/s is below the minimum 10 GB/s" in outcome.tests("slow")["bandwidth"]["reasons"]
    (kept,) = outcome.tests("good")["bandwidth"]["metrics"]
    assert (kept["value"], kept["passed"]) == (42.5, True), "passing values are recorded too"
    image = outcome.image("slow")
    result = json.loads(Path(outcome.project.site_root, "failed", "slow",
                             f"slow-{image['version']}-{image['digest12']}", "result.json").read_text())
    assert result["tests"][0]["metrics"][0]["value"] == 1.5


def test_junit_carries_the_metric_as_a_property_and_the_failure(outcome: Outcome) -> None:
    junit = ET.parse(outcome.project.run_folder(outcome.run_id) / "junit.xml").getroot()
    cases = {(case.get("classname"), case.get("name")): case for case in junit.iter("testcase")}
    slow = cases[("slow", "test bandwidth")]
    assert [(p.get("name"), p.get("value")) for p in slow.iter("property")] == [("metric.busbw", "1.5 GB/s")]
    failure = slow.find("failure")
    assert failure is not None and "below the minimum 10 GB/s" in (failure.get("message") or "")
    good = cases[("good", "test bandwidth")]
    assert [(p.get("name"), p.get("value")) for p in good.iter("property")] == [("metric.busbw", "42.5 GB/s")]
    assert good.find("failure") is None
    assert cases[("bad", "test broken")].find("failure") is not None
    assert int(junit.get("failures") or 0) >= 4  # bad: test + promote + testcase; slow: the same


def test_the_run_folder_and_the_site_hold_the_reports(outcome: Outcome) -> None:
    folder = outcome.project.run_folder(outcome.run_id)
    assert json.loads((folder / "report.json").read_text()) == outcome.report
    on_site = Path(outcome.project.site_root, "runs", outcome.run_id)
    assert sorted(path.name for path in on_site.iterdir()) == ["junit.xml", "report.json", "summary.md"]
    assert "❌ failed" in (on_site / "summary.md").read_text()
    assert (folder / "logs" / "amd64" / "bad.test-broken.log").read_text().count("about to fail with 3") == 1
    assert not Path(outcome.project.site_root, ".lock").exists(), "the site lock is released"


def test_each_test_ran_as_one_slurm_job(outcome: Outcome) -> None:
    jobs = outcome.project.jobs()
    names = sorted(name for _, name, _ in jobs)
    prefix = f"{outcome.project.job_prefix}-{outcome.run_id}-"
    assert names == sorted(job_name(outcome.project.job_prefix, outcome.run_id, image, test, arch="amd64")
                           for image, tests in TESTS.items() for test in tests)
    assert all(name.startswith(prefix) for name in names)
    states = {job_label(name, prefix): state for _, name, state in jobs}
    assert states["bad-broken"] == "FAILED" and states["good-smoke"] == "COMPLETED"


def test_a_second_run_does_nothing(outcome: Outcome) -> None:
    report = outcome.project.run(only=list(TESTS))
    assert {image.name: (image.state, image.reason) for image in report.images} == {
        "good": ("up to date", "tested"), "derived": ("up to date", "tested"),
        "bad": ("up to date", "failed before (use --retry-failed to try again)"),
        "slow": ("up to date", "failed before (use --retry-failed to try again)")}
    assert [event for event in outcome.project.events(report.run_id) if event["step"]] == []


def test_retry_failed_replaces_the_failed_result_in_one_piece(outcome: Outcome) -> None:
    report = outcome.project.run(only=["slow"], retry_failed=True)
    (image,) = report.images
    assert (image.name, image.state, image.action) == ("slow", "failed", "skip"), "built before: not rebuilt"
    assert [step.name for step in image.steps] == ["transfer", "convert", "test", "promote"]
    assert step_data(report, "slow", "test")["tests"][0]["metrics"][0]["value"] == 1.5
    assert promoted(outcome.project.site_root, "failed")["slow"] == [f"slow-1.0-{image.digest12}"]
    folder = Path(outcome.project.site_root, "failed", "slow", f"slow-1.0-{image.digest12}")
    assert json.loads((folder / "result.json").read_text())["run_id"] == report.run_id
    replaced = list(Path(outcome.project.site_root, "staging", report.run_id, "replaced").iterdir())
    assert [path.name.rsplit("-", 1)[0] for path in replaced] == [f"failed-slow-1.0-{image.digest12}"]
    assert_site_consistent(outcome.project.site_root, TESTS)


def test_promotion_records_the_checksums_of_the_file_convert_made(outcome: Outcome) -> None:
    """Charliecloud converted on the site host; result.json carries what publishing checks the file against."""
    for name, stems in promoted(outcome.project.site_root, "tested").items():
        folder = Path(outcome.project.site_root, "tested", name, stems[0])
        result = json.loads((folder / "result.json").read_text())
        data = (folder / result["image_file"]).read_bytes()
        assert (result["image_file_size"], result["image_file_md5"], result["image_file_sha256"]) == (
            len(data), hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()), name
