"""YAML and JSON read strictly: the one loader every file and request body of the CI goes through.

PyYAML reads YAML 1.1, where much that a person means as text is something else: `version: 2.10`
is the number 2.1, `mode: 0755` the number 493, `time: 1:30:00` the number 5400, `yes`, `no`, `on`
and `off` are booleans, and a key given twice silently keeps its last value. JSON drops a repeated
key the same way. So every document is read here:

- a key given twice in one mapping (or JSON object) is refused, naming both lines;
- numbers only YAML 1.1 reads as numbers (base 60 `1:30:00`, octal `0755`, binary `0b101`,
  `1_000`) are refused wherever they are, with the fix (quote it, or write the number plainly):
  they mean something else to every YAML 1.2 reader, Spack's and editors' included;
- every plain (unquoted) scalar that YAML read as something other than text is remembered with
  its line and its text as written (`Source`), so that a schema field meant as text can refuse it
  with a message showing `2.10`, not the `2.1` YAML made of it (`ci.validation.problems_from`);
- `changed` lists the scalars whose value reads back differently from what was written (`2.10`,
  `yes`, `0x1F`), for documents passed on without a schema (a Spack environment is written out
  again as spack.yaml, where `2.10` would arrive as `2.1`).

Aliases are expanded while the document is measured, so a "billion laughs" is refused before use.
Nothing here raises anything but `DocumentRefused`.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from ci.errors import printable

MAX_NODES = 100_000
MAX_DEPTH = 64
_MERGE = "tag:yaml.org,2002:merge"
_STR = "tag:yaml.org,2002:str"
# YAML 1.1's numbers that YAML 1.2 reads otherwise (or as text): base 60, a leading 0 (octal), binary, '_'
_YAML11_NUMBER = re.compile(r"\A[-+]?(0[0-7_]+|0b[01_]+|[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?|[0-9.]*_[0-9_.]*"
                            r"(e[-+][0-9]+)?)\Z")

Path_ = tuple[str | int, ...]


class DocumentRefused(Exception):
    """A document cannot be used as written: the message (with its line) and the fix."""

    def __init__(self, message: str, fix: str, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.line = line


@dataclass(frozen=True)
class Scalar:
    """A plain scalar YAML did not read as text: where it is, and how it was written."""

    line: int
    text: str
    value: Any
    file: str = ""  # set where one Source gathers several files (the settings' invoke.yaml and -f files)

    def reading(self) -> str:
        """What YAML made of the text, for a sentence: `the number 2.1`, `the boolean true`."""
        return reading(self.value)

    @property
    def changed(self) -> bool:
        """True when the value, written out again, is not the text as written (`2.10` -> 2.1, `yes` -> true)."""
        if self.value is None:
            return False
        if isinstance(self.value, bool):
            return self.text.lower() != str(self.value).lower()
        if isinstance(self.value, float) and (self.value != self.value or self.value in (float("inf"), float("-inf"))):
            return False
        return self.text != written(self.value)


def reading(value: Any) -> str:
    if value is None:
        return "null (no value)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, datetime.date):
        return f"the date {value.isoformat()}"
    return f"a {type(value).__name__}"


def _shown(value: Any) -> str:
    """A key quoted for a message, on one line (ci.validation.shown sits above this module)."""
    text = printable(str(value))
    return f"'{text[:80]}…'" if len(text) > 80 else f"'{text}'"


def written(value: Any) -> str:
    """A value as YAML writes it out again (`2.1`, `true`)."""
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n").removesuffix("\n...").strip()


@dataclass
class Source:
    """Where the values of one parsed document were written: its plain non-text scalars by path.

    A path is the keys and list indices from the top (`("variants", 0, "suffix")`); a key's own
    scalar is filed under its path plus `"[key]"`, as pydantic names a key's errors.
    """

    name: str
    scalars: dict[Path_, Scalar] = field(default_factory=dict)

    def at(self, path: Path_) -> Scalar | None:
        return self.scalars.get(tuple(path))

    def changed(self) -> Iterator[tuple[Path_, Scalar]]:
        """The scalars whose value reads back otherwise, in the order written."""
        for path, scalar in sorted(self.scalars.items(), key=lambda item: item[1].line):
            if scalar.changed:
                yield path, scalar


def dotted(path: Path_) -> str:
    """`("tests", 0, "name")` -> `tests[0].name`."""
    out = ""
    for part in path:
        if part == "[key]":
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def quote_fix(path: Path_, scalar: Scalar) -> str:
    """`quote it: version: "2.10"` (the text as written, as a YAML string)."""
    keys = [part for part in path if part != "[key]"]
    key = keys[-1] if keys and not isinstance(keys[-1], int) else None
    quoted = json.dumps(scalar.text if len(scalar.text) <= 200 else scalar.text[:200] + "…", ensure_ascii=False)
    return f"quote it: {key}: {quoted}" if key is not None else f"quote it: {quoted}"


_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str, *, name: str = "") -> tuple[Any, Source]:
    """The document and where its non-text scalars were written; a DocumentRefused for anything not usable."""
    loader = _LOADER(text)
    try:
        try:
            node = loader.get_single_node()
            source = Source(name)
            if node is None:
                return None, source
            _Walk(loader, source).walk(node)
            data = loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "somewhere"
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DocumentRefused(f"is not valid YAML ({reason} at {where})", "fix the YAML syntax at that position",
                              mark.line + 1 if mark is not None else None) from None
    except RecursionError:
        raise DocumentRefused("is not valid YAML (nested too deeply)", "flatten the structure") from None
    except ValueError as exc:  # a number of more than 4300 digits: Python refuses to convert it
        raise DocumentRefused(f"holds a value that cannot be read ({exc})", "quote it, or shorten it") from None
    return data, source


class _Walk:
    """One pass over the composed nodes (aliases followed, counted): duplicate keys, YAML 1.1 numbers, scalars."""

    def __init__(self, loader: Any, source: Source):
        self.loader = loader
        self.source = source
        self.count = 0

    def walk(self, root: yaml.Node) -> None:
        todo: list[tuple[yaml.Node, Path_]] = [(root, ())]
        while todo:
            node, path = todo.pop()
            self.count += 1
            if self.count > MAX_NODES:
                raise DocumentRefused(f"holds more than {MAX_NODES} values (aliases expanded)",
                                      "write the values out; do not nest aliases")
            if len(path) > MAX_DEPTH:
                raise DocumentRefused(f"is nested more than {MAX_DEPTH} levels deep", "flatten the structure")
            if isinstance(node, yaml.ScalarNode):
                self.scalar(node, path)
            elif isinstance(node, yaml.SequenceNode):
                todo.extend(reversed([(item, (*path, index)) for index, item in enumerate(node.value)]))
            elif isinstance(node, yaml.MappingNode):
                todo.extend(reversed(self.pairs(node, path)))

    def pairs(self, node: yaml.MappingNode, path: Path_) -> list[tuple[yaml.Node, Path_]]:
        """The mapping's values with their paths (merged `<<` ones first, so that explicit keys win)."""
        seen: dict[Any, int] = {}
        not_text: tuple[yaml.ScalarNode, Any] | None = None  # a key YAML read as a number, boolean or null
        merged: list[tuple[yaml.Node, Path_]] = []
        own: list[tuple[yaml.Node, Path_]] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    if isinstance(source, yaml.MappingNode):
                        merged.extend(self.pairs(source, path))
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                continue  # a complex key: construction refuses it (unhashable)
            if key_node.tag == _STR:  # the common case, without the constructor
                key: Any = key_node.value
            else:
                key = self.loader.construct_object(key_node)
                self.scalar(key_node, (*path, key, "[key]"))
            line = key_node.start_mark.line + 1
            if key in seen:
                raise DocumentRefused(
                    f"the key {_shown(dotted((*path, key)))} is given twice (lines {seen[key]} and {line})",
                    "keep one of them (YAML keeps only the last, silently)", line)
            seen[key] = line
            if not isinstance(key, str) and not_text is None:
                not_text = (key_node, key)
            own.append((value_node, (*path, key)))
        if not_text is not None:  # after the duplicates: `yes:` and `true:` in one mapping are one key twice
            key_node, key = not_text
            line = key_node.start_mark.line + 1
            raise DocumentRefused(
                f"line {line}: {printable(dotted(path)) + ': ' if path else ''}the key {_shown(key_node.value)} is "
                f"read by YAML as {reading(key)}, not as text",
                f"quote it: {json.dumps(key_node.value[:200], ensure_ascii=False)}: ...", line)
        return merged + own

    def scalar(self, node: yaml.ScalarNode, path: Path_) -> None:
        if node.style or node.tag == _STR:
            return  # quoted, or plain text: YAML kept it as written
        value = self.loader.construct_object(node)
        if isinstance(value, str):
            return
        line = node.start_mark.line + 1
        if isinstance(value, int | float) and not isinstance(value, bool) and _YAML11_NUMBER.match(node.value):
            raise DocumentRefused(f"line {line}: {printable(dotted(path))}: {node.value} is read by YAML 1.1 as "
                                  f"{reading(value)}, not as written",
                                  f"quote it if it is text ({json.dumps(node.value)}), or write the number "
                                  f"plainly ({value})", line)
        self.source.scalars[path] = Scalar(line, node.value, value)


# -- JSON --------------------------------------------------------------------------------------------


class JsonNumber(float):
    """A JSON number with a fraction or exponent, with its text as written (`2.10`) for messages."""

    text: str

    def __new__(cls, text: str) -> JsonNumber:
        number = super().__new__(cls, text)
        if number in (float("inf"), float("-inf")):
            raise DocumentRefused(f"holds the number {text[:40]}, too large for a 64-bit float (it would be "
                                  "infinity)", "send a finite number, or a quoted string")
        number.text = text
        return number


def load_json(text: str | bytes) -> Any:
    """A JSON document; a key given twice in one object is refused (json.loads keeps the last, silently).

    Numbers with a fraction keep their text (`JsonNumber`), so a refusal can show `2.10` as sent.
    """
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise DocumentRefused(f"the key {_shown(key)} is given twice in one object",
                                      "send each key once (JSON readers keep only the last, silently)")
            out[key] = value
        return out

    def constant(name: str) -> Any:
        raise DocumentRefused(f"holds {name}, which is not JSON (Python's reader takes it as a number)",
                              "send a finite number, or a quoted string")

    return json.loads(text, object_pairs_hook=pairs, parse_float=JsonNumber, parse_constant=constant)
