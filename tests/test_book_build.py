"""The strict book build fails when a cell raises, and passes on a good notebook.

Both run on a throw-away book in ``tmp_path`` that uses this repository's own ``_config.yml``,
local extension and bibliography, so that what is tested is the real configuration.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
JUPYTER_BOOK = Path(sys.executable).with_name("jupyter-book")
STRICT = ["build", ".", "-W", "-n", "--keep-going"]


def _make_book(tmp_path: Path, cells: list, local_js: bool = False) -> Path:
    book = tmp_path / "book_root"
    (book / "book").mkdir(parents=True)
    if local_js:
        shutil.copytree(ROOT / "_widgets_js", book / "_widgets_js")
    shutil.copy(ROOT / "_config.yml", book / "_config.yml")
    shutil.copytree(ROOT / "book" / "_ext", book / "book" / "_ext", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "book" / "_static", book / "book" / "_static")  # the book's CSS (html_static_path)
    shutil.copy(ROOT / "book" / "references.bib", book / "book" / "references.bib")
    # what book/_ext/kmex_release.py reads: the version and the repository's address
    shutil.copy(ROOT / "pyproject.toml", book / "pyproject.toml")
    (book / "kmexplain_utils").mkdir()
    shutil.copy(ROOT / "kmexplain_utils" / "__init__.py", book / "kmexplain_utils" / "__init__.py")
    (book / "book" / "intro.md").write_text("# A throw-away book\n\nSee {doc}`chapter`.\n")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# Chapter"), *cells]
    nbformat.write(nb, book / "book" / "chapter.ipynb")
    toc = {"format": "jb-book", "root": "book/intro", "chapters": [{"file": "book/chapter"}]}
    (book / "_toc.yml").write_text(yaml.safe_dump(toc))
    return book


def _build(book: Path, **extra_env: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, KMEX_PROGRESS="0", PYTHONDONTWRITEBYTECODE="1")
    env.pop("KMEX_BOOK_EXECUTE", None)
    env.update(extra_env)
    return subprocess.run(
        [str(JUPYTER_BOOK), *STRICT], cwd=book, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_a_cell_that_raises_fails_the_build(tmp_path):
    book = _make_book(
        tmp_path,
        [
            nbformat.v4.new_code_cell("x = 1"),
            nbformat.v4.new_code_cell('raise RuntimeError("kmex-deliberate-failure")'),
        ],
    )
    proc = _build(book)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"the strict build passed although a cell raised:\n{log[-3000:]}"
    assert "kmex-deliberate-failure" in log or "RuntimeError" in log, log[-3000:]


@pytest.mark.slow
def test_a_good_notebook_builds_without_warning(tmp_path):
    local_js = (ROOT / "_widgets_js" / "require.js").is_file()
    book = _make_book(
        tmp_path,
        [
            nbformat.v4.new_code_cell('print("kmex-good-output", 6 * 7)'),
            nbformat.v4.new_code_cell("import ipywidgets\nipywidgets.IntSlider(value=3)"),
        ],
        local_js=local_js,
    )
    proc = _build(book)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"the strict build of a good notebook failed:\n{log[-3000:]}"
    html = (book / "_build" / "html" / "book" / "chapter.html").read_text()
    assert "application/vnd.jupyter.widget-state+json" in html, "widget state not embedded"
    if local_js:  # widgets (and math) are served from the site, each script once
        assert html.count('src="../_static/require.js') == 1, "require.js must load exactly once"
        assert html.count('src="../_static/embed-amd.js') == 1, "embed-amd.js must load exactly once"
        assert "cdn.jsdelivr.net" not in html and "cdnjs.cloudflare.com" not in html
        assert (book / "_build" / "html" / "_static" / "mathjax" / "es5" / "tex-mml-chtml.js").is_file()
    else:
        assert "falls back" in log or "from the CDN" in log
    assert "kmex-good-output 42" in html, "the notebook was not executed at build time"
    assert (book / "_build" / "html" / "index.html").is_file()
    # the Colab launch button points at the chapter in the repository (pyproject.toml's address)
    repo = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    github = repo.removeprefix("https://github.com/")
    assert f"https://colab.research.google.com/github/{github}/blob/main/book/chapter.ipynb" in html
    # the footer: the version and the licences (book/_ext/kmex_release.py)
    import kmexplain_utils

    assert f"kmexplain {kmexplain_utils.__version__}" in html and "CC BY 4.0" in html and "THIRD_PARTY.md" in html


# ---------------------------------------------------------------------------- the local extension

def _extension():
    import importlib.util

    spec = importlib.util.spec_from_file_location("kmex_assets", ROOT / "book" / "_ext" / "kmex_assets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Config(dict):
    __getattr__ = dict.get

    def __setattr__(self, key, value):
        self[key] = value


def _app(root: Path):
    from types import SimpleNamespace

    return SimpleNamespace(srcdir=str(root), outdir=str(root / "_build" / "html"))


def test_extension_uses_local_scripts_when_present(tmp_path):
    ext = _extension()
    config = _Config(html_static_path=["_static"], nb_execution_cache_path="")
    ext._on_config_inited(_app(tmp_path), config)
    assert "nb_ipywidgets_js" not in config and config.html_static_path == ["_static"], "no files: CDN defaults"
    folder = tmp_path / "_widgets_js"
    (folder / "mathjax" / "es5").mkdir(parents=True)
    for name in ("require.js", "embed-amd.js", "mathjax/es5/tex-mml-chtml.js"):
        (folder / name).write_text("// js")
    ext._on_config_inited(_app(tmp_path), config)
    assert config.html_static_path == ["_static", str(folder)]
    assert config.nb_ipywidgets_js == {"require.js": {}, "embed-amd.js": {}}
    assert config.mathjax_path == "mathjax/es5/tex-mml-chtml.js"


def test_cache_mode_is_cleared_when_the_package_changes(tmp_path, monkeypatch):
    ext = _extension()
    (tmp_path / "kmexplain_utils").mkdir()
    module = tmp_path / "kmexplain_utils" / "mod.py"
    module.write_text("x = 1\n")
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    cache = tmp_path / "_build" / ".jupyter_cache"
    monkeypatch.setenv("KMEX_BOOK_EXECUTE", "cache")
    monkeypatch.setenv("KMEX_PROFILE", "quick")

    def run():
        config = _Config(html_static_path=[], nb_execution_cache_path="")
        ext._on_config_inited(_app(tmp_path), config)
        return config

    assert run().nb_execution_mode == "cache"
    cache.mkdir(parents=True)
    (cache / "entry").write_text("executed outputs")
    run()
    assert (cache / "entry").is_file(), "same package: the cache is kept"
    module.write_text("x = 2\n")
    run()
    assert not cache.exists(), "a package change must clear the execution cache"
    cache.mkdir(parents=True)
    (cache / "entry").write_text("executed outputs")
    monkeypatch.setenv("KMEX_PROFILE", "smoke")
    run()
    assert not cache.exists(), "a profile change must clear the execution cache"
    monkeypatch.setenv("KMEX_BOOK_EXECUTE", "sometimes")
    with pytest.raises(ValueError, match="KMEX_BOOK_EXECUTE"):
        run()


# ------------------------------------------------------------------------- no stale outputs

def _tokens(book: Path) -> dict[str, str]:
    import re

    out = {}
    for name in ("chapter", "second"):
        html = (book / "_build" / "html" / "book" / f"{name}.html").read_text()
        found = re.findall(r"kmex-run-([0-9a-f]{32})", html)
        assert found, f"{name}.html shows no execution token"
        out[name] = found[0]
    return out


@pytest.mark.slow
def test_a_package_change_re_executes_every_chapter(tmp_path):
    """In force mode Sphinx re-reads only changed chapters; a package/profile change must re-run all."""
    run_cell = nbformat.v4.new_code_cell('import uuid\nprint("kmex-run-" + uuid.uuid4().hex)')
    book = _make_book(tmp_path, [run_cell])
    second = nbformat.read(book / "book" / "chapter.ipynb", as_version=4)
    second.cells[0].source = "# Second chapter"
    nbformat.write(second, book / "book" / "second.ipynb")
    toc = {"format": "jb-book", "root": "book/intro", "chapters": [{"file": "book/chapter"}, {"file": "book/second"}]}
    (book / "_toc.yml").write_text(yaml.safe_dump(toc))
    module = book / "kmexplain_utils" / "module.py"
    module.write_text("x = 1\n")
    pyproject = (ROOT / "pyproject.toml").read_text()

    def build(profile="quick"):
        proc = _build(book, KMEX_PROFILE=profile)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        return _tokens(book)

    first = build()
    assert build() == first, "nothing changed: Sphinx must not re-execute (else this test proves nothing)"
    module.write_text("x = 2\n")  # a change to a package file, no chapter touched
    after_package = build()
    assert all(after_package[c] != first[c] for c in first), f"stale outputs after a package change: {first} {after_package}"
    (book / "pyproject.toml").write_text(pyproject + "\n# a change to pyproject.toml\n")
    after_pyproject = build()
    assert all(after_pyproject[c] != after_package[c] for c in first), "stale outputs after a pyproject.toml change"
    after_profile = build(profile="smoke")
    assert all(after_profile[c] != after_pyproject[c] for c in first), "stale outputs after a profile change"
