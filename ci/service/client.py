"""A client of a running service (`inv service.client`), with httpx.

The token comes from $CI_SERVICE_TOKEN (never a flag: argv is visible to every user of the
machine); with $CI_SERVICE_USER too it is sent as HTTP basic, else as a bearer token.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from ci.errors import CIError

TOKEN_VARIABLE = "CI_SERVICE_TOKEN"
USER_VARIABLE = "CI_SERVICE_USER"


class Client:
    def __init__(self, url: str, token: str | None = None, user: str | None = None, timeout: float = 30.0):
        token = token or os.environ.get(TOKEN_VARIABLE)
        if not token:
            raise CIError(f"no token: set ${TOKEN_VARIABLE} (`inv service.token --user NAME` on the server makes one)")
        user = user or os.environ.get(USER_VARIABLE)
        auth: httpx.Auth | None = httpx.BasicAuth(user, token) if user else None
        headers = {} if user else {"Authorization": f"Bearer {token}"}
        self.http = httpx.Client(base_url=url.rstrip("/"), auth=auth, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CIError(f"the service at {self.http.base_url} does not answer: {exc}") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise CIError(f"{method} {path}: {response.status_code} {detail}")
        return response

    def build(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", "/build/", json=body).json())

    def status(self, build_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/build/{build_id}").json())

    def cancel(self, build_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/build/{build_id}/cancel").json())

    def logs(self, build_id: str, *, follow: bool = False, offset: int = 0) -> Iterator[str]:
        if not follow:
            yield self._call("GET", f"/build/{build_id}/logs", params={"offset": str(offset)}).text
            return
        try:
            with self.http.stream("GET", f"/build/{build_id}/logs", params={"offset": str(offset), "follow": "true"},
                                  timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    raise CIError(f"GET logs: {response.status_code} {response.text}")
                yield from response.iter_text()
        except httpx.HTTPError as exc:
            raise CIError(f"the log stream broke off: {exc}") from None

    def download(self, build_id: str, folder: Path) -> Path:
        """The build's image file into `folder`, checked against its SHA-256 before it gets its name."""
        status = self.status(build_id)
        if status.get("status") != "FINISHED" or not status.get("download_url"):
            raise CIError(f"build {build_id} is {status.get('status')}, nothing to download yet")
        filename = str(status["filename"])
        if "/" in filename or filename.startswith("."):
            raise CIError(f"the service named the file {filename!r}; refusing to write it")
        folder.mkdir(parents=True, exist_ok=True)
        target, partial = folder / filename, folder / f".{filename}.part"
        digest = hashlib.sha256()
        try:
            with self.http.stream("GET", f"/images/download/{filename}", timeout=None) as response:
                if response.status_code != 200:
                    response.read()
                    raise CIError(f"download: {response.status_code} {response.text}")
                with partial.open("wb") as handle:
                    for chunk in response.iter_bytes(1024 * 1024):
                        digest.update(chunk)
                        handle.write(chunk)
        except httpx.HTTPError as exc:
            partial.unlink(missing_ok=True)
            raise CIError(f"the download broke off: {exc}") from None
        if digest.hexdigest() != status.get("sha256"):
            partial.unlink(missing_ok=True)
            raise CIError(f"the downloaded file's sha256 {digest.hexdigest()} is not the build's "
                          f"{status.get('sha256')}")
        partial.replace(target)
        return target
