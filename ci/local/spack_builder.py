"""`inv local.spack-builder`: the stand-in Spack builder image for local runs and tests.

Spack is not installable here (not in Debian, not on PyPI), so locally the builder stage runs
`ci/local/spack_standin/spack_standin.py` as `spack` in an image made FROM the local base image. The
image is labelled with the digest of its inputs and rebuilt only when they change. Production
sets `ci.spack.builder_image` to a real Spack image instead.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ci.docker.engine import BuildRequest, DockerEngine
from ci.errors import CIError
from ci.local.spack_standin import STANDIN, standin_digest
from ci.spack.render import render_template

STANDIN_LABEL = "io.containers-ci.stand-in.digest"
STANDIN_TAG = "containers-ci/spack-builder:stand-in"  # the default ci.spack.builder_image


def standin_tag(base_image: str) -> str:
    """A tag naming this exact stand-in (its input digest): tests build FROM it, so a changed stand-in
    changes their digests, and sessions with different stand-ins never retag each other's image."""
    return f"containers-ci/spack-builder:stand-in-{standin_digest(base_image)[:12]}"


def ensure_standin_builder(engine: DockerEngine, tag: str, base_image: str, *, force: bool = False,
                           log: Path | None = None) -> str:
    """Build the stand-in builder unless an image with the same input digest carries `tag`."""
    digest = standin_digest(base_image)
    if not force and (engine.labels(tag) or {}).get(STANDIN_LABEL) == digest:
        return f"{tag} is present (stand-in {digest[:12]})"
    if not engine.image_exists(base_image):
        raise CIError(f"the base image {base_image} is missing; run `inv local.base-image` first")
    with tempfile.TemporaryDirectory(prefix="ci-spack-builder-") as scratch:
        context = Path(scratch)
        shutil.copy2(STANDIN, context / "spack_standin.py")
        dockerfile = context / "Dockerfile"
        dockerfile.write_text(render_template("builder.Dockerfile.j2", {"base_image": base_image, "digest": digest}))
        log_path = log or context / "build.log"
        request = BuildRequest(name="spack-builder", tag=tag, context=context, dockerfile=dockerfile, build_args={},
                               labels={}, platform="linux/amd64")
        with log_path.open("w", encoding="utf-8") as handle:
            engine.build(request, handle)
    return f"{tag} built (stand-in {digest[:12]}; production uses a real Spack image)"
