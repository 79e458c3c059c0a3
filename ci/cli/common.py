"""Helpers for the Invoke edge: settings from a task's context and flags, errors as sentences.

Kept out of tasks.py so that the task file stays a list of entry points, and so that the same
behaviour is shared by every task.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from invoke.exceptions import Exit
from rich.console import Console
from rich.markup import escape

from ci.config.settings import Settings, load_settings
from ci.errors import CIError, DefinitionError, Problem, printable
from ci.github.outputs import step_summary_listener
from ci.pipeline.executor import Listener
from ci.pipeline.progress import ProgressPrinter
from ci.shutdown import CancelToken, signals_cancel

F = TypeVar("F", bound=Callable[..., Any])

PROJECT_DIR = Path(__file__).resolve().parents[2]

# Outside a terminal (CI logs, pipes) rich would assume 80 columns and fold every table cell.
_WIDTH = None if sys.stdout.isatty() else shutil.get_terminal_size((150, 40)).columns
stdout = Console(soft_wrap=True, width=_WIDTH)
stderr = Console(stderr=True, soft_wrap=True, width=_WIDTH)


def settings_from(context: Any, *, profile: str | None = None, **overrides: Any) -> Settings:
    """Resolve settings from Invoke's merged config (`ci` section), a profile, and flag values."""
    raw = context.config.get("ci", {}) if hasattr(context, "config") else {}
    return load_settings(raw, PROJECT_DIR, profile=profile, overrides=overrides)


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
        try:
            return function(*args, **kwargs)
        except DefinitionError as exc:
            if kwargs.get("json"):
                emit_json({"ok": False, "problems": [_problem(p) for p in exc.problems]})
            count = len(exc.problems)
            plural = "s" if count != 1 else ""
            stderr.print(f"[bold red]{count} problem{plural} in the definitions; nothing was built:[/]")
            for problem in exc.problems:
                stderr.print(f"  {problem}", highlight=False, markup=False)
            raise Exit(code=2) from None
        except CIError as exc:
            if kwargs.get("json"):
                problems = getattr(exc, "problems", ())
                emit_json({"ok": False, "error": str(exc), **({"problems": [_problem(p) for p in problems]}
                                                               if problems else {})})
            stderr.print(f"[bold red]error:[/] {escape(printable(str(exc)))}", highlight=False)
            raise Exit(code=2) from None
        except KeyboardInterrupt:
            stderr.print("[yellow]interrupted[/]")
            raise Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


def _problem(problem: Problem) -> dict[str, str]:
    return {"path": str(problem.path), "field": problem.field, "message": problem.message, "fix": problem.fix}


def say(text: str) -> None:
    """One line for a person, on stderr (text from elsewhere: never read as markup)."""
    stderr.print(text, highlight=False, markup=False)


@contextlib.contextmanager
def run_control() -> Iterator[tuple[list[Listener], CancelToken]]:
    """What a task hands a run: a progress printer on stderr (and, in GitHub Actions, the step summary),
    and a cancel token that SIGINT and SIGTERM set (the run then cancels its jobs, releases the site
    lock and reports; a second signal stops at once)."""
    token = CancelToken()
    listeners: list[Listener] = [ProgressPrinter(stderr)]
    if (summary := step_summary_listener()) is not None:
        listeners.append(summary)
    with signals_cancel(token, say=say):
        yield listeners, token


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")

