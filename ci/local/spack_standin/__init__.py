"""The stand-in for Spack (spack_standin.py) and the identity of the builder image made from it.

The identity is the digest of the builder's Dockerfile template and the program, so a changed
stand-in changes the digest of every Spack definition built with it (and nothing else does).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ci.spack.render import render_template

STANDIN = Path(__file__).resolve().parent / "spack_standin.py"


def standin_digest(base_image: str) -> str:
    text = render_template("builder.Dockerfile.j2", {"base_image": base_image, "digest": ""})
    return hashlib.sha256(text.encode() + b"\0" + STANDIN.read_bytes()).hexdigest()
