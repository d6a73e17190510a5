"""Gradient-free attribution maps of prototype scores (METHOD 5).

For a prototype ``mu`` at level ``S``, the attribution map is

.. math:: m(p) = 2\\,\\mu\\cdot a^S_p - \\|\\mu\\|^2 ,

and because the pooled embedding is the spatial mean of the ``a^S_p``, its
mean over the grid is exactly the prototype's score ``2 mu . z - ||mu||^2``
(which differs from ``-||z - mu||^2`` only by ``-||z||^2``, common to all
prototypes). Only forward passes are needed: everything here runs under
``torch.no_grad()``.

Example
-------
>>> import torch
>>> from kmexplain_utils.attribution import attribution_map
>>> A = torch.rand(2, 5, 4, 4, dtype=torch.float64)
>>> mu = torch.rand(5, dtype=torch.float64)
>>> m = attribution_map(A, mu)
>>> z = A.mean((2, 3))
>>> bool(torch.allclose(m.mean((1, 2)), 2 * z @ mu - mu @ mu))
True
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import torch
from torch import nn

from ._validation import check_is_fitted, check_tensor
from .classifier import KMeansClassifier
from .features import LevelFeatures, eval_mode, model_adapter, model_registration
from .resample import GridGeometry, as_size, infer_geometry, resample_map
from .scores import prototype_scores
from .sem import logit_maps

__all__ = [
    "PrototypeChoice",
    "choose_prototypes",
    "attribution_map",
    "upsample_map",
    "GridExplanation",
    "explain",
    "contrastive_map",
    "concept_contributions",
    "cam",
]


@dataclasses.dataclass
class PrototypeChoice:
    """Which class and prototype a map explains, and against which rival (see :func:`choose_prototypes`).

    Attributes
    ----------
    class_scores : torch.Tensor
        ``(N, C)`` best prototype score of every class (columns follow ``classifier.classes_``).
    index : torch.Tensor
        ``(N, C)`` int64 row of ``classifier.prototypes_`` giving each class score.
    predicted : torch.Tensor
        ``(N,)`` int64 column of the predicted class (the best class score).
    target : torch.Tensor
        ``(N,)`` int64 column of the explained class.
    prototype : torch.Tensor
        ``(N,)`` int64 row of the target class's best prototype: the one its map explains.
    score : torch.Tensor
        ``(N,)`` that prototype's score.
    rival : torch.Tensor or None
        ``(N,)`` int64 column of the rival class (``None`` with a single class).
    rival_prototype : torch.Tensor or None
        ``(N,)`` int64 row of the rival class's best prototype.
    margin : torch.Tensor or None
        ``(N,)`` ``score - rival score``: the grid mean of the contrastive map.
    """

    class_scores: torch.Tensor
    index: torch.Tensor
    predicted: torch.Tensor
    target: torch.Tensor
    prototype: torch.Tensor
    score: torch.Tensor
    rival: torch.Tensor | None
    rival_prototype: torch.Tensor | None
    margin: torch.Tensor | None


def choose_prototypes(
    classifier: KMeansClassifier, z: torch.Tensor, target: Any = None, versus: Any = None
) -> PrototypeChoice:
    """The one rule for which prototypes a map explains: the target class's best, against the rival's best.

    Parameters
    ----------
    classifier : KMeansClassifier
        Fitted on embeddings of the level of ``z``.
    z : torch.Tensor
        ``(N, D)`` pooled embeddings.
    target : None or torch.Tensor
        ``(N,)`` (or ``()``) int64 *columns* of ``classifier.classes_`` (convert labels with
        :meth:`KMeansClassifier.class_columns`); ``None``: the predicted class.
    versus : None or torch.Tensor
        Columns of the rival class; ``None``: the best class other than the target (the
        runner-up when the target is the prediction).

    Returns
    -------
    PrototypeChoice

    Example
    -------
    >>> clf = KMeansClassifier(1, device="cpu").fit(torch.tensor([[0.0], [1.0], [4.0]]), [0, 1, 2])
    >>> c = choose_prototypes(clf, torch.tensor([[0.9], [3.0]]))
    >>> c.target.tolist(), c.rival.tolist(), [round(v, 4) for v in c.margin.tolist()]
    ([1, 2], [0, 1], [0.8, 3.0])
    """
    check_is_fitted(classifier, ["prototypes_"])
    with torch.no_grad():
        scores, index = classifier.best_prototype_per_class(z)
        dev, n, C = scores.device, scores.shape[0], scores.shape[1]
        rows = torch.arange(n, device=dev)
        predicted = scores.argmax(1)
        col = predicted if target is None else torch.as_tensor(target, device=dev).long().expand(n)
        rival = prototype_rival = margin = None
        if versus is not None:
            rival = torch.as_tensor(versus, device=dev).long().expand(n)
        elif C >= 2:
            rival = scores.masked_fill(torch.nn.functional.one_hot(col, C).bool(), -torch.inf).argmax(1)
        score = scores[rows, col]
        if rival is not None:
            prototype_rival = index[rows, rival]
            margin = score - scores[rows, rival]
    return PrototypeChoice(class_scores=scores, index=index, predicted=predicted, target=col,
                           prototype=index[rows, col], score=score, rival=rival,
                           rival_prototype=prototype_rival, margin=margin)


def upsample_map(m: torch.Tensor, size: Any, geometry: GridGeometry | None = None) -> torch.Tensor:
    """Resample real-valued grid maps ``(N, h, w)`` to the image ``(N, H, W)`` at registered coordinates.

    Parameters
    ----------
    m : torch.Tensor
        ``(N, h, w)`` maps on a feature grid.
    size : int or (int, int)
        Image size ``(H, W)``.
    geometry : GridGeometry, optional
        Where the grid's positions sit (``LevelFeatures.grid_geometry_``, or
        :func:`kmexplain_utils.architectures.registration`); default: stride
        ``H / h``, offset 0 (exact for symmetric padding).

    Returns
    -------
    torch.Tensor
        ``(N, H, W)`` bilinear interpolation at each pixel's registered grid
        coordinate (see :func:`kmexplain_utils.resample.resample_map`).
    """
    check_tensor(m, 3, name="map", shape_doc="(N, H, W)")
    if size is None:
        return m
    size = as_size(size)
    geo = infer_geometry(m.shape[-2:], size) if geometry is None else geometry
    return resample_map(m, geo, size)


def attribution_map(
    position_features: torch.Tensor, prototypes: torch.Tensor, *, size: Any = None,
    geometry: GridGeometry | None = None,
) -> torch.Tensor:
    """Per-position prototype score ``m(p) = 2 mu . a_p - ||mu||^2``.

    Parameters
    ----------
    position_features : torch.Tensor
        ``(N, D, H_S, W_S)`` position vectors of a level.
    prototypes : torch.Tensor
        ``(N, D)`` one prototype per image (e.g. the winning one) or ``(D,)``
        the same prototype for all images.
    size : int or (int, int), optional
        Resample to this size (e.g. the image's) at the registered coordinates
        (:func:`upsample_map`). The mean over the *grid* equals the prototype
        score exactly.
    geometry : GridGeometry, optional
        The grid's geometry, for ``size`` (see :func:`upsample_map`).

    Returns
    -------
    torch.Tensor
        ``(N, H_S, W_S)`` (or ``(N, *size)``), on ``position_features``' device.
    """
    check_tensor(position_features, 4, name="position_features", shape_doc="(N, D, H, W)")
    N, D = position_features.shape[:2]
    if not isinstance(prototypes, torch.Tensor):
        raise TypeError(f"prototypes must be a torch.Tensor of shape (N, D) or (D,), got {type(prototypes).__name__}")
    mu = prototypes.to(device=position_features.device, dtype=position_features.dtype)
    if mu.ndim == 1:
        mu = mu.expand(N, -1)
    if mu.shape != (N, D):
        raise ValueError(
            f"prototypes must have shape (N, D) = ({N}, {D}) or (D,) = ({D},) to match position_features "
            f"{tuple(position_features.shape)}; got {tuple(prototypes.shape)}"
        )
    with torch.no_grad():
        m = prototype_scores(position_features, mu, paired=True)
    return upsample_map(m, size, geometry) if size is not None else m


@dataclasses.dataclass
class GridExplanation:
    """What the low-level :func:`explain` returns for a batch of images (maps on the level's grid).

    The front door :class:`kmexplain_utils.Explainer` returns the richer
    :class:`kmexplain_utils.explainer.Explanation` (maps at image size,
    contrastive and concept maps); this one keeps the grid-level pieces.

    Attributes
    ----------
    attribution : torch.Tensor
        ``(N, H_S, W_S)`` winning prototype's map ``m*(p)`` on the level's grid;
        ``attribution.mean((1, 2)) == score``.
    prototype : torch.Tensor
        ``(N,)`` int64 row of ``classifier.prototypes_`` that won.
    predicted : torch.Tensor
        ``(N,)`` int64 predicted class label.
    score : torch.Tensor
        ``(N,)`` winning score ``2 mu* . z - ||mu*||^2``.
    class_scores : torch.Tensor
        ``(N, C)`` best prototype score per class (columns = ``classifier.classes_``).
    embeddings : torch.Tensor
        ``(N, D_S)`` pooled embeddings ``z``.
    position_features : torch.Tensor
        ``(N, D_S, H_S, W_S)`` the position vectors (reuse them for concept
        maps without a second forward pass).
    logits : torch.Tensor
        ``(N, C)`` the network's own logits from the same forward pass.
    image_size : tuple of int
        ``(H, W)`` of the input images.
    level : str
        The level.
    geometry : GridGeometry or None
        Where the grid's positions sit on the image.
    """

    attribution: torch.Tensor
    prototype: torch.Tensor
    predicted: torch.Tensor
    score: torch.Tensor
    class_scores: torch.Tensor
    embeddings: torch.Tensor
    position_features: torch.Tensor
    logits: torch.Tensor
    image_size: tuple[int, int]
    level: str
    geometry: GridGeometry | None = None

    def upsampled(self, size: Any = None) -> torch.Tensor:
        """The attribution map resampled at the registered coordinates to ``size`` (default: the image)."""
        return upsample_map(self.attribution, self.image_size if size is None else size, self.geometry)


def _check_classifier(classifier: KMeansClassifier, level_features: LevelFeatures) -> None:
    if not isinstance(classifier, KMeansClassifier):
        raise TypeError(f"classifier must be a fitted KMeansClassifier, got {type(classifier).__name__}")
    check_is_fitted(classifier, ["prototypes_"])
    if not isinstance(level_features, LevelFeatures):
        raise TypeError(f"level_features must be a LevelFeatures, got {type(level_features).__name__}")
    level_features.require_positions()


def explain(
    model: nn.Module, x: torch.Tensor, level_features: LevelFeatures, classifier: KMeansClassifier
) -> GridExplanation:
    """Classify images with the k-means classifier and explain the decision (one forward pass).

    Parameters
    ----------
    model : nn.Module
        The network.
    x : torch.Tensor
        ``(N, 3, H, W)`` images.
    level_features : LevelFeatures
        Fitted block level (the classifier was fitted on its pooled embeddings).
    classifier : KMeansClassifier
        Fitted on ``level_features.pooled`` embeddings.

    Returns
    -------
    GridExplanation

    Example
    -------
    >>> import torch, torchvision
    >>> from kmexplain_utils.features import LevelFeatures
    >>> from kmexplain_utils.classifier import KMeansClassifier
    >>> m = torchvision.models.resnet18(weights=None, num_classes=2)
    >>> x, y = torch.rand(8, 3, 64, 64), torch.tensor([0, 1] * 4)
    >>> lf = LevelFeatures("B34").fit(m, x)
    >>> clf = KMeansClassifier(2, device="cpu").fit(lf.pooled(m, x), y)
    >>> e = explain(m, x[:3], lf, clf)
    >>> e.attribution.shape, bool(torch.allclose(e.attribution.mean((1, 2)), e.score, atol=1e-4))
    (torch.Size([3, 4, 4]), True)
    """
    _check_classifier(classifier, level_features)
    with torch.no_grad():
        feats, logits = level_features.position_features(model, x, return_logits=True)  # type: ignore[misc]
        z = feats.mean((2, 3))
        c = choose_prototypes(classifier, z)
        win = c.prototype
        mu = classifier.prototypes_.to(device=feats.device, dtype=feats.dtype)[win.to(feats.device)]
        m = attribution_map(feats, mu)
        return GridExplanation(
            attribution=m,
            prototype=win,
            predicted=classifier._labels_of(c.predicted, win),
            score=c.score,
            class_scores=c.class_scores,
            embeddings=z,
            position_features=feats,
            logits=logits,
            image_size=tuple(x.shape[-2:]),  # type: ignore[arg-type]
            level=level_features.level,
            geometry=getattr(level_features, "grid_geometry_", None),
        )


def contrastive_map(
    position_features: torch.Tensor,
    classifier: KMeansClassifier,
    *,
    versus: Any = None,
    size: Any = None,
    geometry: GridGeometry | None = None,
    return_info: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """"Why the predicted class rather than another?": winner's map minus the rival's.

    ``m*(p) - m2(p) = 2 (mu* - mu2) . a_p - (||mu*||^2 - ||mu2||^2)``, where
    ``mu*`` is the winning prototype and ``mu2`` the best prototype of the
    rival class (the runner-up class by default). Its grid mean is the score
    margin ``score* - score2``.

    Parameters
    ----------
    position_features : torch.Tensor
        ``(N, D, H_S, W_S)``.
    classifier : KMeansClassifier
        Fitted on the pooled embeddings of the same level.
    versus : label or sequence of labels, optional
        Rival class label (one for all, or ``(N,)``), converted by
        :meth:`KMeansClassifier.class_columns`. Default: the runner-up class.
    size : int or (int, int), optional
        Resampling size (e.g. the image's), see :func:`upsample_map`.
    geometry : GridGeometry, optional
        The grid's geometry, for ``size``.
    return_info : bool
        Also return ``{"winner", "rival", "predicted", "rival_class", "margin"}``.

    Returns
    -------
    torch.Tensor
        ``(N, H_S, W_S)`` (or upsampled) map; optionally the info dict.
    """
    check_tensor(position_features, 4, name="position_features", shape_doc="(N, D, H, W)")
    check_is_fitted(classifier, ["prototypes_"])
    with torch.no_grad():
        z = position_features.mean((2, 3))
        if len(classifier.classes_) < 2:
            raise ValueError("a contrastive map needs a classifier with at least two classes")
        c = choose_prototypes(classifier, z, versus=None if versus is None else
                              classifier.class_columns(versus, n=z.shape[0]))
        win_col, rival_col, win, rival = c.target, c.rival, c.prototype, c.rival_prototype
        if versus is not None and bool((rival_col == win_col).any()):
            same = int((rival_col == win_col).nonzero()[0])
            warnings.warn(f"versus is the predicted class for image {same}: its contrastive map is zero", stacklevel=2)
        mu = classifier.prototypes_.to(device=position_features.device, dtype=position_features.dtype)
        diff = attribution_map(position_features, mu[win]) - attribution_map(position_features, mu[rival])
        out = upsample_map(diff, size, geometry) if size is not None else diff
    if not return_info:
        return out
    info = {
        "winner": win,
        "rival": rival,
        "predicted": classifier._labels_of(win_col, position_features),
        "rival_class": classifier._labels_of(rival_col, position_features),
        "margin": c.margin,
    }
    return out, info


def concept_contributions(attr_map: torch.Tensor, concept_map: torch.Tensor, n_concepts: int) -> torch.Tensor:
    """Split a score by concept: ``sum_k (n_k / |P|) mean_{p in k} m(p)`` per concept ``k``.

    The contributions of one image sum to the mean of its map, i.e. to the
    prototype's score when ``attr_map`` is an :func:`attribution_map` on the
    grid. Both maps must be on the same (un-upsampled) grid.

    Parameters
    ----------
    attr_map : torch.Tensor
        ``(N, H, W)`` attribution map.
    concept_map : torch.Tensor
        ``(N, H, W)`` int64 concept of each position (values in ``0..n_concepts-1``).
    n_concepts : int
        ``K'``.

    Returns
    -------
    torch.Tensor
        ``(N, K')``: contribution of each concept (0 for concepts absent
        from an image).

    Example
    -------
    >>> m = torch.tensor([[[1.0, 3.0], [-2.0, 2.0]]])
    >>> c = torch.tensor([[[0, 0], [1, 2]]])
    >>> concept_contributions(m, c, 3)
    tensor([[ 1.0000, -0.5000,  0.5000]])
    """
    check_tensor(attr_map, 3, name="attr_map", shape_doc="(N, H, W)")
    check_tensor(concept_map, 3, name="concept_map", shape_doc="(N, H, W)")
    if attr_map.shape != concept_map.shape:
        raise ValueError(
            f"attr_map {tuple(attr_map.shape)} and concept_map {tuple(concept_map.shape)} must have the same "
            "shape (N, H, W): use both on the level's grid (do not upsample either)."
        )
    if concept_map.is_floating_point() or concept_map.dtype == torch.bool:
        raise TypeError(f"concept_map must hold integer concept indices, got dtype {concept_map.dtype}")
    if int(n_concepts) < 1:
        raise ValueError(f"n_concepts must be >= 1, got {n_concepts}")
    labels = concept_map.to(attr_map.device).long().flatten(1)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= int(n_concepts)):
        raise ValueError(
            f"concept_map values must lie in [0, {int(n_concepts)}), got [{int(labels.min())}, {int(labels.max())}]"
        )
    N, P = labels.shape
    out = torch.zeros(N, int(n_concepts), dtype=attr_map.dtype, device=attr_map.device)
    return out.scatter_add_(1, labels, attr_map.flatten(1)) / P


def cam(
    model: nn.Module, x: torch.Tensor, target: Any = None, size: Any = None
) -> torch.Tensor:
    """Class activation map of the network's own linear head (the baseline).

    ``s_c(a_p) = w_c . a_p + b_c`` from :func:`kmexplain_utils.sem.decompose_logits`
    (Zhou et al.'s CAM plus the bias ``b_c``); its mean over the grid is the
    logit ``l_c``. No ReLU or normalisation is applied.

    Parameters
    ----------
    model : nn.Module
        A model accepted by :func:`kmexplain_utils.architectures.adapt` (run in
        eval mode; its mode is restored).
    x : torch.Tensor
        ``(N, 3, H, W)`` images.
    target : int or torch.Tensor, optional
        Column of the network's logits to explain (one for all or ``(N,)``);
        default: the predicted column.
    size : int or (int, int), optional
        Resample to this size at B4's registered coordinates (e.g. ``x.shape[-2:]``).

    Returns
    -------
    torch.Tensor
        ``(N, H', W')`` (or resampled).
    """
    check_tensor(x, 4, name="x", shape_doc="(N, 3, H, W)")
    adapter = model_adapter(model)
    with eval_mode(model), torch.no_grad():
        s, logits = logit_maps(model, x, head=adapter.head)
        if target is None:
            idx = logits.argmax(1)
        else:
            idx = torch.as_tensor(target, device=s.device).long().reshape(-1)
            if idx.numel() == 1:
                idx = idx.expand(x.shape[0])
            if idx.shape != (x.shape[0],):
                raise ValueError(f"target must be an int or have shape (N,) = ({x.shape[0]},), got {tuple(idx.shape)}")
            if int(idx.min()) < 0 or int(idx.max()) >= s.shape[1]:
                raise ValueError(f"target must lie in [0, {s.shape[1]}) (columns of the logits), got {idx.tolist()}")
        m = s[torch.arange(x.shape[0], device=s.device), idx]
    if size is None:
        return m
    reg = model_registration(model, tuple(x.shape[-2:]))["B4"]
    return upsample_map(m, size, GridGeometry.from_registration(reg))
