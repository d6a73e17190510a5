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

It is a scikit-learn classifier: any labels, numpy in and numpy out.

>>> from sklearn.model_selection import cross_val_score
>>> names = np.array(["cat", "dog"])[y.numpy()]
>>> cross_val_score(KMeansClassifier(n_prototypes=2, device="cpu"), Z.numpy(), names, cv=3).tolist()
[1.0, 1.0, 1.0]
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import accuracy_score
from sklearn.utils import assert_all_finite, column_or_1d
from sklearn.utils._param_validation import Interval
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length
from torch import nn

from ._sklearn import RANDOM_STATE_CONSTRAINT, validate_features
from ._torch import seed_from
from ._validation import as_float_tensor, check_finite, check_is_fitted
from .kmeans import KMeans
from .scores import prototype_scores

__all__ = ["KMeansClassifier", "PrototypeHead"]


def _as_embeddings(Z: Any, *, name: str = "Z", n_features: int | None = None) -> torch.Tensor:
    if isinstance(Z, (torch.Tensor, np.ndarray)):
        t = as_float_tensor(Z, name=name)
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy array of shape (N, D), got {type(Z).__name__}")
    if t.ndim != 2:
        hint = ""
        if t.ndim == 4:
            hint = " Pool feature maps (N, D, H, W) first, e.g. with LevelFeatures.pooled."
        elif t.ndim == 1:
            hint = " Reshape your data: for one embedding use Z.reshape(1, -1)."
        raise ValueError(f"{name} must be embeddings of shape (N, D), got shape {tuple(t.shape)}.{hint}")
    if n_features is not None and t.shape[1] != n_features:
        raise ValueError(
            f"{name} has D = {t.shape[1]} features, but the classifier was fitted with D = {n_features}; "
            f"expected shape (N, {n_features})."
        )
    return t


def _to_output(t: torch.Tensor, like: Any) -> Any:
    """Tensor in, tensor out (on the input's device); anything else in, numpy out."""
    return t if isinstance(like, torch.Tensor) else t.cpu().numpy()


def _labels_array(y: Any) -> np.ndarray:
    """``y`` as a 1-D numpy array of labels (a ``(N, 1)`` column is raveled with a warning)."""
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    y = column_or_1d(np.asarray(y), warn=True)
    if y.dtype.kind in "fc":
        assert_all_finite(y, input_name="y")
    return y


def _torch_labels(classes: np.ndarray) -> bool:
    """Whether labels of this dtype can be returned as a tensor (bool, int, float, uint8)."""
    return classes.dtype.kind in "bif" or classes.dtype == np.uint8


class PrototypeHead(nn.Module):
    """The k-means classifier as a network layer: linear scores, then a max per class.

    ``prototype_scores(z) = z @ (2 mu).T - ||mu||^2`` is an ``nn.Linear``
    (``linear``), so :func:`kmexplain_utils.sem.decompose_logits` splits it
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


class KMeansClassifier(ClassifierMixin, BaseEstimator):
    """Per-class k-means classifier on embeddings (KMEx-style, METHOD 2).

    A scikit-learn classifier (``clone``, ``get_params`` / ``set_params``,
    pipelines, ``cross_val_score``, ``GridSearchCV``, pickling):
    hyper-parameters are stored as given and validated by :meth:`fit`.
    Embeddings may be numpy arrays, lists (or other array-likes) or torch
    tensors; labels may be of any kind (ints, strings, ...).

    Parameters
    ----------
    n_prototypes : int, default 4
        Centroids ``K`` per class.
    random_state : int, numpy/torch generator or None, default 0
        Seed of the per-class k-means: with an int, class ``i`` (in the order
        of ``classes_``) uses ``random_state + i`` and the fit is
        deterministic; a generator gives one base seed per ``fit``. ``None``
        means non-deterministic: every per-class k-means draws a fresh random
        seed at every ``fit`` (as in scikit-learn).
    device : str or torch.device, default "auto"
        Where k-means runs (``"auto"``: CUDA when available). Scoring
        follows the device of the embeddings passed in.
    kmeans_kwargs : dict, optional
        Extra arguments of :class:`kmexplain_utils.kmeans.KMeans`
        (e.g. ``{"n_init": 3}``).

    Attributes
    ----------
    classes_ : numpy.ndarray
        ``(C,)`` the sorted class labels seen in ``fit`` (any label type).
        Use :meth:`class_columns` to turn labels into column indices.
    prototypes_ : torch.Tensor
        ``(P, D)`` float centroids, ``P = sum_c K_c`` (``K_c = K`` unless a
        class is too small), grouped by class in the order of ``classes_``,
        on the fitting device.
    prototype_labels_ : numpy.ndarray
        ``(P,)`` class label of each prototype (``classes_[prototype_class_index_]``).
    prototype_class_index_ : torch.Tensor
        ``(P,)`` int64 column in ``classes_`` of each prototype (CPU).
    prototype_sizes_ : torch.Tensor
        ``(P,)`` int64 number of training embeddings assigned to each prototype (CPU).
    n_prototypes_per_class_ : dict
        ``K_c`` per class label.
    n_features_in_ : int
        ``D``.
    kmeans_ : list of KMeans
        The fitted per-class k-means (fitted on tensors: their
        ``cluster_centers_`` are tensors).

    Notes
    -----
    A class with fewer training embeddings than ``n_prototypes`` gets one
    prototype per embedding (``K_c = n_c``) and a ``UserWarning`` says so;
    :meth:`class_scores` takes the max over however many prototypes a class
    has.

    :meth:`prototype_scores` gives one column per *prototype* ``(N, P)``;
    :meth:`class_scores` gives the ``(N, C)`` class scores and
    :meth:`decision_function` the same in scikit-learn's convention (``(N,)``
    for two classes).

    Example
    -------
    >>> import torch
    >>> Z = torch.randn(40, 3, generator=torch.Generator().manual_seed(1))
    >>> y = (Z[:, 0] > 0).long()
    >>> clf = KMeansClassifier(n_prototypes=3, device="cpu").fit(Z, y)
    >>> clf.prototype_scores(Z).shape, clf.class_scores(Z).shape, clf.decision_function(Z).shape
    (torch.Size([40, 6]), torch.Size([40, 2]), torch.Size([40]))
    >>> clf.classes_
    array([0, 1])
    >>> clf.class_columns(1, n=3)
    tensor([1, 1, 1])
    """

    _parameter_constraints: dict = {
        "n_prototypes": [Interval(numbers.Integral, 1, None, closed="left")],
        "random_state": RANDOM_STATE_CONSTRAINT,
        "device": [str, torch.device],
        "kmeans_kwargs": [dict, None],
    }

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
        Z : torch.Tensor, numpy.ndarray or array-like of shape (N, D)
            Training embeddings (not modified).
        y : torch.Tensor, numpy.ndarray or array-like of shape (N,)
            Class labels of any kind (ints, strings, ...); not continuous values.

        Returns
        -------
        KMeansClassifier
            ``self``.
        """
        self._validate_params()
        K = int(self.n_prototypes)
        Zt = _as_embeddings(validate_features(self, Z, reset=True))
        check_finite(Zt, name="Z")
        y_np = _labels_array(y)
        if y_np.shape[0] != Zt.shape[0]:
            raise ValueError(
                f"y must have shape (N,) = ({Zt.shape[0]},) to match Z, got shape {tuple(np.shape(y))}; "
                "give one label per embedding."
            )
        check_consistent_length(y_np, Zt)
        check_classification_targets(y_np)
        classes, y_index = np.unique(y_np, return_inverse=True)
        kwargs = dict(self.kmeans_kwargs or {})
        for bad in ("n_clusters", "random_state"):
            if bad in kwargs:
                raise ValueError(f"kmeans_kwargs must not set {bad!r}; use n_prototypes / random_state")
        kwargs.setdefault("device", self.device)
        rs = self.random_state
        base = None if rs is None else (int(rs) if isinstance(rs, numbers.Integral) else seed_from(rs))
        yt = torch.from_numpy(np.asarray(y_index, dtype=np.int64).reshape(-1)).to(Zt.device)
        protos, class_index, sizes, kms, per_class = [], [], [], [], {}
        for i, c in enumerate(classes.tolist()):
            Zc = Zt[yt == i]
            k = min(K, Zc.shape[0])
            if k < K:
                warnings.warn(
                    f"class {c} has only {Zc.shape[0]} training embedding(s), fewer than n_prototypes={K}; "
                    f"it gets {k} prototype(s).",
                    UserWarning,
                    stacklevel=2,
                )
            km = KMeans(n_clusters=k, random_state=None if base is None else base + i, **kwargs).fit(Zc)
            protos.append(km.cluster_centers_)
            class_index.append(torch.full((k,), i, dtype=torch.int64))
            lab = torch.as_tensor(km.labels_).to(torch.int64).cpu()
            sizes.append(torch.bincount(lab, minlength=k))
            kms.append(km)
            per_class[c] = k
        dev = protos[0].device
        self.classes_ = classes
        self.prototypes_ = torch.cat([p.to(dev) for p in protos])
        self.prototype_class_index_ = torch.cat(class_index)
        self.prototype_labels_ = classes[self.prototype_class_index_.numpy()]
        self.prototype_sizes_ = torch.cat(sizes)
        self.n_prototypes_per_class_ = per_class
        self.n_features_in_ = int(Zt.shape[1])
        self.kmeans_ = kms
        return self

    # -------------------------------------------------------------- labels
    def class_columns(self, target: Any, n: int | None = None) -> torch.Tensor:
        """Column indices into ``classes_`` of class labels.

        Parameters
        ----------
        target : label, sequence of labels, numpy.ndarray or torch.Tensor
            One label (e.g. ``3`` or ``"cat"``) or ``(M,)`` labels, of the kind
            given to :meth:`fit`.
        n : int, optional
            Number of inputs the columns are for: a single label is then
            broadcast to ``(n,)``, and a sequence must have length ``n``.

        Returns
        -------
        torch.Tensor
            int64 columns: ``()`` for one label (``(n,)`` with ``n``), ``(M,)``
            for a sequence; on ``target``'s device for a tensor, else the CPU.

        Raises
        ------
        ValueError
            For a label not in ``classes_`` (the message lists the known
            classes), or a sequence whose length is not ``n``.

        Examples
        --------
        >>> clf = KMeansClassifier(1, device="cpu").fit([[0.0], [1.0], [5.0]], ["a", "b", "c"])
        >>> clf.class_columns("c"), clf.class_columns(["c", "a"]), clf.class_columns("b", n=2)
        (tensor(2), tensor([2, 0]), tensor([1, 1]))
        """
        check_is_fitted(self, ["classes_"])
        device = target.device if isinstance(target, torch.Tensor) else torch.device("cpu")
        values = target.detach().cpu().numpy() if isinstance(target, torch.Tensor) else np.asarray(target)
        if values.ndim > 1:
            raise ValueError(
                f"target must be one label or a 1-D sequence of labels, got shape {values.shape}; "
                "flatten it first."
            )
        flat = values.reshape(-1)
        classes = self.classes_
        if flat.dtype.kind in "biuf" and classes.dtype.kind in "biuf":
            pos = np.clip(np.searchsorted(classes, flat), 0, len(classes) - 1)
            known = classes[pos] == flat
        else:
            lookup = {c: j for j, c in enumerate(classes.tolist())}
            found = [lookup.get(v, -1) for v in flat.tolist()]
            pos = np.asarray(found, dtype=np.int64)
            known = pos >= 0
        if not bool(np.all(known)):
            unknown = list(dict.fromkeys(flat[~known].tolist()))
            raise ValueError(
                f"unknown class label(s) {unknown[:10]}; this classifier was fitted on classes_ = "
                f"{classes.tolist()}. Pass labels from classes_ (or column indices 0..{len(classes) - 1} "
                "directly as an int64 tensor)."
            )
        cols = torch.from_numpy(np.asarray(pos, dtype=np.int64).reshape(values.shape))
        if n is not None:
            n = int(n)
            if cols.ndim == 0:
                cols = cols.expand(n).clone()
            elif cols.shape[0] != n:
                raise ValueError(
                    f"target has {cols.shape[0]} labels but there are n={n} inputs; give one label per input "
                    "or a single label for all of them."
                )
        return cols.to(device)

    def _labels_of(self, columns: torch.Tensor, like: Any) -> Any:
        """Class labels of ``columns``: a tensor on their device for tensor input and numeric labels, else numpy."""
        if isinstance(like, torch.Tensor) and _torch_labels(self.classes_):
            return torch.from_numpy(self.classes_).to(columns.device)[columns]
        return self.classes_[columns.cpu().numpy()]

    # -------------------------------------------------------------- scoring
    def _prep(self, Z: Any) -> tuple[torch.Tensor, torch.Tensor]:
        check_is_fitted(self, ["prototypes_"])
        Zt = _as_embeddings(validate_features(self, Z, reset=False), n_features=self.n_features_in_)
        check_finite(Zt, name="Z")
        dtype = torch.promote_types(Zt.dtype, self.prototypes_.dtype)
        return Zt.to(dtype), self.prototypes_.to(device=Zt.device, dtype=dtype)

    def prototype_scores(self, Z: Any) -> Any:
        """Per-prototype scores ``2 mu . z - ||mu||^2``, shape ``(N, P)``.

        Equal to ``-||z - mu||^2 + ||z||^2``: the ranking of prototypes is that
        of negative squared distances. Columns follow ``prototypes_`` (one per
        prototype, not per class: see :meth:`class_scores`). Tensor in, tensor
        out (on ``Z``'s device); numpy or list in, numpy out.
        """
        Zt, mu = self._prep(Z)
        return _to_output(prototype_scores(Zt, mu), Z)

    def decision_function(self, Z: Any) -> Any:
        """Class scores as scikit-learn's classifiers give them: ``(N, C)``, or ``(N,)`` for two classes.

        Column ``c`` is the best prototype score of class ``classes_[c]`` (see
        :meth:`class_scores`), so ``classes_[decision_function(Z).argmax(1)]``
        is :meth:`predict`. With two classes, scikit-learn's convention: one
        column ``(N,)``, the score of ``classes_[1]`` minus that of
        ``classes_[0]`` (positive: ``classes_[1]`` is predicted). The
        per-prototype scores are :meth:`prototype_scores`. Tensor in, tensor out
        (on ``Z``'s device); numpy or list in, numpy out.
        """
        Zt, mu = self._prep(Z)
        s = _class_max(prototype_scores(Zt, mu), self.prototype_class_index_, len(self.classes_))
        if s.shape[1] == 2:
            s = s[:, 1] - s[:, 0]
        return _to_output(s, Z)

    def class_scores(self, Z: Any) -> Any:
        """Class scores ``(N, C)``: the best prototype score of each class (columns follow ``classes_``).

        Tensor in, tensor out (on ``Z``'s device); numpy or list in, numpy out.
        """
        Zt, mu = self._prep(Z)
        s = prototype_scores(Zt, mu)
        return _to_output(_class_max(s, self.prototype_class_index_, len(self.classes_)), Z)

    def best_prototype_per_class(self, Z: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """For every class, the score and index of its best prototype.

        Parameters
        ----------
        Z : torch.Tensor, numpy.ndarray or array-like of shape (N, D)

        Returns
        -------
        scores : torch.Tensor
            ``(N, C)`` (same as :meth:`class_scores`), columns follow ``classes_``.
        index : torch.Tensor
            ``(N, C)`` int64 rows of ``prototypes_``.
        """
        Zt, mu = self._prep(Z)
        s = prototype_scores(Zt, mu)
        cls = self.prototype_class_index_.to(Zt.device)
        C = len(self.classes_)
        masked = s[:, None, :].expand(-1, C, -1).masked_fill(
            cls[None, None, :] != torch.arange(C, device=Zt.device)[None, :, None], -torch.inf
        )
        scores, index = masked.max(dim=2)
        return scores, index

    def winning_prototype(self, Z: Any) -> Any:
        """Index ``(N,)`` (int64) of the best-scoring prototype, i.e. the nearest centroid (tensor or numpy, as ``Z``)."""
        Zt, mu = self._prep(Z)
        return _to_output((prototype_scores(Zt, mu)).argmax(1), Z)

    def predict(self, Z: Any) -> Any:
        """Class label ``(N,)`` of the nearest centroid.

        Labels are those of ``classes_``: a tensor on ``Z``'s device for a
        tensor ``Z`` and numeric labels, a numpy array otherwise (always for
        string labels).
        """
        Zt, mu = self._prep(Z)
        s = prototype_scores(Zt, mu)
        cols = self.prototype_class_index_.to(Zt.device)[s.argmax(1)]
        return self._labels_of(cols, Z)

    def score(self, Z: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy of :meth:`predict` on ``(Z, y)`` (optionally weighted by ``sample_weight`` ``(N,)``)."""
        pred = self.predict(Z)
        if isinstance(pred, torch.Tensor) and isinstance(y, torch.Tensor) and sample_weight is None:
            if y.shape != pred.shape:
                raise ValueError(f"y must have shape ({pred.shape[0]},), got {tuple(y.shape)}")
            return float((pred == y.to(pred.device)).double().mean())
        pred_np = pred.cpu().numpy() if isinstance(pred, torch.Tensor) else pred
        y_np = _labels_array(y)
        if y_np.shape != pred_np.shape:
            raise ValueError(f"y must have shape ({pred_np.shape[0]},), got {tuple(np.shape(y))}")
        w = sample_weight.detach().cpu().numpy() if isinstance(sample_weight, torch.Tensor) else sample_weight
        return float(accuracy_score(y_np, pred_np, sample_weight=w))

    def as_linear(self) -> PrototypeHead:
        """The equivalent network head: ``nn.Linear`` (weights ``2 mu``, biases ``-||mu||^2``) + max per class.

        Returns
        -------
        PrototypeHead
            ``head(z) == class_scores(z)`` (columns follow ``classes_``);
            ``head.linear`` can be passed to
            :func:`kmexplain_utils.sem.decompose_logits`.
        """
        check_is_fitted(self, ["prototypes_"])
        return PrototypeHead(self.prototypes_, self.prototype_class_index_, len(self.classes_))
