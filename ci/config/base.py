"""The one base of every settings model, and the one way a section is checked.

Every section of invoke.yaml's `ci:` is a model on `ConfigModel`: frozen, unknown keys refused,
numbers accepted where text is expected, an empty string meaning unset. `validated` turns pydantic's
errors into one line per problem naming the key as written (`ci.site.registry.address`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from ci.errors import ConfigError
from ci.validation import problems_from

WHERE = "invoke.yaml, a -f file or an INVOKE_CI_* variable"  # where settings are written


class ConfigModel(BaseModel):
    """Frozen, unknown keys refused, numbers accepted where text is expected (`port: 22` as text).

    An empty string for an optional key means unset, as `null` does: an `INVOKE_CI_*` variable
    can only say "" where invoke.yaml says null.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)

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
        raise ConfigError.from_problems(problems_from(error, file=WHERE, prefix=prefix, model=model)) from None


