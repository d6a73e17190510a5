"""The prototype score ``2 mu . a - ||mu||^2``: one formula, one function (METHOD 2, 4, 5).

For a prototype (or concept centroid) ``mu`` and a vector ``a``,
``||a - mu||^2 = ||a||^2 - (2 mu . a - ||mu||^2)``: the score ranks prototypes
exactly as negative squared distances do, and it is *affine* in ``a``, so the
score of a spatial mean is the spatial mean of the per-position scores. The
k-means classifier (pooled embeddings), the attribution maps (per position)
and the concept maps (every centroid at every position) all call
:func:`prototype_scores`.

:class:`KMeansScoreModel` turns a k-means classifier at a level into a model
``images -> (N, C)`` class scores (each class's best prototype score), so that
deletion and insertion score a k-means map on the model it explains;
:func:`fit_temperature` calibrates the softmax of those scores.

Example
-------
>>> import torch
>>> from kmexplain_utils.scores import prototype_scores
>>> A = torch.rand(2, 5, 3, 3, dtype=torch.float64)            # (N, D, H, W)
>>> mu = torch.rand(4, 5, dtype=torch.float64)                  # (P, D)
>>> per_position = prototype_scores(A, mu)                      # (N, P, H, W)
>>> pooled = prototype_scores(A.mean((2, 3)), mu)               # (N, P)
>>> bool(torch.allclose(per_position.mean((2, 3)), pooled))
True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["KMeansScoreModel", "fit_temperature", "prototype_scores"]


def prototype_scores(features: torch.Tensor, prototypes: torch.Tensor, *, paired: bool = False) -> torch.Tensor:
    """``2 mu . a - ||mu||^2`` of vectors or feature maps against prototypes.

    Parameters
    ----------
    features : torch.Tensor
        ``(N, D)`` pooled embeddings or ``(N, D, H, W)`` position vectors.
    prototypes : torch.Tensor
        ``(P, D)`` prototypes; with ``paired=True``, ``(N, D)``: one prototype per row of ``features``.
    paired : bool
        Score row ``n`` against prototype ``n`` only.

    Returns
    -------
    torch.Tensor
        ``(N, P)`` or ``(N, P, H, W)``; with ``paired``, ``(N,)`` or ``(N, H, W)``. Computed in the
        promoted dtype of the two inputs, on ``features``' device.
    """
    if not isinstance(features, torch.Tensor) or features.ndim not in (2, 4):
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError(f"features must be (N, D) embeddings or (N, D, H, W) maps, got {shape}")
    if not isinstance(prototypes, torch.Tensor) or prototypes.ndim != 2 or prototypes.shape[1] != features.shape[1]:
        shape = tuple(prototypes.shape) if isinstance(prototypes, torch.Tensor) else type(prototypes).__name__
        raise ValueError(f"prototypes must be (P, D) with D = {features.shape[1]} (features {tuple(features.shape)}), "
                         f"got {shape}")
    dtype = torch.promote_types(features.dtype, prototypes.dtype)
    a = features.to(dtype)
    mu = prototypes.to(device=features.device, dtype=dtype)
    sq = (mu * mu).sum(1)
    if paired:
        if mu.shape[0] != a.shape[0]:
            raise ValueError(f"paired=True needs one prototype per row: {mu.shape[0]} prototypes for {a.shape[0]} rows")
        if a.ndim == 2:
            return 2 * (a * mu).sum(1) - sq
        return 2 * torch.einsum("nd,ndhw->nhw", mu, a) - sq.view(-1, 1, 1)
    if a.ndim == 2:
        return 2 * a @ mu.T - sq
    return 2 * torch.einsum("pd,ndhw->nphw", mu, a) - sq.view(1, -1, 1, 1)


class KMeansScoreModel(nn.Module):
    """Images -> class scores of a k-means classifier at a level: the model a k-means map explains.

    ``forward(x)`` returns ``(N, C)``, column ``c`` the best prototype score
    ``max_j 2 mu_{c,j} . z_S - ||mu_{c,j}||^2`` of class ``classifier.classes_[c]``,
    with ``z_S`` the pooled level features of ``x``. Its softmax is what
    deletion and insertion track for a k-means map.

    Parameters
    ----------
    model : nn.Module
        The network whose blocks the level reads.
    level_features : LevelFeatures
        The fitted level.
    classifier : KMeansClassifier
        The k-means classifier fitted on that level's pooled features.
    temperature : float, default 1.0
        Scores are divided by it (1 = the raw prototype scores). Prototype scores
        differ between classes by differences of squared distances, often small:
        their plain softmax is then nearly uniform and a deletion curve on it
        says little. :func:`fit_temperature` calibrates it on training data.

    Notes
    -----
    The wrapper is in eval mode when built, and its :meth:`train` / ``eval()``
    set only its own flag: the network's train/eval modes stay as the user
    left them (its forward pass runs the network in eval mode and restores
    every module's flag).
    """

    def __init__(self, model: nn.Module, level_features: Any, classifier: Any, temperature: float = 1.0) -> None:
        super().__init__()
        self.model = model
        self.level_features = level_features
        self.classifier = classifier
        self.temperature = float(temperature)
        # the method runs the network in eval mode (LevelFeatures does, restoring every flag): this
        # wrapper is in eval mode from the start and train()/eval() on it never reach the network
        self.training = False

    def train(self, mode: bool = True) -> "KMeansScoreModel":
        """Set this wrapper's own flag only: the network's modes are the user's and are never changed.

        The forward pass always runs the network in eval mode (the k-means
        classifier is defined on eval-mode features), whatever this flag says.
        """
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores ``(N, C)`` of images ``x`` ``(N, 3, H, W)``."""
        z = self.level_features.pooled(self.model, x)
        scores, _ = self.classifier.best_prototype_per_class(z)
        return scores / self.temperature


def fit_temperature(scores: torch.Tensor, columns: torch.Tensor) -> float:
    """The temperature ``T`` that makes ``softmax(scores / T)`` a calibrated classifier on training data.

    Minimises the cross-entropy of the true columns over a log grid of 121
    values from ``1e-4`` to ``1e2`` times the scores' spread (temperature
    scaling, Guo et al., 2017); the ranking of the classes is not changed.

    Parameters
    ----------
    scores : torch.Tensor
        ``(N, C)`` class scores (e.g. ``KMeansClassifier.class_scores`` of training embeddings).
    columns : torch.Tensor
        ``(N,)`` true class columns.

    Returns
    -------
    float

    Example
    -------
    >>> import torch
    >>> s = torch.tensor([[0.02, 0.0], [0.0, 0.03], [0.01, 0.0]])
    >>> fit_temperature(s, torch.tensor([0, 1, 0])) < 0.01
    True
    """
    s = torch.as_tensor(scores).double().cpu()
    y = torch.as_tensor(columns).long().cpu().reshape(-1)
    if s.ndim != 2 or y.shape != (s.shape[0],):
        raise ValueError(f"scores must be (N, C) and columns (N,), got {tuple(s.shape)} and {tuple(y.shape)}")
    spread = float(s.std()) or 1.0
    grid = spread * torch.logspace(-4, 2, 121, dtype=torch.float64)
    nll = torch.stack([torch.nn.functional.cross_entropy(s / t, y) for t in grid])
    return float(grid[int(nll.argmin())])
