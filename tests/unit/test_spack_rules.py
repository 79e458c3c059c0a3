"""Spacktainers' rules and the S3 settings, with hostile input: `spacktainer/files/<name>/` sources, the
concretized version taken from an earlier build's tag, facts read from a spack.lock, and `ci.spack`
values that must be refused in one line without echoing a credential. Also: no production module
imports the stand-in Spack.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from ci.config.spack import spack_settings
from ci.definitions import load_catalog
from ci.errors import CIError, ConfigError
from ci.plan import KnownImage, make_plan
from ci.spack.images import lock_facts, resolve_versions
from tests.support.definitions import write_tree
from tests.support.paths import PROJECT_DIR


def spacktainers(tmp_path: Path, definition: str, files: dict[str, str]) -> Path:
    """Spacktainers' layout: container_definitions/amd64/... beside spacktainer/files/<name>/..."""
    write_tree(tmp_path / "spacktainer", files)
    write_tree(tmp_path / "container_definitions" / "amd64", {"my-app.yaml": definition})
    return tmp_path / "container_definitions"


FILES = "spack:\n  specs: [my-app]\nspacktainer:\n  files:\n    - files/my-app/script.sh:/opt/script.sh\n" \
        "    - files/my-app/some_folder:/opt/some_folder\n"


def test_spacktainer_files_resolve_and_only_that_folder_is_the_context(tmp_path: Path) -> None:
    root = spacktainers(tmp_path, FILES, {"files/my-app/script.sh": "echo hi\n",
                                          "files/my-app/some_folder/readme.txt": "r\n",
                                          "files/other/big.bin": "x" * 100})
    catalog = load_catalog(root, ("amd64",))
    assert catalog.problems == {}
    spec = catalog.images["amd64/my-app"]
    assert spec.root == (tmp_path / "spacktainer" / "files" / "my-app").resolve()
    assert "COPY script.sh /opt/script.sh\n" in spec.recipe and "COPY some_folder /opt/some_folder\n" in spec.recipe
    before = make_plan(catalog).images["amd64/my-app"].digest
    (tmp_path / "spacktainer" / "files" / "other" / "big.bin").write_text("changed")  # another container's file
    assert make_plan(load_catalog(root, ("amd64",))).images["amd64/my-app"].digest == before
    (tmp_path / "spacktainer" / "files" / "my-app" / "script.sh").write_text("echo changed\n")
    assert make_plan(load_catalog(root, ("amd64",))).images["amd64/my-app"].digest != before
    # the folder is configurable (ci.spack.files_root, relative to the definitions folder)
    moved = tmp_path / "elsewhere"
    (tmp_path / "spacktainer").rename(moved)
    assert load_catalog(root, ("amd64",)).problems  # not found in the default place any more
    assert load_catalog(root, ("amd64",), {"spack": {"files_root": "../elsewhere"}}).problems == {}


@pytest.mark.parametrize(("pairs", "message"), [
    (["files/my-app/nope.sh:/opt/nope.sh"], "does not exist"),
    (["../../etc/passwd:/opt/x"], "leaves the definition folder"),
    (["files/my-app/link:/opt/x"], "through a link"),
    (["files/my-app/script.sh:/opt/x", "local.txt:/opt/y"], "takes sources from both"),
    (["files/my-app/script.sh:relative/path"], "is not an absolute path"),
    (["-rf:/opt/x"], "does not exist"),
])
def test_hostile_files_are_one_problem_each(tmp_path: Path, pairs: list[str], message: str) -> None:
    definition = "spack:\n  specs: [my-app]\nspacktainer:\n  files: " + json.dumps(pairs) + "\n"
    root = spacktainers(tmp_path, definition, {"files/my-app/script.sh": "echo hi\n"})
    (tmp_path / "spacktainer" / "files" / "my-app" / "link").symlink_to("/etc/hostname")
    (root / "amd64" / "local.txt").write_text("here\n")
    problems = load_catalog(root, ("amd64",)).problems["amd64/my-app"]
    assert len(problems) == 1 and message in problems[0].message, problems
    assert "files" in problems[0].field and problems[0].fix


def test_the_tag_of_an_earlier_build_gives_the_concretized_version(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {"amd64/tool.yaml": "spack: {specs: [tool]}\n",
                                 "amd64/pinned.yaml": "spack: {specs: ['pinned@2.0']}\n"})
    plan = make_plan(load_catalog(root, ("amd64",)), registry_prefix="reg.example.org:5000/p/")
    tool, pinned = plan.images["amd64/tool"], plan.images["amd64/pinned"]
    assert tool.spec.version == "latest"
    known = [KnownImage("tool", tool.digest, (f"reg.example.org:5000/p/tool:latest-{tool.digest12}",
                                              f"other/tool:9.9-{tool.digest12}",  # another prefix: not ours
                                              f"reg.example.org:5000/p/tool:bad$-{tool.digest12}",
                                              f"reg.example.org:5000/p/tool:3.1.4-{tool.digest12}")),
             KnownImage("pinned", pinned.digest, (f"reg.example.org:5000/p/pinned:7.0-{pinned.digest12}",))]
    asked: list[bool] = []

    def listing() -> list[KnownImage]:
        asked.append(True)
        return known

    resolve_versions(plan, listing, "reg.example.org:5000/p/")
    assert tool.spec.version == "3.1.4" and tool.tag == f"reg.example.org:5000/p/tool:3.1.4-{tool.digest12}"
    assert pinned.spec.version == "2.0"  # a pinned version is never replaced
    asked.clear()
    resolve_versions(plan, listing, "reg.example.org:5000/p/")
    assert asked == []  # nothing waits any more: the engine is not asked again


def test_lock_facts_from_a_lock_and_from_garbage() -> None:
    lock = {"spack": {"version": "0.23.1", "type": "git", "commit": "abc"}, "roots": [{"hash": "h1", "spec": "zlib"}],
            "concrete_specs": {"h1": {"name": "zlib", "version": "1.3.1", "hash": "h1"}}}
    facts = lock_facts(json.dumps(lock))
    assert (facts["spack_version"], facts["spack_commit"], facts["concretized_version"], facts["roots"]) == \
        ("0.23.1", "abc", "1.3.1", ["zlib@1.3.1/h1"])
    lock["concrete_specs"]["h1"]["version"] = "1.3;rm -rf /"  # not tag-safe: the version stays as planned
    assert lock_facts(json.dumps(lock))["concretized_version"] is None
    for garbage in ("not json", "[]", '{"roots": 5}'):
        with pytest.raises(CIError, match=r"is not a spack\.lock"):
            lock_facts(garbage)


@pytest.mark.parametrize(("raw", "field", "secret"), [
    ({"buildcache": "s3://AKIA123:hunter2@bucket/x"}, "ci.spack.buildcache", "hunter2"),
    ({"buildcache": "oci://user:pw@ghcr.io/x"}, "ci.spack.buildcache", "pw@"),
    ({"s3": {"endpoint": "https://key:secret@a3s.fi"}}, "ci.spack.s3.endpoint", "secret@"),
    ({"buildcache": "s3://Bad_Bucket/x"}, "ci.spack.buildcache", None),
    ({"buildcache": "s3://b/x"}, "ci.spack.buildcache", None),  # a bucket name is 3 to 63 characters
    ({"s3": {"endpoint": "ftp://a3s.fi"}}, "ci.spack.s3.endpoint", None),
    ({"s3": {"access_key_env": "--help"}}, "ci.spack.s3.access_key_env", None),
    ({"s3": {"region": "x" * 500}}, "ci.spack.s3.region", None),
    ({"s3": {"surprise": 1}}, "ci.spack.s3.surprise", None),
    ({"builders": ["../spack-builder"]}, "ci.spack.builders", None),
    ({"files_root": "a\nb"}, "ci.spack.files_root", None),
    ({"janitor": {"max_age": -1}}, "ci.spack.janitor.max_age", None),
])
def test_bad_spack_settings_are_one_line_naming_the_key(raw: dict[str, object], field: str,
                                                        secret: str | None) -> None:
    with pytest.raises(ConfigError) as caught:
        spack_settings(raw)
    message = str(caught.value)
    assert field in message and "\n" not in message.strip()
    if secret is not None:
        assert secret not in message


def test_no_production_module_imports_the_stand_in() -> None:
    """Only the local images (the stand-in builder) may import ci.local.spack_standin; it shapes no digest."""
    allowed = {"ci/local/spack_builder.py", "ci/local/spack_standin/__init__.py",
               "ci/local/spack_standin/spack_standin.py"}
    offenders = []
    for path in sorted((PROJECT_DIR / "ci").rglob("*.py")):
        relative = path.relative_to(PROJECT_DIR).as_posix()
        if relative in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if any(name.startswith("ci.local.spack_standin") for name in names):
                offenders.append(relative)
    assert offenders == []
