"""A model of the GitHub workflow files, for the tests that hold the workflows to their contract.

The workflows (`.github/workflows/*.yml`) hold no pipeline logic: every pipeline step is an `inv`
call. This module reads them the way the tests need:

- `inv_calls` finds every `inv ...` command in the `run:` steps (multi-line blocks, `\\` line
  continuations, `&&` chains, `${{ }}` expressions) and `check_inv_call` parses it with Invoke's own
  parser against the task collection, so a renamed task or flag fails a test, not a night's run;
- `simulate` plays GitHub's job conditions (`needs:`, `if:` with success(), failure(), always() and
  cancelled()) through a run where chosen jobs fail or the run is cancelled, so "teardown always
  runs" and "an empty matrix skips the rest" are checked by reading the workflow.

It lives under tests/ because only the tests use it; the production glue is `ci.github`.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ci.errors import CIError

# --------------------------------------------------------------------------------------------
# workflow files
# --------------------------------------------------------------------------------------------


def load_workflow(path: Path) -> dict[str, Any]:
    """A workflow file as a mapping; YAML 1.1 reads the key `on` as true, so it is put back."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise CIError(f"{path} is not a workflow (no mapping at the top)")
    if True in data:
        data["on"] = data.pop(True)
    return data


def jobs_of(workflow: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    jobs = workflow.get("jobs") or {}
    return {str(name): dict(job or {}) for name, job in jobs.items()}


def needs_of(job: Mapping[str, Any]) -> list[str]:
    needs = job.get("needs") or []
    return [needs] if isinstance(needs, str) else [str(n) for n in needs]


def runner_labels(job: Mapping[str, Any]) -> list[str]:
    """The labels of a job's `runs-on` (a string, a list, or `{labels: ...}`); expressions are left out."""
    runs_on = job.get("runs-on") or []
    if isinstance(runs_on, Mapping):
        runs_on = runs_on.get("labels") or []
    labels = [runs_on] if isinstance(runs_on, str) else list(runs_on)
    return [str(label) for label in labels if "${{" not in str(label)]


def self_hosted_labels(workflows: Iterable[Mapping[str, Any]]) -> set[str]:
    """The custom labels of every self-hosted job (the labels besides `self-hosted`)."""
    found: set[str] = set()
    for workflow in workflows:
        for job in jobs_of(workflow).values():
            labels = runner_labels(job)
            if "self-hosted" in labels:
                found |= set(labels) - {"self-hosted"}
    return found


def ancestors_of(jobs: Mapping[str, Mapping[str, Any]], name: str) -> set[str]:
    """Every job `name` waits for, directly or through other jobs."""
    seen: set[str] = set()
    todo = list(needs_of(jobs[name]))
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo += needs_of(jobs.get(current, {}))
    return seen


# --------------------------------------------------------------------------------------------
# inv calls in run: steps
# --------------------------------------------------------------------------------------------

_EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)
_OPERATORS = {";", "&&", "||", "|", "&", "(", ")", "{", "}", "!", ";;"}
_KEYWORDS = {"then", "do", "else", "elif", "if", "while", "until", "time", "exec"}
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class InvCall:
    """One `inv` command of a workflow step: where it is, and its arguments after `inv`."""

    workflow: str
    job: str
    step: str
    argv: tuple[str, ...]

    def where(self) -> str:
        return f"{self.workflow}: job {self.job}, step '{self.step}'"

    def __str__(self) -> str:
        return "inv " + shlex.join(self.argv)


def _flags_of_expression(match: re.Match[str]) -> str:
    """`${{ inputs.force && '--force' || '' }}` may put `--force` there: keep every flag it may produce."""
    literals = re.findall(r"'((?:[^']|'')*)'", match.group(1))
    flags = [literal for literal in literals if literal.startswith("-")]
    return " ".join(flags) if flags else "EXPR"


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a `run:` script, as words; enough of sh for what workflows hold.

    Joins `\\` continuations, drops comments, splits at `;`, `&&`, `||`, `|` and line ends, and drops
    leading keywords (`then`, `do`, ...) and variable assignments (`X=1 inv ...`). `${{ }}`
    expressions become the flags they may produce, or the word EXPR.
    """
    text = _EXPRESSION.sub(_flags_of_expression, script.replace("\\\r\n", " ").replace("\\\n", " "))
    commands: list[list[str]] = []
    for line in text.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()")
        lexer.whitespace_split = True
        lexer.commenters = ""  # shlex would cut `a#b`; sh starts a comment only with a word
        try:
            words = list(lexer)
        except ValueError as exc:  # an unbalanced quote: report the line rather than guess
            raise CIError(f"cannot read the shell line {line.strip()!r}: {exc}") from None
        comment = next((index for index, word in enumerate(words) if word.startswith("#")), len(words))
        words = words[:comment]
        current: list[str] = []
        for word in [*words, ";"]:
            if word in _OPERATORS or set(word) <= set(";&|()"):
                if current:
                    commands.append(current)
                current = []
            elif not current and (word in _KEYWORDS or _ASSIGNMENT.match(word)):
                continue
            else:
                current.append(word)
    return commands


def is_inv(word: str) -> bool:
    return word in ("inv", "invoke") or word.endswith(("/inv", "/invoke"))


def inv_calls(workflow: Mapping[str, Any], name: str) -> list[InvCall]:
    """Every `inv` command in the `run:` steps of a workflow's jobs."""
    calls = []
    for job_name, job in jobs_of(workflow).items():
        for number, step in enumerate(job.get("steps") or [], start=1):
            script = step.get("run")
            if not script:
                continue
            label = str(step.get("name") or step.get("id") or f"#{number}")
            for words in shell_commands(str(script)):
                if is_inv(words[0]):
                    calls.append(InvCall(name, job_name, label, tuple(words[1:])))
    return calls


def other_commands(workflow: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    """The commands of `run:` steps that are not `inv` calls, with their job's name."""
    found = []
    for job_name, job in jobs_of(workflow).items():
        for step in job.get("steps") or []:
            if step.get("run"):
                found += [(job_name, words) for words in shell_commands(str(step["run"])) if not is_inv(words[0])]
    return found


def check_inv_call(call: InvCall, collection: Any) -> list[str]:
    """Problems of one `inv` call against an Invoke collection: unknown task or flag, missing value.

    Parsed by Invoke's own parser (core options such as `-f FILE` included), so what passes here is
    what `inv` accepts.
    """
    from invoke.exceptions import ParseError
    from invoke.parser import Parser
    from invoke.program import Program

    parser = Parser(initial=Program(namespace=collection).initial_context, contexts=collection.to_contexts())
    try:
        parsed = parser.parse_argv(list(call.argv))
    except ParseError as exc:
        return [f"{call.where()}: `{call}`: {exc}"]
    problems = []
    if len(parsed) < 2:
        problems.append(f"{call.where()}: `{call}` names no task")
    for context in parsed[1:]:
        for argument in context.args.values():
            if argument.got_value and argument.takes_value and argument.value in ("", [], None):
                problems.append(f"{call.where()}: `{call}`: --{argument.name} has no value")
    return problems


# --------------------------------------------------------------------------------------------
# GitHub's job conditions, to play a run through
# --------------------------------------------------------------------------------------------

STATUS_FUNCTIONS = ("success", "failure", "always", "cancelled")
_TOKEN = re.compile(r"\s*(?:(\|\||&&|==|!=|!|\(|\)|,)|('(?:[^']|'')*')|([A-Za-z_][A-Za-z0-9_.\-]*)|(\d+(?:\.\d+)?))")


class ExpressionError(CIError):
    """A workflow expression this model does not read (it knows the operators job conditions use)."""


@dataclass
class _Expression:
    """A small recursive-descent reader of GitHub expressions: ||, &&, !, ==, !=, calls, properties."""

    tokens: list[tuple[str, str]]
    lookup: Callable[[str], Any]
    functions: Mapping[str, Callable[..., Any]]
    position: int = 0

    @classmethod
    def parse(cls, text: str, lookup: Callable[[str], Any], functions: Mapping[str, Callable[..., Any]]) -> Any:
        tokens: list[tuple[str, str]] = []
        index = 0
        while index < len(text):
            match = _TOKEN.match(text, index)
            if match is None or match.end() == index:
                if text[index:].strip():
                    raise ExpressionError(f"cannot read {text[index:]!r} in the expression {text!r}")
                break
            operator, string, name, number = match.groups()
            if operator:
                tokens.append(("op", operator))
            elif string is not None:
                tokens.append(("str", string[1:-1].replace("''", "'")))
            elif name:
                tokens.append(("name", name))
            elif number:
                tokens.append(("num", number))
            index = match.end()
        reader = cls(tokens, lookup, functions)
        value = reader.either()
        if reader.position != len(tokens):
            raise ExpressionError(f"unexpected {tokens[reader.position][1]!r} in the expression {text!r}")
        return value

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise ExpressionError(f"expected {value or 'a value'}, found {token[1] if token else 'the end'}")
        self.position += 1
        return token

    def either(self) -> Any:
        value = self.both()
        while self.peek() == ("op", "||"):
            self.take()
            other = self.both()
            value = value if truthy(value) else other
        return value

    def both(self) -> Any:
        value = self.negation()
        while self.peek() == ("op", "&&"):
            self.take()
            other = self.negation()
            value = other if truthy(value) else value
        return value

    def negation(self) -> Any:
        if self.peek() == ("op", "!"):
            self.take()
            return not truthy(self.negation())
        return self.comparison()

    def comparison(self) -> Any:
        value = self.primary()
        token = self.peek()
        if token in (("op", "=="), ("op", "!=")):
            self.take()
            equal = loosely_equal(value, self.primary())
            return equal if token == ("op", "==") else not equal
        return value

    def primary(self) -> Any:
        kind, text = self.take()
        if (kind, text) == ("op", "("):
            value = self.either()
            self.take(")")
            return value
        if kind == "str":
            return text
        if kind == "num":
            return float(text)
        if kind != "name":
            raise ExpressionError(f"unexpected {text!r}")
        if self.peek() == ("op", "("):
            self.take()
            arguments = []
            while self.peek() != ("op", ")"):
                arguments.append(self.either())
                if self.peek() == ("op", ","):
                    self.take()
            self.take(")")
            function = self.functions.get(text.lower())
            if function is None:
                raise ExpressionError(f"this model does not know the function {text}()")
            return function(*arguments)
        literals: dict[str, Any] = {"true": True, "false": False, "null": None}
        if text in literals:
            return literals[text]
        return self.lookup(text)


def truthy(value: Any) -> bool:
    return value not in (None, False, "", 0, 0.0)


def loosely_equal(left: Any, right: Any) -> bool:
    if isinstance(left, str) and isinstance(right, str):
        return left.casefold() == right.casefold()
    return bool(left == right)


def strip_expression(condition: str) -> str:
    text = condition.strip()
    match = re.fullmatch(r"\$\{\{(.*)\}\}", text, re.DOTALL)
    return match.group(1).strip() if match else text


def uses_status_function(condition: str) -> bool:
    return any(re.search(rf"\b{name}\s*\(", condition) for name in STATUS_FUNCTIONS)


@dataclass
class Scenario:
    """What happens in a played run: jobs that fail, where a cancel arrives, outputs and inputs."""

    fail: frozenset[str] = frozenset()
    cancel_during: str | None = None  # the run is cancelled while this job runs
    outputs: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    contexts: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"inputs": {...}, "github": {...}}


def topological_jobs(jobs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    order: list[str] = []
    placed: set[str] = set()
    pending = list(jobs)
    while pending:
        ready = [name for name in pending if set(needs_of(jobs[name])) <= placed]
        if not ready:
            raise CIError(f"the jobs {', '.join(pending)} need each other or an unknown job")
        for name in ready:
            order.append(name)
            placed.add(name)
            pending.remove(name)
    return order


def simulate(workflow: Mapping[str, Any], scenario: Scenario) -> dict[str, str]:
    """Play a run through: each job's result (success, failure, cancelled or skipped), in job order.

    The model of GitHub's rules: a job's `if:` without a status function means `success() && (...)`;
    success() is true when every job it needs (directly or not) succeeded and the run is not
    cancelled; failure() when one of them failed; cancelled() once the run is cancelled; always()
    always. Once the run is cancelled, only jobs whose condition still holds start.
    """
    jobs = jobs_of(workflow)
    results: dict[str, str] = {}
    cancelled = False
    for name in topological_jobs(jobs):
        job = jobs[name]
        before = ancestors_of(jobs, name)
        direct = needs_of(job)

        def lookup(path: str, direct: list[str] = direct) -> Any:
            parts = path.split(".")
            if parts[0] == "needs" and len(parts) >= 3:
                if parts[1] not in direct:
                    raise ExpressionError(f"needs.{parts[1]} is not a job this one needs")
                if parts[2] == "result":
                    return results[parts[1]]
                if parts[2] == "outputs" and len(parts) == 4:
                    produced = scenario.outputs.get(parts[1], {}) if results[parts[1]] == "success" else {}
                    return produced.get(parts[3], "")
            value: Any = scenario.contexts
            for part in parts:
                value = value.get(part) if isinstance(value, Mapping) else None
            return value

        functions: dict[str, Callable[..., Any]] = {
            "success": lambda before=before, cancelled=cancelled: not cancelled and all(
                results[b] == "success" for b in before),
            "failure": lambda before=before: any(results[b] == "failure" for b in before),
            "cancelled": lambda cancelled=cancelled: cancelled,
            "always": lambda: True,
            "contains": lambda haystack, needle: loosely_in(needle, haystack),
            "startswith": lambda text, prefix: str(text).casefold().startswith(str(prefix).casefold()),
        }
        raw = job.get("if")
        condition = strip_expression(str(raw)) if raw is not None else "success()"
        if not uses_status_function(condition):
            condition = f"success() && ({condition})"
        runs = truthy(_Expression.parse(condition, lookup, functions))
        if not runs:
            results[name] = "cancelled" if cancelled else "skipped"
            continue
        if scenario.cancel_during == name:
            results[name] = "cancelled"
            cancelled = True
        elif name in scenario.fail:
            results[name] = "failure"
        else:
            results[name] = "success"
    return results


def loosely_in(needle: Any, haystack: Any) -> bool:
    if isinstance(haystack, str):
        return str(needle).casefold() in haystack.casefold()
    if isinstance(haystack, list | tuple):
        return any(loosely_equal(item, needle) for item in haystack)
    return False
