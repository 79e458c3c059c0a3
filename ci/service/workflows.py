"""Workflow requests (eFlows4HPC): a step of the workflow registry, made concrete for one machine.

The registry is a folder laid out as `<workflow>/<step>/spack.yaml` (a version of a step, when
asked for, as `<workflow>/<step>/<version>/spack.yaml`). The machine's target, MPI and GPU become
Spack constraints (`packages: all: require: target=...`, `mpi: require: ...`, the GPU runtime as
a variant and a version requirement), and the result is written as a Spack definition into a
definitions tree of its own, which the Spack definition kind builds.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ci.definitions.kinds import KINDS, NotHandled
from ci.documents import DocumentRefused, load_yaml
from ci.errors import DefinitionError, Problem
from ci.service.models import ARCH_OF_PLATFORM, Machine, WorkflowRequest
from ci.validation import changed_problems

ENVIRONMENT_FILES = ("spack.yaml", "spack.yml")
MAX_ENVIRONMENT_BYTES = 1024 * 1024
SPACK_KIND_MISSING = ("the Spack definition kind is not available in this installation, and workflow steps are "
                      "Spack environments; ask the service's operator to update containers-ci")


@dataclass(frozen=True)
class WorkflowStep:
    """A resolved step: its environment file, the constrained environment, and the image name."""

    source: Path
    environment: dict[str, Any]
    image: str
    arch: str
    version: str

    def text(self) -> str:
        return yaml.safe_dump(self.environment, sort_keys=False)

    def digest(self) -> str:
        return hashlib.sha256(self.text().encode("utf-8")).hexdigest()


def spack_kind_available() -> bool:
    """True when the definitions registry builds Spack environments (not only recognises them)."""
    kind = KINDS.get("spack")
    return kind is not None and not isinstance(kind, NotHandled)


def image_name(workflow: str, step: str) -> str:
    """A definition name (`[a-z0-9][a-z0-9._-]*`) for a workflow step."""
    name = re.sub(r"[^a-z0-9._-]+", "-", f"{workflow}-{step}".lower()).strip("-.")
    return name or "workflow-step"


def resolve(registry: Path | None, request: WorkflowRequest) -> WorkflowStep:
    """Find the step's environment in the registry and add the machine's constraints; DefinitionError if not."""
    where = Path("request body")
    if registry is None:
        raise DefinitionError([Problem(where, "workflow", "this service has no workflow registry",
                                       "ask for a definition instead, or set ci.service.workflow_registry")])
    root = registry.resolve()
    step = root / request.workflow / request.step_id
    version = request.version or "latest"
    if version != "latest":
        step = step / version
    if not (root / request.workflow).is_dir():
        raise DefinitionError([Problem(where, "workflow", f"no workflow '{request.workflow}' in the registry",
                                       "use the name of a folder of the workflow registry")])
    if not step.is_dir() or root not in step.resolve().parents:
        field = "version" if version != "latest" and (root / request.workflow / request.step_id).is_dir() else "step_id"
        which = f"'{request.step_id}'" + (f" in version '{version}'" if field == "version" else "")
        raise DefinitionError([Problem(where, field, f"workflow '{request.workflow}' has no step {which}",
                                       "use a step folder of the workflow in the registry")])
    found = next((step / name for name in ENVIRONMENT_FILES if (step / name).is_file()), None)
    if found is None:
        raise DefinitionError([Problem(step, "spack.yaml", "the step has no Spack environment file",
                                       "add spack.yaml to the step's folder in the registry")])
    if found.stat().st_size > MAX_ENVIRONMENT_BYTES:
        raise DefinitionError([Problem(found, "", "the environment file is larger than 1 MiB", "shrink it")])
    try:
        data, source = load_yaml(found.read_text(encoding="utf-8"), name=found.name)
    except UnicodeDecodeError as exc:
        raise DefinitionError([Problem(found, "", f"not readable YAML ({exc})", "fix the file's syntax")]) from None
    except DocumentRefused as exc:
        raise DefinitionError([Problem(found, "", exc.message, exc.fix)]) from None
    changed = changed_problems(source, file=found, under=("spack",), passed_to="spack.yaml")
    if changed:
        raise DefinitionError(changed)
    if not isinstance(data, dict) or not isinstance(data.get("spack"), dict) or not data["spack"].get("specs"):
        raise DefinitionError([Problem(found, "spack.specs", "not a Spack environment with specs",
                                       "write `spack: {specs: [...]}`")])
    return WorkflowStep(source=found, environment=constrained(data, request.machine),
                        image=image_name(request.workflow, request.step_id),
                        arch=ARCH_OF_PLATFORM[request.machine.platform], version=version)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def constrained(environment: dict[str, Any], machine: Machine) -> dict[str, Any]:
    """The environment with the machine's target, MPI and GPU added as Spack requirements."""
    result = copy.deepcopy(environment)
    spack = result["spack"]
    packages = spack.setdefault("packages", {}) or {}
    spack["packages"] = packages
    everything = packages.setdefault("all", {}) or {}
    packages["all"] = everything
    everything["require"] = [*_as_list(everything.get("require")), f"target={machine.architecture}"]
    if machine.mpi:
        mpi = packages.setdefault("mpi", {}) or {}
        packages["mpi"] = mpi
        mpi["require"] = [*_as_list(mpi.get("require")), machine.mpi]
    if machine.gpu:
        runtime, _, version = machine.gpu.partition("@")
        everything["variants"] = [*_as_list(everything.get("variants")), f"+{runtime}"]
        if version:
            package = packages.setdefault("cuda" if runtime == "cuda" else "hip", {}) or {}
            packages["cuda" if runtime == "cuda" else "hip"] = package
            package["require"] = [*_as_list(package.get("require")), f"@{version}"]
    return result


def write_definition(tree: Path, step: WorkflowStep) -> Path:
    """Write the constrained environment as a Spack definition `<tree>/<arch>/<image>/spack.yaml`."""
    folder = tree / step.arch / step.image
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spack.yaml").write_text(step.text(), encoding="utf-8")
    return folder


def machine_key(machine: Machine) -> dict[str, Any]:
    return dict(json.loads(machine.model_dump_json()))
