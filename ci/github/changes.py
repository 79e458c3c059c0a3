"""Did the watched paths change between two commits? (`inv gh.changed`, for the helper image.)"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ci.errors import ConfigError

# A commit-ish as a workflow hands it over (a SHA, a branch or tag, `HEAD~3`): never an option of
# git (no leading `-`), no white space or control characters, a length git's refs fit in.
NULL_COMMIT = "0" * 40  # what GitHub sends as `before` for a new branch
_COMMITISH = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/~^@{}+-]{0,254}\Z")


@dataclass(frozen=True)
class Change:
    """Whether any of the watched paths changed, and why we think so."""

    changed: bool
    reason: str
    files: tuple[str, ...] = ()


def check_commitish(value: str, flag: str = "--since") -> str:
    """`value` if it reads as a commit-ish; a ConfigError naming the flag otherwise (never an option)."""
    if not _COMMITISH.match(value) or ".." in value:
        raise ConfigError(f"{flag} {value!r} is not a commit (a SHA, branch, tag or HEAD~N, without spaces, "
                          "ranges or a leading '-'); pass the commit to compare with, e.g. "
                          "--since \"${{ github.event.before }}\"")
    return value


def changed_paths(paths: Sequence[str], since: str | None, *, head: str = "HEAD", cwd: Path | None = None) -> Change:
    """Compare `since..head` for the watched paths (files or folders, as git pathspecs).

    No `since` (a manual dispatch has no earlier commit) answers "unchanged": rebuild on request
    instead. A new branch (the null commit) or a commit git does not know (a force-push rewrote
    history, a shallow clone) answers "changed": building once too often is cheap, missing a
    change is not. `since` and `head` are checked as commit-ishes and handed to git after
    `--end-of-options`, so no value can become an option of `git diff`.
    """
    if not paths:
        raise ConfigError("name at least one path to watch (--path)")
    if not since:
        return Change(False, "no earlier commit to compare with (not a push); unchanged unless asked")
    check_commitish(since)
    check_commitish(head, "head")
    if set(since) == {"0"}:
        return Change(True, "a new branch: no earlier commit to compare with")
    result = subprocess.run(["git", "diff", "--name-only", "--end-of-options", since, head, "--", *paths],
                            cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
        return Change(True, f"cannot compare with {since[:12]} ({detail}); counting it as changed")
    files = tuple(line for line in result.stdout.splitlines() if line.strip())
    if files:
        return Change(True, f"changed since {since[:12]}: {', '.join(files)}", files)
    return Change(False, f"unchanged since {since[:12]}")
