"""What a Spack image is after its build: the concretized version, Spack's version and the spack.lock.

Spacktainers names an image after the concretized version of its first spec. That version exists
only once Spack has concretized, inside the build, so a definition whose first spec pins no version
is planned as `latest` (what its digest hashes) and, once built, takes the concretized version:
the build step (`ci.pipeline.steps.spack_image.finish`) reads the image's `spack.lock`, labels the image
with Spack's version, the lock's checksum and the roots, and tags it
`<name>:<concretized>-<digest12>` (the planned tag stays too, for the children of this run).
Later plans find that tag by the digest (`resolve_versions`), so the tag, the site's file names
and result.json follow the concretized version.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from ci.buildcache.records import LOCK_IN_IMAGE
from ci.errors import CIError
from ci.plan import KnownImage, Plan, PlannedImage, image_tag

PLACEHOLDER = "latest"  # the planned version of a Spack image whose first spec pins none
SPACK_VERSION_LABEL = "io.containers-ci.spack.version"
LOCK_LABEL = "io.containers-ci.spack.lock.sha256"
ROOTS_LABEL = "io.containers-ci.spack.roots"
_TAG_SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,100}\Z")


def waits_for_concretization(image: PlannedImage) -> bool:
    return image.spec.kind == "spack" and image.spec.version == PLACEHOLDER


def resolve_versions(plan: Plan, known: Callable[[], Iterable[KnownImage]] | None, registry_prefix: str) -> None:
    """Give planned Spack images the concretized version an earlier build tagged their digest with.

    `known` lists the engine's images (asked only when some image waits for its version).
    """
    waiting = [image for image in plan.images.values() if waits_for_concretization(image)]
    if not waiting or known is None:
        return
    tags_by_digest: dict[str, list[str]] = {}
    for item in known():
        tags_by_digest.setdefault(item.digest, []).extend(item.tags)
    for image in waiting:
        start = f"{registry_prefix}{image.name}:"
        end = f"-{image.digest12}"
        for tag in tags_by_digest.get(image.digest, []):
            version = tag[len(start):-len(end)] if tag.startswith(start) and tag.endswith(end) else ""
            if version and version != PLACEHOLDER and _TAG_SAFE.match(version):
                set_version(image, version, registry_prefix)
                break


def set_version(image: PlannedImage, version: str, registry_prefix: str) -> None:
    image.spec = replace(image.spec, version=version)
    image.tag = image_tag(image.spec, image.digest, registry_prefix)


def lock_facts(lock_text: str) -> dict[str, Any]:
    """Spack's version, the lock's checksum, the roots and the first root's version, from a spack.lock."""
    try:
        data = json.loads(lock_text)
        nodes = data.get("concrete_specs") or {}
        roots = [nodes[root["hash"]] for root in data.get("roots") or [] if root.get("hash") in nodes]
        spack = data.get("spack") or {}
    except (ValueError, AttributeError, TypeError, KeyError) as exc:
        raise CIError(f"{LOCK_IN_IMAGE} is not a spack.lock ({exc.__class__.__name__})") from None
    first = str(roots[0].get("version", "")) if roots else ""
    return {
        "spack_version": str(spack.get("version", "unknown")) if isinstance(spack, Mapping) else "unknown",
        "spack_commit": str(spack.get("commit", "")) if isinstance(spack, Mapping) else "",
        "lock_sha256": hashlib.sha256(lock_text.encode()).hexdigest(),
        "roots": [f"{r.get('name')}@{r.get('version')}/{str(r.get('hash', ''))[:7]}" for r in roots],
        "concretized_version": first if _TAG_SAFE.match(first) else None,
        "lock": lock_text,
    }


def labels(facts: Mapping[str, Any], version: str) -> dict[str, str]:
    """The labels a built Spack image gets from its spack.lock."""
    return {SPACK_VERSION_LABEL: str(facts["spack_version"]), LOCK_LABEL: str(facts["lock_sha256"]),
            ROOTS_LABEL: " ".join(facts["roots"])[:4000], "org.opencontainers.image.version": version}
