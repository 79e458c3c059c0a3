"""The one formatter from pydantic's errors to our Problem lines, and the grammar helpers of our models.

Every schema we read (container.yaml, settings, request bodies, the allocator's targets) is a
pydantic v2 model; a person never sees pydantic's own wording. `problems_from` turns one
`ValidationError` into one `Problem` per error, naming the file, the field path as the user wrote
it (`tests[0].slurm.partition`), the message and the fix. Our own validators raise `invalid(message,
fix)`, so their wording passes through unchanged; pydantic's built-in errors get today's phrasing
("expected a whole number, got a string", "unknown key 'x'; did you mean 'y'?").
"""

from __future__ import annotations

import difflib
import json
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar, get_args

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from ci.documents import Source, dotted, quote_fix, written
from ci.errors import Problem

ERROR_TYPE = "ci"  # the pydantic error type of every problem our own validators raise
NOT_TEXT = "ci_not_text"  # a number, boolean, date or null where text is meant (worded with its source)
_SHOWN_LENGTH = 80
_NUMBER_TEXT = re.compile(r"\A[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\Z")

# GitHub names, as GitHub allows them: owner (user or organisation) and owner/repository.
GITHUB_OWNER = r"[A-Za-z0-9][A-Za-z0-9-]{0,38}"
GITHUB_REPOSITORY = GITHUB_OWNER + r"/[A-Za-z0-9._-]{1,100}"


def invalid(message: str, fix: str) -> PydanticCustomError:
    """An error for a validator to raise: our message and fix, kept verbatim by `problems_from`."""
    return PydanticCustomError(ERROR_TYPE, "invalid value", {"message": message, "fix": fix})


def not_text(value: Any) -> PydanticCustomError:
    """An error for a validator to raise when text is meant and YAML or JSON gave something else.

    It is never turned into text (`2.10` would become "2.1", `0755` "493", `yes` "True");
    `problems_from` words it with the text as written when it knows the document's `Source`.
    """
    return PydanticCustomError(NOT_TEXT, "expected a string", {"got": type_name(value)})


def shown(value: object, limit: int = _SHOWN_LENGTH) -> str:
    """A user value quoted for a message: control characters escaped, long values cut.

    Messages go to terminals, logs and JSON; a newline or an escape sequence from a definition must
    not start a fake line or recolour the terminal.
    """
    text = str(value)
    cut = len(text) > limit
    text = text[:limit]
    out = []
    for char in text:
        if char == "'" or char == "\\":
            out.append("\\" + char)
        elif has_control(char):
            out.append(char.encode("unicode_escape").decode("ascii"))
        else:
            out.append(char)
    return "'" + "".join(out) + ("…'" if cut else "'")


# A build argument named as a secret (`*_TOKEN`, `*_PASSWORD`, `*_SECRET`, `*_KEY`, any case): build
# arguments stay in the image's history, readable by everyone who pulls it.
SECRET_NAME = re.compile(r"(?:\A|_)(?:TOKEN|PASSWORD|PASSWD|SECRET|KEY)\Z", re.IGNORECASE)


def not_a_secret_build_arg(name: str, fix: str) -> str:
    """`name` unless it names a secret (`*_TOKEN`, ...): then an error with `fix` (where secrets go instead)."""
    if SECRET_NAME.search(name):
        raise invalid(f"build argument {name} is named as a secret; build arguments are kept in the image's "
                      "history, readable by everyone who pulls it", fix)
    return name


def has_control(text: str) -> bool:
    """True when `text` holds a control, format or unassigned character (newline, ESC, zero-width, ...)."""
    if text.isprintable():  # the common case, in C: printable text holds no character of category C
        return False
    return any(unicodedata.category(char)[0] == "C" for char in text)


def check_text(value: str, *, what: str, max_length: int, pattern: re.Pattern[str] | None = None,
               fix: str = "") -> str:
    """The common grammar check: no control characters, a length cap, and an anchored pattern."""
    if has_control(value):
        raise invalid(f"{shown(value)} contains a control character", "remove line breaks, tabs and other "
                      "control characters")
    if not value:
        raise invalid(f"{what} is empty", fix or "write a value")
    if len(value) > max_length:
        raise invalid(f"{what} {shown(value, 40)} is {len(value)} characters long (at most {max_length})",
                      fix or f"shorten it to {max_length} characters")
    if pattern is not None and not pattern.match(value):
        raise invalid(f"{shown(value)} is not a valid {what}", fix)
    return value


def type_name(value: Any) -> str:
    """How a YAML value's type reads in a sentence."""
    if value is None:
        return "nothing (null)"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", tuple: "a list"}.get(type(value), type(value).__name__)


def field_path(loc: Sequence[int | str], prefix: str = "") -> str:
    """`('tests', 0, 'slurm', 'partition')` -> `tests[0].slurm.partition` (pydantic's union tags dropped)."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _is_internal(part):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _is_internal(part: str) -> bool:
    """pydantic's own location parts: union members, validator wrappers and the dict-key marker."""
    return part == "[key]" or bool(re.fullmatch(r"(function-\w+|str|int|float|bool|none|list|dict|tuple|"
                                                r"lax-or-strict|json-or-python|nullable|union|[a-z]+\[.*\])",
                                                part)) or (part[:1].isupper() and "[" in part)


def problems_from(error: ValidationError, *, file: str | Path, prefix: str = "",
                  model: type[BaseModel] | None = None, source: Source | None = None) -> list[Problem]:
    """One Problem per pydantic error, in our words.

    `prefix` is put before every field path (e.g. `ci.site` for a settings section); `model`, when
    given, lets an unknown key suggest the closest known one and lets a field's `fix` (its
    json_schema_extra) be used for missing values; `source` (the YAML document's, from
    `ci.documents`) lets a value refused as not text be shown as written, with its line.
    """
    path = Path(file)
    problems: list[Problem] = []
    for item in error.errors(include_url=False):
        loc = tuple(part for part in item["loc"])
        kind = item["type"]
        ctx = item.get("ctx") or {}
        value = item.get("input")
        if kind in (NOT_TEXT, "string_type", "string_sub_type"):
            problems.append(_not_text(path, loc, prefix, value, source))
            continue
        if kind == ERROR_TYPE:
            name = field_path(loc, prefix)
            problems.append(Problem(path, name, str(ctx.get("message", item["msg"])), str(ctx.get("fix", ""))))
            continue
        problems.append(_builtin(path, loc, prefix, kind, ctx, value, item["msg"], model))
    return problems


def _data_path(loc: Sequence[int | str]) -> tuple[int | str, ...]:
    """The location in the document (pydantic's own parts dropped; a key's errors keep "[key]")."""
    return tuple(part for part in loc if isinstance(part, int) or part == "[key]" or not _is_internal(part))


def _not_text(path: Path, loc: Sequence[int | str], prefix: str, value: Any, source: Source | None) -> Problem:
    """Text was meant: say what YAML (or JSON) made of the value as written, and how to quote it."""
    name = field_path(loc, prefix) or "(top level)"
    where = _data_path(loc)
    scalar = source.at((*(part for part in prefix.split(".") if part), *where)) if source is not None else None
    if scalar is None and isinstance(value, int | float | bool):  # JSON, or data read elsewhere: no line
        text = getattr(value, "text", None) or (str(value).lower() if isinstance(value, bool) else str(value))
        kind = "a boolean" if isinstance(value, bool) else "a number"
        return Problem(path, name, f"expected text, got {kind} ({shown(text, 40)[1:-1]})",
                       f"quote it: {json.dumps(text)}")
    if scalar is None:
        return Problem(path, name, f"expected a string, got {type_name(value)}", "write a quoted string")
    line = f"line {scalar.line}: "
    if scalar.file:
        path, line = Path(scalar.file), f"{scalar.file} line {scalar.line}: "
    text = shown(scalar.text, 40)[1:-1]
    return Problem(path, name, f"{line}YAML reads {text} as {shown(scalar.reading(), 60)[1:-1]}, not as the text "
                               f"{shown(scalar.text, 40)}", quote_fix(where, scalar))


def changed_problems(source: Source, *, file: str | Path, under: tuple[int | str, ...] = (),
                     skip: tuple[tuple[int | str, ...], ...] = (), passed_to: str = "") -> list[Problem]:
    """Values passed on without a schema (a Spack environment) whose reading is not the text as written.

    `2.10` under `spack:` would reach spack.yaml as `2.1`, `yes` as `true`: one Problem each, with the
    fix (quote it, or write the value as YAML reads it). `under` limits the check to one subtree,
    `skip` leaves out subtrees a schema checks already.
    """
    problems: list[Problem] = []
    for where, scalar in source.changed():
        if where[:len(under)] != under or any(where[:len(part)] == part for part in skip):
            continue
        value = shown(written(scalar.value), 40)[1:-1]
        line = f"{scalar.file} line {scalar.line}" if scalar.file else f"line {scalar.line}"
        problems.append(Problem(Path(scalar.file or file), dotted(where), f"{line}: YAML reads "
                                f"{shown(scalar.text, 40)[1:-1]} as "
                                f"{scalar.reading()}; it would reach {passed_to or 'the build'} as {value}",
                                f"{quote_fix(where, scalar)} (or write {value} if that is what you mean)"))
    return problems


def _builtin(path: Path, loc: tuple[int | str, ...], prefix: str, kind: str, ctx: dict[str, Any], value: Any,
             msg: str, model: type[BaseModel] | None) -> Problem:
    name = field_path(loc, prefix)
    shown_name = name or "(top level)"
    if kind == "extra_forbidden":
        key = str(next((part for part in reversed(loc) if not isinstance(part, int)), ""))
        allowed = _allowed_keys(model, loc[:-1]) if model is not None else []
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean '{close[0]}'?" if close else (f"allowed keys: {', '.join(allowed)}" if allowed else "")
        fix = f"remove it or fix the name ({hint})" if hint else "remove it or fix the name"
        return Problem(path, name, f"unknown key {shown(key)}", fix)
    if kind == "missing":
        fix = _field_fix(model, loc) if model is not None else ""
        return Problem(path, name, "is missing", fix or "add it")
    got = type_name(value)
    if kind in ("model_type", "model_attributes_type", "dict_type", "mapping_type"):
        keys = _allowed_keys(model, loc) if model is not None else []
        fix = f"write it as 'key: value' lines with the keys {', '.join(keys)}" if keys else "write it as " \
            "'key: value' lines"
        return Problem(path, shown_name, f"expected a mapping, got {got}", fix)
    if kind in ("list_type", "tuple_type", "iterable_type", "set_type"):
        return Problem(path, shown_name, f"expected a list, got {got}", "write a YAML list, e.g. [a, b]")
    if kind in ("string_type", "string_sub_type"):
        return Problem(path, shown_name, f"expected a string, got {got}", "write a quoted string")
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return Problem(path, shown_name, f"expected a whole number, got {got}", "write a whole number")
    if kind in ("float_type", "float_parsing"):
        if isinstance(value, int) and not isinstance(value, bool):  # more digits than a float holds
            return Problem(path, shown_name, f"{shown(value, 20)} is too large for a number", "write a smaller number")
        if isinstance(value, str) and _NUMBER_TEXT.match(value.strip()):  # quoted, or `1e3` (text to YAML 1.1)
            return Problem(path, shown_name, f"expected a number, got the text {shown(value, 40)} (YAML reads a "
                           "quoted number, or an exponent without a '.' such as 1e3, as text)",
                           "write the number unquoted, with a '.' before an exponent (1000 or 1.0e+3)")
        return Problem(path, shown_name, f"expected a number, got {got}", "write a number, e.g. 60 or 1.5")
    if kind in ("bool_type", "bool_parsing"):
        return Problem(path, shown_name, f"expected true or false, got {got}", "write true or false")
    if kind == "finite_number":
        return Problem(path, shown_name, f"{value} is not a finite number", "write a finite number, e.g. 60 or 1.5")
    if kind in ("greater_than_equal", "greater_than"):
        bound = ctx.get("ge", ctx.get("gt"))
        return Problem(path, shown_name, f"{value} is below the minimum {bound}", f"use a number >= {bound}")
    if kind in ("less_than_equal", "less_than"):
        bound = ctx.get("le", ctx.get("lt"))
        return Problem(path, shown_name, f"{value} is above the maximum {bound}", f"use a number <= {bound}")
    if kind == "string_too_long":
        limit = ctx.get("max_length")
        return Problem(path, shown_name, f"is longer than {limit} characters", f"shorten it to {limit} characters")
    if kind in ("too_long", "too_short"):
        return Problem(path, shown_name, msg, "fix the number of entries")
    if kind in ("literal_error", "enum"):
        return Problem(path, shown_name, f"{shown(value)} is not one of {ctx.get('expected', '')}",
                       f"use one of {ctx.get('expected', '')}")
    return Problem(path, shown_name, msg, "fix the value")


def _annotation_model(annotation: Any) -> type[BaseModel] | None:
    """The model inside an annotation such as `Foo | None`, `tuple[Foo, ...]` or `dict[str, Foo]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _annotation_model(arg)
        if found is not None:
            return found
    return None


def _walk(model: type[BaseModel], loc: Sequence[int | str]) -> tuple[type[BaseModel] | None, str | None]:
    """Follow a location through the model classes: the class at the end and the last field name."""
    current: type[BaseModel] | None = model
    last: str | None = None
    for part in loc:
        if current is None:
            return None, last
        if isinstance(part, int) or _is_internal(part):
            continue
        field = _field_by_alias(current, part)
        if field is None:
            # a dict key (e.g. a metric name): stay on the dict's value model
            continue
        last = part
        current = _annotation_model(current.model_fields[field].annotation)
    return current, last


def _field_by_alias(model: type[BaseModel], name: str) -> str | None:
    for field_name, info in model.model_fields.items():
        if (info.alias or field_name) == name:
            return field_name
    return None


def _allowed_keys(model: type[BaseModel] | None, loc: Sequence[int | str]) -> list[str]:
    if model is None:
        return []
    target, _ = _walk(model, loc)
    if target is None:
        return []
    return [info.alias or name for name, info in target.model_fields.items()]


def _field_fix(model: type[BaseModel], loc: Sequence[int | str]) -> str:
    parent, _ = _walk(model, loc[:-1])
    if parent is None:
        return ""
    field = _field_by_alias(parent, str(loc[-1]))
    if field is None:
        return ""
    extra = parent.model_fields[field].json_schema_extra
    return str(extra.get("fix", "")) if isinstance(extra, dict) else ""


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], data: Any, *, file: str | Path, prefix: str = "",
             context: dict[str, Any] | None = None, source: Source | None = None) -> tuple[M | None, list[Problem]]:
    """`model.model_validate(data)` with every problem worded, instead of an exception."""
    try:
        return model.model_validate(data, context=context), []
    except ValidationError as exc:
        return None, problems_from(exc, file=file, prefix=prefix, model=model, source=source)
