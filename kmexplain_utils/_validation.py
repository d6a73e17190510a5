"""Input checks shared by the package, with messages that name the fix."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.exceptions import NotFittedError as SklearnNotFittedError

__all__ = [
    "NotFittedError",
    "check_is_fitted",
    "as_float_tensor",
    "check_tensor",
    "check_rgb_images",
    "check_finite",
    "to_numpy",
]


def to_numpy(x: object, name: str) -> np.ndarray:
    """A tensor (detached, on the CPU) or an array as a numpy array; anything else is a ``TypeError`` naming ``name``."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")


class NotFittedError(SklearnNotFittedError):
    """Raised when an estimator is used before ``fit`` (a ``ValueError`` and ``AttributeError``).

    A subclass of scikit-learn's ``NotFittedError``, so that scikit-learn's
    tools recognise it.
    """


def check_is_fitted(estimator: object, attributes: Sequence[str]) -> None:
    """Raise :class:`NotFittedError` unless every attribute in ``attributes`` exists."""
    missing = [a for a in attributes if getattr(estimator, a, None) is None]
    if missing:
        name = type(estimator).__name__
        raise NotFittedError(
            f"This {name} instance is not fitted yet (missing {', '.join(missing)}); "
            f"call {name}.fit(...) before using it."
        )


def as_float_tensor(
    x: torch.Tensor | np.ndarray | Sequence,
    *,
    name: str = "X",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Convert ``x`` to a floating torch tensor without copying when possible.

    Integer and boolean inputs become ``float32``; ``float64`` is kept unless
    ``dtype`` says otherwise.
    """
    if isinstance(x, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x))
    elif isinstance(x, torch.Tensor):
        t = x
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except Exception as exc:  # pragma: no cover - message only
            raise TypeError(f"{name} must be a tensor or array, got {type(x).__name__}") from exc
    if dtype is None:
        dtype = t.dtype if t.is_floating_point() else torch.float32
    return t.to(device=device if device is not None else t.device, dtype=dtype)


def check_tensor(
    x: torch.Tensor,
    ndim: int,
    *,
    name: str,
    shape_doc: str,
) -> torch.Tensor:
    """Check that ``x`` is a tensor with ``ndim`` dimensions.

    Parameters
    ----------
    x : torch.Tensor
        The input.
    ndim : int
        Expected number of dimensions.
    name : str
        Argument name used in the message.
    shape_doc : str
        The expected shape in words, e.g. ``"(N, C, H, W)"``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape_doc}, got {type(x).__name__}")
    if x.ndim != ndim:
        hint = ""
        if ndim == 4 and x.ndim == 3:
            hint = " For a single image, add a batch dimension with x.unsqueeze(0)."
        raise ValueError(
            f"{name} must have shape {shape_doc} ({ndim} dimensions), got shape {tuple(x.shape)}.{hint}"
        )
    return x


def check_rgb_images(x: torch.Tensor, *, name: str = "images") -> torch.Tensor:
    """Check a batch of RGB images ``(N, 3, H, W)`` of floats."""
    check_tensor(x, 4, name=name, shape_doc="(N, 3, H, W)")
    if x.shape[1] != 3:
        hint = (
            " Grey-scale images: repeat the channel with x.expand(-1, 3, -1, -1)."
            if x.shape[1] == 1
            else " Channels-last input? Use x.permute(0, 3, 1, 2)." if x.shape[-1] == 3 else ""
        )
        raise ValueError(f"{name} must be RGB with 3 channels, shape (N, 3, H, W); got shape {tuple(x.shape)}.{hint}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be floating point in [0, 1], got dtype {x.dtype}; convert with x.float() / 255."
        )
    return x


def check_finite(x: torch.Tensor, *, name: str = "X") -> None:
    """Raise a clear error if ``x`` contains NaN or infinity."""
    if not bool(torch.isfinite(x).all()):
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(
            f"{name} contains {n_bad} NaN or infinite value(s); remove or impute them before fitting."
        )
