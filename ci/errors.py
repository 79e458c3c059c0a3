"""Error types that carry enough context to be shown to a person as one line each.

Every error names the file or field at fault and the fix; the edges (tasks.py, the service)
turn them into messages and exit codes, never into tracebacks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class CIError(Exception):
    """Base of every error the pipeline expects and explains."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a definition: where, which field, what is wrong and how to fix it."""

    path: Path
    field: str
    message: str
    fix: str

    def __str__(self) -> str:
        where = printable(str(self.path)) + (f": {printable(self.field)}" if self.field else "")
        return f"{where}: {printable(self.message)}; {printable(self.fix)}"


def printable(text: str) -> str:
    """`text` safe for one line of a terminal or log: control characters and undecodable bytes escaped.

    Paths come from file systems, where a name may hold a newline or bytes that are not UTF-8.
    """
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char.isprintable() or char == " ":
            out.append(char)
        elif 0xDC80 <= ord(char) <= 0xDCFF:  # a byte os.fsdecode could not decode
            out.append(f"\\x{ord(char) - 0xDC00:02x}")
        else:
            out.append(char.encode("unicode_escape").decode("ascii"))
    return "".join(out)


class DefinitionError(CIError):
    """One or more definitions are invalid; all problems are reported together."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ConfigError(CIError):
    """The configuration (invoke.yaml, profile, flags, environment) is unusable.

    Built from settings problems, it says one line per key (`ci.site.registry.address: ...; fix`)
    and keeps the problems for `--json`.
    """

    def __init__(self, message: str, problems: Sequence[Problem] = ()):
        self.problems = list(problems)
        super().__init__(message)

    @classmethod
    def from_problems(cls, problems: list[Problem]) -> ConfigError:
        lines = [f"{p.field}: {p.message}" + (f"; {p.fix}" if p.fix else "") for p in problems]
        return cls("\n".join(lines), problems)


class BuildError(CIError):
    """A container build failed; the message points at its log file."""


class SiteError(CIError):
    """The HPC site could not be used: unreachable, locked, or in an unexpected state."""


class SchedulerError(CIError):
    """The batch scheduler refused or lost a job."""


class EngineError(CIError):
    """The HPC container engine could not convert or run an image."""


class CloudError(CIError):
    """The cloud (OpenStack) refused a request or did not reach the wanted state in time."""
