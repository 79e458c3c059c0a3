"""Settings: invoke.yaml's `ci` section, a named profile over it, then per-task flags.

Invoke already merges its configuration files and `INVOKE_CI_*` variables; this module applies
the profile (`local`, `lumi`, `cpouta`, ...), checks every value once against pydantic models, and
hands the pipeline typed, frozen objects, so that no backend reads raw dictionaries.

This is the ground floor of the package (docs/architecture.md): every settings type lives here,
the backends import their settings from this module and never the other way round, and importing
it needs neither the Docker library, fabric nor openstacksdk. A bad value is one line naming the
key as written in invoke.yaml (`ci.site.registry.address`), what is wrong and the fix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ci.config.base import WHERE, ConfigModel, validated, written_in
from ci.config.build_hosts import BuildHostSettings, BuildPoolSettings
from ci.config.grammars import (
    Address,
    Bind,
    EnvName,
    Flag,
    HostName,
    ImageRef,
    Port,
    Seconds,
    SlurmName,
    Text,
    UserName,
    Word,
    grammar,
)
from ci.config.publish import PublishSettings
from ci.config.runners import RunnersSettings, runners_configured
from ci.config.service import ServiceConfig
from ci.config.site_env import SiteEnvSettings
from ci.config.spack import SpackSettings
from ci.errors import ConfigError, Problem
from ci.resources import Resources
from ci.validation import invalid, not_a_secret_build_arg, shown

DEFAULT_LIMITS = {"build": 2, "transfer": 1, "convert": 4, "test": 8, "promote": 2}
PASSPHRASE_ENV = "CI_SSH_KEY_PASSPHRASE"
MANAGED_BY = "containers-ci"  # the mark on what we create in a cloud, and the OpenStack app name
DEFAULT_FLAVOR = "hpc.5.64core"
SECRETS_DIR = "secrets"
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")


def _xdg(variable: str, fallback: str) -> Path:
    return Path(os.environ.get(variable) or Path.home() / fallback) / "containers-ci"


def default_state_dir() -> Path:
    """Per-user state (run records, staging): never inside the repository."""
    return _xdg("XDG_STATE_HOME", ".local/state")


def default_site_root() -> Path:
    """The local default site: a documented per-user folder, never inside the repository."""
    return _xdg("XDG_DATA_HOME", ".local/share") / "site"


_COMPRESSION = re.compile(r"\A(default|none|engine|(gzip|zstd|lzo|xz|lz4|lzma)(:[0-9]{1,2})?)\Z", re.IGNORECASE)


def _expand(value: str | None) -> str | None:
    return os.path.expanduser(value) if value else value


# --------------------------------------------------------------------------------------------
# the site: where it is, how to reach it, how to use it
# --------------------------------------------------------------------------------------------

class SSHSettings(ConfigModel):
    """How to reach a remote host; the key's passphrase comes from the environment, never a flag.

    `known_hosts` is the file the host's key is checked against (strict: an unknown or changed
    key is refused); with `trust_on_first_use` an unknown key is accepted once and recorded there.
    """

    host: HostName
    user: UserName | None = None
    port: Port = 22
    key_filename: Text | None = None
    passphrase_env: EnvName = PASSPHRASE_ENV
    connect_timeout: Seconds = 15.0
    extra: dict[str, Any] = Field(default_factory=dict, description="more paramiko connect() arguments")
    known_hosts: Text | None = None
    trust_on_first_use: Flag = False
    host_key_alias: HostName | None = None  # the name known_hosts holds the key under (when `host` is an address)

    def connect_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {**self.extra}
        if self.key_filename:
            kwargs["key_filename"] = os.path.expanduser(self.key_filename)
        passphrase = os.environ.get(self.passphrase_env)
        if passphrase:
            kwargs["passphrase"] = passphrase
        return kwargs

    @property
    def known_hosts_path(self) -> Path:
        """The known_hosts file in use: the configured one, else the user's ~/.ssh/known_hosts."""
        return Path(os.path.expanduser(self.known_hosts or "~/.ssh/known_hosts"))


class RegistrySettings(ConfigModel):
    """The site's registry: where the site's engine pulls from, and how the build side reaches it."""

    address: Address = "127.0.0.1:5000"  # as the site's engine sees it
    tunnel: Flag = False  # push through an SSH port-forward to the site host
    local_port: Port = 15000
    insecure: Flag = True  # plain HTTP (a loopback registry)
    username_env: EnvName = "CI_REGISTRY_USER"
    token_env: EnvName = "CI_REGISTRY_TOKEN"

    @property
    def remote_port(self) -> int:
        tail = self.address.rsplit("]", 1)[-1]
        return int(tail.rsplit(":", 1)[1]) if ":" in tail else 443


class ArchSettings(ConfigModel):
    """Per-architecture site choices (`ci.site.arch.<arch>`): e.g. the partition with such nodes."""

    partition: SlurmName | None = None


class SiteSettings(ConfigModel):
    """Where the HPC site is and how to use it (docs/site.md; every key in docs/configuration.md)."""

    root: Text
    ssh: SSHSettings | None = None
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    engine: Word = "auto"  # apptainer, singularity, charliecloud, docker, or auto
    scheduler: Word = "auto"  # slurm, direct, or auto (slurm when sbatch answers on the site host)
    account: SlurmName | None = None
    partition: SlurmName | None = None
    job_prefix: Annotated[str, grammar(r"\A[a-z][a-z0-9-]{0,15}\Z", "job prefix",
                                        "write a short lower-case word such as cci")] = "cci"
    poll_interval: Seconds = 2.0
    staging_days: Annotated[float, Field(ge=0)] = 7.0
    compression: str = "zstd"  # squashfs compressor for conversions: zstd (fast), gzip (the tools' default), lz4
    convert_on: Literal["login", "compute"] = "login"  # login: on the site host; compute: as a batch job
    convert_job: Resources = Field(default_factory=lambda: Resources(time="01:00:00"))
    binds: tuple[Bind, ...] = ()  # host folders every test sees inside the image: /path or /src:/dst
    arch: dict[Annotated[str, grammar(r"\A[a-z0-9_]{1,16}\Z", "architecture", "write e.g. amd64 or arm64")],
               ArchSettings] = Field(default_factory=dict)
    lock_lease: Annotated[float, Field(ge=30, le=7 * 86400)] = 600.0  # seconds a silent lock holder is trusted
    known_hosts: Text | None = None  # the site host's known_hosts file; default ~/.ssh/known_hosts
    trust_on_first_use: Flag = False  # accept an unknown host key once and record it in known_hosts
    require_tests: Flag = False  # an image that declares no tests goes to failed/ ("built, not tested")

    @field_validator("compression")
    @classmethod
    def _compression(cls, value: str) -> str:
        if not _COMPRESSION.match(value):
            raise invalid(f"{shown(value)} is not a SquashFS compressor",
                          "use zstd, zstd:LEVEL, gzip, gzip:LEVEL, lz4, xz, lzo, lzma or default")
        return value

    @property
    def remote(self) -> bool:
        return self.ssh is not None

    def partition_for(self, arch: str) -> str | None:
        """The partition of `arch`'s nodes (ci.site.arch.<arch>.partition), else ci.site.partition."""
        chosen = self.arch.get(arch)
        return chosen.partition if chosen is not None and chosen.partition else self.partition


class BaseImageSettings(ConfigModel):
    """The local Debian base image (debootstrap + docker import), so no registry is needed."""

    tag: ImageRef = "containers-ci/debian:bookworm"
    suite: Word = "bookworm"
    mirror: Annotated[str, grammar(r"\A(https?|file)://[^\s'\"]{1,2000}\Z", "mirror URL",
                                    "write the Debian mirror's URL, e.g. http://deb.debian.org/debian")] = \
        "http://deb.debian.org/debian"
    variant: Word = "minbase"
    include: tuple[Annotated[str, grammar(r"\A[a-z0-9][a-z0-9+.-]{0,127}\Z", "Debian package name",
                                           "write package names such as python3")], ...] = ()


class DockerSettings(ConfigModel):
    """The Docker engine builds run on (`ci.docker`)."""

    client: Text = "auto"  # a path pins the client; auto: /usr/bin/docker, else the one on PATH
    host: Text | None = None  # e.g. ssh://ubuntu@build-vm for a remote engine
    buildkit: Flag = True
    network: Text | None = None  # the network of RUN steps in builds (host: reach loopback services, e.g. a cache)


_Limit = Annotated[int, Field(strict=True, ge=1, le=10_000)]


class Limits(ConfigModel):
    """How many steps of each kind run at once (`ci.limits`)."""

    build: _Limit = DEFAULT_LIMITS["build"]
    transfer: _Limit = DEFAULT_LIMITS["transfer"]
    convert: _Limit = DEFAULT_LIMITS["convert"]
    test: _Limit = DEFAULT_LIMITS["test"]
    promote: _Limit = DEFAULT_LIMITS["promote"]


# --------------------------------------------------------------------------------------------
# the OpenStack build VM and its helper image
# --------------------------------------------------------------------------------------------

class VMTimeouts(ConfigModel):
    """Seconds to wait for each state; every wait is a poll with a deadline, never a fixed sleep."""

    active: Seconds = 900.0   # server BUILD -> ACTIVE
    ssh: Seconds = 600.0      # ACTIVE -> sshd answers and accepts our key (cloud-init runs first)
    volume: Seconds = 300.0   # volume creating -> available, attaching -> in-use
    delete: Seconds = 600.0   # server deleted and gone
    prepare: Seconds = 1800.0  # prepare-vm (may install Docker)


def _context(info: ValidationInfo) -> tuple[Path, Mapping[str, str]]:
    context = info.context or {}
    return Path(context.get("project_dir", ".")), context.get("env", os.environ)


def _project_path(value: Any, project_dir: Path) -> Any:
    if not isinstance(value, str) or not value:
        return value
    result = Path(os.path.expanduser(value))
    return result if result.is_absolute() else project_dir / result


class VMConfig(ConfigModel):
    """The build VM (`ci.vm`, profile and flags applied), with the defaults the environment gives.

    Validated with a context (`project_dir`, `env`): relative paths are the project's, and
    cloud, image and flavor fall back to OS_CLOUD, OS_MY_IMAGE and OS_MY_FLAVOUR.
    """

    enabled: Flag = False
    cloud: Text | None = None
    region: Text | None = None
    clouds_file: Path | None = None
    name: Word = "containers-ci-build"
    image: Text | None = None
    flavor: Text = DEFAULT_FLAVOR
    key_name: Word = "containers-ci"
    public_key: Path
    security_group: Word = "containers-ci-ssh"
    ssh_cidr: Annotated[str, grammar(r"\A[0-9A-Fa-f:.]{2,45}/[0-9]{1,3}\Z", "CIDR",
                                      "write an address range such as 192.0.2.0/24")] = "0.0.0.0/0"
    network: Text | None = None
    floating_ip_pool: Text = "public"
    floating_ip: Text | None = None
    volume: Word = "containers-ci-docker"
    volume_size: Annotated[int, Field(ge=1)] = 200
    volume_type: Text | None = None
    ssh_user: UserName = "ubuntu"
    ssh_port: Port = 22
    ssh_key: Path
    mount_point: Annotated[str, grammar(r"\A/[A-Za-z0-9._/-]{0,1023}\Z", "mount point",
                                         "write an absolute path such as /mnt/containers-ci")] = "/mnt/containers-ci"
    poll_interval: Annotated[float, Field(ge=0.01)] = 5.0
    timeouts: VMTimeouts = Field(default_factory=VMTimeouts)
    device: Annotated[str, grammar(r"\A/dev/[A-Za-z0-9._/-]{1,255}\Z", "device", "write e.g. /dev/vdb")] | None \
        = None  # the volume's device on the VM, when /dev/disk/by-id cannot tell
    prepare_args: tuple[Text, ...] = ()  # extra prepare-vm arguments (e.g. for a loopback "VM")
    count: Annotated[int, Field(strict=True, ge=1, le=64)] = 1  # build VMs: >1 names them <name>-1 .. <name>-N

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any, info: ValidationInfo) -> Any:
        """The environment's fallbacks and the project's paths, before the fields are checked."""
        if not isinstance(data, Mapping):
            return data
        project_dir, env = _context(info)
        values = {key: value for key, value in data.items() if value not in (None, "")}
        values.setdefault("cloud", env.get("OS_CLOUD") or None)
        values.setdefault("image", env.get("OS_MY_IMAGE") or None)
        values.setdefault("flavor", env.get("OS_MY_FLAVOUR") or DEFAULT_FLAVOR)
        ssh_key = _project_path(values.get("ssh_key", f"{SECRETS_DIR}/build-vm-key"), project_dir)
        values["ssh_key"] = ssh_key
        if "public_key" in values:
            values["public_key"] = _project_path(values["public_key"], project_dir)
        elif isinstance(ssh_key, Path):
            values["public_key"] = ssh_key.with_name(ssh_key.name + ".pub")
        if "clouds_file" in values:
            values["clouds_file"] = _project_path(values["clouds_file"], project_dir)
        elif (project_dir / SECRETS_DIR / "clouds.yaml").is_file():
            values["clouds_file"] = project_dir / SECRETS_DIR / "clouds.yaml"
        return values

    @property
    def description(self) -> str:
        """The mark on what we create for this VM (floating IPs), so teardown finds only ours."""
        return f"{MANAGED_BY} build VM {self.name}"


def vm_config(section: Mapping[str, Any], project_dir: Path, *, env: Mapping[str, str] | None = None,
              **overrides: Any) -> VMConfig:
    """Check `ci.vm` once and resolve its defaults; `overrides` are task flags (None means unset)."""
    if not isinstance(section, Mapping):
        raise ConfigError(f"ci.vm: expected a mapping of settings, got {type(section).__name__}; see invoke.yaml")
    data = {**section, **{k: v for k, v in overrides.items() if v is not None}}
    context = {"project_dir": project_dir, "env": os.environ if env is None else env}
    return validated(VMConfig, data, "ci.vm", context)


class HelperImageSettings(ConfigModel):
    """`ci.openstack_image`: the OpenStack helper container (`inv openstack.image`).

    Validated with a context (`project_dir`, `registry_prefix`, `base_image`): a repository that
    names no registry gets the pipeline's prefix, the base image defaults to ci.base_image.tag,
    `ca_certificates: auto` means the machine's extra CA certificates.
    """

    repository: ImageRef = "containers-ci/openstack"
    base_image: ImageRef
    network: Word | None = "host"
    ca_certificates: tuple[Path, ...] = ()
    build_args: dict[EnvName, Text] = Field(default_factory=dict)
    push: Flag | None = None  # None: push when a registry is configured (ci.registry_prefix)

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, Mapping):
            return data
        context = info.context or {}
        project_dir = Path(context.get("project_dir", "."))
        values = dict(data)
        repository = values.get("repository") or "containers-ci/openstack"
        if isinstance(repository, str):
            first = repository.split("/")[0]
            if "/" not in repository or not ("." in first or ":" in first or first == "localhost"):
                repository = str(context.get("registry_prefix", "")) + repository  # the pipeline's registry
        values["repository"] = repository
        values["base_image"] = values.get("base_image") or context.get("base_image")
        if "network" not in values:
            values["network"] = "host"
        elif values["network"] == "":
            values["network"] = None
        certificates = values.get("ca_certificates", "auto")
        if certificates in (None, "auto"):
            values["ca_certificates"] = sorted(LOCAL_CA_DIR.rglob("*.crt")) if LOCAL_CA_DIR.is_dir() else []
        elif isinstance(certificates, list | tuple):
            values["ca_certificates"] = [_project_path(c, project_dir) for c in certificates]
        if values.get("build_args") is None:
            values["build_args"] = {}
        return values

    @field_validator("build_args")
    @classmethod
    def _no_secret_args(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            not_a_secret_build_arg(name, "hand it to the build another way (the helper image is pushed), or rename "
                                         "it if it is no secret")
        return value


# --------------------------------------------------------------------------------------------
# the generated GitHub workflow
# --------------------------------------------------------------------------------------------

# GitHub's documented limit: a matrix makes at most 256 jobs; the generated workflow keeps under it.
MAX_WORKFLOW_JOBS = 256
_Minutes = Annotated[int, Field(strict=True, ge=1, le=4320)]  # GitHub's job limit on self-hosted runners: 3 days


class ImageTimeouts(ConfigModel):
    """Per-image overrides of the job timeouts, in minutes (`ci.workflow.images.<name>`)."""

    build: _Minutes | None = None
    transfer: _Minutes | None = None
    test: _Minutes | None = None


class WorkflowSettings(ConfigModel):
    """`ci.workflow`: what the generated workflow's jobs may take (`inv gh.workflow`)."""

    build_timeout: _Minutes = 360
    transfer_timeout: _Minutes = 120
    test_timeout: _Minutes = 360
    images: dict[str, ImageTimeouts] = Field(default_factory=dict)  # by image name
    max_jobs: Annotated[int, Field(strict=True, ge=1, le=MAX_WORKFLOW_JOBS)] = MAX_WORKFLOW_JOBS
    default_profile: Word = "cpouta"

    def timeout(self, name: str, step: str) -> int:
        override = getattr(self.images.get(name, ImageTimeouts()), step)
        return int(override if override is not None else getattr(self, f"{step}_timeout"))


def workflow_settings(raw: Mapping[str, Any]) -> WorkflowSettings:
    """Read `ci.workflow`; each wrong value is one line naming the key and what it accepts."""
    return validated(WorkflowSettings, raw, "ci.workflow")


# --------------------------------------------------------------------------------------------
# everything together
# --------------------------------------------------------------------------------------------

class CISection(ConfigModel):
    """The `ci` section as written (profile merged, flags applied), before paths are resolved."""

    profile: Word = "local"
    definitions: Text | None = None
    arch: tuple[Annotated[str, grammar(r"\A[a-z0-9_]{1,16}\Z", "architecture",
                                        "write e.g. amd64 or arm64")], ...] = ("amd64",)
    registry_prefix: Annotated[str, grammar(r"\A(?!.*//)[A-Za-z0-9][A-Za-z0-9._/:-]{0,200}\Z",
                                             "registry prefix", "write e.g. registry.example.org/project/")] \
        | None = None
    state_dir: Text | None = None
    docker: DockerSettings = Field(default_factory=DockerSettings)
    limits: Limits = Field(default_factory=Limits)
    base_image: BaseImageSettings = Field(default_factory=BaseImageSettings)
    site: dict[str, Any] = Field(default_factory=dict)
    vm: dict[str, Any] = Field(default_factory=dict)
    openstack_image: dict[str, Any] = Field(default_factory=dict)
    workflow: WorkflowSettings = Field(default_factory=WorkflowSettings)
    spack: SpackSettings = Field(default_factory=SpackSettings)
    runners: RunnersSettings | None = None  # None until github.repository and targets are set
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    site_env: SiteEnvSettings = Field(default_factory=SiteEnvSettings)
    publish: PublishSettings = Field(default_factory=PublishSettings)
    build_hosts: Annotated[tuple[BuildHostSettings, ...], Field(max_length=1000)] = ()
    build_pool: BuildPoolSettings = Field(default_factory=BuildPoolSettings)

    @field_validator("arch", mode="before")
    @classmethod
    def _arch_words(cls, value: Any) -> Any:
        """`--arch amd64,arm64` and `INVOKE_CI_ARCH=amd64` arrive as one string."""
        if isinstance(value, str):
            return [part for part in value.replace(",", " ").split() if part]
        return value

    @field_validator("runners", mode="before")
    @classmethod
    def _runners_when_configured(cls, value: Any) -> Any:
        """The allocator's section counts once it names a repository and targets (invoke.yaml ships it empty)."""
        return value if runners_configured(value) else None

    @field_validator("build_hosts", mode="before")
    @classmethod
    def _no_hosts_is_empty(cls, value: Any) -> Any:
        return () if value is None else value

    @field_validator("site", "vm", "openstack_image", "docker", "limits", "base_image", "workflow", "spack",
                     "service", "site_env", "publish", "build_pool", mode="before")
    @classmethod
    def _empty_is_default(cls, value: Any) -> Any:
        return {} if value is None else value


class Settings(ConfigModel):
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
    docker_network: str | None = None  # ci.docker.network: the network of RUN steps in builds
    limits: Mapping[str, int]
    base_image: BaseImageSettings
    site: SiteSettings
    vm: VMConfig
    helper_image: HelperImageSettings
    workflow: WorkflowSettings = Field(default_factory=WorkflowSettings)
    spack: SpackSettings = Field(default_factory=SpackSettings)
    runners: RunnersSettings | None = None  # the allocator is configured (inv runners.* refuses to start if not)
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    site_env: SiteEnvSettings = Field(default_factory=SiteEnvSettings)
    publish: PublishSettings = Field(default_factory=PublishSettings)
    build_hosts: tuple[BuildHostSettings, ...] = ()  # ci.buildhosts makes a run's pool of them
    build_pool: BuildPoolSettings = Field(default_factory=BuildPoolSettings)
    raw: Mapping[str, Any] = Field(default_factory=dict)

    def with_docker(self, *, host: str | None, client: str) -> Settings:
        """The same settings with another Docker engine (the build VM's)."""
        return self.model_copy(update={"docker_host": host, "docker_client": client})


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


def settings_problem(field: str, message: str, fix: str) -> Problem:
    """A Problem about a settings key; the settings have no one file, so the key names it."""
    return Problem(Path(WHERE), field, message, fix)


def _site_settings(raw: Mapping[str, Any], site_root: str | None) -> SiteSettings:
    values = dict(raw)
    ssh = values.get("ssh")
    if isinstance(ssh, Mapping):
        if ssh.get("host"):
            ssh = {**ssh}
            ssh.setdefault("known_hosts", _expand(values.get("known_hosts")))
            ssh.setdefault("trust_on_first_use", values.get("trust_on_first_use", False))
            values["ssh"] = ssh
        else:
            values["ssh"] = None  # `ssh: {host: null}` (a profile switching SSH off) is this machine
    if isinstance(values.get("convert_job"), Mapping):
        values["convert_job"] = {"time": "01:00:00", **values["convert_job"]}
    elif values.get("convert_job") is None:
        values.pop("convert_job", None)
    root = site_root or values.get("root")
    if not root:
        if values.get("ssh"):
            raise ConfigError.from_problems([settings_problem(
                "ci.site.root", "must be set for a remote site", "write the site's folder for the CI, e.g. "
                "/scratch/project_X/containers, or pass --site-root")])
        root = str(default_site_root())
    values["root"] = os.path.expanduser(str(root)) if not values.get("ssh") else str(root)
    values = {key: value for key, value in values.items() if value is not None or key == "ssh"}
    return validated(SiteSettings, values, "ci.site")


def load_settings(
    config: Mapping[str, Any],
    project_dir: Path,
    *,
    profile: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    files: Sequence[Path] = (),
) -> Settings:
    """Resolve the `ci` configuration for one profile, with task flags on top (None means unset).

    `files` are the configuration files Invoke read (lowest precedence first); they are read again
    strictly (`ci.config.base.written_in`), so that a duplicate key or a value YAML changed is named
    with its file and line.
    """
    data = _plain(config)
    if not isinstance(data, Mapping):
        raise ConfigError(f"the ci section must be a mapping of settings; see {WHERE}")
    data = dict(data)
    profiles = data.pop("profiles", None) or {}
    if not isinstance(profiles, Mapping):
        raise ConfigError("ci.profiles must map profile names to settings; see invoke.yaml")
    profiles = dict(profiles)
    chosen = profile or os.environ.get("CI_PROFILE") or data.get("profile") or "local"
    if chosen == "local" and chosen not in profiles:
        profiles["local"] = {}  # the built-in default needs no entry
    if chosen not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise ConfigError(f"unknown profile '{chosen}'; choose one of: {known} "
                          "(profiles live under ci.profiles in invoke.yaml)")
    chosen_values = profiles[chosen] or {}
    if not isinstance(chosen_values, Mapping):
        raise ConfigError(f"ci.profiles.{chosen} must be a mapping of settings; see invoke.yaml")
    with written_in(files, chosen):
        return _resolved(deep_merge(data, chosen_values), chosen, project_dir, overrides)


def _resolved(data: dict[str, Any], chosen: str, project_dir: Path, overrides: Mapping[str, Any] | None) -> Settings:
    overrides = dict(overrides or {})
    site_root = overrides.pop("site_root", None)
    for key, value in overrides.items():
        if value is not None:
            data[key] = value
    data["profile"] = chosen
    section: CISection = validated(CISection, data, "ci")

    def path(value: str | None, default: Path) -> Path:
        if not value:
            return default
        result = Path(os.path.expanduser(value))
        return result if result.is_absolute() else project_dir / result

    registry_prefix = section.registry_prefix or ""
    if registry_prefix and not registry_prefix.endswith("/"):
        registry_prefix += "/"
    state_dir = path(section.state_dir, default_state_dir())
    site = _site_settings(section.site, site_root)
    vm = vm_config(section.vm, project_dir)
    helper_image = validated(HelperImageSettings, section.openstack_image, "ci.openstack_image",
                              {"project_dir": project_dir, "registry_prefix": registry_prefix,
                               "base_image": section.base_image.tag})
    return Settings(
        profile=chosen,
        project_dir=project_dir,
        definitions=path(section.definitions, project_dir / "container_definitions"),
        arches=section.arch,
        registry_prefix=registry_prefix,
        state_dir=state_dir,
        docker_client=section.docker.client,
        docker_host=section.docker.host or None,
        buildkit=section.docker.buildkit,
        docker_network=section.docker.network or None,
        limits=section.limits.model_dump(),
        base_image=section.base_image,
        site=site,
        vm=vm,
        helper_image=helper_image,
        workflow=section.workflow,
        spack=section.spack,
        runners=section.runners,
        service=section.service,
        site_env=section.site_env,
        publish=section.publish,
        build_hosts=section.build_hosts,
        build_pool=section.build_pool,
        raw=data,
    )
