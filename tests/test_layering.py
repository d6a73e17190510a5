"""The package's layers, checked on its source (an ``ast`` walk, nothing is imported).

DESIGN.md draws the layers; this test is their definition. Every module of
``kmexplain_utils`` belongs to one layer, and a layer may import only the
layers listed for it in :data:`MAY_IMPORT`::

    evaluation/   the evaluation and its CLI          -> chapters, data, method, kmeans, base
    chapters/     the book's machinery                -> data, method, kmeans, base
    data/         the book's data sets                -> base
    method        the modules at the top              -> kmeans, base
    kmeans/       the k-means engine                  -> base
    base          _validation, _torch, _sklearn, _figures, config -> base

Three rules, each shown to fail on a synthetic package at the end of the file:

1. no import cycle between modules; an import inside a function counts (it
   only hides a cycle, it does not remove it);
2. no import against the layers (the method imports nothing of the
   evaluation, the chapters or the data sets; the data sets nothing of the
   evaluation or the chapters; ...);
3. no module takes another module's private names (``from .x import _y`` or
   ``x._y``); private helper *modules* such as ``_validation`` are there to be
   imported, their public names are fair game.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kmexplain_utils"

#: modules at the top of the package that are the method (a new one must be added here, deliberately)
METHOD = {
    "architectures", "attribution", "classifier", "concepts", "explainer", "features", "plotting",
    "prototypes", "receptive_field", "resample", "scores", "sem",
}
#: modules at the top of the package that everything may import: private helpers and the settings
BASE = {"_validation", "_torch", "_sklearn", "_figures", "config"}
#: the folders, each its own layer
FOLDERS = {"kmeans", "data", "chapters", "evaluation"}

#: the package's ``__init__`` ("root": ``__version__`` and the lazy API, which imports nothing
#: statically) may be imported by every layer
MAY_IMPORT: dict[str, set[str]] = {
    "base": {"root", "base"},
    "kmeans": {"root", "base", "kmeans"},
    "method": {"root", "base", "kmeans", "method"},
    "data": {"root", "base", "data"},
    "chapters": {"root", "base", "kmeans", "method", "data", "chapters"},
    "evaluation": {"root", "base", "kmeans", "method", "data", "chapters", "evaluation"},
    "root": {"root", "base", "kmeans", "method", "data", "chapters", "evaluation"},
}


@dataclass(frozen=True)
class Import:
    """One import statement of the package's own modules."""

    source: str  # importing module, dotted
    target: str  # imported module, dotted
    names: tuple[str, ...]  # names taken from it (empty for ``import x``)
    line: int
    local: bool  # inside a function


def modules(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module under ``root`` (a package folder)."""
    out = {}
    for f in sorted(root.rglob("*.py")):
        parts = f.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _resolve(mods: dict[str, Path], name: str) -> str | None:
    """The module (or package) ``name`` refers to, or ``None`` when it is not one of ours."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def imports(root: Path) -> Iterator[Import]:
    """Every import of a module of the package by a module of the package."""
    mods = modules(root)
    top = root.name
    for mod, path in mods.items():
        pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        tree = ast.parse(path.read_text(), filename=str(path))

        def walk(node: ast.AST, local: bool) -> Iterator[Import]:
            for child in ast.iter_child_nodes(node):
                inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                if isinstance(child, ast.ImportFrom):
                    if child.level:
                        base = pkg.split(".")[: len(pkg.split(".")) - (child.level - 1)]
                        dotted = ".".join(base + ([child.module] if child.module else []))
                    else:
                        dotted = child.module or ""
                    if dotted == top or dotted.startswith(top + "."):
                        names = tuple(a.name for a in child.names)
                        submods = [n for n in names if f"{dotted}.{n}" in mods]
                        for n in submods:  # ``from . import x``: x is a module
                            yield Import(mod, f"{dotted}.{n}", (), child.lineno, local)
                        rest = tuple(n for n in names if n not in submods)
                        if rest and (target := _resolve(mods, dotted)):
                            yield Import(mod, target, rest, child.lineno, local)
                elif isinstance(child, ast.Import):
                    for a in child.names:
                        if (a.name == top or a.name.startswith(top + ".")) and (target := _resolve(mods, a.name)):
                            yield Import(mod, target, (), child.lineno, local)
                yield from walk(child, inner)

        yield from walk(tree, False)


def layer_of(module: str, top: str = "kmexplain_utils") -> str:
    """The layer of a dotted module name (``ValueError`` for a top-level module no list names)."""
    parts = module.split(".")
    if parts == [top]:
        return "root"
    if parts[1] in FOLDERS:
        return parts[1]
    if parts[1] in BASE:
        return "base"
    if parts[1] in METHOD:
        return "method"
    raise ValueError(
        f"{module} is at the top of the package but is neither a method module nor a base module: "
        "add it to METHOD or BASE in tests/test_layering.py (and to DESIGN.md), or move it into a folder"
    )


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of a graph (one per strongly connected component with a cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in edges.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


def cycle_problems(root: Path) -> list[str]:
    edges: dict[str, set[str]] = {}
    where: dict[tuple[str, str], Import] = {}
    for imp in imports(root):
        if imp.target != imp.source:
            edges.setdefault(imp.source, set()).add(imp.target)
            where.setdefault((imp.source, imp.target), imp)
    problems = []
    for comp in find_cycles(edges):
        arrows = [
            f"{a} -> {b} (line {where[a, b].line}{', inside a function' if where[a, b].local else ''})"
            for a in comp for b in sorted(edges.get(a, ())) if b in comp
        ]
        problems.append("import cycle between " + ", ".join(comp) + ": " + "; ".join(arrows))
    return problems


def layer_problems(root: Path) -> list[str]:
    top = root.name
    problems = []
    for mod in modules(root):
        try:
            layer_of(mod, top)
        except ValueError as e:
            problems.append(str(e))
    for imp in imports(root):
        try:
            src, dst = layer_of(imp.source, top), layer_of(imp.target, top)
        except ValueError:
            continue  # reported above
        if dst not in MAY_IMPORT[src]:
            problems.append(
                f"{imp.source} (layer {src}) imports {imp.target} (layer {dst}) at line {imp.line}: "
                f"{src} may import only {sorted(MAY_IMPORT[src])}; move the piece it needs down"
            )
    return problems


def private_problems(root: Path) -> list[str]:
    mods = modules(root)
    top = root.name
    problems = []
    for imp in imports(root):
        for name in imp.names:
            if name.startswith("_") and not name.startswith("__") and imp.target != imp.source:
                problems.append(f"{imp.source} imports the private name {name} of {imp.target} (line {imp.line})")
    # attribute access on an imported module: ``metrics._to_numpy``
    for mod, path in mods.items():
        tree = ast.parse(path.read_text())
        bound: dict[str, str] = {}
        pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)] if node.level else []
                dotted = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module or ""
                for a in node.names:
                    if f"{dotted}.{a.name}" in mods:
                        bound[a.asname or a.name] = f"{dotted}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in mods and a.asname:
                        bound[a.asname] = a.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                    and node.attr.startswith("_") and not node.attr.startswith("__") and bound[node.value.id] != mod):
                problems.append(f"{mod} uses the private name {node.attr} of {bound[node.value.id]} (line {node.lineno})")
    return problems


# ----------------------------------------------------------------------------- the package
def test_the_package_has_no_import_cycle():
    problems = cycle_problems(PACKAGE)
    assert not problems, "\n".join(problems)


def test_every_import_follows_the_layers():
    problems = layer_problems(PACKAGE)
    assert not problems, "\n".join(problems)


def test_no_module_takes_another_modules_private_names():
    problems = private_problems(PACKAGE)
    assert not problems, "\n".join(problems)


def test_the_walk_sees_the_package():
    """The checks above are not vacuous: the walk finds the imports they judge."""
    found = list(imports(PACKAGE))
    pairs = {(i.source, i.target) for i in found}
    assert ("kmexplain_utils.classifier", "kmexplain_utils.kmeans") in pairs
    assert ("kmexplain_utils.evaluation.run", "kmexplain_utils.evaluation.metrics") in pairs  # from . import metrics
    assert any(i.local for i in found)  # function-local imports are seen
    layers = {layer_of(m) for m in modules(PACKAGE)}
    assert layers == set(MAY_IMPORT)


def test_the_top_level_api_is_the_methods():
    """``kmexplain_utils.<name>`` resolves to method modules only (lazily, see __init__)."""
    import kmexplain_utils

    assert 15 <= len(kmexplain_utils._LAZY) <= 30
    for name, module in kmexplain_utils._LAZY.items():
        assert layer_of(f"kmexplain_utils.{module}") in {"method", "kmeans", "base"}, (name, module)


# ----------------------------------------------------------------------------- the checks can fail
def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "kmexplain_utils" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "kmexplain_utils"


@pytest.fixture
def synthetic(tmp_path):
    """A small package shaped like ours, with one of each fault."""
    return _write(tmp_path, {
        "__init__.py": "",
        "_validation.py": "def check(x):\n    return x\n",
        "features.py": "from ._validation import check\n\ndef f():\n    from .architectures import adapt\n    return adapt\n",
        "architectures.py": "from .features import f\n\ndef adapt():\n    return f\n",  # cycle, one side local
        "explainer.py": "def plot():\n    from .chapters.plotting import show\n    return show\n",  # method -> chapters
        "chapters/__init__.py": "",
        "chapters/plotting.py": "from ..features import f\n\ndef show():\n    return f\n",
        "evaluation/__init__.py": "",
        "evaluation/metrics.py": "def _baseline():\n    return 0\n",
        "evaluation/baselines.py": "from .metrics import _baseline\nfrom . import metrics\n\nx = metrics._baseline\n",
        "data/__init__.py": "from ..evaluation.metrics import _baseline\n",  # data -> evaluation, and private
        "stray.py": "",  # a top-level module no list names
    })


def test_a_cycle_through_a_function_local_import_is_found(synthetic):
    problems = cycle_problems(synthetic)
    assert len(problems) == 1
    assert "kmexplain_utils.architectures" in problems[0] and "kmexplain_utils.features" in problems[0]
    assert "inside a function" in problems[0]


def test_arrows_against_the_layers_are_found(synthetic):
    problems = "\n".join(layer_problems(synthetic))
    assert "kmexplain_utils.explainer (layer method) imports kmexplain_utils.chapters.plotting" in problems
    assert "kmexplain_utils.data (layer data) imports kmexplain_utils.evaluation.metrics" in problems
    assert "kmexplain_utils.stray is at the top of the package" in problems
    assert "chapters.plotting (layer chapters) imports" not in problems  # chapters -> method is allowed


def test_private_names_of_other_modules_are_found(synthetic):
    problems = private_problems(synthetic)
    assert any("baselines imports the private name _baseline of kmexplain_utils.evaluation.metrics" in p
               for p in problems)
    assert any("baselines uses the private name _baseline of kmexplain_utils.evaluation.metrics" in p
               for p in problems)
    assert any("kmexplain_utils.data imports the private name _baseline" in p for p in problems)
    assert not any("_validation" in p for p in problems)  # a private helper module is fine to import


def test_the_cycle_finder_on_small_graphs():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"a"}}) == [["a"]]
