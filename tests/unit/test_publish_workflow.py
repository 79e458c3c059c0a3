"""The generated workflow's publish and pull-request flow, played through the workflow model:
pushes and tags publish after the tests; a pull request of this repository builds and tests without
promoting or publishing; a fork's pull request reaches no self-hosted runner and no secret."""

from __future__ import annotations

from typing import Any

import pytest

from ci.github.workflow import WORKFLOW_FILE
from tests.support.paths import PROJECT_DIR
from tests.support.workflow_model import Scenario, jobs_of, load_workflow, simulate

IMAGES = ["base", "hello-apptainer", "hello-spack", "mpi", "python", "spack-tools", "tools-debug", "tools-minimal"]


@pytest.fixture(scope="module")
def pipeline() -> dict[str, Any]:
    return load_workflow(PROJECT_DIR / WORKFLOW_FILE)


def _outputs() -> dict[str, dict[str, str]]:
    values = {"has_work": "true", "site_address": ""}
    for image in IMAGES:
        values[f"build-amd64-{image}"] = values[f"test-amd64-{image}"] = "true"
    return {"prepare": values}


def _pull_request(head: str) -> dict[str, Any]:
    return {"github": {"event_name": "pull_request", "repository": "org/containers",
                       "event": {"pull_request": {"head": {"repo": {"full_name": head}}}}}}


def _test_steps(pipeline: dict[str, Any], image: str) -> dict[str, str]:
    """The test job's inv steps by command word, with their conditions."""
    steps = jobs_of(pipeline)[f"test-amd64-{image}"]["steps"]
    return {str(step["run"]).split()[2]: str(step.get("if", "")) for step in steps
            if str(step.get("run", "")).startswith("exec inv ")}


def test_pushes_and_tags_publish_after_every_test(pipeline: dict[str, Any]) -> None:
    results = simulate(pipeline, Scenario(outputs=_outputs(), contexts={"github": {"event_name": "push"}}))
    assert results["publish"] == "success"
    publish = jobs_of(pipeline)["publish"]
    assert {f"test-amd64-{image}" for image in IMAGES} <= set(publish["needs"])
    assert [step["run"] for step in publish["steps"] if str(step.get("run", "")).startswith("exec inv")] == [
        "exec inv publish\n"]
    assert publish["env"]["CI_PUBLISH_SIGNING_KEY"] == "${{ secrets.CI_PUBLISH_SIGNING_KEY }}"
    assert pipeline["on"]["push"]["tags"] == ["**"]
    failed = simulate(pipeline, Scenario(fail=frozenset({"test-amd64-mpi"}), outputs=_outputs(),
                                         contexts={"github": {"event_name": "push"}}))
    assert failed["publish"] == "success"  # the others' tested images still go out; mpi is in failed/


def test_a_pull_request_of_this_repository_builds_and_tests_but_neither_promotes_nor_publishes(
        pipeline: dict[str, Any]) -> None:
    results = simulate(pipeline, Scenario(outputs=_outputs(), contexts=_pull_request("org/containers")))
    assert all(results[f"{step}-amd64-{image}"] == "success" for image in IMAGES
               for step in ("build", "transfer", "test"))
    assert results["publish"] == "skipped" and results["teardown"] == "success"
    steps = _test_steps(pipeline, "mpi")
    assert steps["validate"] == "${{ !(github.event_name == 'pull_request') }}"  # promotion: never for a PR
    assert steps["site.test"] == "${{ github.event_name == 'pull_request' }}"
    assert "pull_request" in pipeline["on"] and "pull_request_target" not in pipeline["on"]


def test_a_pull_request_from_a_fork_reaches_no_self_hosted_runner(pipeline: dict[str, Any]) -> None:
    results = simulate(pipeline, Scenario(outputs=_outputs(), contexts=_pull_request("stranger/containers")))
    jobs = jobs_of(pipeline)
    ran = {name for name, result in results.items() if result == "success"}
    assert ran == {"summary"}  # GitHub's runner, no secret, nothing of ours
    assert all("self-hosted" not in (jobs[name].get("runs-on") or []) for name in ran)
