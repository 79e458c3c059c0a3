"""Text for a terminal from text that is not ours: never read as rich markup, emoji codes or escapes.

Paths, image names, versions and messages come from definition trees, configuration and remote
answers. Handed to rich as a string, a folder named `[/x]` on the way to the definitions made rich
raise `MarkupError` (a traceback instead of a plan), `[bold]` restyled the rest of a line, `:fire:`
became an emoji and an ESC byte reached the terminal. Escaping each call site was tried and missed
some; here the rule sits at one depth instead:

- every console `ci` makes comes from `console()`, which reads no string as markup or emoji codes,
  whatever a caller passes, and shows control characters as escapes (`\\x1b`);
- style is data, never syntax: `styled(("error:", "bold red"), " ", message)` is a `Text`, which
  rich never parses, so it is safe on any console, including one a test or caller made itself.
  `ci.pipeline.report` and `ci.pipeline.progress` build every cell, title and line this way.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.style import Style
from rich.text import Text

from ci.errors import printable

Part = str | tuple[str, str]  # plain text, or (text, rich style such as "bold red")


def clean(text: object) -> str:
    """One or more lines safe for a terminal: control characters shown as escapes, line breaks kept."""
    return "\n".join(printable(line) for line in str(text).split("\n"))


def styled(*parts: Part) -> Text:
    """A `Text` of plain and styled parts; no part is ever read as markup, whatever it holds."""
    text = Text()
    for part in parts:
        if isinstance(part, tuple):
            text.append(clean(part[0]), style=part[1] or None)
        else:
            text.append(clean(part))
    return text


class _PlainConsole(Console):
    """A Console that renders every string as the text it is (see the module docstring)."""

    def render_str(self, text: str, *, style: str | Style = "", **options: Any) -> Text:
        options.update(markup=False, emoji=False)
        return super().render_str(clean(text), style=style, **options)


def console(**options: Any) -> Console:
    """The console every part of `ci` prints through: strings are never markup, emoji codes or escapes."""
    options.setdefault("highlight", False)
    return _PlainConsole(markup=False, emoji=False, **options)
