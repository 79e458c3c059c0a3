"""What a migration reports: findings (file, line, message, fix), each recipe's fate, and the totals.

The report is the migrator's only output besides the tree it writes: `inv migrate.lumi` prints its
lines (or its JSON) and exits 2 when it is not ok. The helpers at the end show a checkout's text in
a finding without letting control characters or a huge line through to the terminal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ci.errors import CIError

# Control characters (tab and newline allowed) and how much of a line or value a finding shows.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
SHOWN = 160


class MigrationError(CIError):
    """The checkout or the output folder cannot be used at all (nothing was written)."""


@dataclass(frozen=True)
class Finding:
    """One thing the migrator reports: where (file relative to the checkout, line), what, and the fix."""

    file: str
    message: str
    fix: str = ""
    line: int = 0
    text: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        shown = f" [{self.text}]" if self.text else ""
        fix = f"; {self.fix}" if self.fix else ""
        return f"{where}: {self.message}{shown}{fix}"

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "text": self.text, "message": self.message, "fix": self.fix}


@dataclass
class Recipe:
    """One build-*.sh and what became of it."""

    file: str
    app: str
    images: list[str] = field(default_factory=list)
    tests: list[str] = field(default_factory=list)
    problems: list[Finding] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "refused" if self.problems else "migrated"


@dataclass
class Report:
    """What a migration found, wrote and refused; `ok` is False when it refused something without --partial."""

    checkout: Path
    out: Path
    partial: bool
    recipes: list[Recipe] = field(default_factory=list)
    definitions: list[dict[str, str]] = field(default_factory=list)
    problems: list[Finding] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)
    written: bool = False

    @property
    def refused(self) -> list[Recipe]:
        return [recipe for recipe in self.recipes if recipe.problems]

    @property
    def all_problems(self) -> list[Finding]:
        """Every problem once (a problem of an app's shared context refuses each of its recipes)."""
        found = [problem for recipe in self.recipes for problem in recipe.problems] + self.problems
        return list(dict.fromkeys(found))

    @property
    def ok(self) -> bool:
        return self.partial or not self.all_problems

    def counts(self) -> dict[str, int]:
        migrated = [recipe for recipe in self.recipes if not recipe.problems]
        return {
            "recipes_found": len(self.recipes),
            "recipes_migrated": len(migrated),
            "recipes_refused": len(self.refused),
            "images": sum(len(recipe.images) for recipe in migrated),
            "tests": sum(len(recipe.tests) for recipe in migrated),
            "definitions_other": len(self.definitions),
            "problems": len(self.all_problems),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "written": self.written,
            "checkout": str(self.checkout),
            "out": str(self.out),
            "counts": self.counts(),
            "recipes": [{"file": r.file, "app": r.app, "status": r.status, "images": r.images, "tests": r.tests,
                         "problems": [p.as_dict() for p in r.problems]} for r in self.recipes],
            "definitions": self.definitions,
            "problems": [p.as_dict() for p in self.problems],
            "notes": [n.as_dict() for n in self.notes],
        }

    def lines(self) -> list[str]:
        """The report for a person: one line per recipe, then problems and notes."""
        counts = self.counts()
        out = [f"{recipe.status:8} {recipe.file}" + (f" -> {', '.join(recipe.images)}" if recipe.images else "")
               for recipe in self.recipes]
        out += [f"{'migrated':8} {item['source']} -> {item['name']} ({item['kind']})" for item in self.definitions]
        out.append(f"{counts['recipes_found']} recipes found, {counts['recipes_migrated']} migrated "
                   f"({counts['images']} images, {counts['tests']} host-side tests), {counts['recipes_refused']} "
                   f"refused; {counts['definitions_other']} other definitions")
        if self.written:
            out.append(f"definitions written to {self.out}")
        elif self.all_problems:
            out.append("nothing was written: fix the lines above, or pass --partial to write what translates")
        return out


def excerpt(text: str) -> str:
    shown = text if len(text) <= SHOWN else text[:SHOWN] + "..."
    return repr(shown) if CONTROL.search(shown) or not shown.isprintable() else f"'{shown}'"


def line_text(lines: list[str], number: int) -> str:
    if number < 1 or number > len(lines):
        return ""
    text = lines[number - 1].rstrip()
    text = text if len(text) <= SHOWN else text[:SHOWN] + "..."
    return text if text.isprintable() else repr(text)
