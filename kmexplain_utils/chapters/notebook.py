"""The one call at the top of every chapter (:func:`setup_notebook`) and the chapters' hidden checks (:func:`check`).

A chapter checks its own claims in a hidden cell with :func:`check`: in the
book build (and the tests that execute chapters), where the environment
variable ``KMEX_STRICT_CHECKS`` is on, a claim that does not hold raises
``AssertionError`` and fails the build; everywhere else (Colab, Jupyter on
your machine) it only warns with a :class:`BookCheckWarning`, so that a
reader who waited for a chapter on a GPU keeps its results.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..config import Profile, get_profile, resolve_device, set_seed
from .figure_log import FIGURE_LOG_ENV, install_figure_log

__all__ = [
    "STRICT_CHECKS_ENV",
    "BookCheckWarning",
    "NotebookContext",
    "check",
    "strict_checks",
    "setup_notebook",
    "elapsed_seconds",
    "reading_minutes",
    "glue_chapter_times",
    "glue",
]

#: Glue keys of a chapter's header (see :func:`glue_chapter_times`).
COMPUTE_TIME_KEY = "kmex_compute_time"
READING_TIME_KEY = "kmex_reading_time"
#: Reading speed used for the header's reading time (technical prose, words per minute).
WORDS_PER_MINUTE = 150

# when the current chapter's set-up cell ran (time.perf_counter()); set by setup_notebook
_STARTED: float | None = None

#: Environment variable that makes :func:`check` raise (``1``/``true``/``yes``/``on``);
#: ``make book`` and the test stages that execute chapters set it.
STRICT_CHECKS_ENV = "KMEX_STRICT_CHECKS"


class BookCheckWarning(UserWarning):
    """A chapter's claim did not hold on this run (outside the book build)."""


def strict_checks() -> bool:
    """Whether :func:`check` raises: ``KMEX_STRICT_CHECKS`` is ``1``, ``true``, ``yes`` or ``on``."""
    return os.environ.get(STRICT_CHECKS_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def check(condition: object, message: str | Callable[[], str] = "") -> bool:
    """Check a chapter's claim: raise in the book build, warn elsewhere.

    Parameters
    ----------
    condition : object
        The claim; its truth value is used (``bool(condition)``).
    message : str or callable, default ""
        What failed, with the numbers (e.g. ``f"k-means {a:.3f} vs linear {b:.3f}"``); a
        callable is only called when the check fails.

    Returns
    -------
    bool
        ``bool(condition)`` (when it does not raise).

    Raises
    ------
    AssertionError
        When the claim is false and :func:`strict_checks` is on (``KMEX_STRICT_CHECKS=1``,
        set by ``make book`` and the notebook tests). Otherwise a false claim emits a
        :class:`BookCheckWarning` saying that the text may not describe this run.

    Examples
    --------
    >>> import os, warnings
    >>> os.environ.pop("KMEX_STRICT_CHECKS", None) and None
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     check(1 + 1 == 3, "arithmetic")
    False
    >>> str(caught[0].message).startswith("Check failed: arithmetic")
    True
    """
    if bool(condition):
        return True
    text = message() if callable(message) else str(message)
    if strict_checks():
        raise AssertionError(text)
    warnings.warn(
        f"Check failed: {text or 'a claim of this chapter'}. The chapter's text may not describe this run "
        f"(the book build, with {STRICT_CHECKS_ENV}=1, would stop here).",
        BookCheckWarning,
        stacklevel=2,
    )
    return False


@dataclasses.dataclass(frozen=True)
class NotebookContext:
    """What a chapter needs to know about the run.

    Attributes
    ----------
    profile : Profile
        The active profile (``KMEX_PROFILE``, default ``quick``).
    device : torch.device
        Where models and k-means run.
    seed : int
        The seed every chapter uses, so that the same images come back.
    """

    profile: Profile
    device: torch.device
    seed: int
    started: float = dataclasses.field(default_factory=time.perf_counter, compare=False)

    def __str__(self) -> str:
        p = self.profile
        return (
            f"profile={p.name} (dataset={p.dataset}, {p.image_size}px, model={p.model}), "
            f"device={self.device}, seed={self.seed}, torch={torch.__version__}"
        )


def setup_notebook(
    profile: str | Profile | None = None,
    *,
    seed: int = 0,
    device: str | torch.device | None = "auto",
    style: bool = True,
    verbose: bool = True,
) -> NotebookContext:
    """Set up a chapter: profile, device, seed and the book's plotting style.

    Parameters
    ----------
    profile : str or Profile, optional
        Profile name or object; default from ``KMEX_PROFILE`` (``quick``).
    seed : int, default 0
        Global seed (Python, NumPy, PyTorch).
    device : str or torch.device, default "auto"
        ``"auto"`` uses CUDA when available.
    style : bool, default True
        Apply the book's matplotlib style (the only global change made).
    verbose : bool, default True
        Print a one-line summary of the run.

    Returns
    -------
    NotebookContext
    """
    global _STARTED
    _STARTED = time.perf_counter()
    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    dev = resolve_device(device)
    set_seed(seed)
    if style:
        from ..plotting import set_book_style

        set_book_style()
    ctx = NotebookContext(profile=prof, device=dev, seed=seed, started=_STARTED)
    if os.environ.get(FIGURE_LOG_ENV):  # the book build measures image panels (chapters.figure_log)
        install_figure_log(os.environ[FIGURE_LOG_ENV], notebook=os.environ.get("JPY_SESSION_NAME"))
    if verbose:
        print(ctx)
    return ctx


def elapsed_seconds(ctx: NotebookContext | None = None) -> float:
    """Seconds since the chapter's set-up cell (:func:`setup_notebook`) ran.

    Parameters
    ----------
    ctx : NotebookContext, optional
        The chapter's context; default: the last :func:`setup_notebook` call of this kernel.

    Returns
    -------
    float
        Wall-clock seconds (``time.perf_counter``).

    Raises
    ------
    RuntimeError
        When :func:`setup_notebook` has not run in this kernel and no ``ctx`` is given.
    """
    start = ctx.started if ctx is not None else _STARTED
    if start is None:
        raise RuntimeError("setup_notebook() has not run in this kernel: no start time to measure from")
    return time.perf_counter() - start


def _words(text: str) -> int:
    text = re.sub(r"\$\$.*?\$\$|```\{math\}.*?```", " equation ", text, flags=re.S)  # an equation reads slowly
    return len(re.findall(r"[A-Za-z0-9\u00c0-\u024f]+", text))


def reading_minutes(notebook: str | Path, *, words_per_minute: int = WORDS_PER_MINUTE,
                    generated: Sequence[str] = ()) -> int:
    """Reading time of a chapter file, in whole minutes, from the words of its text and code.

    Counts the words of the markdown cells and of the code the page shows (a reader reads the
    code too; not the code of cells tagged ``remove-cell``, ``remove-input`` or ``solution``,
    which the page does not show or folds away), at ``words_per_minute``, plus the words of
    ``generated``.

    Parameters
    ----------
    notebook : str or Path
        The chapter's ``.ipynb`` file.
    words_per_minute : int, default 150
        Reading speed.
    generated : sequence of str, default ()
        Text the chapter generates and shows (e.g. its readings, computed by a package function):
        the page holds it, the file does not.

    Returns
    -------
    int
        At least 1.

    Examples
    --------
    >>> import json, tempfile, pathlib
    >>> cells = [{"cell_type": "markdown", "metadata": {}, "source": "word " * 300}]
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "c.ipynb"
    >>> _ = f.write_text(json.dumps({"cells": cells}))
    >>> reading_minutes(f)
    2
    """
    cells = json.loads(Path(notebook).read_text(encoding="utf-8")).get("cells", [])
    n = 0
    for cell in cells:
        tags = set(cell.get("metadata", {}).get("tags", []))
        if cell.get("cell_type") == "code" and tags & {"remove-cell", "remove-input", "solution"}:
            continue
        src = cell.get("source", "")
        n += _words("".join(src) if isinstance(src, list) else src)
    n += sum(_words(str(text)) for text in generated)
    return max(1, round(n / max(1, int(words_per_minute))))


def _format_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


def glue_chapter_times(ctx: NotebookContext, notebook: str | Path | None = None, *,
                       generated: Sequence[str] = ()) -> dict[str, str]:
    """Glue the chapter header's compute time (measured now) and reading time (counted from the file).

    Call it in the chapter's last cell: the compute time is the wall-clock time from the set-up
    cell to that cell *in this run* (in the book build: the build that produced the page), with
    the profile and device it ran on. The header refers to it as
    ``{glue:md}`kmex_compute_time``` (and ``{glue:md}`kmex_reading_time```). Outside a
    Jupyter Book build (no ``myst_nb``) it only returns the texts.

    Parameters
    ----------
    ctx : NotebookContext
        The chapter's context (from :func:`setup_notebook`).
    notebook : str or Path, optional
        The chapter's ``.ipynb`` file, for the reading time (skipped when missing, e.g. in Colab).
    generated : sequence of str, default ()
        The text the chapter generated and shows, counted in the reading time (:func:`reading_minutes`).

    Returns
    -------
    dict
        ``{"compute_time": ..., "reading_time": ...}`` as shown.
    """
    seconds = elapsed_seconds(ctx)
    out = {
        "compute_time": f"{_format_seconds(seconds)} on the run that produced this page (profile "
        f"{ctx.profile.name}, {ctx.device.type}, {torch.get_num_threads()} CPU threads)",
    }
    if notebook is not None and Path(notebook).is_file():
        out["reading_time"] = f"about {reading_minutes(notebook, generated=generated)} min"
    try:
        from IPython.display import Markdown
        from myst_nb import glue
    except ImportError:  # pragma: no cover - not in a Jupyter Book environment
        return out
    glue(COMPUTE_TIME_KEY, Markdown(out["compute_time"]), display=False)
    if "reading_time" in out:
        glue(READING_TIME_KEY, Markdown(out["reading_time"]), display=False)
    return out


def glue(name: str, value: object, *, display: bool = False) -> bool:
    """Glue ``value`` under ``name`` for the book's pages (``{glue:md}`name```), where that is possible.

    In a Jupyter Book build (``myst_nb`` installed) this is ``myst_nb.glue``; elsewhere (Colab,
    a plain Jupyter) nothing is glued and, with ``display=True``, the value is only displayed.
    Chapters call this instead of importing ``myst_nb`` themselves, so that they run where
    ``myst_nb`` is not installed.

    Parameters
    ----------
    name : str
        The glue key.
    value : object
        What to glue (e.g. ``IPython.display.Markdown``, a figure, a number).
    display : bool
        Also display it in the notebook.

    Returns
    -------
    bool
        Whether it was glued.

    Examples
    --------
    >>> isinstance(glue("kmex_example", 1.5), bool)
    True
    """
    try:
        from myst_nb import glue as _glue
    except ImportError:
        if display:
            from IPython.display import display as _display

            _display(value)
        return False
    _glue(name, value, display=display)
    return True
