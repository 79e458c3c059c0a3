"""Spack definitions: the template merge, the schema of Spacktainers YAML, the version rule, rendering."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ci.config.spack import SpackSettings, spack_settings
from ci.errors import ConfigError
from ci.spack.environment import merged_environment, parse_environment, pinned_version, spack_version
from ci.spack.merge import MergeConflict, merge
from ci.spack.render import render_dockerfile, render_spack_yaml
from tests.support.definitions import write_tree

TEMPLATE = {"spack": {"view": "/opt/view", "concretizer": {"unify": True, "reuse": False},
                      "packages": {"all": {"providers": {"mpi": ["mpich"]}}}, "specs": []}}


# -- merge ---------------------------------------------------------------------------------------


def test_mappings_merge_key_by_key_and_lists_append() -> None:
    user = {"spack": {"specs": ["zlib"], "packages": {"all": {"providers": {"mpi": ["openmpi"]}},
                                                      "hdf5": {"require": "+mpi"}}}}
    merged = merge(TEMPLATE, user)
    assert merged["spack"]["packages"]["all"]["providers"]["mpi"] == ["mpich", "openmpi"]
    assert merged["spack"]["packages"]["hdf5"] == {"require": "+mpi"}
    assert merged["spack"]["specs"] == ["zlib"]
    assert list(merged["spack"]) == ["view", "concretizer", "packages", "specs"]  # the template's order
    assert TEMPLATE["spack"]["specs"] == []  # inputs untouched


def test_equal_scalars_are_kept_and_different_ones_name_the_key() -> None:
    assert merge(TEMPLATE, {"spack": {"concretizer": {"unify": True}}})["spack"]["concretizer"]["unify"] is True
    with pytest.raises(MergeConflict) as caught:
        merge(TEMPLATE, {"spack": {"concretizer": {"unify": "when_possible"}}})
    assert caught.value.path == "spack.concretizer.unify"
    assert "'when_possible'" in str(caught.value) and "True" in str(caught.value)


def test_a_list_against_a_scalar_is_a_conflict_too() -> None:
    with pytest.raises(MergeConflict) as caught:
        merge({"spack": {"view": "/opt/view"}}, {"spack": {"view": ["a"]}})
    assert caught.value.path == "spack.view"


def test_deep_documents_do_not_hit_the_recursion_limit() -> None:
    deep: dict[str, object] = {}
    node = deep
    for _ in range(5000):
        node["k"] = {}
        node = node["k"]  # type: ignore[assignment]
    merged = merge(deep, deep)
    depth = 0
    while merged:
        merged, depth = merged["k"], depth + 1
    assert depth == 5000


# -- the Spacktainers file -----------------------------------------------------------------------


def test_every_bad_files_entry_is_one_problem_in_one_pass(tmp_path: Path) -> None:
    folder = write_tree(tmp_path / "env", {
        "files/a.sh": "echo a\n",
        "spack.yaml": """\
            spack:
              specs: [zlib]
            spacktainer:
              files:
                - files/a.sh: /opt/a.sh
                - "files/a.sh: /opt/a.sh"
                - "../../etc/passwd:/etc/x"
                - {src: files/a.sh, dst: /opt/a.sh}
                - "files/missing.sh:/opt/m.sh"
                - "files/a.sh:relative"
                - "files/a.sh:/opt/ok.sh"
            """})
    env, problems = parse_environment(folder / "spack.yaml", folder)
    assert env is None
    by_field = {p.field: p for p in problems}
    assert sorted(by_field) == [f"spacktainer.files[{i}]" for i in range(6)]
    assert "space after ':'" in by_field["spacktainer.files[0]"].message
    assert by_field["spacktainer.files[0]"].fix == "write it without the space: 'files/a.sh:/opt/a.sh'"
    assert "space around ':'" in by_field["spacktainer.files[1]"].message
    assert "leaves the definition folder" in by_field["spacktainer.files[2]"].message
    assert "is a mapping" in by_field["spacktainer.files[3]"].message
    assert "does not exist" in by_field["spacktainer.files[4]"].message
    assert "absolute" in by_field["spacktainer.files[5]"].message


def test_a_source_linking_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    folder = write_tree(tmp_path / "env", {"spack.yaml": "spack: {specs: [zlib]}\nspacktainer: {files: ['x:/x']}\n"})
    (folder / "x").symlink_to("/etc")
    _, problems = parse_environment(folder / "spack.yaml", folder)
    assert [p.field for p in problems] == ["spacktainer.files[0]"]
    assert "through a link" in problems[0].message


@pytest.mark.parametrize(("text", "field", "words"), [
    ("spack:\n  specs:\n", "spack.specs", "is empty"),
    ("spack:\n  packages: {}\n", "spack.specs", "is missing"),
    ("spack: {specs: [3]}\n", "spack.specs[0]", "YAML reads 3 as the number 3"),
    ("spack: {specs: ['@1.0']}\n", "spack.specs[0]", "does not start with a package name"),
    ("spac: {specs: [zlib]}\n", "spac", "unknown key"),
    ("- a\n- b\n", "", "expected a mapping"),
    ("spack: [\n", "", "is not valid YAML"),
])
def test_schema_problems_name_the_field(tmp_path: Path, text: str, field: str, words: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    env, problems = parse_environment(path, tmp_path)
    assert env is None
    assert any(p.field == field and words in p.message for p in problems), problems


def test_spack_keys_pass_through_and_spacktainer_never_reaches_spack(tmp_path: Path) -> None:
    folder = write_tree(tmp_path / "env", {"files/a": "a", "spack.yaml": """\
        spack:
          specs: [py-foo@3.0.0+mpi]
          packages: {all: {providers: {mpi: [openmpi]}}}
          modules: {default: {enable: []}}
        spacktainer: {files: ['files/a:/opt/a']}
        """})
    env, problems = parse_environment(folder / "spack.yaml", folder)
    assert problems == [] and env is not None
    merged, problems = merged_environment(env, SpackSettings(template=TEMPLATE), "amd64")
    assert problems == [] and merged is not None
    text = render_spack_yaml(merged, name="foo", arch="amd64", source="amd64/foo/spack.yaml")
    data = yaml.safe_load(text)
    assert "spacktainer" not in data
    assert data["spack"]["modules"] == {"default": {"enable": []}}
    assert data["spack"]["packages"]["all"]["require"] == ["target=x86_64_v3"]
    assert data["spack"]["packages"]["all"]["providers"]["mpi"] == ["mpich", "openmpi"]


def test_a_conflict_with_the_template_is_one_problem_naming_the_key(tmp_path: Path) -> None:
    path = write_tree(tmp_path, {"a.yaml": "spack:\n  specs: [zlib]\n  view: false\n"}) / "a.yaml"
    env, _ = parse_environment(path, tmp_path)
    assert env is not None
    merged, problems = merged_environment(env, SpackSettings(template=TEMPLATE), "amd64")
    assert merged is None
    assert [(p.field, p.message) for p in problems] == [
        ("spack.view", "sets 'False' but the site template sets '/opt/view'")]


# -- version -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "version"), [
    ("py-foo@3.0.0+mpi", "3.0.0"), ("hdf5@=1.14.3 ~mpi", "1.14.3"), ("zlib @1.3", "1.3"),
    ("gmsh@4:", None), ("py-x@1.2,1.4", None), ("foo ^bar@1.0", None), ("foo %gcc@12", None),
    ("neurodamus-models+coreneuron model=hippocampus", None),
])
def test_the_first_specs_exact_version(spec: str, version: str | None) -> None:
    assert pinned_version(spec) == version


def test_version_falls_back_to_container_yaml_then_latest(tmp_path: Path) -> None:
    path = write_tree(tmp_path, {"a.yaml": "spack: {specs: ['gmsh@4:', 'zlib@1.3']}\n"}) / "a.yaml"
    env, _ = parse_environment(path, tmp_path)
    assert env is not None
    assert spack_version(env, "2.0") == ("2.0", [])
    assert spack_version(env, None) == ("latest", [])


# -- settings and the Dockerfile -----------------------------------------------------------------


def test_settings_problems_name_ci_spack() -> None:
    with pytest.raises(ConfigError) as caught:
        spack_settings({"buildcache": "ftp://x", "template": {"view": 1}, "signing_key_env": "lower"})
    text = str(caught.value)
    assert "ci.spack.buildcache" in text and "ci.spack.template" in text and "ci.spack.signing_key_env" in text


def test_the_dockerfile_has_both_stages_and_the_key_only_as_a_secret_mount(tmp_path: Path) -> None:
    folder = write_tree(tmp_path / "env", {"files/a": "a", "spack.yaml": "spack: {specs: [zlib]}\n"
                                                                         "spacktainer: {files: ['files/a:/opt/a']}\n"})
    env, _ = parse_environment(folder / "spack.yaml", folder)
    assert env is not None
    settings = SpackSettings(template=TEMPLATE, builder_image="b:1", runtime_image="r:1",
                             buildcache="oci+http://127.0.0.1:5000/spack-cache", signed=True)
    merged, _ = merged_environment(env, settings, "amd64")
    assert merged is not None
    text = render_dockerfile(merged, settings, name="zlib", arch="amd64", source="amd64/zlib/spack.yaml",
                             files=env.files, epilogue="RUN echo epilogue\n")
    lines = text.splitlines()
    builder, runtime = lines.index("FROM b:1 AS builder"), lines.index("FROM r:1")
    assert builder < runtime
    order = ["spack gpg trust /run/secrets/SPACK_SIGNING_KEY; signing=--signed",
             "ci.spack.signed is true but the secret SPACK_SIGNING_KEY was not given",
             'spack mirror add --scope site --autopush "$signing" ci-buildcache oci+http://127.0.0.1:5000/spack-cache',
             "spack buildcache keys --install --trust", "spack -e . concretize;",
             "spack -e . install --fail-fast || status=$?", "spack buildcache update-index ci-buildcache",
             'exit "$status"', "spack -e . gc -y", "strip -s",
             "spack env activate --sh -d . > /etc/profile.d/z10_spack_environment.sh"]
    positions = [next(i for i, line in enumerate(lines) if step in line) for step in order]
    assert positions == sorted(positions) and positions[-1] < runtime
    key_lines = [line for line in lines if "SPACK_SIGNING_KEY" in line and not line.startswith("#")]
    assert key_lines[0].startswith("RUN --mount=type=secret,id=SPACK_SIGNING_KEY ")
    assert all(i < runtime for i, line in enumerate(lines) if "SPACK_SIGNING_KEY" in line)
    assert not any(line.startswith(("ARG", "ENV")) for line in lines)
    runtime_part = "\n".join(lines[runtime:])
    for copied in ("/opt/spack-environment", "/opt/software", "/opt/._view", "/opt/view",
                   "/etc/profile.d/z10_spack_environment.sh"):
        assert f"COPY --from=builder {copied} {copied}" in runtime_part
    assert "ldconfig" in runtime_part and "COPY files/a /opt/a" in runtime_part
    assert 'ENTRYPOINT ["/bin/bash", "--rcfile", "/etc/profile", "-l", "-c", "$*", "--"]' in runtime_part
    assert lines[-1] == "RUN echo epilogue"


def test_without_a_cache_the_builder_neither_adds_nor_pushes() -> None:
    settings = SpackSettings(template=TEMPLATE, buildcache=None)
    text = render_dockerfile(merge(TEMPLATE, {"spack": {"specs": ["zlib"]}}), settings, name="z", arch="amd64",
                             source="z.yaml")
    assert "mirror add" not in text and "buildcache push" not in text and "--mount=type=secret" not in text
    assert "RUN spack -e . concretize && spack -e . install --fail-fast" in text


def test_an_s3_cache_gets_its_endpoint_and_credentials_only_as_secrets() -> None:
    settings = SpackSettings(template=TEMPLATE, buildcache="s3://spack-cache/amd64",
                             s3={"endpoint": "http://127.0.0.1:9000", "region": "eu-north-1",
                                 "access_key_env": "CACHE_KEY_ID", "secret_key_env": "CACHE_SECRET"})
    text = render_dockerfile(merge(TEMPLATE, {"spack": {"specs": ["zlib"]}}), settings, name="z", arch="amd64",
                             source="z.yaml")
    assert settings.build_secrets() == ("SPACK_SIGNING_KEY", "CACHE_KEY_ID", "CACHE_SECRET")
    run = next(line for line in text.splitlines() if line.startswith("RUN --mount"))
    assert run.split() == ["RUN", "--mount=type=secret,id=SPACK_SIGNING_KEY", "--mount=type=secret,id=CACHE_KEY_ID",
                           "--mount=type=secret,id=CACHE_SECRET", "\\"]
    # the standard variables boto3 (and Spack) read, set from the secret files inside the one step
    assert 'AWS_ACCESS_KEY_ID="$(cat /run/secrets/CACHE_KEY_ID)"; export AWS_ACCESS_KEY_ID' in text
    assert 'AWS_SECRET_ACCESS_KEY="$(cat /run/secrets/CACHE_SECRET)"; export AWS_SECRET_ACCESS_KEY' in text
    assert "AWS_DEFAULT_REGION=eu-north-1" in text
    assert "--s3-endpoint-url http://127.0.0.1:9000 ci-buildcache s3://spack-cache/amd64" in text
    assert not any(line.startswith(("ARG", "ENV")) for line in text.splitlines())
