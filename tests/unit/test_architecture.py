"""docs/architecture.md stays true: every ci/ package is in its table, every entry exists, no import
points to a higher layer, and the lowest floor and the backends stay free of what they must not know.

Run as `python -m tests.unit.test_architecture` to print the import graph (module -> ci imports).
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.paths import PROJECT_DIR

PACKAGE = PROJECT_DIR / "ci"
DOC = PROJECT_DIR / "docs" / "architecture.md"
_ROW = re.compile(r"^\| `(?P<path>ci/[^`]+)` \| (?P<layer>\d) \|", re.MULTILINE)

# Imports inside a function that point up a layer, each with why it is tolerated. The list must be
# exact: a new one fails the test, and so does one that is gone (then delete its line here).
LAZY_UPWARD: dict[tuple[str, str], str] = {}
# What the tree is leaving behind, each with the change that removes it. Same rule: exact.
PENDING: dict[tuple[str, str], str] = {}


@dataclass
class Module:
    name: str
    path: Path
    imports: set[str] = field(default_factory=set)  # ci modules imported at module level
    lazy: set[str] = field(default_factory=set)  # ci modules imported inside functions
    libraries: set[str] = field(default_factory=set)  # top-level names of other imports (any level)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PROJECT_DIR).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(name: str) -> str | None:
    """`ci.a.b` -> the module that defines it (`ci.a.b` itself, or `ci.a` when b is a name in it)."""
    while name:
        candidate = PROJECT_DIR / Path(*name.split("."))
        if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, Module]:
    """Every module of ci/ with the ci modules it imports, at module level and inside functions."""
    modules: dict[str, Module] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        module = modules[name] = Module(name, path)

        def visit(node: ast.AST, top: bool, module: Module = module, package: str = package) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
                    continue  # imports for the type checker only: never run, so neither a layer nor a cycle
                at_top = top and not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
                targets: list[str] = []
                if isinstance(child, ast.Import):
                    targets = [alias.name for alias in child.names]
                elif isinstance(child, ast.ImportFrom):
                    if child.level:
                        base = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                        source = ".".join(base + ([child.module] if child.module else []))
                    else:
                        source = child.module or ""
                    targets = [f"{source}.{alias.name}" for alias in child.names] if source.startswith("ci") \
                        else [source]
                for target in targets:
                    if target == "ci" or target.startswith("ci."):
                        resolved = _resolve(target)
                        if resolved and resolved != module.name:
                            (module.imports if at_top else module.lazy).add(resolved)
                    elif target and not target.startswith("__future__"):
                        module.libraries.add(target.split(".")[0])
                visit(child, at_top)

        visit(ast.parse(path.read_text(encoding="utf-8")), True)
        module.lazy -= module.imports
    return modules


def documented_layers() -> dict[str, int]:
    """`ci/x.py` or `ci/x/` of the doc's table -> its layer."""
    return {match["path"]: int(match["layer"]) for match in _ROW.finditer(DOC.read_text(encoding="utf-8"))}


def _entry_of(module: str, layers: dict[str, int]) -> str | None:
    parts = module.split(".")
    package = f"ci/{parts[1]}/" if len(parts) > 1 else None
    if package in layers:
        return package
    single = f"ci/{parts[1]}.py" if len(parts) == 2 else None
    return single if single in layers else None


def test_every_package_is_in_the_table_and_every_entry_exists() -> None:
    layers = documented_layers()
    assert len(layers) > 20, "the table of docs/architecture.md was not found"
    packages = {f"ci/{path.parent.name}/" for path in PACKAGE.glob("*/__init__.py")}
    assert sorted(packages - set(layers)) == [], "add a row per package to docs/architecture.md"
    missing = [entry for entry in layers if not (PROJECT_DIR / entry).exists()]
    assert missing == [], "docs/architecture.md lists what is not in the repository"


def test_no_import_points_to_a_higher_layer() -> None:
    layers = documented_layers()
    graph = import_graph()
    upward, lazy = [], set()
    for module in graph.values():
        own = _entry_of(module.name, layers)
        if own is None:
            continue
        for target, is_lazy in [*((t, False) for t in module.imports), *((t, True) for t in module.lazy)]:
            entry = _entry_of(target, layers)
            if entry is None or entry == own or layers[entry] <= layers[own] or (module.name, target) in PENDING:
                continue
            if is_lazy:
                lazy.add((module.name, target))
            else:
                upward.append(f"{module.name} (layer {layers[own]}) imports {target} (layer {layers[entry]})")
    assert upward == []
    assert lazy == set(LAZY_UPWARD)


def test_the_ground_floor_and_the_backends_stay_small() -> None:
    graph = import_graph()
    config = [module for name, module in graph.items() if name == "ci.config" or name.startswith("ci.config.")]
    for module in config:
        outside = {t for t in module.imports | module.lazy if not t.startswith("ci.config")}
        assert outside <= {"ci.errors", "ci.validation", "ci.resources", "ci.documents"}, module.name
        assert not module.libraries & {"python_on_whales", "fabric", "openstack", "paramiko", "rich", "invoke"}
    layers = documented_layers()
    front_ends = {entry for entry, layer in layers.items() if layer == 5}
    for module in graph.values():
        entry = _entry_of(module.name, layers)
        if entry in front_ends or entry is None:
            continue
        assert "invoke" not in module.libraries, f"{module.name} imports Invoke: only the front ends may"
        assert not {t for t in module.imports | module.lazy if t.startswith("ci.github")}, \
            f"{module.name} imports ci.github: a backend never knows about GitHub"


def test_no_module_mentions_the_design_notes_that_are_not_in_the_repository() -> None:
    mentions = [str(path.relative_to(PROJECT_DIR)) for path in sorted(PACKAGE.rglob("*.py"))
                if "DESIGN.md" in path.read_text(encoding="utf-8")]
    assert mentions == []


def test_package_docstrings_point_to_the_architecture() -> None:
    silent = [str(init.relative_to(PROJECT_DIR)) for init in sorted(PACKAGE.glob("*/__init__.py"))
              if "docs/architecture.md" not in (ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or "")]
    assert silent == [], "say in the package's docstring where it sits: docs/architecture.md"


def _cycles(graph: dict[str, Module]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative), lazy edges included."""
    edges = {name: sorted((m.imports | m.lazy) & graph.keys()) for name, m in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, position = work.pop()
            if position == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            if position < len(edges[node]):
                work.append((node, position + 1))
                target = edges[node][position]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            for target in edges[node]:
                if target in on_stack:
                    low[node] = min(low[node], low[target])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle_counting_lazy_imports() -> None:
    graph = import_graph()
    for module in graph.values():  # a package's own submodules importing their package are not a cycle here
        module.lazy.discard(module.name)
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": Module("a", Path("a"), {"b"}), "b": Module("b", Path("b"), set(), {"c"}),
             "c": Module("c", Path("c"), {"a"}), "d": Module("d", Path("d"), {"a"})}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_the_tree_keeps_its_shape() -> None:
    top = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(top) <= 10, f"at most ten modules directly under ci/ (a concern gets a package): {top}"
    long = {str(path.relative_to(PROJECT_DIR)): n for path in PACKAGE.rglob("*.py")
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > 700}
    assert long == {}, "no module over 700 lines: split it by concern"


def _mentions(text: str) -> list[str]:
    return [str(path.relative_to(PROJECT_DIR)) for path in sorted(PACKAGE.rglob("*.py"))
            if text in path.read_text(encoding="utf-8")]


def test_signals_and_github_stay_in_their_place() -> None:
    assert _mentions("signal.signal(") == ["ci/shutdown.py"], "signal handling lives in ci.shutdown only"
    assert all(path.startswith("ci/github/") for path in _mentions("GITHUB_STEP_SUMMARY")), \
        "only the GitHub front end writes the step summary (a listener of the run)"


def test_definitions_never_import_a_stand_in() -> None:
    graph = import_graph()
    found = {(name, target) for name, module in graph.items() if name.startswith("ci.definitions")
             for target in module.imports | module.lazy if target.startswith("ci.local")}
    assert found == set(PENDING), "stand-ins are chosen by configuration, never imported by the definitions"


def main() -> None:
    for module in import_graph().values():
        line = f"{module.name} -> {', '.join(sorted(t.removeprefix('ci.') for t in module.imports)) or '-'}"
        if module.lazy:
            line += f"  (lazy: {', '.join(sorted(t.removeprefix('ci.') for t in module.lazy))})"
        sys.stdout.write(line + "\n")


if __name__ == "__main__":
    main()
