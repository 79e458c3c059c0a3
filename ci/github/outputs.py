"""What a step hands to GitHub Actions: `name=value` outputs in `$GITHUB_OUTPUT`, and the step summary.

The core never writes either: a run's listeners receive a `Note` carrying the summary's Markdown
(`SUMMARY_KEY` in its data) when the reports are written, and `step_summary_listener` (attached by the
front ends when `$GITHUB_STEP_SUMMARY` is set) appends it for GitHub.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping
from pathlib import Path

from ci.errors import CIError
from ci.pipeline.executor import Event, Listener, Note
from ci.pipeline.report import SUMMARY_KEY

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


def publish_step_summary(markdown: str) -> Path | None:
    """Append to GitHub's step summary when running in Actions; None elsewhere."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(markdown + "\n")
    return Path(target)


def step_summary_listener() -> Listener | None:
    """A listener that appends each run summary it is told of to the step summary; None outside Actions."""
    if not os.environ.get("GITHUB_STEP_SUMMARY"):
        return None

    def listen(item: Event | Note) -> None:
        if isinstance(item, Note) and isinstance(markdown := item.data.get(SUMMARY_KEY), str):
            publish_step_summary(markdown)

    return listen
