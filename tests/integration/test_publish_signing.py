"""Signatures made by gpg-agent over the publication's own SHA-256 (ci/publish/openpgp.py), checked by
real gpg against keys of every kind a site may hold: ed25519 with a passphrase, RSA without one, a
certify-only primary key with a signing subkey, ECDSA. Each must give a signature `gpg --verify`
accepts for the right bytes and refuses for others, made by the key gpg itself would use; a wrong
passphrase is one clear error that does not repeat it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ci.publish.openpgp import dearmor, signature_facts
from ci.publish.signing import Keyring, Signer, SigningError
from tests.support.publish_helpers import CANARY_PASSPHRASE, SigningKey, make_signing_key


def _key(algorithm: str, *, passphrase: str, subkey: str | None = None) -> SigningKey:
    """A throw-away key: `algorithm` signs, or certifies only and `subkey` signs."""
    home = tempfile.mkdtemp(prefix="ci-test-gnupg-")
    os.chmod(home, 0o700)
    env = {**os.environ, "GNUPGHOME": home}
    base = ["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase-fd", "0"]
    secret = passphrase.encode()
    try:
        subprocess.run([*base, "--quick-gen-key", f"CI test {uuid.uuid4().hex[:6]} <ci@example.invalid>", algorithm,
                        "cert" if subkey else "sign", "never"], input=secret, env=env, check=True, capture_output=True)
        listing = subprocess.run(["gpg", "--batch", "--with-colons", "--list-keys"], env=env, check=True,
                                 capture_output=True, text=True).stdout
        fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
        if subkey:
            subprocess.run([*base, "--quick-add-key", fingerprint, subkey, "sign", "never"], input=secret, env=env,
                           check=True, capture_output=True)
        armored = subprocess.run([*base, "--armor", "--export-secret-keys"], input=secret, env=env, check=True,
                                 capture_output=True).stdout
        public = subprocess.run(["gpg", "--batch", "--armor", "--export"], env=env, check=True,
                                capture_output=True).stdout
        return SigningKey(armored, public, fingerprint)
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=env, capture_output=True, check=False)
        subprocess.run(["rm", "-rf", home], check=False)


KEYS = {
    "ed25519 with a passphrase": lambda: make_signing_key(),
    "rsa2048 without a passphrase": lambda: _key("rsa2048", passphrase=""),
    "a signing subkey": lambda: _key("ed25519", passphrase=CANARY_PASSPHRASE, subkey="ed25519"),
    "ecdsa nistp256": lambda: _key("nistp256", passphrase=CANARY_PASSPHRASE),
}


@pytest.fixture(scope="module", params=list(KEYS))
def signing_key(request: pytest.FixtureRequest) -> tuple[SigningKey, str | None]:
    key = KEYS[request.param]()
    return key, None if "without" in request.param else CANARY_PASSPHRASE


@pytest.fixture
def signer(signing_key: tuple[SigningKey, str | None]) -> Iterator[Signer]:
    key, passphrase = signing_key
    with Signer(key.armored, passphrase) as made:
        yield made


def test_the_agent_signs_bytes_as_gpg_would_and_gpg_verifies_them(
        signer: Signer, signing_key: tuple[SigningKey, str | None], tmp_path: Path) -> None:
    assert signer.hashes_itself, "the agent path was not taken for a key gpg signs with SHA-256"
    data = b"a catalog\n" * 100
    signature = signer.sign_bytes(data)
    (tmp_path / "catalog").write_bytes(data)
    by_gpg = signer.sign(tmp_path / "catalog")
    assert signature_facts(dearmor(signature)) == signature_facts(dearmor(by_gpg)), \
        "the agent's signature names another key, algorithm or hash than gpg's own"
    with Keyring(signing_key[0].public) as keyring:
        assert keyring.valid_bytes(data, by_gpg), "gpg's own signature does not verify"
        assert keyring.valid_bytes(data, signature)
        assert not keyring.valid_bytes(data + b"!", signature)


def test_a_file_signature_comes_from_the_readers_hash_without_a_second_read(
        signer: Signer, signing_key: tuple[SigningKey, str | None], tmp_path: Path) -> None:
    path = tmp_path / "image.sif"
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    pending = signer.start(path)
    hashed = hashlib.sha256(path.read_bytes())
    before = hashed.hexdigest()
    path.rename(tmp_path / "moved.sif")  # nothing reads the path any more: the signature comes from `hashed`
    signature = pending.finish(hashed)
    assert hashed.hexdigest() == before, "signing changed the reader's hash"
    with Keyring(signing_key[0].public) as keyring:
        assert keyring.valid(tmp_path / "moved.sif", signature)
        (tmp_path / "other.sif").write_bytes(b"other bytes")
        assert not keyring.valid(tmp_path / "other.sif", signature)


def test_a_wrong_passphrase_is_one_clear_error_without_the_passphrase() -> None:
    key = make_signing_key()
    with pytest.raises(SigningError) as caught:
        Signer(key.armored, "not-the-" + CANARY_PASSPHRASE)
    assert "passphrase" in str(caught.value)
    assert CANARY_PASSPHRASE not in str(caught.value)

