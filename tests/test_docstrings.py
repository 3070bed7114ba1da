"""Every public function, class and method in cervkit/ has a NumPy-style docstring.

Read from the source with :mod:`ast` (nothing is imported). Public means a name without a leading
``_``, at module level or in a public class, in a module whose own name is public. Each needs at least
a summary line; a function or method that takes parameters (other than ``self``/``cls``) needs a
``Parameters`` section, and one annotated to return something other than ``None`` a ``Returns`` (or,
for a generator, ``Yields``) section.

Exempt: properties (and their setters), dunder methods, ``@overload`` stubs.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cervkit"
REPO = PACKAGE.parent
Function = ast.FunctionDef | ast.AsyncFunctionDef


def _section(doc: str, *names: str) -> bool:
    """True when ``doc`` has a NumPy section titled one of ``names`` (the title, then a dashed line)."""
    return any(re.search(rf"^\s*{name}\s*\n\s*-{{3,}}\s*$", doc, re.MULTILINE) for name in names)


def _decorators(node: Function) -> set[str]:
    """Decorator names of ``node``: ``property``, ``staticmethod``, ``setter`` (for ``@x.setter``), …"""
    names = set()
    for dec in node.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        if isinstance(target, ast.Name):
            names.add(target.id)
        elif isinstance(target, ast.Attribute):
            names.add(target.attr)
    return names


def _parameters(node: Function, *, method: bool) -> list[str]:
    """Names of the parameters a caller passes (``self``/``cls`` of a method left out)."""
    args = node.args
    positional = [a.arg for a in (*args.posonlyargs, *args.args)]
    if method and "staticmethod" not in _decorators(node):
        positional = positional[1:]
    names = [*positional, *(a.arg for a in args.kwonlyargs)]
    names += [f"*{a.arg}" for a in (args.vararg,) if a is not None]
    names += [f"**{a.arg}" for a in (args.kwarg,) if a is not None]
    return names


def _returns_value(node: Function) -> bool:
    """True when the annotation says the function returns something other than None."""
    ann = node.returns
    if ann is None:
        return False
    text = ast.unparse(ann).strip("'\"")
    return text not in ("None", "NoReturn", "Never", "typing.NoReturn")


def _is_generator(node: Function) -> bool:
    """True when ``node`` itself (not a nested function) contains ``yield``."""
    todo: list[ast.AST] = list(node.body)
    while todo:
        item = todo.pop()
        if isinstance(item, ast.Yield | ast.YieldFrom):
            return True
        if not isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            todo.extend(ast.iter_child_nodes(item))
    return False


def _function_problems(node: Function, where: str, *, method: bool) -> list[str]:
    """What ``node``'s docstring lacks (empty when nothing), each line naming ``where``."""
    decorators = _decorators(node)
    if "overload" in decorators or decorators & {"property", "cached_property", "setter", "getter", "deleter"}:
        return []
    doc = ast.get_docstring(node)
    if not doc or not doc.strip():
        return [f"{where}: no docstring"]
    problems = []
    params = _parameters(node, method=method)
    if params and not _section(doc, "Parameters"):
        problems.append(f"{where}: takes {', '.join(params)} but has no 'Parameters' section")
    if _returns_value(node) and not _section(doc, "Returns", "Yields"):
        problems.append(f"{where}: returns {ast.unparse(node.returns)} but has no 'Returns' section")
    if _is_generator(node) and not _section(doc, "Yields", "Returns"):
        problems.append(f"{where}: is a generator but has no 'Yields' section")
    return problems


def _public(name: str) -> bool:
    return not name.startswith("_")


def _body(nodes: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements of a module or class body, looking into ``if``/``try`` blocks (e.g. version guards)."""
    for node in nodes:
        if isinstance(node, ast.If):
            yield from _body(node.body)
            yield from _body(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _body(block)
        else:
            yield node


def _class_problems(node: ast.ClassDef, rel: str, qualname: str) -> list[str]:
    """Problems of a public class and its public methods and nested classes (``rel:line qualname: ...``)."""
    doc = ast.get_docstring(node)
    problems = [] if doc and doc.strip() else [f"{rel}:{node.lineno} {qualname}: no docstring"]
    for item in _body(node.body):
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and _public(item.name):
            problems += _function_problems(item, f"{rel}:{item.lineno} {qualname}.{item.name}", method=True)
        elif isinstance(item, ast.ClassDef) and _public(item.name):
            problems += _class_problems(item, rel, f"{qualname}.{item.name}")
    return problems


def docstring_problems(path: Path, root: Path = REPO) -> list[str]:
    """Every missing docstring or section among the public names of the module at ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    rel = path.relative_to(root).as_posix()
    problems = []
    for node in _body(tree.body):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _public(node.name):
            problems += _function_problems(node, f"{rel}:{node.lineno} {node.name}", method=False)
        elif isinstance(node, ast.ClassDef) and _public(node.name):
            problems += _class_problems(node, rel, node.name)
    return problems


def _modules() -> list[Path]:
    """cervkit's modules with public names: ``__init__.py`` and every module not named ``_*``."""
    return sorted(p for p in PACKAGE.rglob("*.py")
                  if p.name == "__init__.py" or not any(part.startswith("_") for part in p.relative_to(PACKAGE).parts))


def test_the_check_finds_what_it_should(tmp_path: Path) -> None:
    source = '''
def bare(x): pass

def no_params(x, *, y=1):
    """Summary."""

def fine(x) -> int:
    """Summary.

    Parameters
    ----------
    x : int
        A number.

    Returns
    -------
    int
        Twice ``x``.
    """

def no_returns(x) -> int:
    """Summary.

    Parameters
    ----------
    x : int
        A number.
    """

def only_summary() -> None:
    """Nothing to say about parameters."""

def _private(x): pass

def gen():
    """Summary."""
    yield 1

def gen_ok(n):
    """Summary.

    Parameters
    ----------
    n : int
        How many.

    Yields
    ------
    int
        Each number.
    """
    yield from range(n)

@overload
def over(x: int) -> int: ...

if True:
    def guarded(): pass

class Thing:
    def method(self, a): pass
    def quiet(self):
        """Needs nothing more."""
    @property
    def value(self): return 1
    def __len__(self): return 0
    @staticmethod
    def helper(a):
        """Summary only."""
    def _hidden(self, a): pass
    @value.setter
    def value(self, v): pass
    class Inner:
        """Nested."""
        def run(self, n):
            """No parameters section."""

class _Private:
    def method(self, a): pass
'''
    path = tmp_path / "planted.py"
    path.write_text(source)
    problems = [p.split(" ", 1)[1] for p in docstring_problems(path, root=tmp_path)]
    assert problems == [
        "bare: no docstring",
        "no_params: takes x, y but has no 'Parameters' section",
        "no_returns: returns int but has no 'Returns' section",
        "gen: is a generator but has no 'Yields' section",
        "guarded: no docstring",
        "Thing: no docstring",
        "Thing.method: no docstring",
        "Thing.helper: takes a but has no 'Parameters' section",
        "Thing.Inner.run: takes n but has no 'Parameters' section",
    ]


def test_public_api_has_numpy_docstrings() -> None:
    modules = _modules()
    assert len(modules) > 50  # the walk found the package
    problems = [p for path in modules for p in docstring_problems(path)]
    assert not problems, f"{len(problems)} docstring problems:\n" + "\n".join(problems)
