"""Detached OpenPGP signatures over a SHA-256 the publication already computed, made by gpg-agent.

Why: `gpg --detach-sign FILE` reads and hashes the whole image file once more, 8 KiB at a time (about
0.35 CPU-seconds per 256 MiB on a machine whose cores the store and the registry share), although
the publication hashes the same bytes with SHA-256 while it uploads them. An OpenPGP v4 signature
is the key's signature over SHA-256(file || the packet's hashed part || trailer) (RFC 4880 5.2.4),
so a copy of that running hash, continued with the packet's own bytes, is exactly the digest gpg
would compute; the agent that holds the key (gpg's own gpg-agent, in the Signer's private keyring)
signs it with `PKSIGN`, the call gpg itself makes. Only the packet is framed here; no cryptography is.

Nothing is guessed: `AgentSigner.probe` reads a signature gpg made (which key, which algorithm, which
hash), makes one itself and has gpg verify it. Any other outcome (another hash, an algorithm this
module does not frame, an agent that does not answer) leaves signing to gpg.

The passphrase, when the key has one, goes to the agent over its socket when it asks for it
(loopback), never on a command line.
"""

from __future__ import annotations

import base64
import re
import socket
import struct
import subprocess
import time
from collections.abc import Mapping
from typing import Any

SHA256 = 8  # OpenPGP's (and libgcrypt's) number for SHA-256
SIGNATURE_TAG = 2
ALGORITHMS = {1: "rsa", 17: "dsa", 19: "ecdsa", 22: "eddsa"}  # OpenPGP number -> the agent's S-expression name
_ARMOR = re.compile(rb"-----BEGIN PGP SIGNATURE-----\r?\n(?:[^\n]*:[^\n]*\r?\n)*\r?\n(?P<body>[A-Za-z0-9+/=\r\n]+?)"
                    rb"\r?\n=[A-Za-z0-9+/]{4}\r?\n-----END PGP SIGNATURE-----")


class AgentError(Exception):
    """The agent refused or failed a call (its error code; no secret in it)."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code

    @property
    def bad_passphrase(self) -> bool:
        return self.code & 0xFFFF == 11  # GPG_ERR_BAD_PASSPHRASE, whatever the error source


# ---- reading the probe signature ----------------------------------------------------------------


def dearmor(armored: bytes) -> bytes:
    found = _ARMOR.search(armored)
    if found is None:
        raise ValueError("not an armored OpenPGP signature")
    return base64.b64decode(b"".join(found.group("body").split()))


def signature_facts(packet: bytes) -> tuple[int, int, str]:
    """(public key algorithm, hash algorithm, issuer fingerprint) of a v4 signature packet."""
    tag, body = _first_packet(packet)
    if tag != SIGNATURE_TAG or len(body) < 6 or body[0] != 4:
        raise ValueError("not a version 4 signature packet")
    algorithm, digest = body[2], body[3]
    (hashed_length,) = struct.unpack(">H", body[4:6])
    for kind, data in _subpackets(body[6:6 + hashed_length]):
        if kind == 33 and len(data) == 21 and data[0] == 4:
            return algorithm, digest, data[1:].hex().upper()
    raise ValueError("the signature names no issuer fingerprint")


def _first_packet(data: bytes) -> tuple[int, bytes]:
    ctb = data[0]
    if not ctb & 0x80:
        raise ValueError("not an OpenPGP packet")
    if ctb & 0x40:  # new format
        tag, first = ctb & 0x3F, data[1]
        if first < 192:
            return tag, data[2:2 + first]
        if first < 224:
            length = ((first - 192) << 8) + data[2] + 192
            return tag, data[3:3 + length]
        if first == 255:
            (length,) = struct.unpack(">I", data[2:6])
            return tag, data[6:6 + length]
        raise ValueError("partial packet lengths are not used for signatures")
    tag, kind = (ctb >> 2) & 0x0F, ctb & 0x03
    size = {0: 1, 1: 2, 2: 4}.get(kind)
    if size is None:
        raise ValueError("indeterminate packet length")
    length = int.from_bytes(data[1:1 + size], "big")
    return tag, data[1 + size:1 + size + length]


def _subpackets(data: bytes) -> list[tuple[int, bytes]]:
    found, at = [], 0
    while at < len(data):
        first = data[at]
        if first < 192:
            length, at = first, at + 1
        elif first < 255:
            length, at = ((first - 192) << 8) + data[at + 1] + 192, at + 2
        else:
            (length,) = struct.unpack(">I", data[at + 1:at + 5])
            at += 5
        found.append((data[at] & 0x7F, data[at + 1:at + length]))
        at += length
    return found


# ---- framing a signature ------------------------------------------------------------------------


def _subpacket(kind: int, data: bytes) -> bytes:
    return bytes([len(data) + 1, kind]) + data  # every subpacket here is shorter than 192 bytes


def _mpi(value: bytes) -> bytes:
    number = int.from_bytes(value, "big")
    return struct.pack(">H", number.bit_length()) + number.to_bytes((number.bit_length() + 7) // 8, "big")


def _crc24(data: bytes) -> int:
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def armor(packet: bytes) -> bytes:
    body = base64.b64encode(packet)
    lines = [body[at:at + 64] for at in range(0, len(body), 64)]
    checksum = base64.b64encode(_crc24(packet).to_bytes(3, "big"))
    return b"\n".join([b"-----BEGIN PGP SIGNATURE-----", b"", *lines, b"=" + checksum,
                       b"-----END PGP SIGNATURE-----", b""])


def _parse_sexp(data: bytes) -> Any:
    """A canonical S-expression (`(7:sig-val(3:rsa(1:s3:...)))`) as nested lists of bytes."""
    stack: list[list[Any]] = [[]]
    at = 0
    while at < len(data):
        char = data[at:at + 1]
        if char == b"(":
            stack.append([])
            at += 1
        elif char == b")":
            done = stack.pop()
            stack[-1].append(done)
            at += 1
        else:
            colon = data.index(b":", at)
            length = int(data[at:colon])
            stack[-1].append(data[colon + 1:colon + 1 + length])
            at = colon + 1 + length
    return stack[0][0]


def _signature_values(sexp: bytes, algorithm: int) -> list[bytes]:
    """The MPIs of an OpenPGP signature from the agent's `(sig-val (ALGO (r ..)(s ..)))`."""
    tree = _parse_sexp(sexp)
    if not isinstance(tree, list) or tree[:1] != [b"sig-val"] or len(tree) < 2:
        raise AgentError(0, "gpg-agent answered PKSIGN with something that is not a signature")
    params = {item[0]: item[1] for item in tree[1][1:] if isinstance(item, list) and len(item) == 2}
    names = [b"s"] if algorithm == 1 else [b"r", b"s"]
    if tree[1][0] != ALGORITHMS[algorithm].encode() or any(name not in params for name in names):
        raise AgentError(0, "gpg-agent signed with another algorithm than the key's")
    return [params[name] for name in names]


# ---- the agent ----------------------------------------------------------------------------------


def _escape(data: bytes) -> bytes:
    return data.replace(b"%", b"%25").replace(b"\r", b"%0D").replace(b"\n", b"%0A")


def _unescape(data: bytes) -> bytes:
    return re.sub(rb"%([0-9A-Fa-f]{2})", lambda match: bytes([int(match.group(1), 16)]), data)


class _Assuan:
    """One connection to gpg-agent's socket (Assuan: a line per command, `OK`/`ERR`, `D` data, `INQUIRE`)."""

    def __init__(self, path: str, inquiries: Mapping[bytes, bytes]):
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.settimeout(60)
        self._socket.connect(path)
        self._file = self._socket.makefile("rwb")
        self._inquiries = inquiries
        self._answer()  # the greeting

    def close(self) -> None:
        self._file.close()
        self._socket.close()

    def call(self, command: bytes) -> bytes:
        self._file.write(command + b"\n")
        self._file.flush()
        return self._answer()

    def _answer(self) -> bytes:
        data = bytearray()
        while True:
            line = self._file.readline().rstrip(b"\r\n")
            if not line:
                raise AgentError(0, "gpg-agent closed the connection")
            if line == b"OK" or line.startswith(b"OK "):
                return bytes(data)
            if line.startswith(b"ERR "):
                code = int(line.split()[1]) if line.split()[1].isdigit() else 0
                raise AgentError(code, f"gpg-agent refused (error {code & 0xFFFF})")
            if line.startswith(b"D "):
                data += _unescape(line[2:])
            elif line.startswith(b"INQUIRE "):
                keyword = line.split()[1]
                value = self._inquiries.get(keyword)
                if value is None:
                    self._file.write(b"CAN\n")
                else:
                    escaped = _escape(value)
                    for at in range(0, len(escaped), 512):
                        self._file.write(b"D " + escaped[at:at + 512] + b"\n")
                    self._file.write(b"END\n")
                self._file.flush()


class AgentSigner:
    """Signs a SHA-256 state with one key through its gpg-agent; `probe` decides whether it can."""

    def __init__(self, socket_path: str, keygrip: str, fingerprint: str, algorithm: int, passphrase: str | None):
        self._socket_path = socket_path
        self._keygrip = keygrip
        self._fingerprint = bytes.fromhex(fingerprint)
        self._algorithm = algorithm
        self._passphrase = passphrase

    @classmethod
    def probe(cls, gpg_signature: bytes, keygrips: Mapping[str, str], socket_path: str,
              passphrase: str | None) -> AgentSigner | None:
        """An AgentSigner for the key gpg signed `gpg_signature` with, when gpg chose SHA-256 and an
        algorithm framed here; None otherwise (gpg keeps signing)."""
        try:
            algorithm, digest, fingerprint = signature_facts(dearmor(gpg_signature))
        except (ValueError, IndexError, struct.error):
            return None
        if digest != SHA256 or algorithm not in ALGORITHMS or fingerprint not in keygrips:
            return None
        return cls(socket_path, keygrips[fingerprint], fingerprint, algorithm, passphrase)

    def sign(self, hashed: Any, created: int | None = None) -> bytes:
        """The armored detached signature of the bytes `hashed` (a hashlib sha256 object) has seen;
        `hashed` itself is left as it was."""
        created = int(time.time()) if created is None else created
        hashed_part = _subpacket(33, b"\x04" + self._fingerprint) + _subpacket(2, struct.pack(">I", created))
        head = bytes([4, 0x00, self._algorithm, SHA256]) + struct.pack(">H", len(hashed_part)) + hashed_part
        digest = hashed.copy()
        digest.update(head + b"\x04\xff" + struct.pack(">I", len(head)))
        value = digest.digest()
        inquiries = {b"PASSPHRASE": self._passphrase.encode()} if self._passphrase is not None else {}
        connection = _Assuan(self._socket_path, inquiries)
        try:
            if self._passphrase is not None:
                connection.call(b"OPTION pinentry-mode=loopback")
            connection.call(b"SIGKEY " + self._keygrip.encode())
            connection.call(b"SETHASH %d %s" % (SHA256, value.hex().upper().encode()))
            values = _signature_values(connection.call(b"PKSIGN"), self._algorithm)
        finally:
            connection.close()
        unhashed = _subpacket(16, self._fingerprint[-8:])
        body = head + struct.pack(">H", len(unhashed)) + unhashed + value[:2] + b"".join(_mpi(v) for v in values)
        header = bytes([0x88, len(body)]) if len(body) < 256 else bytes([0x89]) + struct.pack(">H", len(body))
        return armor(header + body)


def keygrips(listing: str) -> dict[str, str]:
    """Fingerprint -> keygrip of every (sub)key in `gpg --with-colons --with-keygrip --list-secret-keys`."""
    found: dict[str, str] = {}
    fingerprint = None
    for line in listing.splitlines():
        fields = line.split(":")
        if fields[0] == "fpr":
            fingerprint = fields[9].upper()
        elif fields[0] == "grp" and fingerprint:
            found[fingerprint] = fields[9]
            fingerprint = None
    return found


def agent_socket(env: Mapping[str, str]) -> str | None:
    result = subprocess.run(["gpgconf", "--list-dirs", "agent-socket"], capture_output=True, text=True,
                            env=dict(env), check=False, timeout=60)
    path = result.stdout.strip()
    return path if result.returncode == 0 and path else None
