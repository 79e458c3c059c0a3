"""A small client of the OCI distribution API (the registry's HTTP API), shared by the `registry` and
`oras` publishers.

Why our own and not `docker push` or the ORAS SDK: publishing copies an image that is already in
the site's registry to another registry blob by blob (a HEAD first, so only the blobs the target
lacks move, and a blob is streamed from one registry into the other without touching a disk), and it
counts the bytes it sends, which the benchmarks report. The same calls push an HPC image file as an
ORAS artifact with Apptainer's media types, and attach signatures and provenance as an artifact
whose `subject` is the published manifest (found through the OCI 1.1 referrers tag `sha256-<hex>`,
which every registry, old or new, can serve).

Credentials: a username and a token from the environment, sent as HTTP basic auth, or exchanged at
the registry's token service (the `WWW-Authenticate: Bearer` challenge of ghcr.io, Docker Hub,
Harbor). They live in this object only; no message or exception includes them.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

from ci.errors import CIError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
INDEXES = (OCI_INDEX, DOCKER_LIST)
CHUNK = 1024 * 1024
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')
_DIGEST = re.compile(r"\Asha256:[0-9a-f]{64}\Z")


class RegistryError(CIError):
    """A registry refused or failed a call; the message names the registry, the call and the status."""


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] | None = None

    def as_dict(self) -> dict[str, Any]:
        value: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            value["annotations"] = dict(self.annotations)
        return value


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def referrers_tag(digest: str) -> str:
    """The OCI 1.1 referrers tag schema: `sha256-<hex>` names the artifacts attached to `digest`."""
    return digest.replace(":", "-")


def canonical(document: Mapping[str, Any]) -> bytes:
    """A manifest's bytes: sorted keys, no spaces, so the same content always has the same digest."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


class OCIClient:
    """One registry (`host[:port]`), over HTTPS, or plain HTTP when `insecure` (a loopback registry)."""

    def __init__(self, address: str, *, insecure: bool = False, username: str | None = None,
                 password: str | None = None, timeout: float = 60.0):
        self.address = address
        self.base = f"{'http' if insecure else 'https'}://{address}"
        self._basic = (username, password) if username and password else None
        self._tokens: dict[str, str] = {}
        self._http = httpx.Client(timeout=httpx.Timeout(timeout, connect=15.0), follow_redirects=True)
        self.bytes_sent = 0
        self._count = threading.Lock()  # calls may come from several threads (one httpx client serves them)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OCIClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _counted(self, sent: int) -> None:
        with self._count:
            self.bytes_sent += sent

    # ---- transport and authentication ----------------------------------------------------------

    def _token(self, challenge: str, scope: str) -> str | None:
        params = dict(_CHALLENGE.findall(challenge))
        realm = params.pop("realm", None)
        if not realm:
            return None
        params["scope"] = params.get("scope") or scope
        try:
            response = self._http.get(realm, params=params, auth=self._basic)
        except httpx.HTTPError as exc:
            raise RegistryError(f"registry {self.address}: its token service {realm} did not answer "
                                f"({type(exc).__name__})") from None
        if response.status_code != 200:
            raise RegistryError(f"registry {self.address}: its token service refused the credentials "
                                f"(HTTP {response.status_code}); check the target's username and token variables")
        body = response.json()
        token = body.get("token") or body.get("access_token")
        return str(token) if token else None

    def request(self, method: str, path: str, *, repo: str | None = None, push: bool = False,
                ok: tuple[int, ...] = (200,), **kwargs: Any) -> httpx.Response:
        """One call; a 401 is answered once with basic auth or a bearer token of the right scope."""
        url = path if path.startswith("http") else self.base + path
        scope = f"repository:{repo}:{'pull,push' if push else 'pull'}" if repo else "registry:catalog:*"
        headers = dict(kwargs.pop("headers", None) or {})
        for attempt in range(2):
            token = self._tokens.get(scope)
            auth = None
            if token:
                headers["Authorization"] = f"Bearer {token}"
            elif self._basic and attempt:
                auth = self._basic
            try:
                response = self._http.request(method, url, headers=headers, auth=auth, **kwargs)
            except httpx.HTTPError as exc:
                raise RegistryError(f"registry {self.address}: {method} {_shown_path(url)} failed "
                                    f"({type(exc).__name__}); is the registry reachable?") from None
            if response.status_code == 401 and attempt == 0:
                challenge = response.headers.get("WWW-Authenticate", "")
                if challenge.lower().startswith("bearer"):
                    token = self._token(challenge, scope)
                    if token:
                        self._tokens[scope] = token
                continue
            break
        if response.status_code not in ok:
            raise RegistryError(f"registry {self.address}: {method} {_shown_path(url)} answered HTTP "
                                f"{response.status_code}{_error_code(response)}")
        return response

    # ---- blobs ---------------------------------------------------------------------------------

    def has_blob(self, repo: str, digest: str) -> bool:
        return self.request("HEAD", f"/v2/{repo}/blobs/{digest}", repo=repo, ok=(200, 404)).status_code == 200

    def blob_stream(self, repo: str, digest: str) -> Iterator[bytes]:
        """A blob's bytes in chunks, checked against its digest at the end (a corrupt read is an error)."""
        _check_digest(digest)
        url = self.base + f"/v2/{repo}/blobs/{digest}"
        self.request("HEAD", url, repo=repo)  # authenticate before streaming
        scope = f"repository:{repo}:pull"
        headers = {"Authorization": f"Bearer {self._tokens[scope]}"} if scope in self._tokens else {}
        hasher = hashlib.sha256()
        with self._http.stream("GET", url, headers=headers, auth=None if headers else self._basic) as response:
            if response.status_code != 200:
                raise RegistryError(f"registry {self.address}: GET blob {digest} of {repo} answered HTTP "
                                    f"{response.status_code}")
            for chunk in response.iter_bytes(CHUNK):
                hasher.update(chunk)
                yield chunk
        if "sha256:" + hasher.hexdigest() != digest:
            raise RegistryError(f"registry {self.address}: blob {digest} of {repo} does not match its digest")

    def blob(self, repo: str, digest: str) -> bytes:
        return b"".join(self.blob_stream(repo, digest))

    def push_blob(self, repo: str, digest: str, size: int, content: bytes | Iterator[bytes] | Path,
                  *, mount_from: str | None = None, check: bool = True) -> int:
        """Upload one blob unless the registry has it; returns the bytes sent (0 when it was there).

        The registry checks the digest of what arrives; a blob either completes or is not there,
        so an upload cut off half-way leaves nothing behind and the next attempt starts it again.
        """
        _check_digest(digest)
        if check and self.has_blob(repo, digest):  # check=False: content that is new by construction
            return 0
        if mount_from and mount_from != repo:
            response = self.request("POST", f"/v2/{repo}/blobs/uploads/", repo=repo, push=True, ok=(201, 202),
                                    params={"mount": digest, "from": mount_from})
            if response.status_code == 201:
                return 0
        else:
            response = self.request("POST", f"/v2/{repo}/blobs/uploads/", repo=repo, push=True, ok=(202,))
        location = urljoin(self.base + "/", response.headers["Location"])
        sent = 0

        def counted(chunks: Iterator[bytes]) -> Iterator[bytes]:
            nonlocal sent
            for chunk in chunks:
                sent += len(chunk)
                yield chunk

        body: bytes | Iterator[bytes]
        if isinstance(content, Path):
            body = counted(_file_chunks(content))
        elif isinstance(content, bytes):
            body, sent = content, len(content)
        else:
            body = counted(content)
        separator = "&" if "?" in location else "?"
        self.request("PUT", f"{location}{separator}digest={digest}", repo=repo, push=True, ok=(201,),
                     content=body, headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
        self._counted(sent)
        return sent

    def stream_blob(self, repo: str, chunks: Iterator[bytes], digest: Callable[[], str]) -> int:
        """Upload a blob whose digest is known only once it was read: one streamed PATCH, then the
        closing PUT with the digest, which the registry checks against what it received."""
        response = self.request("POST", f"/v2/{repo}/blobs/uploads/", repo=repo, push=True, ok=(202,))
        location = urljoin(self.base + "/", response.headers["Location"])
        sent = 0

        def counted() -> Iterator[bytes]:
            nonlocal sent
            for chunk in chunks:
                sent += len(chunk)
                yield chunk

        response = self.request("PATCH", location, repo=repo, push=True, ok=(202,), content=counted(),
                                headers={"Content-Type": "application/octet-stream"})
        location = urljoin(self.base + "/", response.headers["Location"])
        final = digest()
        _check_digest(final)
        separator = "&" if "?" in location else "?"
        self.request("PUT", f"{location}{separator}digest={final}", repo=repo, push=True, ok=(201,),
                     headers={"Content-Length": "0"})
        self._counted(sent)
        return sent

    # ---- manifests and tags ----------------------------------------------------------------------

    def manifest(self, repo: str, reference: str) -> tuple[bytes, str, str] | None:
        """(bytes, media type, digest) of a manifest, or None when the registry has no such tag/digest."""
        response = self.request("GET", f"/v2/{repo}/manifests/{reference}", repo=repo, ok=(200, 404),
                                headers={"Accept": ", ".join(MANIFEST_TYPES)})
        if response.status_code == 404:
            return None
        body = response.content
        media_type = response.headers.get("Content-Type", "").split(";")[0] or json.loads(body).get("mediaType", "")
        return body, media_type, sha256_digest(body)

    def manifest_digest(self, repo: str, reference: str) -> str | None:
        found = self.manifest(repo, reference)
        return found[2] if found else None

    def put_manifest(self, repo: str, reference: str, body: bytes, media_type: str) -> str:
        self.request("PUT", f"/v2/{repo}/manifests/{reference}", repo=repo, push=True, ok=(201,), content=body,
                     headers={"Content-Type": media_type})
        self._counted(len(body))
        return sha256_digest(body)

    def delete_manifest(self, repo: str, digest: str) -> None:
        _check_digest(digest)
        self.request("DELETE", f"/v2/{repo}/manifests/{digest}", repo=repo, push=True, ok=(202, 404))

    def tags(self, repo: str) -> list[str]:
        response = self.request("GET", f"/v2/{repo}/tags/list", repo=repo, ok=(200, 404))
        if response.status_code == 404:
            return []
        return list(response.json().get("tags") or [])

    def repositories(self) -> list[str] | None:
        """Every repository (`/v2/_catalog`), or None where the registry does not list them (ghcr.io)."""
        names: list[str] = []
        path: str | None = "/v2/_catalog?n=1000"
        while path:
            response = self.request("GET", path, ok=(200, 401, 403, 404))
            if response.status_code != 200:
                return None
            names += response.json().get("repositories") or []
            link = response.headers.get("Link", "")
            match = re.match(r"<([^>]+)>", link)
            path = match.group(1) if match else None
        return names


def manifest_blobs(manifest: Mapping[str, Any]) -> list[Descriptor]:
    """The config and layers of an image manifest, as descriptors."""
    items = [manifest["config"], *manifest.get("layers", [])] if "config" in manifest else []
    return [Descriptor(item["mediaType"], item["digest"], int(item["size"]), item.get("annotations"))
            for item in items]


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


def _check_digest(digest: str) -> None:
    if not _DIGEST.match(digest):
        raise RegistryError(f"not a sha256 digest: {digest[:80]!r}")


def _shown_path(url: str) -> str:
    """A URL without its query (upload URLs carry state tokens) for messages."""
    return url.split("?", 1)[0]


def _error_code(response: httpx.Response) -> str:
    try:
        errors = response.json().get("errors") or []
        codes = ", ".join(str(error.get("code")) for error in errors if isinstance(error, dict))
        return f" ({codes})" if codes else ""
    except (ValueError, AttributeError):
        return ""
