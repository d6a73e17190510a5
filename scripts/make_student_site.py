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
import json
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


GLUE_CELL_SOURCE = "# the values this page glues (header times, tables), as the full build computed them"


def restore_glue(nb: nbformat.NotebookNode, glue_file: Path) -> list[str]:
    """Give ``nb`` back the glue outputs that the full build extracted into ``glue_file``.

    When myst-nb executes a notebook it takes each glued value out of the cell's outputs and
    writes it to ``<chapter>.glue.json`` beside the executed notebook; the executed ``.ipynb``
    no longer carries it. The student build executes nothing, so without this its
    ``{glue:md}`` references (the header's compute and reading times, chapter 5's claims table
    that the introduction shows) would have nothing to paste. The values are put back, as the
    display outputs ``myst_nb.glue`` makes, in one removed cell appended to the notebook.

    Parameters
    ----------
    nb : NotebookNode
        The student notebook, modified in place.
    glue_file : Path
        The ``.glue.json`` of the full build (a missing file means the page glues nothing).

    Returns
    -------
    list of str
        The glue keys restored (those still in a cell's outputs, glued with ``display=True``,
        are left where they are).

    Raises
    ------
    SystemExit
        If ``glue_file`` is not the JSON object myst-nb writes.
    """
    if not glue_file.is_file():
        return []
    try:
        data = json.loads(glue_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise SystemExit(f"make_student_site: {glue_file} is not valid JSON ({err}): rebuild the full book") from err
    if not isinstance(data, dict):
        raise SystemExit(f"make_student_site: {glue_file} is not a JSON object of glued outputs: rebuild the full book")
    present = {o["metadata"]["scrapbook"].get("name") for c in nb.cells if c.cell_type == "code"
               for o in c.get("outputs", []) if "scrapbook" in o.get("metadata", {})}
    outputs = []
    for key, output in data.items():
        if key in present:  # a displayed glue (``display=True``) stays in its cell's outputs
            continue
        meta = dict(output.get("metadata", {}))
        scrap = dict(meta.get("scrapbook", {}))
        prefix = scrap.get("mime_prefix", "")
        scrap["name"] = key
        meta["scrapbook"] = scrap
        outputs.append(nbformat.v4.new_output(
            "display_data",
            data={prefix + mime: value for mime, value in output.get("data", {}).items()},
            metadata=meta,
        ))
    if outputs:
        cell = nbformat.v4.new_code_cell(GLUE_CELL_SOURCE)
        cell.metadata["tags"] = ["remove-cell"]
        cell.outputs = outputs
        nb.cells.append(cell)
    return [o.metadata["scrapbook"]["name"] for o in outputs]


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
        glued = restore_glue(student, args.executed / f"{chapter.stem}.glue.json")
        if glued:
            print(f"{chapter.name}: glued values restored: {', '.join(glued)}")
        nbformat.validate(student)
        nbformat.write(student, book / chapter.name)
        n = sum(msn.SOLUTION_TAG in c.get("metadata", {}).get("tags", []) for c in nb.cells)
        print(f"{chapter.name}: {n} solution cell(s) taken out -> {book / chapter.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
