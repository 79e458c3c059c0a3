"""The generated per-image workflow: current, one chain per image, failures that stay local, cancels
that stop everything but the teardown, re-runs that never meet an old artifact, the job budget."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ci.config.settings import WorkflowSettings, load_settings, workflow_settings
from ci.definitions import load_catalog
from ci.errors import CIError, ConfigError
from ci.github.workflow import (
    MAX_JOBS,
    WORKFLOW_FILE,
    ImageJobs,
    image_jobs,
    render,
)
from tests.support.config import project_config
from tests.support.definitions import definition
from tests.support.paths import EXAMPLES, PROJECT_DIR
from tests.support.workflow_model import (
    Scenario,
    ancestors_of,
    jobs_of,
    load_workflow,
    needs_of,
    shell_commands,
    simulate,
)

PIPELINE = PROJECT_DIR / WORKFLOW_FILE
IMAGES = ["base", "hello-apptainer", "hello-spack", "mpi", "python", "spack-builder", "spack-runtime", "spack-tools",
          "tools-debug", "tools-minimal"]
CHAIN = ("build", "transfer", "test")


@pytest.fixture(scope="module")
def pipeline() -> dict[str, Any]:
    return load_workflow(PIPELINE)


def job(image: str, step: str) -> str:
    return f"{step}-amd64-{image}"


def outputs(build: bool = True, test: bool = True, **only: tuple[bool, bool]) -> dict[str, dict[str, str]]:
    """The prepare job's outputs: every image with (build, test), unless given in `only`."""
    values: dict[str, str] = {"has_work": "true", "site_address": ""}
    for image in IMAGES:
        b, t = only.get(image.replace("-", "_"), (build, test))
        values[f"build-amd64-{image}"] = "true" if b else "false"
        values[f"test-amd64-{image}"] = "true" if t else "false"
    return {"prepare": values}


def test_the_committed_workflow_is_current() -> None:
    """`inv gh.workflow --check` in code: the file is what the generator makes of the definitions."""
    from invoke.config import Config
    from invoke.context import Context

    config = Config(project_location=str(PROJECT_DIR))
    config.load_project()
    from ci.cli.shared import workflow_text

    text, _ = workflow_text(Context(config=config))
    assert PIPELINE.read_text(encoding="utf-8") == text, "run `inv gh.workflow` and commit the file"


def test_one_chain_per_image_children_after_their_ancestors_builds(pipeline: dict[str, Any]) -> None:
    jobs = jobs_of(pipeline)
    for image in IMAGES:
        assert {job(image, step) for step in CHAIN} <= set(jobs)
        assert needs_of(jobs[job(image, "transfer")])[:2] == ["prepare", job(image, "build")]
        assert needs_of(jobs[job(image, "test")]) == ["prepare", job(image, "transfer")]
    assert set(needs_of(jobs[job("python", "build")])) == {"prepare", job("mpi", "build"), job("base", "build")}
    assert set(needs_of(jobs[job("mpi", "build")])) == {"prepare", job("base", "build")}
    # pipelined: nothing of one image waits for another image's transfer or test
    for image in IMAGES:
        waits = ancestors_of(jobs, job(image, "test"))
        assert not {name for name in waits if name.startswith(("transfer-", "test-"))} - {job(image, "transfer")}
    labels = {step: jobs[job("base", step)]["runs-on"] for step in CHAIN}
    assert labels == {"build": ["self-hosted", "cpouta"], "transfer": ["self-hosted", "cpouta-transfer"],
                      "test": ["self-hosted", "cpouta-test"]}


def test_every_inv_step_is_the_shells_own_process(pipeline: dict[str, Any]) -> None:
    """GitHub signals only the step's bash on a cancel: `exec inv` makes inv that process."""
    found = 0
    for name, job_body in jobs_of(pipeline).items():
        for step in job_body.get("steps") or []:
            script = str(step.get("run") or "")
            commands = shell_commands(script)
            if any(words[0] == "inv" for words in commands):
                found += 1
                plain = re.sub(r"\$\{\{.*?\}\}", "", script)  # expressions are GitHub's, not the shell's
                assert re.fullmatch(r"exec inv [^\n;&|]+\n?", plain), f"{name}: {step.get('name')}: {script!r}"
    assert found > 3 * len(IMAGES)


def test_a_run_with_work_runs_every_image_job(pipeline: dict[str, Any]) -> None:
    results = simulate(pipeline, Scenario(outputs=outputs(), contexts={"github": {"event_name": "push"}}))
    assert {name: result for name, result in results.items() if result != "success"} == {
        "retest": "skipped", "spack-janitor": "skipped"}  # both weekly only


def test_a_failed_build_stops_only_that_image_and_its_descendants(pipeline: dict[str, Any]) -> None:
    results = simulate(pipeline, Scenario(fail=frozenset({job("mpi", "build")}), outputs=outputs()))
    stopped = {name for name, result in results.items() if result == "skipped"} - {"retest", "spack-janitor", "publish"}
    assert stopped == {job("mpi", "transfer"), job("mpi", "test"), *(job("python", step) for step in CHAIN)}
    for image in ("base", "tools-debug", "tools-minimal"):  # these go through to tested/
        assert all(results[job(image, step)] == "success" for step in CHAIN)
    assert results["summary"] == results["teardown"] == "success"


def test_a_failed_test_job_stops_nothing_else(pipeline: dict[str, Any]) -> None:
    results = simulate(pipeline, Scenario(fail=frozenset({job("base", "test")}), outputs=outputs()))
    assert all(results[job(image, step)] == "success" for image in IMAGES for step in CHAIN
               if (image, step) != ("base", "test"))


def test_a_child_builds_when_its_tested_parent_has_nothing_to_do(pipeline: dict[str, Any]) -> None:
    results = simulate(pipeline, Scenario(outputs=outputs(build=False, test=False, python=(True, True))))
    assert [name for name, result in results.items() if result == "success" and name.endswith("-python")] == \
        [job("python", step) for step in CHAIN]
    assert results[job("mpi", "build")] == "skipped"


def test_the_empty_plan_skips_every_image_job(pipeline: dict[str, Any]) -> None:
    empty = outputs(build=False, test=False)
    empty["prepare"]["has_work"] = "false"
    results = simulate(pipeline, Scenario(outputs=empty))
    assert {name for name, result in results.items() if result == "skipped"} == \
        {job(image, step) for image in IMAGES for step in CHAIN} | {"retest", "spack-janitor", "publish"}
    assert results["summary"] == results["teardown"] == "success"


KINDS = ["helper-image", "start-vm", "prepare", job("base", "build"), job("mpi", "transfer"), job("python", "test"),
         "retest", "spack-janitor"]


def test_the_weekly_run_prunes_the_spack_cache_after_every_build(pipeline: dict[str, Any]) -> None:
    jobs = jobs_of(pipeline)
    janitor = jobs["spack-janitor"]
    assert {job(image, "build") for image in IMAGES} <= set(needs_of(janitor))
    assert [step["run"] for step in janitor["steps"] if "run" in step][-1] == "exec inv spack.janitor --scheduled\n"
    assert janitor["env"] == {"AWS_ACCESS_KEY_ID": "${{ secrets.AWS_ACCESS_KEY_ID }}",
                              "AWS_SECRET_ACCESS_KEY": "${{ secrets.AWS_SECRET_ACCESS_KEY }}"}
    weekly = simulate(pipeline, Scenario(outputs=outputs(), contexts={"github": {"event_name": "schedule"}}))
    assert weekly["spack-janitor"] == "success" and weekly["teardown"] == "success"
    broken = simulate(pipeline, Scenario(fail=frozenset({job("base", "build")}), outputs=outputs(),
                                         contexts={"github": {"event_name": "schedule"}}))
    assert broken["spack-janitor"] == "success"  # a broken build keeps its own lock; the others still count
    # a Spack image's build job gets its BuildKit secrets (the signing key) from GitHub secrets of that name
    assert jobs[job("hello-spack", "build")]["env"]["SPACK_SIGNING_KEY"] == "${{ secrets.SPACK_SIGNING_KEY }}"
    assert "SPACK_SIGNING_KEY" not in jobs[job("base", "build")]["env"]


@pytest.mark.parametrize("cancelled_job", KINDS)
def test_a_cancel_of_any_job_kind_stops_what_follows_and_the_vm_is_deleted(
        pipeline: dict[str, Any], cancelled_job: str) -> None:
    results = simulate(pipeline, Scenario(cancel_during=cancelled_job, outputs=outputs(),
                                          contexts={"github": {"event_name": "schedule"}}))
    assert results[cancelled_job] == "cancelled"
    order = list(results)
    later = [name for name in order[order.index(cancelled_job) + 1:] if name not in ("summary", "teardown")]
    assert all(results[name] == "cancelled" for name in later)  # nothing starts after a cancel
    dependents = [name for name in results if cancelled_job in ancestors_of(jobs_of(pipeline), name)]
    assert set(dependents) - set(later) <= {"summary", "teardown"}
    assert results["teardown"] == "success" and results["summary"] == "success"


@pytest.mark.parametrize("failing", ["helper-image", "start-vm", "prepare"])
def test_an_early_failure_skips_the_images_and_tears_down(pipeline: dict[str, Any], failing: str) -> None:
    results = simulate(pipeline, Scenario(fail=frozenset({failing}), outputs=outputs()))
    assert all(results[job(image, step)] in ("skipped",) for image in IMAGES for step in CHAIN)
    assert results["teardown"] == "success"


def test_teardown_waits_for_every_job_on_the_vm_and_nothing_waits_for_it(pipeline: dict[str, Any]) -> None:
    jobs = jobs_of(pipeline)
    on_vm = {name for name, body in jobs.items() if "self-hosted" in (body.get("runs-on") or [])}
    assert on_vm == {"prepare-vms", "prepare", "retest", "spack-janitor", "publish",
                     *(job(image, step) for image in IMAGES for step in CHAIN)}
    assert on_vm | {"start-vm"} <= set(needs_of(jobs["teardown"]))
    assert jobs["summary"]["if"] == "always()"
    assert jobs["teardown"]["if"].startswith("${{ always() && ")  # and not for a fork's pull request
    assert not any("teardown" in ancestors_of(jobs, name) for name in jobs)


def test_rerun_all_jobs_never_meets_an_artifact_of_an_earlier_attempt(pipeline: dict[str, Any]) -> None:
    names = []
    for name, body in jobs_of(pipeline).items():
        for step in body.get("steps") or []:
            if str(step.get("uses", "")).startswith("actions/upload-artifact@"):
                assert step["with"]["overwrite"] is True and step["if"] == "always()"
                assert step["with"]["name"].startswith("runs-${{ github.run_attempt }}-"), name
                names.append(step["with"]["name"])
    assert len(names) == len(set(names)) == 5 + 3 * len(IMAGES)  # prepare(-vms), retest, janitor, publish, images
    assert pipeline["env"]["RUN_ID"] == "gh-${{ github.run_id }}-${{ github.run_attempt }}"
    download = next(step for step in jobs_of(pipeline)["summary"]["steps"]
                    if str(step.get("uses", "")).startswith("actions/download-artifact@"))
    assert download["with"]["pattern"] == "runs-${{ github.run_attempt }}-*"
    # a re-run is a run like the first: the same jobs run
    assert simulate(pipeline, Scenario(outputs=outputs(), contexts={"github": {"run_attempt": "2"}})) == \
        simulate(pipeline, Scenario(outputs=outputs(), contexts={"github": {"run_attempt": "1"}}))


def test_jobs_that_reach_the_site_get_its_secrets_through_env(pipeline: dict[str, Any]) -> None:
    jobs = jobs_of(pipeline)
    for image in IMAGES:
        for step in ("transfer", "test"):
            env = jobs[job(image, step)]["env"]
            assert env["CI_REGISTRY_USER"] == "${{ secrets.CI_REGISTRY_USER }}"
            assert env["CI_REGISTRY_TOKEN"] == "${{ secrets.CI_REGISTRY_TOKEN }}"
        for step in CHAIN:
            assert jobs[job(image, step)]["env"]["CI_SITE_ADDRESS"] == "${{ needs.prepare.outputs.site_address }}"


def test_no_cloud_credential_reaches_the_vm(pipeline: dict[str, Any]) -> None:
    jobs = jobs_of(pipeline)
    for name, body in jobs.items():
        if "self-hosted" in (body.get("runs-on") or []):
            assert "OS_APPLICATION_CREDENTIAL_SECRET" not in yaml.safe_dump(body), name
    prepare = [step.get("run", "") for step in jobs["prepare"]["steps"]]
    assert "exec inv vm.prepare --address 127.0.0.1\n" in prepare


def test_every_build_vm_is_prepared_on_its_own_runner_and_builds_go_to_any_vm(pipeline: dict[str, Any]) -> None:
    """Several build VMs (vars.BUILD_VMS): start-vm starts them and names them, prepare-vms prepares each
    on a runner carrying that VM's name, and the image jobs keep the common labels (any VM's runner)."""
    jobs = jobs_of(pipeline)
    assert pipeline["env"]["INVOKE_CI_VM_COUNT"] == "${{ vars.BUILD_VMS || '1' }}"
    assert pipeline["env"]["INVOKE_CI_BUILD_POOL_REGISTRY"] == "${{ vars.BUILD_REGISTRY }}"
    start = jobs["start-vm"]
    names = next(step for step in start["steps"] if step.get("id") == "vms")
    assert names["run"] == "exec inv vm.names --output vms\n"
    assert start["outputs"]["vms"] == "${{ steps.vms.outputs.vms }}"
    per_vm = jobs["prepare-vms"]
    assert per_vm["strategy"]["matrix"]["vm"] == "${{ fromJSON(needs.start-vm.outputs.vms) }}"
    assert per_vm["runs-on"] == ["self-hosted", "${{ matrix.vm }}"]
    assert "exec inv vm.prepare --address 127.0.0.1\n" in [step.get("run", "") for step in per_vm["steps"]]
    assert "prepare-vms" in needs_of(jobs["prepare"]) and "prepare-vms" in needs_of(jobs["teardown"])
    for image in IMAGES:
        assert jobs[job(image, "build")]["runs-on"] == ["self-hosted", "cpouta"]
    failed = simulate(pipeline, Scenario(fail=frozenset({"prepare-vms"}), outputs=outputs()))
    assert all(failed[job(image, step)] == "skipped" for image in IMAGES for step in CHAIN)
    assert failed["teardown"] == "success"


def test_inputs_and_triggers(pipeline: dict[str, Any]) -> None:
    on = pipeline["on"]
    profile = on["workflow_dispatch"]["inputs"]["profile"]
    assert profile["type"] == "choice" and profile["options"] == list(project_config()["profiles"])
    assert profile["default"] == "cpouta"
    assert "pyproject.toml" in on["push"]["paths"]
    assert on["schedule"] == [{"cron": "17 3 * * 1"}]
    assert pipeline["concurrency"] == {"group": "containers-pipeline", "cancel-in-progress": False}


def test_the_weekly_run_revalidates_after_the_image_jobs(pipeline: dict[str, Any]) -> None:
    weekly = simulate(pipeline, Scenario(outputs=outputs(build=False, test=False),
                                         contexts={"github": {"event_name": "schedule"}}))
    assert weekly["retest"] == "success" and weekly["start-vm"] == "success"  # the runners connect weekly
    asked = simulate(pipeline, Scenario(outputs=outputs(), contexts={"inputs": {"retest": True}}))
    assert asked["retest"] == "success"
    failed = simulate(pipeline, Scenario(fail=frozenset({job("mpi", "test")}), outputs=outputs(),
                                         contexts={"github": {"event_name": "schedule"}}))
    assert failed["retest"] == "success"  # a failed image job does not stop the re-validation
    retest = jobs_of(pipeline)["retest"]
    assert {job(image, "test") for image in IMAGES} <= set(needs_of(retest))
    assert retest["env"]["CI_REGISTRY_TOKEN"] == "${{ secrets.CI_REGISTRY_TOKEN }}"
    assert any(str(step.get("run", "")).startswith("exec inv site.retest") for step in retest["steps"])


def test_a_leftover_vm_is_deleted_before_the_start_and_the_runners_must_come_online(
        pipeline: dict[str, Any]) -> None:
    runs = [str(step.get("run", "")) for step in jobs_of(pipeline)["start-vm"]["steps"]]
    teardown = runs.index("exec inv vm.teardown\n")
    start = runs.index("exec inv vm.start\n")
    wait = next(index for index, text in enumerate(runs) if text.startswith("exec inv gh.runners --wait"))
    assert teardown < start < wait
    assert all(f"--label {label}" in runs[wait] for label in ("cpouta", "cpouta-transfer", "cpouta-test"))


def test_helper_image_compares_with_the_last_successful_run(pipeline: dict[str, Any]) -> None:
    steps = jobs_of(pipeline)["helper-image"]["steps"]
    text = yaml.safe_dump(steps)
    assert "github.event.before" not in text
    last = next(step for step in steps if step.get("id") == "last")
    assert last["run"].startswith("exec inv gh.last-success")
    changed = next(step for step in steps if step.get("id") == "changed")
    assert changed["env"]["SINCE"] == "${{ steps.last.outputs.since }}"


# -- the generator on other trees ----------------------------------------------------------------


def test_per_image_timeouts_come_from_the_settings(tmp_path: Path) -> None:
    definition(tmp_path, "big")
    definition(tmp_path, "small")
    catalog = load_catalog(tmp_path, ("amd64",))
    options = workflow_settings({"build_timeout": 90, "images": {"big": {"build": 900, "test": 30}}})
    jobs = yaml.safe_load(render(catalog, options, ["cpouta"]))["jobs"]
    assert jobs["build-amd64-big"]["timeout-minutes"] == 900
    assert jobs["test-amd64-big"]["timeout-minutes"] == 30
    assert jobs["build-amd64-small"]["timeout-minutes"] == 90
    with pytest.raises(ConfigError, match=r"ci\.workflow\.images\.big\.build"):
        workflow_settings({"images": {"big": {"build": 0}}})
    with pytest.raises(ConfigError, match=r"ci\.workflow\.colour"):
        workflow_settings({"colour": "blue"})


def test_an_oversize_workflow_is_refused_before_any_run(tmp_path: Path) -> None:
    for number in range(MAX_JOBS // 3):
        definition(tmp_path, f"image{number:03d}")
    catalog = load_catalog(tmp_path, ("amd64",))
    with pytest.raises(CIError, match=rf"{len(catalog.images)} images need \d+ jobs, more than .*{MAX_JOBS}"):
        render(catalog, WorkflowSettings(), ["cpouta"])
    # just under the budget is fine
    small = load_catalog(tmp_path, ("amd64",))
    for key in list(small.images)[(MAX_JOBS - 10) // 3:]:
        del small.images[key]
    assert "build-amd64-image000" in render(small, WorkflowSettings(), ["cpouta"])


def test_job_ids_are_safe_and_distinct(tmp_path: Path) -> None:
    definition(tmp_path, "py3.11")
    definition(tmp_path, "py3_11")
    with pytest.raises(ConfigError, match="same job id"):
        image_jobs(load_catalog(tmp_path, ("amd64",)))
    assert ImageJobs("amd64/py3.11", "py3.11", "amd64").build == "build-amd64-py3_11"


def test_lumi_and_cpouta_convert_on_compute_nodes() -> None:
    for profile in ("lumi", "cpouta"):
        settings = load_settings(project_config(), PROJECT_DIR, profile=profile)
        assert settings.site.convert_on == "compute", profile


def test_the_example_chains_follow_from_lines() -> None:
    catalog = load_catalog(EXAMPLES, ("amd64",))
    names = [chain.name for chain in image_jobs(catalog)]
    assert names[0] == "base" and names.index("base") < names.index("mpi") < names.index("python")
