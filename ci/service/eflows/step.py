"""A step of eFlows4HPC's workflow registry: read, checked, rendered for one machine, staged.

A step folder holds `eflows4hpc.yaml` with any of `apt:` (Debian packages), `pip:` (pip
requirements; when absent, the folder's `requirements.txt`) and `spack:` (a Spack environment
body), and maybe `post_inst.sh`. A step that only has `spack.yaml` is read as if its `spack:`
section were that file's.

The Spack environment is the one eFlows4HPC's builder writes (image_builder/build.py): the machine's
`architecture` as `packages: all: target: [...]`, its `mpi` and `gpu` specs appended to `specs`, the
concretizer and config it sets, and the view at /opt/view. The image gets, in this order: the apt
packages, the Spack environment installed (no Spack at all when the step has none), `post_inst.sh`,
the pip packages in the environment's Python, the environment activated for login shells.

Every value passes `grammar` first. The recipe holds no value of the step as shell text: apt and pip
read their lists from files of the build context; the step's name appears only in COPY/WORKDIR
instructions (it is a checked word).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from ci.documents import DocumentRefused, load_yaml
from ci.errors import DefinitionError, Problem
from ci.service.eflows import grammar
from ci.validation import changed_problems

EFLOWS_FILE = "eflows4hpc.yaml"
SPACK_FILES = ("spack.yaml", "spack.yml")
REQUIREMENTS = "requirements.txt"
POST_INSTALL = "post_inst.sh"
MAX_FILE_BYTES = 1024 * 1024
VIEW = "/opt/view"
CATALOG_IN_IMAGE = "/software-catalog"
CONFIG_IN_IMAGE = "/.spack"
LISTS_IN_IMAGE = "/.eflows4hpc"
STEP_KEYS = ("apt", "pip", "spack")
# The Spack environment keys a step may set (Spack's own sections); concretizer, config and view are
# replaced as eFlows4HPC's builder replaces them.
SPACK_KEYS = frozenset({"specs", "packages", "definitions", "concretizer", "config", "view", "repos", "mirrors",
                        "compilers", "include", "modules", "develop", "upstreams", "toolchains"})


class MachineLike(Protocol):
    architecture: str
    mpi: str | None
    gpu: str | None


@dataclass(frozen=True)
class Step:
    """What a step folder asks for, checked."""

    folder: Path
    source: Path  # eflows4hpc.yaml, or spack.yaml for a step that has only that
    apt: tuple[str, ...] = ()
    pip: tuple[str, ...] = ()
    pip_from: str = ""  # eflows4hpc.yaml | requirements.txt | "" (no pip packages)
    spack: dict[str, Any] | None = None
    post_install: bool = False


@dataclass(frozen=True)
class Catalog:
    """The software catalog as staged: its Spack package repository and its Spack configuration folder."""

    root: Path
    commit: str = ""
    location: str = ""

    @property
    def has_repo(self) -> bool:
        return (self.root / "repo.yaml").is_file()

    @property
    def config_files(self) -> list[Path]:
        folder = self.root / "cfg"
        return sorted(p for p in folder.glob("*.yaml") if p.is_file() and not p.is_symlink()) if folder.is_dir() \
            else []


@dataclass(frozen=True)
class Staged:
    """A staged step: the definition folder and what went into it."""

    folder: Path
    environment: dict[str, Any] | None
    recipe: str
    apt: tuple[str, ...]
    pip: tuple[str, ...]
    digest: str
    files: list[str] = field(default_factory=list)


def _load_yaml(path: Path) -> Any:
    if path.stat().st_size > MAX_FILE_BYTES:
        raise DefinitionError([Problem(path, "", "is larger than 1 MiB", "shrink the file")])
    try:
        data, source = load_yaml(path.read_text(encoding="utf-8"), name=path.name)
    except UnicodeDecodeError:
        raise DefinitionError([Problem(path, "", "is not UTF-8 text", "save the file as UTF-8")]) from None
    except DocumentRefused as exc:
        raise DefinitionError([Problem(path, "", exc.message, exc.fix)]) from None
    # apt and pip entries and the Spack body are passed on as written: a value YAML changed (2.10, yes) is refused
    changed = changed_problems(source, file=path, passed_to="the image's recipe")
    if changed:
        raise DefinitionError(changed)
    return data


def _regular(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def read_step(folder: Path) -> Step:
    """The step in `folder`, every value checked; DefinitionError lists every problem at once."""
    eflows = folder / EFLOWS_FILE
    spack_file = next((folder / name for name in SPACK_FILES if _regular(folder / name)), None)
    problems: list[Problem] = []
    if _regular(eflows):
        source = eflows
        data = _load_yaml(eflows)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise DefinitionError([Problem(eflows, "", "is not a mapping", "write `apt:`, `pip:` and `spack:` "
                                                                             "sections")])
        unknown = sorted(str(key) for key in data if key not in STEP_KEYS)
        problems += [Problem(eflows, grammar.shown_key(key), "is not a section of eflows4hpc.yaml",
                             "use apt, pip and spack") for key in unknown]
        spack_body = data.get("spack")
        if spack_body is None and spack_file is not None:
            spack_body = _spack_of(spack_file, problems)
    elif spack_file is not None:
        source, data = spack_file, {}
        spack_body = _spack_of(spack_file, problems)
    else:
        raise DefinitionError([Problem(folder, EFLOWS_FILE, "the step has neither eflows4hpc.yaml nor spack.yaml",
                                       "add eflows4hpc.yaml with apt, pip and spack sections")])
    apt_entries, wrong = grammar.check_list(data.get("apt"), source, "apt")
    problems += wrong
    apt: list[str] = []
    for index, entry in enumerate(apt_entries):
        wrong = grammar.check_apt(entry, source, f"apt[{index}]")
        problems += wrong
        if not wrong and entry not in apt:
            apt.append(entry)
    pip: list[str] = []
    pip_from = ""
    if "pip" in data and data["pip"] is not None:
        pip_entries, wrong = grammar.check_list(data["pip"], source, "pip")
        problems += wrong
        for index, entry in enumerate(pip_entries):
            requirement, wrong = grammar.pip_requirement(entry, source, f"pip[{index}]")
            problems += wrong
            if requirement:
                pip.append(requirement)
        pip_from = EFLOWS_FILE if pip else ""
    elif _regular(folder / REQUIREMENTS):
        path = folder / REQUIREMENTS
        if path.stat().st_size > MAX_FILE_BYTES:
            problems.append(Problem(path, "", "is larger than 1 MiB", "shrink the file"))
        else:
            try:
                pip, wrong = grammar.requirements_file(path.read_text(encoding="utf-8"), path)
                problems += wrong
            except UnicodeDecodeError:
                problems.append(Problem(path, "", "is not UTF-8 text", "save the file as UTF-8"))
        pip_from = REQUIREMENTS if pip else ""
    spack: dict[str, Any] | None = None
    if spack_body is not None:
        problems += _check_spack(spack_body, source)
        if isinstance(spack_body, dict):
            spack = spack_body
    post = folder / POST_INSTALL
    if post.exists() and not _regular(post):
        problems.append(Problem(post, "", "is not a regular file", "make post_inst.sh a plain file"))
    if problems:
        raise DefinitionError(problems)
    return Step(folder=folder, source=source, apt=tuple(apt), pip=tuple(pip), pip_from=pip_from, spack=spack,
                post_install=_regular(post))


def _spack_of(path: Path, problems: list[Problem]) -> Any:
    data = _load_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("spack"), dict):
        problems.append(Problem(path, "spack", "is not a Spack environment", "write `spack: {specs: [...]}`"))
        return None
    return data["spack"]


def _check_spack(body: Any, where: Path) -> list[Problem]:
    if not isinstance(body, dict):
        return [Problem(where, "spack", f"is {type(body).__name__}, not a mapping",
                        "write the Spack environment body (`specs:`, `packages:`, ...)")]
    problems = grammar.check_tree(body, where, "spack")
    if problems:
        return problems
    problems += [Problem(where, f"spack.{grammar.shown_key(key)}", "is not a Spack environment section",
                         "use specs, packages, definitions, repos, mirrors, ...") for key in body
                 if key not in SPACK_KEYS]
    specs, wrong = grammar.check_list(body.get("specs"), where, "spack.specs")
    problems += wrong
    for index, spec in enumerate(specs):
        if isinstance(spec, dict):  # a matrix entry of Spack's spec-list syntax: checked as a plain tree
            continue
        problems += grammar.check_spec(spec, where, f"spack.specs[{index}]")
    packages = body.get("packages")
    if packages is not None and not isinstance(packages, dict):
        problems.append(Problem(where, "spack.packages", "is not a mapping", "write `packages: {all: {...}}`"))
    elif isinstance(packages, dict) and packages.get("all") is not None and not isinstance(packages["all"], dict):
        problems.append(Problem(where, "spack.packages.all", "is not a mapping", "write `all: {target: [...]}`"))
    return problems


# ------------------------------------------------------------------------------------------------
# The environment eFlows4HPC's builder writes
# ------------------------------------------------------------------------------------------------


def environment(step: Step, machine: MachineLike, *, catalog: bool = False) -> dict[str, Any] | None:
    """The step's Spack environment for the machine ({"spack": {...}}), or None for a step without Spack.

    As eFlows4HPC's builder: target, MPI and GPU of the machine; `concretizer`, `config` and `view` set.
    Where upstream loses the target (a `packages:` section without `all:`), the target is set anyway. With a
    catalog, its package repository is listed in `repos` (upstream adds it through the catalog's repos.yaml).
    """
    if step.spack is None:
        return None
    spack = copy.deepcopy(step.spack)
    packages = spack.get("packages")
    if not isinstance(packages, dict):
        packages = {}
    spack["packages"] = packages
    everything = packages.get("all")
    if not isinstance(everything, dict):
        everything = {}
    packages["all"] = everything
    everything["target"] = [machine.architecture]
    specs = list(spack.get("specs") or [])
    for extra in (machine.mpi, machine.gpu):
        if extra:
            specs.append(extra)
    spack["specs"] = specs
    spack["concretizer"] = {"unify": True, "reuse": True,
                            "targets": {"granularity": "microarchitectures", "host_compatible": False}}
    spack["config"] = {"shared_linking": {"type": "runpath"}}
    spack["view"] = VIEW
    if catalog:
        repos = [repo for repo in (spack.get("repos") or []) if repo != CATALOG_IN_IMAGE] \
            if isinstance(spack.get("repos"), list) else []
        spack["repos"] = [CATALOG_IN_IMAGE, *repos]
    return {"spack": spack}


# ------------------------------------------------------------------------------------------------
# The recipe
# ------------------------------------------------------------------------------------------------


def recipe(step_name: str, *, base_image: str, spack: bool, apt: bool, pip: bool, post_install: bool,
           catalog: bool, title: str) -> str:
    """The Dockerfile of a staged step. Fixed text plus checked words (the step's name, the base image)."""
    lines = [
        f"# {title}",
        "# Rendered by containers-ci (ci/service/eflows/step.py) from eFlows4HPC's step format: apt packages,",
        "# the Spack environment, post_inst.sh, pip packages in the environment's Python, activation.",
        f"FROM {base_image}",
        'LABEL org.opencontainers.image.source="https://github.com/eflows4hpc/workflow-registry"',
        f"COPY step /{step_name}",
        f"COPY eflows4hpc {LISTS_IN_IMAGE}",
    ]
    if catalog and spack:
        lines.append(f"COPY software-catalog {CATALOG_IN_IMAGE}")
    if spack:
        lines.append(f"COPY spack-config {CONFIG_IN_IMAGE}")
    lines.append(f"WORKDIR /{step_name}")
    if apt:
        lines.append(f"RUN export DEBIAN_FRONTEND=noninteractive && apt-get update \\\n"
                     f" && xargs -r -a {LISTS_IN_IMAGE}/apt.txt apt-get install -y --no-install-recommends \\\n"
                     " && apt-get clean && rm -rf /var/lib/apt/lists/*")
    if spack:
        scope = f"spack -C {CONFIG_IN_IMAGE}"
        lines.append(f"RUN {scope} compiler find && {scope} external find \\\n"
                     f" && {scope} -e . concretize && {scope} -e . install --fail-fast --no-checksum --keep-stage")
    if post_install:
        lines.append("RUN bash ./post_inst.sh")
    if spack:
        lines.append(f"RUN spack -C {CONFIG_IN_IMAGE} gc -y \\\n"
                     " && spack env activate --sh -d . > /etc/profile.d/z10_spack_environment.sh \\\n"
                     " && echo 'export PATH=/usr/local/bin:$PATH' >> /etc/profile.d/z10_spack_environment.sh")
    if pip:
        profile = "/etc/profile.d/z10_spack_environment.sh"
        activate = f"if [ -f {profile} ]; then . {profile}; fi"
        lines.append(f"RUN {activate} \\\n"
                     " && if ! python3 -m pip --version >/dev/null 2>&1; then echo 'the image has no pip: add "
                     "py-pip to the spack specs or python3-pip to apt' >&2; exit 1; fi \\\n"
                     f" && PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir --no-input "
                     f"-r {LISTS_IN_IMAGE}/pip.txt")
    lines += ['ENTRYPOINT ["/bin/bash", "--rcfile", "/etc/profile", "-l", "-c", "$*", "--"]', 'CMD ["/bin/bash"]']
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# Staging: the definition folder the pipeline builds (and what `--render` shows)
# ------------------------------------------------------------------------------------------------


def _copy_tree(source: Path, target: Path) -> None:
    """Regular files and folders only (a symbolic link in a step is refused when the step is exported)."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in sorted(source.iterdir()):
        if entry.is_symlink():
            continue
        if entry.is_dir():
            _copy_tree(entry, target / entry.name)
        elif entry.is_file():
            shutil.copy2(entry, target / entry.name)


def stage(step: Step, machine: MachineLike, folder: Path, *, step_name: str, base_image: str, version: str,
          platform: str, catalog: Catalog | None = None, source: dict[str, Any] | None = None,
          title: str = "") -> Staged:
    """Write the definition folder: Dockerfile, container.yaml, step/ (spack.yaml rendered), eflows4hpc/ (the
    apt and pip lists, source.json: where it came from, at which commits), software-catalog/, spack-config/."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    _copy_tree(step.folder, folder / "step")
    env = environment(step, machine, catalog=catalog is not None and catalog.has_repo)
    for name in SPACK_FILES:
        (folder / "step" / name).unlink(missing_ok=True)
    if env is not None:
        (folder / "step" / "spack.yaml").write_text(yaml.safe_dump(env, default_flow_style=False, sort_keys=False),
                                                    encoding="utf-8")
    lists = folder / "eflows4hpc"
    lists.mkdir()
    (lists / "apt.txt").write_text("".join(f"{name}\n" for name in step.apt), encoding="utf-8")
    (lists / "pip.txt").write_text("".join(f"{name}\n" for name in step.pip), encoding="utf-8")
    (lists / "source.json").write_text(json.dumps(source or {}, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    config = folder / "spack-config"
    config.mkdir()
    (config / ".keep").write_text("", encoding="utf-8")
    if catalog is not None:
        for path in catalog.config_files:
            shutil.copy2(path, config / path.name)
        if catalog.has_repo:
            target = folder / "software-catalog"
            target.mkdir()
            shutil.copy2(catalog.root / "repo.yaml", target / "repo.yaml")
            if (catalog.root / "packages").is_dir():
                _copy_tree(catalog.root / "packages", target / "packages")
    text = recipe(step_name, base_image=base_image, spack=env is not None, apt=bool(step.apt), pip=bool(step.pip),
                  post_install=step.post_install, catalog=catalog is not None and catalog.has_repo,
                  title=title or step_name)
    (folder / "Dockerfile").write_text(text, encoding="utf-8")
    (folder / "container.yaml").write_text(yaml.safe_dump({"version": version, "platforms": [platform],
                                                           "tests": []}, sort_keys=False), encoding="utf-8")
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    return Staged(folder=folder, environment=env, recipe=text, apt=step.apt, pip=step.pip,
                  digest=tree_digest(folder), files=files)


def tree_digest(folder: Path) -> str:
    """SHA-256 over the staged folder's paths, modes and bytes (what decides the image)."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            relative = str(path.relative_to(folder))
            digest.update(relative.encode("utf-8") + b"\0" + oct(os.stat(path).st_mode & 0o111).encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
