"""The import graph of the project's packages: no circles, and command modules stay apart.

Every ``import`` / ``from ... import`` anywhere in a module counts: at module level, inside
functions (lazy imports) and under ``if TYPE_CHECKING:``. A relative import is resolved against
the importing module's package, and ``from pkg import name`` points at the submodule
``pkg.name`` when there is one, else at ``pkg`` itself. Importing ``a.b`` is an edge to ``a.b``
only (not to the package ``a`` that Python runs first): a package's own ``__init__`` would
otherwise close a circle with every submodule it imports.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("estimator", "reference_model", "profiler", "tgauge")
NO_CIRCLES = PACKAGES
#: the estimator's parts, lowest first (docs/architecture.md): a part imports only the parts
#: listed before it; of rules/, the parts above it import only the registry and the tracker
#: (they look rules up by kind, never import a rule module)
LAYERS = (
    ("estimator.sym", "estimator.symbolic", "estimator.sums"),
    ("estimator.spec",),
    ("estimator.breakdown",),
    ("estimator.shapes",),
    ("estimator.compiled",),
    ("estimator.rules",),
    ("estimator.terms",),
    ("estimator.replay",),
    ("estimator.estimate",),
    ("estimator.plan",),
    ("estimator",),
)
RULE_INTERFACES = ("estimator.rules.registry", "estimator.rules.live")


def _modules(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of ``packages`` under ``root``."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names one import statement may load (before keeping the known modules)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: from the importing module's package, up level - 1
        package = module.split(".") if is_package else module.split(".")[:-1]
        kept = package[: len(package) - (node.level - 1)]
        base = ".".join([*kept, base] if base else kept)
    return [base, *(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")]


def import_graph(packages: Iterable[str] = PACKAGES, root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the modules of ``packages`` it imports, counting every import node."""
    modules = _modules(root, packages)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            targets = _imported(node, name, is_package)
            if isinstance(node, ast.ImportFrom):
                base, *names = targets  # each submodule named; the package for any other name
                hits = [t for t in names if t in modules]
                if len(hits) < len(names) or not names:
                    hits.append(base)
            else:  # import a.b.c: the deepest known module of the dotted name
                hits = []
                for dotted in targets:
                    parts = dotted.split(".")
                    known = (".".join(parts[:i]) for i in range(len(parts), 0, -1))
                    hits.append(next((m for m in known if m in modules), dotted))
            graph[name] |= {t for t in hits if t in modules and t != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_no_import_circles() -> None:
    bad = [c for c in circles(import_graph()) if any(_in(m, p) for m in c for p in NO_CIRCLES)]
    assert bad == []


def _layer(module: str) -> int:
    """The index in LAYERS of the part ``module`` belongs to (its longest matching prefix)."""
    best = max(
        ((len(p), i) for i, parts in enumerate(LAYERS) for p in parts if _in(module, p)),
        default=(0, -1),
    )
    return best[1]


def test_estimator_parts_import_only_the_parts_below() -> None:
    graph = import_graph(["estimator"])
    upward = sorted(
        f"{m} -> {t}"
        for m in graph
        for t in graph[m]
        if _layer(t) > _layer(m) or _layer(m) < 0 or _layer(t) < 0
    )
    assert upward == []
    into_rules = sorted(
        f"{m} -> {t}"
        for m in graph
        for t in graph[m]
        if _layer(m) > LAYERS.index(("estimator.rules",))
        and _in(t, "estimator.rules")
        and t not in RULE_INTERFACES
    )
    assert into_rules == []


def test_commands_do_not_import_each_other() -> None:
    graph = import_graph()
    commands = {m for m in graph if _in(m, "tgauge.commands")}
    crossing = sorted(f"{m} -> {t}" for m in commands for t in graph[m] if t in commands)
    assert crossing == []


def test_graph_counts_lazy_relative_and_type_checking_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .c import x\n")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import b\n"
    )
    (pkg / "b.py").write_text("def f():\n    from .sub import c\n    import pkg.a\n")
    (pkg / "sub" / "c.py").write_text("from .. import b\nfrom pkg import *\nx = 1\n")
    graph = import_graph(["pkg"], tmp_path)
    assert graph == {
        "pkg": set(),
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.sub.c", "pkg.a"},
        "pkg.sub": {"pkg.sub.c"},
        "pkg.sub.c": {"pkg.b", "pkg"},
    }
    assert circles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c"]]
