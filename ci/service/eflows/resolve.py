"""The service's side of an eFlows4HPC request: staged, planned, keyed; or only rendered (dry run).

`resolve_workflow` is what `Service.resolve` runs for a workflow body: it stages the step (see
`registry.prepare`), asks the pipeline for the staged definition's digest and tag, and returns the
build's content key (digest + machine + push target). `render` stages into a folder of the
caller's choice and builds nothing (`inv service.request --render DIR`, `POST /build?dry_run=true`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ci.errors import DefinitionError, Problem
from ci.service.eflows.registry import BASE, EflowsSettings, Prepared, check_path, stage_request
from ci.service.models import ARCH_OF_PLATFORM, WorkflowRequest

if TYPE_CHECKING:
    from ci.service.crud import Resolved
    from ci.service.service import Service

BODY = Path("request body")
RENDERED = ("Dockerfile", "container.yaml", "step/spack.yaml", "eflows4hpc/apt.txt", "eflows4hpc/pip.txt",
            "eflows4hpc/source.json")


def _names(body: WorkflowRequest) -> tuple[str | None, str | None]:
    if body.workflow == BASE and body.step_id == BASE:
        return None, None
    if BASE in (body.workflow, body.step_id):
        raise DefinitionError([Problem(BODY, "workflow" if body.workflow == BASE else "step_id",
                                       "BASE names the base image only as workflow BASE with step_id BASE",
                                       "send both as BASE, or name a step of the registry")])
    return body.workflow, body.step_id


def push_target(settings: EflowsSettings, body: WorkflowRequest, image: str, version: str) -> str | None:
    """Where `push` puts the image (`<images_prefix><name>:<version>`), or None (not pushed)."""
    wanted = body.push if body.push is not None else settings.images_prefix is not None
    if not wanted:
        return None
    if settings.images_prefix is None:
        raise DefinitionError([Problem(BODY, "push", "this service has no registry to push to "
                                       "(ci.service.images_prefix is not set)",
                                       'send "push": false, or ask the operator to configure images_prefix')])
    return f"{settings.images_prefix}{image}:{version}"


def step_path(settings: EflowsSettings, body: WorkflowRequest, admin: bool) -> Path | None:
    return check_path(settings, body.path, admin=admin) if body.path is not None else None


def resolve_workflow(service: Service, body: WorkflowRequest, *, admin: bool) -> Resolved:
    """Stage the step and plan it: the Resolved build of the request (PermissionError for a refused `path`)."""
    from ci.service import builder
    from ci.service.crud import Resolved
    from ci.service.eflows.registry import prepare

    settings: EflowsSettings = service.settings.eflows
    workflow, step_id = _names(body)
    version = body.version or "latest"
    arch = ARCH_OF_PLATFORM[body.machine.platform]
    path = step_path(settings, body, admin)
    engine, site = service._engine_for(body.machine.container_engine, "machine.container_engine")
    prepared = prepare(settings, service.settings.state_dir / "workflows", workflow=workflow, step_id=step_id,
                       version=version, machine=body.machine, arch=arch, platform=body.machine.platform, path=path)
    image = builder.planned_image(builder.with_tree(service.settings.pipeline, prepared.tree, arch, workflow=True),
                                  prepared.image)
    target = push_target(settings, body, prepared.image, version)
    machine = dict(json.loads(body.machine.model_dump_json()))
    source = {**prepared.source, "local_tag": image.tag, "push": target}
    key = builder.build_key("workflow", image.digest, {**machine, "site_engine": site, "push": target})
    return Resolved(kind="workflow", image=prepared.image, arch=arch, engine=engine, machine=machine,
                    definitions=str(prepared.tree), digest=image.digest, image_id=target or image.tag, key=key,
                    force=body.force, workflow=body.workflow, step_id=body.step_id, version=body.version,
                    source=source)


def render(settings: EflowsSettings, body: WorkflowRequest, output: Path, *, admin: bool) -> Prepared:
    """Stage the request into `output` (what would be built), building nothing."""
    workflow, step_id = _names(body)
    return stage_request(settings, workflow=workflow, step_id=step_id, version=body.version or "latest",
                         machine=body.machine, platform=body.machine.platform, output=output,
                         path=step_path(settings, body, admin))


def rendered_files(prepared: Prepared) -> dict[str, Any]:
    """The dry run's answer: the staged folder's main files as text, and every file's name."""
    files = {}
    for name in RENDERED:
        path = prepared.staged.folder / name
        if path.is_file():
            files[name] = path.read_text(encoding="utf-8")
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode("utf-8")).hexdigest()
    return {"dry_run": True, "image": prepared.image, "digest": prepared.staged.digest, "render_digest": digest,
            "source": prepared.source, "apt": list(prepared.staged.apt), "pip": list(prepared.staged.pip),
            "environment": prepared.staged.environment, "files": files, "staged": prepared.staged.files}


def dry_run(service: Service, body: Any, admin: bool) -> dict[str, Any]:
    """`POST /build?dry_run=true`: the rendered files of a workflow request; nothing is recorded or built."""
    import shutil
    import tempfile

    if not isinstance(body, WorkflowRequest) or service.settings.eflows is None:
        raise DefinitionError([Problem(BODY, "dry_run", "a dry run renders eFlows4HPC workflow requests only",
                                       "send a workflow request, or leave dry_run out")])
    scratch = Path(tempfile.mkdtemp(prefix="cic-dry-run-"))
    try:
        return rendered_files(render(service.settings.eflows, body, scratch / "step", admin=admin))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
