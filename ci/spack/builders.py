"""The builder definitions (ci.spack.builders): built when a selected image needs them, or when named.

The bundled `spack-builder` and `spack-runtime` are ordinary Docker definitions that Spack
definitions build FROM. A plain `inv build-all` does not select them: they are built as parents of
the Spack definitions that use them (production profiles), or with `--only spack-builder`; the
local profile, whose Spack definitions use the stand-in builder, never builds them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ci.config.spack import SpackSettings, spack_settings
from ci.definitions.model import Catalog
from ci.errors import ConfigError


def on_demand(catalog: Catalog, raw: SpackSettings | Mapping[str, Any] | None) -> set[str]:
    """Keys of the builder definitions: built when needed, not by a plain build-all."""
    try:
        names = set((raw if isinstance(raw, SpackSettings) else spack_settings(raw)).builders)
    except ConfigError:  # the Spack kind files a bad ci.spack section as a problem of every Spack definition
        names = set(SpackSettings().builders)
    keys = {key for key, spec in catalog.images.items() if spec.definition in names}
    return keys | {key for key in catalog.problems if key.split("/", 1)[-1] in names}
