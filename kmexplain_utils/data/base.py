"""The image container every chapter uses: :class:`ImageSet`.

An :class:`ImageSet` is a :class:`torch.utils.data.Dataset` of RGB images in
``[0, 1]`` with integer labels and, where the dataset knows them, a per-pixel
part label map (``0`` = background), an object mask and part keypoints
(:meth:`ImageSet.keypoints_at`). Two flavours:

- in memory (generated ``parts``, ``mnist``, or any tensors you pass to
  :class:`ImageSet`): the tensors are exposed as ``.images``, ``.parts`` and
  ``.objects``;
- on disk (:class:`LazyImageSet`, used by ``pets`` and ``cub``): images are
  read, resized and cropped only when asked for.

Example
-------
>>> import torch
>>> from kmexplain_utils.data.base import ImageSet
>>> ds = ImageSet(torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 0, 1]), ["a", "b"])
>>> image, label = ds[1]
>>> tuple(image.shape), label, ds.n_classes
((3, 8, 8), 1, 2)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .._validation import check_keypoints, check_rgb_images

__all__ = ["ImageSet", "LazyImageSet", "as_index", "balanced_order"]

Index = int | Sequence[int] | np.ndarray | torch.Tensor | slice


def as_index(idx: Index, n: int) -> torch.Tensor:
    """Turn an int, slice, list, array or tensor of indices into a 1-D int64 tensor.

    Boolean masks of length ``n`` are accepted too. Negative indices count from
    the end. Raises ``IndexError`` for indices outside ``[-n, n)``.
    """
    if isinstance(idx, slice):
        return torch.arange(n)[idx]
    t = torch.as_tensor(np.asarray(idx) if not isinstance(idx, torch.Tensor) else idx)
    if t.dtype == torch.bool:
        if t.shape != (n,):
            raise IndexError(f"a boolean index must have shape ({n},), got {tuple(t.shape)}")
        return torch.nonzero(t).flatten()
    t = t.reshape(-1).to(torch.int64).cpu()
    if t.numel() and (int(t.min()) < -n or int(t.max()) >= n):
        raise IndexError(f"index out of range for a dataset of {n} images: min {int(t.min())}, max {int(t.max())}")
    return torch.where(t < 0, t + n, t)


def balanced_order(labels: torch.Tensor | np.ndarray, seed: int = 0) -> torch.Tensor:
    """A permutation whose every prefix is as class-balanced as possible.

    The members of each class are shuffled with ``seed``; the classes are then
    taken in turns (round robin, the order of the classes within each round
    shuffled too), so the first ``n`` indices hold ``n / C`` images of every
    class, up to one.

    Parameters
    ----------
    labels : (N,) int
        Class of every item.
    seed : int
        Seed of the shuffles.

    Returns
    -------
    (N,) int64 tensor
        The permutation.
    """
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    members = [rng.permutation(np.flatnonzero(y == c)) for c in classes]
    longest = max((len(m) for m in members), default=0)
    order: list[int] = []
    for r in range(longest):
        round_ = [m[r] for m in members if r < len(m)]
        order.extend(int(i) for i in rng.permutation(np.asarray(round_, dtype=np.int64)))
    return torch.as_tensor(order, dtype=torch.int64)


class ImageSet(Dataset):
    """Images, labels and (optional) part maps and object masks, held in memory.

    Parameters
    ----------
    images : (N, 3, H, W) float tensor
        RGB images with values in ``[0, 1]``.
    labels : (N,) int tensor
        Class indices in ``[0, len(class_names))``.
    class_names : list of str, optional
        One name per class; default ``["0", "1", ...]``.
    parts : (N, H, W) int tensor, optional
        Part label of every pixel, ``0`` = background.
    objects : (N, H, W) bool tensor, optional
        Object mask; default ``parts > 0`` when ``parts`` is given.
    part_names : list of str, optional
        Name of each part label, index 0 = ``"background"``. Required with
        ``parts``.
    name : str
        A short name shown in ``repr`` and figure titles.
    attributes : dict of str -> (N,) array, optional
        Per-image metadata that does not define the class (for the generated set: the
        generator's nuisance variables, e.g. ``"facing"``, ``"legs"``, ``"body_colour"``);
        kept by :meth:`subset`.
    keypoints : list of (P_i, 3) arrays, optional
        One array per image of part keypoints ``(x, y, part label)`` in pixels of
        the images (pixel ``(r, c)`` covers ``[c, c + 1) x [r, r + 1)``), labels
        in ``[1, len(part_names))``; ``(0, 3)`` for an image without any. Requires
        ``part_names``; kept by :meth:`subset`.

    Attributes
    ----------
    images, labels, parts, objects : torch.Tensor or None
        The tensors above (``labels`` int64, ``parts`` int64, ``objects`` bool).
    keypoints : list of numpy.ndarray or None
        The ``(P_i, 3)`` float64 keypoints above.
    class_names, part_names : list of str (``part_names`` may be None)
    attributes : dict of str -> numpy.ndarray
        ``(N,)`` per-image metadata (empty when none is known).

    Example
    -------
    >>> import torch
    >>> ds = ImageSet(torch.zeros(2, 3, 4, 4), torch.tensor([0, 1]), ["cat", "dog"],
    ...               parts=torch.ones(2, 4, 4, dtype=torch.long), part_names=["background", "body"])
    >>> ds.objects_at([0]).shape, ds.image_size
    (torch.Size([1, 4, 4]), 4)
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | Sequence[int],
        class_names: Sequence[str] | None = None,
        *,
        parts: torch.Tensor | None = None,
        objects: torch.Tensor | None = None,
        part_names: Sequence[str] | None = None,
        name: str = "images",
        attributes: Mapping[str, Any] | None = None,
        keypoints: Sequence[Any] | None = None,
    ) -> None:
        images = check_rgb_images(images, name="images")
        n, _, h, w = images.shape
        labels = torch.as_tensor(labels).to(torch.int64).reshape(-1)
        if labels.shape[0] != n:
            raise ValueError(f"labels must have shape ({n},) to match {n} images, got {tuple(labels.shape)}")
        if class_names is None:
            n_cls = int(labels.max()) + 1 if n else 0
            class_names = [str(c) for c in range(n_cls)]
        class_names = [str(c) for c in class_names]
        if n and (int(labels.min()) < 0 or int(labels.max()) >= len(class_names)):
            raise ValueError(
                f"labels must lie in [0, {len(class_names)}) for {len(class_names)} class names; "
                f"got values from {int(labels.min())} to {int(labels.max())}"
            )
        if parts is not None:
            parts = self._check_map(parts, n, h, w, "parts").to(torch.int64)
            if part_names is None:
                raise ValueError("part_names is required with parts (index 0 = 'background')")
            if parts.numel() and (int(parts.min()) < 0 or int(parts.max()) >= len(part_names)):
                raise ValueError(
                    f"part labels must lie in [0, {len(part_names)}) for part_names={list(part_names)}; "
                    f"got values from {int(parts.min())} to {int(parts.max())}"
                )
        if objects is not None:
            objects = self._check_map(objects, n, h, w, "objects").to(torch.bool)
        elif parts is not None:
            objects = parts > 0
        self.images = images
        self.labels = labels
        self.class_names = class_names
        self.parts = parts
        self.objects = objects
        self.part_names = list(part_names) if part_names is not None else None
        self.keypoints: list[np.ndarray] | None = None
        if keypoints is not None:
            if part_names is None:
                raise ValueError("part_names is required with keypoints (their labels index part_names)")
            self.keypoints = check_keypoints(keypoints, n, n_parts=len(part_names), image_size=(h, w))
        self.name = name
        self.attributes: dict[str, np.ndarray] = {}
        for key, values in (attributes or {}).items():
            arr = np.asarray(values.cpu() if isinstance(values, torch.Tensor) else values)
            if arr.shape[:1] != (n,):
                raise ValueError(f"attribute {key!r} must have one value per image ({n},), got shape {arr.shape}")
            self.attributes[str(key)] = arr

    @staticmethod
    def _check_map(m: torch.Tensor, n: int, h: int, w: int, what: str) -> torch.Tensor:
        if not isinstance(m, torch.Tensor):
            m = torch.as_tensor(np.asarray(m))
        if tuple(m.shape) != (n, h, w):
            raise ValueError(
                f"{what} must have shape (N, H, W) = ({n}, {h}, {w}) to match the images, "
                f"got {tuple(m.shape)}; resize it with nearest-neighbour interpolation."
            )
        return m

    # ------------------------------------------------------------------ sizes
    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_classes(self) -> int:
        """Number of classes (``len(class_names)``)."""
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        """Side of the (square) images in pixels."""
        return int(self.images.shape[-1])

    @property
    def has_parts(self) -> bool:
        """Whether part label maps are known."""
        return self.part_names is not None

    @property
    def has_keypoints(self) -> bool:
        """Whether part keypoints are known (:meth:`keypoints_at` returns arrays, not None)."""
        return self.keypoints is not None

    # ---------------------------------------------------------------- access
    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} images")
        return self.images[i], int(self.labels[i])

    def images_at(self, idx: Index) -> torch.Tensor:
        """Images ``(n, 3, H, W)`` float32 in ``[0, 1]`` at the given indices."""
        return self.images[as_index(idx, len(self))]

    def parts_at(self, idx: Index) -> torch.Tensor | None:
        """Part label maps ``(n, H, W)`` int64 (0 = background), or ``None`` if unknown."""
        return None if self.parts is None else self.parts[as_index(idx, len(self))]

    def objects_at(self, idx: Index) -> torch.Tensor | None:
        """Object masks ``(n, H, W)`` bool, or ``None`` if unknown."""
        return None if self.objects is None else self.objects[as_index(idx, len(self))]

    def keypoints_at(self, idx: Index) -> list[np.ndarray] | None:
        """Part keypoints of the items at ``idx``, or ``None`` if the set has none.

        Parameters
        ----------
        idx : int, slice, sequence, array or tensor
            Which items (as for :meth:`images_at`).

        Returns
        -------
        list of numpy.ndarray or None
            One float64 array ``(P_i, 3)`` per item: ``(x, y, part label)``
            with ``x, y`` continuous pixel coordinates of the returned images
            (pixel ``(r, c)`` covers ``[c, c + 1) x [r, r + 1)``, so it holds
            the keypoints with ``floor(y) = r`` and ``floor(x) = c``) and labels
            ``>= 1`` indexing ``part_names``. Copies: changing them changes
            nothing in the set.

        Example
        -------
        >>> import numpy as np, torch
        >>> ds = ImageSet(torch.zeros(2, 3, 8, 8), [0, 1], part_names=["background", "head"],
        ...               keypoints=[np.array([[2.5, 6.0, 1]]), np.zeros((0, 3))])
        >>> [k.tolist() for k in ds.keypoints_at([1, 0])]
        [[], [[2.5, 6.0, 1.0]]]
        >>> ds.subset([0]).keypoints_at(0)[0].shape, ds.has_keypoints
        ((1, 3), True)
        """
        if self.keypoints is None:
            return None
        return [self.keypoints[int(i)].copy() for i in as_index(idx, len(self))]

    def subset(self, idx: Index) -> ImageSet:
        """A new set holding the items at ``idx`` (tensors are indexed, not shared views)."""
        i = as_index(idx, len(self))
        return ImageSet(
            self.images[i],
            self.labels[i],
            self.class_names,
            parts=None if self.parts is None else self.parts[i],
            objects=None if self.objects is None else self.objects[i],
            part_names=self.part_names,
            name=self.name,
            attributes={k: v[i.numpy()] for k, v in self.attributes.items()},
            keypoints=self.keypoints_at(i),
        )

    def class_counts(self) -> torch.Tensor:
        """Number of images of every class, ``(n_classes,)`` int64."""
        return torch.bincount(self.labels, minlength=self.n_classes)

    def __repr__(self) -> str:
        parts = f", parts={self.part_names}" if self.part_names is not None else ""
        return (
            f"{type(self).__name__}(name={self.name!r}, n={len(self)}, image_size={self.image_size}, "
            f"n_classes={self.n_classes}{parts})"
        )


class LazyImageSet(ImageSet):
    """An :class:`ImageSet` whose images are read from disk when asked for.

    Subclasses implement ``_load(j)``, which returns the image and its maps
    for one *underlying* item. ``.images``, ``.parts`` and ``.objects`` load
    every item (use them only on small subsets, or call :meth:`to_memory`).

    Parameters
    ----------
    labels : (N,) int tensor
        Class of every underlying item.
    class_names, part_names : list of str
        As in :class:`ImageSet`.
    image_size : int
        Side of the square images returned.
    name : str
        Short name.
    has_objects : bool
        Whether ``_load`` returns object masks.
    has_keypoints : bool
        Whether ``_keypoints(j)`` returns part keypoints.
    """

    def __init__(
        self,
        labels: torch.Tensor,
        class_names: Sequence[str],
        *,
        part_names: Sequence[str] | None,
        image_size: int,
        name: str,
        has_objects: bool = True,
        has_keypoints: bool = False,
    ) -> None:
        self._all_labels = torch.as_tensor(labels).to(torch.int64).reshape(-1)
        self._index = torch.arange(self._all_labels.shape[0])
        self.class_names = [str(c) for c in class_names]
        self.part_names = list(part_names) if part_names is not None else None
        self._image_size = int(image_size)
        self._has_objects = bool(has_objects)
        self._has_keypoints = bool(has_keypoints)
        self.name = name

    def _load(self, j: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Image ``(3, S, S)``, parts ``(S, S)`` int64 or None, object ``(S, S)`` bool or None."""
        raise NotImplementedError

    def _keypoints(self, j: int) -> np.ndarray:
        """Keypoints ``(P, 3)`` float64 of underlying item ``j`` in output pixels (with ``has_keypoints``)."""
        raise NotImplementedError

    @property
    def has_keypoints(self) -> bool:  # type: ignore[override]
        return self._has_keypoints

    @property
    def labels(self) -> torch.Tensor:  # type: ignore[override]
        return self._all_labels[self._index]

    @property
    def image_size(self) -> int:
        return self._image_size

    def __len__(self) -> int:
        return int(self._index.shape[0])

    def _stack(self, idx: Index, which: int) -> list[Any]:
        return [self._load(int(self._index[i]))[which] for i in as_index(idx, len(self))]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if isinstance(i, torch.Tensor):
            i = int(i)
        j = int(self._index[as_index([i], len(self))[0]])
        return self._load(j)[0], int(self._all_labels[j])

    def images_at(self, idx: Index) -> torch.Tensor:
        items = self._stack(idx, 0)
        s = self._image_size
        return torch.stack(items) if items else torch.zeros(0, 3, s, s)

    def parts_at(self, idx: Index) -> torch.Tensor | None:
        if self.part_names is None:
            return None
        items = self._stack(idx, 1)
        s = self._image_size
        return torch.stack(items) if items else torch.zeros(0, s, s, dtype=torch.int64)

    def objects_at(self, idx: Index) -> torch.Tensor | None:
        if not self._has_objects:
            return None
        items = self._stack(idx, 2)
        s = self._image_size
        return torch.stack(items) if items else torch.zeros(0, s, s, dtype=torch.bool)

    @property
    def images(self) -> torch.Tensor:  # type: ignore[override]
        """All images, loaded now (costly for a full dataset)."""
        return self.images_at(slice(None))

    @property
    def parts(self) -> torch.Tensor | None:  # type: ignore[override]
        return self.parts_at(slice(None))

    @property
    def objects(self) -> torch.Tensor | None:  # type: ignore[override]
        return self.objects_at(slice(None))

    def keypoints_at(self, idx: Index) -> list[np.ndarray] | None:
        """Part keypoints of the items at ``idx`` (see :meth:`ImageSet.keypoints_at`), or ``None``."""
        if not self._has_keypoints:
            return None
        return [np.array(self._keypoints(int(self._index[i])), dtype=np.float64).reshape(-1, 3)
                for i in as_index(idx, len(self))]

    @property
    def keypoints(self) -> list[np.ndarray] | None:  # type: ignore[override]
        """All keypoints, computed now (see :meth:`keypoints_at`)."""
        return self.keypoints_at(slice(None))

    def subset(self, idx: Index) -> LazyImageSet:
        """A lazy view of the items at ``idx`` (no image is read)."""
        import copy

        out = copy.copy(self)
        out._index = self._index[as_index(idx, len(self))]
        return out

    def to_memory(self) -> ImageSet:
        """Load every item and return an in-memory :class:`ImageSet`."""
        parts = self.parts_at(slice(None))
        return ImageSet(
            self.images_at(slice(None)),
            self.labels,
            self.class_names,
            parts=parts,
            objects=self.objects_at(slice(None)),
            part_names=self.part_names,
            name=self.name,
            keypoints=self.keypoints_at(slice(None)),
        )
