"""Input checks shared by the package, with messages that name the fix."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

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
    "as_size",
    "check_keypoints",
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


def as_size(size: Any, *, name: str = "size") -> tuple[int, int]:
    """``(H, W)`` from an int or a pair of positive ints (the one size parser of the package)."""
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (int(size), int(size))
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a pair (H, W) of positive ints, got {size!r}") from None
    if min(h, w) < 1:
        raise ValueError(f"{name} must be an int or a pair (H, W) of positive ints, got {(h, w)}")
    return (h, w)


def check_keypoints(
    keypoints: Sequence[Any],
    n_images: int,
    *,
    n_parts: int | None = None,
    image_size: Any = None,
    name: str = "keypoints",
) -> list[np.ndarray]:
    """Validate keypoints: one ``(P_i, 3)`` array ``(x, y, part label)`` per image.

    Parameters
    ----------
    keypoints : list of (P_i, 3) arrays or tensors
        One per image; an empty array (``(0, 3)`` or ``[]``) for an image without keypoints.
    n_images : int
        Number of images ``N`` the list must cover.
    n_parts : int, optional
        Number of part labels including the background: labels must lie in ``[1, n_parts)``.
    image_size : int or (int, int), optional
        ``(H, W)``: every keypoint must lie in the image, ``0 <= x < W`` and ``0 <= y < H``.
    name : str
        Name used in the error messages.

    Returns
    -------
    list of numpy.ndarray
        ``N`` float64 arrays ``(P_i, 3)`` (copies).

    Example
    -------
    >>> [k.shape for k in check_keypoints([[[1.0, 2.0, 1]], []], 2, n_parts=3)]
    [(1, 3), (0, 3)]
    """
    if not isinstance(keypoints, (list, tuple)):
        raise ValueError(f"{name} must be a list with one (P_i, 3) array per image, got {type(keypoints).__name__}")
    if len(keypoints) != n_images:
        raise ValueError(f"{name} must hold one array per image: {n_images} images, got {len(keypoints)} arrays")
    size = None if image_size is None else as_size(image_size, name="image_size")
    out = []
    for i, k in enumerate(keypoints):
        a = np.array(k.detach().cpu().numpy() if isinstance(k, torch.Tensor) else k, dtype=np.float64)
        if a.size == 0:
            a = a.reshape(0, 3)
        if a.ndim != 2 or a.shape[1] != 3:
            raise ValueError(f"{name}[{i}] must have shape (P, 3) = (x, y, part label), got {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"{name}[{i}] holds NaN or inf; drop the keypoints that are not visible")
        lab = a[:, 2]
        if (lab != np.round(lab)).any() or (lab < 1).any() or (n_parts is not None and (lab >= n_parts).any()):
            bad = lab[(lab != np.round(lab)) | (lab < 1) | (lab >= (n_parts or np.inf))]
            rng = f"[1, {n_parts})" if n_parts is not None else ">= 1"
            raise ValueError(
                f"{name}[{i}] has part labels {bad[:5].tolist()}; labels must be integers in {rng} "
                "(0 is the background, which has no keypoint)"
            )
        if size is not None and a.size:
            out_x = (a[:, 0] < 0) | (a[:, 0] >= size[1])
            out_y = (a[:, 1] < 0) | (a[:, 1] >= size[0])
            if (out_x | out_y).any():
                first = a[out_x | out_y][0, :2].tolist()
                raise ValueError(
                    f"{name}[{i}] has a keypoint at (x, y) = {first} outside the (H, W) = {size} image; "
                    "keypoints are in pixels of the image (0 <= x < W, 0 <= y < H): drop those outside it."
                )
        out.append(a)
    return out
