"""The k-means classifier: per-class centroids as prototypes (METHOD 2).

For each class ``c``, k-means fits ``K`` centroids ``mu_{c,1..K}`` on the
training embeddings of that class. An embedding ``z`` gets the class of its
nearest centroid. Because ``||z||^2`` is the same for every centroid,

.. math:: \\arg\\min_{c,j} \\|z - \\mu_{c,j}\\|^2 = \\arg\\max_{c,j}\\; 2\\mu_{c,j}\\cdot z - \\|\\mu_{c,j}\\|^2,

so the classifier is a linear layer (weights ``2 mu``, biases ``-||mu||^2``)
followed by a max over each class's prototypes (:meth:`KMeansClassifier.as_linear`).
Since ``z`` is a spatial mean, each prototype score is again the mean of
per-position scores: the k-means classifier is a self-explainable model
whose prototypes are data centroids.

Example
-------
>>> import torch
>>> from kmexplain_utils.classifier import KMeansClassifier
>>> g = torch.Generator().manual_seed(0)
>>> Z = torch.cat([torch.randn(50, 2, generator=g) + 4, torch.randn(50, 2, generator=g) - 4])
>>> y = torch.tensor([0] * 50 + [1] * 50)
>>> clf = KMeansClassifier(n_prototypes=2, device="cpu").fit(Z, y)
>>> clf.prototypes_.shape, clf.prototype_labels_.tolist()
(torch.Size([4, 2]), [0, 0, 1, 1])
>>> clf.score(Z, y)
1.0
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from ._validation import as_float_tensor, check_finite, check_is_fitted

__all__ = ["KMeansClassifier", "PrototypeHead"]


def _as_embeddings(Z: Any, *, name: str = "Z", n_features: int | None = None) -> torch.Tensor:
    if isinstance(Z, (torch.Tensor, np.ndarray)):
        t = as_float_tensor(Z, name=name)
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy array of shape (N, D), got {type(Z).__name__}")
    if t.ndim != 2:
        hint = " Pool feature maps (N, D, H, W) first, e.g. with LevelFeatures.pooled." if t.ndim == 4 else ""
        raise ValueError(f"{name} must be embeddings of shape (N, D), got shape {tuple(t.shape)}.{hint}")
    if n_features is not None and t.shape[1] != n_features:
        raise ValueError(
            f"{name} has D = {t.shape[1]} features, but the classifier was fitted with D = {n_features}; "
            f"expected shape (N, {n_features})."
        )
    return t


def _to_output(t: torch.Tensor, like: Any) -> Any:
    return t.cpu().numpy() if isinstance(like, np.ndarray) else t


class PrototypeHead(nn.Module):
    """The k-means classifier as a network layer: linear scores, then a max per class.

    ``prototype_scores(z) = z @ (2 mu).T - ||mu||^2`` is an ``nn.Linear``
    (:attr:`linear`), so :func:`kmexplain_utils.sem.decompose_logits` splits it
    into per-position scores exactly as for the original head.

    Parameters
    ----------
    prototypes : torch.Tensor
        ``(P, D)`` centroids ``mu``.
    class_index : torch.Tensor
        ``(P,)`` int64 column (``0..C-1``) of each prototype's class.
    n_classes : int
        ``C``.
    """

    def __init__(self, prototypes: torch.Tensor, class_index: torch.Tensor, n_classes: int) -> None:
        super().__init__()
        mu = prototypes.detach()
        self.linear = nn.Linear(mu.shape[1], mu.shape[0], device=mu.device, dtype=mu.dtype)
        with torch.no_grad():
            self.linear.weight.copy_(2 * mu)
            self.linear.bias.copy_(-(mu * mu).sum(1))
        self.register_buffer("class_index", class_index.to(device=mu.device, dtype=torch.int64))
        self.n_classes = int(n_classes)

    def prototype_scores(self, z: torch.Tensor) -> torch.Tensor:
        """Per-prototype scores ``(N, P)`` of embeddings ``z`` ``(N, D)``."""
        return self.linear(z)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Class scores ``(N, C)``: the best prototype score of each class."""
        return _class_max(self.linear(z), self.class_index, self.n_classes)


def _class_max(scores: torch.Tensor, class_index: torch.Tensor, n_classes: int) -> torch.Tensor:
    out = torch.full((scores.shape[0], n_classes), -torch.inf, dtype=scores.dtype, device=scores.device)
    idx = class_index.to(scores.device).view(1, -1).expand_as(scores)
    return out.scatter_reduce(1, idx, scores, reduce="amax", include_self=True)


class KMeansClassifier:
    """Per-class k-means classifier on embeddings (KMEx-style, METHOD 2).

    Parameters
    ----------
    n_prototypes : int
        Centroids ``K`` per class.
    random_state : int or None
        Seed of every per-class k-means (class ``i`` uses ``random_state + i``).
    device : str or torch.device
        Where k-means runs (``"auto"``: CUDA when available). Scoring
        follows the device of the embeddings passed in.
    kmeans_kwargs : dict, optional
        Extra arguments of :class:`kmexplain_utils.kmeans.KMeans`
        (e.g. ``{"n_init": 3}``).

    Attributes
    ----------
    classes_ : torch.Tensor
        ``(C,)`` int64 sorted class labels seen in ``fit``.
    prototypes_ : torch.Tensor
        ``(P, D)`` centroids, ``P = sum_c K_c`` (``K_c = K`` unless a class is
        too small), grouped by class in the order of ``classes_``.
    prototype_labels_ : torch.Tensor
        ``(P,)`` int64 class label of each prototype.
    prototype_class_index_ : torch.Tensor
        ``(P,)`` int64 column in ``classes_`` of each prototype.
    prototype_sizes_ : torch.Tensor
        ``(P,)`` int64 number of training embeddings assigned to each prototype.
    n_prototypes_per_class_ : dict of int to int
        ``K_c`` per class label.
    n_features_in_ : int
        ``D``.
    kmeans_ : list of KMeans
        The fitted per-class k-means.

    Notes
    -----
    A class with fewer training embeddings than ``n_prototypes`` gets one
    prototype per embedding (``K_c = n_c``) and a ``UserWarning`` says so;
    :meth:`class_scores` takes the max over however many prototypes a class
    has.

    Example
    -------
    >>> import torch
    >>> Z = torch.randn(40, 3, generator=torch.Generator().manual_seed(1))
    >>> y = (Z[:, 0] > 0).long()
    >>> clf = KMeansClassifier(n_prototypes=3, device="cpu").fit(Z, y)
    >>> clf.decision_function(Z).shape, clf.class_scores(Z).shape
    (torch.Size([40, 6]), torch.Size([40, 2]))
    """

    def __init__(
        self,
        n_prototypes: int = 4,
        *,
        random_state: int | None = 0,
        device: str | torch.device = "auto",
        kmeans_kwargs: dict | None = None,
    ) -> None:
        self.n_prototypes = n_prototypes
        self.random_state = random_state
        self.device = device
        self.kmeans_kwargs = kmeans_kwargs

    # ------------------------------------------------------------------ fit
    def fit(self, Z: Any, y: Any) -> "KMeansClassifier":
        """Fit ``n_prototypes`` k-means centroids on the embeddings of each class.

        Parameters
        ----------
        Z : torch.Tensor or numpy.ndarray
            ``(N, D)`` training embeddings (not modified).
        y : torch.Tensor or numpy.ndarray
            ``(N,)`` integer class labels.

        Returns
        -------
        KMeansClassifier
            ``self``.
        """
        from .kmeans import KMeans

        K = self.n_prototypes
        if isinstance(K, bool) or not isinstance(K, numbers.Integral) or K < 1:
            raise ValueError(f"n_prototypes must be a positive int, got {K!r}")
        Zt = _as_embeddings(Z)
        check_finite(Zt, name="Z")
        yt = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
        if yt.ndim != 1 or yt.shape[0] != Zt.shape[0]:
            raise ValueError(f"y must have shape (N,) = ({Zt.shape[0]},) to match Z, got shape {tuple(yt.shape)}")
        if yt.is_floating_point() or yt.dtype == torch.bool:
            if yt.is_floating_point() and bool((yt == yt.round()).all()):
                yt = yt.long()
            else:
                raise TypeError(f"y must hold integer class labels, got dtype {yt.dtype}")
        yt = yt.long().to(Zt.device)
        classes = torch.unique(yt).cpu()
        if len(classes) < 1:
            raise ValueError("Z is empty: at least one labelled embedding is needed")
        kwargs = dict(self.kmeans_kwargs or {})
        for bad in ("n_clusters", "random_state"):
            if bad in kwargs:
                raise ValueError(f"kmeans_kwargs must not set {bad!r}; use n_prototypes / random_state")
        kwargs.setdefault("device", self.device)
        protos, labels, sizes, kms, per_class = [], [], [], [], {}
        for i, c in enumerate(classes.tolist()):
            Zc = Zt[yt == c]
            k = min(int(K), Zc.shape[0])
            if k < K:
                warnings.warn(
                    f"class {c} has only {Zc.shape[0]} training embedding(s), fewer than n_prototypes={K}; "
                    f"it gets {k} prototype(s).",
                    UserWarning,
                    stacklevel=2,
                )
            seed = None if self.random_state is None else int(self.random_state) + i
            km = KMeans(n_clusters=k, random_state=seed, **kwargs).fit(Zc)
            C = km.cluster_centers_
            protos.append(C)
            labels.append(torch.full((k,), c, dtype=torch.int64))
            lab = km.labels_.to(torch.int64).cpu() if km.labels_ is not None else km.predict(Zc).cpu()
            sizes.append(torch.bincount(lab, minlength=k))
            kms.append(km)
            per_class[int(c)] = k
        dev = protos[0].device
        self.classes_ = classes.long()
        self.prototypes_ = torch.cat([p.to(dev) for p in protos])
        self.prototype_labels_ = torch.cat(labels)
        self.prototype_class_index_ = torch.searchsorted(self.classes_, self.prototype_labels_)
        self.prototype_sizes_ = torch.cat(sizes)
        self.n_prototypes_per_class_ = per_class
        self.n_features_in_ = Zt.shape[1]
        self.kmeans_ = kms
        return self

    # -------------------------------------------------------------- scoring
    def _prep(self, Z: Any) -> tuple[torch.Tensor, torch.Tensor]:
        check_is_fitted(self, ["prototypes_"])
        Zt = _as_embeddings(Z, n_features=self.n_features_in_)
        dtype = torch.promote_types(Zt.dtype, self.prototypes_.dtype)
        return Zt.to(dtype), self.prototypes_.to(device=Zt.device, dtype=dtype)

    def decision_function(self, Z: Any) -> Any:
        """Per-prototype scores ``2 mu . z - ||mu||^2``, shape ``(N, P)``.

        Equal to ``-||z - mu||^2 + ||z||^2``: the ranking of prototypes is that
        of negative squared distances. Tensor in, tensor out (on ``Z``'s
        device); numpy in, numpy out.
        """
        Zt, mu = self._prep(Z)
        return _to_output(2 * Zt @ mu.T - (mu * mu).sum(1), Z)

    def class_scores(self, Z: Any) -> Any:
        """Class scores ``(N, C)``: the best prototype score of each class (columns follow ``classes_``)."""
        Zt, mu = self._prep(Z)
        s = 2 * Zt @ mu.T - (mu * mu).sum(1)
        return _to_output(_class_max(s, self.prototype_class_index_, len(self.classes_)), Z)

    def best_prototype_per_class(self, Z: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """For every class, the score and index of its best prototype.

        Returns
        -------
        scores : torch.Tensor
            ``(N, C)`` (same as :meth:`class_scores`).
        index : torch.Tensor
            ``(N, C)`` int64 rows of ``prototypes_``.
        """
        Zt, mu = self._prep(Z)
        s = 2 * Zt @ mu.T - (mu * mu).sum(1)
        cls = self.prototype_class_index_.to(Zt.device)
        C = len(self.classes_)
        masked = s[:, None, :].expand(-1, C, -1).masked_fill(
            cls[None, None, :] != torch.arange(C, device=Zt.device)[None, :, None], -torch.inf
        )
        scores, index = masked.max(dim=2)
        return scores, index

    def winning_prototype(self, Z: Any) -> Any:
        """Index ``(N,)`` (int64) of the best-scoring prototype, i.e. the nearest centroid."""
        Zt, mu = self._prep(Z)
        return _to_output((2 * Zt @ mu.T - (mu * mu).sum(1)).argmax(1), Z)

    def predict(self, Z: Any) -> Any:
        """Class label ``(N,)`` of the nearest centroid."""
        Zt, mu = self._prep(Z)
        s = 2 * Zt @ mu.T - (mu * mu).sum(1)
        pred = self.prototype_labels_.to(Zt.device)[s.argmax(1)]
        return _to_output(pred, Z)

    def score(self, Z: Any, y: Any) -> float:
        """Accuracy of :meth:`predict` on ``(Z, y)``."""
        pred = torch.as_tensor(self.predict(Z))
        yt = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).to(pred.device)
        if yt.shape != pred.shape:
            raise ValueError(f"y must have shape ({pred.shape[0]},), got {tuple(yt.shape)}")
        return float((pred == yt).double().mean())

    def as_linear(self) -> PrototypeHead:
        """The equivalent network head: ``nn.Linear`` (weights ``2 mu``, biases ``-||mu||^2``) + max per class.

        Returns
        -------
        PrototypeHead
            ``head(z) == class_scores(z)``; ``head.linear`` can be passed to
            :func:`kmexplain_utils.sem.decompose_logits`.
        """
        check_is_fitted(self, ["prototypes_"])
        return PrototypeHead(self.prototypes_, self.prototype_class_index_, len(self.classes_))

    def __repr__(self) -> str:
        return f"KMeansClassifier(n_prototypes={self.n_prototypes!r}, random_state={self.random_state!r})"
