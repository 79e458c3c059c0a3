"""Identity and skip decisions: digests, the FROM DAG, selection, and what needs doing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from ci.definitions import Catalog, load_catalog
from ci.plan import KnownImage, Plan, image_digest, image_tag, make_plan, topological_order
from tests.support.definitions import definition, write_tree
from tests.support.paths import EXAMPLES, PROJECT_DIR
from tests.support.services import BASE_IMAGE


class FakeInventory:
    """A store of images in memory: our ImageInventory protocol, not a stand-in for the Docker wrapper."""

    def __init__(self, images: list[KnownImage]):
        self.images = images

    def known_images(self) -> list[KnownImage]:
        return list(self.images)


def inventory_of(plan: Plan, keys: list[str] | None = None, prefix: str = "") -> FakeInventory:
    """An inventory holding the given planned images under their tags (with `prefix`)."""
    chosen = [plan.images[key] for key in (keys if keys is not None else plan.images)]
    return FakeInventory([KnownImage(image.name, image.digest, (image_tag(image.spec, image.digest, prefix),))
                          for image in chosen])


def small_tree(root: Path) -> Path:
    """base <- mid <- leaf, base <- other; base has a .dockerignore, leaf has tests."""
    definition(root, "base", dockerfile=f"FROM {BASE_IMAGE}\nCOPY motd /etc/motd\n",
               files={"motd": "hello\n", ".dockerignore": "*.log\n", "notes.log": "ignored\n"},
               container_yaml="version: '1.0'\nbuild_args: {GREETING: hi}\n")
    definition(root, "mid", dockerfile="FROM base\nRUN true\n")
    definition(root, "leaf", dockerfile="FROM mid\n", files={"tests/check.sh": "echo ok\n"},
               container_yaml="tests:\n  - {name: check, script: tests/check.sh, expect: {patterns: [ok]}}\n")
    definition(root, "other", dockerfile="FROM base:1.0\n")
    return root


def digests(root: Path, only: tuple[str, ...] = ()) -> dict[str, str]:
    return {image.name: image.digest for image in make_plan(load_catalog(root), only=only).images.values()}


def digests_of_tests(root: Path) -> dict[str, str]:
    return {image.name: image.test_digest for image in make_plan(load_catalog(root)).images.values()}


# -- digests ---------------------------------------------------------------------------------


def test_digest_is_stable_within_a_process(tmp_path: Path) -> None:
    small_tree(tmp_path)
    first = digests(tmp_path)
    assert first == digests(tmp_path)
    assert all(len(value) == 64 and int(value, 16) >= 0 for value in first.values())
    assert len(set(first.values())) == 4


def test_digest_is_stable_across_processes() -> None:
    """No dict or set order, hash seed or absolute path leaks into the digest."""
    script = ("import json, sys; from pathlib import Path; from ci.definitions import load_catalog; "
              "from ci.plan import make_plan; plan = make_plan(load_catalog(Path(sys.argv[1]))); "
              "print(json.dumps({i.name: i.digest for i in plan.images.values()}))")
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run([sys.executable, "-c", script, str(EXAMPLES)], env=env, cwd=PROJECT_DIR,
                                capture_output=True, text=True, check=True)
        outputs.append(json.loads(result.stdout))
    assert outputs[0] == outputs[1] == digests(EXAMPLES)


def test_digest_does_not_depend_on_the_definitions_location(tmp_path: Path) -> None:
    small_tree(tmp_path / "one")
    small_tree(tmp_path / "two")
    assert digests(tmp_path / "one") == digests(tmp_path / "two")


@pytest.mark.parametrize(("change", "changed"), [
    ("context file of base", {"base", "mid", "leaf", "other"}),
    ("context file of mid", {"mid", "leaf"}),
    ("dockerfile of leaf", {"leaf"}),
    ("build arg of base", {"base", "mid", "leaf", "other"}),
    ("version of mid", {"mid", "leaf"}),
    ("platform of other", {"other"}),
    ("fragment used by other", {"other"}),
    ("test script of leaf", set()),
    ("tests in container.yaml of leaf", set()),
    ("file ignored by .dockerignore of base", set()),
    ("unused fragment", set()),
])
def test_digest_changes_exactly_where_the_image_changes(tmp_path: Path, change: str,
                                                         changed: set[str]) -> None:
    small_tree(tmp_path)
    write_tree(tmp_path, {"common/extra.docker": "ENV EXTRA=1\n", "common/unused.docker": "ENV UNUSED=1\n"})
    write_tree(tmp_path, {"amd64/other/container.yaml": "fragments: [common/extra.docker]\n"})
    before = digests(tmp_path)
    edits = {
        "context file of base": {"amd64/base/motd": "changed\n"},
        "context file of mid": {"amd64/mid/new.txt": "new\n"},
        "dockerfile of leaf": {"amd64/leaf/Dockerfile": "FROM mid\nENV X=1\n"},
        "build arg of base": {"amd64/base/container.yaml": "version: '1.0'\nbuild_args: {GREETING: hello}\n"},
        "version of mid": {"amd64/mid/container.yaml": "version: '2.0'\n"},
        "platform of other": {"amd64/other/container.yaml":
                              "fragments: [common/extra.docker]\nplatforms: [linux/amd64/v3]\n"},
        "fragment used by other": {"common/extra.docker": "ENV EXTRA=2\n"},
        "test script of leaf": {"amd64/leaf/tests/check.sh": "echo changed\n"},
        "tests in container.yaml of leaf": {"amd64/leaf/container.yaml":
                                            "tests:\n  - {name: check, script: tests/check.sh}\n"},
        "file ignored by .dockerignore of base": {"amd64/base/notes.log": "changed\n"},
        "unused fragment": {"common/unused.docker": "ENV UNUSED=2\n"},
    }[change]
    write_tree(tmp_path, edits)
    after = digests(tmp_path)
    assert {name for name in before if before[name] != after[name]} == changed


def test_test_digest_changes_with_tests_only(tmp_path: Path) -> None:
    small_tree(tmp_path)
    first = digests_of_tests(tmp_path)
    write_tree(tmp_path, {"amd64/leaf/tests/check.sh": "echo changed\n"})
    second = digests_of_tests(tmp_path)
    assert second["leaf"] != first["leaf"], "a changed test script"
    write_tree(tmp_path, {"amd64/leaf/container.yaml":
                          "tests:\n  - {name: check, script: tests/check.sh, expect: {patterns: [fine]}}\n"})
    third = digests_of_tests(tmp_path)
    assert third["leaf"] != second["leaf"], "a changed test declaration"
    write_tree(tmp_path, {"amd64/leaf/tests/helper.txt": "a helper the script reads\n"})
    fourth = digests_of_tests(tmp_path)
    assert fourth["leaf"] != third["leaf"], "a new file in tests/"
    write_tree(tmp_path, {"amd64/leaf/new.txt": "context, not tests\n", "amd64/base/motd": "changed\n"})
    assert digests_of_tests(tmp_path) == {**first, "leaf": fourth["leaf"]}, "context changes leave it alone"


def test_image_digest_depends_on_parent_digests(tmp_path: Path) -> None:
    small_tree(tmp_path)
    spec = load_catalog(tmp_path).images["amd64/mid"]
    assert image_digest(spec, ["a" * 64]) == image_digest(spec, ["a" * 64])
    assert image_digest(spec, ["a" * 64]) != image_digest(spec, ["b" * 64])
    assert image_digest(spec, ["a" * 64, "b" * 64]) == image_digest(spec, ["b" * 64, "a" * 64])
    assert image_digest(spec, []) != image_digest(spec, ["a" * 64])


def test_image_digest_depends_on_build_args_and_version(tmp_path: Path) -> None:
    small_tree(tmp_path)
    spec = load_catalog(tmp_path).images["amd64/base"]
    assert image_digest(replace(spec, build_args={"GREETING": "bye"}), []) != image_digest(spec, [])
    with_new_arg = replace(spec, build_args={**spec.build_args, "NEW": ""})
    assert image_digest(with_new_arg, []) != image_digest(spec, [])
    assert image_digest(replace(spec, version="1.1"), []) != image_digest(spec, [])


def test_variants_have_distinct_digests(tmp_path: Path) -> None:
    definition(tmp_path, "t", container_yaml="variants: [{suffix: a, build_args: {X: '1'}}, {suffix: b}]\n")
    found = digests(tmp_path)
    assert found["t-a"] != found["t-b"]


# -- order, tags and selection ---------------------------------------------------------------


def test_topological_order_puts_parents_first_and_breaks_ties_by_name() -> None:
    parents = {"d": ("b", "c"), "c": ("a",), "b": ("a",), "a": (), "e": (), "f": ("outside",)}
    assert topological_order(parents) == ["a", "b", "c", "d", "e", "f"]


def test_examples_plan_in_dependency_order() -> None:
    plan = make_plan(load_catalog(EXAMPLES))
    order = list(plan.images)
    assert order == ["amd64/base", "amd64/hello-apptainer", "amd64/hello-spack", "amd64/mpi", "amd64/python",
                     "amd64/spack-tools", "amd64/tools-debug", "amd64/tools-minimal", "arm64/hello-arm64"]
    for key, image in plan.images.items():
        assert all(order.index(parent) < order.index(key) for parent in image.parents)


def test_tag_is_prefix_name_version_digest12(tmp_path: Path) -> None:
    small_tree(tmp_path)
    plan = make_plan(load_catalog(tmp_path), registry_prefix="registry.example.org/hpc/")
    base = plan.images["amd64/base"]
    assert base.tag == f"registry.example.org/hpc/base:1.0-{base.digest[:12]}"
    assert base.digest12 == base.digest[:12]
    mid = plan.images["amd64/mid"]
    assert mid.tag == f"registry.example.org/hpc/mid:latest-{mid.digest12}"


@pytest.mark.parametrize(("only", "selected", "ancestors"), [
    (("leaf",), {"leaf"}, {"mid", "base"}),
    (("l*",), {"leaf"}, {"mid", "base"}),
    (("mid", "other"), {"mid", "other"}, {"base"}),
    (("base",), {"base"}, set()),
    (("*",), {"base", "mid", "leaf", "other"}, set()),
    ((), {"base", "mid", "leaf", "other"}, set()),
])
def test_selection_includes_ancestors_not_selected(tmp_path: Path, only: tuple[str, ...], selected: set[str],
                                                  ancestors: set[str]) -> None:
    small_tree(tmp_path)
    plan = make_plan(load_catalog(tmp_path), only=only)
    assert {i.name for i in plan.images.values() if i.selected} == selected
    assert {i.name for i in plan.images.values() if not i.selected} == ancestors


def test_selection_by_definition_name_takes_every_variant() -> None:
    plan = make_plan(load_catalog(EXAMPLES), only=["tools"])
    assert {i.name: i.selected for i in plan.images.values()} == {
        "base": False, "tools-debug": True, "tools-minimal": True}
    plan = make_plan(load_catalog(EXAMPLES), only=["tools-d*"])
    assert {i.name: i.selected for i in plan.images.values()} == {"base": False, "tools-debug": True}


# -- decisions -------------------------------------------------------------------------------


def decisions(plan: Plan) -> dict[str, tuple[str, str]]:
    return {image.name: (image.action.value, image.reason) for image in plan.images.values()}


@pytest.fixture
def tree(tmp_path: Path) -> Catalog:
    return load_catalog(small_tree(tmp_path))


def test_nothing_built_yet(tree: Catalog) -> None:
    plan = make_plan(tree, inventory=FakeInventory([]))
    assert decisions(plan) == {
        "base": ("build", "not built yet"),
        "mid": ("build", "parent base is rebuilt"),
        "leaf": ("build", "parent mid is rebuilt"),
        "other": ("build", "parent base is rebuilt"),
    }
    assert len(plan.to_build()) == 4


def test_everything_already_built(tree: Catalog) -> None:
    plan = make_plan(tree)
    again = make_plan(tree, inventory=inventory_of(plan))
    assert decisions(again) == dict.fromkeys(("base", "mid", "leaf", "other"), ("skip", "already built"))
    assert again.to_build() == []


def test_same_digest_under_another_prefix_is_tagged(tree: Catalog) -> None:
    plan = make_plan(tree)
    again = make_plan(tree, inventory=inventory_of(plan, prefix="elsewhere/"), registry_prefix="here/")
    assert set(decisions(again).values()) == {("tag", "built under another tag")}
    assert len(again.to_build()) == 4


def test_untagged_copy_of_a_digest_does_not_hide_the_tagged_one(tree: Catalog) -> None:
    """`--force` leaves the previous image untagged but labelled; the tagged one still counts."""
    plan = make_plan(tree)
    tagged = inventory_of(plan).images
    untagged = [KnownImage(image.name, image.digest, ()) for image in tagged]
    for images in (tagged + untagged, untagged + tagged):
        again = make_plan(tree, inventory=FakeInventory(images))
        assert {action for action, _ in decisions(again).values()} == {"skip"}


def test_changed_image_and_its_descendants_are_rebuilt(tmp_path: Path) -> None:
    root = small_tree(tmp_path)
    old = make_plan(load_catalog(root))
    write_tree(root, {"amd64/mid/Dockerfile": "FROM base\nRUN false\n"})
    plan = make_plan(load_catalog(root), inventory=inventory_of(old))
    assert decisions(plan) == {
        "base": ("skip", "already built"),
        "mid": ("build", f"changed since {old.images['amd64/mid'].digest12}"),
        "leaf": ("build", "parent mid is rebuilt"),
        "other": ("skip", "already built"),
    }
    assert [image.name for image in plan.to_build()] == ["mid", "leaf"]


def test_force_rebuilds_only_the_selected_images(tree: Catalog) -> None:
    plan = make_plan(tree)
    forced = make_plan(tree, only=["mid"], inventory=inventory_of(plan), force=True)
    assert decisions(forced) == {"base": ("skip", "already built"), "mid": ("build", "forced")}
    everything = make_plan(tree, inventory=inventory_of(plan), force=True)
    assert {reason for _, reason in decisions(everything).values()} == {"forced"}


def test_missing_ancestor_is_built_for_a_selected_image(tree: Catalog) -> None:
    plan = make_plan(tree)
    partial = make_plan(tree, only=["leaf"], inventory=inventory_of(plan, ["amd64/base"]))
    assert decisions(partial) == {
        "base": ("skip", "already built"),
        "mid": ("build", "not built yet (needed by a selected image)"),
        "leaf": ("build", "parent mid is rebuilt"),
    }


def test_ancestors_already_built_are_not_touched(tree: Catalog) -> None:
    plan = make_plan(tree)
    partial = make_plan(tree, only=["leaf"], inventory=inventory_of(plan, ["amd64/base", "amd64/mid"]))
    assert decisions(partial) == {
        "base": ("skip", "not selected"),  # not even needed as a base: mid exists
        "mid": ("skip", "already built"),  # the base leaf is built on
        "leaf": ("build", "not built yet"),
    }
    assert [image.name for image in partial.to_build()] == ["leaf"]


def test_plan_as_json(tree: Catalog) -> None:
    plan = make_plan(tree, only=["leaf"])
    data = json.loads(plan.to_json())
    assert [image["name"] for image in data["images"]] == ["base", "mid", "leaf"]
    leaf = data["images"][2]
    assert leaf["parents"] == ["mid"]
    assert leaf["tests"] == ["check"]
    assert leaf["selected"] is True
    assert leaf["digest12"] == leaf["digest"][:12]
    assert leaf["action"] == "build"
    assert data["definitions"] == str(tree.root)
