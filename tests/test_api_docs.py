"""The API reference (book/_ext/kmex_api.py) covers every public name, without a book build.

The generator is called directly on a temporary folder: every name of
``kmexplain_utils.__all__`` and of each public module's ``__all__`` must appear in
what it writes, and every object must be documented exactly once.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "kmexplain_utils"


def _load_generator():
    spec = importlib.util.spec_from_file_location("kmex_api", ROOT / "book" / "_ext" / "kmex_api.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("kmex_api", module)
    spec.loader.exec_module(module)
    return module


kmex_api = _load_generator()


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("api")
    model = kmex_api.write_pages(out)
    return out, model


def _public_modules_with_all() -> dict[str, list[str]]:
    """Found independently of the generator: pkgutil, no private part, has __all__."""
    pkg = importlib.import_module(PACKAGE)
    names = [PACKAGE] + [
        m.name for m in pkgutil.walk_packages(pkg.__path__, prefix=f"{PACKAGE}.")
        if not any(part.startswith("_") for part in m.name.split("."))
    ]
    out = {}
    for name in names:
        module = importlib.import_module(name)
        if hasattr(module, "__all__"):
            out[name] = list(module.__all__)
    return out


def _documented(out: Path) -> dict[str, str]:
    """Full name -> page, for every auto* entry written."""
    entries: dict[str, str] = {}
    for page in out.glob("*.rst"):
        module = page.stem
        for kind, name in re.findall(r"^\.\. (auto\w+):: (\S+)$", page.read_text(), re.M):
            if kind == "automodule":
                continue
            full = f"{module}.{name}"
            assert full not in entries, f"{full} documented twice ({entries[full]}, {page.name})"
            entries[full] = page.name
    return entries


def test_generator_imports_every_public_module(generated):
    _, model = generated
    assert model.errors == [], f"the API pages would have build warnings: {model.errors}"
    assert set(model.modules) == set(_public_modules_with_all())


def test_every_public_module_has_a_page_and_an_index_entry(generated):
    out, _ = generated
    expected = _public_modules_with_all()
    pages = {p.stem for p in out.glob("*.rst")}
    assert pages == set(expected), f"missing pages {set(expected) - pages}, extra {pages - set(expected)}"
    index = (out / "_modules.rst.inc").read_text()
    for module in expected:
        assert re.search(rf"^   {re.escape(module)}$", index, re.M), f"{module} not in the API index"
    for module in expected:
        text = (out / f"{module}.rst").read_text()
        assert f".. automodule:: {module}\n" in text
        assert f".. currentmodule:: {module}\n" in text


def test_every_name_of_every_all_is_listed_and_documented(generated):
    out, model = generated
    documented = _documented(out)
    for module, names in _public_modules_with_all().items():
        text = (out / f"{module}.rst").read_text()
        table = text.split(".. autosummary::", 1)[1].split("\n\n", 2)[1] if names else ""
        rows = [line.strip().lstrip("~") for line in table.splitlines()]
        for name in names:
            home = model.home[f"{module}.{name}"]
            rel = home[len(module) + 1:] if home.startswith(f"{module}.") else home
            assert rel in rows, f"{module}.{name} missing from the summary table of {module}.rst"
            assert home in documented, f"{module}.{name} (documented as {home}) has no autodoc entry"


def test_package_names_point_to_their_defining_module(generated):
    out, model = generated
    import kmexplain_utils

    text = (out / f"{PACKAGE}.rst").read_text()
    for name in kmexplain_utils.__all__:
        assert re.search(rf"^   ~?[\w.]*\b{re.escape(name)}$", text, re.M), f"{name} not on the package page"
        if name == "__version__":
            continue
        obj = getattr(kmexplain_utils, name)
        home = model.home[f"{PACKAGE}.{name}"]
        assert home == f"{obj.__module__}.{obj.__qualname__}", (name, home)


def test_a_new_module_or_name_appears_without_editing_the_docs(tmp_path, monkeypatch):
    """A toy package: lazy names, a private module, a re-export, a sub-package, a new module."""
    pkg = tmp_path / "src" / "toypkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        """Toy package."""
        import importlib
        _LAZY = {"area": "shapes"}
        __all__ = ["VERSION", *_LAZY]
        VERSION = "1"

        def __getattr__(name):
            if name in _LAZY:
                return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
            raise AttributeError(name)
    '''))
    (pkg / "_private.py").write_text('__all__ = ["Hidden"]\nclass Hidden(Exception):\n    """Hidden."""\n')
    (pkg / "shapes.py").write_text(textwrap.dedent('''
        """Shapes."""
        from ._private import Hidden
        __all__ = ["area", "Hidden", "Square"]

        def area(side):
            """Area of a square."""
            return side * side

        class Square:
            """A square."""
    '''))
    (pkg / "reexport.py").write_text('"""Re-exports."""\nfrom .shapes import area\n__all__ = ["area"]\n')
    (pkg / "noall.py").write_text('"""No __all__: no page."""\n')
    (pkg / "sub" / "__init__.py").write_text('"""Sub."""\n__all__ = []\n')
    (pkg / "sub" / "_hidden.py").write_text('__all__ = ["x"]\nx = 1\n')
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    out = tmp_path / "out"
    model = kmex_api.write_pages(out, package="toypkg")
    assert model.errors == []
    assert sorted(p.stem for p in out.glob("*.rst")) == ["toypkg", "toypkg.reexport", "toypkg.shapes", "toypkg.sub"]
    assert model.home["toypkg.area"] == model.home["toypkg.reexport.area"] == "toypkg.shapes.area"
    assert model.home["toypkg.shapes.Hidden"] == "toypkg.shapes.Hidden"  # defined in a private module
    shapes = (out / "toypkg.shapes.rst").read_text()
    assert ".. autofunction:: area" in shapes and ".. autoclass:: Square" in shapes
    assert ".. autoexception:: Hidden\n   :members:\n   :show-inheritance:" in shapes
    assert "   ~shapes.area" in (out / "toypkg.rst").read_text()  # relative to the current module
    assert ".. autodata:: VERSION" in (out / "toypkg.rst").read_text()

    # a module added later gets its page; a removed one loses it
    (pkg / "late.py").write_text('"""Added later."""\n__all__ = ["late"]\ndef late():\n    """Late."""\n')
    (pkg / "reexport.py").unlink()
    for name in [m for m in sys.modules if m == "toypkg" or m.startswith("toypkg.")]:
        monkeypatch.delitem(sys.modules, name)
    importlib.invalidate_caches()
    kmex_api.write_pages(out, package="toypkg")
    assert sorted(p.stem for p in out.glob("*.rst")) == ["toypkg", "toypkg.late", "toypkg.shapes", "toypkg.sub"]
    assert ".. autofunction:: late" in (out / "toypkg.late.rst").read_text()


def test_an_import_error_is_reported_not_skipped(tmp_path, monkeypatch):
    pkg = tmp_path / "src" / "brokenpkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('__all__ = []\n')
    (pkg / "bad.py").write_text('__all__ = ["x"]\nraise RuntimeError("boom")\n')
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    model = kmex_api.write_pages(tmp_path / "out", package="brokenpkg")
    assert any("brokenpkg.bad" in e and "boom" in e for e in model.errors), model.errors


def test_book_config_wires_the_api_part():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    sphinx = cfg["sphinx"]
    assert {"sphinx.ext.autodoc", "sphinx.ext.autosummary", "sphinx.ext.napoleon"} <= set(sphinx["extra_extensions"])
    assert sphinx["local_extensions"]["kmex_api"] == "book/_ext"
    # external types only: no ignore pattern may swallow a reference to the package itself
    patterns = [re.compile(p) for _, p in sphinx["config"]["nitpick_ignore_regex"]]
    model = kmex_api.collect()
    own = [*model.home, *model.modules, PACKAGE, "kmexplain_utils.sem.decompose_logits"]
    swallowed = [name for name in own for p in patterns if p.fullmatch(name)]
    assert not swallowed, f"nitpick_ignore_regex hides package names: {swallowed}"
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    api = [ch for part in toc["parts"] for ch in part["chapters"] if ch.get("file") == "book/api/index"]
    assert api and api[0]["sections"] == [{"glob": f"{kmex_api.OUTDIR}/*"}]
    assert (ROOT / "book" / "api" / "index.md").is_file()
    assert "book/api/generated/" in (ROOT / ".gitignore").read_text().splitlines()


def test_make_test_runs_the_docstring_examples():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^DOCTESTS\s*:?=.*--doctest-modules kmexplain_utils", makefile, re.M)
    for target in ("test:", "test-unit:"):
        body = makefile.split(f"\n{target}", 1)[1].split("\n\n", 1)[0]
        assert "$(DOCTESTS)" in body and "pytest_stage" in body, f"{target} does not run the doctests"
