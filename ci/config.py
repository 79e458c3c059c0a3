"""Settings: invoke.yaml's `ci` section, a named profile over it, then per-task flags.

Invoke already merges its configuration files and `INVOKE_CI_*` variables; this module applies
the profile (`local`, `lumi`, `cpouta`, ...), checks every value once, and hands the pipeline a
typed object so that no backend reads raw dictionaries.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ci.definitions import SlurmResources
from ci.errors import ConfigError
from ci.hosts import SSHSettings
from ci.transfer import RegistrySettings

DEFAULT_LIMITS = {"build": 2, "transfer": 1, "convert": 4, "test": 8, "promote": 2}


def _xdg(variable: str, fallback: str) -> Path:
    return Path(os.environ.get(variable) or Path.home() / fallback) / "containers-ci"


def default_state_dir() -> Path:
    """Per-user state (run records, staging): never inside the repository."""
    return _xdg("XDG_STATE_HOME", ".local/state")


def default_site_root() -> Path:
    """The local default site: a documented per-user folder, never inside the repository."""
    return _xdg("XDG_DATA_HOME", ".local/share") / "site"


@dataclass(frozen=True)
class BaseImageSettings:
    tag: str = "containers-ci/debian:bookworm"
    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    variant: str = "minbase"
    include: tuple[str, ...] = ()


@dataclass(frozen=True)
class SiteSettings:
    """Where the HPC site is and how to use it (DESIGN.md sections 4 and 5)."""

    root: str
    ssh: SSHSettings | None = None
    registry: RegistrySettings = field(default_factory=RegistrySettings)
    engine: str = "auto"  # apptainer, singularity, charliecloud, docker, or auto
    scheduler: str = "auto"  # slurm, direct, or auto (slurm when sbatch answers on the site host)
    account: str | None = None
    partition: str | None = None
    job_prefix: str = "cci"
    poll_interval: float = 2.0
    staging_days: float = 7.0
    compression: str = "zstd"  # squashfs compressor for conversions: zstd (fast), gzip (default of the tools), lz4
    convert_on: str = "login"  # login: on the site host; compute: as a batch job on a compute node
    convert_job: SlurmResources = field(default_factory=lambda: SlurmResources(time="01:00:00"))

    @property
    def remote(self) -> bool:
        return self.ssh is not None


def _site_settings(data: Mapping[str, Any], site_root: str | None) -> SiteSettings:
    raw = dict(data.get("site") or {})
    known = set(SiteSettings.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"ci.site has unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    ssh_raw = raw.pop("ssh", None)
    ssh = None
    if ssh_raw and ssh_raw.get("host"):
        allowed = set(SSHSettings.__dataclass_fields__)
        extra = sorted(set(ssh_raw) - allowed)
        if extra:
            raise ConfigError(f"ci.site.ssh has unknown key(s) {', '.join(extra)}; "
                              f"allowed: {', '.join(sorted(allowed))}")
        ssh = SSHSettings(**ssh_raw)
    registry_raw = raw.pop("registry", None) or {}
    try:
        registry = RegistrySettings(**registry_raw)
    except TypeError as exc:
        raise ConfigError(f"ci.site.registry: {exc}") from None
    convert_job = raw.pop("convert_job", None) or {}
    try:
        values: dict[str, Any] = {"time": "01:00:00", **convert_job}
        if "extra" in values:
            values["extra"] = tuple(values["extra"])
        raw["convert_job"] = SlurmResources(**values)
    except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise ConfigError(f"ci.site.convert_job: {exc}; allowed: nodes, ntasks, time, partition, gpus, extra") from None
    if raw.get("convert_on", "login") not in ("login", "compute"):
        raise ConfigError(f"ci.site.convert_on must be login or compute; got {raw['convert_on']!r}")
    root = site_root or raw.pop("root", None)
    raw.pop("root", None)
    if not root:
        if ssh is not None:
            raise ConfigError("ci.site.root must be set for a remote site (e.g. /scratch/project_X/containers)")
        root = str(default_site_root())
    root = os.path.expanduser(str(root)) if ssh is None else str(root)
    return SiteSettings(root=root, ssh=ssh, registry=registry, **raw)


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know, resolved and checked."""

    profile: str
    project_dir: Path
    definitions: Path
    arches: tuple[str, ...]
    registry_prefix: str
    state_dir: Path
    docker_client: str
    docker_host: str | None
    buildkit: bool
    limits: Mapping[str, int]
    base_image: BaseImageSettings
    site: SiteSettings
    raw: Mapping[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> Mapping[str, Any]:
        """A further section (site, vm, ...) of the merged configuration, for the modules that own it."""
        value = self.raw.get(name) or {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"ci.{name} in invoke.yaml must be a mapping; got {type(value).__name__}")
        return value


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _plain(value: Any) -> Any:
    """Invoke's DataProxy objects behave like dicts; turn them into real ones."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def load_settings(
    config: Mapping[str, Any],
    project_dir: Path,
    *,
    profile: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Resolve the `ci` configuration for one profile, with task flags on top (None means unset)."""
    data = _plain(config)
    profiles = data.pop("profiles", {}) or {}
    chosen = profile or os.environ.get("CI_PROFILE") or data.get("profile") or "local"
    if chosen == "local" and chosen not in profiles:
        profiles["local"] = {}  # the built-in default needs no entry
    if chosen not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise ConfigError(f"unknown profile '{chosen}'; choose one of: {known} "
                          "(profiles live under ci.profiles in invoke.yaml)")
    data = deep_merge(data, profiles[chosen] or {})
    overrides = dict(overrides or {})
    site_root = overrides.pop("site_root", None)
    for key, value in overrides.items():
        if value is not None:
            data[key] = value
    data["profile"] = chosen

    def path(key: str, default: Path) -> Path:
        value = data.get(key)
        if value in (None, ""):
            return default
        if not isinstance(value, str | os.PathLike):
            raise ConfigError(f"ci.{key} must be a path; got {value!r}")
        result = Path(os.path.expanduser(str(value)))
        return result if result.is_absolute() else project_dir / result

    arches = data.get("arch", ["amd64"])
    if isinstance(arches, str):
        arches = [a for a in arches.replace(",", " ").split() if a]
    if not isinstance(arches, list) or not all(isinstance(a, str) for a in arches):
        raise ConfigError(f"ci.arch must be a list of architectures such as [amd64]; got {arches!r}")

    limits = dict(DEFAULT_LIMITS)
    raw_limits = data.get("limits") or {}
    if not isinstance(raw_limits, Mapping):
        raise ConfigError("ci.limits must map resources (build, transfer, convert, test) to numbers")
    for resource, value in raw_limits.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"ci.limits.{resource} must be a whole number >= 1; got {value!r}")
        limits[resource] = value

    docker = data.get("docker") or {}
    base = data.get("base_image") or {}
    try:
        values: dict[str, Any] = {k: tuple(v) if k == "include" else v for k, v in base.items()}
        base_image = BaseImageSettings(**values)
    except TypeError as exc:
        raise ConfigError(f"ci.base_image has an unknown key ({exc}); "
                          "allowed: tag, suite, mirror, variant, include") from None
    registry_prefix = str(data.get("registry_prefix") or "")
    if registry_prefix and not registry_prefix.endswith("/"):
        registry_prefix += "/"
    return Settings(
        profile=chosen,
        project_dir=project_dir,
        definitions=path("definitions", project_dir / "container_definitions"),
        arches=tuple(arches),
        registry_prefix=registry_prefix,
        state_dir=path("state_dir", default_state_dir()),
        docker_client=str(docker.get("client") or "auto"),
        docker_host=docker.get("host") or None,
        buildkit=bool(docker.get("buildkit", True)),
        limits=limits,
        base_image=base_image,
        site=_site_settings(data, site_root),
        raw=data,
    )
