"""The generated workflow's per-image jobs, as its steps run them (`inv` in a fresh process each, with
the workflow's RUN_ID): one image's build fails and is filed under failed/ with its log, the other
goes through transfer, convert and test to tested/, and the next run reports the failure instead of
building it again (until --retry-failed)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration.site_helpers import SiteProject, isolated_project, passing, promoted

pytestmark = [pytest.mark.docker, pytest.mark.slurm, pytest.mark.registry]

RUN = "gh-4242-1"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteProject]:
    for project in isolated_project(tmp_path_factory.mktemp("workflow-steps")):
        project.add("good", [passing("smoke")])
        project.add("broken", [passing("smoke")], extra="RUN echo 'no such package: libfoo' && false\n")
        yield project


def plan(project: SiteProject, *flags: str) -> dict[str, str]:
    process = project.inv("gh.plan", "--json", *flags)
    assert process.returncode == 0, process.stderr
    return dict(json.loads(process.stdout))


def test_a_failed_build_stays_local_and_is_recorded(project: SiteProject, tmp_path: Path) -> None:
    first = plan(project)
    assert first["build-amd64-good"] == first["build-amd64-broken"] == "true"
    assert first["test-amd64-good"] == first["test-amd64-broken"] == "true"

    broken = project.inv("gh.build", "--run", RUN, "--only", "broken", timeout=600)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "build failure recorded" in broken.stderr
    (stem,) = promoted(project.site_root, "failed")["broken"]
    folder = Path(project.site_root, "failed", "broken", stem)
    assert "no such package: libfoo" in (folder / "logs" / "build.log").read_text()
    result = json.loads((folder / "result.json").read_text())
    assert result["step"] == "build" and result["run_id"] == RUN and result["verdict"] == "failed"
    assert any("libfoo" in line for line in result["log_tail"])

    for argv in (("gh.build", "--run", RUN, "--only", "good"), ("push", "--run", RUN, "--only", "good"),
                 ("site.convert", "--run", RUN, "--only", "good"), ("validate", "--run", RUN, "--only", "good")):
        process = project.inv(*argv, timeout=600)
        assert process.returncode == 0, f"{argv}: {process.stdout}{process.stderr}"
    assert set(promoted(project.site_root, "tested")) == {"good"}

    # the next run: nothing to do for either; the failure is reported with its log, not retried
    second = project.inv("gh.plan")
    assert second.returncode == 0, second.stderr
    assert f"broken: its build failed in run {RUN}" in second.stdout
    assert str(folder / "logs" / "build.log") in second.stdout
    outputs = plan(project)
    assert {key: value for key, value in outputs.items() if key.startswith(("build-", "test-"))} == dict.fromkeys(
        ("build-amd64-good", "test-amd64-good", "build-amd64-broken", "test-amd64-broken"), "false")
    assert outputs["has_work"] == "false"
    again = project.inv("gh.build", "--run", "gh-4243-1", "--only", "broken")
    assert again.returncode == 1 and "not built again" in again.stderr
    assert not (project.state_dir / "runs" / "gh-4243-1" / "logs" / "broken.build.log").exists()
    retry = plan(project, "--retry-failed")
    assert retry["build-amd64-broken"] == retry["test-amd64-broken"] == "true"
    assert retry["build-amd64-good"] == "false"
