#!/usr/bin/env python
"""Write the source of the student site: the executed book with the solutions taken out.

The student site is the full site minus the solutions, with the same figures and numbers: it is
built from the notebooks that the full book build executed (``_build/jupyter_execute/book``), so
the student pages show exactly what the full pages show, and nothing is executed again (a
student stub raises ``NotImplementedError`` by design). Each notebook goes through
``make_student_notebooks.make_student_notebook(..., keep_outputs=True)``: solution code cells
become stubs without output, solution dropdowns and markdown solution cells are removed.

Layout written under ``--out`` (default ``_build/student_src``): ``_config.yml`` (title marked
"student edition", execution off), ``_toc.yml``, ``book/`` (the student notebooks, the markdown
pages, the bibliography, the extensions and the API pages) and links to the package and the
widget scripts. ``make book-student`` then builds it into ``_build/student_site/_build/html``.

Usage::

    python scripts/make_student_site.py [--executed _build/jupyter_execute/book] [--out _build/student_src]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("make_student_notebooks", ROOT / "scripts" / "make_student_notebooks.py")
msn = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(msn)

LINKS = ("kmexplain_utils", "_widgets_js", "pyproject.toml")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executed", type=Path, default=ROOT / "_build" / "jupyter_execute" / "book")
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "student_src")
    args = parser.parse_args(argv)
    chapters = sorted((ROOT / "book").glob("*.ipynb"))
    missing = [c.name for c in chapters if not (args.executed / c.name).is_file()]
    if missing:
        print(f"make_student_site: {args.executed} lacks {missing}: build the full book first (make book)",
              file=sys.stderr)
        return 1
    if args.out.exists():
        shutil.rmtree(args.out)
    book = args.out / "book"
    book.mkdir(parents=True)
    for item in (ROOT / "book").iterdir():
        if item.suffix == ".ipynb" or item.name in {"__pycache__"}:
            continue
        if item.is_dir():
            shutil.copytree(item, book / item.name, ignore=shutil.ignore_patterns("__pycache__", "generated"))
        else:
            shutil.copy2(item, book / item.name)
    for name in LINKS:
        if (ROOT / name).exists():
            os.symlink(ROOT / name, args.out / name)
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["title"] = f"{config.get('title', 'The book')} (student edition)"
    config.setdefault("execute", {})["execute_notebooks"] = "off"
    (args.out / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    shutil.copy2(ROOT / "_toc.yml", args.out / "_toc.yml")
    for chapter in chapters:
        nb = nbformat.read(args.executed / chapter.name, as_version=4)
        student = msn.make_student_notebook(nb, keep_outputs=True)
        nbformat.validate(student)
        nbformat.write(student, book / chapter.name)
        n = sum(msn.SOLUTION_TAG in c.get("metadata", {}).get("tags", []) for c in nb.cells)
        print(f"{chapter.name}: {n} solution cell(s) taken out -> {book / chapter.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
