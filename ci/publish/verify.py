"""`inv publish.verify TARGET`: the target against its catalog, as LUMI's verify.py does, and more.

Every catalog entry is there with the size, md5 and sha256 it lists (read back and hashed, not
trusted from the store's metadata), its signature and its provenance's signature are good, the
catalog itself is signed, and nothing is stored under the target's prefix that the catalog does not
list. One line per problem; no problem means the target is exactly what the catalog says.

Which key the signatures must come from: `trusted_key` (a file the caller gives), else the signing
key of this configuration (so a store whose key and signatures were both replaced still fails),
else the public key published beside the catalog (then the report says it trusted that key).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ci.publish.base import Publisher
from ci.publish.signing import Keyring, Signer


@dataclass
class Verification:
    target: str
    entries: int
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(publisher: Publisher, *, trusted_key: bytes | None = None, signer: Signer | None = None) -> Verification:
    catalog = publisher.read_catalog()
    result = Verification(publisher.name, len(catalog.containers))
    published_key = publisher.public_key()
    key = trusted_key or (signer.public_key() if signer is not None else None)
    if key is None:
        key = published_key
        if key is not None:
            result.notes.append("signatures checked against the key published beside the catalog (no trusted key "
                                "configured; pass --key to pin one)")
    if key is None:
        if any(entry.signature for entry in catalog.containers):
            result.problems.append("missing: the public key beside the catalog (entries are signed)")
        else:
            result.notes.append("nothing is signed at this target (ci.publish.signing.required is false)")
        result.problems += publisher.problems(catalog, None)
        return result
    with Keyring(key) as keyring:
        if published_key is not None and trusted_key is None and signer is not None:
            with Keyring(published_key) as published:
                if published.fingerprint != keyring.fingerprint:
                    result.problems.append(f"public key beside the catalog is {published.fingerprint}, "
                                           f"not the signing key {keyring.fingerprint}")

        def valid(content: Path | bytes, signature: bytes) -> bool:
            return keyring.valid(content, signature) if isinstance(content, Path) \
                else keyring.valid_bytes(content, signature)

        checker: Callable[[Path | bytes, bytes], bool] = valid
        result.problems += publisher.catalog_problems(checker)
        result.problems += publisher.problems(catalog, checker)
    return result
