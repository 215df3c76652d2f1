"""Every setting of every stage, declared once.

Each module holds the pydantic models of one stage (or of a part several stages share), with
nothing heavier than pydantic imported, so the command line derives its options from them at
start-up (`frugal.cli_options`) and `frugal --help` stays fast. The stage modules import their
config from here.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

# The model every stage uses unless told otherwise: small enough for a 2-core CPU.
DEFAULT_MODEL = "smollm2-135m-instruct"


def default_of(info: FieldInfo) -> Any:
    """A field's default value (its factory's product), None when it has none."""
    if info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    return None if info.default is PydanticUndefined else info.default


def is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def without_none(annotation: Any) -> Any:
    """`X` for `X | None`; any other type as it is."""
    if is_union(annotation):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def model_in(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (itself, or inside `X | None`)."""
    inner = without_none(annotation)
    return inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None


def with_section_defaults(model: type[BaseModel], data: Any) -> Any:
    """`data` for `model`, where a section given in part keeps its field's own defaults.

    A field such as the local teacher's `budget` defaults to a customised instance (256 thinking
    tokens, not `BudgetConfig`'s 1,024); a recipe or an option that sets one of its values must
    not reset the others to the class defaults, so those customised values are filled in under
    what was given.
    """
    if not isinstance(data, dict):
        return data
    filled = dict(data)
    for name, info in model.model_fields.items():
        nested, given = model_in(info.annotation), filled.get(name)
        if nested is None or not isinstance(given, dict):
            continue
        default = default_of(info)
        base = default.model_dump(exclude_defaults=True) if isinstance(default, BaseModel) else {}
        filled[name] = with_section_defaults(nested, _merge(base, given))
    return filled


def _merge(base: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in given.items():
        old = merged.get(key)
        merged[key] = _merge(old, value) if isinstance(old, dict) and isinstance(value, dict) \
            else value
    return merged
