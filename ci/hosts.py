"""Where a command runs: this machine, or a remote one over SSH (fabric).

The site, the engines and the schedulers only ever talk to a `Host`, so the same code drives
the local default and a LUMI login node. Commands are argument lists, quoted once here.

Secrets never go into a command: an SSH host's `env` is sent inline on the remote command line
(visible in `ps` there), so secret values are passed as `stdin` or written to a 0600 file with
`write_text(..., mode=0o600)` and referenced by path.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ci.config import SSHSettings
from ci.errors import SiteError


@dataclass(frozen=True)
class CommandResult:
    command: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class CommandFailed(SiteError):
    def __init__(self, host: str, result: CommandResult):
        self.result = result
        last = (result.stderr.strip() or result.stdout.strip()).splitlines()[-3:]
        super().__init__(f"on {host}: `{shlex.join(result.command)}` exited {result.returncode}: {' / '.join(last)}")


class Host(Protocol):
    """A machine we run commands on and move files to."""

    name: str

    def run(self, command: Sequence[str], *, env: Mapping[str, str] | None = None, stdin: str | None = None,
            timeout: float | None = None, check: bool = True, cwd: str | None = None) -> CommandResult: ...

    def put(self, local: Path, remote: str) -> None: ...

    def get(self, remote: str, local: Path) -> None: ...

    def write_text(self, remote: str, text: str, mode: int | None = None) -> None: ...

    def read_text(self, remote: str) -> str: ...

    def exists(self, remote: str) -> bool: ...

    def close(self) -> None: ...


# Names of variables that hold secrets (CI_REGISTRY_TOKEN, CI_SSH_KEY_PASSPHRASE, OS_PASSWORD,
# GITHUB_TOKEN, ...). The commands of a site never inherit them: sbatch exports the submitting
# environment to the job (a test printing `env` would put them in its log and the report), and
# slurmctld keeps each job's environment in its spool. What a command needs it is given explicitly.
_SECRET_NAME = re.compile(r"TOKEN|PASSWORD|PASSPHRASE|SECRET|CREDENTIAL", re.IGNORECASE)


def without_secrets(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment minus the variables whose names say they hold a secret."""
    return {name: value for name, value in environ.items() if not _SECRET_NAME.search(name)}


class LocalHost:
    """This machine (its commands inherit our environment, less the secrets)."""

    name = "localhost"

    def run(self, command: Sequence[str], *, env: Mapping[str, str] | None = None, stdin: str | None = None,
            timeout: float | None = None, check: bool = True, cwd: str | None = None) -> CommandResult:
        argv = tuple(str(part) for part in command)
        try:
            completed = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout,
                                       env={**without_secrets(os.environ), **(env or {})}, cwd=cwd, check=False)
        except FileNotFoundError:
            result = CommandResult(argv, 127, "", f"{argv[0]}: command not found")
        except subprocess.TimeoutExpired as exc:
            result = CommandResult(argv, 124, str(exc.stdout or ""), f"timed out after {timeout}s")
        else:
            result = CommandResult(argv, completed.returncode, completed.stdout, completed.stderr)
        if check and not result.ok:
            raise CommandFailed(self.name, result)
        return result

    def put(self, local: Path, remote: str) -> None:
        Path(remote).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(local, remote)

    def get(self, remote: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(remote, local)

    def write_text(self, remote: str, text: str, mode: int | None = None) -> None:
        target = Path(remote)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")  # concurrent writers never share it
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode if mode is not None else 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        if mode is not None:
            os.chmod(temporary, mode)
        os.replace(temporary, target)

    def read_text(self, remote: str) -> str:
        return Path(remote).read_text(encoding="utf-8")

    def exists(self, remote: str) -> bool:
        return os.path.lexists(remote)

    def close(self) -> None:
        return None


class _ChunkedInput(io.StringIO):
    """stdin for fabric: Invoke asks a stream that is not a terminal for one character per 10 ms
    tick (100 bytes/s, 80 s for an 8 kB file); hand it the text in large chunks instead."""

    def read(self, size: int | None = -1) -> str:
        return super().read(-1 if size is None or size < 0 else max(size, 1 << 16))


class SSHHost:
    """A remote machine reached with fabric (paramiko): a login node, or the build VM."""

    def __init__(self, settings: SSHSettings):
        from fabric import Connection  # imported here: local-only runs never pay for paramiko

        self.settings = settings
        self.name = f"{settings.user + '@' if settings.user else ''}{settings.host}"
        self.connection = Connection(host=settings.host, user=settings.user, port=settings.port,
                                     connect_timeout=settings.connect_timeout,
                                     connect_kwargs=settings.connect_kwargs())

    def run(self, command: Sequence[str], *, env: Mapping[str, str] | None = None, stdin: str | None = None,
            timeout: float | None = None, check: bool = True, cwd: str | None = None) -> CommandResult:
        argv = tuple(str(part) for part in command)
        # Variables go through env(1), quoted like every other argument: fabric's inline
        # `export` does not quote values. They are visible on the remote side: never secrets.
        prefix = ["env", *(f"{name}={value}" for name, value in (env or {}).items())] if env else []
        line = shlex.join([*prefix, *argv])
        if cwd:
            line = f"cd {shlex.quote(cwd)} && {line}"
        kwargs: dict[str, Any] = {"hide": True, "warn": True, "timeout": timeout}
        if stdin is not None:
            kwargs["in_stream"] = _ChunkedInput(stdin)
        else:
            kwargs["in_stream"] = False
        try:
            outcome = self.connection.run(line, **kwargs)
            result = CommandResult(argv, outcome.exited, outcome.stdout, outcome.stderr)
        except Exception as exc:  # paramiko/socket errors: unreachable host, auth failure, timeout
            if type(exc).__name__ == "CommandTimedOut":
                result = CommandResult(argv, 124, "", f"timed out after {timeout}s")
            else:
                raise SiteError(f"cannot run commands on {self.name}: {type(exc).__name__}: {exc}") from None
        if check and not result.ok:
            raise CommandFailed(self.name, result)
        return result

    def put(self, local: Path, remote: str) -> None:
        self.run(["mkdir", "-p", os.path.dirname(remote) or "."])
        self.connection.put(str(local), remote=remote)

    def get(self, remote: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        self.connection.get(remote, local=str(local))

    def write_text(self, remote: str, text: str, mode: int | None = None) -> None:
        directory = os.path.dirname(remote) or "."
        temporary = f"{directory}/.{os.path.basename(remote)}.{uuid.uuid4().hex[:8]}.tmp"
        umask = f"umask {0o777 & ~mode:03o} && " if mode is not None else ""
        self.run(["sh", "-c", f'{umask}mkdir -p "$1" && cat > "$2" && mv -f "$2" "$3"', "sh", directory,
                  temporary, remote], stdin=text)

    def read_text(self, remote: str) -> str:
        return self.run(["cat", remote]).stdout

    def exists(self, remote: str) -> bool:
        return self.run(["test", "-e", remote], check=False).ok

    @contextlib.contextmanager
    def tunnel(self, local_port: int, remote_port: int, remote_host: str = "127.0.0.1") -> Iterator[None]:
        """Forward localhost:local_port to remote_host:remote_port as seen from the remote machine."""
        with self.connection.forward_local(local_port=local_port, remote_port=remote_port,
                                           remote_host=remote_host, local_host="127.0.0.1"):
            yield

    def close(self) -> None:
        self.connection.close()
