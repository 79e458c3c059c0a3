"""The FROM graph: which image is built on which, cycles, ancestors. Iterative throughout.

A FROM that names another definition of the same architecture is an edge; chains of thousands
of definitions must not hit Python's recursion limit, so no function here recurses.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

from ci.definitions.dockerfile import AUTOMATIC_ARGS, FromReference, is_reference
from ci.definitions.model import Catalog, ImageSpec, definition_key
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
            for problem in _without_value(spec, ref):
                if problem not in catalog.problems.get(owner, []):  # variants share their Dockerfile's lines
                    catalog.add_problem(owner, problem)
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


def _without_value(spec: ImageSpec, ref: FromReference) -> list[Problem]:
    """A FROM whose variables leave it naming no image: the build would fail later, after others built.

    A variable no ARG before the first FROM declares is always empty (Docker applies build arguments
    only to declared ARGs); one declared without a value is a problem when the line then names
    nothing valid (`FROM ${BASE}` or `FROM base:${TAG}`, but not `FROM ${REGISTRY}debian`). A line
    of a Dockerfile that names no image reference for any other reason (`FROM Debian!`, a default of
    " ") is one too (a .def's `From:` is its kind's to check).
    """
    where = f"FROM {shown(ref.written)} (line {ref.line}" + \
        (" of the composed Dockerfile)" if spec.fragments or spec.compose else ")")
    problems = [Problem(spec.dockerfile, "FROM", f"{where}: {shown(name)} is not declared by an ARG before the first "
                        "FROM, so Docker leaves it empty" + (f" (build_args.{name} is not applied to it)"
                                                               if name in spec.build_args else ""),
                        f"declare it before the first FROM with a default (ARG {name}=<image>), and set other "
                        f"values under build_args: in container.yaml")
                for name in ref.undeclared]
    if ref.empty and not is_reference(ref.image):
        names = ", ".join(shown(name) for name in ref.empty)
        image = f"the line names {shown(ref.image)}, which is not an image" if ref.image else "the line names no image"
        variant = f" for {shown(spec.name)}" if spec.name != spec.definition else ""
        problems += [Problem(spec.dockerfile, "FROM", f"{where}: {names} has no value{variant} (no default and no "
                             f"build argument), so {image}",
                             f"give it a default before the first FROM (ARG {ref.empty[0]}=<image>) or set "
                             f"build_args.{ref.empty[0]} in container.yaml" + (" (at the top level or in this "
                                                                               "variant)" if variant else ""))]
    elif not problems and spec.kind == "docker" and not ref.stage_alias and not is_reference(ref.image) \
            and not any(name in ref.written for name in AUTOMATIC_ARGS):  # set by BuildKit only: not known here
        names = f"it names {shown(ref.image)}, which" if ref.image != ref.written else "it"
        problems.append(Problem(spec.dockerfile, "FROM", f"{where}: {names} is not an image reference, so the "
                                "build would stop at this line",
                                "name an image as [registry/]name[:tag][@digest], in lower case, or an earlier "
                                "stage (FROM ... AS name)"))
    return problems


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
