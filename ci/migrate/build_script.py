"""Reading one of their build-*.sh scripts: the composition order, the builds and their arguments.

A build script is read, never run (`ci.migrate.shell` tokenises it): only comments, `set` options,
variable assignments, one `cat ... > $DOCKERFILE_TMP`, `$DOCKERBUILD` lines and the
`echo "$TAG" > $RES` bookkeeping are translated. Any other line, or a form bash would treat
differently from a plain concatenation (word splitting, globbing, environment values), becomes a
problem with its line number, so the migrated definition never silently differs from their build.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ci.migrate.findings import CONTROL, excerpt
from ci.migrate.shell import Command, Operator, Part, ShellSyntaxError, Word, commands

# What their Makefile and lumi-containers-build.sh set for every build script.
PIPELINE_VARIABLES = ("TAG", "DOCKERFILE", "DOCKERFILE_TMP", "LOG", "RES", "DOCKERBUILD")
_ARG_NAME = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*\Z")
_SPLIT_OR_GLOB = re.compile(r"[\s*?\[]")
NOT_TRANSLATED_FIX = ("rewrite the line with `cat`, variable assignments and the $DOCKERBUILD line only, "
                      "or pass --partial to migrate the other recipes")


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
            raise _Refuse(line, f"the unquoted ${part.text} holds {excerpt(value)}, which bash would split or expand",
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
            raise _Refuse(token.line, f"the cat option {excerpt(path)} is not translated")
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
                raise _Refuse(word.line, f"--build-arg {excerpt(pair)} takes its value from the environment",
                              "write --build-arg NAME=$VALUE with VALUE set in the script")
            if not _ARG_NAME.match(name):
                raise _Refuse(word.line, f"{excerpt(name)} is not a build argument name",
                              "use letters, digits and underscores")
            if CONTROL.search(value):
                raise _Refuse(word.line, f"the value of {name} contains a control character", "remove it")
            build_args.pop(name, None)  # the last one wins, as docker does
            build_args[name] = value
        elif literal == ".":
            if context:
                raise _Refuse(word.line, "a second build context is not translated")
            context = True
        else:
            shown = literal if literal is not None else "an option given by a variable"
            raise _Refuse(word.line, f"the build option {excerpt(shown)} is not translated "
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
