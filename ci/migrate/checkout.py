"""Their checkout: the names of its layout, and read-only access to it that never leaves it.

Every path the `Checkout` hands out stays inside the checkout (symlinks resolved), every file is
checked to be a regular UTF-8 file before it is used, and folders are listed in one byte order,
so two machines migrate the same checkout to the same bytes.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from ci.migrate.findings import CONTROL, SHOWN, Finding, Report

RECIPES = "RecipesDocker"
DEF_RECIPES = "Recipes"
COMMON = "common"
HELPER = "helper-files"
HELPER_IMAGE = "h"  # their recipes bind it by this name: RUN --mount=type=bind,from=h,...
TRANSFER_SCRIPT = "lumi-containers-transfer.sh"
TEST_NAME = "lumi"
# Files in an app folder that are their pipeline's leftovers, not build context (their .gitignore).
LEFTOVER = re.compile(r"\A(.*\.done|.*\.log|\.tmp-.*)\Z", re.DOTALL)
BUILD_SCRIPT = re.compile(r"\Abuild-(?P<variant>.+)\.sh\Z", re.DOTALL)
IMAGE_NAME = re.compile(r"\A[a-z0-9][a-z0-9._-]*\Z")
MAX_NAME = 128


def derive_name(text: str) -> str:
    """Our image name for one of their names: lower-cased, other characters as '-', no leading '.', '_' or '-'."""
    name = re.sub(r"[^a-z0-9._-]+", "-", text.lower())
    return name.lstrip("._-")


class Checkout:
    """Read-only access to the checkout; every path it hands out stays inside it (symlinks included)."""

    def __init__(self, root: Path, report: Report):
        self.root = root
        self.real = Path(os.path.realpath(root))
        self.report = report

    def rel(self, path: Path) -> str:
        try:
            text = path.relative_to(self.root).as_posix()
        except ValueError:
            text = str(path)
        return text if text.isprintable() else repr(text)

    def inside(self, path: Path) -> bool:
        real = Path(os.path.realpath(path))
        return real == self.real or self.real in real.parents

    def check(self, path: Path, problems: list[Finding]) -> bool:
        """True when `path` is a regular file (after symlinks) inside the checkout with a usable name."""
        rel = self.rel(path)
        if not self.inside(path):
            problems.append(Finding(rel, f"is a symlink to {os.path.realpath(path)}, outside the checkout",
                                    "replace it with the file itself"))
            return False
        if not path.exists():
            problems.append(Finding(rel, "does not exist", "create the file or fix the name"))
            return False
        if not path.is_file():
            problems.append(Finding(rel, "is not a regular file (a folder, a link to one, a FIFO, socket or device)",
                                    "replace it with a regular file or remove it"))
            return False
        return True

    def text(self, path: Path, problems: list[Finding], *, script: bool = False) -> str | None:
        """The file's text when it is UTF-8 (and, for a script, free of CR and control characters)."""
        if not self.check(path, problems):
            return None
        rel = self.rel(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            problems.append(Finding(rel, f"cannot be read ({exc.strerror})", "check its permissions"))
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            problems.append(Finding(rel, f"is not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start})",
                                    "save the file as UTF-8", line=line))
            return None
        if script:
            for number, line_text in enumerate(text.split("\n"), start=1):
                if "\r" in line_text:
                    problems.append(Finding(rel, "has a Windows (CRLF) line ending, which bash reads as part of "
                                            "the line", "save the file with Unix (LF) line endings", line=number))
                    return None
                if CONTROL.search(line_text):
                    problems.append(Finding(rel, "has a control character", "remove it", line=number,
                                            text=repr(line_text[:SHOWN])))
                    return None
        return text

    def listing(self, folder: Path) -> list[Path]:
        """The folder's entries, sorted by name bytes (the same order on every machine)."""
        try:
            return sorted(folder.iterdir(), key=lambda entry: os.fsencode(entry.name))
        except OSError as exc:
            self.report.problems.append(Finding(self.rel(folder), f"cannot be listed ({exc.strerror})",
                                                "check its permissions"))
            return []

    def walk(self, folder: Path, skip: Iterable[str] = ()) -> Iterator[tuple[str, Path]]:
        """(path relative to `folder`, file) for every file under it, in a stable order."""
        skipped = set(skip)
        for entry in self.listing(folder):
            if entry.name in skipped:
                continue
            if entry.is_dir() and not entry.is_symlink():
                for rel, path in self.walk(entry):
                    yield f"{entry.name}/{rel}", path
            else:
                yield entry.name, entry


def file_name_problem(rel: str) -> str | None:
    if not rel.isprintable() or "\\" in rel:
        return "has a file name with control or escape characters"
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "has a file name that is not UTF-8"
    return None


def is_executable(path: Path) -> bool:
    return bool(os.stat(path).st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH))
