"""The student site (``make book-student``), as a reader sees it: no solution on any page.

Every chapter page of ``_build/student_site/_build/html`` is opened in headless Chromium (Debian's
``/usr/bin/chromium``, offline, ``--dump-dom``), and its rendered DOM must hold none of the
chapter's solutions: no "Solution" dropdown, no line of a solution code cell (lines that also
appear outside solutions excepted), and a stub in place of every coding solution. Skipped without
the site or Chromium, except in CI (``CI=true``), where that fails.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(os.environ.get("KMEX_STUDENT_SITE", ROOT / "_build" / "student_site" / "_build" / "html")).resolve()
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--virtual-time-budget=4000"]


def _skip_or_fail(reason: str) -> None:
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


def _dom(page: Path) -> str:
    chromium = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if chromium is None:
        _skip_or_fail("chromium not found (apt-get install chromium fonts-dejavu-core)")
    with tempfile.TemporaryDirectory(prefix="kmex-student-") as profile:
        out = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                             capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "<html" in out.stdout, f"chromium could not render {page}: {out.stderr[-500:]}"
    return out.stdout


def _text(dom: str) -> str:
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    return html.unescape(re.sub(r"<[^>]+>", "", dom))


def _solution_lines(nb: nbformat.NotebookNode) -> list[str]:
    """Distinctive lines of the solution code cells (not comments, not shared with other cells)."""
    others = "\n".join(c.source for c in nb.cells if "solution" not in c.metadata.get("tags", []))
    lines = []
    for c in nb.cells:
        if c.cell_type == "code" and "solution" in c.metadata.get("tags", []):
            for ln in c.source.splitlines():
                s = ln.strip()
                if len(s) > 20 and not s.startswith("#") and s not in others:
                    lines.append(s)
    return lines


@pytest.mark.student_site
@pytest.mark.parametrize("chapter", [pytest.param(c, id=c.stem) for c in CHAPTERS])
def test_no_solution_on_the_student_pages(chapter):
    if not (SITE / "index.html").is_file():
        _skip_or_fail(f"{SITE} is missing: build the student site first (make book-student)")
    page = SITE / "book" / f"{chapter.stem}.html"
    assert page.is_file(), f"the student site has no page for {chapter.name}"
    nb = nbformat.read(chapter, as_version=4)
    text = _text(_dom(page))
    compact = re.sub(r"\s+", " ", text)
    assert not re.search(r"(^|\n)\s*Solution\b", text), f"{page.name}: a 'Solution' block is on the page"
    leaked = [ln for ln in _solution_lines(nb) if re.sub(r"\s+", " ", ln) in compact]
    assert not leaked, f"{page.name}: solution code on the student page: {leaked[:3]}"
    n_solutions = sum(c.cell_type == "code" and "solution" in c.metadata.get("tags", []) for c in nb.cells)
    assert compact.count("NotImplementedError") >= n_solutions, f"{page.name}: a coding exercise lost its stub"
    assert "kmex_compute_time" not in compact, f"{page.name}: the header's glued compute time is not rendered"


@pytest.mark.student_site
def test_student_intro_shows_the_claims_table():
    """The introduction pastes chapter 5's claims table (glued across pages): it must be there."""
    page = SITE / "intro.html"
    if not page.is_file():
        page = SITE / "book" / "intro.html"
    if not (SITE / "index.html").is_file():
        _skip_or_fail(f"{SITE} is missing: build the student site first (make book-student)")
    assert page.is_file(), f"the student site has no introduction page under {SITE}"
    dom = _dom(page)
    text = re.sub(r"\s+", " ", _text(dom))
    assert "claims_table" not in text, "the introduction's glued claims table is not rendered"
    assert "<table" in dom, "the introduction shows no table: the claims table glued from chapter 5 is missing"
