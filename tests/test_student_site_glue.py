"""The student site keeps the full build's glued values (``scripts/make_student_site.py``).

myst-nb takes glued outputs out of the executed notebook and writes them to ``<page>.glue.json``;
the student build executes nothing, so the script puts them back. The round trip is checked with
myst-nb's own glue extractor, which is what the student build runs on the restored notebook.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("make_student_site", ROOT / "scripts" / "make_student_site.py")
mss = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mss)

glue_ext = pytest.importorskip("myst_nb.ext.glue")


class _Logger:
    def warning(self, *args, **kwargs):  # pragma: no cover - a duplicate key would be a bug
        raise AssertionError(f"myst-nb warned: {args}")


def _glued_notebook() -> nbformat.NotebookNode:
    """A notebook as a kernel leaves it after two ``myst_nb.glue`` calls (one hidden, one shown)."""
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("glue(...)")
    prefix = "application/papermill.record/"
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="kept\n"),
        nbformat.v4.new_output(
            "display_data", data={prefix + "text/markdown": "12 s on the run", prefix + "text/plain": "<md>"},
            metadata={"scrapbook": {"name": "kmex_compute_time", "mime_prefix": prefix}}),
        nbformat.v4.new_output(
            "display_data", data={"text/html": "<table>T</table>", "text/plain": "T"},
            metadata={"scrapbook": {"name": "claims_table", "mime_prefix": ""}}),
    ]
    nb.cells.append(cell)
    return nb


def _extract(nb):
    return {k: dict(v["data"]) for k, v in glue_ext.extract_glue_data(nb, [0] * len(nb.cells), _Logger()).items()}


def test_restored_glue_is_what_the_full_build_glued(tmp_path):
    executed = _glued_notebook()
    expected = glue_ext.extract_glue_data(executed, [0], _Logger())  # what the full build writes
    glue_file = tmp_path / "ch.glue.json"
    glue_file.write_text(json.dumps(expected))
    assert not any("scrapbook" in o.get("metadata", {}) for o in executed.cells[0].outputs
                   if o.get("data", {}).get("text/markdown")), "myst-nb should have taken the hidden value out"
    student = nbformat.reads(nbformat.writes(executed), as_version=4)
    keys = mss.restore_glue(student, glue_file)
    assert keys == ["kmex_compute_time"]  # the displayed value never left its cell
    nbformat.validate(student)
    assert student.cells[-1].metadata["tags"] == ["remove-cell"]
    again = _extract(nbformat.reads(nbformat.writes(student), as_version=4))
    assert again["kmex_compute_time"] == {"text/markdown": "12 s on the run", "text/plain": "<md>"}
    assert again["claims_table"]["text/html"] == "<table>T</table>"


def test_no_glue_file_adds_nothing(tmp_path):
    nb = nbformat.v4.new_notebook()
    assert mss.restore_glue(nb, tmp_path / "missing.glue.json") == []
    assert nb.cells == []


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_corrupt_glue_file_names_the_fix(tmp_path, text):
    bad = tmp_path / "ch.glue.json"
    bad.write_text(text)
    with pytest.raises(SystemExit, match="rebuild the full book"):
        mss.restore_glue(nbformat.v4.new_notebook(), bad)
