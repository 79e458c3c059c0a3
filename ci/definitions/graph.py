"""The FROM graph: which image is built on which, cycles, ancestors. Iterative throughout.

A FROM that names another definition of the same architecture is an edge; chains of thousands
of definitions must not hit Python's recursion limit, so no function here recurses.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

from ci.definitions.model import Catalog, definition_key
from ci.errors import Problem
from ci.validation import shown


def resolve_parents(catalog: Catalog) -> None:
    """Turn FROM references that name another definition into edges; report bad edges and cycles."""
    by_definition: dict[tuple[str, str], list[str]] = {}
    for spec in catalog.images.values():
        by_definition.setdefault((spec.arch, spec.definition), []).append(spec.name)
    for key, spec in catalog.images.items():
        parents: list[str] = []
        owner = definition_key(spec)
        for ref in spec.from_references:
            if ref.stage_alias:
                continue
            candidate = f"{spec.arch}/{ref.repository}"
            if candidate == key:
                catalog.add_problem(owner, Problem(spec.dockerfile, "FROM",
                                                   f"{shown(spec.name)} is built FROM itself",
                                                   "name a different base image"))
            elif candidate in catalog.images:
                if candidate not in parents:
                    parents.append(candidate)
            elif (spec.arch, ref.repository) in by_definition:
                names = by_definition[(spec.arch, ref.repository)]
                catalog.add_problem(owner, Problem(
                    spec.dockerfile, "FROM", f"{shown(ref.repository)} has variants and names no single image",
                    f"name one of: {', '.join(names)}"))
            elif candidate in catalog.problems:
                catalog.add_problem(owner, Problem(
                    spec.dockerfile, "FROM", f"its parent {shown(ref.repository)} is invalid",
                    "fix the parent definition first (its problems are listed with it)"))
        catalog.parents[key] = tuple(parents)
    for cycle in find_cycles(catalog.parents):
        chain = " -> ".join(member.split("/", 1)[1] for member in cycle)
        for member in cycle[:-1]:
            spec = catalog.images[member]
            catalog.add_problem(definition_key(spec), Problem(
                spec.dockerfile, "FROM", f"FROM cycle: {chain}",
                "break the cycle by building one of them FROM an outside base"))


def find_cycles(parents: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Each cycle met by a depth-first walk, as [a, b, ..., a]; an explicit stack instead of recursion."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []
    for start in sorted(parents):
        if state.get(start):
            continue
        path: list[str] = [start]
        state[start] = 1
        iterators: list[Iterator[str]] = [iter(parents.get(start, ()))]
        while iterators:
            parent = next(iterators[-1], None)
            if parent is None:
                iterators.pop()
                state[path.pop()] = 2
                continue
            mark = state.get(parent, 0)
            if mark == 1:
                cycles.append([*path[path.index(parent):], parent])
            elif mark == 0:
                state[parent] = 1
                path.append(parent)
                iterators.append(iter(parents.get(parent, ())))
    return cycles


def ancestors(catalog: Catalog, keys: Iterable[str]) -> set[str]:
    """Every image the given ones are built on, transitively (not including themselves)."""
    seen: set[str] = set()
    todo = [p for key in keys for p in catalog.parents.get(key, ())]
    while todo:
        key = todo.pop()
        if key not in seen:
            seen.add(key)
            todo.extend(catalog.parents.get(key, ()))
    return seen
