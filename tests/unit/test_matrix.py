"""The per-image matrix of the GitHub workflow, on the bundled examples: who needs the site steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ci.definitions import load_catalog
from ci.github.matrix import github_matrix, matrix_for, plan_markdown, publish
from ci.github.outputs import write_outputs
from ci.plan import Plan, make_plan
from ci.site.layout import FAILED, TESTED, SiteListing, image_stem
from tests.support.paths import EXAMPLES, PROJECT_DIR

ALL = ["base", "hello-apptainer", "hello-spack", "mpi", "python", "spack-tools", "tools-debug", "tools-minimal"]


def examples_plan(listing: SiteListing | None = None, **options: object) -> Plan:
    return make_plan(load_catalog(EXAMPLES, ("amd64",)), site=listing if listing is not None else SiteListing(),
                     **options)  # type: ignore[arg-type]


def settled(plan: Plan, state: str = TESTED, names: list[str] | None = None) -> SiteListing:
    """A site listing holding the plan's digests (all, or the named images) in tested/ or failed/."""
    listing = SiteListing()
    bucket = listing.tested if state == TESTED else listing.failed
    for image in plan.images.values():
        if names is None or image.name in names:
            bucket.setdefault(image.name, set()).add(image.digest12)
    return listing


def read_outputs(path: Path) -> dict[str, str]:
    """Parse a $GITHUB_OUTPUT file as the runner does: name=value lines and name<<DELIMITER blocks."""
    found: dict[str, str] = {}
    lines = iter(path.read_text(encoding="utf-8").splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            block = []
            for inner in lines:
                if inner == delimiter:
                    break
                block.append(inner)
            found[name] = "\n".join(block)
        else:
            name, value = line.split("=", 1)
            found[name] = value
    return found


# -- the matrix ---------------------------------------------------------------------------------


def test_a_new_site_puts_every_bundled_image_in_the_matrix_parents_first() -> None:
    plan = examples_plan()
    matrix = matrix_for(plan)

    assert matrix.images == ALL
    assert matrix.has_work
    first = matrix.entries[0]
    assert first == {"image": "base", "version": plan.images["amd64/base"].spec.version,
                     "digest12": plan.images["amd64/base"].digest12, "build": "build",
                     "reason": "not tested yet", "tests": len(plan.images["amd64/base"].spec.tests)}
    assert github_matrix(plan) == {"include": list(matrix.entries)}


def test_everything_tested_gives_an_empty_matrix_and_no_work() -> None:
    plan = examples_plan(settled(examples_plan()))
    matrix = matrix_for(plan)

    assert github_matrix(plan) == {"include": []}
    assert not matrix.has_work
    assert matrix.outputs() == {"matrix": '{"include":[]}', "has_work": "false", "images": "", "count": "0"}


def test_a_tested_parent_is_built_for_its_child_but_gets_no_entry() -> None:
    first = examples_plan()
    plan = examples_plan(settled(first, names=[name for name in ALL if name != "python"]))
    matrix = matrix_for(plan)

    assert matrix.images == ["python"]
    # python is built FROM mpi FROM base: without a Docker engine's inventory both must be built too,
    # which the build job does (`inv build --only python` builds missing parents), not the matrix.
    assert plan.images["amd64/mpi"].action.value == "build"
    assert not plan.images["amd64/mpi"].needs_site


def test_failed_images_stay_out_unless_retried_and_force_takes_everything() -> None:
    first = examples_plan()
    failed_tools = settled(first, FAILED, names=["tools-debug"])
    for name in ALL:
        if name != "tools-debug":
            failed_tools.tested.setdefault(name, set()).add(first.images[f"amd64/{name}"].digest12)

    assert matrix_for(examples_plan(failed_tools)).images == []
    retried = matrix_for(examples_plan(failed_tools, retry_failed=True))
    assert retried.images == ["tools-debug"]
    assert retried.entries[0]["reason"] == "retrying a failed image"
    assert matrix_for(examples_plan(failed_tools, force=True)).images == ALL


def test_only_selects_the_matrix_entries() -> None:
    assert matrix_for(examples_plan(only=["tools-*"])).images == ["tools-debug", "tools-minimal"]
    assert matrix_for(examples_plan(only=["python"])).images == ["python"]


def test_a_plan_without_the_site_has_no_site_work() -> None:
    """The matrix is made from a site-aware plan; without one nothing is known to need the site steps."""
    assert github_matrix(make_plan(load_catalog(EXAMPLES))) == {"include": []}


def test_outputs_are_compact_json_and_names_for_only() -> None:
    outputs = matrix_for(examples_plan()).outputs()

    assert "\n" not in outputs["matrix"]
    assert [item["image"] for item in json.loads(outputs["matrix"])["include"]] == ALL
    assert outputs["has_work"] == "true"
    assert outputs["images"] == ",".join(ALL)
    assert outputs["count"] == str(len(ALL))


def test_the_plan_summary_names_every_image_and_says_when_nothing_is_to_do() -> None:
    plan = examples_plan(settled(examples_plan()))
    text = plan_markdown(plan, matrix_for(plan))

    assert "0 of 8 images need the site steps" in text
    assert all(f"| {name} |" in text for name in ALL)
    assert "Nothing to do" in text
    busy = examples_plan()
    assert "Nothing to do" not in plan_markdown(busy, matrix_for(busy))


# -- step outputs -------------------------------------------------------------------------------


def test_outputs_go_to_github_output_and_multiline_values_use_a_delimiter(tmp_path: Path) -> None:
    target = tmp_path / "output"
    write_outputs({"one": "1", "text": "line 1\nline 2"}, target)
    write_outputs({"two": "a=b"}, target)

    assert read_outputs(target) == {"one": "1", "text": "line 1\nline 2", "two": "a=b"}


def test_outputs_are_skipped_outside_github_actions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_OUTPUT", raising=False)
    assert write_outputs({"has_work": "true"}) is None


def test_publish_writes_outputs_and_the_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_OUTPUT", str(tmp_path / "output"))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "summary"))
    plan = examples_plan()

    said = publish(plan, matrix_for(plan))

    assert len(said) == 2
    assert read_outputs(tmp_path / "output")["has_work"] == "true"
    assert "| image | version | digest |" in (tmp_path / "summary").read_text(encoding="utf-8")


# -- the task, end to end on a local site ---------------------------------------------------------


def run_matrix_task(site_root: Path, output: Path, *flags: str) -> dict[str, str]:
    # No Docker engine (a unit test needs no services): the plan then counts every image as not built.
    env = {**os.environ, "GITHUB_OUTPUT": str(output), "CI_PROFILE": "local",
           "INVOKE_CI_DOCKER_HOST": f"unix://{site_root.parent}/no-docker.sock"}
    env.pop("GITHUB_STEP_SUMMARY", None)
    output.unlink(missing_ok=True)
    result = subprocess.run([sys.executable, "-m", "invoke", "gh.matrix", "--site-root", str(site_root), *flags],
                            cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return read_outputs(output)


def test_inv_gh_matrix_consults_the_site(tmp_path: Path) -> None:
    site = tmp_path / "site"
    output = tmp_path / "output"

    fresh = run_matrix_task(site, output)
    assert fresh["has_work"] == "true"
    assert fresh["images"] == ",".join(ALL)

    for image in examples_plan().images.values():  # promote every digest, as validate would
        (site / TESTED / image.name / image_stem(image.name, image.spec.version, image.digest)).mkdir(parents=True)
    done = run_matrix_task(site, output)
    assert done == {"matrix": '{"include":[]}', "has_work": "false", "images": "", "count": "0"}

    forced = run_matrix_task(site, output, "--only", "mpi", "--force")
    assert forced["images"] == "mpi"
    assert json.loads(forced["matrix"])["include"][0]["reason"] == "forced"
