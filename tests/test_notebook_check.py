"""notebook.check: a chapter's hidden claim raises in the book build, warns elsewhere."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest

from kmexplain_utils.chapters import notebook
from kmexplain_utils.chapters.notebook import BookCheckWarning, check

ROOT = Path(__file__).resolve().parents[1]
# chapters whose hidden cells use check() (chapters 04 and 05 are converted separately)
CONVERTED = ["00_data", "01_cnn_is_sem", "02_kmeans_classifier", "03_explaining_b4", "A1_benchmarks"]


def test_true_claim_passes_silently(monkeypatch):
    for value in ("1", ""):
        monkeypatch.setenv("KMEX_STRICT_CHECKS", value)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert check(True, "never shown") is True
            assert check(3 > 2, lambda: pytest.fail("a lazy message is not built for a true claim")) is True


@pytest.mark.parametrize("value", ["1", "true", "YES", " on "])
def test_false_claim_raises_in_the_book_build(monkeypatch, value):
    monkeypatch.setenv("KMEX_STRICT_CHECKS", value)
    assert notebook.strict_checks()
    with pytest.raises(AssertionError, match="k-means 0.5 vs linear 0.9"):
        check(0.5 > 0.9, "k-means 0.5 vs linear 0.9")
    with pytest.raises(AssertionError, match="lazy 42"):
        check(False, lambda: f"lazy {6 * 7}")


@pytest.mark.parametrize("value", [None, "", "0", "false", "off"])
def test_false_claim_only_warns_elsewhere(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("KMEX_STRICT_CHECKS", raising=False)
    else:
        monkeypatch.setenv("KMEX_STRICT_CHECKS", value)
    assert not notebook.strict_checks()
    with pytest.warns(BookCheckWarning, match="Check failed: nmi 0.1 < 0.2"):
        assert check(False, "nmi 0.1 < 0.2") is False


def _hidden_code(stem: str) -> list[str]:
    nb = json.loads((ROOT / "book" / f"{stem}.ipynb").read_text())
    return [
        "".join(c["source"]) for c in nb["cells"]
        if c["cell_type"] == "code" and {"remove-cell", "remove-input"} & set(c.get("metadata", {}).get("tags", []))
    ]


@pytest.mark.parametrize("stem", CONVERTED)
def test_converted_chapters_use_check_not_assert(stem):
    hidden = _hidden_code(stem)
    assert hidden, f"{stem}: no hidden cell found"
    text = "\n".join(hidden)
    asserts = [line for line in text.splitlines() if re.match(r"\s*assert\b", line)]
    assert not asserts, f"{stem}: hidden cells still use a bare assert (raises in Colab): {asserts}"
    assert "check(" in text, f"{stem}: its hidden checks must call kmexplain_utils.chapters.notebook.check"


def test_book_build_and_chapter_tests_turn_checks_strict():
    makefile = (ROOT / "Makefile").read_text()
    assert "KMEX_STRICT_CHECKS=1" in makefile or "KMEX_STRICT_CHECKS := 1" in makefile
    assert "KMEX_STRICT_CHECKS" in (ROOT / "tests" / "test_notebooks.py").read_text()


def test_chapter_times_are_measured_from_the_set_up_cell(tmp_path, monkeypatch):
    """The header's compute time is measured (set-up cell -> last cell), the reading time counted."""
    import time as _time

    ctx = notebook.setup_notebook("smoke", style=False, verbose=False)
    _time.sleep(0.05)
    assert 0.05 <= notebook.elapsed_seconds(ctx) < 60
    cells = [{"cell_type": "markdown", "metadata": {}, "source": "word " * 600},
             {"cell_type": "code", "metadata": {"tags": ["remove-cell"]}, "source": "hidden " * 6000},
             {"cell_type": "code", "metadata": {"tags": ["remove-input"]}, "source": "unseen " * 6000},
             {"cell_type": "code", "metadata": {"tags": ["hide-output"]}, "source": "shown " * 150}]
    chapter = tmp_path / "c.ipynb"
    chapter.write_text(json.dumps({"cells": cells}))
    assert notebook.reading_minutes(chapter) == 5  # 600 + 150 words shown; hidden code not counted
    out = notebook.glue_chapter_times(ctx, chapter)
    assert re.match(r"\d+ s on the run that produced this page \(profile smoke", out["compute_time"])
    assert out["reading_time"] == "about 5 min"
    # generated text (a chapter's readings) is on the page, not in the file: it counts too
    assert notebook.reading_minutes(chapter, generated=["read " * 300]) == 7
    assert notebook.glue_chapter_times(ctx, chapter, generated=["read " * 300])["reading_time"] == "about 7 min"


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "book").glob("*.ipynb")))
def test_every_chapter_has_a_header_with_glued_times(name):
    """Every chapter shows a header (objectives, prerequisites, reading and compute time) whose times
    are glued by the chapter's own last cell (notebook.glue_chapter_times), never typed."""
    nb = json.loads((ROOT / "book" / f"{name}.ipynb").read_text())
    md = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
          for c in nb["cells"] if c["cell_type"] == "markdown"]
    code = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in nb["cells"] if c["cell_type"] == "code"]
    header = [t for t in md if "kmex_compute_time" in t]
    assert len(header) == 1, f"{name}: no (or several) header cells referring to the glued compute time"
    for word in ("Learning objectives", "Prerequisites", "Reading time", "Compute time"):
        assert word in " ".join(header[0].split()), f"{name}: header lacks {word!r}"
    assert any("glue_chapter_times(" in c for c in code[-3:]), f"{name}: the last cells must glue the times"
    assert any("misconception" in t.lower() for t in md), f"{name}: no 'common misconceptions' box"
