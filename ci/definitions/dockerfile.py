"""The little of Dockerfile syntax the planner needs: FROM references and their rewriting.

A FROM that names another definition is a DAG edge; at build time it is rewritten to the
exact tag of the parent's current image, so a child can never build on a stale parent.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

_FROM = re.compile(r"^(?P<indent>\s*)FROM(?P<flags>(\s+--\S+)*)\s+(?P<image>(?:\$\{[^}]*\}|\S)+)"
                   r"(?P<rest>(\s+AS\s+(?P<alias>\S+))?\s*)$",
                   re.IGNORECASE)
_ARG = re.compile(r"^\s*ARG\s+(?P<declarations>\S.*?)\s*$", re.IGNORECASE)
_ARG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# $X, ${X} and BuildKit's forms ${X:-word} ${X-word} ${X:+word} ${X+word} ${X:?message} ${X?message}
# ${X#glob} ${X##glob} ${X%glob} ${X%%glob} ${X/glob/text} ${X//glob/text}
_VARIABLE = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-+?]|##?|%%?|//?)?(?P<word>[^}]*)\}|"
                       r"(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


# The ARGs BuildKit sets itself, usable in FROM without a declaration.
AUTOMATIC_ARGS = frozenset({"TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT",
                            "BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT"})
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(rf"\A(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
                        r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@[A-Za-z0-9+._-]+:[0-9a-fA-F]{32,})?\Z")


def is_reference(image: str) -> bool:
    """True when `image` reads as an image reference Docker accepts (`[host[:port]/]name[:tag][@digest]`)."""
    return bool(_REFERENCE.match(image))


@dataclass(frozen=True)
class FromReference:
    """One FROM line: the image it names (variables expanded) and whether it names an earlier stage.

    `written` is the image as the line writes it; `undeclared` are the variables it uses that no ARG
    before the first FROM declares (Docker expands them to nothing, whatever the build arguments say),
    `empty` those declared without a value (no default, no build argument). Whether that breaks the
    line is `ci.definitions.graph`'s call.
    """

    line: int
    image: str
    stage_alias: bool
    written: str = field(default="", compare=False)
    undeclared: tuple[str, ...] = field(default=(), compare=False)
    empty: tuple[str, ...] = field(default=(), compare=False)

    @property
    def repository(self) -> str:
        """The image name without tag or digest (`base:1.0` -> `base`)."""
        name = self.image.split("@", 1)[0]
        last = name.rsplit("/", 1)[-1]
        if ":" in last:
            name = name[: len(name) - len(last)] + last.split(":", 1)[0]
        return name


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Join backslash continuations, drop comments; keep the first physical line number."""
    out: list[tuple[int, str]] = []
    buffer = ""
    start = 0
    for number, raw in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):  # Docker drops a BOM
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        out.append((start, buffer + stripped))
        buffer = ""
    if buffer:
        out.append((start, buffer))
    return out


def expand(value: str, variables: Mapping[str, str]) -> str:
    """Expand $X, ${X}, ${X:-default} and ${X:+alt} the way Docker does for FROM lines."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain")
        current = variables.get(name, "")
        op, word = match.group("op") or "", match.group("word") or ""
        if op.endswith("-"):
            return current or word
        if op.endswith("+"):
            return word if current else ""
        if op.startswith("#"):  # the shortest (#) or longest (##) leading part matching the glob, removed
            cuts = [end for end in range(len(current) + 1) if fnmatch.fnmatchcase(current[:end], word)]
            return current[(max(cuts) if op == "##" else min(cuts)):] if cuts else current
        if op.startswith("%"):
            cuts = [start for start in range(len(current) + 1) if fnmatch.fnmatchcase(current[start:], word)]
            return current[:(min(cuts) if op == "%%" else max(cuts))] if cuts else current
        return current  # ${X:?message} is X (Docker stops when it is empty); ${X/glob/text} is X, near enough

    return _VARIABLE.sub(substitute, value)


def _declarations(text: str) -> list[tuple[str, str]]:
    """`A=x B C="y z"` -> [(A, x), (B, ""), (C, "y z")]: one ARG line may declare several, quoted as a shell would."""
    try:
        words = shlex.split(text, comments=False, posix=True)
    except ValueError:  # an unclosed quote: Docker refuses the line; read it word by word here
        words = text.split()
    out = []
    for word in words:
        name, _, default = word.partition("=")
        if _ARG_NAME.match(name):
            out.append((name, default))
    return out


def parse_from_references(text: str, build_args: Mapping[str, str]) -> list[FromReference]:
    """Every FROM of a Dockerfile, with global ARG defaults and build args applied."""
    variables: dict[str, str] = {}
    seen_from = False
    stages: set[str] = set()
    refs: list[FromReference] = []
    for number, line in _logical_lines(text):
        arg = _ARG.match(line)
        if arg and not seen_from:
            for name, default in _declarations(arg.group("declarations")):
                variables[name] = build_args.get(name, expand(default, variables))
            continue
        match = _FROM.match(line)
        if not match:
            continue
        seen_from = True
        written = match.group("image")
        image = expand(written, variables)
        undeclared, empty = _without_value(written, variables)
        refs.append(FromReference(line=number, image=image, stage_alias=image.lower() in stages, written=written,
                                  undeclared=undeclared, empty=empty))
        if match.group("alias"):
            stages.add(match.group("alias").lower())
    return refs


def _without_value(written: str, variables: Mapping[str, str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The variables of a FROM image that stay empty: (undeclared, declared without a value).

    `${X:-word}` with a word has a value; `${X:+word}` is empty by intent (counted as empty, so a
    line left naming nothing is still refused); BuildKit's automatic platform ARGs always have one.
    """
    undeclared: list[str] = []
    empty: list[str] = []
    for match in _VARIABLE.finditer(written):
        name = match.group("braced") or match.group("plain")
        op, word = match.group("op") or "", match.group("word")
        if name in AUTOMATIC_ARGS or (op.endswith("-") and word) or variables.get(name):
            continue
        # ${X:+word} without X is empty by intent: a problem only when the line then names no image
        (empty if name in variables or op.endswith("+") else undeclared).append(name)
    return tuple(dict.fromkeys(undeclared)), tuple(dict.fromkeys(empty))


def rewrite_from(text: str, build_args: Mapping[str, str], replace: Callable[[FromReference], str | None]) -> str:
    """Return the Dockerfile with some FROM images replaced (`replace` returns None to keep one)."""
    text = text.removeprefix("\ufeff")  # as Docker reads it; the line numbers stay the same
    refs = {ref.line: ref for ref in parse_from_references(text, build_args)}
    lines = text.splitlines()
    for number, ref in refs.items():
        new_image = replace(ref)
        if new_image is None:
            continue
        match = _FROM.match(lines[number - 1])
        if match is None:  # a FROM split over continuation lines: rewrite the joined form
            continue
        lines[number - 1] = f"{match.group('indent')}FROM{match.group('flags')} {new_image}{match.group('rest')}"
    return "\n".join(lines) + "\n"
