"""Strict grammars for every value of a step and a request.

Nothing of a step reaches a shell as text: apt and pip lists are written to files that `apt-get`
and `pip` read, the Spack environment is YAML that Spack reads. The grammars still refuse anything
that is not a package name, a requirement or a spec, so that a value can never become an option
(`--index-url`), a path (`../`), a second command (`; rm`) or a multi-megabyte list, and so that the
person who wrote it learns which entry is wrong before a build starts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from ci.errors import Problem
from ci.validation import has_control, shown

MAX_ENTRIES = 2000  # entries of one apt or pip list, or Spack specs (the largest real step has ~110)
MAX_VALUE = 1024  # characters of one entry
MAX_DEPTH = 24  # nesting of the Spack body
MAX_NODES = 20_000  # scalars, lists and mappings in the Spack body

# Debian policy: a package name is [a-z0-9][a-z0-9+.-]+; optionally :arch and =version.
APT_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]{0,127}(:[a-z0-9-]{1,32})?(=[A-Za-z0-9.+~:-]{1,128})?\Z")
# A git branch or tag as a request names it (`main`, `1.0`, `release/2.0`): git's own rules for a ref name
# (no "..", no "//", no component starting with "." or ending in ".lock", no "/" at either end) with a first
# character that cannot make it an option, and at most 128 characters.
VERSION = re.compile(r"^(?!.*\.\.)(?!.*//)(?!.*/\.)(?!.*\.lock(?:/|\Z))[A-Za-z0-9_][A-Za-z0-9_.+/-]{0,127}(?<!/)\Z")
# A Spack spec, token by token (Spack's own lexer, without quoted values and without file paths).
_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
_SPEC_TOKEN = re.compile(
    r"\s*(?:"
    rf"(?P<sigil>[\^%])\s*(?P<dep>{_NAME})"  # ^dependency, %compiler
    r"|(?P<version>@=?[A-Za-z0-9_.:,=-]+)"  # @1.2:1.4,2.0
    rf"|(?P<flag>(?:\+\+?|~~?|-)(?:{_NAME}))"  # +variant ~variant ++propagated
    rf"|(?P<key>{_NAME})(?P<eq>==?)(?P<value>[A-Za-z0-9_.,:+*/-]+)"  # key=value, key==value
    r"|(?P<hash>/[a-z0-9]{1,64})"  # /abcdef (a concrete hash)
    rf"|(?P<name>{_NAME})"  # the package name
    r")"
)
SPECIAL_PIP = re.compile(r"^\s*-")


def problem(where: Path, field: str, message: str, fix: str) -> Problem:
    return Problem(where, field, message, fix)


def check_spec(value: object, where: Path, field: str) -> list[Problem]:
    """A Spack spec (`proj@7.2.0 curl=False`, `gromacs@2022.3~mpi^fftw~mpi`, `kratos apps=A,B`)."""
    fix = "write a Spack spec: name[@version] [+variant|~variant] [key=value] [^dependency] [%compiler]"
    if not isinstance(value, str):
        return [problem(where, field, f"{shown(value)} is not a text spec", fix)]
    if not value.strip() or len(value) > MAX_VALUE or has_control(value):
        return [problem(where, field, f"{shown(value)} is not a spec (empty, over {MAX_VALUE} characters or "
                                      "with control characters)", fix)]
    position, first = 0, True
    text = value.rstrip()
    while position < len(text):
        match = _SPEC_TOKEN.match(text, position)
        if match is None or match.end() == position:
            return [problem(where, field, f"{shown(value)} is not a Spack spec (at {shown(text[position:], 20)})", fix)]
        if first and match.group("name") is None:
            return [problem(where, field, f"{shown(value)} does not start with a package name", fix)]
        first = False
        position = match.end()
    return []


def check_apt(value: object, where: Path, field: str) -> list[Problem]:
    if isinstance(value, str) and APT_PACKAGE.match(value):
        return []
    return [problem(where, field, f"{shown(value)} is not a Debian package name",
                    "write name, name:arch or name=version (lower-case letters, digits, '+', '.', '-')")]


def pip_requirement(value: object, where: Path, field: str) -> tuple[str | None, list[Problem]]:
    """The requirement in pip's normal form, or a problem: a PEP 508 requirement from an index, nothing else."""
    fix = "write a PEP 508 requirement from the package index, e.g. numpy==1.26.4 or pandas>=2; no options, no URLs"
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        return None, [problem(where, field, f"{shown(value)} is not a pip requirement", fix)]
    text = str(value).strip()
    if not text or len(text) > MAX_VALUE or has_control(text):
        return None, [problem(where, field, f"{shown(value)} is not a pip requirement (empty, too long or with "
                                            "control characters)", fix)]
    if SPECIAL_PIP.match(text):
        return None, [problem(where, field, f"{shown(value)} is a pip option, not a requirement", fix)]
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        return None, [problem(where, field, f"{shown(value)} is not a pip requirement ({str(exc).splitlines()[0]})",
                              fix)]
    if requirement.url:
        return None, [problem(where, field, f"{shown(value)} installs from a URL", fix)]
    return str(requirement), []


def requirements_file(text: str, where: Path) -> tuple[list[str], list[Problem]]:
    """The requirements of a step's requirements.txt: one requirement a line, `#` comments, blank lines."""
    found: list[str] = []
    problems: list[Problem] = []
    lines = text.splitlines()
    if len(lines) > MAX_ENTRIES:
        return [], [problem(where, "", f"{len(lines)} lines (more than {MAX_ENTRIES})", "split the step")]
    for number, line in enumerate(lines, 1):
        body = re.sub(r"(^|\s)#.*$", "", line).strip()
        if not body:
            continue
        if body.endswith("\\"):
            problems.append(problem(where, f"line {number}", "a continued line (ending in '\\')",
                                    "write each requirement on one line"))
            continue
        requirement, wrong = pip_requirement(body, where, f"line {number}")
        problems += wrong
        if requirement:
            found.append(requirement)
    return found, problems


def check_list(value: object, where: Path, field: str) -> tuple[list[Any], list[Problem]]:
    """A YAML list of at most MAX_ENTRIES entries (an absent or empty section is an empty list)."""
    if value is None:
        return [], []
    if not isinstance(value, list):
        return [], [problem(where, field, f"is {type(value).__name__}, not a list", f"write `{field}:` as a list "
                                                                                     "of entries (`- name`)")]
    if len(value) > MAX_ENTRIES:
        return [], [problem(where, field, f"has {len(value)} entries (more than {MAX_ENTRIES})", "split the step")]
    return value, []


def check_tree(value: Any, where: Path, field: str) -> list[Problem]:
    """Any YAML body (the Spack section): bounded depth and size, plain scalars, no control characters."""
    problems: list[Problem] = []
    todo: list[tuple[Any, str, int]] = [(value, field, 0)]
    nodes = 0
    while todo and not problems:
        node, path, depth = todo.pop()
        nodes += 1
        if nodes > MAX_NODES or depth > MAX_DEPTH:
            problems.append(problem(where, field, f"is larger than {MAX_NODES} values or deeper than {MAX_DEPTH}",
                                    "shrink the Spack section"))
        elif isinstance(node, dict):
            for key, item in node.items():
                if not isinstance(key, str) or not key or len(key) > 256 or has_control(key):
                    problems.append(problem(where, path, f"the key {shown(key)} is not a plain name",
                                            "use plain YAML keys"))
                else:
                    todo.append((item, f"{path}.{key}", depth + 1))
        elif isinstance(node, list):
            todo += [(item, f"{path}[{index}]", depth + 1) for index, item in enumerate(node)]
        elif isinstance(node, str):
            if len(node) > 4 * MAX_VALUE or has_control(node):
                problems.append(problem(where, path, f"{shown(node)} is too long or holds control characters",
                                        "write a plain value"))
        elif node is not None and not isinstance(node, bool | int | float):
            problems.append(problem(where, path, f"{shown(node)} is a {type(node).__name__}, not a plain value",
                                    "write strings, numbers, booleans, lists and mappings only"))
    return problems


def check_version(value: str, where: Path, field: str) -> list[Problem]:
    if VERSION.match(value):
        return []
    return [problem(where, field, f"{shown(value)} is not a branch or tag name",
                    "name a branch or tag of the workflow registry (letters, digits, '_', '.', '+', '-', '/' between "
                    "parts)")]


def shown_key(key: object) -> str:
    """A key of a user's file for a field path: control characters escaped, cut at 40 characters."""
    return shown(key, 40)[1:-1]
