"""Every figure of the book has alt text that says what it shows (cell metadata), not a file name.

myst-nb turns a code cell's ``mystnb.image.alt`` metadata into the ``alt`` attribute of the cell's
image outputs; without it, Sphinx writes the image's file name there, which is what a screen reader
then announces. The rule that finds the cells that draw a figure is static (the chapters are not
executed here): a cell draws a figure when its code (comments aside) assigns ``fig =``, titles a
figure, calls ``plt.subplots/figure/show``, one of the book's plotting helpers
(``plotting.plot_*``, ``show_*``, ``image_grid``, ``image_heatmap_grid``, ``nearest_images_grid``),
``views.figure(...)``, an explanation's (or an axis's) ``.plot(...)``, ``.imshow(...)`` or a
``.suptitle(...)``. On the built site,
``tests/test_site_access.py`` checks the result in Chromium, image by image.

The texts live in ``scripts/figure_alt_text.py``, which writes them into the notebooks.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))

FIGURE_CALL = re.compile(
    r"\bfig\s*=|\bfig\.suptitle\b|\bplt\.(?:subplots|figure|show)\b"
    r"|\bplotting\.(?:plot_\w+|show_\w+|image_grid|image_heatmap_grid|nearest_images_grid)\s*\("
    r"|\bviews\.figure\s*\(|\.plot\(|\.suptitle\(|\.imshow\("
)
# what a file name looks like: an image extension, a myst-nb hash, a notebook-output name
FILE_NAME = re.compile(r"\.(?:png|jpe?g|svg|gif|webp)\b|^[0-9a-f]{16,}|_\d+_\d+|^[\w.-]+$", re.I)
MIN_ALT = 30  # characters: "A figure." is not a description


def draws_a_figure(source: str) -> bool:
    """Whether a code cell draws a figure (the rule of this module's docstring)."""
    code = "\n".join(line.split("#", 1)[0] for line in source.splitlines())
    return bool(FIGURE_CALL.search(code))


def alt_problem(alt) -> str | None:
    """Why ``alt`` is not a usable alt text, or None."""
    if not isinstance(alt, str) or not alt.strip():
        return "no alt text"
    if FILE_NAME.search(alt.strip()):
        return f"alt text looks like a file name: {alt!r}"
    if len(alt.strip()) < MIN_ALT:
        return f"alt text too short to say what the figure shows: {alt!r}"
    return None


def figure_cell_problems(path: Path) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    problems = []
    for cell in nb.cells:
        if cell.cell_type != "code" or not draws_a_figure(cell.source):
            continue
        options = cell.metadata.get("mystnb", {})
        problem = alt_problem(options.get("image", {}).get("alt"))
        if problem:
            problems.append(f"cell {cell.get('id')}: {problem} (first line: {cell.source.splitlines()[0][:60]!r})")
        caption = options.get("figure", {}).get("caption")
        if caption is not None and len(str(caption).strip()) < MIN_ALT:
            problems.append(f"cell {cell.get('id')}: caption too short: {caption!r}")
    return problems


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in CHAPTERS])
def test_every_figure_cell_has_alt_text(path):
    problems = figure_cell_problems(path)
    assert not problems, (
        f"{path.name}: figures without a usable alt text (write it in scripts/figure_alt_text.py and run "
        "python scripts/figure_alt_text.py):\n  " + "\n  ".join(problems))


def test_the_rule_finds_figures_and_bad_alt_text(tmp_path):
    assert draws_a_figure("fig = plotting.image_grid(x)")
    assert draws_a_figure("plotting.plot_curves(df)")
    assert draws_a_figure("fig, ax = plt.subplots()")
    assert draws_a_figure("views.figure('B4', 8)")
    assert draws_a_figure("e.plot(0)")
    assert draws_a_figure("figs = [expl[lv].plot(cat) for lv in levels]")
    assert not draws_a_figure("print(df)  # fig = later")
    assert not draws_a_figure("figures = 3\nconfig = 2")
    for bad in ("", "   ", None, "0f3a9c2e4b5d6e7f8a9b.png", "output_12_0.png", "cell_3_1", "figure.svg",
                "fig", "A plot."):
        assert alt_problem(bad), bad
    assert alt_problem("Bar chart of each concept's contribution to the score.") is None
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("fig = plotting.image_grid(x)"),
                nbformat.v4.new_code_cell("fig = plotting.image_grid(x)",
                                          metadata={"mystnb": {"image": {"alt": "A grid of the test images, "
                                                                                "one per class."}}})]
    path = tmp_path / "chapter.ipynb"
    nbformat.write(nb, path)
    problems = figure_cell_problems(path)
    assert len(problems) == 1 and "no alt text" in problems[0], problems


def test_the_texts_are_written_into_the_chapters():
    spec = importlib.util.spec_from_file_location("figure_alt_text", ROOT / "scripts" / "figure_alt_text.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    problems = module.apply(ROOT, check=True)
    assert not problems, "run python scripts/figure_alt_text.py:\n  " + "\n  ".join(problems)
    for chapter, cells in module.FIGURES.items():
        for cell_id, texts in cells.items():
            assert alt_problem(texts["alt"]) is None, (chapter, cell_id)
