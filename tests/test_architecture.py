"""The package's shape: folders by stage, no import circles, inference free of training, a light top level.

The import graph is read from the source (every ``import`` and ``from … import`` anywhere in a module:
function-level and ``TYPE_CHECKING`` imports count too), so a circle hidden inside a function fails here
before it fails at run time.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cervkit"
STAGES = ("core", "io", "data", "labels", "transforms", "models", "training", "inference", "runs", "evaluation",
          "measurements", "export", "editor", "cli")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["cervkit", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import of a cervkit module in ``path``."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "cervkit":
                    yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] == "cervkit":
                yield module, [a.name for a in node.names], node.lineno


def import_graph(modules: dict[str, Path] = MODULES) -> dict[str, set[str]]:
    """Module → the cervkit modules it imports (a name that is a submodule counts as that submodule)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for module, names, _ in _imports(name, path):
            subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in modules]
            deps.update(subs or [module])
            if subs and len(subs) < len(names):
                deps.add(module)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), i.e. the import circles."""
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
    return found


def test_the_walk_finds_a_planted_circle_and_inference_to_training(tmp_path: Path) -> None:
    """The checks below would fail on a bad tree: a two-module circle through a function-level import."""
    pkg = tmp_path / "cervkit"
    (pkg / "inference").mkdir(parents=True)
    (pkg / "training").mkdir()
    for folder in (pkg, pkg / "inference", pkg / "training"):
        (folder / "__init__.py").write_text("")
    (pkg / "inference" / "a.py").write_text("def f():\n    from cervkit.training import b\n")
    (pkg / "training" / "b.py").write_text("from cervkit.inference.a import f\n")
    global PACKAGE
    saved, PACKAGE = PACKAGE, pkg
    try:
        graph = import_graph(_modules())
    finally:
        PACKAGE = saved
    assert circles(graph) == [["cervkit.inference.a", "cervkit.training.b"]]
    assert "cervkit.training.b" in graph["cervkit.inference.a"]


def test_no_import_circles() -> None:
    assert circles(import_graph()) == []


def test_inference_never_imports_training() -> None:
    graph = import_graph()
    bad = {m: sorted(d for d in deps if d.startswith("cervkit.training"))
           for m, deps in graph.items() if m.startswith("cervkit.inference")}
    assert {m: d for m, d in bad.items() if d} == {}


def test_nothing_below_inference_reaches_training() -> None:
    """Transitively too: loading a model never pulls in a trainer."""
    graph = import_graph()
    seen, todo = set(), [m for m in graph if m.startswith("cervkit.inference")]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph[m])
    assert sorted(m for m in seen if m.startswith("cervkit.training")) == []


def test_no_module_level_getattr_and_no_private_names_across_modules() -> None:
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        assert not any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in tree.body), name
        for module, names, line in _imports(name, path):
            private = [n for n in names if n.startswith("_") and n != "__version__"]
            assert module == name or not private, f"{path}:{line} imports {private} from {module}"


def test_layout_by_stage() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 12, top
    folders = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert set(STAGES) <= set(folders), set(STAGES) - set(folders)
    for folder in folders:
        init = PACKAGE / folder / "__init__.py"
        assert ast.get_docstring(ast.parse(init.read_text())), f"{init} says nothing about what it owns"


def test_import_cervkit_is_light_and_lists_its_api() -> None:
    code = ("import sys, cervkit; heavy = [m for m in ('torch', 'ultralytics', 'anywidget', 'matplotlib') "
            "if m in sys.modules]; print(heavy); print(sorted(dir(cervkit)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent).stdout.splitlines()
    assert out[0] == "[]"
    listed = ast.literal_eval(out[1])
    for name in ("read_image", "read_mask", "load_model", "segment", "measure", "MaskEditor", "quick_mode",
                 *STAGES):
        assert name in listed, name


@pytest.mark.parametrize("stage", STAGES)
def test_each_subpackage_is_an_attribute(stage: str) -> None:
    import cervkit

    assert getattr(cervkit, stage).__name__ == f"cervkit.{stage}"
