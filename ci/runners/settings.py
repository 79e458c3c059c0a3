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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ci.errors import ConfigError, Problem

TOKEN_ENV = "CI_GITHUB_TOKEN"
WEBHOOK_SECRET_ENV = "CI_GITHUB_WEBHOOK_SECRET"

_TARGET = r"[a-z0-9][a-z0-9_-]{0,31}"
_LABEL = r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,99}"
_REPOSITORY = r"[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}"
_ORGANISATION = r"[A-Za-z0-9][A-Za-z0-9-]{0,38}"
_SLURM_TIME = r"(\d+-)?\d+(:\d{1,2}){0,2}|UNLIMITED|INFINITE"
_MEM = r"\d+[KMGT]?"
_PARTITION = r"[A-Za-z0-9_.-]{1,64}(,[A-Za-z0-9_.-]{1,64})*"
# One sbatch long option, `--name` or `--name=value`, value without spaces or shell characters.
_EXTRA = r"--[a-z][a-z0-9-]{1,40}(=[A-Za-z0-9_.,:+/=@%-]{1,200})?"
# Options that would break what the allocator relies on: the job's name, output and folder.
_RESERVED_EXTRA = ("--job-name", "--output", "--error", "--chdir", "--export", "--wrap", "--parsable")
_PREFIX = r"[a-z][a-z0-9]{0,11}"


def _full(pattern: str, value: str, what: str, example: str) -> str:
    if not re.fullmatch(pattern, value):
        raise ValueError(f"{value!r} is not {what} (for example {example})")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GitHubApp(_Model):
    """Authenticate as a GitHub App installation instead of with a token (key read from a file)."""

    app_id: Annotated[int, Field(ge=1)]
    installation_id: Annotated[int, Field(ge=1)]
    private_key_file: str

    @field_validator("private_key_file")
    @classmethod
    def _key_file(cls, value: str) -> str:
        return os.path.expanduser(value)


class GitHubSettings(_Model):
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


class SlurmTarget(_Model):
    """What one runner of a target asks of Slurm: few, small values, each one `#SBATCH` line."""

    partition: str | None = None
    time: str = "01:00:00"
    cpus: Annotated[int, Field(ge=1, le=4096)] = 1
    mem: str | None = None
    gpus: Annotated[int, Field(ge=0, le=64)] = 0
    extra: tuple[str, ...] = ()

    @field_validator("partition")
    @classmethod
    def _partition(cls, value: str | None) -> str | None:
        return None if value is None else _full(_PARTITION, value, "a partition name", "small or gpu")

    @field_validator("time")
    @classmethod
    def _time(cls, value: str) -> str:
        return _full(_SLURM_TIME, value, "a Slurm time limit", "00:30:00 or 1-00:00:00")

    @field_validator("mem")
    @classmethod
    def _mem(cls, value: str | None) -> str | None:
        return None if value is None else _full(_MEM, value, "a Slurm memory size", "4G or 500M")

    @field_validator("extra")
    @classmethod
    def _extra(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for option in value:
            _full(_EXTRA, option, "one sbatch long option", "--constraint=amd or --exclusive")
            if option.split("=", 1)[0] in _RESERVED_EXTRA:
                raise ValueError(f"{option!r} is set by the allocator itself; remove it")
        return value


class Target(_Model):
    """A kind of runner: its labels, its Slurm resources, how many at once, how long idle."""

    name: str
    labels: tuple[str, ...]
    slurm: SlurmTarget = SlurmTarget()
    max: Annotated[int, Field(ge=1, le=10000)] = 10
    idle_timeout: Annotated[float, Field(ge=0, le=86400)] = 300.0

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _full(_TARGET, value, "a target name (lower case, digits, - and _; up to 32)", "cpu or gpu-a100")

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("a target needs at least one label (GitHub matches jobs to runners by label)")
        for label in value:
            _full(_LABEL, label, "a runner label", "self-hosted or slurm")
        lowered = [label.lower() for label in value]
        if len(set(lowered)) != len(lowered):
            raise ValueError("labels repeat (GitHub compares them case-insensitively)")
        return value

    @property
    def label_set(self) -> frozenset[str]:
        return frozenset(label.lower() for label in self.labels)


class Container(_Model):
    """Run the runner command inside an image on the site (an image file the engine can run)."""

    image: str
    engine: Literal["apptainer", "singularity", "charliecloud", "docker"] = "apptainer"
    binds: tuple[str, ...] = ()


class Endpoint(_Model):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 0
    path: str = "/"

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _full(r"/[A-Za-z0-9._~/-]*", value, "a URL path", "/webhook")


class RunnersSettings(_Model):
    github: GitHubSettings
    targets: tuple[Target, ...]
    poll_interval: Annotated[float, Field(gt=0, le=3600)] = 5.0
    reconcile_interval: Annotated[float, Field(gt=0, le=86400)] = 180.0
    runner_dir: str = "~/actions-runner"
    runner_command: str = "./run.sh"
    work_folder: str = "_work"
    container: Container | None = None
    prefix: str = "ghr"
    state_dir: str | None = None  # SQLite and lock on this machine; default <ci.state_dir>/runners
    job_dir: str | None = None  # job scripts, logs, JIT files on the cluster; default <state_dir>/jobs
    submit_workers: Annotated[int, Field(ge=1, le=64)] = 4
    metrics: Endpoint | None = Endpoint(port=9464, path="/metrics")
    webhook: Endpoint | None = None
    keep_finished: Annotated[float, Field(ge=0)] = 86400.0  # seconds a finished runner's row is kept

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return _full(_PREFIX, value, "a name prefix (a lower-case letter, then letters or digits; up to 12)",
                     "ghr")

    @field_validator("runner_command", "runner_dir", "work_folder")
    @classmethod
    def _no_control(cls, value: str) -> str:
        if not value.strip() or re.search(r"[\x00-\x1f\x7f]", value):
            raise ValueError("must be one line of text without control characters")
        return value

    @field_validator("metrics")
    @classmethod
    def _loopback(cls, value: Endpoint | None) -> Endpoint | None:
        if value is not None and value.host != "localhost":
            try:
                loopback = ipaddress.ip_address(value.host).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                raise ValueError(f"metrics are served on a loopback address only; got {value.host!r} "
                                 "(use 127.0.0.1 and a reverse proxy or node exporter to publish them)")
        return value

    @model_validator(mode="after")
    def _unique_targets(self) -> RunnersSettings:
        if not self.targets:
            raise ValueError("ci.runners.targets is empty; give at least one {name, labels, slurm} entry")
        names = [target.name for target in self.targets]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"target names repeat: {', '.join(duplicates)}")
        label_sets = [target.label_set for target in self.targets]
        same = sorted({t.name for t, s in zip(self.targets, label_sets, strict=True) if label_sets.count(s) > 1})
        if same:
            raise ValueError(f"targets {', '.join(same)} have the same label set; a job could go to either")
        return self

    def target(self, name: str) -> Target | None:
        return next((target for target in self.targets if target.name == name), None)


def _problems(error: ValidationError, *, file: str, prefix: str) -> list[Problem]:
    """pydantic's errors as Problems (until ci.validation's shared formatter is on main)."""
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in (prefix, *item["loc"]) if part != "")
        message = str(item["msg"]).removeprefix("Value error, ")
        fix = {"extra_forbidden": "remove it (see the README for the allowed keys)",
               "missing": "add it"}.get(item["type"], "correct the value")
        problems.append(Problem(Path(file), where, message, fix))
    return problems


class RunnersConfigError(ConfigError):
    """`ci.runners` is missing or invalid: every problem at once, one line each."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("ci.runners is not usable:\n" + "\n".join(f"  {problem}" for problem in problems))


def parse_runners(raw: Mapping[str, Any], *, source: str = "invoke.yaml") -> RunnersSettings:
    """The `ci.runners` mapping as a model, or a RunnersConfigError with one Problem per bad field."""
    github = raw.get("github") if isinstance(raw, Mapping) else None
    if not raw or not isinstance(github, Mapping) or not github.get("repository") or not raw.get("targets"):
        raise RunnersConfigError([Problem(Path(source), "ci.runners", "the runner allocator is not configured "
                                          "(github.repository and targets are needed)",
                                          "set ci.runners.github.repository and ci.runners.targets (README: "
                                          "\"GitHub Actions runners as Slurm jobs\")")])
    try:
        return RunnersSettings.model_validate(dict(raw))
    except ValidationError as error:
        raise RunnersConfigError(_problems(error, file=source, prefix="ci.runners")) from None


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
