"""The `oras` kind: the HPC image file as an ORAS artifact, so `apptainer pull oras://REGISTRY/NAME:TAG` works.

Apptainer reads a manifest with one layer of media type `application/vnd.sylabs.sif.layer.v1.sif`
(config `application/vnd.sylabs.sif.config.v1+json`), the file name in the layer's
`org.opencontainers.image.title`; that is what is pushed for a `.sif` file, and nothing else is in
that manifest (Apptainer refuses a manifest with more than one SIF layer). A SquashFS file
(Charliecloud's format) gets its own media type, so no client mistakes it for a SIF.
The file's detached signature and its provenance are attached to that manifest (see registry.py),
and the provenance is also in the manifest's annotations.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from ci.docker.oci import CHUNK, OCI_MANIFEST, Descriptor, canonical, sha256_digest
from ci.publish.base import Prepared, PublishError, kind
from ci.publish.catalog import Entry
from ci.publish.provenance import MEDIA_TYPE as PROVENANCE
from ci.publish.registry import SIGNATURE, TITLE, RegistryPublisher, settle

SIF_LAYER = "application/vnd.sylabs.sif.layer.v1.sif"
SIF_CONFIG = "application/vnd.sylabs.sif.config.v1+json"
SQUASHFS_LAYER = "application/vnd.containers-ci.squashfs.v1"
SQUASHFS_CONFIG = "application/vnd.containers-ci.squashfs.config.v1+json"
CONFIG = b"{}"
HASHED_CHUNK = 4 * CHUNK  # what the hashing threads get at a time while the file streams


def media_types(file_name: str) -> tuple[str, str]:
    """(layer, config) media types of an HPC image file, by its suffix."""
    return (SIF_LAYER, SIF_CONFIG) if file_name.endswith(".sif") else (SQUASHFS_LAYER, SQUASHFS_CONFIG)


@kind("oras")
class OrasPublisher(RegistryPublisher):
    """The HPC image file, pushed as a one-layer OCI artifact."""

    def publish(self, item: Prepared) -> Entry:
        if item.file is None:
            raise PublishError(f"target {self.name}: no image file to publish for {item.name}")
        repo = self.repository(item.name)
        layer_type, config_type = media_types(item.file_name)
        # the config blob (the same `{}` every time: a HEAD once it is there) goes up beside the file
        config = [self.together_with(partial(self._push_small, repo, CONFIG, True))]
        try:
            if item.hashed:  # an earlier target read the file: the registry may have the blob already
                self._sent(self.client.push_blob(repo, f"sha256:{item.sha256}", item.size, item.file))
            else:  # streamed while its digest is computed and gpg signs it; the registry checks the digest
                self._sent(self.client.stream_blob(repo, item.chunks(HASHED_CHUNK), lambda: f"sha256:{item.sha256}"))
        finally:
            self._sent(sum(settle(config)))
        file_digest = f"sha256:{item.sha256}"
        annotations = {"org.opencontainers.image.created": item.published,
                       "org.opencontainers.image.version": item.version,
                       "org.opencontainers.image.title": item.name,
                       "org.opencontainers.image.revision": str(_source_commit(item)),
                       "io.containers-ci.definition.digest": item.digest,
                       "io.containers-ci.run": str(item.result.get("run_id") or ""),
                       "io.containers-ci.tests": ",".join(
                           f"{t.get('name')}={'pass' if t.get('passed') else 'fail'}"
                           for t in item.result.get("tests") or [] if isinstance(t, Mapping))}
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": Descriptor(config_type, sha256_digest(CONFIG), len(CONFIG)).as_dict(),
                    "layers": [Descriptor(layer_type, file_digest, item.size, {TITLE: item.file_name}).as_dict()],
                    "annotations": annotations}
        body = canonical(manifest)
        digest = sha256_digest(body)
        provenance = item.provenance({"name": item.file_name, "sha256": item.sha256, "size": item.size,
                                      "digest": digest, "location": f"oras://{self.target.address}/{repo}"})
        provenance_signature = item.sign(provenance)
        layers = [(PROVENANCE, provenance, "provenance.json")]
        if provenance_signature is not None:
            layers.append((SIGNATURE, provenance_signature, "provenance.json.asc"))
        if item.file_signature is not None:
            layers.append((SIGNATURE, item.file_signature, f"{item.file_name}.asc"))
        # the tags are written together with the attachment's blobs (the attachment's manifest, which
        # names the tagged manifest as its subject, follows them)
        tags = [partial(self._put_manifest, repo, tag, body, OCI_MANIFEST) for tag in self.tags(item)]
        attached = self.attach(repo, Descriptor(OCI_MANIFEST, digest, len(body)), layers, alongside=tags)
        return Entry(name=item.name, md5sum=item.md5, sha256=item.sha256, size=item.size, version=item.version,
                     digest=item.digest, arch=item.arch, published=item.published, file=f"{repo}@{digest}",
                     manifest=digest, tags=self.tags(item), provenance=attached,
                     signature=attached if item.file_signature else None,
                     provenance_signature=attached if provenance_signature else None,
                     description=self.target.descriptions.get(item.name, f"{item.name} {item.version} ({item.arch})"),
                     pull=f"apptainer pull oras://{self.target.address}/{repo}:{item.version}-{item.digest12}")

    def check_content(self, repo: str, entry: Entry, manifest: Mapping[str, Any], body: bytes,
                      valid: Callable[[Path | bytes, bytes], bool] | None) -> list[str]:
        """The one file layer is the catalog's file (md5, sha256, size read back), signed; provenance attached."""
        import hashlib

        layers = manifest.get("layers") or []
        if len(layers) != 1:
            return [f"bad manifest: {entry.file} has {len(layers)} layers (Apptainer needs exactly one)"]
        layer = layers[0]
        problems = []
        with tempfile.NamedTemporaryFile(prefix="ci-verify-") as handle:
            md5, sha = hashlib.md5(), hashlib.sha256()
            try:
                for chunk in self.client.blob_stream(repo, layer["digest"]):
                    md5.update(chunk)
                    sha.update(chunk)
                    handle.write(chunk)
            except Exception as exc:
                return [f"checksum mismatch: {entry.file} ({exc})"]
            handle.flush()
            if handle.tell() != entry.size or md5.hexdigest() != entry.md5sum or sha.hexdigest() != entry.sha256:
                problems.append(f"checksum mismatch: {entry.file} (sha256 {sha.hexdigest()[:16]}…; the catalog "
                                f"lists {entry.sha256[:16]}…)")
            files = self.attachments(repo, entry.manifest or "") or {}
            problems += self._check_attached(entry, files, Path(handle.name), valid)
        return problems


def _source_commit(item: Prepared) -> str:
    try:
        return str(json.loads(item.provenance({})).get("source", {}).get("commit", ""))
    except ValueError:
        return ""
