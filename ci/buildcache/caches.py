"""Spack binary build caches as the janitor sees them: entries, their dependencies, age and bytes.

Three layouts (https://spack.readthedocs.io/en/latest/file_formats/buildcache.html):
- v2 on a filesystem: `build_cache/<prefix>.spec.json[.sig]` beside `build_cache/<arch>/<compiler>/
  <name>-<version>/<prefix>.spack`, index `build_cache/index.json` (+ `index.json.hash`);
- v3 on a filesystem: `v3/manifests/spec/<name>/<name>-<version>-<hash>.spec.manifest.json`, each
  listing blobs stored under `blobs/sha256/<2>/<checksum>`, index `v3/manifests/index/index.manifest.json`;
- an OCI registry: one tag `<name>-<version>-<hash>.spack` per entry (its image config holds the
  spec), index tag `index.spack`.
A store lists entries, deletes a planned set, and rewrites the index from what remains.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import httpx

from ci.config.spack import S3Settings
from ci.errors import CIError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DB_MEDIA = "application/vnd.spack.db.v8+json"
INDEX_TAG = "index.spack"
_HASH = re.compile(r"^[a-z2-7]{32}\Z")


class CacheError(CIError):
    """The build cache could not be read or changed; the message names the cache and the entry."""


@dataclass(frozen=True)
class Entry:
    """One binary package of a cache."""

    hash: str
    name: str
    version: str
    dependencies: tuple[str, ...]  # link/run dependencies' hashes: what installing this entry needs
    created: float | None  # seconds since the epoch; None when the layout does not say
    size: int  # bytes of this entry alone (blobs shared with others are counted once, by the plan)
    key: str  # where the layout keeps it: a manifest path, a spec file, a tag
    blobs: tuple[tuple[str, int], ...] = ()  # (blob id, bytes) the entry references, for shared blobs
    spec: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}/{self.hash[:7]}"


class CacheStore(Protocol):
    url: str
    layout: str

    def entries(self) -> list[Entry]: ...

    def delete(self, entries: Sequence[Entry], blobs: Iterable[str]) -> None: ...

    def update_index(self, remaining: Sequence[Entry]) -> None: ...

    def close(self) -> None:
        """Release the store's connections (a registry's or a bucket's client); a folder holds none."""


def unsign(text: str) -> str:
    """The JSON inside a clearsigned document (or the text itself when it is not signed)."""
    if text.startswith("-----BEGIN PGP SIGNED MESSAGE-----"):
        body = text.split("\n\n", 1)[1] if "\n\n" in text else ""
        return body.split("\n-----BEGIN PGP SIGNATURE-----", 1)[0]
    return text


def _root_node(document: Mapping[str, Any], wanted: str | None = None) -> Mapping[str, Any]:
    nodes = (document.get("spec") or {}).get("nodes") or []
    if not isinstance(nodes, list) or not nodes:
        raise ValueError("the spec has no nodes")
    if wanted:
        for item in nodes:
            if isinstance(item, Mapping) and item.get("hash") == wanted:
                return item
    first = nodes[0]
    if not isinstance(first, Mapping):
        raise ValueError("the spec's first node is not a mapping")
    return first


def runtime_dependencies(node: Mapping[str, Any]) -> tuple[str, ...]:
    """Hashes of the link and run dependencies (what a binary install needs; build-only ones are not)."""
    out: list[str] = []
    for dep in node.get("dependencies") or []:
        if not isinstance(dep, Mapping) or not isinstance(dep.get("hash"), str):
            continue
        parameters = dep.get("parameters") or {}
        kinds = parameters.get("deptypes", dep.get("type", ["build", "link"])) if isinstance(parameters, Mapping) \
            else ["link"]
        if not isinstance(kinds, list) or {"link", "run"} & set(kinds):
            out.append(dep["hash"])
    return tuple(out)


def _entry(document: Mapping[str, Any], *, wanted: str | None, created: float | None, size: int, key: str,
           blobs: tuple[tuple[str, int], ...] = ()) -> Entry:
    node = _root_node(document, wanted)
    digest = str(node.get("hash", wanted or ""))
    return Entry(hash=digest, name=str(node.get("name", "?")), version=str(node.get("version", "?")),
                 dependencies=runtime_dependencies(node), created=created, size=size, key=key, blobs=blobs,
                 spec=node)


def _database(entries: Sequence[Entry]) -> bytes:
    installs = {entry.hash: {"spec": dict(entry.spec), "ref_count": 0, "in_buildcache": True} for entry in entries}
    return json.dumps({"database": {"version": "8", "installs": installs}}, sort_keys=True).encode()


# --------------------------------------------------------------------------------------------
# directories: v2 and v3
# --------------------------------------------------------------------------------------------


class DirectoryV2:
    """The v2 layout under `<root>/build_cache/`."""

    layout = "v2"

    def __init__(self, root: Path):
        self.root = root
        self.url = str(root)
        self.folder = root / "build_cache"

    def close(self) -> None:
        """A folder holds no connection."""

    def entries(self) -> list[Entry]:
        tarballs = {path.name: path for path in self.folder.rglob("*.spack")}
        out: list[Entry] = []
        for spec_file in sorted(self.folder.glob("*.spec.json*")):
            if not spec_file.name.endswith((".spec.json", ".spec.json.sig")):
                continue
            prefix = spec_file.name.split(".spec.json", 1)[0]
            wanted = prefix.rsplit("-", 1)[-1]
            try:
                document = json.loads(unsign(spec_file.read_text(encoding="utf-8")))
                tarball = tarballs.get(f"{prefix}.spack")
                size = spec_file.stat().st_size + (tarball.stat().st_size if tarball else 0)
                out.append(_entry(document, wanted=wanted if _HASH.match(wanted) else None,
                                  created=spec_file.stat().st_mtime, size=size, key=str(spec_file)))
            except (OSError, ValueError, AttributeError) as exc:
                raise CacheError(f"{spec_file}: is not a readable spec file ({exc}); move it away or delete it "
                                 "by hand") from None
        return out

    def delete(self, entries: Sequence[Entry], blobs: Iterable[str]) -> None:
        tarballs = {path.name: path for path in self.folder.rglob("*.spack")}
        for entry in entries:
            spec_file = Path(entry.key)
            prefix = spec_file.name.split(".spec.json", 1)[0]
            tarball = tarballs.get(f"{prefix}.spack")
            if tarball is not None:
                tarball.unlink(missing_ok=True)
            spec_file.unlink(missing_ok=True)

    def update_index(self, remaining: Sequence[Entry]) -> None:
        data = _database(remaining)
        _atomic_write(self.folder / "index.json", data)
        _atomic_write(self.folder / "index.json.hash", hashlib.sha256(data).hexdigest().encode())


class DirectoryV3:
    """The v3 layout: manifests under `<root>/v3/manifests/`, content-addressed blobs under `<root>/blobs/`."""

    layout = "v3"

    def __init__(self, root: Path):
        self.root = root
        self.url = str(root)
        self.manifests = root / "v3" / "manifests"

    def close(self) -> None:
        """A folder holds no connection."""

    def blob_path(self, checksum: str, algorithm: str = "sha256") -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", checksum) or algorithm != "sha256":
            raise CacheError(f"{self.root}: a manifest names the blob {checksum!r}, which is not a sha256 checksum")
        return self.root / "blobs" / algorithm / checksum[:2] / checksum

    def _manifest(self, path: Path) -> list[Mapping[str, Any]]:
        try:
            data = json.loads(unsign(path.read_text(encoding="utf-8")))
            items = data["data"]
            if not isinstance(items, list):
                raise ValueError("data is not a list")
            return items
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CacheError(f"{path}: is not a build cache manifest ({exc}); move it away or delete it by hand") \
                from None

    def entries(self) -> list[Entry]:
        out: list[Entry] = []
        for path in sorted((self.manifests / "spec").glob("*/*.spec.manifest.json")):
            items = self._manifest(path)
            blobs = tuple((str(item["checksum"]), int(item.get("contentLength", 0))) for item in items)
            spec_item = next((item for item in items if str(item.get("mediaType", "")).startswith(
                "application/vnd.spack.spec.")), None)
            if spec_item is None:
                raise CacheError(f"{path}: lists no spec blob; delete the entry by hand")
            try:
                raw = self.blob_path(str(spec_item["checksum"])).read_bytes()
                if spec_item.get("compression") == "gzip":
                    raw = gzip.decompress(raw)
                document = json.loads(unsign(raw.decode("utf-8")))
            except (OSError, ValueError, EOFError) as exc:
                raise CacheError(f"{path}: its spec blob cannot be read ({exc}); delete the entry by hand") from None
            wanted = path.name.removesuffix(".spec.manifest.json").rsplit("-", 1)[-1]
            size = path.stat().st_size + sum(length for _, length in blobs)
            out.append(_entry(document, wanted=wanted if _HASH.match(wanted) else None,
                              created=path.stat().st_mtime, size=size, key=str(path), blobs=blobs))
        return out

    def _referenced_elsewhere(self, keep: set[str]) -> set[str]:
        """Blobs listed by manifests that stay (index, keys, entries not deleted)."""
        out: set[str] = set()
        for path in self.manifests.rglob("*.manifest.json"):
            if str(path) in keep:
                continue
            out |= {str(item.get("checksum")) for item in self._manifest(path)}
        return out

    def delete(self, entries: Sequence[Entry], blobs: Iterable[str]) -> None:
        for entry in entries:
            Path(entry.key).unlink(missing_ok=True)
        still = self._referenced_elsewhere(set())
        for checksum in blobs:
            if checksum not in still:
                self.blob_path(checksum).unlink(missing_ok=True)

    def update_index(self, remaining: Sequence[Entry]) -> None:
        index_manifest = self.manifests / "index" / "index.manifest.json"
        old = self._manifest(index_manifest) if index_manifest.is_file() else []
        data = _database(remaining)
        checksum = hashlib.sha256(data).hexdigest()
        target = self.blob_path(checksum)
        target.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(target, data)
        kept = [item for item in old if item.get("mediaType") != DB_MEDIA]  # other Database versions stay
        manifest = {"version": 3, "data": [*kept, {"contentLength": len(data), "mediaType": DB_MEDIA,
                                                   "compression": "none", "checksumAlgorithm": "sha256",
                                                   "checksum": checksum}]}
        index_manifest.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(index_manifest, (json.dumps(manifest, indent=1) + "\n").encode())
        for item in old:
            if item.get("mediaType") == DB_MEDIA and item.get("checksum") != checksum:
                self.blob_path(str(item["checksum"])).unlink(missing_ok=True)


def _atomic_write(path: Path, data: bytes) -> None:
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    scratch.write_bytes(data)
    os.replace(scratch, path)


# --------------------------------------------------------------------------------------------
# OCI registries
# --------------------------------------------------------------------------------------------


class OciRegistry:
    """`oci://host/name` (https) or `oci+http://host/name`, through the registry's HTTP API."""

    layout = "oci"

    def __init__(self, url: str, *, client: httpx.Client | None = None, auth: tuple[str, str] | None = None):
        if not url.startswith(("oci://", "oci+http://")):
            raise CacheError(f"{url}: is not an OCI build cache URL (oci://host/name or oci+http://host/name)")
        scheme = "http" if url.startswith("oci+http://") else "https"
        host, _, name = url.split("://", 1)[1].partition("/")
        if not host or not re.fullmatch(r"[a-z0-9]+(?:[._/-][a-z0-9]+)*", name):
            raise CacheError(f"{url}: names no repository (write oci://host/name, the name in lower case)")
        self.url = url
        self.base = f"{scheme}://{host}/v2/{name}"
        self._owned = client is None  # a client handed in is closed by whoever made it
        self.client = client or httpx.Client(timeout=60, auth=auth)

    def close(self) -> None:
        if self._owned:
            self.client.close()

    def _get(self, path: str, **headers: str) -> httpx.Response:
        try:
            return self.client.get(f"{self.base}/{path}", headers=headers)
        except httpx.HTTPError as exc:
            raise CacheError(f"{self.url}: the registry does not answer ({exc.__class__.__name__})") from None

    def tags(self) -> list[str]:
        out: list[str] = []
        url: str | None = f"{self.base}/tags/list?n=1000"
        seen: set[str] = set()
        while url and url not in seen:  # a registry that repeats its Link header must not loop us
            seen.add(url)
            try:
                response = self.client.get(url)
            except httpx.HTTPError as exc:
                raise CacheError(f"{self.url}: the registry does not answer ({exc.__class__.__name__})") from None
            if response.status_code == 404:
                return []
            if response.status_code != 200:
                raise CacheError(f"{self.url}: listing tags failed (HTTP {response.status_code})")
            out += response.json().get("tags") or []
            link = response.headers.get("Link", "")
            match = re.match(r"<([^>]+)>", link)
            url = str(httpx.URL(self.base).join(match.group(1))) if match else None
        return out

    def _manifest(self, tag: str) -> tuple[dict[str, Any], str] | None:
        response = self._get(f"manifests/{tag}", Accept=f"{OCI_MANIFEST}, {DOCKER_MANIFEST}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise CacheError(f"{self.url}: reading {tag} failed (HTTP {response.status_code})")
        digest = response.headers.get("Docker-Content-Digest") or \
            "sha256:" + hashlib.sha256(response.content).hexdigest()
        return response.json(), digest

    def entries(self) -> list[Entry]:
        out: list[Entry] = []
        for tag in self.tags():
            if not tag.endswith(".spack") or tag == INDEX_TAG:
                continue
            found = self._manifest(tag)
            if found is None:
                continue
            manifest, digest = found
            config_ref = manifest.get("config", {}).get("digest", "")
            response = self._get(f"blobs/{config_ref}")
            if response.status_code != 200:
                raise CacheError(f"{self.url}: the config of {tag} is missing (HTTP {response.status_code})")
            config = response.json()
            if "spec" not in config:
                continue  # not a Spack entry (Spack itself skips these too)
            created = _timestamp(config.get("created"))
            layers = manifest.get("layers") or []
            blobs = tuple((str(layer.get("digest")), int(layer.get("size", 0))) for layer in layers)
            blobs += ((config_ref, int(manifest.get("config", {}).get("size", 0))),)
            wanted = tag.removesuffix(".spack").rsplit("-", 1)[-1]
            own = blobs[-2:] if layers else blobs  # the entry's own layer and its config
            out.append(_entry(config, wanted=wanted if _HASH.match(wanted) else None, created=created,
                              size=sum(size for _, size in own), key=f"{tag}@{digest}", blobs=blobs))
        return out

    def delete(self, entries: Sequence[Entry], blobs: Iterable[str]) -> None:
        for entry in entries:
            digest = entry.key.rsplit("@", 1)[1]
            try:
                response = self.client.delete(f"{self.base}/manifests/{digest}")
            except httpx.HTTPError as exc:
                raise CacheError(f"{self.url}: deleting {entry.label} failed ({exc.__class__.__name__})") from None
            if response.status_code == 405:
                raise CacheError(f"{self.url}: the registry does not allow deletes; set storage.delete.enabled: "
                                 "true in its configuration")
            if response.status_code not in (202, 404):
                raise CacheError(f"{self.url}: deleting {entry.label} failed (HTTP {response.status_code})")
        # blobs are reclaimed by the registry's own garbage collection (`registry garbage-collect`)

    def _put_blob(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if self.client.head(f"{self.base}/blobs/{digest}").status_code == 200:
            return digest
        start = self.client.post(f"{self.base}/blobs/uploads/")
        if start.status_code != 202:
            raise CacheError(f"{self.url}: the registry refused an upload (HTTP {start.status_code})")
        location = str(httpx.URL(self.base).join(start.headers["Location"]))
        joiner = "&" if "?" in location else "?"  # the upload URL carries its own query (_state=...)
        done = self.client.put(f"{location}{joiner}digest={digest}", content=data,
                               headers={"Content-Type": "application/octet-stream"})
        if done.status_code != 201:
            raise CacheError(f"{self.url}: the registry refused the index blob (HTTP {done.status_code})")
        return digest

    def update_index(self, remaining: Sequence[Entry]) -> None:
        index = _database(remaining)
        try:
            index_digest = self._put_blob(index)
            config_digest = self._put_blob(b"{}")
            manifest = {"mediaType": OCI_MANIFEST, "schemaVersion": 2,
                        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                                   "size": 2},
                        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                    "digest": index_digest, "size": len(index)}]}
            response = self.client.put(f"{self.base}/manifests/{INDEX_TAG}", content=json.dumps(manifest).encode(),
                                       headers={"Content-Type": OCI_MANIFEST})
        except httpx.HTTPError as exc:
            raise CacheError(f"{self.url}: writing the index failed ({exc.__class__.__name__})") from None
        if response.status_code != 201:
            raise CacheError(f"{self.url}: writing the index failed (HTTP {response.status_code})")


# --------------------------------------------------------------------------------------------
# S3 buckets: the v3 layout under s3://bucket/prefix, through boto3 (no synced folder)
# --------------------------------------------------------------------------------------------


class S3V3:
    """The v3 layout in an S3 bucket, read and pruned in place.

    The endpoint comes from `ci.spack.s3.endpoint`, the credentials from the variables it names
    (never from the URL or the configuration). An entry's age is its manifest's LastModified.
    """

    layout = "v3 (s3)"

    def __init__(self, url: str, settings: S3Settings, *, client: Any = None):
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
            raise CacheError(f"{url}: names no valid bucket (write s3://bucket/path, the bucket in lower case)")
        self.url = url
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self._owned = client is None  # a client handed in is closed by whoever made it
        if client is None:
            import boto3  # only S3 caches need it; the import costs a third of a second

            access, secret = os.environ.get(settings.access_key_env), os.environ.get(settings.secret_key_env)
            client = boto3.client("s3", endpoint_url=settings.endpoint, region_name=settings.region,
                                  aws_access_key_id=access or None, aws_secret_access_key=secret or None)
        self.client = client

    def close(self) -> None:
        if self._owned:
            self.client.close()

    def _key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def _call(self, what: str, method: str, **arguments: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, method)(Bucket=self.bucket, **arguments)
        except ClientError as exc:  # the message names the operation and the code, never a credential
            code = exc.response.get("Error", {}).get("Code", "error")
            raise CacheError(f"{self.url}: {what} failed ({code})") from None
        except BotoCoreError as exc:
            raise CacheError(f"{self.url}: {what} failed ({exc.__class__.__name__}); check ci.spack.s3.endpoint "
                             "and the credentials' variables") from None

    def _list(self, relative: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = self._call("listing", "list_objects_v2", Prefix=self._key(relative), **extra)
            out += page.get("Contents") or []
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return out

    def _read(self, key: str) -> bytes:
        data: bytes = self._call(f"reading {key}", "get_object", Key=key)["Body"].read()
        return data

    def blob_key(self, checksum: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", checksum):
            raise CacheError(f"{self.url}: a manifest names the blob {checksum!r}, which is not a sha256 checksum")
        return self._key(f"blobs/sha256/{checksum[:2]}/{checksum}")

    def _manifest(self, key: str) -> list[Mapping[str, Any]]:
        try:
            items = json.loads(unsign(self._read(key).decode("utf-8")))["data"]
            if not isinstance(items, list):
                raise ValueError("data is not a list")
            return items
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise CacheError(f"{self.url}/{key}: is not a build cache manifest ({exc.__class__.__name__}); delete "
                             "it by hand") from None

    def entries(self) -> list[Entry]:
        out: list[Entry] = []
        for item in self._list("v3/manifests/spec/"):
            key = str(item["Key"])
            if not key.endswith(".spec.manifest.json"):
                continue
            items = self._manifest(key)
            blobs = tuple((str(i["checksum"]), int(i.get("contentLength", 0))) for i in items)
            spec_item = next((i for i in items if str(i.get("mediaType", "")).startswith(
                "application/vnd.spack.spec.")), None)
            if spec_item is None:
                raise CacheError(f"{self.url}/{key}: lists no spec blob; delete the entry by hand")
            try:
                raw = self._read(self.blob_key(str(spec_item["checksum"])))
                if spec_item.get("compression") == "gzip":
                    raw = gzip.decompress(raw)
                document = json.loads(unsign(raw.decode("utf-8")))
            except (ValueError, EOFError, OSError) as exc:
                raise CacheError(f"{self.url}/{key}: its spec blob cannot be read ({exc.__class__.__name__})") \
                    from None
            wanted = key.rsplit("/", 1)[-1].removesuffix(".spec.manifest.json").rsplit("-", 1)[-1]
            modified = item.get("LastModified")
            created = modified.timestamp() if isinstance(modified, datetime) else None
            out.append(_entry(document, wanted=wanted if _HASH.match(wanted) else None, created=created,
                              size=int(item.get("Size", 0)) + sum(length for _, length in blobs), key=key,
                              blobs=blobs))
        return out

    def delete(self, entries: Sequence[Entry], blobs: Iterable[str]) -> None:
        gone = {entry.key for entry in entries}
        for key in sorted(gone):
            self._call(f"deleting {key}", "delete_object", Key=key)
        still: set[str] = set()
        for item in self._list("v3/manifests/"):
            if str(item["Key"]).endswith(".manifest.json") and item["Key"] not in gone:
                still |= {str(i.get("checksum")) for i in self._manifest(str(item["Key"]))}
        for checksum in blobs:
            if checksum not in still:
                self._call(f"deleting blob {checksum[:12]}", "delete_object", Key=self.blob_key(checksum))

    def update_index(self, remaining: Sequence[Entry]) -> None:
        index_key = self._key("v3/manifests/index/index.manifest.json")
        present = {str(item["Key"]) for item in self._list("v3/manifests/index/")}
        old = self._manifest(index_key) if index_key in present else []
        data = _database(remaining)
        checksum = hashlib.sha256(data).hexdigest()
        self._call("writing the index", "put_object", Key=self.blob_key(checksum), Body=data)
        kept = [item for item in old if item.get("mediaType") != DB_MEDIA]
        manifest = {"version": 3, "data": [*kept, {"contentLength": len(data), "mediaType": DB_MEDIA,
                                                   "compression": "none", "checksumAlgorithm": "sha256",
                                                   "checksum": checksum}]}
        self._call("writing the index", "put_object", Key=index_key,
                   Body=(json.dumps(manifest, indent=1) + "\n").encode())
        for item in old:
            if item.get("mediaType") == DB_MEDIA and item.get("checksum") != checksum:
                self._call("deleting the old index", "delete_object", Key=self.blob_key(str(item["checksum"])))


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def open_store(url: str, *, auth: tuple[str, str] | None = None, s3: S3Settings | None = None) -> CacheStore:
    """The store behind a mirror URL; a directory's layout is v3 when `v3/` exists, else v2."""
    if url.startswith(("oci://", "oci+http://")):
        return OciRegistry(url, auth=auth)
    if url.startswith("s3://"):
        return S3V3(url, s3 or S3Settings())
    if url.startswith(("http://", "https://", "gs://")):
        raise CacheError(f"{url}: the janitor reads directory, S3 and OCI caches, not plain HTTP ones")
    root = Path(url.removeprefix("file://"))
    if not root.is_dir():
        raise CacheError(f"{root}: the build cache folder does not exist")
    if (root / "v3").is_dir():
        return DirectoryV3(root)
    if (root / "build_cache").is_dir():
        return DirectoryV2(root)
    raise CacheError(f"{root}: holds neither a v3/ nor a build_cache/ folder; is it a Spack build cache?")


def now() -> float:
    return time.time()
