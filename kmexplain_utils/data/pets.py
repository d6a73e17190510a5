"""Oxford-IIIT Pet (37 cat and dog breeds) with its trimaps, read lazily from disk.

The files are the ones :class:`torchvision.datasets.OxfordIIITPet` downloads
(``<root>/oxford-iiit-pet/images/*.jpg``, ``annotations/trimaps/*.png``,
``annotations/trainval.txt`` and ``test.txt``); ``root`` defaults to
``cache_dir()/"data"``. The ``train`` split is the official ``trainval``
(3,680 images), ``test`` the official test split (3,669).

Trimaps
-------
The trimap of every image labels each pixel 1 = pet, 2 = background,
3 = boundary (the uncertain band around the pet). Here:

- ``objects`` = pet or boundary (``trimap != 2``);
- ``parts`` = 1 (``"pet"``) where the trimap says pet, 2 (``"boundary"``)
  on the boundary band, 0 elsewhere; ``part_names = ["background", "pet",
  "boundary"]``.

Images are cut to their centred square and resized to ``image_size``
(bilinear; trimaps nearest). Nothing is held in memory: items are read when
indexed (use a DataLoader with workers for speed).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ..config import cache_dir
from ._imageio import crop_resize, open_mask, open_rgb, square_box, to_image_tensor
from .base import LazyImageSet, balanced_order

__all__ = ["PETS_URLS", "PetsImageSet", "default_pets_root", "load_pets"]

PART_NAMES = ["background", "pet", "boundary"]
PETS_URLS = [
    "https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz",
    "https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz",
]
_SPLIT_FILES = {"train": "trainval.txt", "test": "test.txt"}


def default_pets_root() -> Path:
    """``cache_dir()/"data"``: where torchvision puts ``oxford-iiit-pet/``."""
    return cache_dir() / "data"


def _pets_class():
    """torchvision's dataset class (a function, so that tests can replace it)."""
    from torchvision.datasets import OxfordIIITPet

    return OxfordIIITPet


def _urls(cls=None) -> list[str]:
    try:
        cls = cls or _pets_class()
        return [url for url, _ in cls._RESOURCES]
    except Exception:  # noqa: BLE001  # pragma: no cover - older/newer torchvision
        return PETS_URLS


def _read_split(path: Path) -> list[tuple[str, int]]:
    rows = []
    with open(path) as f:
        for k, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.split()
            if len(fields) < 2:
                raise ValueError(f"{path}, line {k}: expected 'image_id class_id species breed_id', got {line!r}")
            rows.append((fields[0], int(fields[1]) - 1))
    return rows


class PetsImageSet(LazyImageSet):
    """Oxford-IIIT Pet images with trimap parts, read on demand (see :mod:`kmexplain_utils.data.pets`)."""

    def __init__(self, base: Path, ids: list[str], labels: list[int], class_names: list[str], image_size: int, split: str):
        super().__init__(
            torch.as_tensor(labels, dtype=torch.int64),
            class_names,
            part_names=PART_NAMES,
            image_size=image_size,
            name=f"pets-{split}",
        )
        self.base = base
        self.ids = list(ids)

    def image_path(self, j: int) -> Path:
        """File of underlying item ``j``."""
        return self.base / "images" / f"{self.ids[j]}.jpg"

    def trimap_path(self, j: int) -> Path:
        """Trimap file of underlying item ``j``."""
        return self.base / "annotations" / "trimaps" / f"{self.ids[j]}.png"

    def _load(self, j: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = self.image_size
        img = open_rgb(self.image_path(j))
        box = square_box(*img.size)
        image = to_image_tensor(crop_resize(img, box, s))
        tri = np.asarray(crop_resize(open_mask(self.trimap_path(j), img.size, self.image_path(j)), box, s, nearest=True))
        tri = torch.from_numpy(tri.astype(np.int64))
        parts = torch.where(tri == 1, 1, torch.where(tri == 3, 2, 0))
        return image, parts, tri != 2


def _download(root: Path) -> None:
    dest = root / "oxford-iiit-pet"
    cls = None
    try:
        cls = _pets_class()
        cls(str(root), split="trainval", download=True)
    except Exception as exc:
        urls = _urls(cls) if cls is not None else PETS_URLS
        raise RuntimeError(
            f"Could not download Oxford-IIIT Pet from {', '.join(urls)} into {dest} "
            f"({type(exc).__name__}: {exc}). Download the two archives by hand and extract them "
            f"into {dest} (giving {dest / 'images'} and {dest / 'annotations'}), or pass "
            "root=<folder holding oxford-iiit-pet/>; then call again with download=False."
        ) from exc


def load_pets(
    split: str,
    image_size: int = 224,
    n: int = 0,
    seed: int = 0,
    *,
    root: str | os.PathLike | None = None,
    download: bool = True,
) -> PetsImageSet:
    """One split of Oxford-IIIT Pet as a lazy :class:`ImageSet`.

    Parameters
    ----------
    split : {"train", "test"}
        ``trainval`` (3,680 images) or ``test`` (3,669).
    image_size : int, default 224
        Side of the returned square images.
    n : int, default 0
        Number of images (a class-balanced prefix of a seeded shuffle);
        ``0`` = all. More than the split holds gives a warning and all.
    seed : int, default 0
        Seed of the order.
    root : path, optional
        Folder holding ``oxford-iiit-pet/``; default ``cache_dir()/"data"``.
    download : bool, default True
        Download through torchvision when the folder is missing.

    Returns
    -------
    PetsImageSet
        ``parts_at`` gives ``(n, S, S)`` labels of ``["background", "pet",
        "boundary"]``, ``objects_at`` the pet (pet + boundary) masks.
    """
    if split not in _SPLIT_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root).expanduser() if root is not None else default_pets_root()
    base = root / "oxford-iiit-pet"
    ann = base / "annotations"
    if not (base / "images").is_dir() or not (ann / _SPLIT_FILES[split]).is_file():
        if not download:
            raise FileNotFoundError(
                f"Oxford-IIIT Pet not found in {base} (need {base / 'images'} and {ann / _SPLIT_FILES[split]}). "
                f"Call with download=True, or download {', '.join(PETS_URLS)} by hand and extract them into {base}."
            )
        _download(root)
        if not (ann / _SPLIT_FILES[split]).is_file():
            raise FileNotFoundError(f"After downloading, {ann / _SPLIT_FILES[split]} is still missing; extract the archives into {base}.")
    rows = _read_split(ann / _SPLIT_FILES[split])
    # class names from both split files, so that train and test agree
    names: dict[int, str] = {}
    for fname in _SPLIT_FILES.values():
        if (ann / fname).is_file():
            for image_id, label in _read_split(ann / fname):
                names.setdefault(label, " ".join(w.title() for w in image_id.rsplit("_", 1)[0].split("_")))
    n_classes = max(names) + 1 if names else 0
    class_names = [names.get(c, str(c)) for c in range(n_classes)]
    labels = np.array([lab for _, lab in rows], dtype=np.int64)
    order = balanced_order(labels, seed=seed).numpy()
    if n:
        if n > len(order):
            warnings.warn(f"Oxford-IIIT Pet {split} has {len(order)} images; using all of them instead of n={n}.", stacklevel=2)
        order = order[:n]
    ids = [rows[i][0] for i in order]
    return PetsImageSet(base, ids, labels[order].tolist(), class_names, int(image_size), split)
