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

from ci.definitions import load_catalog
from tests.support.site_helpers import (
    EXAMPLES_DIR,
    SiteProject,
    assert_complete,
    assert_site_consistent,
    job_label,
    promoted,
)

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.slurm, pytest.mark.registry]


def expected_tests() -> dict[str, list[str]]:
    """Every image of the bundled examples (variants expanded) and its tests, from the catalog; the Spack
    builder definitions are built only when an image needs them (ci.spack.builders), which the local
    profile's stand-in builder never does."""
    catalog = load_catalog(EXAMPLES_DIR, ("amd64",))
    return {image.name: [test.name for test in image.tests] for key, image in catalog.images.items()
            if key not in catalog.on_demand}


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
    assert set(expected) == {"base", "mpi", "python", "tools-minimal", "tools-debug", "hello-spack", "spack-tools",
                             "hello-apptainer"}
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


def history(site_root: str, name: str) -> list[dict[str, Any]]:
    (stem,) = promoted(site_root, "tested")[name]
    path = Path(site_root, "tested", name, stem, "history.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_revalidation_runs_each_test_once_without_building_or_converting(
        bundled: SiteProject, first: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    """`inv site.retest` after tested/ is filled: no build, no conversion, each test once, one history line each."""
    expected = expected_tests()
    settled = {verdict: promoted(bundled.site_root, verdict) for verdict in ("tested", "failed")}
    histories = {name: history(bundled.site_root, name) for name in expected}
    process = bundled.inv("site.retest", "--json", "--site-root", bundled.site_root, timeout=900)
    assert process.returncode == 0, process.stderr[-3000:]
    report = json.loads(process.stdout)
    assert report["ok"] is True and report["regressions"] == []
    run_id = report["run_id"]
    assert {image["name"]: [step["name"] for step in image["steps"]] for image in report["images"]} == \
        {name: ["test"] for name in expected}
    steps = [(event["image"], event["state"]) for event in bundled.events(run_id) if event["step"]]
    assert {event["step"] for event in bundled.events(run_id) if event["step"]} == {"test"}  # no build, no convert
    assert sorted(image for image, state in steps if state == "running") == sorted(
        f"amd64/{name}" for name in expected)
    jobs = [(name, state) for _, name, state in bundled.jobs() if name.startswith(f"{bundled.job_prefix}-{run_id}-")]
    assert len(jobs) == sum(len(tests) for tests in expected.values())  # each test once
    assert {state for _, state in jobs} == {"COMPLETED"}
    assert not list(Path(bundled.site_root, "staging", run_id).rglob("*.sqfs")), "nothing converted"
    for name, tests in expected.items():
        lines = history(bundled.site_root, name)
        assert lines[:-1] == histories[name] and lines[-1]["run_id"] == run_id
        assert lines[-1]["verdict"] == "passed" and [t["name"] for t in lines[-1]["tests"]] == tests
    assert {verdict: promoted(bundled.site_root, verdict) for verdict in ("tested", "failed")} == settled
    summary = Path(bundled.site_root, "runs", run_id, "summary.md").read_text()
    assert "```mermaid" in summary and "gantt" in summary
