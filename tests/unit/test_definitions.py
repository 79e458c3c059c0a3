"""Loading definitions: the bundled examples, variants, fragments, files, tests and unsupported kinds."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from ci.definitions import (
    Catalog,
    Expectation,
    FileCopy,
    MetricCheck,
    SlurmResources,
    ancestors,
    is_valid_slurm_time,
    load_catalog,
)
from ci.errors import Problem
from tests.support.definitions import definition, write_tree
from tests.support.paths import EXAMPLES
from tests.support.services import BASE_IMAGE


@pytest.fixture(scope="module")
def examples():
    return load_catalog(EXAMPLES)


# -- the bundled examples ------------------------------------------------------------------


def test_examples_load_without_problems(examples) -> None:
    assert examples.problems == {}
    assert examples.unsupported == []


def test_examples_are_eleven_images(examples) -> None:
    assert sorted(examples.images) == [
        "amd64/base", "amd64/hello-apptainer", "amd64/hello-spack", "amd64/mpi", "amd64/python", "amd64/spack-builder",
        "amd64/spack-runtime", "amd64/spack-tools", "amd64/tools-debug", "amd64/tools-minimal", "arm64/hello-arm64"]
    kinds = {key: spec.kind for key, spec in examples.images.items()}
    assert kinds["amd64/hello-spack"] == kinds["amd64/spack-tools"] == "spack"
    assert kinds["amd64/hello-apptainer"] == "singularity"


def test_examples_from_edges(examples) -> None:
    assert examples.parents == {
        "amd64/base": (),
        "amd64/mpi": ("amd64/base",),
        "amd64/python": ("amd64/mpi",),
        "amd64/tools-debug": ("amd64/base",),
        "amd64/tools-minimal": ("amd64/base",),
        "amd64/hello-apptainer": ("amd64/base",),
        "amd64/hello-spack": (),  # the stand-in builder (the default and the local profile): not a definition
        "amd64/spack-tools": (),
        "amd64/spack-builder": (),
        "amd64/spack-runtime": (),
        "arm64/hello-arm64": (),
    }
    assert ancestors(examples, ["amd64/python"]) == {"amd64/mpi", "amd64/base"}
    assert ancestors(examples, ["amd64/base"]) == set()


def test_examples_versions_and_platform(examples) -> None:
    versions = {key: spec.version for key, spec in examples.images.items()}
    assert versions == {"amd64/base": "12", "amd64/mpi": "4.1.4", "amd64/python": "3.11",
                        "amd64/tools-debug": "latest", "amd64/tools-minimal": "latest", "amd64/hello-spack": "2.12",
                        "amd64/spack-tools": "1.4.0", "amd64/hello-apptainer": "12", "arm64/hello-arm64": "1.0",
                        "amd64/spack-builder": "0.23.1", "amd64/spack-runtime": "latest"}
    assert {key: spec.platform for key, spec in examples.images.items() if key.startswith("arm64/")} == {
        "arm64/hello-arm64": "linux/arm64"}
    assert {spec.platform for key, spec in examples.images.items() if key.startswith("amd64/")} == {"linux/amd64"}


def test_example_variants_share_the_definition_and_differ_in_build_args(examples) -> None:
    minimal, debug = examples.images["amd64/tools-minimal"], examples.images["amd64/tools-debug"]
    assert minimal.definition == debug.definition == "tools"
    assert minimal.root == debug.root == EXAMPLES / "amd64" / "tools"
    assert dict(minimal.build_args) == {"BASE_IMAGE": "base", "EXTRA_PACKAGES": ""}
    assert dict(debug.build_args) == {"BASE_IMAGE": "base", "EXTRA_PACKAGES": "strace"}


def test_example_tools_composes_fragments_dockerfile_then_files(examples) -> None:
    spec = examples.images["amd64/tools-minimal"]
    assert spec.fragments == (EXAMPLES / "common/header.docker", EXAMPLES / "common/site-env.docker")
    text = spec.composed_dockerfile()
    header = text.index("FROM ${BASE_IMAGE}")
    site_env = text.index("ENV SITE_NAME=containers-ci")
    own = text.index("ARG EXTRA_PACKAGES")
    copy = text.index("COPY files/profile.sh /etc/profile.d/containers-ci.sh")
    assert header < site_env < own < copy
    assert text.endswith("COPY files/profile.sh /etc/profile.d/containers-ci.sh\n")


def test_example_python_test_declares_a_metric(examples) -> None:
    (test,) = examples.images["amd64/python"].tests
    assert test.name == "numpy"
    assert test.script == EXAMPLES / "amd64/python/tests/numpy.sh"
    assert test.slurm == SlurmResources(nodes=1, ntasks=1, time="00:05:00")
    assert test.expect == Expectation(
        exit_code=0, patterns=("matmul ok",),
        metrics=(MetricCheck(name="gflops", regex=r"gflops\s+([0-9.]+)", minimum=0.01, unit="GFLOP/s"),))


def test_arch_filter_reads_only_the_given_folders(tmp_path: Path) -> None:
    definition(tmp_path, "a", arch="amd64")
    definition(tmp_path, "b", arch="arm64")
    assert sorted(load_catalog(tmp_path, ["arm64"]).images) == ["arm64/b"]
    assert sorted(load_catalog(tmp_path).images) == ["amd64/a", "arm64/b"]
    assert load_catalog(tmp_path, ["arm64"]).images["arm64/b"].platform == "linux/arm64"


def test_hidden_entries_and_common_are_not_definitions(tmp_path: Path) -> None:
    definition(tmp_path, "a")
    write_tree(tmp_path, {"amd64/.cache/Dockerfile": "FROM x\n", ".git/HEAD": "ref\n",
                          "common/header.docker": "FROM x\n"})
    catalog = load_catalog(tmp_path)
    assert sorted(catalog.images) == ["amd64/a"]
    assert catalog.problems == {}


# -- container.yaml fields -------------------------------------------------------------------


def test_defaults_without_container_yaml(tmp_path: Path) -> None:
    folder = definition(tmp_path, "plain")
    spec = load_catalog(tmp_path).images["amd64/plain"]
    assert spec.name == spec.definition == "plain"
    assert spec.version == "latest"
    assert spec.source == folder / "Dockerfile"
    assert spec.fragments == spec.files == spec.tests == spec.platforms == ()
    assert dict(spec.build_args) == {}


def test_variants_make_one_image_each_with_overrides(tmp_path: Path) -> None:
    definition(tmp_path, "torch", container_yaml="""\
        version: "2.5"
        build_args: {ROCM: "6.2", PYTORCH: "2.5.0"}
        variants:
          - {suffix: "2.5"}
          - {suffix: "2.6", version: "2.6", build_args: {PYTORCH: "2.6.0"}}
        """)
    catalog = load_catalog(tmp_path)
    assert sorted(catalog.images) == ["amd64/torch-2.5", "amd64/torch-2.6"]
    old, new = catalog.images["amd64/torch-2.5"], catalog.images["amd64/torch-2.6"]
    assert (old.version, dict(old.build_args)) == ("2.5", {"ROCM": "6.2", "PYTORCH": "2.5.0"})
    assert (new.version, dict(new.build_args)) == ("2.6", {"ROCM": "6.2", "PYTORCH": "2.6.0"})
    assert "amd64/torch" not in catalog.images


def test_build_args_are_strings(tmp_path: Path) -> None:
    definition(tmp_path, "a", container_yaml='build_args: {N: "4", F: "1.50", B: "yes", S: text}\n')
    spec = load_catalog(tmp_path).images["amd64/a"]
    assert dict(spec.build_args) == {"N": "4", "F": "1.50", "B": "yes", "S": "text"}


def test_numeric_version_is_refused_with_the_text_as_written(tmp_path: Path) -> None:
    definition(tmp_path, "a", container_yaml="version: 12\n")
    catalog = load_catalog(tmp_path)
    assert "amd64/a" not in catalog.images
    (problem,) = catalog.all_problems()
    assert (problem.field, problem.fix) == ("version", 'quote it: version: "12"')


def test_fragments_are_composed_in_the_listed_order(tmp_path: Path) -> None:
    write_tree(tmp_path, {"common/one.docker": "FROM scratch\n", "common/two.docker": "ENV TWO=2\n",
                          "common/three.docker": "ENV THREE=3\n"})
    definition(tmp_path, "a", dockerfile="ENV OWN=1\n",
               container_yaml="fragments: [common/three.docker, common/one.docker, common/two.docker]\n")
    spec = load_catalog(tmp_path).images["amd64/a"]
    assert spec.composed_dockerfile() == "ENV THREE=3\nFROM scratch\nENV TWO=2\nENV OWN=1\n"


def test_files_pairs_become_copy_lines_after_the_dockerfile(tmp_path: Path) -> None:
    definition(tmp_path, "a", dockerfile="FROM scratch\nENV A=1\n",
               files={"files/a.sh": "echo a\n", "etc/b.conf": "b\n"},
               container_yaml="files: ['files/a.sh:/opt/a.sh', 'etc/b.conf:/etc/b.conf']\n")
    spec = load_catalog(tmp_path).images["amd64/a"]
    assert spec.files == (FileCopy("files/a.sh", "/opt/a.sh"), FileCopy("etc/b.conf", "/etc/b.conf"))
    assert spec.composed_dockerfile() == ("FROM scratch\nENV A=1\nCOPY files/a.sh /opt/a.sh\n"
                                          "COPY etc/b.conf /etc/b.conf\n")


def test_files_pair_may_name_a_folder(tmp_path: Path) -> None:
    definition(tmp_path, "a", files={"conf/x": "x\n"}, container_yaml="files: ['conf:/etc/conf']\n")
    assert load_catalog(tmp_path).images["amd64/a"].files == (FileCopy("conf", "/etc/conf"),)


def test_tests_default_to_every_script_in_tests_folder(tmp_path: Path) -> None:
    folder = definition(tmp_path, "a", files={"tests/zeta.sh": "echo\n", "tests/alpha.sh": "echo\n",
                                              "tests/data.txt": "not a test\n"})
    tests = load_catalog(tmp_path).images["amd64/a"].tests
    assert [(t.name, t.script) for t in tests] == [("alpha", folder / "tests/alpha.sh"),
                                                   ("zeta", folder / "tests/zeta.sh")]
    assert all(t.slurm == SlurmResources() and t.expect == Expectation() for t in tests)


def test_tests_key_replaces_the_default_scripts(tmp_path: Path) -> None:
    definition(tmp_path, "a", files={"tests/one.sh": "echo\n", "tests/two.sh": "echo\n"},
               container_yaml="tests:\n  - script: tests/two.sh\n")
    tests = load_catalog(tmp_path).images["amd64/a"].tests
    assert [t.name for t in tests] == ["two"], "the name defaults to the script's stem"


@pytest.mark.parametrize("value", ["[]", "null"])
def test_empty_tests_key_means_no_tests(tmp_path: Path, value: str) -> None:
    definition(tmp_path, "a", files={"tests/one.sh": "echo\n"}, container_yaml=f"tests: {value}\n")
    assert load_catalog(tmp_path).images["amd64/a"].tests == ()


def test_full_test_declaration(tmp_path: Path) -> None:
    definition(tmp_path, "a", files={"tests/ar.sh": "echo\n"}, container_yaml="""\
        tests:
          - name: allreduce
            script: tests/ar.sh
            slurm: {nodes: 2, ntasks: 4, time: "1-00:00", partition: gpu, gpus: 8, extra: ["--exclusive"]}
            expect:
              exit_code: 3
              patterns: ["Test success", "rank \\\\d+"]
              metrics:
                busbw: {regex: 'busbw\\s+([0-9.]+)', min: 60, max: 400, unit: "GB/s"}
        """)
    (test,) = load_catalog(tmp_path).images["amd64/a"].tests
    assert test.slurm == SlurmResources(nodes=2, ntasks=4, time="1-00:00", partition="gpu", gpus=8,
                                        extra=("--exclusive",))
    assert test.expect.exit_code == 3
    assert test.expect.patterns == ("Test success", r"rank \d+")
    assert test.expect.metrics == (MetricCheck("busbw", r"busbw\s+([0-9.]+)", 60.0, 400.0, "GB/s"),)


@pytest.mark.parametrize("value", ["10", "10:00", "00:10:00", "2-12", "2-12:30", "2-12:30:00", "UNLIMITED"])
def test_slurm_time_forms_accepted(value: str) -> None:
    assert is_valid_slurm_time(value)


@pytest.mark.parametrize("value", ["10 minutes", "1h", "", "1:2:3:4", "-5"])
def test_slurm_time_forms_refused(value: str) -> None:
    assert not is_valid_slurm_time(value)


def test_variant_of_a_child_definition_names_its_parent_image(tmp_path: Path) -> None:
    definition(tmp_path, "base")
    definition(tmp_path, "app", dockerfile="ARG PARENT=base\nFROM ${PARENT}\n",
               container_yaml="variants:\n  - {suffix: plain}\n"
                              "  - {suffix: other, build_args: {PARENT: other}}\n")
    definition(tmp_path, "other")
    catalog = load_catalog(tmp_path)
    assert catalog.parents["amd64/app-plain"] == ("amd64/base",)
    assert catalog.parents["amd64/app-other"] == ("amd64/other",)


def test_external_base_and_stage_aliases_are_not_parents(tmp_path: Path) -> None:
    definition(tmp_path, "builder")
    definition(tmp_path, "app", dockerfile=f"FROM {BASE_IMAGE} AS builder\nRUN true\nFROM builder\n")
    catalog = load_catalog(tmp_path)
    assert catalog.parents["amd64/app"] == (), "'builder' here is the earlier stage, not the definition"
    assert catalog.problems == {}


# -- unsupported kinds -----------------------------------------------------------------------


def test_spack_and_singularity_kinds_load_and_disabled_arches_are_listed(tmp_path: Path) -> None:
    definition(tmp_path, "good")
    write_tree(tmp_path, {
        "amd64/legacy.def": "Bootstrap: docker\nFrom: debian:12\n",
        "amd64/env.yaml": "spack:\n  specs: [zlib]\n",
        "amd64/envdir/spack.yaml": "spack:\n  specs: [hdf5]\n",
        "amd64/sing/sing.def": "Bootstrap: docker\nFrom: debian:12\n",
        "_arm64/off.yaml": "spack:\n  specs: [zlib]\n",
    })
    catalog = load_catalog(tmp_path)
    assert catalog.problems == {}
    assert {key: spec.kind for key, spec in catalog.images.items()} == {
        "amd64/good": "docker", "amd64/legacy": "singularity", "amd64/env": "spack", "amd64/envdir": "spack",
        "amd64/sing": "singularity"}
    found = {(u.name, u.arch, u.kind, u.source.relative_to(tmp_path).as_posix()) for u in catalog.unsupported}
    assert found == {("off", "arm64", "spack", "_arm64/off.yaml")}
    assert all("disabled" in u.reason for u in catalog.unsupported)


# -- problems as text ------------------------------------------------------------------------


def test_problem_reads_as_one_line() -> None:
    problem = Problem(Path("/defs/amd64/a/container.yaml"), "tests[0].slurm.time",
                      "'x' is not a Slurm time limit", "use HH:MM:SS")
    assert str(problem) == ("/defs/amd64/a/container.yaml: tests[0].slurm.time: "
                            "'x' is not a Slurm time limit; use HH:MM:SS")
    assert str(Problem(Path("/d/x86"), "", "is wrong", "move it")) == "/d/x86: is wrong; move it"


# -- composition: dockerfile:, compose:, per-variant tests, host tests, secrets ---------------------


def test_compose_places_fragments_before_and_after_the_body_byte_for_byte(tmp_path: Path) -> None:
    write_tree(tmp_path, {"common/header.docker": "FROM scratch\n", "common/env.docker": "ENV A=1",
                          "common/tail.docker": "\nENV Z=26\n"})
    definition(tmp_path, "app", dockerfile="RUN true\n", container_yaml=(
        "compose: [common/header.docker, $DOCKERFILE, common/env.docker, common/tail.docker]\n"))
    spec = load_catalog(tmp_path).images["amd64/app"]
    assert spec.composed_dockerfile() == "FROM scratch\nRUN true\nENV A=1\nENV Z=26\n", "as `cat a b c` joins"
    assert spec.fragments == ()
    assert spec.compose[1] == spec.dockerfile


def test_variants_may_name_their_own_body_composition_and_tests(tmp_path: Path) -> None:
    write_tree(tmp_path, {"common/rocm.docker": "ENV ROCM=1\n"})
    definition(tmp_path, "app", files={"build-a.docker": "FROM scratch\nENV A=1\n",
                                       "build-b.docker": "FROM scratch\nENV B=1\n",
                                       "tests/a.sh": "echo a\n", "tests/b.sh": "echo b\n"},
               container_yaml="""\
        dockerfile: build-a.docker
        tests: [{script: tests/a.sh}]
        variants:
          - {suffix: a}
          - suffix: b
            dockerfile: build-b.docker
            compose: [$DOCKERFILE, common/rocm.docker]
            tests: [{name: bee, script: tests/b.sh, run: host, slurm: {nodes: 1, ntasks: 2}}]
        """)
    catalog = load_catalog(tmp_path)
    assert catalog.problems == {}
    a, b = catalog.images["amd64/app-a"], catalog.images["amd64/app-b"]
    assert a.composed_dockerfile() == "FROM scratch\nENV A=1\n"
    assert b.composed_dockerfile() == "FROM scratch\nENV B=1\nENV ROCM=1\n"
    assert [(t.name, t.run) for t in a.tests] == [("a", "image")]
    assert [(t.name, t.run, t.slurm.ntasks) for t in b.tests] == [("bee", "host", 2)]


def test_compose_and_its_digest_follow_the_order(tmp_path: Path) -> None:
    from ci.plan import make_plan

    write_tree(tmp_path, {"common/x.docker": "ENV X=1\n"})
    definition(tmp_path, "one", dockerfile="FROM scratch\n", container_yaml="compose: [$DOCKERFILE, common/x.docker]\n")
    definition(tmp_path, "two", dockerfile="FROM scratch\n", container_yaml="compose: [common/x.docker, $DOCKERFILE]\n")
    plan = make_plan(load_catalog(tmp_path))
    assert plan.images["amd64/one"].digest != plan.images["amd64/two"].digest


@pytest.mark.parametrize(("yaml_text", "field", "message"), [
    ("compose: [common/x.docker]\n", "compose", "names $DOCKERFILE 0 times"),
    ("compose: [$DOCKERFILE, $DOCKERFILE]\n", "compose", "names $DOCKERFILE 2 times"),
    ("compose: [$DOCKERFILE]\nfragments: [common/x.docker]\n", "compose", "is given together with fragments"),
    ("compose: [$DOCKERFILE, ../outside]\n", "compose[1]", "leaves the definitions folder"),
    ("dockerfile: nope.docker\n", "dockerfile", "does not exist"),
    ("dockerfile: ../b/Dockerfile\n", "dockerfile", "leaves the definition folder"),
    ("variants: [{suffix: x, tests: [{script: tests/none.sh}]}]\n", "variants[0].tests[0].script", "does not exist"),
    ("tests: [{script: tests/t.sh, run: node}]\n", "tests[0].run", "is not one of"),
    ("secrets: [GITHUB TOKEN]\n", "secrets[0]", "is not an environment variable name"),
    ("secrets: [NPMRC]\nbuild_args: {NPMRC: x}\n", "secrets[0]", "is also a build argument"),
    ("secrets: [TOKEN]\nbuild_args: {TOKEN: x}\n", "build_args.TOKEN", "is named as a secret"),
])
def test_composition_keys_are_checked(tmp_path: Path, yaml_text: str, field: str, message: str) -> None:
    write_tree(tmp_path, {"common/x.docker": "ENV X=1\n", "outside": "x"})
    definition(tmp_path, "a", container_yaml=yaml_text, files={"tests/t.sh": "echo\n"})
    problems = load_catalog(tmp_path).problems.get("amd64/a", [])
    assert any(p.field == field and message in p.message for p in problems), problems


def test_secrets_are_names_in_the_spec_and_secret_looking_build_args_are_warned_about(tmp_path: Path) -> None:
    """`*_TOKEN` and the like are refused (tests/unit/test_hostile_values.py); a name that only looks like a
    secret is warned about."""
    definition(tmp_path, "a", container_yaml="secrets: [NPM_TOKEN]\nbuild_args: {DB_CREDENTIALS: x, N: '1'}\n")
    catalog = load_catalog(tmp_path)
    assert catalog.images["amd64/a"].secrets == ("NPM_TOKEN",)
    (warning,) = catalog.warnings
    assert warning.field == "build_args.DB_CREDENTIALS" and "looks like a secret" in warning.message
    assert "secrets:" in warning.fix


# -- schema and render --------------------------------------------------------------------------


def test_json_schema_in_the_repository_is_current() -> None:
    from ci.definitions.schema import SCHEMA_FILE, schema_text

    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(), \
        "regenerate it: python -m ci.definitions schema --write"


def test_stock_json_schema_validator_accepts_every_bundled_container_yaml_and_refuses_a_typo() -> None:
    import json

    import jsonschema
    import yaml

    from ci.definitions.schema import SCHEMA_FILE

    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    files = sorted(EXAMPLES.glob("*/*/container.yaml"))
    assert len(files) >= 4
    for path in files:
        errors = [error.message for error in validator.iter_errors(yaml.safe_load(path.read_text()))]
        assert errors == [], f"{path}: {errors}"
    assert list(validator.iter_errors({"varients": []})), "an unknown key is refused by the schema too"


def test_render_gives_the_exact_recipe_and_writes_it(tmp_path: Path) -> None:
    from ci.definitions import render

    catalog = load_catalog(EXAMPLES)
    rendered = render(catalog, "tools-minimal")
    assert rendered.recipe == catalog.images["amd64/tools-minimal"].composed_dockerfile()
    path = rendered.write(tmp_path)
    assert path == tmp_path / "tools-minimal" / "Dockerfile"
    assert path.read_bytes() == rendered.recipe.encode()


def test_a_new_kind_is_one_class_and_one_registry_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The interface a Spack or .def kind implements: claims, load (problems to the context), recipe, builder."""
    from dataclasses import replace

    from ci.definitions import ImageSpec, render
    from ci.definitions.kinds import KINDS
    from ci.definitions.kinds.base import LoadContext
    from ci.plan import make_plan

    class RecipeKind:
        name, builder, looks_for, recipe_file = "recipe", "none", "<name>.recipe", "recipe.txt"

        def claims(self, entry: Path) -> bool:
            return entry.is_file() and entry.suffix == ".recipe"

        def load(self, entry: Path, arch: str, context: LoadContext) -> list[ImageSpec]:
            if entry.read_text() == "":
                context.problem(f"{arch}/{entry.stem}", entry, "", "is empty", "write a recipe")
                return []
            spec = ImageSpec(name=entry.stem, definition=entry.stem, arch=arch, root=entry.parent, source=entry,
                             dockerfile=entry, fragments=(), version="1", build_args={}, platforms=(), files=(),
                             tests=(), kind="recipe")
            return [replace(spec, recipe_text=self.recipe(spec))]

        def recipe(self, spec: ImageSpec) -> str:
            return "recipe of " + spec.source.read_text()

        def on_demand(self, catalog: Catalog, options: Mapping[str, Any]) -> set[str]:
            return set()  # every image of this kind is built by a plain build-all

    monkeypatch.setitem(KINDS, "recipe", RecipeKind())  # the one registry line (no other kind claims .recipe)
    write_tree(tmp_path, {"amd64/hello.recipe": "hello\n", "amd64/empty.recipe": ""})
    catalog = load_catalog(tmp_path)
    assert catalog.problems["amd64/empty"][0].message == "is empty"
    spec = catalog.images["amd64/hello"]
    assert (spec.kind, spec.builder, spec.recipe) == ("recipe", "none", "recipe of hello\n")
    assert render(catalog, "hello").file_name == "recipe.txt"
    plan = make_plan(catalog, only=["hello"])
    assert plan.images["amd64/hello"].as_dict()["kind"] == "recipe"
