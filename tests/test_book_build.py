"""The strict book build fails when a cell raises, and passes on a good notebook.

Both run on a throw-away book in ``tmp_path`` that uses this repository's own ``_config.yml``,
local extension and bibliography, so that what is tested is the real configuration.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
JUPYTER_BOOK = Path(sys.executable).with_name("jupyter-book")
STRICT = ["build", ".", "-W", "-n", "--keep-going"]


def _make_book(tmp_path: Path, cells: list) -> Path:
    book = tmp_path / "book_root"
    (book / "book").mkdir(parents=True)
    shutil.copy(ROOT / "_config.yml", book / "_config.yml")
    shutil.copytree(ROOT / "book" / "_ext", book / "book" / "_ext", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "book" / "references.bib", book / "book" / "references.bib")
    (book / "book" / "intro.md").write_text("# A throw-away book\n\nSee {doc}`chapter`.\n")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# Chapter"), *cells]
    nbformat.write(nb, book / "book" / "chapter.ipynb")
    toc = {"format": "jb-book", "root": "book/intro", "chapters": [{"file": "book/chapter"}]}
    (book / "_toc.yml").write_text(yaml.safe_dump(toc))
    return book


def _build(book: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, KMEX_PROGRESS="0", PYTHONDONTWRITEBYTECODE="1")
    env.pop("KMEX_BOOK_EXECUTE", None)
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
    book = _make_book(
        tmp_path,
        [nbformat.v4.new_code_cell('print("kmex-good-output", 6 * 7)')],
    )
    proc = _build(book)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"the strict build of a good notebook failed:\n{log[-3000:]}"
    html = (book / "_build" / "html" / "book" / "chapter.html").read_text()
    assert "kmex-good-output 42" in html, "the notebook was not executed at build time"
    assert (book / "_build" / "html" / "index.html").is_file()
    # the Colab launch button points at the chapter in the repository
    assert "https://colab.research.google.com/github/kmexplain/kmexplain-book/blob/main/book/chapter.ipynb" in html
