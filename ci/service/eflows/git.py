"""The workflow registry and the software catalog as git repositories (or plain folders).

eFlows4HPC's builder clones the whole registry for every build (`git clone --single-branch --branch
V`, in a shell line built from the request). Here a location is a git URL (https, ssh, scp-like or
file) or a folder; a version is a branch or tag of it, resolved with `git ls-remote` to a commit and
fetched, shallow, into a cache of bare clones (one fetch at a time per repository, through a lock
file; every git call has a time limit). A step is then exported from that commit with `git archive`
into a fresh folder: regular files and folders only, bounded in size. Every git call is an argument
vector; a request's values reach git only after their grammar, and never as options.

A folder that is not a git repository is read as it is (version `latest`, or the older layout's
version subfolder); its commit is empty, and its content alone decides the digest.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import re
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ci.errors import CIError, ConfigError, DefinitionError, Problem

BODY = Path("request body")
_URL = re.compile(r"^(https://|ssh://|file://)[^\s]{1,2000}\Z")
_SCP = re.compile(r"^[A-Za-z0-9._-]{1,64}@[A-Za-z0-9.-]{1,253}:[A-Za-z0-9._~/-]{1,1000}\Z")
_USER_PASSWORD = re.compile(r"^[a-z]+://[^/@]*:[^/@]*@")
_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?\Z")
MAX_EXPORT_BYTES = 512 * 1024 * 1024
MAX_EXPORT_FILES = 50_000


class SourceError(CIError):
    """The registry or catalog could not be read (unreachable, timed out): the service's problem, not the request's."""


@dataclass(frozen=True)
class Location:
    """A configured registry or catalog: a git URL, or a folder (a git work tree or bare repository is git too)."""

    text: str
    git: bool
    url: str  # what git is given (the URL, or the folder's path)

    @property
    def shown(self) -> str:
        return self.text


def location(value: str, project_dir: Path, key: str) -> Location:
    """Parse a configured location; ConfigError names the key and the fix."""
    if not value or any(ord(ch) < 32 for ch in value) or value.startswith("-"):
        raise ConfigError(f"{key}: {value!r} is not a git URL or a folder; use https://..., ssh://..., file://... "
                          "or a path")
    if _USER_PASSWORD.match(value):
        raise ConfigError(f"{key}: the URL holds a password; give git its credentials through a credential helper "
                          "or an SSH key, never in the configuration")
    if _URL.match(value) or _SCP.match(value):
        return Location(value, True, value)
    if "://" in value:
        raise ConfigError(f"{key}: {value!r} uses a protocol this service does not fetch; use https, ssh or file")
    path = Path(os.path.expanduser(value))
    path = path if path.is_absolute() else project_dir / path
    is_git = (path / ".git").exists() or ((path / "HEAD").is_file() and (path / "objects").is_dir())
    return Location(str(path), is_git, str(path))


def _environment() -> dict[str, str]:
    keep = ("PATH", "HOME", "SSH_AUTH_SOCK", "GIT_SSH_COMMAND", "http_proxy", "https_proxy", "no_proxy",
            "HTTPS_PROXY", "NO_PROXY", "SSL_CERT_FILE", "GIT_SSL_CAINFO")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    env.update(GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="/bin/false", SSH_ASKPASS="/bin/false", LC_ALL="C",
               GIT_CONFIG_NOSYSTEM="1")
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    return env


_PROTOCOLS = ["-c", "protocol.allow=never", "-c", "protocol.https.allow=always", "-c", "protocol.ssh.allow=always",
              "-c", "protocol.file.allow=always", "-c", "core.hooksPath=/dev/null"]


class GitCache:
    """Bare clones under `root`, one per location, fetched shallow per version; calls bounded by `timeout`."""

    def __init__(self, root: Path, timeout: float = 120.0):
        self.root = root
        self.timeout = timeout

    def _git(self, *args: str, repo: Path | None = None,
             timeout: float | None = None) -> subprocess.CompletedProcess[bytes]:
        argv = ["git", *_PROTOCOLS, *(["--git-dir", str(repo)] if repo else []), *args]
        try:
            return subprocess.run(argv, capture_output=True, timeout=timeout or self.timeout, env=_environment(),
                                  stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            raise SourceError(f"git {args[0]} did not finish within {timeout or self.timeout:.0f} s "
                              "(ci.service.git_timeout)") from None
        except OSError as exc:
            raise SourceError(f"git could not run: {exc.strerror}") from None

    def _repo(self, where: Location) -> Path:
        return self.root / (hashlib.sha256(where.url.encode("utf-8")).hexdigest()[:24] + ".git")

    @contextlib.contextmanager
    def _locked(self, repo: Path) -> Iterator[None]:
        """One fetch at a time per repository (across threads, replicas and library mode)."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(str(repo) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.timeout
        try:
            while True:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise SourceError("another fetch of the same repository did not end in time") from None
                    time.sleep(0.1)
            yield
        finally:
            os.close(descriptor)

    def resolve(self, where: Location, version: str, field: str = "version") -> str:
        """The commit of branch or tag `version` (fetched into the cache); DefinitionError if there is none."""
        repo = self._repo(where)
        with self._locked(repo):
            if not (repo / "HEAD").is_file():
                result = self._git("init", "--bare", "-q", str(repo))
                if result.returncode:
                    raise SourceError(f"git init failed: {_text(result.stderr)}")
            listed = self._git("ls-remote", "--", where.url, f"refs/heads/{version}", f"refs/tags/{version}")
            if listed.returncode:
                raise SourceError(f"the repository {where.shown} does not answer: {_text(listed.stderr)}")
            refs: dict[str, str] = {}
            for line in _text(listed.stdout).splitlines():
                sha, tab, name = line.partition("\t")
                if tab:
                    refs[name] = sha
            ref = next((name for name in (f"refs/heads/{version}", f"refs/tags/{version}") if name in refs), None)
            if ref is None:
                raise DefinitionError([Problem(BODY, field, f"{where.shown} has no branch or tag '{version}'",
                                               "name a branch or tag of the repository (or latest)")])
            sha = refs[ref]
            if self._git("cat-file", "-e", f"{sha}^{{commit}}", repo=repo).returncode:
                fetched = self._git("fetch", "--depth", "1", "--no-tags", "-q", "--", where.url, f"+{ref}:{ref}",
                                    repo=repo)
                if fetched.returncode:
                    raise SourceError(f"fetching {version} of {where.shown} failed: {_text(fetched.stderr)}")
            parsed = self._git("rev-parse", "--verify", "-q", f"{sha}^{{commit}}", repo=repo)
            commit = _text(parsed.stdout).strip()
            if parsed.returncode or not _SHA.match(commit):
                raise SourceError(f"{version} of {where.shown} did not resolve to a commit")
            return commit

    def has_tree(self, where: Location, commit: str, path: str) -> bool:
        kind = self._git("cat-file", "-t", f"{commit}:{path}", repo=self._repo(where))
        return kind.returncode == 0 and _text(kind.stdout).strip() == "tree"

    def export(self, where: Location, commit: str, path: str, target: Path) -> None:
        """The folder `path` of `commit` (the whole tree for "") into `target`: files and folders only."""
        args = ["archive", "--format=tar", commit] + (["--", path] if path else [])
        result = self._git(*args, repo=self._repo(where))
        if result.returncode:
            raise SourceError(f"git archive of {path or 'the repository'} failed: {_text(result.stderr)}")
        extract(result.stdout, path, target)


def extract(data: bytes, prefix: str, target: Path) -> None:
    """Unpack a `git archive` tar below `prefix` into `target`; links, devices and escapes are refused."""
    target.mkdir(parents=True, exist_ok=True)
    base = f"{prefix.rstrip('/')}/" if prefix else ""
    total = count = 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        for member in archive:
            if member.name in ("pax_global_header",) or member.type == tarfile.XGLTYPE:
                continue
            name = member.name.rstrip("/")
            if base and not (name + "/").startswith(base):
                continue
            relative = name[len(base):] if base else name
            if not relative:
                continue
            parts = relative.split("/")
            if any(part in ("", ".", "..") for part in parts) or relative.startswith("/"):
                raise DefinitionError([Problem(Path(name), "", "is not a plain path inside the step",
                                               "rename it in the registry")])
            destination = target.joinpath(*parts)
            count += 1
            if count > MAX_EXPORT_FILES:
                raise DefinitionError([Problem(Path(prefix or "."), "", f"has more than {MAX_EXPORT_FILES} files",
                                               "keep large data out of the registry")])
            if member.isdir():
                destination.mkdir(parents=True, exist_ok=True)
            elif member.isreg():
                total += member.size
                if total > MAX_EXPORT_BYTES:
                    raise DefinitionError([Problem(Path(prefix or "."), "", "is larger than 512 MiB",
                                                   "keep large data out of the registry")])
                destination.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                assert source is not None
                destination.write_bytes(source.read())
                destination.chmod(0o755 if member.mode & 0o111 else 0o644)
            elif member.issym():
                raise DefinitionError([Problem(Path(name), "", "is a symbolic link",
                                               "commit the file itself (links are not copied into images here)")])
            else:
                raise DefinitionError([Problem(Path(name), "", "is not a regular file or folder", "remove it")])


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace").strip()[:2000]
