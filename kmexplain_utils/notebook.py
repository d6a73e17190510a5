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
import os
import warnings
from collections.abc import Callable

import torch

from .config import Profile, get_profile, resolve_device, set_seed

__all__ = ["STRICT_CHECKS_ENV", "BookCheckWarning", "NotebookContext", "check", "strict_checks", "setup_notebook"]

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
    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    dev = resolve_device(device)
    set_seed(seed)
    if style:
        from .plotting import set_book_style

        set_book_style()
    ctx = NotebookContext(profile=prof, device=dev, seed=seed)
    if verbose:
        print(ctx)
    return ctx
