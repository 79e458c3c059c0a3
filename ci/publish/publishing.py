"""Publishing as one operation: which tested images go to which target, in what order, and the outcome.

The same for every kind, so the publishers stay small:

- only a tested image is published (the caller hands the promoted result of `tested/`), only to
  the targets whose `images`/`arches` want it, and only when the target's catalog does not list its
  digest already with its file still there (`force` republishes);
- the HPC image file is fetched from the site and hashed once per image, and only when a target
  needs it (a second run fetches nothing);
- per image and target: the file (or OCI image), its signature and its provenance first, the
  catalog (signed, with the public key beside it) last; a failure leaves the catalog as it was;
- targets are independent: one failing target does not stop the others, and its outcome says why.

One `Publishing` serves a whole run (its signing keyring lives as long as it does) and may be called
from the executor's threads: publications to one target are serialised by a lock, because a
catalog is read, extended and written back.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from ci.config.publish import PublishSettings
from ci.errors import CIError
from ci.publish import provenance
from ci.publish.base import AnyTarget, Prepared, Publisher, SourceImage, open_publisher
from ci.publish.signing import Signer


@dataclass(frozen=True)
class TestedImage:
    """What the site holds for one tested image: its promoted result and how to get its file."""

    __test__: ClassVar[bool] = False  # not a pytest test class, despite its name

    result: Mapping[str, Any]  # tested/<name>/<stem>/result.json
    fetch: Callable[[], Path]  # the HPC image file, on this machine (fetched from the site when remote)
    source: SourceImage | None = None  # the OCI image in the site's registry
    cleanup: Callable[[], None] = lambda: None  # removes what `fetch` copied, once publishing is over

    @property
    def label(self) -> str:
        return f"{self.result.get('name')} {self.result.get('version')} ({str(self.result.get('digest'))[:12]})"


@dataclass(frozen=True)
class Outcome:
    target: str
    kind: str
    name: str
    version: str
    digest12: str
    state: str  # published, already published, failed
    where: str = ""
    pull: str = ""
    bytes_sent: int = 0
    seconds: float = 0.0
    error: str = ""

    def line(self) -> str:
        if self.state == "failed":
            return f"{self.target}: {self.name} {self.version} failed: {self.error}"
        if self.state == "already published":
            return f"{self.target}: {self.name} {self.version} already published ({self.pull})"
        return f"{self.target}: published {self.name} {self.version} in {self.seconds:.1f}s, " \
               f"{self.bytes_sent} bytes sent; pull: {self.pull}"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Publishing:
    """The configured targets (or the named ones) and the signing key, for one run."""

    def __init__(self, settings: PublishSettings, project_dir: Path, *, targets: Sequence[str] = (),
                 environ: Mapping[str, str] | None = None):
        self.settings = settings
        self.project_dir = project_dir
        self.environ = dict(os.environ if environ is None else environ)
        chosen = [settings.target(name) for name in targets] if targets else list(settings.targets)
        self.targets: list[AnyTarget] = chosen
        self._signer: Signer | None = None
        self._signer_loaded = False
        self._publishers: dict[str, Publisher] = {}
        self._locks: dict[str, threading.Lock] = {t.name: threading.Lock() for t in chosen}
        self._lock = threading.Lock()
        self._source = provenance.source_commit(project_dir)

    def __bool__(self) -> bool:
        return bool(self.targets)

    def __enter__(self) -> Publishing:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        for publisher in self._publishers.values():
            publisher.close()
        self._publishers.clear()
        if self._signer is not None:
            self._signer.close()
            self._signer = None

    @property
    def signer(self) -> Signer | None:
        with self._lock:
            if not self._signer_loaded:
                self._signer = Signer.from_settings(self.settings.signing, self.project_dir, self.environ)
                self._signer_loaded = True
            return self._signer

    def publisher(self, target: AnyTarget) -> Publisher:
        with self._lock:
            if target.name not in self._publishers:
                self._publishers[target.name] = open_publisher(target, self.environ)
            return self._publishers[target.name]

    def wanted(self, result: Mapping[str, Any]) -> list[AnyTarget]:
        return [t for t in self.targets if t.wants(str(result.get("name")), str(result.get("arch") or "amd64"))]

    def publish(self, image: TestedImage, *, force: bool = False) -> list[Outcome]:
        """Publish one tested image to every target that wants it and lacks it; one outcome per target."""
        result = image.result
        if result.get("verdict") != "tested":
            raise CIError(f"{image.label} is not tested (verdict {result.get('verdict')!r}); only tested "
                          "images are published")
        try:
            return self._publish(image, force)
        finally:
            image.cleanup()

    def _publish(self, image: TestedImage, force: bool) -> list[Outcome]:
        result = image.result
        outcomes: list[Outcome] = []
        prepared: Prepared | None = None
        for target in self.wanted(result):
            started = time.monotonic()
            base: dict[str, Any] = {"target": target.name, "kind": target.kind, "name": str(result["name"]),
                                    "version": str(result["version"]), "digest12": str(result["digest"])[:12]}
            try:
                publisher = self.publisher(target)
                with self._locks[target.name]:
                    catalog = publisher.read_catalog()
                    entry = catalog.find(str(result["name"]), str(result.get("arch") or "amd64"), str(result["digest"]))
                    if entry is not None and not force and publisher.present(entry):
                        outcomes.append(Outcome(**base, state="already published", where=entry.file, pull=entry.pull))
                        continue
                    if prepared is None or (publisher.needs_file and prepared.file is None):
                        prepared = self._prepare(image, with_file=publisher.needs_file, previous=prepared)
                    sent_before = publisher.bytes_sent
                    entry = publisher.publish(prepared)
                    publisher.write_catalog(catalog.with_entry(entry).model_copy(update={"updated": now()}),
                                            self.signer)
                outcomes.append(Outcome(**base, state="published", where=entry.file, pull=entry.pull,
                                        bytes_sent=publisher.bytes_sent - sent_before,
                                        seconds=round(time.monotonic() - started, 3)))
            except CIError as exc:
                outcomes.append(Outcome(**base, state="failed", error=str(exc),
                                        seconds=round(time.monotonic() - started, 3)))
        return outcomes

    def _prepare(self, image: TestedImage, *, with_file: bool, previous: Prepared | None) -> Prepared:
        """The publication of one image: its file (fetched only when a target needs it), its provenance
        maker, and a signer; the file's checksums and signature are computed by its first upload."""
        result = image.result
        signer = self.signer
        published = previous.published if previous else now()
        path = image.fetch() if with_file else None
        file_name = str(result.get("image_file") or (path.name if path else ""))

        def make_provenance(subject: Mapping[str, Any]) -> bytes:
            return provenance.to_bytes(provenance.record(result=result, subject=subject, source=self._source,
                                                         published=published))

        def sign(data: bytes) -> bytes | None:
            return signer.sign_bytes(data) if signer else None

        return Prepared(result=result, file=path, file_name=file_name, source=image.source, sign=sign,
                        provenance=make_provenance, published=published,
                        signing=signer.start if signer else (lambda _path: None))


def outcomes_json(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    return [asdict(outcome) for outcome in outcomes]


def summary(outcomes: Sequence[Outcome]) -> str:
    published = sum(1 for o in outcomes if o.state == "published")
    already = sum(1 for o in outcomes if o.state == "already published")
    failed = [o for o in outcomes if o.state == "failed"]
    text = f"published to {published} target(s), {already} already there"
    if failed:
        text += "; failed: " + "; ".join(f"{o.target}: {o.error}" for o in failed)
    return text


def dumps(outcomes: Sequence[Outcome]) -> str:
    return json.dumps(outcomes_json(outcomes), indent=2)
