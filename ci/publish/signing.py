"""Detached OpenPGP signatures with the real `gpg`, in a throw-away keyring.

Why a keyring of our own: the signing key must not land in the user's ~/.gnupg, and two runs must not
share agent state. `Signer` makes a private GNUPGHOME (mode 0700) for its lifetime, imports the armored
secret key through stdin (never argv, never a file of ours), signs a file by path (gpg reads it in its
own process, beside the upload of the same file) or small data on stdin, the passphrase on a pipe of
its own, exports the public key that is published beside the catalog, and stops its gpg-agent and
removes the folder on close. `Keyring` does the same with a public key only, to check signatures.

Where the key comes from (`ci.publish.signing`): the variable `key_env` (an armored key), else the
file `key_file` of the secrets folder. Neither the key nor its passphrase reaches a command line, a
log or an exception message; gpg's own stderr is not repeated either (it can echo key material's
user ids, which are not secret, but we keep messages to our own words).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ci.config.publish import SigningSettings
from ci.errors import CIError
from ci.publish.openpgp import AgentError, AgentSigner, agent_socket, keygrips

GPG = "gpg"


class SigningError(CIError):
    """The signing key is missing, unreadable or refused; the message says which setting to fix."""


class _Home:
    """A private GNUPGHOME and the gpg calls made in it."""

    def __init__(self) -> None:
        if shutil.which(GPG) is None:
            raise SigningError("gpg is not installed (Debian package gnupg); signatures need it")
        self.path = Path(tempfile.mkdtemp(prefix="ci-gnupg-"))
        self.path.chmod(0o700)
        # The agent re-protects an imported key with its own S2K and runs it on every signature: with
        # its calibrated default that is ~0.1 s unloaded, seconds on a busy machine, per signature. This
        # keyring lives in a 0700 folder for one run and is removed after it, so the minimum count is
        # enough here; the key file the user keeps is untouched.
        (self.path / "gpg-agent.conf").write_text("s2k-count 65536\n", encoding="utf-8")
        # SHA-256 where the key allows it: the hash the publication computes anyway (see openpgp.py)
        (self.path / "gpg.conf").write_text("personal-digest-preferences SHA256 SHA384 SHA512\n", encoding="utf-8")

    @property
    def env(self) -> dict[str, str]:
        keep = {name: value for name, value in os.environ.items() if name in ("PATH", "LANG", "LC_ALL", "HOME")}
        return {**keep, "GNUPGHOME": str(self.path)}

    def gpg(self, arguments: Sequence[str], *, stdin: bytes | None = None, check: bool = True,
            what: str = "gpg") -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run([GPG, "--batch", "--no-tty", "--quiet", *arguments], input=stdin,
                                capture_output=True, env=self.env, check=False, timeout=600)
        if check and result.returncode != 0:
            raise SigningError(f"{what} failed (gpg exit {result.returncode})")
        return result

    def fingerprints(self, secret: bool) -> list[str]:
        listing = self.gpg(["--with-colons", "--list-secret-keys" if secret else "--list-keys"], check=False)
        lines = listing.stdout.decode(errors="replace").splitlines()
        return [line.split(":")[9] for line in lines if line.startswith("fpr:")][:1] if lines else []

    def close(self) -> None:
        subprocess.run(["gpgconf", "--kill", "all"], env=self.env, capture_output=True, check=False)
        shutil.rmtree(self.path, ignore_errors=True)


class Signer:
    """Signs files with one secret key, in its own keyring; use as a context manager."""

    def __init__(self, key: bytes, passphrase: str | None):
        self._home = _Home()
        self._passphrase = passphrase
        self._public: bytes | None = None
        try:
            self._home.gpg(["--import"], stdin=key, what="importing the signing key")
            found = self._home.fingerprints(secret=True)
            if not found:
                raise SigningError("the signing key holds no secret key; export it with "
                                   "`gpg --armor --export-secret-keys KEYID`")
            self.fingerprint = found[0]
            self._agent = self._probe_agent()
        except BaseException:
            self._home.close()
            raise

    def _probe_agent(self) -> AgentSigner | None:
        """The agent path (`openpgp.py`) when a signature it frames is one gpg verifies, else None.
        The probe is also the first signature: a wrong passphrase is reported here, once."""
        probe = b"containers-ci signing probe\n"
        by_gpg = PendingSignature(self._detach_sign(None), "signing").finish(probe)
        listing = self._home.gpg(["--with-colons", "--with-keygrip", "--list-secret-keys"], check=False)
        path = agent_socket(self._home.env)
        if path is None:
            return None
        agent = AgentSigner.probe(by_gpg, keygrips(listing.stdout.decode(errors="replace")), path, self._passphrase)
        if agent is None:
            return None
        try:
            by_agent = agent.sign(hashlib.sha256(probe))
        except (AgentError, OSError, ValueError):
            return None
        with tempfile.TemporaryDirectory(prefix="ci-probe-", dir=self._home.path) as folder:
            (Path(folder) / "probe").write_bytes(probe)
            (Path(folder) / "probe.asc").write_bytes(by_agent)
            checked = self._home.gpg(["--status-fd", "1", "--verify", str(Path(folder) / "probe.asc"),
                                      str(Path(folder) / "probe")], check=False)
        return agent if checked.returncode == 0 and b"VALIDSIG" in checked.stdout else None

    @property
    def hashes_itself(self) -> bool:
        """True when a file's signature is made from the SHA-256 its reader computes (no second read)."""
        return self._agent is not None

    @classmethod
    def from_settings(cls, settings: SigningSettings, project_dir: Path,
                      environ: Mapping[str, str] | None = None) -> Signer | None:
        """The configured key, or None when there is none and signing is not required."""
        environ = os.environ if environ is None else environ
        key: bytes | None = environ[settings.key_env].encode() if environ.get(settings.key_env) else None
        source = f"the variable {settings.key_env}"
        if key is None:
            path = Path(os.path.expanduser(settings.key_file))
            path = path if path.is_absolute() else project_dir / path
            source = f"the file {path}"
            if path.is_file():
                key = path.read_bytes()
        if key is None:
            if settings.required:
                raise SigningError(f"no signing key: set {settings.key_env} to an armored secret key or write "
                                   f"it to {settings.key_file} (ci.publish.signing); or set "
                                   "ci.publish.signing.required: false to publish unsigned")
            return None
        try:
            return cls(key, environ.get(settings.passphrase_env) or None)
        except SigningError as exc:
            raise SigningError(f"{exc} (key from {source})") from None

    def __enter__(self) -> Signer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._home.close()

    def sign(self, path: Path) -> bytes:
        """An armored detached signature of the file at `path`, by gpg (it reads the file)."""
        return PendingSignature(self._detach_sign(path), f"signing {path.name}").finish()

    def start(self, path: Path) -> FileSignature:
        """Start signing the file at `path`, which the caller is about to read and hash with SHA-256:
        the agent signs that hash at `finish` (no second read), or gpg reads and hashes the file in
        its own process meanwhile (the other core)."""
        if self._agent is not None:
            return FileSignature(None, self._agent)
        return FileSignature(PendingSignature(self._detach_sign(path), f"signing {path.name}"), None)

    def sign_bytes(self, data: bytes) -> bytes:
        """An armored detached signature of `data` (by the agent, or by gpg reading it on stdin)."""
        if self._agent is not None:
            return _agent_sign(self._agent, hashlib.sha256(data))
        return PendingSignature(self._detach_sign(None), "signing").finish(data)

    def _detach_sign(self, path: Path | None) -> subprocess.Popen[bytes]:
        """`gpg --detach-sign` of `path` (None: stdin), the passphrase on a pipe of its own, never on argv."""
        arguments = [GPG, "--batch", "--no-tty", "--quiet", "--armor", "--local-user", self.fingerprint,
                     "--output", "-"]
        read_end, write_end = os.pipe()
        try:
            if self._passphrase is not None:
                arguments += ["--pinentry-mode", "loopback", "--passphrase-fd", str(read_end)]
            arguments += ["--detach-sign", *([str(path)] if path is not None else [])]
            process = subprocess.Popen(arguments, stdin=subprocess.PIPE if path is None else subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=self._home.env,
                                       pass_fds=(read_end,))
        finally:
            os.close(read_end)
            with os.fdopen(write_end, "wb") as passphrase:
                if self._passphrase is not None:
                    with contextlib.suppress(BrokenPipeError):
                        passphrase.write(self._passphrase.encode() + b"\n")
        return process

    def public_key(self) -> bytes:
        if self._public is None:
            self._public = self._home.gpg(["--armor", "--export", self.fingerprint],
                                          what="exporting the public key").stdout
        return self._public


def _agent_sign(agent: AgentSigner, hashed: Any) -> bytes:
    try:
        return agent.sign(hashed)
    except AgentError as exc:
        if exc.bad_passphrase:
            raise SigningError("signing failed (gpg-agent: bad passphrase); check the key's passphrase variable "
                               "(ci.publish.signing.passphrase_env)") from None
        raise SigningError(f"signing failed ({exc})") from None
    except OSError as exc:
        raise SigningError(f"signing failed: the keyring's gpg-agent did not answer ({type(exc).__name__})") from None


class FileSignature:
    """The signature of a file its reader hashes with SHA-256 (`Signer.start`)."""

    def __init__(self, pending: PendingSignature | None, agent: AgentSigner | None):
        self._pending = pending
        self._agent = agent

    def finish(self, hashed: Any) -> bytes:
        """The armored signature; `hashed`: the reader's sha256 object over the whole file."""
        if self._agent is not None:
            return _agent_sign(self._agent, hashed)
        assert self._pending is not None
        return self._pending.finish()

    def abort(self) -> None:
        if self._pending is not None:
            self._pending.abort()


class PendingSignature:
    """One running `gpg --detach-sign` (`Signer.start`, `Signer.sign_bytes`)."""

    def __init__(self, process: subprocess.Popen[bytes], what: str):
        self._process = process
        self._what = what

    def finish(self, data: bytes | None = None) -> bytes:
        """The armored signature (`data`: what gpg signs from stdin); an error if gpg failed (its
        stderr is not repeated)."""
        try:
            output, _ = self._process.communicate(data, timeout=600)
        except subprocess.TimeoutExpired:
            self.abort()
            raise SigningError(f"{self._what} did not finish in 10 minutes (gpg)") from None
        if self._process.returncode != 0:
            raise SigningError(f"{self._what} failed (gpg exit {self._process.returncode}); check the key's "
                               "passphrase variable (ci.publish.signing.passphrase_env)")
        return output

    def abort(self) -> None:
        """Stop gpg (the upload it was signing for stopped)."""
        if self._process.poll() is None:
            self._process.kill()
        self._process.communicate()


class Keyring:
    """Checks detached signatures against one public key (the one published beside the catalog)."""

    def __init__(self, public_key: bytes):
        self._home = _Home()
        try:
            self._home.gpg(["--import"], stdin=public_key, what="importing the public key")
            found = self._home.fingerprints(secret=False)
            if not found:
                raise SigningError("the published public key holds no key")
            self.fingerprint = found[0]
        except BaseException:
            self._home.close()
            raise

    def __enter__(self) -> Keyring:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._home.close()

    def valid(self, path: Path, signature: bytes) -> bool:
        """True when `signature` is a good signature of the file at `path` by this keyring's key."""
        with tempfile.NamedTemporaryFile(prefix="ci-sig-", suffix=".asc") as handle:
            handle.write(signature)
            handle.flush()
            result = self._home.gpg(["--status-fd", "1", "--verify", handle.name, str(path)], check=False)
        # VALIDSIG <signing key> ... <primary key>: a signing subkey signs for its primary key
        valid = [line.split()[2:] for line in result.stdout.decode(errors="replace").splitlines()
                 if line.startswith("[GNUPG:] VALIDSIG ")]
        return result.returncode == 0 and any(self.fingerprint in (fields[0], fields[-1]) for fields in valid if fields)

    def valid_bytes(self, data: bytes, signature: bytes) -> bool:
        with tempfile.NamedTemporaryFile(prefix="ci-data-") as handle:
            handle.write(data)
            handle.flush()
            return self.valid(Path(handle.name), signature)
