"""Helpers for the Invoke edge: settings from a task's context and flags, errors as sentences.

Shared by every collection of `ci/cli/`. Loading it must stay cheap (it is imported while
`inv --list` builds the namespace): the consoles are made on first use and the library is
imported inside the functions.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from invoke.env import Environment
from invoke.exceptions import Exit

from ci.cli.help import help_taken_as_value, show_task_help
from ci.errors import CIError, DefinitionError, Problem, printable

if TYPE_CHECKING:
    from rich.console import Console

    from ci.config.settings import Settings
    from ci.pipeline.executor import Listener
    from ci.shutdown import CancelToken

F = TypeVar("F", bound=Callable[..., Any])

PROJECT_DIR = Path(__file__).resolve().parents[2]


class _LazyConsole:
    """A rich Console made on first use (rich costs a tenth of a second to import).

    It is `ci.pipeline.terminal.console()`: no string printed on it is ever read as markup, so a path
    or message holding `[/x]` prints as it is; style goes through `show()`.
    """

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from ci.pipeline.terminal import console

            # Outside a terminal (CI logs, pipes) rich would assume 80 columns and fold every table cell.
            width = None if sys.stdout.isatty() else shutil.get_terminal_size((150, 40)).columns
            self._console = console(soft_wrap=True, width=width, **self._options)
        return getattr(self._console, name)


stdout = cast("Console", _LazyConsole())
stderr = cast("Console", _LazyConsole(stderr=True))

# Invoke has no hook for how it casts environment values, so its private setter is wrapped; an Invoke
# without it leaves its own casting in place (tests/unit/test_hostile_review.py then fails, not every task).
_INVOKE_PATH_SET = getattr(Environment, "_path_set", None)


def _ci_variables_as_text(self: Environment, key_path: Any, value: str) -> None:
    """`INVOKE_CI_*` values reach the settings as what they say, or as text the settings refuse.

    Invoke casts a variable to the type of the value it overrides: `bool("false")` is true, so
    `INVOKE_CI_SITE_REQUIRE_TESTS=false` turned the check on, and `int("abc")` or any list value
    (`INVOKE_CI_ARCH=amd64`) raised a traceback before a task ran. Here a flag takes true/false
    (1/0), a number takes a number, and anything else stays text: the settings then refuse it
    with its key named (exit 2), and `ci.arch` reads words. Invoke's own keys keep its casting.
    """
    if list(key_path[:1]) != ["ci"]:
        _INVOKE_PATH_SET(self, key_path, value)  # type: ignore[misc]
        return
    data = self.data
    for key in key_path[:-1]:
        data = data.setdefault(key, {})
    data[key_path[-1]] = _env_value(self._path_get(key_path), value)


def _env_value(old: Any, text: str) -> Any:
    """`text` as the type of the value it overrides when it reads as one exactly, else `text` itself."""
    word = text.strip().lower()
    if isinstance(old, bool):
        return {"true": True, "1": True, "false": False, "0": False}.get(word, text)
    if isinstance(old, int) and re.fullmatch(r"[-+]?[0-9]+", word):
        return int(word)
    if isinstance(old, float) and re.fullmatch(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)(e[-+]?[0-9]+)?", word):
        return float(word)
    return text


if _INVOKE_PATH_SET is not None:
    Environment._path_set = _ci_variables_as_text  # type: ignore[method-assign]


def settings_from(context: Any, *, profile: str | None = None, **overrides: Any) -> Settings:
    """Resolve settings from Invoke's merged config (`ci` section), a profile, and flag values."""
    from ci.config.settings import load_settings

    raw = context.config.get("ci", {}) if hasattr(context, "config") else {}
    return load_settings(raw, PROJECT_DIR, profile=profile, overrides=overrides, files=config_files(context))


def config_files(context: Any) -> list[Path]:
    """The YAML files Invoke read its configuration from, lowest precedence first (system, user, project, -f)."""
    config = getattr(context, "config", None)
    files = []
    for level in ("system", "user", "project", "runtime"):
        try:
            found, path = getattr(config, f"_{level}_found", None), getattr(config, f"_{level}_path", None)
        except (AttributeError, KeyError):
            continue
        if found and path and str(path).endswith((".yaml", ".yml")):
            files.append(Path(path))
    return files


def names(values: Iterable[str] | str | None) -> list[str]:
    """Flag values given repeatedly and/or comma separated: `--only a --only 'b,c*'`."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def explained(function: F) -> F:
    """Turn expected errors into a message for a person and a non-zero exit, never a traceback."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        asked = help_taken_as_value(function.__name__, [*args[1:], *kwargs.values()], sys.argv)
        if asked:
            raise Exit(code=show_task_help(asked))
        try:
            return function(*args, **kwargs)
        except DefinitionError as exc:
            if kwargs.get("json"):
                emit_json({"ok": False, "problems": [_problem(p) for p in exc.problems]})
            count = len(exc.problems)
            plural = "s" if count != 1 else ""
            show((f"{count} problem{plural} in the definitions; nothing was built:", "bold red"), err=True)
            for problem in exc.problems:
                say(f"  {problem}")
            raise Exit(code=2) from None
        except CIError as exc:
            if kwargs.get("json"):
                problems = getattr(exc, "problems", ())
                emit_json({"ok": False, "error": str(exc), **({"problems": [_problem(p) for p in problems]}
                                                               if problems else {})})
            first, *rest = str(exc).split("\n")  # a ConfigError says one problem per line
            show(("error:", "bold red"), f" {printable(first)}", err=True)
            for line in rest:
                say(f"  {printable(line.strip())}")
            raise Exit(code=2) from None
        except KeyboardInterrupt:
            show(("interrupted", "yellow"), err=True)
            raise Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


def _problem(problem: Problem) -> dict[str, str]:
    return {"path": str(problem.path), "field": problem.field, "message": problem.message, "fix": problem.fix}


def say(text: str) -> None:
    """One line for a person, on stderr (text from elsewhere: never read as markup)."""
    stderr.print(text, highlight=False, markup=False)


def show(*parts: str | tuple[str, str], err: bool = False) -> None:
    """One line of plain and styled parts (`("error:", "bold red")`) on stdout or stderr.

    The one way the command line colours text: the parts become a rich `Text`, which is never read
    as markup, so a path or message holding `[/x]` or `[bold]` prints as it is.
    """
    from ci.pipeline.terminal import styled

    (stderr if err else stdout).print(styled(*parts), highlight=False)


@contextlib.contextmanager
def run_control() -> Iterator[tuple[list[Listener], CancelToken]]:
    """What a task hands a run: a progress printer on stderr (and, in GitHub Actions, the step summary),
    and a cancel token that SIGINT and SIGTERM set (the run then cancels its jobs, releases the site
    lock and reports; a second signal stops at once)."""
    from ci.github.outputs import step_summary_listener
    from ci.pipeline.progress import ProgressPrinter
    from ci.shutdown import CancelToken, signals_cancel

    token = CancelToken()
    listeners: list[Listener] = [ProgressPrinter(stderr)]
    if (summary := step_summary_listener()) is not None:
        listeners.append(summary)
    with signals_cancel(token, say=say):
        yield listeners, token


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")

