"""After a Spack image's build: labels from its spack.lock, and the tag of the concretized version.

The facts and the version rule are `ci.spack.images`; this is the part that talks to Docker.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ci.buildcache.records import LOCK_IN_IMAGE, extract_lock
from ci.docker.engine import BuildRequest, DockerEngine
from ci.plan import PlannedImage
from ci.spack.images import labels, lock_facts, waits_for_concretization


def finish(engine: DockerEngine, image: PlannedImage, log: Path) -> dict[str, Any]:
    """After a Spack image's build: label it from its spack.lock and tag the concretized version.

    Returns the build step's `spack` data (what result.json records). The labels go on with a
    `FROM <tag>` + LABEL build: metadata only, no layer, nothing runs in the image.
    """
    facts = lock_facts(extract_lock(list(engine.docker_cmd), image.tag))
    version = image.spec.version
    if waits_for_concretization(image) and facts["concretized_version"]:
        version = facts["concretized_version"]
    final = f"{image.tag.rsplit(':', 1)[0]}:{version}-{image.digest12}"  # the planned tag's registry prefix kept
    with tempfile.TemporaryDirectory(prefix="ci-spack-labels-") as scratch:
        context = Path(scratch)
        dockerfile = context / "Dockerfile"
        dockerfile.write_text(f"FROM {image.tag}\n", encoding="utf-8")
        request = BuildRequest(name=image.name, tag=final, context=context, dockerfile=dockerfile, build_args={},
                               labels=labels(facts, version), platform=image.spec.platform)
        with log.open("a", encoding="utf-8") as handle:
            handle.write(f"\n# containers-ci: labels from {LOCK_IN_IMAGE}, tag {final}\n")
            engine.build(request, handle)
    if final != image.tag:
        engine.tag(final, image.tag)  # the planned tag names the labelled image too (this run's children use it)
    return {"version": version, "tag": final, "spack_version": facts["spack_version"],
            "spack_commit": facts["spack_commit"], "lock_sha256": facts["lock_sha256"], "roots": facts["roots"],
            "lock": facts["lock"]}
