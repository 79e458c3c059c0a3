"""Text that is not ours, printed through rich: never read as markup, emoji codes or escapes (issue 24).

A definitions root under a folder named `a[/x]` crashed `inv plan`'s table with rich's MarkupError.
The rule now sits at one depth (`ci.pipeline.terminal`): every console `ci` makes reads no string as
markup, and the report and progress lines are `Text` built from data, so they are safe on any
console. The behavioural tests print hostile names, paths and messages through each printer and
through `inv plan`; the walk over `ci/` keeps new call sites from going back to markup strings.
"""

from __future__ import annotations

import ast
import io
import json
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from invoke.exceptions import Exit
from rich.console import Console

from ci.cli import common
from ci.errors import CIError, DefinitionError, Problem
from ci.pipeline import terminal
from ci.pipeline.executor import Event, Note, State
from ci.pipeline.progress import ProgressPrinter
from ci.pipeline.report import ImageReport, RunReport, render_plan, render_table
from ci.plan import make_plan
from tests.support.definitions import inv_without_engine
from tests.support.paths import PROJECT_DIR

# text that rich would read as markup, emoji codes, links or terminal escapes
HOSTILE = ["[/x]", "[bold]loud", "[/]", "a[/red]b", ":fire:", "[link=file:///etc/passwd]x[/link]", "\\[x]",
           "esc\x1b[31mred", "[", "]", "[[/]]"]


def _printed(render: object) -> str:
    """What a plain rich Console (not ours: a caller's or a test's) prints for `render(console)`."""
    output = io.StringIO()
    console = Console(file=output, width=400, force_terminal=False, color_system=None)
    render(console)  # type: ignore[operator]
    return output.getvalue()


def _visible(text: str) -> str:
    """What a person sees of `text`: an ESC byte is shown as the escape `\\x1b`, never sent."""
    return text.replace("\x1b", "\\x1b")


def _unwrapped(text: str) -> str:
    return "".join(text.split())


def _assert_literal(text: str, output: str) -> None:
    assert _visible(text) in output, (text, output)
    assert "\x1b" not in output, output


@pytest.mark.parametrize("text", HOSTILE)
def test_the_run_table_prints_names_versions_and_details_as_they_are(text: str) -> None:
    image = ImageReport(name=f"n{text}", version=f"v{text}", digest12="0123456789ab", tag="t", action="build",
                        reason="r", state="failed", detail=f"d{text}", duration=1.0)
    report = RunReport(run_id=f"run{text}", profile=f"p{text}", started=time.time(), finished=time.time(),
                       images=[image], unsupported=[{"name": f"u{text}", "arch": "amd64", "kind": "k",
                                                     "reason": f"why{text}"}])
    output = _printed(lambda console: render_table(report, console))
    for expected in (f"n{text}", f"v{text}", f"d{text}", f"run{text}", f"p{text}", f"u{text}", f"why{text}"):
        _assert_literal(expected, output)


@pytest.mark.parametrize("text", HOSTILE)
def test_the_plan_table_prints_a_hostile_root_as_it_is(tmp_path: Path, text: str) -> None:
    from ci.definitions import load_catalog

    root = tmp_path / f"a{text}" / "defs"  # a '/' in the text makes two folders: 'a[' and 'x]'
    (root / "amd64" / "a").mkdir(parents=True)
    (root / "amd64" / "a" / "Dockerfile").write_text("FROM containers-ci/debian:bookworm\n")
    plan = make_plan(load_catalog(root))
    output = _printed(lambda console: render_plan(plan, console))
    _assert_literal(f"planfor{root}", _unwrapped(output))  # the title wraps: compare without white space


@pytest.mark.parametrize("text", HOSTILE)
def test_progress_lines_print_names_notes_and_details_as_they_are(text: str) -> None:
    def narrate(console: Console) -> None:
        printer = ProgressPrinter(console, total=1)
        printer(Note(time=time.time(), text=f"note{text}", level="warning"))
        printer(Note(time=time.time(), text=f"info{text}"))
        printer(Event(time=time.time(), image=f"amd64/n{text}", step="build", state=State.FAILED,
                      detail=f"d{text}", duration=1.0))

    output = _printed(narrate)
    for expected in (f"note{text}", f"info{text}", f"n{text}", f"d{text}"):
        _assert_literal(expected, output)


@pytest.mark.parametrize("text", HOSTILE)
def test_our_console_reads_no_string_as_markup_even_when_asked(text: str) -> None:
    output = io.StringIO()
    console = terminal.console(file=output, width=400, force_terminal=True)
    console.print(f"s{text}", markup=True, emoji=True)
    console.print(terminal.styled(("styled", "bold red"), f" {text}"))
    plain = re.sub(r"\x1b\[[0-9;]*m", "", output.getvalue())  # the console's own colours, not the text's
    assert f"s{_visible(text)}" in plain and f"styled {_visible(text)}" in plain, plain
    if "\x1b" in text:
        assert "esc\x1b[31m" not in output.getvalue()


@pytest.mark.parametrize("text", HOSTILE)
def test_the_error_edge_prints_hostile_messages_as_they_are(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    @common.explained
    def fails_with_error(json: bool = False) -> None:
        raise CIError(f"broken {text}")

    @common.explained
    def fails_with_problem(json: bool = False) -> None:
        raise DefinitionError([Problem(Path(f"/defs{text}/amd64/a"), f"f{text}", f"m{text}", f"fix{text}")])

    for function in (fails_with_error, fails_with_problem):
        for as_json in (False, True):
            with pytest.raises(Exit) as raised:
                function(json=as_json)
            assert raised.value.code == 2
            captured = capsys.readouterr()
            assert "Traceback" not in captured.err
            _assert_literal(text, captured.err)
            if as_json:
                json.loads(captured.out)
    common.show(("styled", "bold"), f" {text}", err=True)
    _assert_literal(text, capsys.readouterr().err)


ROOTS = ["a[/x]", "[bold]", ":fire:"]


def test_inv_plan_under_a_hostile_root_prints_it_and_exits_as_usual(tmp_path: Path) -> None:
    runs = []
    for index, name in enumerate(ROOTS):
        root = tmp_path / f"r{index}" / name / "defs"
        (root / "amd64" / "a").mkdir(parents=True)
        (root / "amd64" / "a" / "Dockerfile").write_text("FROM containers-ci/debian:bookworm\n")
        runs += [(root, as_json, 0) for as_json in (False, True)]
        runs += [(root.parent / "missing", as_json, 2) for as_json in (False, True)]

    def plan(run: tuple[Path, bool, int]) -> subprocess.CompletedProcess[str]:
        return inv_without_engine(tmp_path, "plan", "--definitions", str(run[0]), *(["--json"] if run[1] else []))

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(plan, runs))
    for (root, as_json, code), result in zip(runs, results, strict=True):
        where = f"{root} ({'--json' if as_json else 'text'}): rc {result.returncode}\n{result.stderr[-2000:]}"
        assert result.returncode == code and "Traceback" not in result.stderr + result.stdout, where
        if as_json:
            data = json.loads(result.stdout)
            assert data.get("images") if code == 0 else str(root) in data["problems"][0]["path"], data
        else:
            assert str(root) in _unwrapped(result.stdout if code == 0 else result.stderr), where


# -- the call sites: the rule holds by construction, and new code keeps to it ------------------------------

CI = PROJECT_DIR / "ci"
STYLE_TAG = re.compile(r"\[/\]|\[(bold|red|green|yellow|cyan|dim)( [a-z]+)?\]")


def _modules() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(encoding="utf-8"))) for path in sorted(CI.rglob("*.py"))]


def test_consoles_are_made_in_one_place_and_nothing_escapes_case_by_case() -> None:
    made, escaped = [], []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute) and \
                    (node.func.id if isinstance(node.func, ast.Name) else node.func.attr) in ("Console",
                                                                                               "_PlainConsole"):
                made.append(f"{path.relative_to(PROJECT_DIR)}:{node.lineno}")
            if isinstance(node, ast.ImportFrom) and node.module == "rich.markup":
                escaped.append(f"{path.relative_to(PROJECT_DIR)}:{node.lineno}")
    assert made and all(m.startswith("ci/pipeline/terminal.py:") for m in made), made
    assert not escaped, f"escape() case by case instead of ci.pipeline.terminal: {escaped}"


def test_no_string_in_ci_is_written_as_rich_markup() -> None:
    """Our consoles read no markup, so a markup string would print its tags; style goes through `styled`."""
    found = []
    for path, tree in _modules():
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                      and node.body and isinstance(node.body[0], ast.Expr)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings \
                    and STYLE_TAG.search(node.value):
                found.append(f"{path.relative_to(PROJECT_DIR)}:{node.lineno}: {node.value!r}")
    assert not found, found


def test_printers_handed_a_console_give_it_text_objects_only() -> None:
    """A module that prints on a console it was handed (a caller's, markup on) passes no string to it."""
    offenders = []
    for path, tree in _modules():
        handed = any(isinstance(arg.annotation, ast.Name | ast.Constant) and "Console" in ast.unparse(arg.annotation)
                     for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
                     for arg in node.args.args + node.args.kwonlyargs if arg.annotation is not None)
        if not handed:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            values = [*node.args] if name in ("print", "add_row") else []
            values += [kw.value for kw in node.keywords if name == "Table" and kw.arg in ("title", "caption")]
            for value in values:
                if isinstance(value, ast.JoinedStr | ast.BinOp) or (isinstance(value, ast.Constant)
                                                                   and isinstance(value.value, str)):
                    offenders.append(f"{path.relative_to(PROJECT_DIR)}:{node.lineno}: {ast.unparse(value)}")
    assert not offenders, offenders


def test_the_walk_sees_the_printers() -> None:
    """The walks above look at the modules that print: a guard against a walk that finds nothing."""
    texts = {path.name: path.read_text(encoding="utf-8") for path, _ in _modules()}
    assert "styled(" in texts["report.py"] and "styled(" in texts["progress.py"]
    assert STYLE_TAG.search("[bold red]x") and STYLE_TAG.search("x[/]") and not STYLE_TAG.search("[x](link)")
