"""Step outputs: `name=value` lines appended to `$GITHUB_OUTPUT`, as the runner reads them."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping
from pathlib import Path

from ci.errors import CIError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")


def write_outputs(outputs: Mapping[str, str], path: str | os.PathLike[str] | None = None) -> Path | None:
    """Append `name=value` step outputs to $GITHUB_OUTPUT (or `path`); None outside GitHub Actions.

    A value with a line break uses GitHub's `name<<DELIMITER` form, with a delimiter that cannot
    occur in the value.
    """
    target = path if path is not None else os.environ.get("GITHUB_OUTPUT")
    if not target:
        return None
    lines = []
    for name, value in outputs.items():
        if not _NAME.match(name):
            raise CIError(f"'{name}' is not a valid step output name (letters, digits, _ and -)")
        if "\n" in value or "\r" in value:
            delimiter = f"ghadelimiter_{uuid.uuid4().hex}"
            lines += [f"{name}<<{delimiter}", value, delimiter]
        else:
            lines.append(f"{name}={value}")
    with open(target, "a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return Path(target)
