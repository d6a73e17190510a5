"""The figure log behind the browser test's "no image panel under 160 px" rule (issue 25)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from kmexplain_utils.chapters import figure_log  # noqa: E402


def _white_runs(row: np.ndarray) -> list[int]:
    runs, n = [], 0
    for v in row:
        if v:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs + ([n] if n else [])


@pytest.mark.parametrize("layout", [None, "constrained"])
def test_fractions_match_the_panels_measured_in_the_saved_png(layout):
    """White images on a black figure: the logged fractions times the PNG width are the white runs."""
    fig, axes = plt.subplots(1, 3, figsize=(9, 2.5), facecolor="black", layout=layout)
    for ax in axes:
        ax.imshow(np.ones((8, 12)), cmap="gray", vmin=0, vmax=1)
        ax.axis("off")
    fig.canvas.draw()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", facecolor="black")
    png = buf.getvalue()
    width = figure_log.png_width(png)
    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    assert width == grey.shape[1]
    measured = _white_runs(grey[grey.shape[0] // 2] > 128)
    logged = [f * width for f in figure_log.image_panel_fractions(fig)]
    assert len(measured) == len(logged) == 3
    np.testing.assert_allclose(logged, measured, atol=1.5)
    plt.close(fig)


def test_only_image_panels_are_counted():
    fig, (a, b) = plt.subplots(1, 2)
    a.imshow(np.zeros((4, 4)))
    b.plot([0, 1], [0, 1])
    fig.canvas.draw()
    assert len(figure_log.image_panel_fractions(fig)) == 1
    plt.close(fig)


def test_png_width_rejects_other_bytes():
    with pytest.raises(ValueError, match="not a PNG"):
        figure_log.png_width(b"GIF89a" + bytes(30))


def test_install_logs_each_displayed_figure(tmp_path):
    """In an IPython shell with the PNG formatter, a displayed figure is logged and shown unchanged."""
    pylabtools = pytest.importorskip("IPython.core.pylabtools")
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        pylabtools.select_figure_formats(shell, {"png"})
        formatter = shell.display_formatter.formatters["image/png"]
        fig, axes = plt.subplots(1, 4, figsize=(8, 2))
        for ax in axes:
            ax.imshow(np.zeros((5, 5)))
        before = formatter(fig)
        log = tmp_path / "log" / "figures.jsonl"
        assert figure_log.install_figure_log(log, notebook="ch")
        assert figure_log.install_figure_log(log)  # a second call does not wrap twice
        after = formatter(fig)
        assert after == before
        records = figure_log.read_figure_log(log)
        assert len(records) == 1 and len(log.read_text().splitlines()) == 1
        (rec,) = records.values()
        assert rec["notebook"] == "ch" and len(rec["fractions"]) == 4 and 0 < rec["fractions"][0] < 0.25
        plt.close(fig)
    finally:
        InteractiveShell.clear_instance()


def test_install_outside_ipython_does_nothing(tmp_path):
    assert figure_log.install_figure_log(tmp_path / "x.jsonl") is False
    assert not (tmp_path / "x.jsonl").exists()
    assert figure_log.read_figure_log(tmp_path / "x.jsonl") == {}
