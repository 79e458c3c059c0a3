"""API tokens (made once, stored only as a hash) and the redaction of secrets from build logs.

A token is 32 random bytes (`cci_` + URL-safe base64), so a plain SHA-256 is the right hash: it
cannot be brute-forced, and a lookup by hash is one indexed query (GitHub stores its tokens the
same way). Comparisons of secrets use `hmac.compare_digest`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable, Mapping

TOKEN_PREFIX = "cci_"
TOKEN_PATTERN = re.compile(r"^cci_[A-Za-z0-9_-]{43}\Z")
_TOKEN_ANYWHERE = re.compile(r"cci_[A-Za-z0-9_-]{20,}")
# The same names ci.hosts keeps out of site commands; here their values are cut out of logs.
_SECRET_NAME = re.compile(r"TOKEN|PASSWORD|PASSPHRASE|SECRET|CREDENTIAL|DATABASE_URL", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/\s:@]+:)(?P<password>[^@\s/]+)(?P<tail>@)")
_AUTH_HEADER = re.compile(r"(?i)(authorization:\s*(?:bearer|basic)\s+)\S+")
REDACTED = "[redacted]"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same(left: str, right: str) -> bool:
    return hmac.compare_digest(left.encode("utf-8"), right.encode("utf-8"))


def credentials_from(header: str | None) -> tuple[str | None, str] | None:
    """(user name or None, token) from `Bearer T` or `Basic base64(user:T)`; None if absent or malformed."""
    if not header or len(header) > 512:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return None, value
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        user, colon, token = decoded.partition(":")
        if colon and token not in ("", "None"):
            return user, token
        if TOKEN_PATTERN.match(user) and token in ("", "None"):
            return None, user  # a token as the user name, no password (eFlows4HPC's client.py after GET /login)
    return None


class Redactor:
    """Removes every known secret value from text before it is stored or served."""

    def __init__(self, values: Iterable[str] = ()):
        self.values = sorted({value for value in values if len(value) >= 6}, key=len, reverse=True)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, extra: Iterable[str] = ()) -> Redactor:
        environ = os.environ if environ is None else environ
        found = [value for name, value in environ.items() if _SECRET_NAME.search(name)]
        for value in environ.values():  # passwords inside URLs (e.g. a PostgreSQL URL in any variable)
            found += [match.group("password") for match in _URL_PASSWORD.finditer(value)]
        return cls([*found, *extra])

    def __call__(self, text: str) -> str:
        for value in self.values:
            if value in text:
                text = text.replace(value, REDACTED)
        text = _TOKEN_ANYWHERE.sub(REDACTED, text)
        text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}{REDACTED}{m.group('tail')}", text)
        return _AUTH_HEADER.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
