"""Matplotlib glue shared by every layer that draws (base layer: imports nothing of the package).

matplotlib is imported inside the function, so importing this module costs nothing.
"""

from __future__ import annotations

from typing import Any

__all__ = ["new_axes"]


def new_axes(ax: Any = None, size: tuple[float, float] = (3.0, 3.0)) -> tuple[Any, Any]:
    """The figure and axes to draw on: ``ax`` and its figure, or a new figure of ``size`` inches.

    Example
    -------
    >>> fig, ax = new_axes(size=(2.0, 1.0))
    >>> new_axes(ax) == (fig, ax)
    True
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _fig, ax = plt.subplots(figsize=size)
    return ax.figure, ax
