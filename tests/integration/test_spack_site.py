"""A Spack image through the whole local site (build, push, Charliecloud conversion, promote): without tests
it is reported "built, not tested", not "tested 0/0"; with `ci.site.require_tests` it is filed under
failed/ with that reason; an unpinned first spec gives the concretized version to the tag, the file
name and result.json, which also records Spack's version and the spack.lock.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ci.config.settings import Settings, deep_merge, load_settings
from ci.docker.engine import DockerEngine
from ci.local.spack_builder import ensure_standin_builder, standin_tag
from ci.site.layout import FAILED, TESTED
from tests.support.definitions import write_tree
from tests.support.services import BASE_IMAGE
from tests.support.site_helpers import PROJECT_DIR, SiteProject, promoted, require_site_services, step_data

pytestmark = [pytest.mark.docker, pytest.mark.slurm, pytest.mark.registry]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteProject]:
    require_site_services()
    tag = standin_tag(BASE_IMAGE)
    ensure_standin_builder(DockerEngine(["/usr/bin/docker"], network="host"), tag, BASE_IMAGE)
    found = SiteProject(tmp_path_factory.mktemp("spack-site"))
    found.builder = tag  # type: ignore[attr-defined]
    try:
        yield found
    finally:
        found.cleanup()


def settings(project: SiteProject, **site: object) -> Settings:
    config = deep_merge(project.config(**site), {
        "docker": {"network": "host"},
        "spack": {"builder_image": project.builder, "buildcache": None}})  # type: ignore[attr-defined]
    return load_settings(config, PROJECT_DIR, profile="local")


def test_an_image_without_tests_is_built_not_tested(project: SiteProject) -> None:
    t = project.token
    write_tree(project.definitions / "amd64", {"hello.yaml": f"spack:\n  specs: ['hello{t}']\n"})
    report = project.run(settings(project), only=["hello"])
    assert report.ok, project.console_output.getvalue()
    (image,) = report.images
    assert image.version == "1.0.0"  # the concretized version of the unpinned first spec
    assert image.detail == "built, not tested" and "0/0" not in project.console_output.getvalue()
    assert step_data(report, "hello", "promote")["untested"] is True
    (stem,) = promoted(project.site_root, TESTED)["hello"]
    assert stem == f"hello-1.0.0-{image.digest12}"
    result = json.loads(Path(project.site_root, TESTED, "hello", stem, "result.json").read_text())
    assert result["version"] == "1.0.0" and result["untested"] == "built, not tested" and result["tests"] == []
    assert result["spack"]["spack_version"] == "0.0.0-stand-in" and len(result["spack"]["lock_sha256"]) == 64
    assert json.loads(result["spack"]["lock"])["roots"][0]["spec"] == f"hello{t}"


def test_require_tests_files_an_untested_image_under_failed(project: SiteProject) -> None:
    t = project.token
    write_tree(project.definitions / "amd64", {"strict.yaml": f"spack:\n  specs: ['strict{t}@2.1']\n"})
    report = project.run(settings(project, require_tests=True), only=["strict"])
    assert not report.ok
    (image,) = report.images
    assert image.detail == "promote: failed: built, not tested (ci.site.require_tests is true)"
    (stem,) = promoted(project.site_root, FAILED)["strict"]
    result = json.loads(Path(project.site_root, FAILED, "strict", stem, "result.json").read_text())
    assert result["verdict"] == FAILED and "require_tests" in result["untested"]
