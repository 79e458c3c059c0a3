"""The Spack and Singularity kinds in the catalog: Spacktainers' layouts plan unchanged, with names,
versions and kinds; problems in one pass; digests over the recipe, the files and the builder."""

from __future__ import annotations

from pathlib import Path

from ci.definitions import load_catalog
from ci.plan import image_digest
from tests.support.definitions import write_tree

SPACKTAINERS = {
    "amd64/brainbuilder.yaml": "spack:\n  specs:\n    - brainbuilder\n",
    "amd64/py-foo.yaml": "spack:\n  specs: ['py-foo@3.0.0+mpi', 'zlib@1.3']\n",
    "amd64/multiscale-run/spack.yaml": "spack:\n  specs:\n    - 'gmsh@4:'\n  packages:\n    gmsh:\n"
                                       "      require:\n        - ~fltk\n",
    "amd64/neurodamus/spack.yaml": "spack:\n  specs:\n    - neurodamus-models+coreneuron model=hippocampus\n",
    "amd64/neurodamus/Dockerfile.epilogue": "RUN echo epilogue > /epilogue\n",
    "amd64/neurodamus/container.yaml": "version: '2024.1'\n",
    "amd64/neurodamus/tests/run.sh": "#!/bin/sh\ntrue\n",
    "amd64/nexus-storage.def": "Bootstrap: docker\nFrom: bluebrain/nexus-storage:1.9\n\n%startscript\n"
                               "   /opt/docker/bin/storage $@\n",
    "amd64/BLENDER_LUMI.def": "Bootstrap: docker\nFrom: host:5000/ns/blender:4.2@sha256:abc\n%test\n  blender -v\n",
    "_arm64/cwl-registry.yaml": "spack:\n  specs:\n    - py-cwl-registry\n",
    "amd64/app/Dockerfile": "FROM neurodamus\nRUN true\n",
}


def catalog(tmp_path: Path, files: dict[str, str] = SPACKTAINERS, **options: object):
    write_tree(tmp_path, files)
    return load_catalog(tmp_path, ("amd64", "arm64"), options)


def test_spacktainers_layouts_plan_unchanged(tmp_path: Path) -> None:
    found = catalog(tmp_path)
    assert found.problems == {}
    table = {spec.name: (spec.kind, spec.version) for spec in found.images.values()}
    assert table == {
        "brainbuilder": ("spack", "latest"), "py-foo": ("spack", "3.0.0"), "multiscale-run": ("spack", "latest"),
        "neurodamus": ("spack", "2024.1"), "nexus-storage": ("singularity", "1.9"),
        "blender_lumi": ("singularity", "4.2"), "app": ("docker", "latest"),
    }
    assert [(u.name, u.arch, u.kind) for u in found.unsupported] == [("cwl-registry", "arm64", "spack")]
    assert "disabled" in found.unsupported[0].reason
    assert found.parents["amd64/app"] == ("amd64/neurodamus",)  # a Dockerfile definition on a Spack parent
    neurodamus = found.images["amd64/neurodamus"]
    assert [t.name for t in neurodamus.tests] == ["run"]
    assert neurodamus.recipe.rstrip().endswith("RUN echo epilogue > /epilogue")
    assert "model=hippocampus" in neurodamus.recipe and "FROM containers-ci/debian:bookworm" in neurodamus.recipe
    assert neurodamus.secrets == ("SPACK_SIGNING_KEY",)
    assert [t.name for t in found.images["amd64/blender_lumi"].tests] == ["apptainer-test"]


def test_bad_entries_are_one_problem_each_in_one_pass(tmp_path: Path) -> None:
    found = catalog(tmp_path, {
        "amd64/bad/spack.yaml": "spack:\n  specs: [zlib]\nspacktainer:\n  files:\n    - files/a: /opt/a\n"
                                "    - 'files/a: /opt/a'\n    - '../../x:/x'\n",
        "amd64/bad/files/a": "a\n",
        "amd64/Bad_Name.yaml": "spack: {specs: [zlib]}\n",
        "amd64/setup.def": "Bootstrap: docker\nFrom: debian:12\n%setup\n  touch x\n",
        "amd64/conflict.yaml": "spack:\n  specs: [zlib]\n  concretizer: {unify: false}\n",
        "amd64/good.yaml": "spack: {specs: [zlib@1.3]}\n",
    })
    problems = {key: [(p.field, p.message) for p in found.problems[key]] for key in found.problems}
    assert [field for field, _ in problems["amd64/bad"]] == ["spacktainer.files[0]", "spacktainer.files[1]",
                                                             "spacktainer.files[2]"]
    assert "not a valid image name" in problems["amd64/Bad_Name"][0][1]
    assert problems["amd64/setup"][0][0] == "%setup"
    assert problems["amd64/conflict"] == [("spack.concretizer.unify",
                                           "sets 'False' but the site template sets 'True'")]
    assert "amd64/good" in found.images


def test_the_digest_covers_the_recipe_the_files_and_the_builder(tmp_path: Path) -> None:
    files = {"amd64/env/spack.yaml": "spack:\n  specs: [zlib]\nspacktainer: {files: ['files/a:/opt/a']}\n",
             "amd64/env/files/a": "one\n", "amd64/single.yaml": "spack: {specs: [zlib]}\n"}
    first = catalog(tmp_path / "1", files)
    changed_file = catalog(tmp_path / "2", {**files, "amd64/env/files/a": "two\n"})
    other_builder = catalog(tmp_path / "3", files, spack={"builder_image": "spack/ubuntu-jammy@sha256:" + "a" * 64})

    def digest(found, key):
        return image_digest(found.images[key], [])

    assert digest(first, "amd64/env") != digest(changed_file, "amd64/env")
    assert digest(first, "amd64/single") == digest(changed_file, "amd64/single")  # no context of its own
    assert digest(first, "amd64/single") != digest(other_builder, "amd64/single")
    assert "stand-in" in first.images["amd64/single"].recipe  # the stand-in's input digest is in the recipe


def test_a_bad_ci_spack_section_is_a_problem_of_each_spack_definition(tmp_path: Path) -> None:
    found = catalog(tmp_path, {"amd64/a.yaml": "spack: {specs: [zlib]}\n"}, spack={"buildcache": "ftp://x"})
    assert [p.field for p in found.problems["amd64/a"]] == ["ci.spack"]


def test_a_single_file_defs_files_travel_in_the_recipe(tmp_path: Path) -> None:
    found = catalog(tmp_path, {
        "amd64/tool.def": "Bootstrap: docker\nFrom: debian:12\n%files\n    data/x.bin /opt/x.bin\n%test\n  true\n",
        "amd64/data/x.bin": "\x00\x01binary",
        "amd64/dir.def": "Bootstrap: docker\nFrom: debian:12\n%files\n    data /opt/data\n",
    })
    import base64

    recipe = found.images["amd64/tool"].recipe
    assert base64.b64encode(b"\x00\x01binary").decode() in recipe and "COPY" not in recipe
    assert found.images["amd64/tool"].root.name == "apptainer-context"
    assert [p.field for p in found.problems["amd64/dir"]] == ["%files[0]"]
