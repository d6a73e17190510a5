"""Reading image files into the book's tensors: square crop, resize, checks.

Every real image goes through the same geometry: a square box is cut from it
(the centred square of side ``min(W, H)``, or a square around a bounding box)
and resized to ``S x S``. Masks use the same box with nearest-neighbour
resampling, and keypoints are mapped with :func:`map_points`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

__all__ = ["CONVERTIBLE_MODES", "crop_resize", "map_points", "open_mask", "open_rgb", "square_box"]

# PIL modes converted to RGB silently (Oxford Pets holds a few grey, RGBA and CMYK files)
CONVERTIBLE_MODES = {"RGB", "L", "LA", "RGBA", "P", "PA", "CMYK", "1", "YCbCr"}


def open_rgb(path: str | os.PathLike):
    """Open an image file as an 8-bit RGB :class:`PIL.Image.Image`.

    Grey, palette, RGBA and CMYK files are converted; other modes (16-bit,
    float ...) raise a ``ValueError`` naming the file and the fix.
    """
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Image file {path} does not exist; check the dataset folder (re-extract the archive).")
    try:
        img = Image.open(path)
        img.load()
    except Exception as exc:
        raise ValueError(f"Cannot read image {path} ({exc}); the file is damaged: download or extract it again.") from exc
    if img.mode not in CONVERTIBLE_MODES:
        raise ValueError(
            f"Image {path} has PIL mode {img.mode!r}, not an 8-bit RGB image; convert it, e.g. "
            "PIL.Image.open(p).convert('RGB').save(p), or replace the file."
        )
    return img if img.mode == "RGB" else img.convert("RGB")


def open_mask(path: str | os.PathLike, size: tuple[int, int], image_path: str | os.PathLike):
    """Open a single-channel mask (trimap, segmentation) and check it matches its image.

    Parameters
    ----------
    path : path
        The mask file.
    size : (W, H)
        Size of the image it annotates.
    image_path : path
        That image (named in the error message).
    """
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Mask file {path} (for image {image_path}) does not exist; re-extract the annotations.")
    m = Image.open(path)
    m.load()
    if m.size != tuple(size):
        raise ValueError(
            f"Mask {path} has size {m.size} (W, H) but its image {image_path} has size {tuple(size)}; "
            "the annotation does not belong to this image: re-extract the annotations archive."
        )
    if m.mode not in ("L", "P", "1", "I", "I;16"):
        m = m.convert("L")
    return m


def square_box(
    width: int, height: int, bbox: tuple[float, float, float, float] | None = None, margin: float = 0.1
) -> tuple[int, int, int, int]:
    """A square crop box ``(left, top, right, bottom)`` in pixels.

    Without ``bbox``: the centred square of side ``min(width, height)``. With
    ``bbox = (x, y, w, h)``: a square of side ``max(w, h) * (1 + 2 margin)``
    centred on it (it may stick out of the image; the outside is black).
    """
    if bbox is None:
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        return left, top, left + side, top + side
    x, y, w, h = bbox
    side = max(1, round(max(w, h) * (1 + 2 * margin)))
    cx, cy = x + w / 2, y + h / 2
    left, top = round(cx - side / 2), round(cy - side / 2)
    return left, top, left + side, top + side


def crop_resize(img, box: tuple[int, int, int, int], size: int, nearest: bool = False) -> np.ndarray:
    """Crop ``box`` from a PIL image (padding with 0 outside) and resize to ``size x size``.

    Returns a NumPy array ``(size, size[, 3])`` of the image's dtype.
    """
    from PIL import Image

    out = img.crop(box)
    resample = Image.NEAREST if nearest else Image.BILINEAR
    if out.size != (size, size):
        out = out.resize((size, size), resample=resample, reducing_gap=None if nearest else 2.0)
    return np.asarray(out)


def map_points(xy: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """Map points ``(P, 2)`` (x, y in original pixels) into the ``size x size`` crop of ``box``."""
    left, top, right, bottom = box
    sx, sy = size / (right - left), size / (bottom - top)
    out = np.asarray(xy, dtype=np.float64).copy()
    out[:, 0] = (out[:, 0] - left) * sx
    out[:, 1] = (out[:, 1] - top) * sy
    return out


def to_image_tensor(arr: np.ndarray) -> torch.Tensor:
    """``(S, S, 3)`` uint8 array -> ``(3, S, S)`` float32 tensor in ``[0, 1]``."""
    arr = np.array(arr, dtype=np.uint8, copy=True)  # PIL's arrays are read-only
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)
