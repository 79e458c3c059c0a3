"""Reading definition files as hostile input: bytes with explicit decoding, links resolved and fenced.

A definition may hold links to anything (`tests/env -> /proc/self/environ`), FIFOs that block a
reader forever, sockets, unreadable files and file names that are not UTF-8. Every file the CI
reads from a definition goes through here: it must be a regular file (or a folder) inside the
definition folder after resolving links, it is opened without blocking, and it is decoded as
UTF-8 or refused with a message. Nothing here raises anything but `FileRefused`.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ci.documents import DocumentRefused, Source, load_yaml
from ci.validation import shown

MAX_TEXT_BYTES = 4 << 20  # a container.yaml, Dockerfile or fragment larger than this is not a recipe


class FileRefused(Exception):
    """A file a definition names cannot be used: the message and the fix for a Problem."""

    def __init__(self, message: str, fix: str):
        super().__init__(message)
        self.message = message
        self.fix = fix


def _kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISLNK(mode):
        return "a link"
    return "not a regular file"


def checked(path: Path, folder: Path, *, what: str, want_dir: bool = False, fence_name: str = "the definition "
            "folder") -> Path:
    """`path` with links resolved, when it exists inside `folder` and is a regular file (or a folder).

    `what` names the file in messages (e.g. "'tests/run.sh'").
    """
    try:
        os.lstat(path)
    except FileNotFoundError:
        raise FileRefused(f"{what} does not exist", f"create {shown(path, 200)} or fix the path") from None
    except OSError as exc:
        raise FileRefused(f"{what} cannot be read ({exc.strerror})", "check the path and its permissions") from None
    fence = fence_of(folder)
    resolved = _without_links(path, folder, fence)
    if resolved is None:
        try:
            resolved = Path(os.path.realpath(path, strict=False))
        except (OSError, RuntimeError):
            raise FileRefused(f"{what} is a link that cannot be resolved (a loop?)",
                              "replace the link by the file itself") from None
        text = str(resolved)
        if text != fence and not text.startswith(fence.rstrip("/") + "/"):
            raise FileRefused(f"{what} leads to {shown(resolved, 200)}, outside {fence_name}",
                              "replace the link by a copy of the file inside the folder")
    try:
        info = resolved.stat()
    except FileNotFoundError:
        raise FileRefused(f"{what} is a link to nothing", "point the link at an existing file, or remove it") from None
    except OSError as exc:
        if exc.errno == 40:  # ELOOP
            raise FileRefused(f"{what} is a link that cannot be resolved (a loop?)",
                              "replace the link by the file itself") from None
        raise FileRefused(f"{what} cannot be read ({exc.strerror})", "check its permissions") from None
    if want_dir:
        if not stat.S_ISDIR(info.st_mode):
            raise FileRefused(f"{what} is {_kind_of(info.st_mode)}, not a folder", "name a folder")
    elif not stat.S_ISREG(info.st_mode):
        raise FileRefused(f"{what} is {_kind_of(info.st_mode)}, not a regular file", "name a regular file")
    return resolved


@functools.lru_cache(maxsize=1024)
def fence_of(folder: Path) -> str:
    """The real path of a folder files are fenced in; cached per load (discovery clears it each time)."""
    return os.path.realpath(folder)


def _without_links(path: Path, folder: Path, fence: str) -> Path | None:
    """`path` resolved cheaply when it lies lexically below `folder` with no link on the way; else None.

    Only the components below the folder are looked at (an lstat each), instead of every component
    from the file system's root as realpath does: most definition files hold no link at all.
    """
    try:
        relative = path.relative_to(folder)
    except ValueError:
        return None
    if ".." in relative.parts:
        return None
    current = folder
    for part in relative.parts:
        current = current / part
        try:
            if stat.S_ISLNK(os.lstat(current).st_mode):
                return None
        except OSError:
            return None
    return Path(fence, *relative.parts)


def require_readable(path: Path, *, what: str) -> None:
    """Refuse a file the running user cannot open: a test script or test file read later (its digest,
    the copy to the site) would otherwise be skipped silently or fail after the images built."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        fix = "make it readable for the CI's user (chmod a+r)" if exc.errno == errno.EACCES else "check the file"
        raise FileRefused(f"{what} cannot be read ({exc.strerror})", fix) from None
    os.close(fd)


def read_bytes(path: Path, *, what: str, limit: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of a regular file, opened without blocking (a FIFO swapped in meanwhile cannot hang us)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        fix = "make it readable for the CI's user (chmod a+r)" if exc.errno == errno.EACCES else "check the file"
        raise FileRefused(f"{what} cannot be read ({exc.strerror})", fix) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileRefused(f"{what} is {_kind_of(info.st_mode)}, not a regular file", "name a regular file")
        if info.st_size > limit:
            raise FileRefused(f"{what} is {info.st_size} bytes (at most {limit})", "keep recipes and metadata small")
        chunks = []
        size = 0
        while chunk := os.read(fd, 1 << 20):
            size += len(chunk)
            if size > limit:
                raise FileRefused(f"{what} is larger than {limit} bytes", "keep recipes and metadata small")
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise FileRefused(f"{what} cannot be read ({exc.strerror})", "check the file") from None
    finally:
        os.close(fd)


def decode(data: bytes, *, what: str) -> str:
    """UTF-8 text, or a refusal naming the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileRefused(f"{what} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})",
                          "save the file as UTF-8") from None


def read_text(path: Path, folder: Path, *, what: str, fence_name: str = "the definition folder") -> str:
    """A text file inside `folder`: checked, read without blocking, decoded as UTF-8."""
    resolved = checked(path, folder, what=what, fence_name=fence_name)
    return decode(read_bytes(resolved, what=what), what=what)


@dataclass(frozen=True)
class TreeEntry:
    """One regular file found by `scan_tree`: its path relative to the scanned folder (POSIX) and where it is."""

    relative: str
    path: Path


def scan_tree(top: Path, fence: Path) -> tuple[list[TreeEntry], list[FileRefused]]:
    """Every regular file below `top` (links resolved, fenced in `fence`), sorted; and what was refused.

    Iterative (no recursion limit on deep folders); links to folders are not followed into, so a link
    cannot make a loop; special files (FIFO, socket, device), links leaving `fence` and files the
    running user cannot open are refused.
    """
    found: list[TreeEntry] = []
    refused: list[FileRefused] = []
    todo: list[tuple[Path, str]] = [(top, "")]
    while todo:
        folder, prefix = todo.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as exc:
            refused.append(FileRefused(f"{shown(prefix or top.name)} cannot be listed ({exc.strerror})",
                                       "make the folder readable and searchable (chmod a+rx)"))
            continue
        for entry in entries:
            relative = prefix + entry.name
            what = shown(f"{top.name}/{relative}", 200)
            try:
                if entry.is_dir(follow_symlinks=False):
                    todo.append((Path(entry.path), relative + "/"))
                    continue
                resolved = checked(Path(entry.path), fence, what=what)
                require_readable(resolved, what=what)
            except FileRefused as exc:
                refused.append(exc)
                continue
            except OSError as exc:
                refused.append(FileRefused(f"{what} cannot be read ({exc.strerror})", "check its permissions"))
                continue
            found.append(TreeEntry(relative, resolved))
    found.sort(key=lambda entry: entry.relative)
    return found, refused


def read_yaml(path: Path, fence: Path, *, what: str) -> Any:
    """A YAML file inside `fence`, read strictly (`ci.documents`): the data only."""
    return read_yaml_source(path, fence, what=what)[0]


def read_yaml_source(path: Path, fence: Path, *, what: str) -> tuple[Any, Source]:
    """A YAML file inside `fence`, read strictly, and where its non-text scalars were written.

    Bad bytes, bad syntax, a key given twice, a YAML 1.1-only number or a bomb (aliases expanded
    past the limits of `ci.documents`) are refusals.
    """
    text = read_text(path, fence, what=what)
    try:
        return load_yaml(text, name=what)
    except DocumentRefused as exc:
        raise FileRefused(exc.message, exc.fix) from None
