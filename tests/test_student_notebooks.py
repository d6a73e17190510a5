"""Student notebooks: solutions out, stubs in, chapters untouched, valid nbformat."""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_student_notebooks.py"
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))

_spec = importlib.util.spec_from_file_location("make_student_notebooks", SCRIPT)
msn = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(msn)

SECRET_CODE = "answer_is_forty_two = 6 * 7  # SECRET-CODE"
SECRET_TEXT = "SECRET-TEXT the concept map is coarse"


def _toy_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    exercise = nbformat.v4.new_markdown_cell(
        "## Exercises\n\n1. Why is the map coarse?\n\n"
        f"::::{{dropdown}} Solution\n{SECRET_TEXT}\n\n```python\nprint('SECRET-IN-FENCE')\n```\n::::\n\n"
        "2. Compute the answer.\n\n"
        f"```{{dropdown}} Solution to 2\n{SECRET_TEXT} again\n```\n\n"
        "```{dropdown} Hint\nkeep me\n```\n"
    )
    solution = nbformat.v4.new_code_cell(f"# Exercise: the answer\n{SECRET_CODE}\nprint(answer_is_forty_two)")
    solution.metadata["tags"] = ["solution", "hide-input"]
    solution.outputs = [nbformat.v4.new_output("stream", name="stdout", text="42 SECRET-OUTPUT\n")]
    md_solution = nbformat.v4.new_markdown_cell(f"**Solution.** {SECRET_TEXT}")
    md_solution.metadata["tags"] = ["solution"]
    normal = nbformat.v4.new_code_cell("x = 1")
    normal.metadata["tags"] = ["hide-input"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Toy"), normal, exercise, solution, md_solution]
    return nb


def test_solutions_are_replaced_and_the_rest_kept():
    nb = _toy_notebook()
    before = nbformat.writes(nb)
    student = msn.make_student_notebook(nb)
    nbformat.validate(student)
    text = nbformat.writes(student)
    for secret in ("SECRET-CODE", "SECRET-TEXT", "SECRET-OUTPUT", "SECRET-IN-FENCE", "answer_is_forty_two"):
        assert secret not in text, f"{secret} leaked into the student notebook"
    assert nbformat.writes(nb) == before, "make_student_notebook modified its input"
    code = [c for c in student.cells if c.cell_type == "code"]
    assert code[0].source == "x = 1" and code[0].metadata["tags"] == ["hide-input"]
    stub = code[1]
    assert stub.metadata["tags"] == ["exercise"]
    assert 'raise NotImplementedError(\'Exercise: the answer\')' in stub.source
    with pytest.raises(NotImplementedError, match="Exercise: the answer"):
        exec(stub.source, {})
    md = "\n".join(c.source for c in student.cells if c.cell_type == "markdown")
    assert "1. Why is the map coarse?" in md and "2. Compute the answer." in md
    assert "{dropdown} Hint\nkeep me" in md, "non-solution dropdowns must stay"
    assert len(student.cells) == 4  # the markdown solution cell is gone


def test_unclosed_solution_block_is_an_error():
    with pytest.raises(ValueError, match="unclosed"):
        msn.strip_solution_directives(":::{dropdown} Solution\nnever closed\n")


def test_script_writes_valid_copies_and_leaves_originals_alone(tmp_path):
    src = tmp_path / "chapter.ipynb"
    nbformat.write(_toy_notebook(), src)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    out = tmp_path / "student"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), str(src)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "2 solution cell(s) replaced" in proc.stdout  # one code, one markdown
    assert hashlib.sha256(src.read_bytes()).hexdigest() == digest
    student = nbformat.read(out / "chapter.ipynb", as_version=4)
    nbformat.validate(student)
    assert "SECRET" not in nbformat.writes(student)


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in CHAPTERS])
def test_every_chapter_has_exercises_and_hidden_solutions(path):
    """Every chapter (appendices included) ends with exercises: at least one coding solution
    cell (tagged ``solution``) and at least one solution dropdown; the student copy contains neither."""
    nb = nbformat.read(path, as_version=4)
    code_solutions = [c for c in nb.cells if c.cell_type == "code" and "solution" in c.metadata.get("tags", [])]
    md = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")  # a cell may start with a fence
    dropdowns = [m.groups() for m in map(msn._FENCE_OPEN.match, md.splitlines()) if m]
    assert code_solutions, f"{path.name}: no code cell tagged 'solution' (a coding exercise's solution)"
    assert any(title.lower().startswith("solution") for _, _, title in dropdowns), (
        f"{path.name}: no '{{dropdown}} Solution' block (a conceptual exercise's solution)"
    )
    for c in code_solutions:
        tags = c.metadata.get("tags", [])
        assert {"hide-input", "hide-cell"} & set(tags), f"{path.name}: solution cells must be folded (hide-input)"
    student = msn.make_student_notebook(nb)
    nbformat.validate(student)
    text = nbformat.writes(student)
    # lines the chapter also shows outside its solutions (the exercise's template, `def f(x):`, or a
    # helper the chapter itself uses) are not the solution's to leak
    public = {ln for c in nb.cells if "solution" not in c.metadata.get("tags", [])
              for ln in c.source.splitlines()}
    for c in code_solutions:
        body = [ln for ln in c.source.splitlines() if ln.strip() and not ln.strip().startswith("#")]
        leaked = [ln for ln in body if len(ln.strip()) > 12 and ln in text and ln not in public]
        assert not leaked, f"{path.name}: solution code left in the student copy: {leaked[:3]}"
