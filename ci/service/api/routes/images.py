"""Downloads from the image store: GET and HEAD, byte ranges, an ETag that is the file's SHA-256."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from ci.service import crud
from ci.service.api.deps import CallerDep, ServiceDep
from ci.service.api.errors import problem
from ci.service.models import ProblemResponse

router = APIRouter(tags=["images"])
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
          "description": "the image file (Range requests answered with 206)"},
    206: {"description": "the requested byte range"},
    304: {"description": "not modified (If-None-Match matched the ETag)"},
    401: {"model": ProblemResponse, "description": "no token, or not a valid one"},
    404: {"model": ProblemResponse, "description": "no such file among your finished builds"},
    416: {"description": "the range is outside the file"},
}


async def download(filename: str, request: Request, caller: CallerDep, service: ServiceDep) -> Response:
    """The image file of one of your finished builds, by the name its status gives (`filename`)."""
    path = service.store.path(filename)
    if path is None:
        raise problem(404, "no such image file", "use the filename of a FINISHED build (GET /build/{id})")
    try:
        build = await run_in_threadpool(crud.download, service.db, caller, filename)
    except crud.NotFound:
        raise problem(404, "no such image file", "use the filename of a FINISHED build (GET /build/{id})") from None
    etag = f'"{build.sha256}"'
    if etag in [tag.strip() for tag in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers={"ETag": etag})
    return FileResponse(path, media_type="application/octet-stream", filename=filename,
                        headers={"ETag": etag, "Cache-Control": "private, max-age=0"})


router.add_api_route("/images/download/{filename}", download, methods=["GET"], response_class=Response,
                     responses=RESPONSES, name="download")
router.add_api_route("/images/download/{filename}", download, methods=["HEAD"], response_class=Response,
                     responses=RESPONSES, name="download_head")
