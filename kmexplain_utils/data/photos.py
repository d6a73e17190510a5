"""Real photographs that ship inside scikit-image, offline: photos, their crops and flips, LFW faces.

==================  =====================================================  ==============================
name                what                                                   licence (scikit-image's notes)
==================  =====================================================  ==============================
``chelsea``         Chelsea the cat                                        CC0 (Stefan van der Walt)
``coffee``          a cup of coffee                                        CC0 (Rachel Michetti)
``astronaut``       astronaut Eileen Collins                               public domain (NASA)
``rocket``          a SpaceX Falcon 9 launch                               public domain (SpaceX)
``camera``          the cameraman (grey)                                   CC0 (Lav Varshney)
``hubble``          the Hubble deep field                                  public domain (NASA)
==================  =====================================================  ==============================

:func:`lfw_faces` returns the 100 faces and 100 non-faces of
``skimage.data.lfw_subset()`` (25 x 25 crops of Labeled Faces in the Wild,
Huang et al.).

Example
-------
>>> from kmexplain_utils.data.photos import load_photos
>>> x, names = load_photos(64, ["chelsea", "coffee"])
>>> tuple(x.shape), names
((2, 3, 64, 64), ['chelsea', 'coffee'])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["PHOTOS", "load_photos", "photo_crops", "lfw_faces"]

#: name -> (scikit-image function, what it shows, licence as scikit-image's docstrings state it)
PHOTOS: dict[str, tuple[str, str, str]] = {
    "chelsea": ("chelsea", "Chelsea the cat", "CC0 by the photographer (Stefan van der Walt)"),
    "coffee": ("coffee", "a cup of coffee", "CC0 by the photographer (Rachel Michetti)"),
    "astronaut": ("astronaut", "astronaut Eileen Collins", "public domain (NASA)"),
    "rocket": ("rocket", "a SpaceX rocket launch", "public domain (SpaceX)"),
    "camera": ("camera", "a cameraman (grey)", "CC0 by the photographer (Lav Varshney)"),
    "hubble": ("hubble_deep_field", "the Hubble deep field", "public domain (NASA)"),
}


def _skimage_data():
    try:
        from skimage import data
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the photographs ship in scikit-image: pip install scikit-image "
                          "(or pip install 'kmexplain-utils[real]')") from e
    return data


def _as_tensor(arr: np.ndarray) -> torch.Tensor:
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, -1)
    t = torch.from_numpy(np.ascontiguousarray(arr[..., :3])).permute(2, 0, 1).float()
    return t / 255.0 if arr.dtype == np.uint8 else t


def _resize(t: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(t[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)


def _full(name: str) -> torch.Tensor:
    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; the photos are {sorted(PHOTOS)}")
    return _as_tensor(getattr(_skimage_data(), PHOTOS[name][0])())


def load_photos(size: int = 224, names: Sequence[str] | None = None) -> tuple[torch.Tensor, list[str]]:
    """The central square of each photo, resized to ``size`` (antialiased bilinear).

    Parameters
    ----------
    size : int
        Side in pixels.
    names : sequence of str, optional
        Which photos (keys of :data:`PHOTOS`); default all.

    Returns
    -------
    images : torch.Tensor
        ``(N, 3, size, size)`` in ``[0, 1]``.
    names : list of str
    """
    names = list(PHOTOS) if names is None else list(names)
    out = []
    for n in names:
        t = _full(n)
        h, w = t.shape[-2:]
        s = min(h, w)
        out.append(_resize(t[:, (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s], size))
    return torch.stack(out), names


def photo_crops(
    names: Sequence[str], n_per_photo: int, size: int = 224, *, min_scale: float = 0.35, random_state: int = 0
) -> tuple[torch.Tensor, list[str]]:
    """Random square crops of each photo (side ``min_scale`` to 1 of the short side), half of them mirrored.

    Parameters
    ----------
    names : sequence of str
        Keys of :data:`PHOTOS`.
    n_per_photo : int
        Crops per photo.
    size : int
        Side of the returned crops.
    min_scale : float
        Smallest crop side, relative to the photo's short side.
    random_state : int
        Seed.

    Returns
    -------
    images : torch.Tensor
        ``(len(names) * n_per_photo, 3, size, size)`` in ``[0, 1]``.
    source : list of str
        The photo of each crop.

    Example
    -------
    >>> x, src = photo_crops(["coffee"], 3, 32)
    >>> tuple(x.shape), src
    ((3, 3, 32, 32), ['coffee', 'coffee', 'coffee'])
    """
    if not 0 < min_scale <= 1:
        raise ValueError(f"min_scale must lie in (0, 1], got {min_scale}")
    rng = np.random.default_rng(random_state)
    out, src = [], []
    for n in names:
        t = _full(n)
        h, w = t.shape[-2:]
        for k in range(int(n_per_photo)):
            s = int(round(min(h, w) * rng.uniform(min_scale, 1.0)))
            top, left = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
            c = _resize(t[:, top:top + s, left:left + s], size)
            out.append(c.flip(-1) if k % 2 else c)
            src.append(n)
    return torch.stack(out), src


def lfw_faces(size: int = 224, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The LFW subset of scikit-image: faces (label 1) and non-faces (label 0), grey to 3 channels, upsampled.

    Parameters
    ----------
    size : int
        Side of the returned images (from 25 px, bilinear).
    n : int, optional
        Images per class (default all 100).

    Returns
    -------
    images : torch.Tensor
        ``(2 n, 3, size, size)`` in ``[0, 1]``: the ``n`` faces first.
    labels : torch.Tensor
        ``(2 n,)`` int64, 1 = face.

    Example
    -------
    >>> x, y = lfw_faces(32, n=2)
    >>> tuple(x.shape), y.tolist()
    ((4, 3, 32, 32), [1, 1, 0, 0])
    """
    arr = np.asarray(_skimage_data().lfw_subset(), dtype=np.float32)  # (200, 25, 25) in [0, 1]
    if arr.max() > 1.5:
        arr = arr / 255.0
    k = 100 if n is None else int(n)
    idx = list(range(k)) + list(range(100, 100 + k))
    g = torch.from_numpy(arr[idx])[:, None].expand(-1, 3, -1, -1)
    x = F.interpolate(g, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return x.contiguous(), torch.tensor([1] * k + [0] * k)
