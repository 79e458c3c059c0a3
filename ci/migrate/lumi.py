"""`inv migrate.lumi`: a LUMI containers CI checkout, written as our container definitions.

The LUMI layout (RecipesDocker/ in their repository):

    <app>/build-<variant>.docker   the body of one image
    <app>/build-<variant>.sh       `cat` of common/ fragments before and after $DOCKERFILE into
                                   $DOCKERFILE_TMP, then `$DOCKERBUILD -f $DOCKERFILE_TMP
                                   --build-arg NAME=$VAR ... -t $TAG .`, run in <app>/ by their Makefile
    <app>/build-<variant>.test     run on the compute node with the image file as $1 and the
                                   launcher in $SCMD (their test.sbatch, written by
                                   lumi-containers-transfer.sh, sets it)
    common/Dockerfile.*            fragments shared by every recipe
    helper-files/                  the image `h` that recipes bind with `--mount=...,from=h`
    ../Recipes/*.def               Singularity definitions

becomes, under the output folder (a definitions root):

    common/                        their fragments, once
    <arch>/<app>/container.yaml    one variant per build-*.sh (per `$DOCKERBUILD` line), with the
                                   body as `dockerfile:`, the exact `cat` order as `compose:`, the
                                   build args with the script's values, and the .test as a
                                   `run: host` test with their test.sbatch's resources
    <arch>/<app>/...               the app folder's other files: the shared build context
    <arch>/<app>/tests/*.test      the test scripts, unchanged
    <arch>/h/                      helper-files/, the site-environment image
    <arch>/<name>.def              Recipes/*.def, unchanged, lower-cased names

Build scripts are read, never run (`ci.migrate.shell`): only comments, `set` options, variable
assignments, one `cat ... > $DOCKERFILE_TMP`, `$DOCKERBUILD` lines and the `echo "$TAG" > $RES`
bookkeeping are translated; any other line is reported with its number and text, and the whole
migration exits 2 unless `--partial` (then the other recipes are written and the refused ones
listed). The checkout is only read, symlinks must stay inside it, and every file is checked
before anything is written; the tree is built beside the output folder and moved into place in
one rename, so a failed run leaves nothing half-written, and two runs write the same bytes.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import PydanticCustomError

from ci.errors import CIError
from ci.migrate.shell import Command, Operator, Part, ShellSyntaxError, Word, commands
from ci.resources import Resources, check_sbatch_option
from ci.validation import problems_from, shown

RECIPES = "RecipesDocker"
DEF_RECIPES = "Recipes"
COMMON = "common"
HELPER = "helper-files"
HELPER_IMAGE = "h"  # their recipes bind it by this name: RUN --mount=type=bind,from=h,...
TRANSFER_SCRIPT = "lumi-containers-transfer.sh"
TEST_NAME = "lumi"
MARKER = ".lumi-migration"
MARKER_TEXT = "This definitions tree was written by `inv migrate.lumi`; running it again replaces it.\n"
# What their Makefile and lumi-containers-build.sh set for every build script.
PIPELINE_VARIABLES = ("TAG", "DOCKERFILE", "DOCKERFILE_TMP", "LOG", "RES", "DOCKERBUILD")
# Files in an app folder that are their pipeline's leftovers, not build context (their .gitignore).
_LEFTOVER = re.compile(r"\A(.*\.done|.*\.log|\.tmp-.*)\Z", re.DOTALL)
_BUILD_SCRIPT = re.compile(r"\Abuild-(?P<variant>.+)\.sh\Z", re.DOTALL)
_NAME = re.compile(r"\A[a-z0-9][a-z0-9._-]*\Z")
_ARG_NAME = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*\Z")
_MAX_NAME = 128
_SPLIT_OR_GLOB = re.compile(r"[\s*?\[]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SHOWN = 160
NOT_TRANSLATED_FIX = ("rewrite the line with `cat`, variable assignments and the $DOCKERBUILD line only, "
                      "or pass --partial to migrate the other recipes")


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


# --------------------------------------------------------------------------------------------
# Reading one build script
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Build:
    """One `$DOCKERBUILD` line: the tag's suffix after $TAG and the build args it passes."""

    line: int
    tag_suffix: str
    build_args: dict[str, str]


@dataclass
class BuildScript:
    """What a build script does, as far as we translate it."""

    compose: list[str | None] = field(default_factory=list)  # None stands for $DOCKERFILE
    compose_line: int = 0
    builds: list[Build] = field(default_factory=list)
    recorded: list[str] = field(default_factory=list)  # tag suffixes written to $RES
    recorded_seen: bool = False
    problems: list[tuple[int, str, str]] = field(default_factory=list)  # (line, message, fix)


class _Refuse(Exception):
    def __init__(self, line: int, message: str, fix: str = NOT_TRANSLATED_FIX):
        super().__init__(message)
        self.line = line
        self.message = message
        self.fix = fix


def read_build_script(text: str) -> BuildScript:
    """Translate a build script's text; every line we cannot translate faithfully becomes a problem."""
    script = BuildScript()
    parsed, errors = commands(text)
    lines = text.split("\n")
    for error in errors:
        script.problems.append((error.line, _lexer_message(error, lines), NOT_TRANSLATED_FIX))
    variables: dict[str, str] = {}
    for command in parsed:
        try:
            _command(command, variables, script)
        except _Refuse as refusal:
            script.problems.append((refusal.line, refusal.message, refusal.fix))
    if not script.problems:
        if script.compose_line == 0:
            script.problems.append((0, "has no `cat ... > $DOCKERFILE_TMP` line composing the Dockerfile",
                                    "compose the fragments and $DOCKERFILE into $DOCKERFILE_TMP with cat"))
        if not script.builds:
            script.problems.append((0, "has no `$DOCKERBUILD -f $DOCKERFILE_TMP ... -t $TAG .` line",
                                    "build the composed file with $DOCKERBUILD"))
    suffixes = [build.tag_suffix for build in script.builds]
    for index, build in enumerate(script.builds):
        if build.tag_suffix in suffixes[:index]:
            script.problems.append((build.line, "builds the same tag twice", "give each $DOCKERBUILD line its own -t"))
    if not script.problems:
        for suffix in script.recorded:
            if suffix not in suffixes:
                script.problems.append((0, f"records the tag $TAG{suffix} in $RES but never builds it",
                                        "record only tags the script builds"))
    return script


_ALLOWED_STARTS = ("cat", "echo", "set", "$DOCKERBUILD", "-", ".", "../", ">")


def _lexer_message(error: ShellSyntaxError, lines: list[str]) -> str:
    """A construct the reader stops at: named by the line's command when that is not one we translate."""
    text = lines[error.line - 1].strip() if 0 < error.line <= len(lines) else ""
    first = text.split()[0] if text.split() else ""
    if first and not first.startswith(_ALLOWED_STARTS) and not re.match(r"[A-Za-z_]\w*=", first):
        return f"'{first}' is shell beyond `cat`, variable assignments and the $DOCKERBUILD line ({error.message})"
    return error.message


def _command(command: Command, variables: dict[str, str], script: BuildScript) -> None:
    first = command.tokens[0]
    if isinstance(first, Operator):
        raise _Refuse(command.line, f"'{first.text}' is not translated")
    words = command.words
    operators = [token for token in command.tokens if isinstance(token, Operator)]
    assignments = [word.assignment() for word in words]
    if all(assignments) and not operators:
        for item in assignments:
            assert item is not None
            variable, value = item
            if variable in PIPELINE_VARIABLES:
                raise _Refuse(command.line, f"assigns ${variable}, which the LUMI pipeline sets for every recipe")
            variables[variable] = _expand(value, variables, command.line, split=False)
        return
    if first.is_variable("DOCKERBUILD") and not first.parts[0].quoted:
        script.builds.append(_build(command, variables, script))
        return
    name = first.literal if isinstance(first, Word) else None
    if any(assignments) and name is None:
        raise _Refuse(command.line, "a command with its own environment (NAME=value command) is not translated")
    if name == "set":
        _set(command)
    elif name == "cat":
        _cat(command, variables, script)
    elif name == "echo":
        _echo(command, variables, script)
    elif name is not None and "=" in name:
        raise _Refuse(command.line, "a command with its own environment (NAME=value command) is not translated")
    else:
        shown = name if name is not None else "a command named by a variable"
        raise _Refuse(command.line, f"'{shown}' is shell beyond `cat`, variable assignments and the $DOCKERBUILD line")


def _expand(word: Word, variables: dict[str, str], line: int, *, split: bool) -> str:
    """The word's value; refuse what bash would treat differently from a plain concatenation."""
    out: list[str] = []
    for part in word.parts:
        if not part.variable:
            out.append(part.text)
            continue
        if part.text in PIPELINE_VARIABLES:
            raise _Refuse(line, f"${part.text} is used where the migration cannot follow it")
        if part.text not in variables:
            raise _Refuse(line, f"${part.text} is not set by the script (its value would come from the environment)",
                          f"assign {part.text}=... in the script before using it")
        value = variables[part.text]
        if split and not part.quoted and _SPLIT_OR_GLOB.search(value):
            raise _Refuse(line, f"the unquoted ${part.text} holds {_shown(value)}, which bash would split or expand",
                          f"quote it: \"${part.text}\"")
        out.append(value)
    if split and not any(part.quoted for part in word.parts) and not "".join(out):
        raise _Refuse(line, "an unquoted empty expansion disappears as a word", "quote it")
    return "".join(out)


def _set(command: Command) -> None:
    """`set -e`, `set -o pipefail`, ...: options that change how errors stop the script, not what it builds."""
    words = command.words[1:]
    if len(words) != len(command.tokens) - 1:
        raise _Refuse(command.line, "'set' with a redirection or pipe is not translated")
    index = 0
    while index < len(words):
        option = words[index].literal
        if option in ("-o", "+o") and index + 1 < len(words) and words[index + 1].literal == "pipefail":
            index += 2
            continue
        if option is None or not re.fullmatch(r"[-+][euxv]+", option):
            raise _Refuse(command.line,
                          f"'set {option or '$...'}' is not translated (only -e, -u, -x, -v, -o pipefail)")
        index += 1


def _cat(command: Command, variables: dict[str, str], script: BuildScript) -> None:
    if script.compose_line:
        raise _Refuse(command.line, f"a second `cat` (the first is on line {script.compose_line}) is not translated")
    if script.builds:
        raise _Refuse(command.line, "the `cat` comes after a $DOCKERBUILD line, which built an earlier file")
    tokens = command.tokens[1:]
    if len(tokens) < 2 or not (isinstance(tokens[-2], Operator) and tokens[-2].text == ">" and not tokens[-2].fd) \
            or not isinstance(tokens[-1], Word) or not tokens[-1].is_variable("DOCKERFILE_TMP") \
            or any(isinstance(token, Operator) for token in tokens[:-2]):
        raise _Refuse(command.line, "only `cat FILES... > $DOCKERFILE_TMP` is translated")
    compose: list[str | None] = []
    for token in tokens[:-2]:
        assert isinstance(token, Word)
        if token.is_variable("DOCKERFILE"):
            compose.append(None)
            continue
        path = _expand(token, variables, token.line, split=True)
        if path.startswith("-"):
            raise _Refuse(token.line, f"the cat option {_shown(path)} is not translated")
        compose.append(path)
    if compose.count(None) != 1:
        raise _Refuse(command.line, f"$DOCKERFILE appears {compose.count(None)} times in the `cat` (exactly once is "
                      "translated)", "name the recipe's body as $DOCKERFILE once")
    script.compose = compose
    script.compose_line = command.line


def _tag_suffix(word: Word, variables: dict[str, str]) -> str:
    parts = [part for part in word.parts if part.variable or part.text]
    if not parts or not parts[0].variable or parts[0].text != "TAG":
        raise _Refuse(word.line, "the tag does not start with $TAG, the name the LUMI pipeline gives the image")
    if len(parts) == 1:
        return ""
    return _expand(Word(parts=parts[1:], line=word.line), variables, word.line, split=True)


def _build(command: Command, variables: dict[str, str], script: BuildScript) -> Build:
    if not script.compose_line:
        raise _Refuse(command.line, "$DOCKERBUILD comes before the `cat` that writes $DOCKERFILE_TMP")
    tokens = command.tokens[1:]
    end = next((index for index, token in enumerate(tokens) if isinstance(token, Operator)), len(tokens))
    words = [token for token in tokens[:end] if isinstance(token, Word)]
    _build_output(command, tokens[end:])
    build_args: dict[str, str] = {}
    dockerfile = context = False
    suffix: str | None = None
    index = 0

    def value_of(option: str) -> Word:
        nonlocal index
        index += 1
        if index >= len(words):
            raise _Refuse(command.line, f"{option} has no value")
        return words[index]

    while index < len(words):
        word = words[index]
        literal = word.literal
        head = word.parts[0].text if word.parts and not word.parts[0].variable else ""
        if literal in ("-f", "--file"):
            if not value_of(literal).is_variable("DOCKERFILE_TMP"):
                raise _Refuse(word.line, "only `-f $DOCKERFILE_TMP` is translated")
            dockerfile = True
        elif literal in ("-t", "--tag") or head.startswith("--tag="):
            if suffix is not None:
                raise _Refuse(word.line, "a second -t is not translated")
            target = value_of(literal) if literal in ("-t", "--tag") else _rest_after(word, "--tag=")
            suffix = _tag_suffix(target, variables)
        elif literal == "--build-arg" or head.startswith("--build-arg="):
            value_word = value_of(literal) if literal == "--build-arg" else _rest_after(word, "--build-arg=")
            pair = _expand(value_word, variables, word.line, split=True)
            name, sep, value = pair.partition("=")
            if not sep:
                raise _Refuse(word.line, f"--build-arg {_shown(pair)} takes its value from the environment",
                              "write --build-arg NAME=$VALUE with VALUE set in the script")
            if not _ARG_NAME.match(name):
                raise _Refuse(word.line, f"{_shown(name)} is not a build argument name",
                              "use letters, digits and underscores")
            if _CONTROL.search(value):
                raise _Refuse(word.line, f"the value of {name} contains a control character", "remove it")
            build_args.pop(name, None)  # the last one wins, as docker does
            build_args[name] = value
        elif literal == ".":
            if context:
                raise _Refuse(word.line, "a second build context is not translated")
            context = True
        else:
            shown = literal if literal is not None else "an option given by a variable"
            raise _Refuse(word.line, f"the build option {_shown(shown)} is not translated "
                          "(only -f $DOCKERFILE_TMP, --build-arg NAME=VALUE, -t $TAG... and the context '.')")
        index += 1
    if not dockerfile:
        raise _Refuse(command.line, "builds without -f $DOCKERFILE_TMP (the composed file)")
    if suffix is None:
        raise _Refuse(command.line, "builds without -t $TAG")
    if not context:
        raise _Refuse(command.line, "builds without the context '.' (the recipe's folder)")
    return Build(line=command.line, tag_suffix=suffix, build_args=build_args)


def _rest_after(word: Word, prefix: str) -> Word:
    first = word.parts[0]
    rest = first.text[len(prefix):]
    parts = ([Part(rest, False, first.quoted)] if rest else []) + word.parts[1:]
    return Word(parts=parts, line=word.line)


def _build_output(command: Command, tokens: list[Any]) -> None:
    """What follows the build's words: nothing, or its output into `tee [-a] $LOG` (the build's log)."""
    rest = list(tokens)
    if not rest:
        return
    if isinstance(rest[0], Operator) and rest[0].text == ">&" and rest[0].fd == "2" and len(rest) > 1 \
            and isinstance(rest[1], Word) and rest[1].literal == "1":
        rest = rest[2:]
    ok = bool(rest) and isinstance(rest[0], Operator) and rest[0].text in ("|", "|&") and not rest[0].fd
    words = rest[1:]
    if ok and words and all(isinstance(token, Word) for token in words) and words[0].literal == "tee":
        args = words[1:]
        if args and args[0].literal == "-a":
            args = args[1:]
        if len(args) == 1 and args[0].is_variable("LOG"):
            return
    raise _Refuse(command.line, "the build's output goes somewhere other than `| tee $LOG`")


def _echo(command: Command, variables: dict[str, str], script: BuildScript) -> None:
    """`echo "$TAG" > $RES`: which images the pipeline tests (their transfer step reads $RES)."""
    tokens = command.tokens[1:]
    if len(tokens) == 3 and isinstance(tokens[0], Word) and isinstance(tokens[1], Operator) \
            and tokens[1].text in (">", ">>") and not tokens[1].fd and isinstance(tokens[2], Word) \
            and tokens[2].is_variable("RES"):
        suffix = _tag_suffix(tokens[0], variables)
        if tokens[1].text == ">":
            script.recorded = []
        script.recorded.append(suffix)
        script.recorded_seen = True
        return
    raise _Refuse(command.line, "only `echo \"$TAG\" > $RES` (recording the built tag) is translated")


def _shown(text: str) -> str:
    shown = text if len(text) <= _SHOWN else text[:_SHOWN] + "..."
    return repr(shown) if _CONTROL.search(shown) or not shown.isprintable() else f"'{shown}'"


def _line_text(lines: list[str], number: int) -> str:
    if number < 1 or number > len(lines):
        return ""
    text = lines[number - 1].rstrip()
    text = text if len(text) <= _SHOWN else text[:_SHOWN] + "..."
    return text if text.isprintable() else repr(text)


# --------------------------------------------------------------------------------------------
# Test resources: their test.sbatch, as lumi-containers-transfer.sh writes it
# --------------------------------------------------------------------------------------------


@dataclass
class TestDefaults:
    """The resources their test.sbatch gave every test, and the binds of their $SCMD."""

    __test__ = False  # not a pytest class

    slurm: dict[str, Any] = field(default_factory=dict)
    binds: list[str] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (message, fix)


_HEREDOC = re.compile(r"^\s*cat\s*>\s*test\.sbatch\s*<<\s*(?P<q>['\"]?)(?P<end>\w+)(?P=q)\s*$")
_SIMPLE_ASSIGN = re.compile(r"^\s*(?P<name>[A-Za-z_]\w*)=(?P<value>[^\s`$()'\"]*|'[^']*'|\"[^\"`$]*\")\s*$")
_ARITH = re.compile(r"\$\(\((?P<expr>[^()]*)\)\)")
_VAR = re.compile(r"\$(?:\{(?P<b>[A-Za-z_]\w*)\}|(?P<p>[A-Za-z_]\w*))")
_SBATCH_VALUE_OPTIONS = {"-N": "nodes", "--nodes": "nodes", "-n": "ntasks", "--ntasks": "ntasks",
                         "-G": "gpus", "--gpus": "gpus", "-t": "time", "--time": "time", "--mem": "mem",
                         "-p": "partition", "--partition": "partition", "-c": "cpus_per_task",
                         "--cpus-per-task": "cpus_per_task"}
_SBATCH_OURS = {"-J", "--job-name", "-o", "--output", "-e", "--error", "-A", "--account"}
_EXTRA_FLAGS = {"--exclusive"}
_EXTRA_VALUES = {"--threads-per-core", "--ntasks-per-node", "--gpus-per-node", "--hint", "--constraint", "-C",
                 "--qos", "--reservation"}


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"" else value


def _arith(expr: str, variables: dict[str, str]) -> str | None:
    text = _VAR.sub(lambda m: variables.get(m.group("b") or m.group("p") or "", "?"), expr)
    text = re.sub(r"[A-Za-z_]\w*", lambda m: variables.get(m.group(0), "?"), text)
    if not re.fullmatch(r"[0-9+\-* ()]+", text):
        return None
    total = 0
    for term in re.split(r"\s*\+\s*", text.strip()):
        product = 1
        for factor in re.split(r"\s*\*\s*", term):
            if not factor.strip().isdigit():
                return None
            product *= int(factor)
        total += product
    return str(total)


def _heredoc_expand(text: str, variables: dict[str, str]) -> str:
    """Expand a here-document body the way bash does for the few forms their script uses."""
    text = text.replace("\\\n", "")
    text = _ARITH.sub(lambda m: _arith(m.group("expr"), variables) or m.group(0), text)
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text) and text[index + 1] in "$`\\":
            out.append("\x00" + text[index + 1])  # escaped: expanded later, in the job
            index += 2
            continue
        match = _VAR.match(text, index)
        if match:
            name = match.group("b") or match.group("p") or ""
            out.append(variables[name] if name in variables else match.group(0))
            index = match.end()
            continue
        out.append(char)
        index += 1
    return "".join(out).replace("\x00", "")


def read_test_defaults(text: str) -> TestDefaults:
    """The resources and binds from the test.sbatch here-document of their transfer script."""
    defaults = TestDefaults()
    lines = text.splitlines()
    variables: dict[str, str] = {}
    start = end = -1
    for number, line in enumerate(lines):
        match = _HEREDOC.match(line)
        if match:
            start = number
            end = next((k for k in range(number + 1, len(lines)) if lines[k] == match.group("end")), -1)
            break
        assign = _SIMPLE_ASSIGN.match(line)
        if assign:
            variables[assign.group("name")] = _unquote(assign.group("value"))
    if start < 0 or end < 0:
        defaults.notes.append(("has no `cat > test.sbatch << EOF ... EOF` block",
                               "the tests get our default resources; set slurm: in container.yaml"))
        return defaults
    body = "\n".join(lines[start + 1:end])
    expanded = _heredoc_expand(body, variables).splitlines()
    job_variables: dict[str, str] = {}
    for line in expanded:
        assign = _SIMPLE_ASSIGN.match(line) or re.match(r"^\s*(?P<name>[A-Za-z_]\w*)=\"(?P<value>[^\"`]*)\"\s*$", line)
        if assign:
            job_variables[assign.group("name")] = _VAR.sub(
                lambda m: job_variables.get(m.group("b") or m.group("p") or "", m.group(0)),
                _unquote(assign.group("value")))
        if line.startswith("#SBATCH"):
            _sbatch_line(line[len("#SBATCH"):].split(), defaults)
    joined = " ".join(expanded)
    scmd = re.search(r"export\s+SCMD=\"(?P<value>[^\"]*)\"", joined)
    if scmd:
        value = _VAR.sub(lambda m: job_variables.get(m.group("b") or m.group("p") or "", m.group(0)),
                         scmd.group("value"))
        _scmd(value.split(), defaults)
    else:
        defaults.notes.append(("sets no SCMD in test.sbatch", "our SCMD comes from the site's scheduler and engine"))
    if "ntasks" not in defaults.slurm and "nodes" in defaults.slurm:
        defaults.slurm["ntasks"] = defaults.slurm["nodes"]
    order = ("nodes", "ntasks", "cpus_per_task", "gpus", "mem", "time", "partition", "extra")
    defaults.slurm = _valid_resources({key: defaults.slurm[key] for key in order if key in defaults.slurm},
                                      defaults)
    return defaults


def _valid_resources(slurm: dict[str, Any], defaults: TestDefaults) -> dict[str, Any]:
    """Keep what our Resources model accepts; each value it refuses is dropped with a note saying why."""
    kept = dict(slurm)
    extra: list[str] = []
    for option in kept.pop("extra", []):
        try:
            check_sbatch_option(option)
        except PydanticCustomError as exc:
            context = exc.context or {}
            defaults.notes.append((f"#SBATCH {option} of their test.sbatch is not carried over "
                                   f"({context.get('message', exc.message())})", str(context.get("fix", ""))))
            continue
        extra.append(option)
    if extra:
        kept["extra"] = extra
    for key in list(kept):
        try:
            Resources.model_validate({key: kept[key]} if key != "ntasks" else {"ntasks": kept[key]})
        except ValidationError as exc:
            for problem in problems_from(exc, file=TRANSFER_SCRIPT, prefix="slurm"):
                defaults.notes.append((f"their test.sbatch's {key} {shown(kept[key])} is not carried over "
                                       f"({problem.message})", problem.fix))
            del kept[key]
    try:
        Resources.model_validate(kept)
    except ValidationError as exc:
        for problem in problems_from(exc, file=TRANSFER_SCRIPT, prefix="slurm"):
            defaults.notes.append((f"their test.sbatch's resources are not carried over ({problem.message})",
                                   problem.fix))
        return {}
    return kept


def _sbatch_line(words: list[str], defaults: TestDefaults) -> None:
    index = 0
    while index < len(words):
        word = words[index]
        option, sep, inline = word.partition("=") if word.startswith("--") else (word, "", "")
        if option in _SBATCH_VALUE_OPTIONS or option in _EXTRA_VALUES or option in _SBATCH_OURS:
            if sep:
                value = inline
            elif index + 1 < len(words):
                index += 1
                value = words[index]
            else:
                value = ""
            if option in _SBATCH_VALUE_OPTIONS:
                key = _SBATCH_VALUE_OPTIONS[option]
                defaults.slurm[key] = int(value) if key in ("nodes", "ntasks", "gpus", "cpus_per_task") \
                    and value.isdigit() else value
            elif option in _EXTRA_VALUES:
                long = "--constraint" if option == "-C" else option
                defaults.slurm.setdefault("extra", []).append(f"{long}={value}")
        elif option in _EXTRA_FLAGS:
            defaults.slurm.setdefault("extra", []).append(option)
        else:
            defaults.notes.append((f"#SBATCH {word} of their test.sbatch is not carried over",
                                   "add it to the test's slurm.extra if the site needs it"))
        index += 1


def _scmd(words: list[str], defaults: TestDefaults) -> None:
    """`srun -N .. -n .. --cpu-bind=.. --gpus .. singularity exec -B a -B b`: tasks, CPU binding, binds."""
    if not words or words[0] != "srun":
        defaults.notes.append(("their SCMD does not start with srun", "our SCMD is the site scheduler's task launch"))
        return
    index = 1
    while index < len(words) and words[index].startswith("-"):
        word = words[index]
        option, sep, inline = word.partition("=")
        value = inline if sep else (words[index + 1] if index + 1 < len(words) else "")
        takes_value = option in ("-N", "--nodes", "-n", "--ntasks", "--gpus", "-G", "-c", "--cpus-per-task",
                                 "--cpu-bind")
        if option in ("-n", "--ntasks") and value.isdigit():
            defaults.slurm["ntasks"] = int(value)
        elif option == "--cpu-bind":
            defaults.notes.append((f"their SCMD binds tasks to CPUs with --cpu-bind={value}",
                                   "our launch has no CPU-binding field yet; the scheduler's default binding applies"))
        elif option in ("-c", "--cpus-per-task") and value.isdigit():
            defaults.slurm["cpus_per_task"] = int(value)
        elif option not in ("-N", "--nodes", "--gpus", "-G"):
            defaults.notes.append((f"srun {word} of their SCMD is not carried over", "add it to the test's resources"))
        index += 2 if takes_value and not sep else 1
    rest = words[index:]
    if rest[:2] in (["singularity", "exec"], ["apptainer", "exec"]):
        binds = rest[2:]
        position = 0
        while position < len(binds):
            if binds[position] in ("-B", "--bind") and position + 1 < len(binds):
                defaults.binds.extend(part for part in binds[position + 1].split(",") if part)
                position += 2
            else:
                defaults.notes.append((f"{rest[0]} exec {binds[position]} of their SCMD is not carried over",
                                       "add it to the site's engine settings"))
                position += 1


# --------------------------------------------------------------------------------------------
# Reading the checkout
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Copy:
    """A file of the output tree: its bytes, or the checkout file to copy them from, and its mode."""

    data: bytes | None
    source: Path | None
    executable: bool


def derive_name(text: str) -> str:
    """Our image name for one of their names: lower-cased, other characters as '-', no leading '.', '_' or '-'."""
    name = re.sub(r"[^a-z0-9._-]+", "-", text.lower())
    return name.lstrip("._-")


class _Checkout:
    """Read-only access to the checkout; every path it hands out stays inside it (symlinks included)."""

    def __init__(self, root: Path, report: Report):
        self.root = root
        self.real = Path(os.path.realpath(root))
        self.report = report

    def rel(self, path: Path) -> str:
        try:
            text = path.relative_to(self.root).as_posix()
        except ValueError:
            text = str(path)
        return text if text.isprintable() else repr(text)

    def inside(self, path: Path) -> bool:
        real = Path(os.path.realpath(path))
        return real == self.real or self.real in real.parents

    def check(self, path: Path, problems: list[Finding]) -> bool:
        """True when `path` is a regular file (after symlinks) inside the checkout with a usable name."""
        rel = self.rel(path)
        if not self.inside(path):
            problems.append(Finding(rel, f"is a symlink to {os.path.realpath(path)}, outside the checkout",
                                    "replace it with the file itself"))
            return False
        if not path.exists():
            problems.append(Finding(rel, "does not exist", "create the file or fix the name"))
            return False
        if not path.is_file():
            problems.append(Finding(rel, "is not a regular file (a folder, a link to one, a FIFO, socket or device)",
                                    "replace it with a regular file or remove it"))
            return False
        return True

    def text(self, path: Path, problems: list[Finding], *, script: bool = False) -> str | None:
        """The file's text when it is UTF-8 (and, for a script, free of CR and control characters)."""
        if not self.check(path, problems):
            return None
        rel = self.rel(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            problems.append(Finding(rel, f"cannot be read ({exc.strerror})", "check its permissions"))
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            problems.append(Finding(rel, f"is not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start})",
                                    "save the file as UTF-8", line=line))
            return None
        if script:
            for number, line_text in enumerate(text.split("\n"), start=1):
                if "\r" in line_text:
                    problems.append(Finding(rel, "has a Windows (CRLF) line ending, which bash reads as part of "
                                            "the line", "save the file with Unix (LF) line endings", line=number))
                    return None
                if _CONTROL.search(line_text):
                    problems.append(Finding(rel, "has a control character", "remove it", line=number,
                                            text=repr(line_text[:_SHOWN])))
                    return None
        return text

    def listing(self, folder: Path) -> list[Path]:
        """The folder's entries, sorted by name bytes (the same order on every machine)."""
        try:
            return sorted(folder.iterdir(), key=lambda entry: os.fsencode(entry.name))
        except OSError as exc:
            self.report.problems.append(Finding(self.rel(folder), f"cannot be listed ({exc.strerror})",
                                                "check its permissions"))
            return []

    def walk(self, folder: Path, skip: Iterable[str] = ()) -> Iterator[tuple[str, Path]]:
        """(path relative to `folder`, file) for every file under it, in a stable order."""
        skipped = set(skip)
        for entry in self.listing(folder):
            if entry.name in skipped:
                continue
            if entry.is_dir() and not entry.is_symlink():
                for rel, path in self.walk(entry):
                    yield f"{entry.name}/{rel}", path
            else:
                yield entry.name, entry


def _file_name_problem(rel: str) -> str | None:
    if not rel.isprintable() or "\\" in rel:
        return "has a file name with control or escape characters"
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "has a file name that is not UTF-8"
    return None


def migrate(checkout: Path, out: Path, *, partial: bool = False, arch: str = "amd64") -> Report:
    """Read the checkout, write the definitions tree to `out` (replacing an earlier migration's tree).

    Without `partial`, any refusal means nothing is written and the report is not ok.
    """
    checkout = Path(os.path.abspath(checkout))
    out = Path(os.path.abspath(out))
    _check_places(checkout, out)
    if arch not in ("amd64", "arm64"):
        raise MigrationError(f"--arch {arch!r} is not an architecture folder; use amd64 or arm64")
    report = Report(checkout=checkout, out=out, partial=partial)
    tree: dict[str, _Copy] = {MARKER: _Copy(MARKER_TEXT.encode(), None, False)}
    reader = _Checkout(checkout, report)
    recipes_dir = checkout / RECIPES
    defaults = TestDefaults()
    if recipes_dir.is_dir():
        if not reader.inside(recipes_dir):
            raise MigrationError(f"{recipes_dir} is a symlink out of the checkout; nothing was read")
        defaults = _test_defaults(reader, recipes_dir)
        _common(reader, recipes_dir, tree)
        _helper(reader, recipes_dir, arch, tree)
        for app_dir in reader.listing(recipes_dir):
            if app_dir.name in (COMMON, HELPER) or not app_dir.is_dir():
                continue
            scripts = [path for path in reader.listing(app_dir) if _BUILD_SCRIPT.match(path.name)]
            if scripts:
                _app(reader, app_dir, scripts, arch, defaults, tree)
    _def_recipes(reader, checkout / DEF_RECIPES, arch, tree)
    if not report.recipes and not report.definitions:
        raise MigrationError(f"{checkout} has no {RECIPES}/<app>/build-*.sh recipes and no {DEF_RECIPES}/*.def; "
                             "pass the root of a LUMI-containers checkout")
    _check_names(report, arch, tree)
    for message, fix in defaults.notes:
        report.notes.append(Finding(f"{RECIPES}/{TRANSFER_SCRIPT}", message, fix))
    if defaults.binds:
        report.notes.append(Finding(f"{RECIPES}/{TRANSFER_SCRIPT}",
                                    f"their SCMD binds {', '.join(defaults.binds)} into every test",
                                    "set ci.site.binds to these paths in your LUMI site profile"))
    if report.all_problems and not partial:
        return report
    def accept(staged: Path) -> str:
        if _loader_check(staged, report, arch, tree):
            return "write"
        return "restage" if partial or not report.all_problems else "abandon"

    report.written = _write_tree(out, tree, accept)
    return report


def _loader_check(staged: Path, report: Report, arch: str, tree: dict[str, _Copy]) -> bool:
    """Load the staged tree as `inv plan` will; what our loader refuses is not handed over as if it were fine.

    A migrated app the loader refuses is a refused recipe (the loader's reason, mapped back to the
    checkout's file); a `.def` it refuses (e.g. a bootstrap our .def kind cannot build) is left out
    with a note, since copying it was faithful and only building it is not possible here. Returns
    whether the staged tree can be handed over as it is (else it is written again without them).
    """
    from ci.definitions import load_catalog  # the loader is heavier than the migrator; only when writing

    catalog = load_catalog(staged, (arch,))
    changed = False
    for key, problems in sorted(catalog.problems.items()):
        name = key.split("/", 1)[1] if "/" in key else key
        recipes = [recipe for recipe in report.recipes if recipe.app == name and not recipe.problems]
        sources = [item for item in report.definitions if item["name"] == name]
        for problem in problems:
            where = _staged_name(problem.path, staged)
            field_text = f" ({problem.field})" if problem.field else ""
            message = f"the migrated {where}{field_text} is refused by our definitions loader: {problem.message}"
            if recipes:
                for recipe in recipes:
                    recipe.problems.append(Finding(recipe.file, message, problem.fix))
            elif sources:
                report.notes.append(Finding(sources[0]["source"], f"is not written: {message}", problem.fix))
            else:
                report.problems.append(Finding(where, message, problem.fix))
        for item in sources:
            report.definitions.remove(item)
        for rel in [rel for rel in tree if rel.startswith(f"{arch}/{name}/") or rel == f"{arch}/{name}.def"]:
            del tree[rel]
            changed = True
    return not changed


def _staged_name(path: Path, staged: Path) -> str:
    try:
        return path.resolve().relative_to(staged.resolve()).as_posix()
    except (ValueError, OSError):
        return path.name


def _check_places(checkout: Path, out: Path) -> None:
    if not checkout.is_dir():
        raise MigrationError(f"{checkout} is not a folder; pass the root of a LUMI-containers checkout")
    real_checkout = Path(os.path.realpath(checkout))
    real_out = Path(os.path.realpath(out))
    if real_out == real_checkout or real_checkout in real_out.parents:
        raise MigrationError(f"--out {out} is inside the checkout, which is only read; choose a folder outside it")
    if real_out in real_checkout.parents:
        raise MigrationError(f"--out {out} contains the checkout; choose a folder beside it")
    if out.exists() or out.is_symlink():
        if out.is_symlink() or not out.is_dir():
            raise MigrationError(f"--out {out} exists and is not a folder; choose another --out")
        entries = list(out.iterdir())
        if entries and not (out / MARKER).is_file():
            raise MigrationError(f"--out {out} exists and holds files that an earlier `inv migrate.lumi` did not "
                                 "write; choose another --out or empty it")


def _test_defaults(reader: _Checkout, recipes_dir: Path) -> TestDefaults:
    path = recipes_dir / TRANSFER_SCRIPT
    if not path.exists() and not path.is_symlink():
        defaults = TestDefaults()
        defaults.notes.append(("does not exist", "the tests get our default resources; set slurm: in container.yaml"))
        return defaults
    problems: list[Finding] = []
    text = reader.text(path, problems)
    if text is None:
        reader.report.notes.extend(problems)
        return TestDefaults()
    return read_test_defaults(text)


def _common(reader: _Checkout, recipes_dir: Path, tree: dict[str, _Copy]) -> None:
    folder = recipes_dir / COMMON
    if not folder.is_dir():
        return
    for rel, path in reader.walk(folder):
        problems: list[Finding] = []
        name_problem = _file_name_problem(rel)
        if name_problem:
            reader.report.problems.append(Finding(reader.rel(path), name_problem, "rename it"))
            continue
        if reader.text(path, problems) is not None:
            tree[f"{COMMON}/{rel}"] = _Copy(None, path, False)
        else:
            reader.report.problems.extend(problems)


def _executable(path: Path) -> bool:
    return bool(os.stat(path).st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH))


def _helper(reader: _Checkout, recipes_dir: Path, arch: str, tree: dict[str, _Copy]) -> None:
    """helper-files/ becomes the image `h`, the site environment their recipes bind with from=h."""
    folder = recipes_dir / HELPER
    if not folder.is_dir():
        return
    rel_folder = reader.rel(folder)
    problems: list[Finding] = []
    files: dict[str, _Copy] = {}
    for rel, path in reader.walk(folder):
        name_problem = _file_name_problem(rel)
        if name_problem:
            problems.append(Finding(reader.rel(path), name_problem, "rename it"))
        elif rel in ("container.yaml", "tests") or rel.startswith("tests/"):
            problems.append(Finding(reader.rel(path), "has a name our definitions reserve", "rename it"))
        elif reader.check(path, problems):
            files[rel] = _Copy(None, path, _executable(path))
    if "Dockerfile" not in files:
        problems.append(Finding(rel_folder, "has no Dockerfile", "add the helper image's Dockerfile"))
    if problems:
        reader.report.problems.extend(problems)
        return
    dockerfile = reader.text(folder / "Dockerfile", problems) or ""
    for source in _copy_sources(dockerfile):
        if source not in files:
            reader.report.notes.append(Finding(
                f"{rel_folder}/Dockerfile", f"copies {source}, which is not in the checkout (their pipeline makes it "
                "on the build machine, e.g. with a capture script over SSH)",
                f"create {arch}/{HELPER_IMAGE}/{source} in the migrated tree before building, or use the "
                "site-environment step"))
    for rel, copy in files.items():
        tree[f"{arch}/{HELPER_IMAGE}/{rel}"] = copy
    tree[f"{arch}/{HELPER_IMAGE}/container.yaml"] = _Copy(_yaml_text(
        f"helper-files/ of the LUMI containers CI: the site environment image `{HELPER_IMAGE}` their recipes bind "
        f"(RUN --mount=type=bind,from={HELPER_IMAGE},...)", {"tests": []}), None, False)
    reader.report.definitions.append({"source": rel_folder, "name": HELPER_IMAGE, "kind": "site-environment image"})


def _copy_sources(dockerfile: str) -> list[str]:
    """The plain file names a Dockerfile COPYs or ADDs from its context (continuations joined)."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    sources: list[str] = []
    for line in joined.splitlines():
        words = line.split()
        if len(words) < 3 or words[0].upper() not in ("COPY", "ADD"):
            continue
        args = [word for word in words[1:] if not word.startswith("--")]
        if any(word.startswith("--from") for word in words[1:]):
            continue
        sources.extend(word for word in args[:-1] if not any(ch in word for ch in "*?[$"))
    return sources


def _app(reader: _Checkout, app_dir: Path, scripts: list[Path], arch: str, defaults: TestDefaults,
         tree: dict[str, _Copy]) -> None:
    """One app folder: one definition with a variant per $DOCKERBUILD line of each build-*.sh."""
    app = derive_name(app_dir.name)
    recipes = [Recipe(file=reader.rel(script), app=app) for script in scripts]
    reader.report.recipes.extend(recipes)
    if not reader.inside(app_dir):
        for recipe in recipes:
            recipe.problems.append(Finding(reader.rel(app_dir), "is a symlink to a folder outside the checkout",
                                           "replace it with the folder itself"))
        return
    if not _NAME.match(app) or len(app) > _MAX_NAME:
        for recipe in recipes:
            recipe.problems.append(Finding(reader.rel(app_dir), f"gives no usable image name ({_shown(app)})",
                                           "rename the folder to letters, digits, '.', '_' or '-'"))
        return
    folder = f"{arch}/{app}"
    context: dict[str, _Copy] = {}
    context_problems: list[Finding] = []
    test_names = {script.name[: -len(".sh")] + ".test" for script in scripts}
    for rel, path in reader.walk(app_dir):
        if _BUILD_SCRIPT.match(rel) or rel in test_names:
            continue
        if _LEFTOVER.match(PurePosixPath(rel).name):
            reader.report.notes.append(Finding(reader.rel(path), "is left over from a build of their pipeline "
                                               "(*.log, *.done, .tmp-*) and is not copied", ""))
            continue
        name_problem = _file_name_problem(rel)
        if name_problem:
            context_problems.append(Finding(reader.rel(path), name_problem, "rename it"))
        elif rel in ("container.yaml", "tests") or rel.startswith("tests/"):
            context_problems.append(Finding(reader.rel(path), "has a name our definitions reserve "
                                            "(container.yaml, tests/)", "rename it"))
        elif reader.check(path, context_problems):
            context[rel] = _Copy(None, path, _executable(path))
    variants: list[dict[str, Any]] = []
    tests: dict[str, _Copy] = {}
    for script, recipe in zip(scripts, recipes, strict=True):
        recipe.problems.extend(context_problems)
        made = _variant(reader, app_dir, script, recipe, folder, defaults, tests)
        if not recipe.problems:
            variants.extend(made)
    suffixes = [variant["suffix"] for variant in variants]
    for recipe in recipes:
        for image in recipe.images:
            suffix = image[len(app) + 1:]
            if suffixes.count(suffix) > 1:
                recipe.problems.append(Finding(recipe.file, f"gives the image name {image}, as another recipe of "
                                               f"{reader.rel(app_dir)} does", "rename one of the recipes"))
    variants = [variant for variant in variants if suffixes.count(variant["suffix"]) == 1]
    if not variants:
        return
    for rel, copy in context.items():
        tree[f"{folder}/{rel}"] = copy
    for rel, copy in tests.items():
        tree[f"{folder}/tests/{rel}"] = copy
    tree[f"{folder}/container.yaml"] = _Copy(_yaml_text(
        f"{reader.rel(app_dir)}/ of the LUMI containers CI: one variant per $DOCKERBUILD line of its build-*.sh",
        {"tests": [], "variants": variants}), None, False)


def _variant(reader: _Checkout, app_dir: Path, script: Path, recipe: Recipe, folder: str, defaults: TestDefaults,
             tests: dict[str, _Copy]) -> list[dict[str, Any]]:
    app = recipe.app
    problems = recipe.problems
    name_problem = _file_name_problem(script.name)
    if name_problem:
        problems.append(Finding(recipe.file, name_problem, "rename it"))
        return []
    text = reader.text(script, problems, script=True)
    if text is None:
        return []
    lines = text.split("\n")
    parsed = read_build_script(text)
    for line, message, fix in parsed.problems:
        problems.append(Finding(recipe.file, message, fix, line=line, text=_line_text(lines, line)))
    match = _BUILD_SCRIPT.match(script.name)
    assert match is not None
    variant_name = match.group("variant")
    body_name = f"build-{variant_name}.docker"
    compose: list[str] = []
    for entry in parsed.compose:
        if entry is None:
            compose.append("$DOCKERFILE")
            reader.text(app_dir / body_name, problems)
            continue
        target = _fragment(reader, app_dir, entry, recipe, folder, parsed.compose_line, lines)
        if target is not None:
            compose.append(target)
    test_script = _test_script(reader, app_dir, f"build-{variant_name}.test", recipe, tests)
    if problems:
        return []
    out: list[dict[str, Any]] = []
    recorded = set(parsed.recorded)
    for build in parsed.builds:
        suffix = derive_name(variant_name + build.tag_suffix)
        image = f"{app}-{suffix}"
        if not _NAME.match(suffix) or len(image) > _MAX_NAME:
            problems.append(Finding(recipe.file, f"gives no usable image name ({_shown(image)})",
                                    "rename the recipe to letters, digits, '.', '_' or '-'", line=build.line))
            return []
        variant: dict[str, Any] = {"suffix": suffix, "dockerfile": body_name, "compose": compose}
        if build.build_args:
            variant["build_args"] = build.build_args
        variant_tests: list[dict[str, Any]] = []
        if test_script is not None and build.tag_suffix in recorded:
            test: dict[str, Any] = {"name": TEST_NAME, "script": f"tests/{test_script}", "run": "host"}
            if defaults.slurm:
                test["slurm"] = dict(defaults.slurm)
            variant_tests.append(test)
            recipe.tests.append(f"{image}/{TEST_NAME}")
        variant["tests"] = variant_tests
        recipe.images.append(image)
        out.append(variant)
    if test_script is not None and not parsed.recorded_seen:
        reader.report.notes.append(Finding(recipe.file, "records no tag in $RES, so their pipeline tests none of "
                                           "its images; the migrated images have no tests",
                                           "add `echo \"$TAG\" > $RES` to the script to test them"))
    return out


def _fragment(reader: _Checkout, app_dir: Path, entry: str, recipe: Recipe, folder: str, line: int,
              lines: list[str]) -> str | None:
    """A `cat` argument as a compose entry (relative to the definitions root): common/X, or a file of the app."""
    problems = recipe.problems
    parts = PurePosixPath(os.path.normpath(entry)).parts
    if PurePosixPath(entry).is_absolute() or not parts:
        target = None
    elif parts[:2] == ("..", COMMON) and len(parts) > 2 and ".." not in parts[2:]:
        target = "/".join((COMMON, *parts[2:]))
    elif ".." not in parts:
        target = "/".join((folder, *parts))  # the app's own file, copied with its build context
    else:
        target = None
    if target is None:
        problems.append(Finding(recipe.file, f"composes {_shown(entry)}, outside ../common/ and the recipe's folder",
                                "move the fragment into common/", line=line, text=_line_text(lines, line)))
        return None
    if reader.text(app_dir / entry, problems) is None:
        return None
    return target


def _test_script(reader: _Checkout, app_dir: Path, name: str, recipe: Recipe, tests: dict[str, _Copy]) -> str | None:
    """The variant's .test as a file under tests/: a symlink to another .test of the folder stays one file."""
    path = app_dir / name
    if not path.exists() and not path.is_symlink():
        reader.report.notes.append(Finding(recipe.file, f"has no {name}; its images get no test",
                                           f"write {name} to test them"))
        return None
    if not reader.check(path, recipe.problems):
        return None
    real = Path(os.path.realpath(path))
    target = real.name if real.parent == Path(os.path.realpath(app_dir)) else name
    name_problem = _file_name_problem(target)
    if name_problem:
        recipe.problems.append(Finding(reader.rel(path), name_problem, "rename it"))
        return None
    tests[target] = _Copy(None, real, True)
    return target


def _def_recipes(reader: _Checkout, folder: Path, arch: str, tree: dict[str, _Copy]) -> None:
    """Recipes/*.def: Singularity definitions, copied unchanged under a lower-case name."""
    if not folder.is_dir():
        return
    if not reader.inside(folder):
        reader.report.problems.append(Finding(reader.rel(folder), "is a symlink to a folder outside the checkout",
                                              "replace it with the folder itself"))
        return
    for path in reader.listing(folder):
        if path.suffix != ".def":
            continue
        problems: list[Finding] = []
        name = derive_name(path.name[: -len(".def")])
        if not _NAME.match(name) or len(name) > _MAX_NAME:
            problems.append(Finding(reader.rel(path), f"gives no usable image name ({_shown(name)})", "rename it"))
        elif reader.text(path, problems) is not None:
            tree[f"{arch}/{name}.def"] = _Copy(None, path, False)
            reader.report.definitions.append({"source": reader.rel(path), "name": name, "kind": "singularity .def"})
        reader.report.problems.extend(problems)


def _check_names(report: Report, arch: str, tree: dict[str, _Copy]) -> None:
    """Two sources that would become the same definition: refuse both, never let one overwrite the other."""
    owners: dict[str, list[str]] = {}
    for recipe in report.recipes:
        if not recipe.problems:
            owners.setdefault(recipe.app, []).append(recipe.file.rsplit("/", 1)[0])
    for item in report.definitions:
        owners.setdefault(item["name"], []).append(item["source"])
    for name, sources in owners.items():
        distinct = sorted(set(sources))
        if len(distinct) < 2:
            continue
        for key in list(tree):
            if key.startswith(f"{arch}/{name}/") or key == f"{arch}/{name}.def":
                del tree[key]
        report.definitions = [item for item in report.definitions if item["name"] != name]
        for recipe in report.recipes:
            if recipe.app == name and not recipe.problems:
                recipe.problems.append(Finding(recipe.file, f"becomes the definition {name}, as "
                                               f"{' and '.join(distinct)} do", "rename one of them"))
        if not any(recipe.app == name for recipe in report.recipes):
            report.problems.append(Finding(distinct[0], f"becomes the definition {name}, as {distinct[1]} does",
                                           "rename one of them"))


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Block style, no aliases, keys in the order we give: the same text on every run."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _yaml_text(comment: str, data: dict[str, Any]) -> bytes:
    body = yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True,
                     width=10_000)
    header = f"# {comment}.\n# Written by `inv migrate.lumi`; see docs/frontends/migrate-lumi.md.\n"
    return (header + body).encode("utf-8")


def _write_tree(out: Path, tree: dict[str, _Copy], accept: Callable[[Path], str]) -> bool:
    """Write the tree beside `out`, then swap it in with renames: never a half-written `out`.

    `accept(staged)` looks at the staged tree first: "write" hands it over, "restage" writes it
    again (entries were removed from `tree`), "abandon" leaves `out` as it was. Returns whether
    `out` now holds the tree.
    """
    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f".{out.name}.migrate-{os.getpid()}"
    old = parent / f".{out.name}.old-{os.getpid()}"
    for leftover in (staging, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    try:
        _stage(staging, tree)
        verdict = accept(staging)
        if verdict == "abandon":
            return False
        if verdict == "restage":
            shutil.rmtree(staging)
            _stage(staging, tree)
        if out.exists():
            out.rename(old)
        staging.rename(out)
        return True
    except OSError as exc:
        raise MigrationError(f"cannot write {out} ({exc.strerror}); nothing was changed") from None
    finally:
        for leftover in (staging, old):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)


def _stage(staging: Path, tree: dict[str, _Copy]) -> None:
    staging.mkdir()
    for rel in sorted(tree):
        copy = tree[rel]
        target = staging / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if copy.data is not None:
            target.write_bytes(copy.data)
        else:
            assert copy.source is not None
            with copy.source.open("rb") as source, target.open("wb") as sink:
                shutil.copyfileobj(source, sink)
        target.chmod(0o755 if copy.executable else 0o644)
    for folder in sorted({p.parent for p in staging.rglob("*")} | {staging}):
        folder.chmod(0o755)


__all__ = ["MigrationError", "Report", "ShellSyntaxError", "derive_name", "migrate", "read_build_script",
           "read_test_defaults"]
