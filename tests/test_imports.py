"""The package's import graph, read from the source: no cycle (imports inside functions counted), one caller of
``train_loop``.

How an import statement becomes edges of the graph (module -> module it makes Python execute):

* Every ``import`` / ``from ... import`` statement anywhere in a file counts: at module level, inside functions and
  methods, inside ``if TYPE_CHECKING:`` blocks and ``try`` blocks. An import hidden in a function is still a
  dependency, it only moves the failure from import time to call time.
* ``from bertscope.x import y`` is an edge to ``bertscope.x.y`` when ``y`` is a submodule of ``bertscope.x``, else to
  ``bertscope.x``; ``import bertscope.x.y`` is an edge to ``bertscope.x.y``; relative imports are resolved against
  the importing module's package first.
* Importing a module of a sub-package (``bertscope.runs.store``) also runs that sub-package's ``__init__``, so it is
  an edge to ``bertscope.sweep`` too -- unless the importer lives inside that sub-package (its ``__init__`` has
  then already started). The root package is the exception: ``bertscope/__init__.py`` runs before any submodule and
  imports ``api`` only so that ``import bertscope; bertscope.api`` works; it is not a middle floor of the house.
* ``from bertscope import NAME`` where ``NAME`` is a constant that ``bertscope/__init__.py`` assigns before its first
  import of a bertscope module (today ``__version__``) is treated like a leaf module ``bertscope/_version.py``: the
  value exists while ``__init__`` is still importing ``api``, and it imports nothing. Any other name taken from the
  root package is an edge to ``bertscope`` (and so, through ``__init__``, to ``api``). A second, xfail test applies
  the stricter reading (every name taken from the root is an edge to it), so the lead sees that cycle too.
* Dynamic imports (``importlib.import_module`` of spec plugins) name no module of the package and are not edges.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "bertscope"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE


@dataclass(frozen=True)
class Edge:
    target: str
    where: str  # "api.py:17" or "api.py:17 (in a function)"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(root: Path) -> dict[str, Path]:
    """Every module of the package under ``root`` (a folder with ``__init__.py``) by dotted name."""
    return {_module_name(p, root): p for p in sorted(root.rglob("*.py")) if "__pycache__" not in p.parts}


def _is_package(name: str, modules: Mapping[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _root_constants(root: Path) -> frozenset[str]:
    """Names the root ``__init__`` assigns before it first imports a module of its own package."""
    names: set[str] = set()
    for node in ast.parse((root / "__init__.py").read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] == root.name):
            break
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == root.name for a in node.names):
            break
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    return frozenset(names)


def _imports(tree: ast.AST) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement with whether it sits inside a function."""

    def walk(node: ast.AST, in_function: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, in_function
            yield from walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                      ast.Lambda)))

    yield from walk(tree, False)


def import_graph(root: Path, *, root_constants_are_leaves: bool = True) -> dict[str, list[Edge]]:
    """module -> the modules of the same package its import statements execute (rules: the module docstring).

    ``root_constants_are_leaves=False``: the stricter reading, where ``from bertscope import __version__`` is an
    edge to the root package like any other name taken from it."""
    modules = package_modules(root)
    top = root.name
    constants = _root_constants(root) if root_constants_are_leaves else frozenset()
    graph: dict[str, list[Edge]] = {name: [] for name in modules}

    for name, path in modules.items():
        own_package = name if _is_package(name, modules) else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, in_function in _imports(tree):
            where = f"{path.relative_to(root).as_posix()}:{node.lineno}" + (" (in a function)" if in_function else "")
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = own_package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    full = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    full = node.module or ""
                for alias in node.names:
                    if f"{full}.{alias.name}" in modules:
                        targets.append(f"{full}.{alias.name}")
                    elif full == top and alias.name in constants:
                        continue  # a leaf constant of the root package (see the module docstring)
                    else:
                        targets.append(full)
            for target in targets:
                if target != top and not target.startswith(top + "."):
                    continue  # not ours
                if target not in modules:
                    raise AssertionError(f"{where}: imports {target}, which is not a module of {top}")
                chain = target.split(".")
                for depth in range(2, len(chain)):  # enclosing sub-packages run their __init__ first
                    parent = ".".join(chain[:depth])
                    if not (name == parent or name.startswith(parent + ".")):
                        graph[name].append(Edge(parent, where))
                if target != name:
                    graph[name].append(Edge(target, where))
    return graph


def find_cycles(graph: Mapping[str, list[Edge]]) -> list[list[tuple[str, str]]]:
    """One shortest cycle per strongly connected component: [(module, where its import of the next one is)]."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan; the graph is small, recursion depth is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for edge in graph[v]:
            w = edge.target
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)

    cycles = []
    for component in components:
        start = min(component)
        # Breadth-first inside the component: the shortest way from start back to start.
        previous: dict[str, tuple[str, str]] = {}
        frontier = [start]
        found = None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for edge in graph[v]:
                    if edge.target not in component:
                        continue
                    if edge.target == start:
                        found = (v, edge.where)
                        break
                    if edge.target not in previous:
                        previous[edge.target] = (v, edge.where)
                        nxt.append(edge.target)
                if found:
                    break
            frontier = nxt
        assert found is not None
        path = [found]
        while path[-1][0] != start:
            path.append(previous[path[-1][0]])
        cycles.append(list(reversed(path)))
    return cycles


def describe(cycle: list[tuple[str, str]]) -> str:
    return " -> ".join(f"{m} [{where}]" for m, where in cycle) + f" -> {cycle[0][0]}"


# --- the checker itself, on small packages written for the purpose ------------------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_checker_finds_a_cycle_hidden_inside_a_function(tmp_path) -> None:
    root = _package(tmp_path, {
        "__init__.py": "",
        "a.py": "from pkg import b\n",
        "b.py": "def f():\n    from pkg.sub import c\n",
        "sub/__init__.py": "",
        "sub/c.py": "from ..a import thing\n",
    })
    cycles = find_cycles(import_graph(root))
    assert len(cycles) == 1
    assert sorted(m for m, _ in cycles[0]) == ["pkg.a", "pkg.b", "pkg.sub.c"]
    assert "(in a function)" in describe(cycles[0])


def test_checker_counts_a_sub_package_init_and_skips_root_constants(tmp_path) -> None:
    root = _package(tmp_path, {
        "__init__.py": "__version__ = '1'\nfrom pkg import api\n",
        "api.py": "from pkg.sweep.store import x\n",
        "cli.py": "from pkg import __version__\nfrom pkg.api import y\n",
        "sweep/__init__.py": "from pkg.sweep.driver import run\n",
        "sweep/driver.py": "from . import store\nfrom pkg import __version__\n",
        "sweep/store.py": "import pkg.results\n",
        "results.py": "",
    })
    graph = import_graph(root)
    assert {e.target for e in graph["pkg.api"]} == {"pkg.sweep", "pkg.sweep.store"}
    assert {e.target for e in graph["pkg.sweep.driver"]} == {"pkg.sweep.store"}
    assert {e.target for e in graph["pkg.cli"]} == {"pkg.api"}
    assert find_cycles(graph) == []
    strict = find_cycles(import_graph(root, root_constants_are_leaves=False))
    assert [sorted(m for m, _ in c) for c in strict] == [["pkg", "pkg.api", "pkg.sweep", "pkg.sweep.driver"]]
    (root / "sweep" / "driver.py").write_text("from pkg.api import y\n", encoding="utf-8")
    assert [sorted(m for m, _ in c) for c in find_cycles(import_graph(root))] == [
        ["pkg.api", "pkg.sweep", "pkg.sweep.driver"]]


def test_the_real_graph_is_read() -> None:
    graph = import_graph(SRC)
    assert {"bertscope.api", "bertscope.cli", "bertscope.core.config", "bertscope.core.registry"} <= set(graph)
    assert "bertscope.api" in {e.target for e in graph["bertscope.cli"]}
    assert all(e.target.startswith("bertscope") for edges in graph.values() for e in edges)


# --- the package -----------------------------------------------------------------------------------------------------


def test_the_package_has_no_import_cycle() -> None:
    cycles = find_cycles(import_graph(SRC))
    assert not cycles, "import cycles:\n" + "\n".join(describe(c) for c in cycles)


def test_no_cycle_even_through_the_root_package() -> None:
    cycles = find_cycles(import_graph(SRC, root_constants_are_leaves=False))
    assert not cycles, "import cycles:\n" + "\n".join(describe(c) for c in cycles)


def _modules_calling(root: Path, function: str) -> dict[str, list[int]]:
    """module -> lines where ``function`` (or an alias it was imported under) is called."""
    calls: dict[str, list[int]] = {}
    for name, path in package_modules(root).items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = {function} | {a.asname for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                                for a in node.names if a.name == function and a.asname}
        lines = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Call) and (
            (isinstance(node.func, ast.Name) and node.func.id in aliases)
            or (isinstance(node.func, ast.Attribute) and node.func.attr == function))]
        if lines:
            calls[name] = sorted(lines)
    return calls


def test_the_call_finder_sees_aliases_and_attributes(tmp_path) -> None:
    root = _package(tmp_path, {
        "__init__.py": "",
        "a.py": "from pkg.train import train_loop as tl\ndef f():\n    return tl()\n",
        "b.py": "from pkg import train\n\ntrain.train_loop(x=1)\n",
        "c.py": "'''train_loop( in a docstring'''\nfrom pkg.train import train_loop\n",
    })
    assert _modules_calling(root, "train_loop") == {"pkg.a": [3], "pkg.b": [3]}


def test_train_loop_is_called_from_one_module() -> None:
    callers = _modules_calling(SRC, "train_loop")
    assert len(callers) == 1, f"train_loop is called from {callers}"


# --- the folders: imports run one way ---------------------------------------------------------------------------------

#: The floors of the house, bottom first (docs/DEVELOPING.md, "The house"). A module may import from its own folder
#: and from any folder on a lower floor; folders on one floor (``surgery`` and ``finetune``) never import each other.
#: The front door (``api``, ``cli``, ``__main__`` and the root package) is the top floor.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("core", "_version"),
    ("models",),
    ("data",),
    ("runs",),
    ("lens",),
    ("surgery", "finetune"),
    ("studies",),
    ("sweep",),
    ("report",),
    ("replicate",),
    ("api", "api_types", "cli", "__main__", ""),
)


def _floor_of(module: str, floors: tuple[tuple[str, ...], ...] = FLOORS) -> tuple[int, str]:
    """(floor, folder) of a dotted module name: ``bertscope.lens.metrics`` -> (3, "lens")."""
    parts = module.split(".")[1:]
    folder = parts[0] if parts else ""
    for number, folders in enumerate(floors):
        if folder in folders:
            return number, folder
    raise AssertionError(f"{module}: its folder {folder!r} is on no floor of the house (tests/test_imports.FLOORS)")


def upward_imports(graph: Mapping[str, list[Edge]],
                   floors: tuple[tuple[str, ...], ...] = FLOORS) -> list[str]:
    """Every import that points up or sideways between folders: "module -> target (where)"."""
    wrong = []
    for module, edges in sorted(graph.items()):
        floor, folder = _floor_of(module, floors)
        for edge in edges:
            target_floor, target_folder = _floor_of(edge.target, floors)
            if target_folder == folder or target_floor < floor or (target_floor == floor == len(floors) - 1):
                continue
            wrong.append(f"{module} -> {edge.target} ({edge.where})")
    return wrong


def test_direction_checker_flags_up_and_sideways(tmp_path) -> None:
    root = _package(tmp_path, {
        "__init__.py": "",
        "core/__init__.py": "",
        "core/a.py": "def f():\n    from pkg.lens import b\n",  # up, hidden in a function
        "lens/__init__.py": "",
        "lens/b.py": "from pkg.core import a\n",  # down: fine
        "surgery/__init__.py": "",
        "surgery/c.py": "from pkg.finetune import d\n",  # sideways on one floor
        "finetune/__init__.py": "",
        "finetune/d.py": "from pkg.lens.b import x\n",
    })
    floors = (("core",), ("lens",), ("surgery", "finetune"), ("",))
    wrong = upward_imports(import_graph(root), floors)
    assert any(w.startswith("pkg.core.a -> pkg.lens") and "(in a function)" in w for w in wrong)
    assert any(w.startswith("pkg.surgery.c -> pkg.finetune") for w in wrong)
    assert not any(w.startswith(("pkg.lens.b", "pkg.finetune.d")) for w in wrong)


def test_every_folder_imports_only_downward() -> None:
    wrong = upward_imports(import_graph(SRC))
    assert not wrong, "imports against the direction of the house:\n" + "\n".join(wrong)


def test_every_module_lives_in_a_folder() -> None:
    """The root package holds the front door alone; every other module is in the folder of its concept."""
    front = set(FLOORS[-1]) | {"_version"}
    loose = [p.name for p in SRC.glob("*.py") if p.stem not in front | {"__init__"}]
    assert not loose, f"modules outside a concept folder: {loose}"
