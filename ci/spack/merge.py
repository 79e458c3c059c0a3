"""Merging a user's Spack environment into the site template.

Mappings merge key by key, lists append (template entries first), equal scalars are kept, and
two different scalars at one key are a conflict: the user must not silently lose a site setting
(Spacktainers raises an unexplained exception there; we name the key and both values).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ci.errors import CIError


class MergeConflict(CIError):
    """Two layers set one key to different values; `path` is the key path, e.g. `concretizer.unify`."""

    def __init__(self, path: Sequence[str], base: Any, overlay: Any, base_name: str, overlay_name: str):
        self.path = ".".join(path) or "(top level)"
        self.base = base
        self.overlay = overlay
        self.base_name = base_name
        self.overlay_name = overlay_name
        super().__init__(f"{self.path}: {overlay_name} sets {_show(overlay)} but {base_name} sets {_show(base)}")


def _show(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, list | tuple):
        return "list"
    return "scalar"


def merge(base: Any, overlay: Any, *, base_name: str = "the site template", overlay_name: str = "the definition",
          path: Sequence[str] = ()) -> Any:
    """A new value: `overlay` merged into `base` (neither is modified).

    Iterative over a work list, so a deeply nested hostile document cannot hit the recursion limit.
    """
    result: dict[str, Any] = {}
    root_holder = {"": result}
    todo: list[tuple[dict[str, Any], str, Any, Any, tuple[str, ...]]] = [(root_holder, "", base, overlay, tuple(path))]
    while todo:
        target, key, left, right, where = todo.pop()
        if left is None and right is not None:
            target[key] = _copy(right)
            continue
        if right is None:
            target[key] = _copy(left)
            continue
        kinds = (_kind(left), _kind(right))
        if kinds == ("mapping", "mapping"):
            merged: dict[str, Any] = {}
            target[key] = merged
            for name in [*left.keys(), *(k for k in right if k not in left)]:
                merged[str(name)] = None  # the slot keeps the template's key order; filled below
                todo.append((merged, str(name), left.get(name), right.get(name), (*where, str(name))))
        elif kinds == ("list", "list"):
            target[key] = [_copy(item) for item in left] + [_copy(item) for item in right if item not in left]
        elif kinds == ("scalar", "scalar") and left == right and type(left) is type(right):
            target[key] = left
        else:
            raise MergeConflict(where, left, right, base_name, overlay_name)
    return root_holder[""]


def _copy(value: Any) -> Any:
    """A deep copy of plain YAML data, without recursion."""
    if not isinstance(value, Mapping | list | tuple):
        return value
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any]] = [(root, 0, value)]
    while stack:
        holder, index, item = stack.pop()
        if isinstance(item, Mapping):
            copy: Any = {}
            holder[index] = copy
            for name, child in item.items():
                stack.append((copy, name, child))
        elif isinstance(item, list | tuple):
            copy = [None] * len(item)
            holder[index] = copy
            for position, child in enumerate(item):
                stack.append((copy, position, child))
        else:
            holder[index] = item
    return root[0]
