"""`inv build-all` end to end on the bundled examples, in a fresh site root: every example is built
(or found in the Docker cache), pushed, converted, tested as Slurm jobs and promoted to tested/;
a second run finds everything done and does no work at all.

How long the runs take is measured by the benchmarks (benchmarks/), not asserted here: a test
that says "under 5 s" fails on a busy machine without anything being wrong. What makes the second
run fast is checked instead: it starts no step.
"""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from integration.site_helpers import (
    EXAMPLES_DIR,
    SiteProject,
    assert_complete,
    assert_site_consistent,
    job_label,
    promoted,
)

from ci.definitions import load_catalog

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.slurm, pytest.mark.registry]


def expected_tests() -> dict[str, list[str]]:
    """Every image of the bundled examples (variants expanded) and its tests, from the catalog."""
    catalog = load_catalog(EXAMPLES_DIR, ("amd64",))
    return {image.name: [test.name for test in image.tests] for image in catalog.images.values()}


def build_all(project: SiteProject) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    process = project.inv("build-all", "--json", "--site-root", project.site_root, timeout=1800)
    assert process.stdout.strip(), process.stderr
    return process, json.loads(process.stdout)


@pytest.fixture(scope="module")
def first(bundled: SiteProject) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    return build_all(bundled)


def test_every_example_is_tested(bundled: SiteProject, first: tuple[subprocess.CompletedProcess[str],
                                                                      dict[str, Any]]) -> None:
    process, report = first
    expected = expected_tests()
    assert set(expected) == {"base", "mpi", "python", "tools-minimal", "tools-debug"}
    assert process.returncode == 0, process.stderr
    assert report["ok"] is True
    assert {image["name"]: image["state"] for image in report["images"]} == dict.fromkeys(expected, "done")
    assert report["unsupported"] == []
    assert set(promoted(bundled.site_root, "tested")) == set(expected)
    assert promoted(bundled.site_root, "failed") == {}
    assert_site_consistent(bundled.site_root, expected)
    for image in report["images"]:
        steps = [step["name"] for step in image["steps"]]
        assert steps[-4:] == ["transfer", "convert", "test", "promote"], image
        folder = Path(bundled.site_root, "tested", image["name"],
                      f"{image['name']}-{image['version']}-{image['digest12']}")
        result = assert_complete(folder, expected[image["name"]])
        assert result["verdict"] == "tested" and all(test["passed"] for test in result["tests"])


def test_the_examples_tests_ran_as_slurm_jobs_with_their_metrics(
        bundled: SiteProject, first: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    _, report = first
    prefix = f"{bundled.job_prefix}-{report['run_id']}-"
    jobs = {job_label(name, prefix): state for _, name, state in bundled.jobs()}
    assert jobs == {f"{image}-{test}": "COMPLETED" for image, tests in expected_tests().items() for test in tests}
    (python,) = [image for image in report["images"] if image["name"] == "python"]
    (test_step,) = [step for step in python["steps"] if step["name"] == "test"]
    (numpy,) = test_step["data"]["tests"]
    (gflops,) = numpy["metrics"]
    assert gflops["name"] == "gflops" and gflops["passed"] and gflops["value"] > 0
    junit = ET.parse(bundled.run_folder(report["run_id"]) / "junit.xml").getroot()
    assert junit.get("failures") == "0"
    properties = {p.get("name"): p.get("value") for p in junit.iter("property")}
    assert properties["metric.gflops"].endswith("GFLOP/s")
    summary = Path(bundled.site_root, "runs", report["run_id"], "summary.md").read_text()
    assert summary.count("✅ done") == len(expected_tests())


def test_a_second_run_does_no_work(bundled: SiteProject,
                                   first: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    before = {verdict: promoted(bundled.site_root, verdict) for verdict in ("tested", "failed")}
    jobs_before = bundled.jobs()
    process, report = build_all(bundled)
    assert process.returncode == 0, process.stderr
    assert report["run_id"] != first[1]["run_id"]
    assert {image["name"]: (image["state"], image["reason"], image["steps"]) for image in report["images"]} == \
        dict.fromkeys(expected_tests(), ("up to date", "tested", []))
    assert [event for event in bundled.events(report["run_id"]) if event["step"]] == [], "no step started"
    assert bundled.jobs() == jobs_before, "no job submitted"
    assert {verdict: promoted(bundled.site_root, verdict) for verdict in ("tested", "failed")} == before
    assert "0 with work" in process.stderr
