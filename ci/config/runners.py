"""Settings of the runner allocator: `ci.runners` in invoke.yaml, checked by pydantic models.

Every value is checked once, at start, against a strict grammar (`\\Z` anchors, no control
characters): target names and labels become Slurm job names and GitHub runner labels, Slurm
options become `#SBATCH` lines. A bad value is one `Problem` naming `ci.runners.<field>` and the fix.
Secrets are never settings: the token comes from `CI_GITHUB_TOKEN` (or a GitHub App's key file),
the webhook secret from `CI_GITHUB_WEBHOOK_SECRET`.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from ci.config.base import ConfigModel
from ci.errors import ConfigError, Problem
from ci.resources import Resources, SbatchOption
from ci.validation import GITHUB_OWNER, GITHUB_REPOSITORY, has_control, invalid, problems_from, shown

TOKEN_ENV = "CI_GITHUB_TOKEN"
WEBHOOK_SECRET_ENV = "CI_GITHUB_WEBHOOK_SECRET"

_TARGET = r"[a-z0-9][a-z0-9_-]{0,31}"
_LABEL = r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,99}"
_REPOSITORY = GITHUB_REPOSITORY
_ORGANISATION = GITHUB_OWNER
_PREFIX = r"[a-z][a-z0-9]{0,11}"


def _full(pattern: str, value: str, what: str, example: str) -> str:
    if has_control(value) or not re.fullmatch(pattern, value):
        raise invalid(f"{shown(value)} is not {what}", f"write it like {example}")
    return value


class GitHubApp(ConfigModel):
    """Authenticate as a GitHub App installation instead of with a token (key read from a file)."""

    app_id: Annotated[int, Field(ge=1)]
    installation_id: Annotated[int, Field(ge=1)]
    private_key_file: str

    @field_validator("private_key_file")
    @classmethod
    def _key_file(cls, value: str) -> str:
        return os.path.expanduser(value)


class GitHubSettings(ConfigModel):
    api_url: str = "https://api.github.com"
    repository: str
    organisation: str | None = None  # register the runners at this organisation's level instead
    runner_group_id: Annotated[int, Field(ge=1)] = 1
    app: GitHubApp | None = None
    timeout: Annotated[float, Field(gt=0, le=300)] = 30.0

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        return _full(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?(/[A-Za-z0-9._~/-]*)?", value, "an http(s) URL",
                     "https://api.github.com or https://ghe.example.org/api/v3").rstrip("/")

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str) -> str:
        return _full(_REPOSITORY, value, "a repository owner/name", "my-org/my-repo")

    @field_validator("organisation")
    @classmethod
    def _organisation(cls, value: str | None) -> str | None:
        return None if value is None else _full(_ORGANISATION, value, "an organisation name", "my-org")


class SlurmTarget(ConfigModel):
    """What one runner of a target asks of Slurm; checked by the scheduler layer's `Resources` grammar
    (one task with `cpus` cores, `extra` from its sbatch allow-list)."""

    partition: str | None = None
    time: str = "01:00:00"
    cpus: Annotated[int, Field(strict=True, ge=1, le=4096)] = 1
    mem: str | None = None
    gpus: Annotated[int, Field(strict=True, ge=0, le=64)] = 0
    tmpdisk: str | None = None  # node-local disk each runner needs (Slurm --tmp), e.g. 20G
    extra: tuple[SbatchOption, ...] = ()

    @field_validator("tmpdisk")
    @classmethod
    def _tmpdisk(cls, value: str | None) -> str | None:
        if value is not None:
            tmpdisk_mb(value)
        return value

    @model_validator(mode="after")
    def _as_resources(self) -> SlurmTarget:
        if self.tmpdisk is not None and any(option.split("=", 1)[0] == "--tmp" for option in self.extra):
            raise invalid("slurm.tmpdisk and --tmp in slurm.extra both ask for node-local disk", "keep tmpdisk only")
        self.resources()  # the same grammar as every job's resources: partition, time, mem, extra
        return self

    def resources(self) -> Resources:
        extra = (*self.extra, f"--tmp={self.tmpdisk}") if self.tmpdisk else self.extra
        return Resources(nodes=1, ntasks=1, cpus_per_task=self.cpus, mem=self.mem, time=self.time,
                         partition=self.partition, gpus=self.gpus, extra=extra)


_SIZE_UNITS = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


def tmpdisk_mb(value: str) -> int:
    """Megabytes of a Slurm size (`20G`, `512M`, `100` = MB), as sbatch --tmp reads it."""
    match = re.fullmatch(r"([0-9]{1,9})([KMGT]?)", value.strip().upper()) if not has_control(value) else None
    if match is None:
        raise invalid(f"{shown(value)} is not a disk size", "write it like 20G, 512M or 100 (megabytes)")
    return max(1, int(int(match.group(1)) * _SIZE_UNITS[match.group(2)]))


class Target(ConfigModel):
    """A kind of runner: its labels, its Slurm resources, how many at once, how long idle."""

    name: str
    labels: tuple[str, ...]
    slurm: SlurmTarget = SlurmTarget()
    max: Annotated[int, Field(ge=1, le=10000)] = 10
    idle_timeout: Annotated[float, Field(ge=0, le=86400)] = 300.0
    # A private Docker daemon in each job (docs/runners-docker.md): rootless dockerd or Podman's API.
    docker: Literal["rootless", "podman"] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _full(_TARGET, value, "a target name (lower case, digits, - and _; up to 32)", "cpu or gpu-a100")

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise invalid("a target needs at least one label", "list the labels its runners get, e.g. "
                          "[self-hosted, slurm] (GitHub matches jobs to runners by label)")
        for label in value:
            _full(_LABEL, label, "a runner label", "self-hosted or slurm")
        lowered = [label.lower() for label in value]
        if len(set(lowered)) != len(lowered):
            raise invalid("labels repeat (GitHub compares them case-insensitively)", "list each label once")
        return value

    @property
    def label_set(self) -> frozenset[str]:
        return frozenset(label.lower() for label in self.labels)


class Container(ConfigModel):
    """Run the runner command inside an image on the site (an image file the engine can run)."""

    image: str
    engine: Literal["apptainer", "singularity", "charliecloud", "docker"] = "apptainer"
    binds: tuple[str, ...] = ()
    cache_max_age: Annotated[float, Field(ge=60, le=365 * 86400)] = 7 * 86400.0  # unused node copies pruned after

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if ".." in value.split("/"):
            raise invalid(f"{shown(value)} climbs out with ..", "write the image file's own absolute path")
        return _full(r"/[A-Za-z0-9._+@/-]{1,400}", value, "an absolute path to an image file on the cluster",
                     "/shared/images/runner.sif")


class Endpoint(ConfigModel):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 0
    path: str = "/"

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _full(r"/[A-Za-z0-9._~/-]*", value, "a URL path", "/webhook")


class RunnersSettings(ConfigModel):
    github: GitHubSettings
    targets: tuple[Target, ...]
    poll_interval: Annotated[float, Field(gt=0, le=3600)] = 5.0
    reconcile_interval: Annotated[float, Field(gt=0, le=86400)] = 180.0
    runner_dir: str = "~/actions-runner"
    runner_command: str = "./run.sh"
    work_folder: str = "_work"
    node_tmp: str = "/tmp"  # each job works in <node_tmp>/runner-<node>-<job> on its node's local disk
    container: Container | None = None
    prefix: str = "ghr"
    state_dir: str | None = None  # SQLite and lock on this machine; default <ci.state_dir>/runners
    job_dir: str | None = None  # job scripts, logs, JIT files on the cluster; default <state_dir>/jobs
    submit_workers: Annotated[int, Field(ge=1, le=64)] = 8
    metrics: Endpoint | None = Endpoint(port=9464, path="/metrics")
    webhook: Endpoint | None = None
    keep_finished: Annotated[float, Field(ge=0)] = 86400.0  # seconds a finished runner's row is kept
    # Jobs with a label like these run on GitHub-hosted runners: not demand, and not reported as unservable.
    hosted_labels: tuple[str, ...] = ("ubuntu-*", "windows-*", "macos-*")

    @field_validator("hosted_labels")
    @classmethod
    def _patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            _full(r"[a-z0-9*?._:+-]{1,100}", pattern, "a lower-case label pattern", "ubuntu-* or windows-latest")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return _full(_PREFIX, value, "a name prefix (a lower-case letter, then letters or digits; up to 12)",
                     "ghr")

    @field_validator("runner_command", "runner_dir", "work_folder")
    @classmethod
    def _no_control(cls, value: str) -> str:
        if not value.strip() or has_control(value):
            raise invalid(f"{shown(value)} is not one line of text", "write it on one line, without control "
                          "characters")
        return value

    @field_validator("work_folder")
    @classmethod
    def _work_folder(cls, value: str) -> str:
        if ".." in value.split("/"):
            raise invalid(f"{shown(value)} climbs out with ..", "name a folder inside the job's folder, e.g. _work")
        return value

    @field_validator("node_tmp")
    @classmethod
    def _node_tmp(cls, value: str) -> str:
        # Docker's sockets live below it: a unix socket path has 108 bytes, so keep this short.
        _full(r"/[A-Za-z0-9._/-]{0,47}", value, "an absolute path of up to 48 characters", "/tmp or /local/scratch")
        if ".." in value.split("/"):
            raise invalid(f"{shown(value)} climbs out with ..", "write the node-local folder's own path")
        return value.rstrip("/") or "/"

    @field_validator("metrics")
    @classmethod
    def _loopback(cls, value: Endpoint | None) -> Endpoint | None:
        if value is not None and value.host != "localhost":
            try:
                loopback = ipaddress.ip_address(value.host).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                raise invalid(f"metrics are served on a loopback address only; got {shown(value.host)}",
                              "use 127.0.0.1 (publish them through a reverse proxy or the node's exporter)")
        return value

    @model_validator(mode="after")
    def _unique_targets(self) -> RunnersSettings:
        if not self.targets:
            raise invalid("ci.runners.targets is empty", "give at least one {name, labels, slurm} entry")
        names = [target.name for target in self.targets]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise invalid(f"target names repeat: {', '.join(duplicates)}", "give each target its own name")
        label_sets = [target.label_set for target in self.targets]
        same = sorted({t.name for t, s in zip(self.targets, label_sets, strict=True) if label_sets.count(s) > 1})
        if same:
            raise invalid(f"targets {', '.join(same)} have the same label set, so a job could go to either",
                          "give each target a label set of its own, or merge them")
        return self

    def target(self, name: str) -> Target | None:
        return next((target for target in self.targets if target.name == name), None)


class RunnersConfigError(ConfigError):
    """`ci.runners` is missing or invalid: every problem at once, one line each."""

    def __init__(self, problems: list[Problem]):
        super().__init__("ci.runners is not usable:\n" + "\n".join(f"  {problem}" for problem in problems), problems)


def runners_configured(raw: Any) -> bool:
    """Does `ci.runners` name a repository and targets? Before that, the allocator is simply not set up."""
    github = raw.get("github") if isinstance(raw, Mapping) else None
    return bool(raw) and isinstance(github, Mapping) and bool(github.get("repository")) and bool(raw.get("targets"))


def not_configured(source: str = "invoke.yaml") -> RunnersConfigError:
    return RunnersConfigError([Problem(Path(source), "ci.runners", "the runner allocator is not configured "
                                       "(github.repository and targets are needed)",
                                       "set ci.runners.github.repository and ci.runners.targets (see "
                                       "docs/frontends/runners.md and docs/configuration.md)")])


def parse_runners(raw: Mapping[str, Any], *, source: str = "invoke.yaml") -> RunnersSettings:
    """The `ci.runners` mapping as a model, or a RunnersConfigError with one Problem per bad field."""
    if not runners_configured(raw):
        raise not_configured(source)
    try:
        return RunnersSettings.model_validate(dict(raw))
    except ValidationError as error:
        raise RunnersConfigError(problems_from(error, file=source, prefix="ci.runners",
                                               model=RunnersSettings)) from None


def resolve_dirs(settings: RunnersSettings, state_dir: Path) -> tuple[Path, str]:
    """(local state folder for SQLite and the lock, cluster folder for job files)."""
    local = Path(os.path.expanduser(settings.state_dir)) if settings.state_dir else state_dir / "runners"
    cluster = os.path.expanduser(settings.job_dir) if settings.job_dir else str(local / "jobs")
    return local, cluster


def token_from_environment(environ: Mapping[str, str] | None = None) -> str:
    value = (environ if environ is not None else os.environ).get(TOKEN_ENV, "").strip()
    if not value:
        raise ConfigError(f"{TOKEN_ENV} is not set; export a token that may manage self-hosted runners "
                          "(fine-grained: Administration read/write and Actions read on the repository), "
                          "or configure ci.runners.github.app")
    return value
