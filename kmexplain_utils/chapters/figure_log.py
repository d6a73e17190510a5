"""How wide each image panel of a chapter's figures is, so that the built site can be checked.

A figure of eight image panels saved 700 px wide shows each panel at less than 90 px: a
reader cannot see a concept map that small. The rule of the book is that no image panel is
narrower than 160 px on the page at a 1280 px wide window (issue 25). The width on the page
depends on the saved figure (its layout) and on the page (the text column scales the picture
down), so it is measured in two halves:

- here, while a chapter executes: every figure IPython displays as a PNG is logged with the
  SHA-256 of its bytes (the name Jupyter Book gives the image file on the site) and the
  fraction of the picture's width that each image panel (an axes holding an ``imshow``) takes;
- in the browser test (``tests/test_browser.py``): each picture's rendered width times its
  smallest fraction is the narrowest panel's width on the page.

Logging is off unless the environment variable :data:`FIGURE_LOG_ENV` names a file (``make
book`` sets it); :func:`~kmexplain_utils.chapters.notebook.setup_notebook` then calls
:func:`install_figure_log`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

__all__ = ["FIGURE_LOG_ENV", "image_panel_fractions", "png_width", "install_figure_log", "read_figure_log"]

#: Environment variable naming the JSON-lines file that displayed figures are logged to.
FIGURE_LOG_ENV = "KMEX_FIGURE_LOG"


def png_width(data: bytes) -> int:
    """The width in pixels of a PNG image, read from its header.

    >>> png_width(b"\\x89PNG\\r\\n\\x1a\\n" + b"\\x00\\x00\\x00\\rIHDR" + (640).to_bytes(4, "big") + bytes(8))
    640
    """
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG image (no PNG signature and IHDR header)")
    return struct.unpack(">I", data[16:20])[0]


def image_panel_fractions(fig: Any, pad_inches: float | None = None) -> list[float]:
    """Width of each image panel as a fraction of the figure saved with ``bbox_inches="tight"``.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        A drawn figure (IPython draws it while saving it).
    pad_inches : float, optional
        The padding of the tight bounding box (default ``rcParams["savefig.pad_inches"]``).

    Returns
    -------
    list of float
        One fraction per axes that holds an image (``ax.images``), in the figure's order;
        empty when the figure has no image panel.
    """
    import matplotlib as mpl

    pad = mpl.rcParams["savefig.pad_inches"] if pad_inches is None else pad_inches
    renderer = fig.canvas.get_renderer()
    tight = fig.get_tightbbox(renderer)
    width_px = (tight.width + 2 * float(pad)) * fig.dpi
    return [ax.get_window_extent(renderer).width / width_px for ax in fig.axes if ax.images and ax.get_visible()]


def install_figure_log(path: str | os.PathLike[str], notebook: str | None = None) -> bool:
    """Log every figure the running IPython kernel displays as PNG to ``path`` (JSON lines).

    Each line holds ``sha256`` (of the PNG bytes), ``width_px`` (of the PNG), ``fractions``
    (:func:`image_panel_fractions`) and ``notebook``. The figure is displayed exactly as before.

    Parameters
    ----------
    path : str or os.PathLike
        The log file (appended to; its folder is created).
    notebook : str, optional
        A name stored with each line (the chapter).

    Returns
    -------
    bool
        False outside IPython (nothing installed), True otherwise.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    import importlib

    import matplotlib
    from matplotlib.figure import Figure

    backend = matplotlib.get_backend()
    if backend.startswith("module://"):  # importing the inline backend registers its PNG formatter
        importlib.import_module(backend.removeprefix("module://"))
    formatter = shell.display_formatter.formatters["image/png"]
    try:
        original = formatter.lookup_by_type(Figure)
    except KeyError:
        return False
    if getattr(original, "_kmex_logged", False):
        return True
    log = Path(path)
    log.parent.mkdir(parents=True, exist_ok=True)

    def logged(fig: Figure) -> Any:
        out = original(fig)
        if out:
            data = base64.b64decode(out) if isinstance(out, str) else bytes(out)
            record = {"sha256": hashlib.sha256(data).hexdigest(), "width_px": png_width(data),
                      "fractions": [round(f, 4) for f in image_panel_fractions(fig)], "notebook": notebook}
            with log.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
        return out

    logged._kmex_logged = True  # type: ignore[attr-defined]
    formatter.for_type(Figure, logged)
    return True


def read_figure_log(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The logged figures by SHA-256 (the last line wins when a figure was logged twice)."""
    records: dict[str, dict[str, Any]] = {}
    p = Path(path)
    if p.is_file():
        for line in p.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                records[rec["sha256"]] = rec
    return records
