"""The web page at `/`: your builds with status, a live log tail, download links, and request forms.

Server-rendered HTML (every value escaped) plus one small script file, no front-end build step.
The browser authenticates with HTTP basic (your user name and token); the script talks to the
same API as every other client, and writes only text nodes (never HTML) into the page.
"""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from ci import api
from ci.service import crud
from ci.service.api.deps import CallerDep, ServiceDep
from ci.service.views import view

router = APIRouter(tags=["web"], include_in_schema=False)
STATIC = Path(__file__).resolve().parents[2] / "static"


def _definitions(service: object) -> list[tuple[str, str]]:
    settings = service.settings.pipeline  # type: ignore[attr-defined]
    try:
        catalog = api.catalog(settings)
    except Exception:
        return []
    return sorted({(spec.name, spec.arch) for spec in catalog.images.values()})


@router.get("/", response_class=HTMLResponse)
async def page(request: Request, caller: CallerDep, service: ServiceDep) -> HTMLResponse:
    rows = await run_in_threadpool(crud.listing, service.db, caller)
    names = await run_in_threadpool(_definitions, service)
    e = html.escape
    table = []
    for record, build, shared in rows:
        item = view(request, record, build, shared)
        link = f'<a href="{e(item.download_url)}">{e(item.filename or "")}</a>' if item.download_url else ""
        table.append(f'<tr data-id="{e(item.id)}" data-status="{e(item.status.value)}"><td><button type="button" '
                     f'class="show" data-id="{e(item.id)}">{e(item.id[:12])}</button></td><td>{e(item.definition)}'
                     f'</td><td class="status">{e(item.status.value)}</td><td>{e(item.message)}</td>'
                     f'<td>{e(item.created)}</td><td class="download">{link}</td></tr>')
    options = "".join(f'<option value="{e(name)}" data-arch="{e(arch)}">{e(name)} ({e(arch)})</option>'
                      for name, arch in names)
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>containers-ci image creation</title>
<link rel="stylesheet" href="/ui/style.css"><script src="/ui/app.js" defer></script></head>
<body><header><h1>Image creation</h1>
<p>signed in as <b id="user">{e(caller.name)}</b>{" (admin)" if caller.admin else ""}</p></header>
<section><h2>Request an image</h2>
<form id="definition-form"><label>Definition <select id="definition" name="definition">{options}</select></label>
<label><input type="checkbox" id="force" name="force"> rebuild even if built</label>
<button type="submit" id="request">Request</button></form>
<details><summary>A workflow step (eFlows4HPC)</summary>
<form id="workflow-form"><label>Workflow <input id="workflow" required pattern="[A-Za-z0-9][A-Za-z0-9_.\\-]*"></label>
<label>Step <input id="step_id" required pattern="[A-Za-z0-9][A-Za-z0-9_.\\-]*"></label>
<label>Platform <select id="platform"><option>linux/amd64</option><option>linux/arm64</option></select></label>
<label>Architecture <input id="architecture" value="x86_64" required></label>
<label>Engine <select id="container_engine"><option>singularity</option><option>apptainer</option>
<option>charliecloud</option><option>docker</option></select></label>
<label>MPI <input id="mpi" placeholder="openmpi@4"></label><label>GPU <input id="gpu" placeholder="cuda@12"></label>
<button type="submit">Request step</button></form></details>
<p id="outcome" role="status"></p></section>
<section><h2>Your builds</h2><table><thead><tr><th>id</th><th>image</th><th>status</th><th>message</th>
<th>requested</th><th>download</th></tr></thead><tbody id="builds-body">{"".join(table)}</tbody></table></section>
<section><h2>Log <span id="log-id"></span></h2><pre id="log"></pre></section>
</body></html>"""
    return HTMLResponse(body, headers={"Cache-Control": "no-store"})


@router.get("/ui/{name}")
async def static(name: str, caller: CallerDep) -> Response:
    kinds = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
    if name not in kinds:
        return Response("not found", status_code=404, media_type="text/plain")
    return Response((STATIC / name).read_bytes(), media_type=kinds[name], headers={"Cache-Control": "no-cache"})
