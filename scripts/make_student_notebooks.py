#!/usr/bin/env python
"""Write student copies of the chapters, with the solutions taken out.

Convention used by the chapters (see book/teaching.md):

- a **code** cell tagged ``solution`` holds the solution of a coding exercise; in the book it is
  also tagged ``hide-input`` so that the reader sees it folded. In the student copy its source is
  replaced by ``raise NotImplementedError("Exercise: ...")`` (the text after ``# Exercise:`` on
  the cell's first line, if there is one) and its tag becomes ``exercise``;
- a **markdown** cell tagged ``solution`` is removed;
- in any markdown cell, a MyST ``dropdown`` (or ``admonition``/``toggle``) directive whose title
  starts with "Solution" is removed, with all its content, for both fence styles
  (```` ```{dropdown} Solution ```` and ``:::{dropdown} Solution``).

All outputs and execution counts are cleared. The chapters themselves are never modified.

Usage::

    python scripts/make_student_notebooks.py [--out _build/student] [NOTEBOOK ...]

Without notebooks, every ``book/*.ipynb`` is converted.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
SOLUTION_TAG = "solution"
EXERCISE_TAG = "exercise"
_FENCE_OPEN = re.compile(r"^\s*(?P<fence>`{3,}|:{3,})\{(?P<name>dropdown|admonition|toggle)\}\s*(?P<title>.*)$")
_EXERCISE_TITLE = re.compile(r"^\s*#\s*Exercise\s*:?\s*(?P<title>.*)$", re.I)


def strip_solution_directives(text: str) -> str:
    """Remove MyST dropdown/admonition/toggle blocks whose title starts with "Solution"."""
    out: list[str] = []
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        m = _FENCE_OPEN.match(lines[i])
        if m and m.group("title").strip().lower().startswith("solution"):
            char, width = m.group("fence")[0], len(m.group("fence"))
            j = i + 1
            while j < len(lines):
                s = lines[j].strip()
                if s and set(s) == {char} and len(s) >= width:
                    break
                j += 1
            if j == len(lines):
                raise ValueError(f"unclosed solution block starting with {lines[i].strip()!r}")
            i = j + 1
            continue
        out.append(lines[i])
        i += 1
    return "".join(out).rstrip("\n") + ("\n" if text.endswith("\n") else "")


def exercise_stub(solution_source: str) -> str:
    """The code that replaces a solution cell."""
    first = solution_source.strip().splitlines()[0] if solution_source.strip() else ""
    m = _EXERCISE_TITLE.match(first)
    title = m.group("title").strip() if m and m.group("title").strip() else "write your solution here"
    return (
        "# Your solution here: replace the line below.\n"
        f"raise NotImplementedError({('Exercise: ' + title)!r})"
    )


def make_student_notebook(nb: nbformat.NotebookNode, *, keep_outputs: bool = False) -> nbformat.NotebookNode:
    """Return a student copy of ``nb`` (``nb`` itself is not modified).

    With ``keep_outputs`` (the student *site*, built from executed notebooks) the outputs of the
    cells that are not solutions are kept; a solution stub never has an output.
    """
    student = nbformat.from_dict(nbformat.v4.new_notebook())
    student.metadata = nbformat.from_dict(dict(nb.metadata))
    student.nbformat, student.nbformat_minor = nb.nbformat, nb.nbformat_minor
    for cell in nb.cells:
        tags = list(cell.get("metadata", {}).get("tags", []))
        is_solution = SOLUTION_TAG in tags
        if cell.cell_type == "markdown":
            if is_solution:
                continue
            text = strip_solution_directives(cell.source)
            if not text.strip():
                continue
            new = nbformat.v4.new_markdown_cell(text)
        elif cell.cell_type == "code":
            if is_solution:
                new = nbformat.v4.new_code_cell(exercise_stub(cell.source))
                tags = [EXERCISE_TAG] + [t for t in tags if t not in {SOLUTION_TAG, "hide-input", "hide-cell",
                                                                        "remove-input", "remove-cell"}]
            else:
                new = nbformat.v4.new_code_cell(cell.source)
                if keep_outputs:
                    new.outputs = nbformat.from_dict(list(cell.get("outputs", [])))
                    new.execution_count = cell.get("execution_count")
        else:
            new = nbformat.v4.new_raw_cell(cell.source)
        if tags:
            new.metadata["tags"] = tags
        student.cells.append(new)
    return student


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="chapters (default: book/*.ipynb)")
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "student", help="output folder")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted((ROOT / "book").glob("*.ipynb"))
    if not notebooks:
        print("make_student_notebooks: no notebooks found", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        student = make_student_notebook(nb)
        nbformat.validate(student)
        n_solutions = sum(SOLUTION_TAG in c.get("metadata", {}).get("tags", []) for c in nb.cells)
        target = args.out / path.name
        if target.resolve() == path.resolve():
            raise SystemExit(f"refusing to overwrite the chapter {path}")
        nbformat.write(student, target)
        print(f"{path.name}: {n_solutions} solution cell(s) replaced -> {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
