"""The `registry` kind: the tested OCI image, copied from the site's registry to a publishing registry.

The copy goes blob by blob over the distribution API (`ci.docker.oci`): a blob the target has is
not sent again (a HEAD first), so a change of one layer sends one layer. The image is tagged
`<version>`, `<version>-<digest12>` and, with `latest: true`, `latest`; its manifest is copied byte
for byte, so its digest (what `docker pull NAME@sha256:...` pins) is the one that was tested.

Signature and provenance travel as an OCI artifact attached to the manifest: a manifest whose
`subject` is the image, found through the referrers tag `sha256-<hex>` (OCI 1.1's scheme that
every registry serves); its layers are the provenance record and the detached signatures. The
target's catalog is an artifact too (`<prefix>containers-ci-catalog:<kind>`), written last.

`RegistryPublisher` is also the base of the `oras` kind, which differs only in what it pushes.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from ci.config.publish import OrasTarget, RegistryTarget
from ci.docker.oci import (
    INDEXES,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    OCIClient,
    RegistryError,
    canonical,
    manifest_blobs,
    referrers_tag,
    sha256_digest,
)
from ci.publish.base import Prepared, Publisher, PublishError, credential, kind
from ci.publish.catalog import Catalog, Entry, parse
from ci.publish.provenance import MEDIA_TYPE as PROVENANCE
from ci.publish.signing import Signer

CATALOG_REPOSITORY = "containers-ci-catalog"
CATALOG_TYPE = "application/vnd.containers-ci.catalog.v1+json"
ATTACHMENT_TYPE = "application/vnd.containers-ci.attestation.v1"
SIGNATURE = "application/pgp-signature"
PUBLIC_KEY = "application/pgp-keys"
TITLE = "org.opencontainers.image.title"
EMPTY = b"{}"
PARALLEL = 4  # registry calls at once (small blobs, tags, layers); the file itself is one stream
T = TypeVar("T")


def settle(futures: Sequence[Future[T]]) -> list[T]:
    """The results in order, once every call has stopped (the first failure raised then)."""
    wait(futures)
    return [future.result() for future in futures]


class RegistryPublisher(Publisher):
    """A prefix of one registry; subclasses say what one image becomes there (`_push`)."""

    target: RegistryTarget | OrasTarget

    def __init__(self, target: RegistryTarget | OrasTarget, environ: Mapping[str, str]):
        super().__init__(target, environ)
        self.client = OCIClient(target.address, insecure=target.insecure,
                                username=credential(environ, target.username_env, target.name, "username"),
                                password=credential(environ, target.token_env, target.name, "token"))
        self._pool: ThreadPoolExecutor | None = None
        self._count = threading.Lock()
        self._known: set[tuple[str, str]] = set()  # (repository, digest) of blobs there, seen in this run
        # digest -> a repository of this target that holds the blob (seen in this run): another image's
        # copy mounts it from there (the registry links it, nothing is sent) instead of uploading it again
        self._homes: dict[str, str] = {}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.client.close()

    def together(self, calls: Sequence[Callable[[], T]]) -> list[T]:
        """Independent registry calls at once, their results in order; the first failure is raised once
        all have stopped. Why: each small blob is two round trips and a write (an fsync) at the
        registry; one after the other, a publication's signatures, provenance and catalog took as long
        as uploading a 64 MiB file."""
        if len(calls) <= 1:
            return [call() for call in calls]
        return settle([self.together_with(call) for call in calls])

    def together_with(self, call: Callable[[], T]) -> Future[T]:
        """`call` on the publisher's pool while the caller goes on (`settle` waits for it). A call on the
        pool never waits for another one (no nesting), so the pool cannot run out of threads."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="registry")
        return self._pool.submit(call)

    def push_blobs(self, repo: str, blobs: Sequence[tuple[bytes, bool]]) -> None:
        """Small blobs `(bytes, check first)` at once; `check=False` for content new by construction."""
        self._sent(sum(self.together([partial(self._push_small, repo, data, check) for data, check in blobs])))

    def _push_small(self, repo: str, data: bytes, check: bool) -> int:
        """One small blob unless this run already pushed it there or saw it there (`{}`, the public
        key: the same in every publication); returns the bytes sent."""
        digest = sha256_digest(data)
        with self._count:
            if (repo, digest) in self._known:
                return 0
        sent = self.client.push_blob(repo, digest, len(data), data, check=check)
        with self._count:
            self._known.add((repo, digest))
        return sent

    def _put_manifest(self, repo: str, reference: str, body: bytes, media_type: str) -> int:
        self.client.put_manifest(repo, reference, body, media_type)
        return len(body)

    def put_tags(self, repo: str, tags: Sequence[str], body: bytes, media_type: str) -> None:
        self._sent(sum(self.together([partial(self._put_manifest, repo, tag, body, media_type) for tag in tags])))

    @property
    def catalog_repository(self) -> str:
        return f"{self.target.prefix}{CATALOG_REPOSITORY}"

    def repository(self, name: str) -> str:
        return f"{self.target.prefix}{name}"

    def _reference(self, repo: str, tag: str) -> str:
        return f"{self.target.address}/{repo}:{tag}"

    def _sent(self, amount: int) -> None:
        with self._count:
            self.bytes_sent += amount

    # ---- artifacts: a manifest of small blobs (catalog, attachments) -----------------------------

    def push_artifact(self, repo: str, tag: str, artifact_type: str, layers: list[tuple[str, bytes, str]],
                      subject: Descriptor | None = None, config_type: str = OCI_EMPTY,
                      annotations: Mapping[str, str] | None = None,
                      alongside: Sequence[Callable[[], int]] = ()) -> Descriptor:
        """Push blobs `(media type, bytes, title)` and a manifest over them, tagged `tag`. The blobs go
        up at once, with the `alongside` calls (each returns the bytes it sent)."""
        # signatures, provenance and catalogs are new by construction (they carry a time): no HEAD first
        blobs = [(EMPTY, True), *((data, media_type == PUBLIC_KEY) for media_type, data, _ in layers)]
        calls: list[Callable[[], int]] = [partial(self._push_small, repo, data, check) for data, check in blobs]
        self._sent(sum(self.together([*calls, *alongside])))
        descriptors = [Descriptor(media_type, sha256_digest(data), len(data), {TITLE: title}).as_dict()
                       for media_type, data, title in layers]
        manifest: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
                                    "config": Descriptor(config_type, sha256_digest(EMPTY), len(EMPTY)).as_dict(),
                                    "layers": descriptors}
        if subject is not None:
            manifest["subject"] = subject.as_dict()
        if annotations:
            manifest["annotations"] = dict(annotations)
        body = canonical(manifest)
        self.client.put_manifest(repo, tag, body, OCI_MANIFEST)
        self._sent(len(body))
        return Descriptor(OCI_MANIFEST, sha256_digest(body), len(body))

    def artifact_layers(self, repo: str, reference: str, only: tuple[str, ...] = ()
                        ) -> dict[str, tuple[Descriptor, bytes]] | None:
        """The layers of an artifact by title (those titled `only`, if given): (descriptor, bytes), or
        None when it is not there."""
        found = self.client.manifest(repo, reference)
        if found is None:
            return None
        manifest = json.loads(found[0])
        layers = {}
        for descriptor in manifest_blobs(manifest)[1:]:
            title = (descriptor.annotations or {}).get(TITLE, descriptor.digest)
            if not only or title in only:
                layers[title] = (descriptor, self.client.blob(repo, descriptor.digest))
        return layers

    def attach(self, repo: str, subject: Descriptor, layers: list[tuple[str, bytes, str]],
               alongside: Sequence[Callable[[], int]] = ()) -> str:
        """Attach signatures and provenance to `subject`: an artifact plus the referrers index that names
        it (`alongside`: calls made together with the artifact's blobs, such as the subject's tags)."""
        content = hashlib.sha256(b"".join(data for _, data, _ in layers)).hexdigest()[:12]
        attachment = self.push_artifact(repo, f"att-{subject.digest[7:19]}-{content}", ATTACHMENT_TYPE, layers,
                                        subject=subject, alongside=alongside)
        index = canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {**attachment.as_dict(), "artifactType": ATTACHMENT_TYPE}]})
        self.client.put_manifest(repo, referrers_tag(subject.digest), index, OCI_INDEX)
        self._sent(len(index))
        return f"{repo}:{referrers_tag(subject.digest)}"

    def attachments(self, repo: str, digest: str) -> dict[str, bytes] | None:
        """The attached files of a manifest by title, or None when nothing is attached."""
        found = self.client.manifest(repo, referrers_tag(digest))
        if found is None:
            return None
        files: dict[str, bytes] = {}
        for item in json.loads(found[0]).get("manifests", []):
            layers = self.artifact_layers(repo, item["digest"]) or {}
            files.update({title: data for title, (_, data) in layers.items()})
        return files

    # ---- the catalog -----------------------------------------------------------------------------

    def _catalog_layers(self, only: tuple[str, ...] = ()) -> dict[str, tuple[Descriptor, bytes]] | None:
        return self.artifact_layers(self.catalog_repository, self.kind_name, only)

    def read_catalog(self) -> Catalog:
        layers = self._catalog_layers(("catalog.json",))
        if layers is None or "catalog.json" not in layers:
            return Catalog(source_url=f"{self.target.address}/{self.target.prefix}")
        return parse(layers["catalog.json"][1], f"{self.target.address}/{self.catalog_repository}:{self.kind_name}")

    def write_catalog(self, catalog: Catalog, signer: Signer | None) -> None:
        catalog = catalog.model_copy(update={"source_url": f"{self.target.address}/{self.target.prefix}",
                                             "public_key": "pgp-public.asc" if signer else None})
        data = catalog.to_bytes()
        layers = [(CATALOG_TYPE, data, "catalog.json")]
        if signer is not None:
            layers += [(SIGNATURE, signer.sign_bytes(data), "catalog.json.asc"),
                       (PUBLIC_KEY, signer.public_key(), "pgp-public.asc")]
        self.push_artifact(self.catalog_repository, self.kind_name, CATALOG_TYPE, layers)

    def public_key(self) -> bytes | None:
        layers = self._catalog_layers(("pgp-public.asc",)) or {}
        return layers["pgp-public.asc"][1] if "pgp-public.asc" in layers else None

    def catalog_problems(self, valid: Callable[[Path | bytes, bytes], bool]) -> list[str]:
        layers = self._catalog_layers()
        if layers is None:
            return []
        where = f"{self.catalog_repository}:{self.kind_name}"
        if "catalog.json.asc" not in layers:
            return [f"missing: the catalog's signature ({where})"]
        return [] if valid(layers["catalog.json"][1], layers["catalog.json.asc"][1]) \
            else [f"bad signature: the catalog's signature does not sign it ({where})"]

    # ---- one image ----------------------------------------------------------------------------

    def tags(self, item: Prepared) -> list[str]:
        tags = [f"{item.version}-{item.digest12}", item.version]
        return [*tags, "latest"] if self.target.latest else tags

    def present(self, entry: Entry) -> bool:
        repo = entry.file.split("@", 1)[0]
        try:
            return entry.manifest is not None and \
                self.client.manifest_digest(repo, f"{entry.version}-{entry.digest12}") == entry.manifest
        except RegistryError:
            return False

    def remove(self, entry: Entry) -> None:
        repo = entry.file.split("@", 1)[0]
        if entry.manifest:
            index = self.client.manifest(repo, referrers_tag(entry.manifest))
            if index is not None:
                for item in json.loads(index[0]).get("manifests", []):
                    self.client.delete_manifest(repo, item["digest"])
                self.client.delete_manifest(repo, index[2])
            self.client.delete_manifest(repo, entry.manifest)

    def problems(self, catalog: Catalog, valid: Callable[[Path | bytes, bytes], bool] | None) -> list[str]:
        found: list[str] = []
        expected: dict[str, set[str]] = {}
        moving: set[tuple[str, str]] = set()  # (repo, tag) of tags that follow the newest publication
        for entry in catalog.containers:
            repo = entry.file.split("@", 1)[0]
            tags = expected.setdefault(repo, set())
            if entry.manifest is None:
                found.append(f"unreadable: the catalog entry of {entry.name} {entry.version} names no manifest")
                continue
            tags.add(referrers_tag(entry.manifest))
            tags.update(entry.tags)
            moving.update((repo, tag) for tag in entry.tags if tag in (entry.version, "latest"))
            try:
                found += self._check_entry(repo, entry, valid)
            except RegistryError as exc:
                found.append(f"unreadable: {entry.file} ({exc})")
        listed = {entry.manifest for entry in catalog.containers}
        repositories = self.client.repositories()
        names = set(expected) if repositories is None else set(expected) | {
            r for r in repositories if r.startswith(self.target.prefix) and r != self.catalog_repository}
        for repo in sorted(names):
            for tag in sorted(self.client.tags(repo)):
                if tag.startswith("att-"):
                    continue  # attachments are checked through their subject's referrers tag
                if tag not in expected.get(repo, set()):
                    found.append(f"not in the catalog: {self._reference(repo, tag)}")
                elif (repo, tag) in moving and self.client.manifest_digest(repo, tag) not in listed:
                    found.append(f"not in the catalog: {self._reference(repo, tag)} points at an unlisted manifest")
        return found

    def _check_entry(self, repo: str, entry: Entry, valid: Callable[[Path | bytes, bytes], bool] | None
                     ) -> list[str]:
        assert entry.manifest is not None
        pinned = f"{entry.version}-{entry.digest12}"
        found = self.client.manifest(repo, entry.manifest)
        if found is None:
            return [f"missing: {entry.file} (listed for {entry.name} {entry.version})"]
        problems = []
        if self.client.manifest_digest(repo, pinned) != entry.manifest:
            problems.append(f"missing: tag {self._reference(repo, pinned)} does not point at {entry.manifest}")
        problems += self.check_content(repo, entry, json.loads(found[0]), found[0], valid)
        return problems

    def check_content(self, repo: str, entry: Entry, manifest: Mapping[str, Any], body: bytes,
                      valid: Callable[[Path | bytes, bytes], bool] | None) -> list[str]:
        """The image's blobs are all there and whole; its provenance is attached and signed."""
        problems = []
        for child_repo, child in self._image_manifests(repo, manifest):
            for blob in manifest_blobs(child):
                try:
                    for _ in self.client.blob_stream(child_repo, blob.digest):
                        pass
                except RegistryError as exc:
                    problems.append(f"checksum mismatch: {entry.file} blob {blob.digest[:19]}… ({exc})")
        if hashlib.md5(body).hexdigest() != entry.md5sum:
            problems.append(f"checksum mismatch: {entry.file} (the manifest's md5 is not the catalog's)")
        files = self.attachments(repo, entry.manifest or "") or {}
        problems += self._check_attached(entry, files, None, valid)
        return problems

    def _check_attached(self, entry: Entry, files: Mapping[str, bytes], content: Path | None,
                        valid: Callable[[Path | bytes, bytes], bool] | None) -> list[str]:
        problems = []
        if "provenance.json" not in files:
            problems.append(f"missing: the provenance attached to {entry.file}")
        elif valid is not None:
            if "provenance.json.asc" not in files:
                problems.append(f"unsigned: the provenance of {entry.file}")
            elif not valid(files["provenance.json"], files["provenance.json.asc"]):
                problems.append(f"bad signature: the provenance of {entry.file}")
            else:
                subject = json.loads(files["provenance.json"]).get("subject", {})
                if subject.get("digest") not in (entry.manifest, f"sha256:{entry.sha256}"):
                    problems.append(f"bad provenance: {entry.file}'s provenance names another subject")
        if content is not None and valid is not None:
            signature = next((data for title, data in files.items()
                              if title.endswith(".asc") and not title.startswith("provenance")), None)
            if signature is None:
                problems.append(f"unsigned: {entry.file} (no signature attached)")
            elif not valid(content, signature):
                problems.append(f"bad signature: the signature attached to {entry.file} does not sign it")
        return problems

    def _image_manifests(self, repo: str, manifest: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
        if manifest.get("mediaType") in INDEXES or "manifests" in manifest:
            for child in manifest.get("manifests", []):
                found = self.client.manifest(repo, child["digest"])
                if found is not None:
                    yield repo, json.loads(found[0])
        else:
            yield repo, manifest


@kind("registry")
class ImageRegistryPublisher(RegistryPublisher):
    """The tested OCI image, copied from the site's registry."""

    needs_file = False

    def publish(self, item: Prepared) -> Entry:
        source = item.source
        if source is None:
            raise PublishError(f"target {self.name}: no source image for {item.name} (the site's registry)")
        repo = self.repository(item.name)
        with OCIClient(source.address, insecure=source.insecure, username=source.username,
                       password=source.password) as origin:
            found = origin.manifest(source.repository, source.tag)
            if found is None:
                raise PublishError(f"target {self.name}: the tested image {source.address}/{source.repository}:"
                                   f"{source.tag} is no longer in the site's registry; rebuild it (--force)")
            body, media_type, digest = found
            manifest = json.loads(body)
            size = self._copy(origin, source.repository, repo, manifest)
        self.put_tags(repo, self.tags(item), body, media_type)
        subject = Descriptor(media_type, digest, len(body))
        provenance = item.provenance({"name": f"{self.target.address}/{repo}", "digest": digest,
                                      "mediaType": media_type})
        layers = [(PROVENANCE, provenance, "provenance.json")]
        signature = item.sign(provenance)
        if signature is not None:
            layers.append((SIGNATURE, signature, "provenance.json.asc"))
        attached = self.attach(repo, subject, layers)
        return Entry(name=item.name, md5sum=hashlib.md5(body).hexdigest(), sha256=digest[7:], size=size,
                     version=item.version, digest=item.digest, arch=item.arch, published=item.published,
                     file=f"{repo}@{digest}", manifest=digest, tags=self.tags(item), provenance=attached,
                     provenance_signature=attached if signature else None, signature=attached if signature else None,
                     description=self.target.descriptions.get(item.name, f"{item.name} {item.version} ({item.arch})"),
                     pull=f"docker pull {self.target.address}/{repo}:{item.version}-{item.digest12}")

    def _copy(self, origin: OCIClient, source_repo: str, repo: str, manifest: Mapping[str, Any]) -> int:
        """Copy the blobs (and child manifests of an index) the target lacks; returns the image's size."""
        total = 0
        if manifest.get("mediaType") in INDEXES or "manifests" in manifest:
            for child in manifest.get("manifests", []):
                found = origin.manifest(source_repo, child["digest"])
                if found is None:
                    raise PublishError(f"target {self.name}: {source_repo}@{child['digest']} is missing at the source")
                total += self._copy(origin, source_repo, repo, json.loads(found[0]))
                self.client.put_manifest(repo, child["digest"], found[0], found[1])
                self._sent(len(found[0]))
            return total
        blobs = manifest_blobs(manifest)
        self.together([partial(self._copy_blob, origin, source_repo, repo, blob) for blob in blobs])
        return total + sum(blob.size for blob in blobs)

    def _copy_blob(self, origin: OCIClient, source_repo: str, repo: str, blob: Descriptor) -> None:
        """One blob, unless the target has it: mounted from another repository of the target that holds
        it (images of one stack share their base layers), else streamed from the site's registry."""
        if not self.client.has_blob(repo, blob.digest):
            self._sent(self.client.push_blob(repo, blob.digest, blob.size, origin.blob_stream(source_repo, blob.digest),
                                             mount_from=self._homes.get(blob.digest), check=False))
        self._homes.setdefault(blob.digest, repo)


__all__ = ["CATALOG_REPOSITORY", "ImageRegistryPublisher", "RegistryPublisher"]
