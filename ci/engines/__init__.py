"""HPC container engines behind one small interface (see `ci.engines.base.Engine`).

`select_engine("auto", host)` picks what the site host has, in the order an HPC centre would
prefer it: apptainer > singularity > charliecloud > docker. The pipeline never names an engine;
it asks for one here, by configuration (`ci.site.engine`).

Where this package sits among the others: docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ci.engines.apptainer import ApptainerEngine
from ci.engines.base import (
    BaseEngine,
    Bind,
    Compression,
    Conversion,
    Engine,
    EngineSettings,
    ImageSource,
    RegistryCredentials,
    SourceKind,
)
from ci.engines.charliecloud import CharliecloudEngine
from ci.engines.docker import DockerSiteEngine
from ci.engines.singularity import SingularityEngine
from ci.errors import EngineError
from ci.hosts import Host

ENGINES: dict[str, type[BaseEngine]] = {
    engine.name: engine for engine in (ApptainerEngine, SingularityEngine, CharliecloudEngine, DockerSiteEngine)
}
PREFERENCE = ("apptainer", "singularity", "charliecloud", "docker")
_UNSET: Any = object()  # "keep the settings' compression" (None means the engine's own default)


def make_engine(name: str, settings: EngineSettings | None = None, *,
                compression: str | Compression | None = _UNSET) -> BaseEngine:
    """An engine by name, without looking at any host (for command generation and tests).

    `compression` ("zstd", "zstd:3", "gzip", "lz4", "default") overrides `settings.compression`.
    """
    try:
        engine_type = ENGINES[name]
    except KeyError:
        raise EngineError(f"unknown engine '{name}'; choose one of {', '.join(PREFERENCE)} or auto") from None
    settings = settings or EngineSettings()
    if compression is not _UNSET:
        chosen = compression if isinstance(compression, Compression) or compression is None \
            else Compression.parse(compression)
        settings = replace(settings, compression=chosen)
    return engine_type(settings)


def installed_engines(host: Host) -> list[str]:
    """Engines whose commands are all on the host's PATH, in order of preference (one round trip)."""
    needed = sorted({binary for name in PREFERENCE for binary in ENGINES[name].binaries})
    probe = 'for b in "$@"; do command -v "$b" >/dev/null 2>&1 && echo "$b"; done; true'
    found = set(host.run(["sh", "-c", probe, "sh", *needed], check=False).stdout.split())
    return [name for name in PREFERENCE if all(binary in found for binary in ENGINES[name].binaries)]


def select_engine(name: str | None, host: Host, settings: EngineSettings | None = None, *,
                  compression: str | Compression | None = _UNSET) -> BaseEngine:
    """The configured engine (checked to be installed), or with "auto" the best one installed."""
    wanted = (name or "auto").strip().lower()
    if wanted != "auto" and wanted not in ENGINES:
        raise EngineError(f"unknown engine '{name}' (ci.site.engine); choose one of {', '.join(PREFERENCE)} or auto")
    present = installed_engines(host)
    if wanted == "auto":
        if not present:
            raise EngineError(f"no container engine on {host.name}: none of apptainer, singularity, "
                              "charliecloud (ch-convert, ch-run, mksquashfs) or docker is on its PATH; "
                              "install one (locally: `inv local.up`)")
        wanted = present[0]
    elif wanted not in present:
        engine_type = ENGINES[wanted]
        raise EngineError(f"{wanted} is not installed on {host.name} (needs {', '.join(engine_type.binaries)}); "
                          f"{engine_type.install_hint or 'install it'}"
                          + (f"; installed: {', '.join(present)}" if present else ""))
    return make_engine(wanted, settings, compression=compression)


__all__ = [
    "ENGINES", "PREFERENCE", "ApptainerEngine", "BaseEngine", "Bind", "CharliecloudEngine", "Compression",
    "Conversion", "DockerSiteEngine", "Engine", "EngineSettings", "ImageSource",
    "RegistryCredentials", "SingularityEngine", "SourceKind", "installed_engines", "make_engine",
    "select_engine",
]
