"""A workflow request made concrete: the step fetched at a commit, the catalog, the staged definition.

`prepare` is what the service's `resolve` calls for an eFlows4HPC request: the registry's version is
resolved to a commit, the step exported from it (or copied from an allowed server folder with `path`),
read and checked (`step.read_step`), and staged with the catalog as a Docker definition under
`<state>/workflows/<digest24>/<arch>/<image>/`. The staged folder's digest covers the step, the
rendered environment, the recipe and `source.json` (registry, version, commit, catalog commit), so
the same step at the same commits is one build and a new commit is a new one.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ci.errors import ConfigError, DefinitionError, Problem
from ci.service.eflows import git, grammar, step
from ci.service.eflows.step import Catalog, MachineLike, Staged

BODY = Path("request body")
BASE = "BASE"


@dataclass(frozen=True)
class EflowsSettings:
    """The eFlows4HPC part of `ci.service` (see docs/eflows4hpc.md)."""

    registry: git.Location | None
    default_branch: str
    catalog: git.Location | None
    catalog_branch: str
    cache: Path
    timeout: float
    base_image: str
    images_prefix: str | None
    allowed_paths: tuple[Path, ...] = ()
    session_seconds: int = 3600

    def cache_of(self) -> git.GitCache:
        return git.GitCache(self.cache / "git", self.timeout)


@dataclass(frozen=True)
class Prepared:
    """A staged request: where the definition is, its image name, its source record."""

    tree: Path
    image: str
    staged: Staged
    source: dict[str, Any]


def image_name(workflow: str | None, step_id: str | None, machine: MachineLike) -> str:
    """eFlows4HPC's image name `<workflow>_<step>_<arch>_<mpi|nompi>_<gpu|nogpu>`, lower-case, as a definition
    name ([a-z0-9][a-z0-9._-]*, at most 128 characters)."""
    if workflow is None:
        return "eflows4hpc_base"
    parts = [workflow, step_id or "", machine.architecture, (machine.mpi or "nompi").replace("@", "_"),
             (machine.gpu or "nogpu").replace("@", "_")]
    name = re.sub(r"[^a-z0-9._-]+", "-", "_".join(parts).lower()).strip("-._")
    return (name or "workflow-step")[:128].rstrip("-._")


def check_path(settings: EflowsSettings, value: str, *, admin: bool) -> Path:
    """A step folder on the server (`path`): only for admins, only below ci.service.eflows_allowed_paths."""
    if not admin:
        raise PermissionError("`path` (a step folder on the server) is for admin tokens only; name the step in the "
                              "workflow registry instead (workflow, step_id, version)")
    candidate = Path(value)
    if not candidate.is_absolute() or ".." in candidate.parts or any(ord(ch) < 32 for ch in value):
        raise DefinitionError([Problem(BODY, "path", "is not an absolute path without '..'",
                                       "give the step folder's absolute path on the server")])
    resolved = candidate.resolve()
    roots = [root.resolve() for root in settings.allowed_paths]
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        raise PermissionError(f"`path` {value} is not below a folder this service allows "
                              "(ci.service.eflows_allowed_paths); ask the operator")
    if not resolved.is_dir():
        raise DefinitionError([Problem(BODY, "path", f"{value} is not a folder on the server",
                                       "give the step folder's path")])
    return resolved


def fetch_step(settings: EflowsSettings, workflow: str, step_id: str, version: str, target: Path) -> dict[str, Any]:
    """Copy the step `workflow/step_id` at `version` into `target`; the source record (commit, ...)."""
    where = settings.registry
    if where is None:
        raise DefinitionError([Problem(BODY, "workflow", "this service has no workflow registry",
                                       "ask for a definition instead, or set ci.service.workflow_registry")])
    if where.git:
        branch = settings.default_branch if version == "latest" else version
        cache = settings.cache_of()
        commit = cache.resolve(where, branch)
        if not cache.has_tree(where, commit, workflow):
            raise DefinitionError([Problem(BODY, "workflow", f"no workflow '{workflow}' in the registry at {branch}",
                                           "use the name of a folder of the workflow registry")])
        if not cache.has_tree(where, commit, f"{workflow}/{step_id}"):
            raise DefinitionError([Problem(BODY, "step_id", f"workflow '{workflow}' has no step '{step_id}' at "
                                           f"{branch}", "use a step folder of the workflow in the registry")])
        cache.export(where, commit, f"{workflow}/{step_id}", target)
        return {"registry": where.shown, "version": version, "ref": branch, "commit": commit}
    root = Path(where.url).resolve()
    folder = root / workflow / step_id
    if version != "latest":
        folder = folder / version  # the older layout: versions as subfolders of a plain folder
    if not (root / workflow).is_dir():
        raise DefinitionError([Problem(BODY, "workflow", f"no workflow '{workflow}' in the registry",
                                       "use the name of a folder of the workflow registry")])
    if not folder.is_dir() or not folder.resolve().is_relative_to(root):
        named = "version" if version != "latest" and (root / workflow / step_id).is_dir() else "step_id"
        which = f"'{step_id}'" + (f" in version '{version}'" if named == "version" else "")
        raise DefinitionError([Problem(BODY, named, f"workflow '{workflow}' has no step {which}",
                                       "use a step folder of the workflow in the registry")])
    step._copy_tree(folder, target)
    return {"registry": where.shown, "version": version, "ref": "", "commit": ""}


def fetch_catalog(settings: EflowsSettings) -> Catalog | None:
    """The software catalog at its configured branch (exported once per commit into the cache)."""
    where = settings.catalog
    if where is None:
        return None
    if not where.git:
        return Catalog(root=Path(where.url), commit="", location=where.shown)
    cache = settings.cache_of()
    commit = cache.resolve(where, settings.catalog_branch, field="software_catalog")
    folder = settings.cache / "catalogs" / commit
    if not folder.is_dir():
        partial = settings.cache / "catalogs" / f".{commit}.{uuid.uuid4().hex[:8]}"
        cache.export(where, commit, "", partial)
        try:
            partial.rename(folder)
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)  # another request exported it first
    return Catalog(root=folder, commit=commit, location=where.shown)


def stage_request(settings: EflowsSettings, *, workflow: str | None, step_id: str | None, version: str,
                  machine: MachineLike, platform: str, output: Path, path: Path | None = None) -> Prepared:
    """Fetch and stage one request into `output` (a definition folder; replaced if present)."""
    image = image_name(workflow, step_id, machine)
    with tempfile.TemporaryDirectory(prefix="cic-step-", dir=_scratch(settings)) as scratch:
        folder = Path(scratch) / "step"
        if workflow is None:  # BASE: the configured base image itself
            folder.mkdir()
            (folder / step.EFLOWS_FILE).write_text("{}\n", encoding="utf-8")
            source: dict[str, Any] = {"base_image": settings.base_image}
        elif path is not None:
            step._copy_tree(path, folder)
            source = {"path": str(path), "version": version}
        else:
            source = fetch_step(settings, workflow, step_id or "", version, folder)
        read = step.read_step(folder)
        catalog = fetch_catalog(settings) if read.spack is not None else None
        if catalog is not None:
            source["catalog"] = {"location": catalog.location, "branch": settings.catalog_branch,
                                 "commit": catalog.commit}
        source["machine"] = {"architecture": machine.architecture, "mpi": machine.mpi, "gpu": machine.gpu,
                             "platform": platform}
        source["base_image"] = settings.base_image
        title = f"{workflow}/{step_id} ({version}) for {machine.architecture}" if workflow else "eFlows4HPC base"
        staged = step.stage(read, machine, output, step_name=step_id or "base", base_image=settings.base_image,
                            version=tag_of_version(version), platform=platform, catalog=catalog, source=source,
                            title=title)
    return Prepared(tree=output, image=image, staged=staged, source=source)


def tag_of_version(version: str) -> str:
    """The image version of a registry version: a branch `release/2.0` is tagged `release-2.0`.

    An image tag has no '/' or '+'; the staged definition's digest (which covers the commit) keeps two
    versions that map to the same tag apart in every `<version>-<digest12>` tag.
    """
    tag = re.sub(r"[^A-Za-z0-9._-]", "-", version)[:64]
    return tag if re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z", tag) else "latest"


def _scratch(settings: EflowsSettings) -> str:
    folder = settings.cache / "scratch"
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder)


def prepare(settings: EflowsSettings, workflows_dir: Path, *, workflow: str | None, step_id: str | None,
            version: str, machine: MachineLike, arch: str, platform: str, path: Path | None = None) -> Prepared:
    """Stage into `<workflows_dir>/<digest24>/<arch>/<image>/` (the definitions tree the pipeline builds)."""
    image = image_name(workflow, step_id, machine)
    workflows_dir.mkdir(parents=True, exist_ok=True)
    scratch = workflows_dir / f".staging-{uuid.uuid4().hex}"
    try:
        prepared = stage_request(settings, workflow=workflow, step_id=step_id, version=version, machine=machine,
                                 platform=platform, output=scratch / arch / image, path=path)
        tree = workflows_dir / prepared.staged.digest[:24]
        if not tree.exists():
            with contextlib.suppress(OSError):  # the same content was staged by another request at the same moment
                scratch.rename(tree)
        final = tree / arch / image
        return Prepared(tree=tree, image=image, staged=step.Staged(
            folder=final, environment=prepared.staged.environment, recipe=prepared.staged.recipe,
            apt=prepared.staged.apt, pip=prepared.staged.pip, digest=prepared.staged.digest,
            files=prepared.staged.files), source=prepared.source)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def settings_from(section: dict[str, Any], *, project_dir: Path, state_dir: Path, spack_builder_image: str,
                  registry: str | None) -> EflowsSettings:
    """EflowsSettings from the checked `ci.service` keys (ServiceConfig) and the pipeline's settings."""
    reg = git.location(registry, project_dir, "ci.service.workflow_registry") if registry else None
    catalog_value = section.get("software_catalog")
    catalog = git.location(catalog_value, project_dir, "ci.service.software_catalog") if catalog_value else None
    branch = str(section.get("workflow_registry_branch") or "main")
    catalog_branch = str(section.get("software_catalog_branch") or "main")
    for key, value in (("workflow_registry_branch", branch), ("software_catalog_branch", catalog_branch)):
        if not grammar.VERSION.match(value):
            raise ConfigError(f"ci.service.{key}: {value!r} is not a branch name")
    allowed = tuple(Path(p) for p in section.get("eflows_allowed_paths") or ())
    if any(not p.is_absolute() for p in allowed):
        raise ConfigError("ci.service.eflows_allowed_paths: every entry must be an absolute folder")
    return EflowsSettings(registry=reg, default_branch=branch, catalog=catalog, catalog_branch=catalog_branch,
                          cache=state_dir / "eflows", timeout=float(section.get("git_timeout") or 120.0),
                          base_image=str(section.get("base_image") or spack_builder_image),
                          images_prefix=section.get("images_prefix") or None, allowed_paths=allowed,
                          session_seconds=int(section.get("session_seconds") or 3600))
