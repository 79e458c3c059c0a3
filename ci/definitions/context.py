"""The build context exactly as the build sees it: .dockerignore rules, hashing and staging.

The digest and the build must agree on what is in the context, so both go through
`context_files`: what is hashed is exactly what is staged and sent to the Docker engine.
Test scripts and container.yaml are never part of it: changing a test must not rebuild the image.

The context is hostile input too: the walk is iterative (deep folders), files are opened without
blocking (a FIFO never hangs the plan), FIFOs, sockets and devices are skipped with a warning, as
Docker's own context upload drops them, and an unreadable file, a file name that is not UTF-8 or
a bad `.dockerignore` pattern is a `ContextError` naming the file, never a traceback.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ci.errors import CIError

ALWAYS_EXCLUDED = ("container.yaml", "tests")
DOCKERIGNORE = ".dockerignore"
_MAX_IGNORE_BYTES = 1 << 20
_MAX_WILDCARDS = 64

SkipListener = Callable[[str, str], None]  # (relative path, why) for files left out of the context


class ContextError(CIError):
    """A build context cannot be read as the build would: where, what and how to fix it."""

    def __init__(self, path: Path, message: str, fix: str):
        self.path = path
        self.message = message
        self.fix = fix
        super().__init__(f"{path}: {message}; {fix}")


@dataclass(frozen=True)
class IgnoreRule:
    pattern: str
    regex: re.Pattern[str]
    negated: bool


def _translate(pattern: str) -> str:
    """Translate one .dockerignore pattern (Go filepath.Match plus `**`) into a regex."""
    out: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**/", index):
            if not out or out[-1] != "(?:.*/)?":  # `**/**/` is `**/`; repeats only cost backtracking
                out.append("(?:.*/)?")
            index += 3
            continue
        if pattern.startswith("**", index):
            out.append(".*")
            index += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.find("]", index + 1)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = pattern[index + 1 : end]
                if body.startswith(("!", "^")):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                index = end
        elif char == "\\" and index + 1 < len(pattern):
            index += 1
            out.append(re.escape(pattern[index]))
        else:
            out.append(re.escape(char))
        index += 1
    # A pattern that matches a folder also excludes everything below it.
    return "^" + "".join(out) + "(?:/.*)?\\Z"


def parse_dockerignore(text: str, source: Path | None = None) -> list[IgnoreRule]:
    """The rules of a .dockerignore text; a pattern Docker would refuse is a ContextError."""
    rules: list[IgnoreRule] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        if negated:
            line = line[1:].strip()
        line = os.path.normpath(line).lstrip("/") if line not in (".", "/") else ""
        if not line or line == ".":
            continue
        where = source or Path(DOCKERIGNORE)
        if sum(line.count(c) for c in "*?[") > _MAX_WILDCARDS:
            raise ContextError(where, f"line {number}: the pattern has more than {_MAX_WILDCARDS} wildcards",
                               "simplify the pattern")
        try:
            regex = re.compile(_translate(line), re.DOTALL)  # a name may hold a newline; `*` spans it as Go's does
        except re.error as exc:
            raise ContextError(where, f"line {number}: {line!r} is not a valid pattern ({exc.msg})",
                               "fix the pattern (docker build refuses it too)") from None
        rules.append(IgnoreRule(pattern=line, regex=regex, negated=negated))
    return rules


def is_ignored(relative: str, rules: list[IgnoreRule]) -> bool:
    """Docker's rule: the last pattern that matches decides."""
    ignored = False
    for rule in rules:
        if rule.regex.match(relative):
            ignored = not rule.negated
    return ignored


def ignore_rules(root: Path) -> list[IgnoreRule]:
    """The rules of `root/.dockerignore` (none without one), read as bytes and decoded as UTF-8."""
    path = root / DOCKERIGNORE
    if not os.path.lexists(path):
        return []
    data = _read_regular(path, limit=_MAX_IGNORE_BYTES)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContextError(path, f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})",
                           "save the file as UTF-8") from None
    return parse_dockerignore(text, path)


def _read_regular(path: Path, *, limit: int) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ContextError(path, f"cannot be read ({exc.strerror})", "make it readable, or remove it") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ContextError(path, "is not a regular file", "make it a regular file, or remove it")
        if info.st_size > limit:
            raise ContextError(path, f"is {info.st_size} bytes (at most {limit})", "shorten it")
        return os.read(fd, limit + 1)
    except OSError as exc:
        raise ContextError(path, f"cannot be read ({exc.strerror})", "make it readable, or remove it") from None
    finally:
        os.close(fd)


def _special(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def context_files(root: Path, on_skip: SkipListener | None = None) -> Iterator[tuple[str, Path]]:
    """Yield (relative POSIX path, absolute path) of every file and symlink the build can see, sorted.

    The order is that of a top-down walk (a folder's files, then its sub-folders in name order), so
    digests stay what they were. Links are yielded as links, never followed. FIFOs, sockets and
    devices are left out and reported to `on_skip`.
    """
    rules = ignore_rules(root)
    has_negation = any(rule.negated for rule in rules)
    todo: list[tuple[Path, str]] = [(root, "")]
    while todo:
        directory, prefix = todo.pop()
        try:
            with os.scandir(directory) as listing:
                entries = list(listing)
        except OSError as exc:
            raise ContextError(directory, f"cannot be listed ({exc.strerror})",
                               "make the folder readable and searchable (chmod a+rx), or list it in "
                               ".dockerignore") from None
        files: list[os.DirEntry[str]] = []
        subdirs: list[os.DirEntry[str]] = []
        for entry in entries:
            if not prefix and entry.name in ALWAYS_EXCLUDED:
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            (subdirs if is_dir else files).append(entry)
        for entry in sorted(files, key=lambda e: e.name):
            relative = prefix + entry.name
            if is_ignored(relative, rules):
                continue
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
            except OSError as exc:
                raise ContextError(Path(entry.path), f"cannot be read ({exc.strerror})", "check it") from None
            if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
                if on_skip is not None:
                    on_skip(relative, f"{_special(mode)} is not sent to the build")
                continue
            yield relative, Path(entry.path)
        kept = [entry for entry in sorted(subdirs, key=lambda e: e.name)
                if has_negation or not is_ignored(prefix + entry.name, rules)]
        todo.extend((Path(entry.path), prefix + entry.name + "/") for entry in reversed(kept))


def _file_digest(path: Path) -> str:
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        return "link:" + os.readlink(path)
    digest = hashlib.sha256()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        raise ContextError(path, f"cannot be read ({exc.strerror})",
                           "make it readable for the CI's user, or list it in .dockerignore") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ContextError(path, "changed into a special file while it was read", "make it a regular file")
        while chunk := os.read(fd, 1 << 20):
            digest.update(chunk)
    except OSError as exc:
        raise ContextError(path, f"cannot be read ({exc.strerror})", "check the file") from None
    finally:
        os.close(fd)
    executable = "x" if info.st_mode & stat.S_IXUSR else "-"
    return f"{executable}:{digest.hexdigest()}"


def context_digest(root: Path, on_skip: SkipListener | None = None) -> str:
    """SHA-256 over the names, executable bits and contents of the visible context.

    Names are hashed as the file system's bytes, so a name that is not UTF-8 is hashed, not a crash.
    """
    digest = hashlib.sha256()
    for relative, path in context_files(root, on_skip):
        digest.update(os.fsencode(relative) + b"\0" + _file_digest(path).encode() + b"\n")
    return digest.hexdigest()


def stage_context(root: Path, destination: Path) -> None:
    """Materialise the visible context in `destination` (hard links where possible, else copies)."""
    destination.mkdir(parents=True, exist_ok=True)
    for relative, path in context_files(root):
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            os.symlink(os.readlink(path), target)
            continue
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
