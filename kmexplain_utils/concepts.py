"""Concept maps: k-means over feature-map positions (METHOD 4).

A *concept* is a k-means centroid of position vectors ``a^S_p`` sampled from
training images at a level ``S`` (``"B4"``, ``"B234"`` ...). The *concept map*
of an image assigns each position of its (resized) feature grid to the
nearest concept. It therefore has the grid's resolution -- 7x7 for B4 and
28x28 for B234 on a 224-pixel ResNet -- and is only resampled to the image
(each pixel takes the concept of the position whose registered centre is
nearest) for display and scoring: it is an assignment of feature-map positions,
not a pixel segmentation.

Example
-------
>>> import torch, torchvision
>>> from kmexplain_utils.concepts import ConceptModel
>>> model = torchvision.models.resnet18(weights=None, num_classes=2)
>>> x = torch.rand(6, 3, 64, 64)
>>> cm = ConceptModel(3, level="B34", positions_per_image=8, device="cpu").fit(model, x)
>>> cm.concept_map(model, x[:2]).shape, cm.concept_map(model, x[:2], size="input").shape
(torch.Size([2, 4, 4]), torch.Size([2, 64, 64]))
"""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import nn

from ._validation import check_is_fitted, check_tensor
from .features import LevelFeatures, PositionSample, fit_and_sample, sample_positions
from .kmeans import KMeans
from .resample import GridGeometry, as_size, infer_geometry, resample_labels
from .scores import prototype_scores

__all__ = ["ConceptModel", "concept_map", "upsample_labels"]


def _size(size: Any, like: tuple[int, int] | None = None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, str):
        if size != "input" or like is None:
            raise ValueError(f"size must be None, an int, (H, W) or 'input', got {size!r}")
        return like
    return as_size(size)


def upsample_labels(labels: torch.Tensor, size: Any, geometry: GridGeometry | None = None) -> torch.Tensor:
    """Resample integer grid maps ``(N, h, w)`` to ``(N, H, W)``: each pixel takes the nearest registered position.

    Parameters
    ----------
    labels : torch.Tensor
        ``(N, h, w)`` integer maps (concept or part labels) on a feature grid.
    size : int or (int, int)
        Image size ``(H, W)``.
    geometry : GridGeometry, optional
        Where the grid's positions sit (``LevelFeatures.grid_geometry_``);
        default: stride ``H / h``, offset 0 (exact for symmetric padding).
        ``GridGeometry.cell(stride)`` gives the first edition's rule (the grid
        cell whose footprint contains the pixel's centre).
    """
    check_tensor(labels, 3, name="labels", shape_doc="(N, H, W)")
    if size is None:
        return labels
    size = as_size(size)
    geo = infer_geometry(labels.shape[-2:], size) if geometry is None else geometry
    return resample_labels(labels, geo, size)


def _check_centroids(position_features: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    check_tensor(position_features, 4, name="position_features", shape_doc="(N, D, H, W)")
    if not isinstance(centroids, torch.Tensor) or centroids.ndim != 2:
        shape = tuple(centroids.shape) if isinstance(centroids, torch.Tensor) else type(centroids).__name__
        raise ValueError(f"centroids must have shape (K, D), got {shape}")
    if centroids.shape[1] != position_features.shape[1]:
        raise ValueError(
            f"centroids have D = {centroids.shape[1]} but position_features have D = "
            f"{position_features.shape[1]} (shape (N, D, H, W)); use the same level for both."
        )
    return centroids.to(device=position_features.device, dtype=position_features.dtype)


def concept_map(
    position_features: torch.Tensor,
    centroids: torch.Tensor,
    size: Any = None,
    *,
    allowed: torch.Tensor | None = None,
    geometry: GridGeometry | None = None,
) -> torch.Tensor:
    """Assign every feature-map position to its nearest concept centroid.

    The result is an assignment of (resized) feature-map positions, at the
    grid's resolution; ``size`` only upsamples it (nearest) for display.

    Parameters
    ----------
    position_features : torch.Tensor
        ``(N, D, H_S, W_S)`` position vectors of a level
        (:meth:`~kmexplain_utils.features.BlockLevel.position_features`).
    centroids : torch.Tensor
        ``(K, D)`` concept centroids.
    size : int or (int, int), optional
        Resample the map to this size (e.g. the image's): each pixel takes the
        concept of the registered position nearest to it.
    allowed : torch.Tensor, optional
        ``(N, K)`` bool: the concepts each image may use (per-class concepts).
    geometry : GridGeometry, optional
        The grid's geometry, for ``size`` (see :func:`upsample_labels`).

    Returns
    -------
    torch.Tensor
        ``(N, H_S, W_S)`` (or ``(N, *size)``) int64 concept indices, on the
        device of ``position_features``.

    Example
    -------
    >>> import torch
    >>> A = torch.zeros(1, 2, 2, 2); A[0, 0, 0, :] = 1.0   # top row near concept 1
    >>> concept_map(A, torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    tensor([[[1, 1],
             [0, 0]]])
    """
    mu = _check_centroids(position_features, centroids)
    # nearest centroid = argmax of 2 mu.a - ||mu||^2 (||a||^2 is common to all centroids)
    scores = prototype_scores(position_features, mu)
    if allowed is not None:
        allowed = allowed.to(device=scores.device, dtype=torch.bool)
        if allowed.shape != scores.shape[:2]:
            raise ValueError(f"allowed must have shape (N, K) = {tuple(scores.shape[:2])}, got {tuple(allowed.shape)}")
        scores = scores.masked_fill(~allowed[:, :, None, None], -torch.inf)
    labels = scores.argmax(1)
    return upsample_labels(labels, size, geometry) if size is not None else labels


class ConceptModel:
    """Concepts of a level: k-means on sampled position vectors of training images.

    Parameters
    ----------
    n_concepts : int
        Concepts ``K'`` (per class when ``per_class``).
    level : str
        Block level (``"B4"``, ``"B234"`` ...); ``"logits"`` has no positions.
    per_class : bool
        Fit ``n_concepts`` concepts on the positions of each class's images
        separately (concept ``j`` then belongs to class ``concept_classes_[j]``).
    positions_per_image : int
        Positions sampled (without replacement) from every training image.
    random_state : int
        Seed of the position sampling and of k-means.
    device : str or torch.device
        Where k-means runs (``"auto"``: CUDA when available).
    kmeans_kwargs : dict, optional
        Extra arguments of :class:`kmexplain_utils.kmeans.KMeans`.

    Attributes
    ----------
    level_features_ : LevelFeatures
        The fitted feature space.
    centroids_ : torch.Tensor
        ``(K, D_S)`` concept centroids (``K = n_concepts``, or
        ``n_classes * n_concepts`` per class).
    concept_classes_ : torch.Tensor or None
        ``(K,)`` class of each concept when ``per_class``.
    sample_ : PositionSample
        The sampled training positions (to show each concept's nearest patches).
    sample_labels_ : torch.Tensor
        ``(M,)`` concept of each sampled position.
    concept_sizes_ : torch.Tensor
        ``(K,)`` number of sampled positions per concept.

    Notes
    -----
    A concept map is an assignment of feature-map positions, at the level's
    grid resolution (e.g. 7x7 for B4, 28x28 for B234 at 224 px); upsampling to
    the image is nearest-neighbour and adds no detail.
    """

    def __init__(
        self,
        n_concepts: int,
        *,
        level: str = "B234",
        per_class: bool = False,
        positions_per_image: int = 32,
        random_state: int | None = 0,
        device: str | torch.device = "auto",
        kmeans_kwargs: dict | None = None,
    ) -> None:
        self.n_concepts = n_concepts
        self.level = level
        self.per_class = per_class
        self.positions_per_image = positions_per_image
        self.random_state = random_state
        self.device = device
        self.kmeans_kwargs = kmeans_kwargs

    def fit(
        self,
        model: nn.Module,
        data: Any,
        *,
        level_features: LevelFeatures | None = None,
        sample: PositionSample | None = None,
    ) -> "ConceptModel":
        """Sample training positions and fit the concepts.

        Parameters
        ----------
        model : nn.Module
            The model.
        data : tensor, tuple, Dataset or DataLoader
            Training images (with labels when ``per_class``), see
            :func:`kmexplain_utils.features.iter_batches`.
        level_features : LevelFeatures, optional
            An already fitted level (its ``level`` must match); by default one
            is fitted on ``data``.
        sample : PositionSample, optional
            Pre-sampled positions of ``data`` at this level (skips the sampling).

        Returns
        -------
        ConceptModel
            ``self``.
        """
        K = self.n_concepts
        if isinstance(K, bool) or not isinstance(K, numbers.Integral) or K < 1:
            raise ValueError(f"n_concepts must be a positive int, got {K!r}")
        if level_features is None:
            level_features = LevelFeatures(self.level)
            level_features.require_positions()
            if sample is None:  # fit the level and sample its positions in one pass over the data
                sample = fit_and_sample(model, data, level_features, per_image=self.positions_per_image,
                                        random_state=self.random_state)[0]
            else:
                level_features.fit(model, data)
        elif level_features.level != self.level:
            raise ValueError(
                f"level_features is for level {level_features.level!r} but this ConceptModel has "
                f"level={self.level!r}"
            )
        if sample is None:
            sample = sample_positions(
                model, data, level_features, per_image=self.positions_per_image,
                random_state=self.random_state,
            )
        kwargs = dict(self.kmeans_kwargs or {})
        kwargs.setdefault("device", self.device)
        V = sample.vectors
        if not self.per_class:
            if V.shape[0] < K:
                raise ValueError(
                    f"only {V.shape[0]} positions were sampled for {K} concepts; use more images or "
                    "a larger positions_per_image"
                )
            km = KMeans(n_clusters=K, random_state=self.random_state, **kwargs).fit(V)
            centroids = km.cluster_centers_
            labels = km.predict(V)
            self.concept_classes_ = None
            self.kmeans_ = [km]
        else:
            if sample.labels is None:
                raise ValueError("per_class=True needs labelled data: pass (images, labels) or a labelled dataset")
            cents, labels, classes, kms = [], torch.empty(V.shape[0], dtype=torch.int64), [], []
            for i, c in enumerate(torch.unique(sample.labels).tolist()):
                rows = sample.labels == c
                if int(rows.sum()) < K:
                    raise ValueError(f"class {c} has only {int(rows.sum())} sampled positions for {K} concepts")
                seed = None if self.random_state is None else int(self.random_state) + i
                km = KMeans(n_clusters=K, random_state=seed, **kwargs).fit(V[rows])
                labels[rows] = km.predict(V[rows]).cpu() + len(cents) * K
                cents.append(km.cluster_centers_)
                classes.append(torch.full((K,), c, dtype=torch.int64))
                kms.append(km)
            centroids = torch.cat([c.to(cents[0].device) for c in cents])
            self.concept_classes_ = torch.cat(classes)
            self.kmeans_ = kms
        self.level_features_ = level_features
        self.centroids_ = centroids
        self.sample_ = sample
        self.sample_labels_ = torch.as_tensor(labels).cpu().long()
        self.concept_sizes_ = torch.bincount(self.sample_labels_, minlength=centroids.shape[0])
        return self

    @property
    def n_concepts_total_(self) -> int:
        """Number of concept centroids ``K``."""
        check_is_fitted(self, ["centroids_"])
        return int(self.centroids_.shape[0])

    def _allowed(self, classes: Any, n: int, device: torch.device) -> torch.Tensor | None:
        if classes is None or self.concept_classes_ is None:
            if classes is not None:
                raise ValueError("target= is only meaningful for per_class=True concepts")
            return None
        cls = torch.as_tensor(classes, device=device).long().reshape(-1)
        if cls.numel() == 1:
            cls = cls.expand(n)
        if cls.shape != (n,):
            raise ValueError(f"target must be an int or have shape (N,) = ({n},), got {tuple(cls.shape)}")
        return cls[:, None] == self.concept_classes_.to(device)[None, :]

    def predict(self, vectors: torch.Tensor) -> torch.Tensor:
        """Nearest concept ``(M,)`` of position vectors ``(M, D)``."""
        check_is_fitted(self, ["centroids_"])
        check_tensor(vectors, 2, name="vectors", shape_doc="(M, D)")
        return concept_map(vectors.T[None, :, :, None], self.centroids_)[0, :, 0]

    def concept_map(
        self, model: nn.Module, x: torch.Tensor, *, size: Any = None, target: Any = None,
    ) -> torch.Tensor:
        """Concept map of images ``x`` ``(N, 3, H, W)``.

        Parameters
        ----------
        model : nn.Module
            The model used in :meth:`fit`.
        x : torch.Tensor
            ``(N, 3, H, W)`` images.
        size : None, int, (int, int) or "input"
            ``None``: the level's grid ``(H_S, W_S)``; otherwise upsample
            (nearest) to this size; ``"input"`` = the images' size.
        target : int or torch.Tensor, optional
            For per-class concepts: use only the concepts of this class label
            (e.g. the predicted class), one for all or one per image.

        Returns
        -------
        torch.Tensor
            ``(N, H_S, W_S)`` (or upsampled) int64 concept indices.
        """
        check_is_fitted(self, ["centroids_"])
        feats = self.level_features_.position_features(model, x)
        allowed = self._allowed(target, x.shape[0], feats.device)
        return concept_map(feats, self.centroids_, _size(size, tuple(x.shape[-2:])), allowed=allowed,
                           geometry=getattr(self.level_features_, "grid_geometry_", None))

    def __repr__(self) -> str:
        return (
            f"ConceptModel(n_concepts={self.n_concepts!r}, level={self.level!r}, per_class={self.per_class!r}, "
            f"positions_per_image={self.positions_per_image!r})"
        )
