"""The one call at the top of every chapter: :func:`setup_notebook`."""

from __future__ import annotations

import dataclasses

import torch

from .config import Profile, get_profile, resolve_device, set_seed

__all__ = ["NotebookContext", "setup_notebook"]


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
