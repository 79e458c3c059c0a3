#!/usr/bin/env python3
"""A STAND-IN for Spack, for local runs and tests only: production uses a real Spack builder image.

`inv local.spack-builder` installs it as `/usr/local/bin/spack`. It implements only the subcommands
ci/spack/templates/Dockerfile.j2 calls, with Spack's file formats: `concretize` writes a `spack.lock`
(v6), `install` makes an install tree and a view (from the build cache when it holds the hash, else
"from source", pushing each such package at once to `--autopush` mirrors), `buildcache push` writes the
v3 layout to a folder, S3 (boto3) or an OCI registry. A package is a folder with `bin/<name>`; a spec
with `+fail` fails to build. Every install prints one summary line, so tests can count what was built.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import hmac
import io
import json
import os
import platform
import re
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

STATE = Path(os.environ.get("SPACK_STANDIN_STATE", "/opt/spack-standin"))
RUNTIME = ("standin-runtime", "1.0.0")  # the one link dependency every package gets, like gcc-runtime
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SPEC_MEDIA = "application/vnd.spack.spec.v5+json"
TARBALL_MEDIA = "application/vnd.spack.install.v2.tar+gzip"
DB_MEDIA = "application/vnd.spack.db.v8+json"
_B32 = "abcdefghijklmnopqrstuvwxyz234567"


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def dag_hash(payload: Any) -> str:
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).digest()
    return base64.b32encode(digest).decode().lower()[:32].translate(str.maketrans("", "", "="))


# --- the environment: spack.yaml in, spack.lock out ---

def read_yaml_specs(env: Path) -> tuple[list[str], str, str, str]:
    """specs, the target, the install tree and the view of spack.yaml (a YAML subset: what we render)."""
    text = (env / "spack.yaml").read_text()
    specs: list[str] = []
    target = platform.machine()
    tree, view = "/opt/software", ""
    in_specs = False
    for line in text.splitlines():
        stripped = line.strip()
        if re.match(r"^\s*specs:\s*$", line):
            in_specs = True
            continue
        if in_specs:
            if stripped.startswith("- "):
                specs.append(stripped[2:].strip().strip("'\""))
                continue
            in_specs = False
        found = re.search(r"target=([A-Za-z0-9_]+)", stripped)
        if found:
            target = found.group(1)
        if stripped.startswith("root:") and "install_tree" in text:
            tree = stripped.split(":", 1)[1].strip().strip("'\"")
        if re.match(r"^  view:\s*\S", line):
            view = stripped.split(":", 1)[1].strip().strip("'\"")
    if view in ("true", "True"):
        view = str(env / ".spack-env" / "view")
    if view in ("false", "False"):
        view = ""
    return specs, target, tree, view


def concretize(env: Path) -> dict[str, Any]:
    specs, target, _, _ = read_yaml_specs(env)
    arch = {"platform": "linux", "platform_os": "debian12", "target": target}
    runtime = node(RUNTIME[0], RUNTIME[1], "", arch, [])
    nodes = {runtime["hash"]: runtime}
    roots = []
    for spec in specs:
        match = re.match(r"^\s*([A-Za-z0-9_][A-Za-z0-9_.-]*)\s*(?:@=?([A-Za-z0-9_][A-Za-z0-9_.-]*)(?![:,]))?(.*)$",
                         spec)
        if not match:
            sys.exit(f"==> Error: cannot parse the spec {spec!r}")
        name, version, rest = match.group(1), match.group(2) or "1.0.0", match.group(3).strip()
        entry = node(name, version, rest, arch, [runtime])
        nodes[entry["hash"]] = entry
        roots.append({"hash": entry["hash"], "spec": spec})
    lock = {"_meta": {"file-type": "spack-lockfile", "lockfile-version": 6, "specfile-version": 5},
            "spack": {"version": "0.0.0-stand-in", "type": "release"},
            "roots": roots, "concrete_specs": nodes}
    (env / "spack.lock").write_text(json.dumps(lock, indent=1) + "\n")
    say(f"Concretized {len(roots)} root spec(s), {len(nodes)} node(s) (stand-in)")
    return lock


def node(name: str, version: str, variants: str, arch: dict[str, str], deps: list[dict[str, Any]]) -> dict[str, Any]:
    dependencies = [{"name": d["name"], "hash": d["hash"], "parameters": {"deptypes": ["build", "link"],
                                                                           "virtuals": []}} for d in deps]
    body = {"name": name, "version": version, "arch": arch, "namespace": "builtin",
            "parameters": {"variants": variants}, "dependencies": dependencies}
    return {**body, "hash": dag_hash(body)}


def load_lock(env: Path) -> dict[str, Any]:
    path = env / "spack.lock"
    if not path.is_file():
        sys.exit("==> Error: the environment is not concretized; run `spack concretize` first")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def topological(lock: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = lock["concrete_specs"]
    done: set[str] = set()
    order: list[dict[str, Any]] = []
    pending = list(nodes)
    while pending:
        progressed = False
        for key in list(pending):
            if all(d["hash"] in done for d in nodes[key].get("dependencies", [])):
                order.append(nodes[key])
                done.add(key)
                pending.remove(key)
                progressed = True
        if not progressed:
            sys.exit("==> Error: the lockfile has a dependency cycle")
    return order


def prefix_of(tree: str, entry: dict[str, Any]) -> Path:
    arch = entry["arch"]
    return Path(tree) / f"{arch['platform']}-{arch['target']}" / f"{entry['name']}-{entry['version']}-{entry['hash']}"


def closure(lock: dict[str, Any], entry: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = lock["concrete_specs"]
    out, todo, seen = [], [entry["hash"]], set()
    while todo:
        key = todo.pop(0)
        if key in seen or key not in nodes:
            continue
        seen.add(key)
        out.append(nodes[key])
        todo.extend(d["hash"] for d in nodes[key].get("dependencies", []))
    return out


def spec_document(lock: dict[str, Any], entry: dict[str, Any], checksum: str) -> dict[str, Any]:
    return {"spec": {"_meta": {"version": 5}, "nodes": closure(lock, entry)}, "buildcache_layout_version": 2,
            "binary_cache_checksum": {"hash_algorithm": "sha256", "hash": checksum}}


FAIL = re.compile(r"\+fail(?![A-Za-z0-9_])")  # the stand-in's failure switch: a spec with +fail does not build


def install(env: Path, *, fail_fast: bool) -> int:
    """Install every node in dependency order: from the build cache when it holds the hash, else "from source".

    As `spack install` does with a mirror added `--autopush`, each package built from source is pushed
    to such mirrors as soon as it is installed, so a failure later keeps what was finished.
    """
    lock = load_lock(env)
    _, _, tree, view = read_yaml_specs(env)
    configured = mirrors()
    caches = [open_cache(item["url"], item.get("endpoint")) for item in configured.values()]
    autopush = [(name, open_cache(item["url"], item.get("endpoint")), bool(item.get("signed")))
                for name, item in configured.items() if item.get("autopush")]
    counts = {"source": 0, "cache": 0, "installed": 0, "failed": 0}
    failed: set[str] = set()
    try:
        for entry in topological(lock):
            prefix = prefix_of(tree, entry)
            label = f"{entry['name']}-{entry['version']}-{entry['hash']}"
            if any(d["hash"] in failed for d in entry.get("dependencies", [])):
                failed.add(entry["hash"])
                say(f"Skipping {label}: a dependency failed")
                continue
            if (prefix / ".spack" / "spec.json").is_file():
                counts["installed"] += 1
                say(f"{label} is already installed")
                continue
            tarball = next((blob for cache in caches if (blob := cache.fetch(entry)) is not None), None)
            if tarball is not None:
                say(f"Installing {label} from binary cache")
                prefix.mkdir(parents=True, exist_ok=True)
                extract(tarball, prefix)
                counts["cache"] += 1
                print(f"[+] {prefix}", flush=True)
                continue
            say(f"Installing {label} from source (stand-in: writes bin/{entry['name']})")
            if FAIL.search(str(entry.get("parameters", {}).get("variants", ""))):
                counts["failed"] += 1
                failed.add(entry["hash"])
                print(f"==> Error: {label}: the build failed (the stand-in fails every spec with +fail)",
                      file=sys.stderr, flush=True)
                if fail_fast:
                    return 1
                continue
            (prefix / "bin").mkdir(parents=True, exist_ok=True)
            script = prefix / "bin" / entry["name"]
            script.write_text(f"#!/bin/sh\necho '{entry['name']} {entry['version']} ({entry['hash'][:7]})'\n")
            script.chmod(0o755)
            (prefix / ".spack").mkdir(exist_ok=True)
            (prefix / ".spack" / "spec.json").write_text(json.dumps({"spec": {"nodes": [entry]}}) + "\n")
            counts["source"] += 1
            print(f"[+] {prefix}", flush=True)
            for name, cache, signed in autopush:  # as soon as it is installed, not at the end
                key = signing_key() if signed else None
                if signed and key is None:
                    sys.exit(f"==> Error: the mirror {name} is signed but no signing key is in the keyring")
                cache.push(lock, entry, tar_prefix(prefix), None if isinstance(cache, OciCache) else key,
                           time.time())
                say(f"Pushed {entry['name']}@{entry['version']}/{entry['hash'][:7]} to {name} (autopush)")
        if view and not failed:
            make_view(lock, tree, Path(view))
        return 1 if failed else 0
    finally:
        say(f"stand-in install summary: {counts['source']} from source, {counts['cache']} from binary cache, "
            f"{counts['installed']} already installed, {counts['failed']} failed")


def extract(tarball: bytes, prefix: Path) -> None:
    """Unpack a cache tarball into the prefix; no member may leave it (Debian 12's Python has no filter=)."""
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for member in archive.getmembers():
            target = (prefix / member.name).resolve()
            if not target.is_relative_to(prefix.resolve()) or member.isdev() or \
                    (member.issym() and not (target.parent / member.linkname).resolve().is_relative_to(prefix)):
                sys.exit(f"==> Error: the cache tarball of {prefix.name} holds {member.name!r}, outside the prefix")
        archive.extractall(prefix)


def make_view(lock: dict[str, Any], tree: str, view: Path) -> None:
    store = view.parent / f"._{view.name}" / lock["roots"][0]["hash"] if lock["roots"] else view
    (store / "bin").mkdir(parents=True, exist_ok=True)
    (store / "lib").mkdir(exist_ok=True)
    for entry in lock["concrete_specs"].values():
        for program in (prefix_of(tree, entry) / "bin").glob("*"):
            link = store / "bin" / program.name
            if not link.exists():
                link.symlink_to(program)
    if view.is_symlink() or view.exists():
        view.unlink()
    view.symlink_to(store)


# --- mirrors and caches ---

def mirrors() -> dict[str, dict[str, Any]]:
    """name -> {url, autopush, signed, endpoint}, as `spack mirror add` recorded them."""
    path = STATE / "mirrors.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    return {name: value if isinstance(value, dict) else {"url": value} for name, value in data.items()}


def add_mirror(name: str, url: str, *, autopush: bool = False, signed: bool = False,
               endpoint: str | None = None) -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    data = mirrors()
    data[name] = {"url": url, "autopush": autopush, "signed": signed, "endpoint": endpoint}
    (STATE / "mirrors.json").write_text(json.dumps(data) + "\n")
    extras = [word for word, on in (("autopush", autopush), ("signed", signed)) if on]
    say(f"Added mirror {name} ({url}{', ' + ', '.join(extras) if extras else ''})")


def mirror_url(name_or_url: str) -> tuple[str, str | None]:
    found = mirrors().get(name_or_url)
    return (found["url"], found.get("endpoint")) if found else (name_or_url, None)


def open_cache(url: str, endpoint: str | None = None) -> V3Cache | OciCache:
    if url.startswith(("oci://", "oci+http://")):
        return OciCache(url)
    if url.startswith("s3://"):
        return V3Cache(S3Store(url, endpoint))
    return V3Cache(FileStore(Path(url.removeprefix("file://"))))


def tar_prefix(prefix: Path) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped, \
            tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path in sorted(prefix.rglob("*")):
            info = archive.gettarinfo(str(path), arcname=str(path.relative_to(prefix)))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if path.is_file() and not path.is_symlink():
                with path.open("rb") as handle:
                    archive.addfile(info, handle)
            else:
                archive.addfile(info)
    return buffer.getvalue()


def signing_key() -> bytes | None:
    home = Path(os.environ.get("SPACK_GNUPGHOME", STATE / "gpg"))
    path = home / "secret.key"
    return path.read_bytes() if path.is_file() else None


def clearsign(text: str, key: bytes) -> str:
    """A clearsigned-shaped document; the "signature" is an HMAC (a stand-in has no OpenPGP)."""
    mac = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
    return (f"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n{text}\n-----BEGIN PGP SIGNATURE-----\n\n"
            f"{mac}\n-----END PGP SIGNATURE-----\n")


class FileStore:
    """Objects of a build cache as files under a folder."""

    def __init__(self, root: Path):
        self.root = root

    def get(self, key: str) -> bytes | None:
        path = self.root / key
        return path.read_bytes() if path.is_file() else None

    def put(self, key: str, data: bytes, created: float | None = None) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if created is not None:
            os.utime(path, (created, created))

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file()) if base.is_dir() else []


class S3Store:
    """Objects of a build cache in an S3 bucket (`s3://bucket/prefix`), through boto3 as Spack does.

    The endpoint is the mirror's `--s3-endpoint-url`; credentials come from boto3's usual chain (the
    AWS_* variables the generated Dockerfile sets from BuildKit secrets for one RUN step).
    """

    def __init__(self, url: str, endpoint: str | None):
        import boto3  # Debian's python3-boto3 in the stand-in builder image; only S3 caches need it

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.client = boto3.client("s3", endpoint_url=endpoint or None)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def get(self, key: str) -> bytes | None:
        try:
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
            return body
        except self.client.exceptions.NoSuchKey:
            return None

    def put(self, key: str, data: bytes, created: float | None = None) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def exists(self, key: str) -> bool:
        answer = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._key(key), MaxKeys=1)
        return any(item["Key"] == self._key(key) for item in answer.get("Contents", []))

    def list(self, prefix: str) -> list[str]:
        out: list[str] = []
        start = self._key(prefix)
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start):
            out += [item["Key"][len(self.prefix) + 1 if self.prefix else 0:] for item in page.get("Contents", [])]
        return sorted(out)


class V3Cache:
    """Spack's v3 build cache layout (`v3/manifests/` + `blobs/sha256/`) over a folder or a bucket."""

    def __init__(self, store: FileStore | S3Store):
        self.store = store

    @staticmethod
    def blob_key(checksum: str) -> str:
        return f"blobs/sha256/{checksum[:2]}/{checksum}"

    @staticmethod
    def manifest_key(entry: dict[str, Any]) -> str:
        return f"v3/manifests/spec/{entry['name']}/{entry['name']}-{entry['version']}-{entry['hash']}" \
               ".spec.manifest.json"

    def put_blob(self, data: bytes) -> str:
        checksum = hashlib.sha256(data).hexdigest()
        if not self.store.exists(self.blob_key(checksum)):
            self.store.put(self.blob_key(checksum), data)
        return checksum

    def blob(self, checksum: str) -> bytes:
        data = self.store.get(self.blob_key(checksum))
        if data is None:
            sys.exit(f"==> Error: the build cache lists the blob {checksum} but does not hold it")
        return data

    def fetch(self, entry: dict[str, Any]) -> bytes | None:
        raw = self.store.get(self.manifest_key(entry))
        if raw is None:
            return None
        manifest = json.loads(unsign(raw.decode()))
        for item in manifest["data"]:
            if item["mediaType"] == TARBALL_MEDIA:
                return self.blob(item["checksum"])
        return None

    def has(self, entry: dict[str, Any]) -> bool:
        return self.store.exists(self.manifest_key(entry))

    def push(self, lock: dict[str, Any], entry: dict[str, Any], tarball: bytes, key: bytes | None,
             created: float) -> None:
        tar_sum = self.put_blob(tarball)
        spec = gzip.compress(json.dumps(spec_document(lock, entry, tar_sum)).encode(), mtime=0)
        spec_sum = self.put_blob(spec)
        manifest = {"version": 3, "data": [
            {"contentLength": len(tarball), "mediaType": TARBALL_MEDIA, "compression": "gzip",
             "checksumAlgorithm": "sha256", "checksum": tar_sum},
            {"contentLength": len(spec), "mediaType": SPEC_MEDIA, "compression": "gzip",
             "checksumAlgorithm": "sha256", "checksum": spec_sum}]}
        text = json.dumps(manifest, indent=1)
        self.store.put(self.manifest_key(entry), (clearsign(text, key) if key else text + "\n").encode(), created)
        if not self.store.exists("v3/layout.json"):
            self.store.put("v3/layout.json", (json.dumps({"signing": "signed" if key else "unsigned"}) + "\n").encode())

    def update_index(self) -> int:
        installs: dict[str, Any] = {}
        for key in self.store.list("v3/manifests/spec/"):
            if not key.endswith(".spec.manifest.json"):
                continue
            manifest = json.loads(unsign((self.store.get(key) or b"{}").decode()))
            for item in manifest.get("data", []):
                if item["mediaType"].startswith("application/vnd.spack.spec."):
                    document = json.loads(gzip.decompress(self.blob(item["checksum"])))
                    root = document["spec"]["nodes"][0]
                    installs[root["hash"]] = {"spec": root, "ref_count": 0, "in_buildcache": True}
        data = json.dumps({"database": {"version": "8", "installs": installs}}).encode()
        checksum = self.put_blob(data)
        self.store.put("v3/manifests/index/index.manifest.json", (json.dumps({"version": 3, "data": [
            {"contentLength": len(data), "mediaType": DB_MEDIA, "compression": "none",
             "checksumAlgorithm": "sha256", "checksum": checksum}]}, indent=1) + "\n").encode())
        return len(installs)

    def keys(self) -> int:
        return len([k for k in self.store.list("v3/manifests/key/") if k.endswith(".key.manifest.json")])


def DirectoryCache(root: Path) -> V3Cache:
    """The v3 layout in a folder (the name earlier callers use)."""
    return V3Cache(FileStore(root))


def unsign(text: str) -> str:
    if text.startswith("-----BEGIN PGP SIGNED MESSAGE-----"):
        body = text.split("\n\n", 1)[1]
        return body.split("\n-----BEGIN PGP SIGNATURE-----", 1)[0]
    return text


class OciCache:
    """An OCI registry as a build cache (Spack's tags `<name>-<version>-<hash>.spack`, index `index.spack`)."""

    def __init__(self, url: str):
        scheme = "http" if url.startswith("oci+http://") else "https"
        rest = url.split("://", 1)[1]
        host, _, name = rest.partition("/")
        self.base = f"{scheme}://{host}/v2/{name}"

    def request(self, method: str, url: str, data: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
        req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as response:
                return response.status, response.read(), response.headers
        except urllib.error.HTTPError as error:
            return error.code, error.read(), error.headers

    def tag(self, entry: dict[str, Any]) -> str:
        return f"{entry['name']}-{entry['version']}-{entry['hash']}.spack"

    def manifest(self, tag: str) -> dict[str, Any] | None:
        status, body, _ = self.request("GET", f"{self.base}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
        return json.loads(body) if status == 200 else None

    def blob(self, digest: str) -> bytes:
        status, body, _ = self.request("GET", f"{self.base}/blobs/{digest}")
        if status != 200:
            sys.exit(f"==> Error: blob {digest} is missing from {self.base} (HTTP {status})")
        return body

    def put_blob(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        status, _, _ = self.request("HEAD", f"{self.base}/blobs/{digest}")
        if status == 200:
            return digest
        status, body, headers = self.request("POST", f"{self.base}/blobs/uploads/")
        if status != 202:
            sys.exit(f"==> Error: the registry refused an upload (HTTP {status}): {body[:200]!r}")
        location = urllib.parse.urljoin(self.base, headers["Location"])
        joiner = "&" if "?" in location else "?"
        status, body, _ = self.request("PUT", f"{location}{joiner}digest={digest}", data=data,
                                       headers={"Content-Type": "application/octet-stream"})
        if status != 201:
            sys.exit(f"==> Error: the registry refused a blob (HTTP {status}): {body[:200]!r}")
        return digest

    def put_manifest(self, tag: str, manifest: dict[str, Any]) -> None:
        status, body, _ = self.request("PUT", f"{self.base}/manifests/{tag}", data=json.dumps(manifest).encode(),
                                       headers={"Content-Type": OCI_MANIFEST})
        if status != 201:
            sys.exit(f"==> Error: the registry refused the manifest {tag} (HTTP {status}): {body[:200]!r}")

    def has(self, entry: dict[str, Any]) -> bool:
        status, _, _ = self.request("HEAD", f"{self.base}/manifests/{self.tag(entry)}",
                                    headers={"Accept": OCI_MANIFEST})
        return status == 200

    def fetch(self, entry: dict[str, Any]) -> bytes | None:
        manifest = self.manifest(self.tag(entry))
        if manifest is None:
            return None
        return self.blob(manifest["layers"][-1]["digest"])

    def push(self, lock: dict[str, Any], entry: dict[str, Any], tarball: bytes, key: bytes | None,
             created: float) -> None:
        layers = []
        for dependency in reversed(closure(lock, entry)[1:]):
            dep_manifest = self.manifest(self.tag(dependency))
            if dep_manifest is not None:
                layers.append(dep_manifest["layers"][-1])
        digest = self.put_blob(tarball)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest,
                       "size": len(tarball)})
        config = {"architecture": {"aarch64": "arm64", "x86_64": "amd64"}.get(platform.machine(), "amd64"),
                  "os": "linux", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)),
                  "rootfs": {"type": "layers", "diff_ids": []}, "config": {"Env": []},
                  **spec_document(lock, entry, digest.split(":", 1)[1])}
        config_bytes = json.dumps(config).encode()
        config_digest = self.put_blob(config_bytes)
        self.put_manifest(self.tag(entry), {
            "mediaType": OCI_MANIFEST, "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                       "size": len(config_bytes)},
            "layers": layers, "annotations": {"org.opencontainers.image.description": entry["name"]}})

    def update_index(self) -> int:
        status, body, _ = self.request("GET", f"{self.base}/tags/list")
        tags = (json.loads(body).get("tags") or []) if status == 200 else []
        installs: dict[str, Any] = {}
        for tag in tags:
            if not tag.endswith(".spack") or tag == "index.spack":
                continue
            manifest = self.manifest(tag)
            if manifest is None:
                continue
            config = json.loads(self.blob(manifest["config"]["digest"]))
            root = config["spec"]["nodes"][0]
            installs[root["hash"]] = {"spec": root, "ref_count": 0, "in_buildcache": True}
        index = json.dumps({"database": {"version": "8", "installs": installs}}).encode()
        index_digest = self.put_blob(index)
        empty_digest = self.put_blob(b"{}")
        self.put_manifest("index.spack", {
            "mediaType": OCI_MANIFEST, "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": empty_digest, "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": index_digest,
                        "size": len(index)}]})
        return len(installs)

    def keys(self) -> int:
        return 0


def push(env: Path, mirror: str, *, unsigned: bool, update_index: bool) -> None:
    url, endpoint = mirror_url(mirror)
    cache = open_cache(url, endpoint)
    lock = load_lock(env)
    _, _, tree, _ = read_yaml_specs(env)
    key = None if unsigned else signing_key()
    if not unsigned and key is None:
        sys.exit("==> Error: no signing key in the keyring; use --unsigned or `spack gpg trust KEY`")
    if isinstance(cache, OciCache):
        key = None  # Spack does not sign OCI build caches
    pushed = skipped = 0
    created = time.time()
    for entry in topological(lock):
        if cache.has(entry):
            skipped += 1
            continue
        cache.push(lock, entry, tar_prefix(prefix_of(tree, entry)), key, created)
        pushed += 1
        say(f"Pushed {entry['name']}@{entry['version']}/{entry['hash'][:7]}")
    say(f"Pushed {pushed} spec(s), {skipped} already in {url}")
    if update_index:
        say(f"Updated the index of {url}: {cache.update_index()} spec(s)")


def gpg_trust(path: Path) -> None:
    """Keep the key in the (temporary) keyring folder; print only a fingerprint, never the key."""
    data = path.read_bytes()
    if b"-----BEGIN PGP" not in data:
        sys.exit("==> Error: the key file is not an armored OpenPGP key")
    home = Path(os.environ.get("SPACK_GNUPGHOME", STATE / "gpg"))
    home.mkdir(parents=True, exist_ok=True)
    (home / "secret.key").write_bytes(data)
    (home / "secret.key").chmod(0o600)
    say(f"Trusted key {hashlib.sha256(data).hexdigest()[:40].upper()}")


def activate(env: Path) -> None:
    _, _, _, view = read_yaml_specs(env)
    lines = [f"export SPACK_ENV={env}"]
    if view:
        lines += [f"export PATH={view}/bin:$PATH",
                  f"export LD_LIBRARY_PATH={view}/lib${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"]
    print("\n".join(lines))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="spack", description="stand-in for the few Spack commands our "
                                     "generated Dockerfile calls (local runs and tests only)")
    parser.add_argument("-e", dest="env", default=os.environ.get("SPACK_ENV"))
    parser.add_argument("-C", dest="config_scopes", action="append", default=[],
                        help="a configuration scope folder (as Spack's -C; must exist)")
    sub = parser.add_subparsers(dest="command", required=True)
    mirror = sub.add_parser("mirror").add_subparsers(dest="action", required=True).add_parser("add")
    mirror.add_argument("--scope")
    mirror.add_argument("--signed", action="store_true")
    mirror.add_argument("--unsigned", action="store_true")
    mirror.add_argument("--autopush", action="store_true")
    mirror.add_argument("--s3-endpoint-url", dest="endpoint")
    mirror.add_argument("name")
    mirror.add_argument("url")
    cache = sub.add_parser("buildcache").add_subparsers(dest="action", required=True)
    keys = cache.add_parser("keys")
    keys.add_argument("--install", action="store_true")
    keys.add_argument("--trust", action="store_true")
    push_cmd = cache.add_parser("push")
    push_cmd.add_argument("--unsigned", action="store_true")
    push_cmd.add_argument("--update-index", action="store_true")
    push_cmd.add_argument("mirror")
    index = cache.add_parser("update-index")
    index.add_argument("mirror")
    sub.add_parser("concretize")
    install_cmd = sub.add_parser("install")
    install_cmd.add_argument("--fail-fast", action="store_true")
    install_cmd.add_argument("--no-checksum", action="store_true")
    install_cmd.add_argument("--keep-stage", action="store_true")
    for finder in ("compiler", "external"):  # `spack compiler find`, `spack external find`: nothing to detect here
        sub.add_parser(finder).add_subparsers(dest="action", required=True).add_parser("find")
    gc = sub.add_parser("gc")
    gc.add_argument("-y", action="store_true")
    gpg = sub.add_parser("gpg").add_subparsers(dest="action", required=True).add_parser("trust")
    gpg.add_argument("keyfile")
    env_cmd = sub.add_parser("env").add_subparsers(dest="action", required=True).add_parser("activate")
    env_cmd.add_argument("--sh", action="store_true")
    env_cmd.add_argument("-d", dest="directory", default=".")
    args = parser.parse_args(argv)
    for scope in args.config_scopes:
        if not Path(scope).is_dir():
            sys.exit(f"==> Error: the configuration scope {scope} is not a folder")
    env = Path(args.env or ".").resolve()
    if args.command == "mirror":
        add_mirror(args.name, args.url, autopush=args.autopush, signed=args.signed and not args.unsigned,
                   endpoint=args.endpoint)
    elif args.command == "buildcache" and args.action == "keys":
        found = sum(open_cache(item["url"], item.get("endpoint")).keys() for item in mirrors().values())
        say(f"Installed and trusted {found} key(s)")
    elif args.command == "buildcache" and args.action == "push":
        push(env, args.mirror, unsigned=args.unsigned, update_index=args.update_index)
    elif args.command == "buildcache":
        say(f"Updated the index: {open_cache(*mirror_url(args.mirror)).update_index()} spec(s)")
    elif args.command == "concretize":
        concretize(env)
    elif args.command == "install":
        return install(env, fail_fast=args.fail_fast)
    elif args.command in ("compiler", "external"):
        say(f"{args.command} find: nothing new found (stand-in)")
    elif args.command == "gc":
        say("There are no unused specs. Spack's store is clean.")
    elif args.command == "gpg":
        gpg_trust(Path(args.keyfile))
    elif args.command == "env":
        activate(Path(args.directory).resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
