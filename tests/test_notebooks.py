"""Every chapter runs top to bottom in the smoke profile, alone.

Each chapter gets a fresh kernel, a fresh empty working directory and a fresh empty
``KMEX_CACHE``: a chapter that reads a file written next to the notebooks, or a checkpoint that
another chapter left in the cache, fails here. Run with ``pytest -m notebooks -n 2``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))
CELL_TIMEOUT = 600  # seconds per cell, as in _config.yml


def _chapter_params():
    if not CHAPTERS:
        return [pytest.param(None, id="no-chapters")]
    return [pytest.param(p, id=p.stem) for p in CHAPTERS]


@pytest.mark.notebooks
@pytest.mark.slow
@pytest.mark.parametrize("path", _chapter_params())
def test_chapter_runs_in_smoke_profile(path, tmp_path, monkeypatch):
    if path is None:
        pytest.fail("no chapter notebooks found in book/")
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.setenv("KMEX_PROFILE", "smoke")
    monkeypatch.setenv("KMEX_PROGRESS", "0")
    monkeypatch.setenv("KMEX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("KMEX_TEST_THREADS", "1"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.delenv("KMEX_DEVICE", raising=False)

    before = path.read_bytes()
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3", allow_errors=False,
        resources={"metadata": {"path": str(workdir)}},
    )
    try:
        client.execute()
    except CellExecutionError as exc:  # the message holds the cell and the traceback
        message = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # no terminal colours
        pytest.fail(f"{path.name} raised in the smoke profile:\n{message[-4000:]}", pytrace=False)

    errors = [
        out for cell in nb.cells if cell.cell_type == "code"
        for out in cell.get("outputs", []) if out.get("output_type") == "error"
    ]
    assert not errors, f"{path.name}: error outputs {[e.get('ename') for e in errors]}"
    assert path.read_bytes() == before, f"executing {path.name} modified the chapter file"
    written = sorted(p.relative_to(workdir).as_posix() for p in workdir.rglob("*"))
    assert not written, (
        f"{path.name} wrote files into its working directory {written}: write to the cache "
        "(kmexplain_utils.config.ensure_cache_dir) instead"
    )
