"""What every HPC container engine offers the pipeline, and the value types it is driven with.

An engine turns an image (from the site's Docker engine, a registry, or a `docker save` archive)
into one image file on the site, and builds the command that runs a program inside that file.
Commands are built by pure methods (`conversion_command`, `exec_command`) so that the engines we
cannot install here (Apptainer, SingularityCE) are still tested for exactly what they would run;
`convert` then runs the command on a `Host`, writing to `<output>.part` and renaming it, so an
interrupted conversion never leaves a file that looks finished.

Registry credentials never reach an argument list, nor the environment of an SSH command line
(fabric sends `env` inline, visible in `ps` on the login node): they are written to the command's
stdin and exported by a small `sh` prologue just before the engine starts.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, Protocol, runtime_checkable

from ci.errors import EngineError
from ci.hosts import Host

# --------------------------------------------------------------------------------------------
# Where an image comes from
# --------------------------------------------------------------------------------------------


class SourceKind(StrEnum):
    DAEMON = "docker-daemon"  # the Docker engine of the host that converts (local default, build VM)
    REGISTRY = "registry"  # a registry reference such as 127.0.0.1:5000/base:12-abc
    ARCHIVE = "docker-archive"  # a `docker save` archive on the converting host (what a transfer ships)


@dataclass(frozen=True)
class ImageSource:
    """Where the image to convert comes from. Build one with `daemon`, `registry` or `archive`.

    `location` is the image reference (daemon, registry; the registry's host is part of it) or the
    archive's path. `plain_http` marks a registry without TLS: the loopback one, an SSH tunnel's end.
    """

    kind: SourceKind
    location: str
    plain_http: bool = False

    @classmethod
    def daemon(cls, reference: str) -> ImageSource:
        return cls(SourceKind.DAEMON, reference)

    @classmethod
    def registry(cls, reference: str, *, insecure: bool = False) -> ImageSource:
        return cls(SourceKind.REGISTRY, reference, plain_http=insecure)

    @classmethod
    def archive(cls, path: str) -> ImageSource:
        return cls(SourceKind.ARCHIVE, path)

    @property
    def registry_host(self) -> str:
        """The registry's host[:port], as Docker reads a reference (no host part means Docker Hub)."""
        first, slash, _ = self.location.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost"):
            return first
        return "docker.io"

    def describe(self) -> str:
        text = f"{self.kind.value} image {self.location}"
        return text + (" (plain http)" if self.plain_http else "")


@dataclass(frozen=True)
class RegistryCredentials:
    """A registry login. The password is kept out of reprs, logs and argument lists."""

    username: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"RegistryCredentials(username={self.username!r}, password=***)"


# --------------------------------------------------------------------------------------------
# SquashFS compression
# --------------------------------------------------------------------------------------------

_LEVELS: dict[str, tuple[int, int] | None] = {
    "gzip": (1, 9), "zstd": (1, 22), "lzo": (1, 9), "xz": None, "lz4": None, "lzma": None,
}
_DEFAULT_LEVELS = {"zstd": 3}


@dataclass(frozen=True)
class Compression:
    """The mksquashfs compressor of an image file.

    Conversion dominates a run and Apptainer's and Charliecloud's default, gzip, is the slowest
    choice: on our machine zstd level 3 packs a 367 MB root file system 17x faster than gzip for
    3 % more bytes (docs/site.md, "Engines"). Mounting zstd needs squashfuse or a kernel built with
    SquashFS zstd support (Linux 4.14+, RHEL 8+, SLES 15+).
    """

    algorithm: str = "zstd"
    level: int | None = 3

    def __post_init__(self) -> None:
        if self.algorithm not in _LEVELS:
            raise EngineError(f"unknown SquashFS compressor '{self.algorithm}'; "
                              f"use one of {', '.join(sorted(_LEVELS))} (or 'default' for the engine's own)")
        bounds = _LEVELS[self.algorithm]
        if self.level is not None:
            if bounds is None:
                raise EngineError(f"mksquashfs takes no level for {self.algorithm}; write just '{self.algorithm}'")
            if not bounds[0] <= self.level <= bounds[1]:
                raise EngineError(f"{self.algorithm} level {self.level} is out of range; "
                                  f"use {bounds[0]}..{bounds[1]}")

    @classmethod
    def parse(cls, text: str | None) -> Compression | None:
        """`zstd`, `zstd:3`, `gzip:6`, `lz4`; `default`, `none` or empty keep the engine's own choice."""
        if text is None or str(text).strip().lower() in ("", "default", "none", "engine"):
            return None
        name, _, level = str(text).strip().lower().partition(":")
        if level:
            if not level.isdigit():
                raise EngineError(f"compression '{text}': the level must be a whole number, e.g. zstd:3")
            return cls(name, int(level))
        return cls(name, _DEFAULT_LEVELS.get(name))

    def mksquashfs_args(self) -> list[str]:
        args = ["-comp", self.algorithm]
        if self.level is not None:
            args += ["-Xcompression-level", str(self.level)]
        return args

    def __str__(self) -> str:
        return self.algorithm + (f":{self.level}" if self.level is not None else "")


# --------------------------------------------------------------------------------------------
# Running inside an image
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bind:
    """A host folder made visible inside the container at `target`."""

    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class EngineSettings:
    """Knobs shared by every engine; each engine reads the ones it understands.

    `binary` overrides the engine's main command (a full path on the site, for example).
    `path_prefix` is put in front of PATH for the engine's commands (None: the engine's default):
    Charliecloud's `ch-image` runs `env python3` and needs Debian's python3 with python3-lark, not
    a pyenv one, so that engine puts /usr/bin first unless told otherwise.
    """

    compression: Compression | None = Compression()
    binary: str | None = None
    docker: str = "docker"
    path_prefix: str | None = None
    exec_options: tuple[str, ...] = ()
    build_options: tuple[str, ...] = ()
    tmp_dir: str | None = None


@dataclass(frozen=True)
class Conversion:
    """The outcome of a conversion: where the file is, how long it took, what ran."""

    output: str
    seconds: float
    size: int | None
    command: tuple[str, ...]
    log: str


@runtime_checkable
class Engine(Protocol):
    """An HPC container engine behind the interface the pipeline uses."""

    name: ClassVar[str]
    file_suffix: ClassVar[str]
    binaries: ClassVar[tuple[str, ...]]

    def conversion_command(self, source: ImageSource, output: str) -> list[str]:
        """The command that writes the image file `output` from `source` (pure)."""
        ...

    def conversion_env(self, source: ImageSource) -> dict[str, str]:
        """Non-secret environment the conversion command needs (pure)."""
        ...

    def secret_env(self, credentials: RegistryCredentials) -> dict[str, str]:
        """The engine's variable names for registry credentials (delivered on stdin, never argv)."""
        ...

    def exec_command(self, image_file: str, argv: Sequence[str], binds: Sequence[Bind] = (), *,
                     pass_env: Sequence[str] = ()) -> list[str]:
        """The command that runs `argv` inside `image_file` with `binds` mounted (pure)."""
        ...

    def guest_path(self, index: int, host_path: str) -> str:
        """Where the `index`-th bind of `host_path` should appear inside the container."""
        ...

    def launcher(self, binds: Sequence[Bind], helper: str) -> list[str]:
        """The engine's words of a host-side test's SCMD (pure).

        Followed by `[-B SRC[:DST]]... IMAGE CMD [ARG...]` (the grammar of `singularity exec`,
        which LUMI's tests use unchanged) they run CMD inside IMAGE with `binds` and the test's own
        binds mounted. `helper` is where `launcher_helper()`'s text is written on the site, for an
        engine whose own grammar differs.
        """
        ...

    def launcher_helper(self) -> str | None:
        """A bash script translating that grammar into the engine's own, or None when none is needed."""
        ...

    def prepare(self, host: Host, source: ImageSource, output: str) -> None:
        """Stage on `host` what the conversion command refers to (before running it, here or in a job)."""
        ...

    def cleanup(self, host: Host, output: str) -> None:
        """Remove `output` and whatever the conversion staged or left beside it."""
        ...

    def convert(self, host: Host, source: ImageSource, output: str, *, env: Mapping[str, str] | None = None,
                credentials: RegistryCredentials | None = None, timeout: float | None = None) -> Conversion:
        """Run the conversion on `host`; `output` appears complete or not at all."""
        ...


# --------------------------------------------------------------------------------------------
# Shared machinery
# --------------------------------------------------------------------------------------------

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Reads NAME=value lines from stdin, exports them, then runs the real command: keeps secrets off
# the argument list and off the SSH command line.
SECRET_PROLOGUE = 'while IFS= read -r line; do export "$line"; done; exec "$@"'


def with_secret_env(argv: Sequence[str], secrets: Mapping[str, str]) -> tuple[list[str], str]:
    """Wrap `argv` so that `secrets` reach it as environment variables through stdin."""
    lines = []
    for name, value in secrets.items():
        if not _ENV_NAME.match(name):
            raise EngineError(f"'{name}' is not a valid environment variable name")
        if "\n" in value or "\r" in value:
            raise EngineError(f"the value of {name} contains a line break; registry credentials must be one line")
        lines.append(f"{name}={value}\n")
    return ["sh", "-c", SECRET_PROLOGUE, "sh", *argv], "".join(lines)


def with_env(argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """`env NAME=value ... argv`: non-secret variables as arguments, quoted once by the Host.

    (A Host's own `env` goes through fabric's inline `export` on SSH hosts, which does not quote
    values with spaces; ci.schedulers.base has the same helper for job submission.)
    """
    for name in env:
        if not _ENV_NAME.match(name):
            raise EngineError(f"'{name}' is not a valid environment variable name")
    return ["env", *(f"{name}={value}" for name, value in env.items()), *argv] if env else list(argv)


def with_path_prefix(argv: Sequence[str], prefix: str | None) -> list[str]:
    """Run `argv` with `prefix` in front of the host's PATH (expanded on the host, not here)."""
    if not prefix:
        return list(argv)
    return ["sh", "-c", f'PATH={shlex.quote(prefix)}:"$PATH"; export PATH; exec "$@"', "sh", *argv]


# The part every launcher helper shares: singularity exec's options before the image, collected
# into the array `binds` as (SRC DST) pairs; `$image` and the command are left in "$@".
LAUNCHER_OPTIONS = r"""set -euo pipefail
binds=()
add_binds() {
    local spec src dst
    IFS=, read -ra specs <<< "$1"
    for spec in "${specs[@]}"; do
        src=${spec%%:*}; dst=${spec#*:}; [ "$dst" = "$spec" ] && dst=$src
        dst=${dst%:ro}; dst=${dst%:rw}
        binds+=("$src" "$dst")
    done
}
while [ $# -gt 0 ]; do
    case $1 in
        -B|--bind|-b) [ $# -ge 2 ] || { echo "SCMD: $1 needs SRC[:DST]" >&2; exit 125; }; add_binds "$2"; shift 2 ;;
        --bind=*) add_binds "${1#--bind=}"; shift ;;
        -B?*) add_binds "${1#-B}"; shift ;;
        --) shift; break ;;
        -*) echo "SCMD: option $1 is not understood here (only -B/--bind SRC[:DST] before the image)" >&2
            exit 125 ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || { echo "SCMD: no image given (usage: \$SCMD [-B SRC[:DST]]... IMAGE CMD...)" >&2; exit 125; }
image=$1; shift
"""


def tail(text: str, lines: int = 5) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return " / ".join(kept)


class BaseEngine:
    """The conversion protocol every engine shares: `.part` file, timing, cleanup, clear errors."""

    name: ClassVar[str] = "engine"
    file_suffix: ClassVar[str] = "img"
    binaries: ClassVar[tuple[str, ...]] = ()
    install_hint: ClassVar[str] = ""

    def __init__(self, settings: EngineSettings | None = None):
        self.settings = settings or EngineSettings()

    # Subclasses implement these three.
    def conversion_command(self, source: ImageSource, output: str) -> list[str]:
        raise NotImplementedError

    def exec_command(self, image_file: str, argv: Sequence[str], binds: Sequence[Bind] = (), *,
                     pass_env: Sequence[str] = ()) -> list[str]:
        raise NotImplementedError

    def secret_env(self, credentials: RegistryCredentials) -> dict[str, str]:
        raise NotImplementedError

    def conversion_env(self, source: ImageSource) -> dict[str, str]:
        return {}

    def guest_path(self, index: int, host_path: str) -> str:
        return host_path

    def launcher(self, binds: Sequence[Bind], helper: str) -> list[str]:
        words = ["bash", helper]
        for bind in binds:
            words += ["-B", f"{bind.source}:{bind.target}" + (":ro" if bind.read_only else "")]
        return words

    def launcher_helper(self) -> str | None:
        raise EngineError(f"host-side tests (run: host) are not available with the {self.name} engine")

    def prepare(self, host: Host, source: ImageSource, output: str) -> None:
        """Stage helper files the conversion command refers to (none by default)."""

    def cleanup(self, host: Host, output: str) -> None:
        """Remove what a conversion leaves beside `output` (scratch folders, helpers)."""
        host.run(["rm", "-rf", output], check=False)

    def convert(self, host: Host, source: ImageSource, output: str, *, env: Mapping[str, str] | None = None,
                credentials: RegistryCredentials | None = None, timeout: float | None = None) -> Conversion:
        part = f"{output}.part"
        directory = output.rsplit("/", 1)[0] if "/" in output else "."
        host.run(["mkdir", "-p", directory])
        self.cleanup(host, part)
        self.prepare(host, source, part)
        argv = with_env(self.conversion_command(source, part), {**self.conversion_env(source), **(env or {})})
        stdin: str | None = None
        if credentials is not None:
            argv, stdin = with_secret_env(argv, self.secret_env(credentials))
        started = time.monotonic()
        result = host.run(argv, stdin=stdin, timeout=timeout, check=False)
        seconds = time.monotonic() - started
        log = result.stdout + result.stderr
        if not result.ok:
            self.cleanup(host, part)
            why = "timed out" if result.returncode == 124 and timeout else f"exited {result.returncode}"
            raise EngineError(f"{self.name} could not convert the {source.describe()} on {host.name}: {why}: "
                              f"{tail(log)}{self._hint(result.returncode, log)}")
        moved = host.run(["mv", "-f", part, output], check=False)
        self.cleanup(host, part)
        if not moved.ok:
            raise EngineError(f"cannot move {part} to {output} on {host.name}: {tail(moved.stderr)}; "
                              "check the site folder's permissions and free space")
        size_result = host.run(["stat", "-c", "%s", output], check=False)
        size = int(size_result.stdout.strip()) if size_result.ok and size_result.stdout.strip().isdigit() else None
        return Conversion(output=output, seconds=seconds, size=size, command=tuple(argv), log=log)

    def _hint(self, returncode: int, log: str) -> str:
        """A fix for failures we recognise, appended to the error message."""
        lowered = log.lower()
        if returncode == 127 or "command not found" in lowered:
            return f"; {self.install_hint or f'install {self.name} on the site host'}"
        if "no space left" in lowered:
            return "; free space in the site folder (or point the engine's temporary folder elsewhere)"
        if "server gave http response to https client" in lowered:
            return "; the registry speaks plain http: mark the source plain_http (ci.site.registry.insecure)"
        if "unauthorized" in lowered or "authentication required" in lowered:
            return "; the registry wants a login: provide credentials (secrets/registry or CI_REGISTRY_*)"
        return ""
