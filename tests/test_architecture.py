"""Structure of the `ndm` package: no import cycles, a layer contract, and modules sized by
responsibility.

Read from the source with `ast` (nothing is imported), so the checks see every import,
including the local ones inside functions that exist to keep a command light: a cycle
through a function-level import still ties two modules into one unit that cannot be
understood, tested or split apart on its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ndm"
# A module past this many lines usually holds two concepts; one that is one concept says so on a
# docstring line starting with OVER_LIMIT_MARKER (docs/architecture.md, Modules).
MAX_LINES = 700
OVER_LIMIT_MARKER = "Over 700 lines:"

# The layer contract (docs/architecture.md, Layers): what each layer may not import.
#   model       the math (q, the NELBO, networks): nothing else of ndm;
#   estimators  act on a model: never the pipeline (jobs, files, data), the metrics or the report;
#   metrics     act on samples and features: never the pipeline or the report;
#   report      reads result files: never a model execution path (loading, running or
#               evaluating a model, loading data), so it recompiles from files alone.
LAYER_FORBIDDEN: dict[str, tuple[str, ...]] = {
    "ndm.model": ("ndm.",),  # every ndm module outside ndm.model (checked with ALLOWED_WITHIN below)
    "ndm.estimators": ("ndm.pipeline", "ndm.metrics", "ndm.report", "ndm.cli", "ndm.codec"),
    "ndm.metrics": ("ndm.pipeline", "ndm.report", "ndm.cli", "ndm.codec"),
    "ndm.report": (
        "ndm.pipeline.train", "ndm.pipeline.train_state", "ndm.pipeline.train_curve", "ndm.pipeline.evaluate",
        "ndm.pipeline.data", "ndm.pipeline.datasets", "ndm.pipeline.checkpoint", "ndm.estimators", "ndm.metrics",
        "ndm.model.diffusion", "ndm.model.variants", "ndm.model.networks", "ndm.model.transforms",
        "ndm.model.schedules", "ndm.model.time_sampling", "ndm.codec", "ndm.cli",
    ),
}  # fmt: skip
ALLOWED_WITHIN = {"ndm.model": ("ndm.model",)}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> source file, for every .py file under the package."""
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def imported_modules(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The package's modules that the source at `path` (module `name`) imports, anywhere in it.

    `from a.b import c` is an import of module a.b.c when that is a module, else of a.b.
    Relative imports are resolved against the module's package.
    """
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                found.add(sub if sub in modules else source)
    return {m for m in found if m in modules and m != name}


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    modules = package_modules(root)
    return {name: imported_modules(path, name, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None when the graph is acyclic (iterative DFS)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        stack = [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_cycle_finder_finds_cycles_and_accepts_a_dag() -> None:
    dag = {"a": {"b", "c"}, "b": {"c"}, "c": set(), "d": {"a"}}
    assert find_cycle(dag) is None
    assert find_cycle({"a": {"a"}}) == ["a", "a"]
    cycle = find_cycle({"a": {"b"}, "b": {"c"}, "c": {"d", "a"}, "d": set(), "e": {"a"}})
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}


def test_graph_sees_local_and_relative_imports(tmp_path: Path) -> None:
    """A cycle closed only by an import inside a function, or by a relative import, is found."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .a import x\n    return x\n")
    (pkg / "c.py").write_text("import pkg.sub.a\nfrom pkg import sub\n")
    graph = import_graph(pkg)
    assert graph == {"pkg": set(), "pkg.sub": set(), "pkg.sub.a": {"pkg.sub.b"}, "pkg.sub.b": {"pkg.sub.a"},
                     "pkg.c": {"pkg.sub.a", "pkg.sub"}}
    assert find_cycle(graph) in (["pkg.sub.a", "pkg.sub.b", "pkg.sub.a"], ["pkg.sub.b", "pkg.sub.a", "pkg.sub.b"])


def test_ndm_has_no_import_cycles() -> None:
    graph = import_graph()
    assert "ndm.pipeline.train" in graph and "ndm.cli.main" in graph, sorted(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """'a -> b' for every import of module b by module a that the layer contract forbids."""
    found = []
    for name, deps in sorted(graph.items()):
        for layer, forbidden in LAYER_FORBIDDEN.items():
            if name != layer and not name.startswith(layer + "."):
                continue
            allowed = ALLOWED_WITHIN.get(layer, ())
            for dep in sorted(deps):
                if any(dep == a or dep.startswith(a + ".") for a in allowed):
                    continue
                if any(dep.startswith(f) for f in forbidden):  # prefixes: ndm.pipeline.datasets covers datasets_*
                    found.append(f"{name} -> {dep}")
    return found


def test_layer_contract_catches_a_constructed_violation(tmp_path: Path) -> None:
    """A real import, anywhere in a module (here inside a function), of a forbidden layer."""
    pkg = tmp_path / "ndm"
    for sub in ("model", "estimators", "metrics", "report", "pipeline"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "names.py").write_text("")
    (pkg / "pipeline" / "data.py").write_text("")
    (pkg / "pipeline" / "config.py").write_text("")
    (pkg / "model" / "specs.py").write_text("")
    (pkg / "model" / "diffusion.py").write_text("from ndm.model import specs\n")
    (pkg / "estimators" / "sampling.py").write_text("def f():\n    from ndm.pipeline.data import x\n")
    (pkg / "metrics" / "fd.py").write_text("from ndm.model import specs\n")
    (pkg / "report" / "fig.py").write_text("from ndm.pipeline import config\nfrom ndm.model import diffusion\n")
    (pkg / "model" / "bad.py").write_text("import ndm.names\n")
    graph = import_graph(pkg)
    assert layer_violations(graph) == [
        "ndm.estimators.sampling -> ndm.pipeline.data",
        "ndm.model.bad -> ndm.names",
        "ndm.report.fig -> ndm.model.diffusion",
    ]


def test_ndm_keeps_the_layer_contract() -> None:
    violations = layer_violations(import_graph())
    assert not violations, "imports that break the layer contract (docs/architecture.md, Layers): " + ", ".join(violations)


def oversized_modules(root: Path = PACKAGE) -> dict[str, int]:
    """Modules over MAX_LINES lines whose docstring does not say why (a line 'Over 400 lines: ...')."""
    over = {}
    for name, path in package_modules(root).items():
        text = path.read_text()
        n_lines = len(text.splitlines())
        if n_lines <= MAX_LINES:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if not any(line.strip().startswith(OVER_LIMIT_MARKER) for line in doc.splitlines()):
            over[name] = n_lines
    return over


def test_oversized_module_check(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    body = "x = 1\n" * MAX_LINES
    (pkg / "small.py").write_text('"""Fits."""\n' + "x = 1\n" * (MAX_LINES - 1))
    (pkg / "big.py").write_text('"""Too big."""\n' + body)
    (pkg / "justified.py").write_text(f'"""One job.\n\n{OVER_LIMIT_MARKER} one table of constants.\n"""\n' + body)
    assert oversized_modules(pkg) == {"pkg.big": MAX_LINES + 1}


def test_no_module_over_700_lines_without_a_reason() -> None:
    over = oversized_modules()
    assert not over, (
        f"modules over {MAX_LINES} lines (split them, or give the reason on a docstring line "
        f"starting with '{OVER_LIMIT_MARKER}'): " + ", ".join(f"{m} ({n})" for m, n in sorted(over.items()))
    )
