"""Where a command runs: this machine, or a remote one over SSH (fabric).

The site, the engines and the schedulers only ever talk to a `Host`, so the same code drives
the local default and a LUMI login node. Commands are argument lists, quoted once here.

Secrets never go into a command: an SSH host's `env` is sent inline on the remote command line
(visible in `ps` there), so secret values are passed as `stdin` or written to a 0600 file with
`write_text(..., mode=0o600)` and referenced by path.

An SSH host's key is checked against a known_hosts file (`ci.site.known_hosts`, default
~/.ssh/known_hosts): an unknown key is refused unless trust on first use is switched on
(`ci.site.trust_on_first_use`, and always for the build VM's private file), which records it;
a changed key is always refused. fabric's own default would accept any key.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
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

from ci.config.settings import SSHSettings
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


# Variables that hold secrets never reach a site's commands: sbatch exports the submitting
# environment to the job (a test printing `env` would put them in its log and the report), and
# slurmctld keeps each job's environment in its spool. What a command needs it is given explicitly.
# By name: the secrets this project and the tools around it read; by pattern: anything named like one.
SECRET_VARIABLES = frozenset({
    "CI_REGISTRY_TOKEN", "CI_REGISTRY_USER", "CI_SSH_KEY_PASSPHRASE", "CI_GITHUB_TOKEN", "CI_GITHUB_WEBHOOK_SECRET",
    "GITHUB_TOKEN", "GH_TOKEN", "GH_ENTERPRISE_TOKEN", "ACTIONS_RUNTIME_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
    "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_RUNNER_INPUT_JITCONFIG", "ACTIONS_CACHE_URL", "ACTIONS_RESULTS_URL",
    "OS_PASSWORD", "OS_APPLICATION_CREDENTIAL_ID", "OS_APPLICATION_CREDENTIAL_SECRET", "OS_TOKEN", "OS_AUTH_TOKEN",
    "SSH_AUTH_SOCK", "SSH_ASKPASS", "SSH_AGENT_PID", "DOCKER_AUTH_CONFIG", "REGISTRY_AUTH",
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "SPACK_SIGNING_KEY", "NETRC",
    "DATABASE_URL", "PGPASSWORD", "PGPASSFILE", "VAULT_TOKEN", "KUBECONFIG",
})
_SECRET_NAME = re.compile(r"TOKEN|PASSWORD|PASSWD|PASSPHRASE|SECRET|CREDENTIAL|PRIVATE|COOKIE|JITCONFIG|"
                          r"(^|_)(API_?)?KEYS?($|_)|(^|_)AUTH($|_)", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    """True for a variable listed in SECRET_VARIABLES or named like a secret (`*_TOKEN`, `*_KEY`, ...)."""
    return name.upper() in SECRET_VARIABLES or bool(_SECRET_NAME.search(name))


def without_secrets(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment minus the variables that hold, or are named like, a secret."""
    return {name: value for name, value in environ.items() if not is_secret_name(name)}


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


# --------------------------------------------------------------------------------------------
# host keys
# --------------------------------------------------------------------------------------------

class HostKeyError(SiteError):
    """The SSH server's host key is not the one known_hosts holds for it (or none is held)."""


def fingerprint(key: Any) -> str:
    """`SHA256:...` as `ssh-keygen -l` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def host_key_name(host: str, port: int) -> str:
    """How known_hosts names a server: `host`, or `[host]:port` off port 22 (as OpenSSH and paramiko do)."""
    return host if port == 22 else f"[{host}]:{port}"


class _RefuseUnknown:
    """paramiko's missing-host-key policy, strict: an unknown key ends the connection with the fix."""

    def __init__(self, settings: SSHSettings):
        self.settings = settings

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        path = self.settings.known_hosts_path
        host = self.settings.host_key_alias or self.settings.host
        port = f"-p {self.settings.port} " if self.settings.port != 22 else ""
        raise HostKeyError(
            f"the SSH host key of {host_key_name(host, self.settings.port)} ({key.get_name()} {fingerprint(key)}) "
            f"is not in {path}{'' if path.exists() else ' (the file does not exist)'}; check that fingerprint "
            f"against the site's documentation, then add the key (`ssh-keyscan {port}{host} >> {path}`), or set "
            "ci.site.trust_on_first_use: true to accept and record it on the first connection")


class _RecordUnknown:
    """Trust on first use: an unknown key is accepted once and appended to known_hosts (0600)."""

    def __init__(self, settings: SSHSettings):
        self.settings = settings

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        from paramiko.hostkeys import HostKeyEntry

        name = host_key_name(self.settings.host_key_alias or self.settings.host, self.settings.port)
        client.get_host_keys().add(hostname, key.get_name(), key)
        path = self.settings.known_hosts_path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # two first connections at once append one line each
            handle.write(HostKeyEntry([name], key).to_line())


def _load_known_hosts(client: Any, settings: SSHSettings) -> None:
    """Fill paramiko's host keys from known_hosts; under an alias (a pinned address) the name's keys count."""
    path = settings.known_hosts_path
    keys = client.get_host_keys()
    if path.is_file():
        try:
            keys.load(str(path))
        except Exception as exc:  # paramiko reads what OpenSSH writes; a broken line is the user's to fix
            raise HostKeyError(f"cannot read the known_hosts file {path}: {exc}; fix or remove the line") from None
    if settings.host_key_alias:
        known = keys.lookup(host_key_name(settings.host_key_alias, settings.port))
        for key_type, key in (known or {}).items():
            keys.add(host_key_name(settings.host, settings.port), key_type, key)
    client.set_missing_host_key_policy(_RecordUnknown(settings) if settings.trust_on_first_use
                                       else _RefuseUnknown(settings))


def _connection_error(exc: Exception, host: str, settings: SSHSettings) -> SiteError:
    """paramiko's and the socket's errors as one sentence; a changed host key says what to check."""
    if isinstance(exc, SiteError):
        return exc
    if type(exc).__name__ == "BadHostKeyException":
        name = host_key_name(settings.host_key_alias or settings.host, settings.port)
        offered, expected = getattr(exc, "key", None), getattr(exc, "expected_key", None)
        return HostKeyError(
            f"the SSH host key of {name} has changed: the server offered "
            f"{offered.get_name() if offered else '?'} {fingerprint(offered) if offered else '?'}, "
            f"{settings.known_hosts_path} holds {fingerprint(expected) if expected else '?'}; someone may be "
            "intercepting the connection. If the host was reinstalled, check the new key with its admins and "
            f"remove the old one (`ssh-keygen -R '{name}' -f {settings.known_hosts_path}`)")
    return SiteError(f"cannot run commands on {host}: {type(exc).__name__}: {exc}")


class SSHHost:
    """A remote machine reached with fabric (paramiko): a login node, or the build VM."""

    def __init__(self, settings: SSHSettings):
        from fabric import Connection  # imported here: local-only runs never pay for paramiko

        self.settings = settings
        self.name = f"{settings.user + '@' if settings.user else ''}{settings.host}"
        self.connection = Connection(host=settings.host, user=settings.user, port=settings.port,
                                     connect_timeout=settings.connect_timeout,
                                     connect_kwargs=settings.connect_kwargs())
        _load_known_hosts(self.connection.client, settings)

    def _open(self) -> None:
        """Connect (once), with host-key problems and unreachable hosts as one sentence each."""
        if self.connection.is_connected:
            return
        try:
            self.connection.open()
        except Exception as exc:
            raise _connection_error(exc, self.name, self.settings) from None

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
        self._open()
        try:
            outcome = self.connection.run(line, **kwargs)
            result = CommandResult(argv, outcome.exited, outcome.stdout, outcome.stderr)
        except Exception as exc:  # paramiko/socket errors: a dropped connection, a timeout
            if type(exc).__name__ == "CommandTimedOut":
                result = CommandResult(argv, 124, "", f"timed out after {timeout}s")
            else:
                raise _connection_error(exc, self.name, self.settings) from None
        if check and not result.ok:
            raise CommandFailed(self.name, result)
        return result

    def put(self, local: Path, remote: str) -> None:
        self.run(["mkdir", "-p", os.path.dirname(remote) or "."])
        self.connection.put(str(local), remote=remote)

    def get(self, remote: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        self._open()
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
        self._open()
        with self.connection.forward_local(local_port=local_port, remote_port=remote_port,
                                           remote_host=remote_host, local_host="127.0.0.1"):
            yield

    def close(self) -> None:
        self.connection.close()
