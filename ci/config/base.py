"""The one base of every settings model, and the one way a section is checked.

Every section of invoke.yaml's `ci:` is a model on `ConfigModel`: frozen, unknown keys refused,
text fields take text only (`address: 5000` or `account: 0755` is refused with the fix, quote it,
never turned into "5000" or "493"), an empty string meaning unset. `validated` turns pydantic's
errors into one line per problem naming the key as written (`ci.site.registry.address`), and,
while `load_settings` reads the files Invoke read, the file and line the value was written on.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from ci.documents import DocumentRefused, Source, load_yaml
from ci.errors import ConfigError, Problem
from ci.validation import changed_problems, problems_from

WHERE = "invoke.yaml, a -f file or an INVOKE_CI_* variable"  # where settings are written

# Where the settings being loaded were written (`written_in`); the section readers load_settings calls find it here.
_SOURCE: ContextVar[Source | None] = ContextVar("settings_source", default=None)


class ConfigModel(BaseModel):
    """Frozen, unknown keys refused, text fields taking text only.

    An empty string for an optional key means unset, as `null` does: an `INVOKE_CI_*` variable
    can only say "" where invoke.yaml says null.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)  # .inf seconds never come

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any, info: ValidationInfo) -> Any:
        if value == "" and info.field_name is not None \
                and type(None) in get_args(cls.model_fields[info.field_name].annotation):
            return None
        return value


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], data: Any, prefix: str, context: Mapping[str, Any] | None = None) -> M:
    """`model` from `data`, or one ConfigError with one line per problem (key, what, fix)."""
    try:
        return model.model_validate(data, context=dict(context or {}))
    except ValidationError as error:
        raise ConfigError.from_problems(problems_from(error, file=WHERE, prefix=prefix, model=model,
                                                      source=_SOURCE.get())) from None


@contextmanager
def written_in(files: Sequence[Path], profile: str) -> Iterator[None]:
    """Read the configuration files strictly while the settings are checked.

    Invoke reads invoke.yaml and `-f` files with PyYAML as they come: a key given twice keeps its
    last value, `version: 2.10` is 2.1. Each file is read again here (`ci.documents`): a duplicate
    key or a YAML 1.1-only number is a ConfigError naming the file and line, and the values a text
    field refuses are shown as written, with their file and line. `files` go from the lowest
    precedence to the highest; a value under `ci.profiles.<profile>` counts for the `ci` key it overrides.
    """
    base: dict[tuple[int | str, ...], Any] = {}
    chosen: dict[tuple[int | str, ...], Any] = {}
    for file in files:
        try:
            _, source = load_yaml(file.read_text(encoding="utf-8"), name=str(file))
        except DocumentRefused as exc:
            raise ConfigError(f"{file}: {exc.message}; {exc.fix}", [Problem(file, "", exc.message, exc.fix)]) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file} cannot be read ({exc})") from None
        for path, scalar in source.scalars.items():
            if path[:1] != ("ci",):
                continue
            located = type(scalar)(scalar.line, scalar.text, scalar.value, str(file))
            if path[1:3] == ("profiles", profile):
                chosen[("ci", *path[3:])] = located
            elif path[1:2] != ("profiles",):
                base[path] = located
    merged = Source(WHERE, {**base, **chosen})
    problems = changed_problems(merged, file=WHERE, under=("ci", "spack", "template"), passed_to="spack.yaml")
    if problems:
        raise ConfigError.from_problems(problems)
    token = _SOURCE.set(merged)
    try:
        yield
    finally:
        _SOURCE.reset(token)

