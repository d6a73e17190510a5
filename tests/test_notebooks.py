"""Every chapter runs top to bottom in the smoke profile, alone, and on the paper profile's code path.

Each chapter gets a fresh kernel, a fresh empty working directory and a fresh empty
``KMEX_CACHE``: a chapter that reads a file written next to the notebooks, or a checkpoint that
another chapter left in the cache, fails here. Run with ``pytest -m notebooks -n 2``.

The chapters' hidden checks (``kmexplain_utils.chapters.notebook.check``) raise here, as in the book
build (``KMEX_STRICT_CHECKS=1``): the checks that run in a smoke-sized profile are identities
and shapes that hold at any size (the claims about accuracy and semantics are guarded by
``cfg.profile.is_smoke``), so a failing one is a bug that a warning would hide.

``pytest -m paper_smoke -n 2`` runs every chapter in the ``paper-smoke`` profile: the paper
profile's code path (ResNet34 with torchvision's topology, the ImageNet weights loaded through
torchvision's weight enum, the CUB-200-2011 loader and its keypoint parts, the whole split) on
a generated stand-in of CUB's file layout and a stand-in weights file (tests/paper_standin.py),
so nothing is downloaded.
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


@pytest.fixture(scope="session")
def paper_standin(tmp_path_factory):
    """A generated CUB-200-2011 folder and a ResNet34 weights file (copied into each chapter's cache)."""
    from paper_standin import make_cub_standin, make_resnet34_weights

    base = tmp_path_factory.mktemp("paper_standin")
    make_cub_standin(base)
    make_resnet34_weights(base / "cache")
    return base


@pytest.mark.notebooks
@pytest.mark.slow
@pytest.mark.parametrize("path", _chapter_params())
def test_chapter_runs_in_smoke_profile(path, tmp_path, monkeypatch):
    _execute_chapter(path, tmp_path, monkeypatch, "smoke")


@pytest.mark.paper_smoke
@pytest.mark.slow
@pytest.mark.parametrize("path", _chapter_params())
def test_chapter_runs_on_paper_code_path(path, tmp_path, monkeypatch, paper_standin):
    monkeypatch.setenv("KMEX_CUB_ROOT", str(paper_standin))  # the parent of CUB_200_2011/, as extracted
    import shutil

    from paper_standin import standin_env

    weights = next((paper_standin / "cache" / "weights").iterdir())
    (tmp_path / "cache" / "weights").mkdir(parents=True)
    shutil.copy(weights, tmp_path / "cache" / "weights" / weights.name)  # _execute_chapter sets KMEX_CACHE there
    for k, v in standin_env(weights).items():
        monkeypatch.setenv(k, v)
    nb = _execute_chapter(path, tmp_path, monkeypatch, "paper-smoke")
    text = "\n".join(
        out.get("text", "") if isinstance(out.get("text", ""), str) else "".join(out["text"])
        for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
    )
    assert "profile=paper-smoke (dataset=cub, 64px, model=resnet34)" in text, (
        f"{path.name} did not run on the paper profile's code path (setup_notebook's line is missing)"
    )
    for sign in ("WeightsError", "Downloading:"):
        assert sign not in text, f"{path.name}: the stand-in weights were not used ({sign!r} in its output)"


def _execute_chapter(path, tmp_path, monkeypatch, profile):
    if path is None:
        pytest.fail("no chapter notebooks found in book/")
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.setenv("KMEX_PROFILE", profile)
    monkeypatch.setenv("KMEX_STRICT_CHECKS", "1")  # hidden checks raise, as in the book build
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
        pytest.fail(f"{path.name} raised in the {profile} profile:\n{message[-4000:]}", pytrace=False)

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
    return nb
