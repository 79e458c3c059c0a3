"""A LUMI-style host-side test, migrated by `inv migrate.lumi`, through `inv build-all` on the local default.

The recipes are ours, in LUMI's layout (tests/support/lumi_layout.py): toolbox-v1's test writes a helper
script into its working folder, binds that folder into the container and calls `$SCMD` twice with
different environment, the image file as `$1`; its failing twin (science_app-rocm-1.0) fails on the
first of its two calls only, so it fails only when the script runs unchanged, under its own
`#!/bin/bash -ex`. One lands in tested/, the other in failed/.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ci.migrate import lumi
from tests.support.lumi_layout import write_checkout
from tests.support.site_helpers import SiteProject, isolated_project, promoted

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.slurm, pytest.mark.registry]

PASSING = "toolbox-v1"
FAILING = "science_app-rocm-1.0"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteProject]:
    root = tmp_path_factory.mktemp("lumi-e2e")
    layout = write_checkout(root / "LUMI-containers", with_refused=False, failing_twin=True, exclusive=False)
    definitions = root / "definitions"
    report = lumi.migrate(layout.root, definitions)
    assert report.ok and report.written, [str(problem) for problem in report.all_problems]
    (root / "project").mkdir()
    yield from isolated_project(root / "project", definitions=definitions)


@pytest.fixture(scope="module")
def run(project: SiteProject) -> dict[str, Any]:
    process = project.inv("build-all", "--json", "--only", PASSING, "--only", FAILING, timeout=1200)
    assert process.stdout.strip(), process.stderr
    data: dict[str, Any] = json.loads(process.stdout)
    return data


def _folder(project: SiteProject, verdict: str, image: dict[str, Any]) -> Path:
    return Path(project.site_root, verdict, image["name"], f"{image['name']}-{image['version']}-{image['digest12']}")


def test_the_migrated_host_side_test_passes_and_its_failing_twin_lands_in_failed(
        project: SiteProject, run: dict[str, Any]) -> None:
    images = {image["name"]: image for image in run["images"]}
    assert set(images) == {PASSING, FAILING}
    assert set(promoted(project.site_root, "tested")) == {PASSING}
    assert set(promoted(project.site_root, "failed")) == {FAILING}
    passed = json.loads((_folder(project, "tested", images[PASSING]) / "result.json").read_text(encoding="utf-8"))
    failed = json.loads((_folder(project, "failed", images[FAILING]) / "result.json").read_text(encoding="utf-8"))
    assert [(test["name"], test["passed"]) for test in passed["tests"]] == [("lumi", True)]
    assert [(test["name"], test["passed"]) for test in failed["tests"]] == [("lumi", False)]


def test_both_scmd_calls_ran_in_the_image_with_their_own_environment(
        project: SiteProject, run: dict[str, Any]) -> None:
    (image,) = [image for image in run["images"] if image["name"] == PASSING]
    log = (_folder(project, "tested", image) / "logs" / "lumi.out").read_text(encoding="utf-8", errors="replace")
    assert "mode=first tools=tools 1.2.3" in log  # from the helper script bound from the working folder
    assert "mode=second tools=tools 1.2.3" in log
    assert "both runs done" in log


def test_the_twin_fails_at_its_first_call_under_its_own_bash_e(project: SiteProject, run: dict[str, Any]) -> None:
    (image,) = [image for image in run["images"] if image["name"] == FAILING]
    log = (_folder(project, "failed", image) / "logs" / "lumi.out").read_text(encoding="utf-8", errors="replace")
    assert "mode=first" in log
    assert "mode=second" not in log  # `#!/bin/bash -ex` stopped it: the script ran unchanged, as itself
