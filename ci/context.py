"""The build context exactly as the build sees it: .dockerignore rules, hashing and staging.

The digest and the build must agree on what is in the context, so both go through
`context_files`: what is hashed is exactly what is staged and sent to the Docker engine.
Test scripts and container.yaml are never part of it: changing a test must not rebuild the image.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ALWAYS_EXCLUDED = ("container.yaml", "tests")


@dataclass(frozen=True)
class IgnoreRule:
    pattern: str
    regex: re.Pattern[str]
    negated: bool


def _translate(pattern: str) -> str:
    """Translate one .dockerignore pattern (Go filepath.Match plus `**`) into a regex."""
    out = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**/", index):
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
    return "^" + "".join(out) + "(?:/.*)?$"


def parse_dockerignore(text: str) -> list[IgnoreRule]:
    rules: list[IgnoreRule] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        if negated:
            line = line[1:].strip()
        line = os.path.normpath(line).lstrip("/") if line not in (".", "/") else ""
        if not line or line == ".":
            continue
        rules.append(IgnoreRule(pattern=line, regex=re.compile(_translate(line)), negated=negated))
    return rules


def is_ignored(relative: str, rules: list[IgnoreRule]) -> bool:
    """Docker's rule: the last pattern that matches decides."""
    ignored = False
    for rule in rules:
        if rule.regex.match(relative):
            ignored = not rule.negated
    return ignored


def context_files(root: Path) -> Iterator[tuple[str, Path]]:
    """Yield (relative POSIX path, absolute path) of every file and symlink the build can see, sorted."""
    ignore_file = root / ".dockerignore"
    rules = parse_dockerignore(ignore_file.read_text(encoding="utf-8")) if ignore_file.is_file() else []
    has_negation = any(rule.negated for rule in rules)
    for directory, subdirs, files in os.walk(root):
        relative_dir = os.path.relpath(directory, root)
        prefix = "" if relative_dir == "." else relative_dir.replace(os.sep, "/") + "/"
        kept_dirs = []
        for name in sorted(subdirs):
            relative = prefix + name
            if not prefix and name in ALWAYS_EXCLUDED:
                continue
            full = Path(directory) / name
            if full.is_symlink():
                files.append(name)
                continue
            if not has_negation and is_ignored(relative, rules):
                continue
            kept_dirs.append(name)
        subdirs[:] = kept_dirs
        for name in sorted(files):
            relative = prefix + name
            if not prefix and name in ALWAYS_EXCLUDED:
                continue
            if is_ignored(relative, rules):
                continue
            yield relative, Path(directory) / name


def _file_digest(path: Path) -> str:
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        return "link:" + os.readlink(path)
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    executable = "x" if info.st_mode & stat.S_IXUSR else "-"
    return f"{executable}:{digest.hexdigest()}"


def context_digest(root: Path) -> str:
    """SHA-256 over the names, executable bits and contents of the visible context."""
    digest = hashlib.sha256()
    for relative, path in context_files(root):
        digest.update(f"{relative}\0{_file_digest(path)}\n".encode())
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
