"""Real photographs that ship inside scikit-image, scikit-learn and matplotlib, offline; crops; LFW faces.

The photos fall in two disjoint sets (:data:`HELD_OUT`, :data:`FITTING`):
chapter 6 fits its k-means head and its concepts on crops of the *fitting*
photos only, and explains and scores the *held-out* ones, which no crop,
flip or resize of a fitting photo ever is.

=====================  ===========  ==============================================  ===============================
name                   set          what                                            licence (as its package states)
=====================  ===========  ==============================================  ===============================
``chelsea``            held out     Chelsea the cat (scikit-image)                  CC0 (Stefan van der Walt)
``coffee``             held out     a cup of coffee (scikit-image)                  CC0 (Rachel Michetti)
``astronaut``          held out     astronaut Eileen Collins (scikit-image)         public domain (NASA)
``rocket``             held out     a SpaceX Falcon 9 launch (scikit-image)         public domain (SpaceX)
``camera``             held out     the cameraman, grey (scikit-image)              CC0 (Lav Varshney)
``hubble``             held out     the Hubble deep field (scikit-image)            public domain (NASA)
``china``              held out     a temple in China (scikit-learn)                CC BY 2.0 (danielbuechele)
``flower``             held out     a flower (scikit-learn)                         CC BY 2.0 (vultilion)
``grace_hopper``       fitting      Grace Hopper in uniform (matplotlib)            public domain (US Navy)
``motorcycle``         fitting      a motorcycle, left stereo view (scikit-image)   Middlebury stereo data set
``retina``             fitting      a retina (scikit-image)                         CC0 (Mikael Häggström)
``ihc``                fitting      colonic glands, IHC staining (scikit-image)     public domain
``coins``              fitting      Greek coins, grey (scikit-image)                no known restrictions
``moon``               fitting      the moon's surface, grey (scikit-image)         public domain
``clock``              fitting      a motion-blurred wall clock, grey               public domain (van der Walt)
``brick``              fitting      a brick wall, grey (scikit-image)               CC0
``grass``              fitting      grass, grey (scikit-image)                      CC0
``gravel``             fitting      gravel, grey (scikit-image)                     CC0
=====================  ===========  ==============================================  ===============================

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

__all__ = ["PHOTOS", "HELD_OUT", "FITTING", "PHOTO_CLASSES", "load_photos", "photo_crops", "lfw_faces", "lfw_split"]

#: name -> (loader, what it shows, licence as the shipping package's documentation states it); the loader is
#: ``"skimage:<function>"``, ``"sklearn:<file>"`` or ``"matplotlib:<file>"``.
PHOTOS: dict[str, tuple[str, str, str]] = {
    "chelsea": ("skimage:chelsea", "Chelsea the cat", "CC0 by the photographer (Stefan van der Walt)"),
    "coffee": ("skimage:coffee", "a cup of coffee", "CC0 by the photographer (Rachel Michetti)"),
    "astronaut": ("skimage:astronaut", "astronaut Eileen Collins", "public domain (NASA)"),
    "rocket": ("skimage:rocket", "a SpaceX rocket launch", "public domain (SpaceX)"),
    "camera": ("skimage:camera", "a cameraman (grey)", "CC0 by the photographer (Lav Varshney)"),
    "hubble": ("skimage:hubble_deep_field", "the Hubble deep field", "public domain (NASA)"),
    "china": ("sklearn:china.jpg", "a temple in China", "CC BY 2.0 (danielbuechele on Flickr)"),
    "flower": ("sklearn:flower.jpg", "a flower", "CC BY 2.0 (vultilion on Flickr)"),
    "grace_hopper": ("matplotlib:grace_hopper.jpg", "Grace Hopper in uniform", "public domain (US Navy)"),
    "motorcycle": ("skimage:stereo_motorcycle", "a motorcycle (left stereo view)",
                   "Middlebury stereo data set (Scharstein et al. 2014)"),
    "retina": ("skimage:retina", "a human retina", "CC0 (Mikael Häggström)"),
    "ihc": ("skimage:immunohistochemistry", "colonic glands, IHC staining", "public domain"),
    "coins": ("skimage:coins", "Greek coins from Pompeii (grey)", "no known copyright restrictions"),
    "moon": ("skimage:moon", "the surface of the moon (grey)", "public domain"),
    "clock": ("skimage:clock", "a motion-blurred wall clock (grey)", "public domain (Stefan van der Walt)"),
    "brick": ("skimage:brick", "a brick wall (grey)", "CC0"),
    "grass": ("skimage:grass", "grass (grey)", "CC0"),
    "gravel": ("skimage:gravel", "gravel (grey)", "CC0"),
}

#: The photos chapter 6 explains and scores (never fitted on).
HELD_OUT: tuple[str, ...] = ("chelsea", "coffee", "astronaut", "rocket", "camera", "hubble", "china", "flower")
#: The photos whose crops fit chapter 6's k-means head and concepts (never explained nor scored).
FITTING: tuple[str, ...] = tuple(n for n in PHOTOS if n not in HELD_OUT)

#: What each held-out photo shows, as ImageNet class names that would be a right answer (typed from what
#: the photo shows, before looking at any prediction); an empty tuple: ImageNet has no class for it.
PHOTO_CLASSES: dict[str, tuple[str, ...]] = {
    "chelsea": ("tabby", "tiger cat", "Egyptian cat"),
    "coffee": ("espresso", "cup", "coffee mug"),
    "astronaut": (),
    "rocket": ("missile", "projectile", "space shuttle"),
    "camera": ("tripod", "reflex camera", "Polaroid camera"),
    "hubble": (),
    "china": ("palace", "bell cote", "monastery", "stupa"),
    "flower": ("daisy",),
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


def _load_array(loader: str) -> np.ndarray:
    source, what = loader.split(":", 1)
    if source == "skimage":
        out = getattr(_skimage_data(), what)()
        return out[0] if isinstance(out, tuple) else out  # stereo_motorcycle: (left, right, disparity)
    if source == "sklearn":
        from sklearn.datasets import load_sample_image

        return load_sample_image(what)
    if source == "matplotlib":
        import matplotlib.image as mpimg
        from matplotlib import cbook

        with cbook.get_sample_data(what) as f:
            return np.asarray(mpimg.imread(f))
    raise ValueError(f"unknown photo source {source!r} in {loader!r}")  # pragma: no cover - PHOTOS is fixed


def _full(name: str) -> torch.Tensor:
    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; the photos are {sorted(PHOTOS)}")
    return _as_tensor(np.array(_load_array(PHOTOS[name][0])))


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


def lfw_split(size: int = 224, n_fit: int = 8, n_held_out: int = 8) -> tuple[tuple[torch.Tensor, torch.Tensor],
                                                                          tuple[torch.Tensor, torch.Tensor]]:
    """Two disjoint sets of LFW images, each with as many faces as non-faces: one to fit, one held out.

    The first ``n_fit`` faces and non-faces fit, the next ``n_held_out`` of each are held out; no
    image is in both (the 200 images of ``skimage.data.lfw_subset()`` are 200 different photos).

    Parameters
    ----------
    size : int
        Side of the returned images (from 25 px, bilinear).
    n_fit, n_held_out : int
        Images per class in each set (``n_fit + n_held_out <= 100``).

    Returns
    -------
    (images, labels), (images, labels)
        The fitting and the held-out set: ``(2 n, 3, size, size)`` in ``[0, 1]`` and ``(2 n,)``
        int64 (1 = face), faces first.

    Example
    -------
    >>> (xf, yf), (xh, yh) = lfw_split(32, 2, 3)
    >>> tuple(xf.shape), yh.tolist()
    ((4, 3, 32, 32), [1, 1, 1, 0, 0, 0])
    """
    n_fit, n_held_out = int(n_fit), int(n_held_out)
    if n_fit < 0 or n_held_out < 0 or n_fit + n_held_out > 100:
        raise ValueError(f"n_fit + n_held_out must be at most 100 (images per class), got {n_fit} + {n_held_out}")
    x, y = lfw_faces(size, n=100)
    fit = [*range(n_fit), *range(100, 100 + n_fit)]
    held = [*range(n_fit, n_fit + n_held_out), *range(100 + n_fit, 100 + n_fit + n_held_out)]
    return (x[fit], y[fit]), (x[held], y[held])
