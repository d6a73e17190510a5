"""A fast k-means in PyTorch: chunked matrix-product distances, streaming, distributed.

:class:`KMeans` follows scikit-learn's estimator contract and gives the same
result as ``sklearn.cluster.KMeans(algorithm="lloyd")`` from the same initial
centroids (labels identical, inertia within float rounding), while

- computing distances by the matrix-product form
  ``||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2`` in row chunks (one fused
  ``addmm`` + ``min`` per chunk into a preallocated buffer), never with
  ``torch.cdist`` and never with an ``(n, k, d)`` broadcast;
- skipping, on the CPU, the distances that Hamerly's bounds (with a margin
  for float rounding) show cannot change a label (``algorithm="hamerly"``,
  see ``_kmeans_bounds``): the same iterations as Lloyd, fewer products;
- updating centroids with ``index_add_`` (sums accumulated in float64);
- never copying the data (numpy arrays and memory maps are wrapped, not copied);
- seeding by k-means++ on a sample;
- fitting data larger than memory: ``fit`` accepts a stream of batches, fits
  on a bounded reservoir sample (at most ``256`` points per centroid by
  default, as faiss does) and labels everything in one streamed pass;
- running on several processes or GPUs when ``torch.distributed`` is
  initialised (cluster sums and counts all-reduced every iteration).

Example
-------
>>> import numpy as np
>>> from kmexplain_utils.kmeans import KMeans
>>> X = np.random.default_rng(0).normal(size=(500, 4)).astype("float32")
>>> km = KMeans(n_clusters=3, random_state=0).fit(X)
>>> km.predict(X[:5]).shape
(5,)
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Union

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions

from ._bounds import bounds_from_partial, center_shifts, half_separation, product_error_factor
from ._dist import (
    Assigner,
    Comm,
    SpanPool,
    chunks_in,
    default_chunk_size,
    kmeans_plusplus,
    resolve_matmul_dtype,
)
from .._torch import seed_from
from .._sklearn import RANDOM_STATE_CONSTRAINT, validate_features
from .._validation import NotFittedError, as_float_tensor, check_is_fitted
from ..config import resolve_device

__all__ = ["INIT_SAMPLE_SIZE", "POINTS_PER_CENTROID", "KMeans", "NotFittedError"]  # the error: re-exported

ArrayLike = Union[torch.Tensor, np.ndarray]
#: Default size of the training sample of a streamed fit, per centroid (faiss uses 256).
POINTS_PER_CENTROID = 256
#: k-means++ runs on at most ``max(INIT_SAMPLE_SIZE, 40 * k)`` points.
INIT_SAMPLE_SIZE = 10_000
#: Hamerly's step stops tightening bounds on a span when more than this fraction of the
#: first block's candidates still needs its row of products (tightening costs about half
#: a row of products at d = 896, k = 64 on a CPU; measured in benchmarks/README.md).
TIGHTEN_MAX_KEPT = 0.5
#: ``algorithm="auto"`` uses Hamerly's bounds on the CPU when ``n_features * n_clusters`` is at
#: least this: below it a row of products is so cheap that the bookkeeping of the bounds costs
#: as much as it saves (measured: equal times at d = 112, k = 16 and d = 256, k = 32; 1.2-1.5x
#: faster at d = 896, k = 64).
HAMERLY_MIN_WORK = 16384

_SHAPE_DOC = "(n_samples, n_features)"


# --------------------------------------------------------------------------- input helpers
def _as_2d(X: Any, name: str = "X") -> torch.Tensor:
    """``X`` as a floating tensor ``(n, d)``, without a copy when possible."""
    t = as_float_tensor(X, name=name)
    if t.dtype not in (torch.float32, torch.float64):
        t = t.to(torch.float32)
    if t.ndim != 2:
        hint = ""
        if t.ndim == 1:
            hint = " Reshape your data: for one sample use X.reshape(1, -1); for one feature use X.reshape(-1, 1)."
        elif t.ndim == 4:
            hint = (
                " For feature maps (N, D, H, W) use X.permute(0, 2, 3, 1).reshape(-1, D) "
                "to cluster positions, or X.mean((2, 3)) to cluster pooled embeddings."
            )
        raise ValueError(
            f"{name} must be a 2-D array of shape {_SHAPE_DOC}, got shape {tuple(t.shape)}.{hint}"
        )
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} must have at least one sample and one feature, got shape {tuple(t.shape)}.")
    return t


def _raise_not_finite(xc: torch.Tensor, name: str, where: str = "") -> None:
    bad = int((~torch.isfinite(xc)).sum())
    if bad == 0:  # the squared norm overflowed, the values are finite
        raise ValueError(
            f"{name} has values too large to square in {xc.dtype}{where}; rescale the data (e.g. divide by its std)."
        )
    raise ValueError(
        f"{name} contains {bad} NaN or infinite value(s){where}; remove or impute them before calling KMeans."
    )


def _is_stream(X: Any) -> bool:
    """Whether ``X`` is a stream of batches rather than one array."""
    if isinstance(X, (np.ndarray, torch.Tensor)) or hasattr(X, "__array__") or hasattr(X, "shape"):
        return False  # one array-like (DataFrame, sparse matrix, ...), not batches
    if callable(X):
        return True
    if isinstance(X, (list, tuple)):

        def _batch_like(b: Any) -> bool:
            if isinstance(b, (tuple, list)) and len(b) > 0:
                b = b[0]
            return isinstance(b, (np.ndarray, torch.Tensor)) and b.ndim == 2

        return len(X) > 0 and all(_batch_like(b) for b in X)
    return isinstance(X, Iterable) and not isinstance(X, (str, bytes))


class _Batches:
    """Re-iterable view of a stream of ``(b, d)`` batches (callable or iterable)."""

    def __init__(self, source: Callable[[], Iterable] | Iterable, name: str = "X") -> None:
        if not callable(source):
            if iter(source) is source:
                raise TypeError(
                    f"{name} is a one-shot iterator (e.g. a generator), but fitting reads the stream twice "
                    "(a sampling pass and a labelling pass). Pass a zero-argument callable that returns a "
                    "fresh iterator instead, e.g. KMeans(...).fit(lambda: batches(path))."
                )
        self.source = source
        self.name = name
        self.n_features: int | None = None
        self.torch_input = False  # whether the first batch was a tensor (then outputs are tensors)

    def __iter__(self) -> Iterator[torch.Tensor]:
        it = self.source() if callable(self.source) else self.source
        for i, b in enumerate(it):
            if isinstance(b, (tuple, list)) and not isinstance(b, np.ndarray):
                b = b[0]  # (x, y) batches of a DataLoader
            t = _as_2d(b, name=f"batch {i} of {self.name}")
            if self.n_features is None:
                self.n_features = int(t.shape[1])
                self.torch_input = isinstance(b, torch.Tensor)
            elif t.shape[1] != self.n_features:
                raise ValueError(
                    f"batch {i} of {self.name} has {t.shape[1]} features, earlier batches had "
                    f"{self.n_features}; every batch must have shape (b, {self.n_features})."
                )
            yield t


def _to_output(t: torch.Tensor, like: Any) -> ArrayLike:
    """numpy in -> numpy out; torch in -> torch on the input's device."""
    if isinstance(like, torch.Tensor):
        return t.to(like.device)
    return t.cpu().numpy()


# --------------------------------------------------------------------------- cluster sums
class _ClusterSums:
    """One worker's float64 cluster sums ``(k, d)``, fed through a partial buffer.

    For float32 data the rows are first added into a float32 ``(k, d)``
    buffer (fast ``index_add_`` on the rows' own dtype), which is added to
    the float64 sums every ``flush_rows`` rows, so that the sums keep float64
    accuracy however many rows they hold. For float64 data the rows go
    straight into the sums.
    """

    def __init__(self, k: int, d: int, dtype: torch.dtype, device: torch.device, flush_rows: int = 16384) -> None:
        self.sums = torch.zeros((k, d), dtype=torch.float64, device=device)
        self._part = None if dtype == torch.float64 else torch.zeros((k, d), dtype=dtype, device=device)
        self._flush_rows = int(flush_rows)
        self._pending = 0

    def begin(self, reset: bool) -> None:
        """Start a pass; ``reset`` empties the sums (a full pass), else they are updated."""
        if reset:
            self.sums.zero_()
        if self._part is not None:
            self._part.zero_()
        self._pending = 0

    def add(self, rows: torch.Tensor, labels: torch.Tensor) -> None:
        """Add ``rows (b, d)`` to the sums of their ``labels (b,)``."""
        (self.sums if self._part is None else self._part).index_add_(0, labels, rows)
        self._count(rows.shape[0])

    def move(self, rows: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> None:
        """Move ``rows (b, d)`` from the sums of ``old (b,)`` to those of ``new (b,)``."""
        acc = self.sums if self._part is None else self._part
        acc.index_add_(0, new, rows)
        acc.index_add_(0, old, rows, alpha=-1)
        self._count(rows.shape[0])

    def finish(self) -> torch.Tensor:
        """End a pass; returns the float64 sums."""
        if self._part is not None and self._pending:
            self.sums.add_(self._part)
            self._part.zero_()
        self._pending = 0
        return self.sums

    def _count(self, m: int) -> None:
        self._pending += m
        if self._part is not None and self._pending >= self._flush_rows:
            self.sums.add_(self._part)
            self._part.zero_()
            self._pending = 0


# --------------------------------------------------------------------------- the estimator
class _LloydState:
    """The state of one fit's iterations and its two E-steps: Lloyd's pass and Hamerly's bounded step.

    ``assign_step(j)`` runs on span ``j`` a full assignment pass (every
    distance product); ``bounded_step(j)`` is Hamerly's step (products only
    for the points whose bounds do not settle the label). Both update the
    labels and the per-span float64 cluster sums and counts; :meth:`reduce`
    combines them over spans and ranks and :meth:`move_centres` takes the
    M-step.
    """

    def __init__(self, km: "KMeans", X: torch.Tensor, C: torch.Tensor, device: torch.device,
                 dtype: torch.dtype, chunk: int, low: torch.dtype | None, pool: SpanPool) -> None:
        n, d = X.shape
        self.km, self.X, self.C, self.device, self.dtype, self.chunk = km, X, C, device, dtype, chunk
        self.k, self.d = int(km.n_clusters), d
        self.hamerly = km._use_hamerly(device, d)
        self.spans = pool.spans(n, chunk)
        self.assigners = km._assigners(C, len(self.spans), chunk, dtype, device, low)
        self.labels = torch.empty(n, dtype=torch.int64, device=device)
        self.labels_old = None if self.hamerly else torch.full((n,), -1, dtype=torch.int64, device=device)
        self.sums_w = [_ClusterSums(self.k, d, dtype, device) for _ in self.spans]
        self.counts_w = [torch.empty(self.k, dtype=torch.float64, device=device) for _ in self.spans]
        if self.hamerly:
            f64o = {"dtype": torch.float64, "device": device}
            self.upper, self.lower, self.x_sq = torch.empty(n, **f64o), torch.empty(n, **f64o), torch.empty(n, **f64o)
            self.gamma = product_error_factor(d, dtype, low)
            # a direct ||x - c||^2 summed in `dtype` is within (d + 3) eps of the exact value
            self.tight = 1.0 + (d + 4) * torch.finfo(dtype).eps
            self.bounds: dict[str, Any] = {}
        # On the CPU (and always with Hamerly's bounds) the float64 sums persist across
        # iterations and only the points whose label changed are moved (subtracted from the
        # old cluster, added to the new one): after the first iterations few labels change,
        # so the update costs almost nothing.
        self.incremental = self.hamerly or device.type == "cpu"
        self.full = True
        self.C_assigned = C  # the centroids the assigners hold (for the exact tightening)

    def set_centres(self) -> None:
        for A in self.assigners:
            A.set_centers(self.C)
        self.C_assigned = self.C

    def assign_step(self, j: int) -> tuple[int, int]:
        """Lloyd's pass over span ``j``: every distance product (and, with bounds, both bounds)."""
        sums, counts, A = self.sums_w[j], self.counts_w[j], self.assigners[j]
        full = self.full or not self.incremental
        lo, hi = self.spans[j]
        labels, labels_old = self.labels, self.labels_old
        sums.begin(reset=full)
        changed = 0
        for s, e in chunks_in(self.spans[j], self.chunk):
            xc = self.km._chunk_of(self.X, s, e, self.device, self.dtype)
            lab = labels[s:e]
            if self.hamerly:  # first pass: labels, squared norms and both bounds
                v1, v2 = A.assign_top2(xc, lab)
                xs = self.x_sq[s:e]
                xs.copy_((xc * xc).sum(1))  # error within the margin's slack
                margin = (xs + A.max_center_sq).mul_(self.gamma)
                self.upper[s:e], self.lower[s:e] = bounds_from_partial(v1, v2, xs, margin)
            else:
                A.assign(xc, lab)
            if full:
                sums.add(xc, lab)
                continue
            old = labels_old[s:e]
            moved = torch.nonzero(lab != old).flatten()
            if moved.numel():
                changed += moved.numel()
                sums.move(xc.index_select(0, moved), lab.index_select(0, moved), old.index_select(0, moved))
        sums.finish()
        if full:
            changed = hi - lo if labels_old is None else int((labels[lo:hi] != labels_old[lo:hi]).sum())
        counts.copy_(torch.bincount(labels[lo:hi], minlength=self.k))
        if labels_old is not None:
            labels_old[lo:hi] = labels[lo:hi]
        return changed, hi - lo

    def _candidates(self, j: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Shift span ``j``'s bounds by the centroid moves; the points whose label may change."""
        lo, hi = self.spans[j]
        a, u, low_b = self.labels[lo:hi], self.upper[lo:hi], self.lower[lo:hi]
        u.add_(self.bounds["shift"].index_select(0, a))
        low_b.sub_(self.bounds["other"].index_select(0, a))
        settle = torch.maximum(self.bounds["sep"].index_select(0, a), low_b)
        return a, u, low_b, settle, torch.nonzero(u > settle).flatten()

    def bounded_step(self, j: int) -> tuple[int, int]:
        """Hamerly's step on span ``j``: distances only for the points whose bounds do not settle the label."""
        sums, counts, A = self.sums_w[j], self.counts_w[j], self.assigners[j]
        lo = self.spans[j][0]
        sums.begin(reset=False)
        a, u, low_b, settle, cand = self._candidates(j)
        changed = computed = 0
        tighten = True
        for b0 in range(0, cand.numel(), self.chunk):
            ci = cand[b0 : b0 + self.chunk]
            rows = self.km._rows_of(self.X, ci + lo, self.device, self.dtype)
            old = a.index_select(0, ci)
            if tighten:
                # the exact distance to the own centroid settles many candidates
                # at about half the cost of their row of products
                diff = self.C_assigned.index_select(0, old).sub_(rows)
                ut = diff.mul_(diff).sum(1).to(torch.float64).sqrt_().mul_(self.tight)
                u.index_copy_(0, ci, ut)
                far = torch.nonzero(ut > settle.index_select(0, ci)).flatten()
                if b0 == 0 and far.numel() > TIGHTEN_MAX_KEPT * ci.numel():
                    tighten = False  # this iteration, tightening does not pay on this span
                if far.numel() == 0:
                    continue
                ci, rows, old = ci.index_select(0, far), rows.index_select(0, far), old.index_select(0, far)
            new = torch.empty(ci.numel(), dtype=torch.int64, device=self.device)
            computed += ci.numel()
            v1, v2 = A.assign_top2(rows, new)
            xs = self.x_sq.index_select(0, ci + lo)
            ub, lb = bounds_from_partial(v1, v2, xs, (xs + A.max_center_sq).mul_(self.gamma))
            u.index_copy_(0, ci, ub)
            low_b.index_copy_(0, ci, lb)
            moved = torch.nonzero(new != old).flatten()
            if moved.numel() == 0:
                continue
            changed += moved.numel()
            new_m = new.index_select(0, moved)
            a.index_copy_(0, ci.index_select(0, moved), new_m)
            sums.move(rows.index_select(0, moved), new_m, old.index_select(0, moved))
        sums.finish()
        counts.copy_(torch.bincount(a, minlength=self.k))
        return changed, computed

    def reduce(self, results: list[tuple[int, int]], comm: Comm) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """Cluster sums ``(k, d)`` and counts ``(k,)`` over spans and ranks, labels changed, points computed."""
        k, d = self.k, self.d
        red = torch.empty(k * d + k + 2, dtype=torch.float64, device=self.device)
        red_s, red_c = red[: k * d].view(k, d), red[k * d : k * d + k]
        red_s.copy_(self.sums_w[0].sums)
        red_c.copy_(self.counts_w[0])
        for j in range(1, len(self.spans)):
            red_s.add_(self.sums_w[j].sums)
            red_c.add_(self.counts_w[j])
        red[-2] = float(sum(r[0] for r in results))
        red[-1] = float(sum(r[1] for r in results))
        comm.allreduce_(red)
        return red[: k * d].view(k, d), red[k * d : k * d + k], int(red[-2]), int(red[-1])

    def move_centres(self, sums: torch.Tensor, counts: torch.Tensor) -> float:
        """M-step: non-empty centroids to their means; returns the squared shift (bounds updated)."""
        C = self.C
        nonempty = counts > 0
        C_new = C.clone()
        C_new[nonempty] = (sums[nonempty] / counts[nonempty].unsqueeze(1)).to(self.dtype)
        shift = float(((C_new.to(torch.float64) - C.to(torch.float64)) ** 2).sum())
        if self.hamerly:
            self.bounds["shift"], self.bounds["other"] = center_shifts(C, C_new)
            self.bounds["sep"] = half_separation(C_new)
        self.C = C_new
        return shift


class KMeans(ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin, BaseEstimator):
    """k-means clustering (Lloyd's algorithm) in PyTorch, CPU or GPU.

    A scikit-learn estimator (``clone``, ``get_params`` / ``set_params``,
    pipelines, grid searches, pickling): hyper-parameters are stored as given
    and validated by :meth:`fit`. Inputs may be numpy arrays, lists,
    DataFrames, torch tensors or streams of batches; the outputs and the
    fitted ``cluster_centers_`` / ``labels_`` are torch tensors (on the
    fitting device) when the input is a tensor, numpy arrays otherwise.

    Parameters
    ----------
    n_clusters : int, default 8
        Number of centroids ``k``.
    init : {"k-means++", "random"} or array of shape (n_clusters, n_features), default "k-means++"
        Seeding. ``"k-means++"`` is the greedy variant (``2 + log k`` local
        trials) run on a sample of at most ``max(10000, 40 k)`` points;
        ``"random"`` picks ``k`` distinct data points; an array gives the
        initial centroids (then ``n_init`` is 1).
    n_init : int, default 1
        Number of seedings; the run with the lowest inertia is kept.
    max_iter : int, default 300
        Maximum number of Lloyd iterations per run.
    tol : float, default 1e-4
        Convergence when the squared shift of the centroids (summed) is at
        most ``tol`` times the mean per-feature variance of the data (as in
        scikit-learn); the fit also stops when no label changes.
    random_state : int, numpy/torch generator or None, default None
        Seed of the seeding and sampling. An int makes the fit deterministic;
        ``None`` draws a fresh random seed at every ``fit`` (non-deterministic,
        as in scikit-learn); a generator is advanced by one draw per ``fit``.
    device : str or torch.device, default "auto"
        Where the computation runs. ``"auto"``: the input tensor's device
        when it is a GPU tensor, else CUDA when available, else the CPU.
    chunk_size : int, optional
        Rows per distance chunk (default: tuned for the device).
    matmul_dtype : {"float32", "bfloat16", "auto"}, default "float32"
        Precision of the distance products. ``"float32"`` means the data's
        own precision (float64 data stays float64). ``"bfloat16"`` rounds both
        factors of the distance products to bf16 (float32 accumulation on CUDA;
        on a CPU without bf16 units the rounded factors are multiplied in
        float32, which shows the precision effect without a speed-up);
        centroid updates stay exact and a few labels may flip at near ties.
        ``"auto"`` uses bf16 only on a CUDA GPU with bf16 support or a CPU with
        AMX / AVX512-BF16. float16 is never used on the CPU.
    sample_size : int, optional
        Fit the centroids on a uniform sample of this many points, then label
        all the data in one pass. Streams default to
        ``256 * n_clusters`` points; in-memory data defaults to all points.
    distributed : bool or "auto", default "auto"
        Fit on the shards of all ranks when ``torch.distributed`` is
        initialised with more than one process (``"auto"``); ``False`` makes
        each rank fit its own data alone.
    algorithm : {"auto", "lloyd", "hamerly"}, default "auto"
        How the Lloyd iterations find the nearest centroids. ``"lloyd"``
        computes every distance in every iteration. ``"hamerly"`` keeps, per
        point, an upper bound on the distance to its centroid and a lower
        bound on the distance to every other centroid (Hamerly, 2010), and
        computes distances only for the points whose label the bounds cannot
        settle; the bounds carry a rigorous float-rounding margin, so only
        computations whose result is certain are skipped: the labels,
        centroids and iteration count are Lloyd's, except that a float32
        near-tie (distances equal within rounding) that Lloyd decides by the
        rounding of its products goes to the exactly nearer centroid, after
        which the two fits may follow slightly different paths.
        It needs three float64 numbers per point. ``"auto"``: ``"hamerly"``
        on the CPU when ``n_features * n_clusters >= 16384`` (where the saved
        products outweigh the bookkeeping), else ``"lloyd"``; always
        ``"lloyd"`` on a GPU (the bounded step was benchmarked on the CPU
        only; on a GPU every iteration's compaction synchronises).

    Attributes
    ----------
    cluster_centers_ : torch.Tensor or numpy.ndarray
        ``(n_clusters, n_features)`` centroids, dtype of the data. A tensor on
        the fitting device when ``fit`` got a tensor (or a stream of
        tensors), else a numpy array.
    labels_ : torch.Tensor or numpy.ndarray
        ``(n_samples,)`` int64 label of every training point (this rank's
        shard when distributed; for a stream, the labels of all its rows in
        stream order); tensor or numpy as ``cluster_centers_``.
    inertia_ : float
        Sum of squared distances of the training points to their centroid
        (all ranks together when distributed).
    n_iter_ : int
        Lloyd iterations of the kept run.
    n_features_in_ : int
        Number of features seen in ``fit``.
    algorithm_ : str
        The algorithm the fit used, ``"lloyd"`` or ``"hamerly"`` (``"auto"`` resolved).
    distance_fraction_ : numpy.ndarray
        ``(n_iter_,)``: for each Lloyd iteration, the fraction of the points
        (of the sample, when fitting on one) whose ``k`` distance products
        were computed. Always 1 with ``algorithm="lloyd"``; with Hamerly's
        bounds it shows how much work the bounds saved.

    Notes
    -----
    A stream is a zero-argument callable returning an iterator of ``(b, d)``
    batches (e.g. ``lambda: read_batches(path)``), or a re-iterable object
    such as a list of arrays or a ``DataLoader`` (for ``(x, y)`` batches the
    first element is used). It is read twice: once to draw the reservoir
    sample, once to label every row.

    Examples
    --------
    >>> import torch
    >>> X = torch.randn(1000, 8, generator=torch.Generator().manual_seed(0))
    >>> km = KMeans(n_clusters=4, random_state=0, device="cpu").fit(X)
    >>> km.cluster_centers_.shape
    torch.Size([4, 8])
    >>> bool((km.predict(X) == km.labels_).all())
    True

    numpy in, numpy out, and the scikit-learn tools work:

    >>> from sklearn.base import clone
    >>> km_np = clone(km).fit(X.numpy())
    >>> type(km_np.cluster_centers_).__name__, km_np.labels_.dtype
    ('ndarray', dtype('int64'))
    >>> bool((km_np.labels_ == km.labels_.numpy()).all())
    True
    """

    _parameter_constraints: dict = {
        "n_clusters": [Interval(numbers.Integral, 1, None, closed="left")],
        "init": [StrOptions({"k-means++", "random"}), "array-like"],
        "n_init": [Interval(numbers.Integral, 1, None, closed="left")],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "random_state": RANDOM_STATE_CONSTRAINT,
        "device": [str, torch.device],
        "chunk_size": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "matmul_dtype": [
            StrOptions({"float32", "bfloat16", "auto", "float16", "fp32", "bf16", "fp16", "float64", "fp64", "half",
                        "float", "full", "highest"}),
            torch.dtype,
            None,
        ],
        "sample_size": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "distributed": ["boolean", StrOptions({"auto"})],
        "algorithm": [StrOptions({"auto", "lloyd", "hamerly"})],
    }

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: str | ArrayLike = "k-means++",
        n_init: int = 1,
        max_iter: int = 300,
        tol: float = 1e-4,
        random_state: Any = None,
        device: str | torch.device = "auto",
        chunk_size: int | None = None,
        matmul_dtype: str = "float32",
        sample_size: int | None = None,
        distributed: bool | str = "auto",
        algorithm: str = "auto",
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.device = device
        self.chunk_size = chunk_size
        self.matmul_dtype = matmul_dtype
        self.sample_size = sample_size
        self.distributed = distributed
        self.algorithm = algorithm

    # ------------------------------------------------------------------ checks
    def _check_params(self) -> None:
        """Validate the hyper-parameters against :attr:`_parameter_constraints` (at ``fit``)."""
        self._validate_params()

    def _check_n_samples(self, n: int) -> None:
        if self.n_clusters > n:
            raise ValueError(
                f"n_clusters={self.n_clusters} is larger than n_samples={n}: k-means needs at least one "
                f"sample per cluster. Use n_clusters <= {n}, or fit on more data."
            )

    def _fit_device(self, X: Any) -> torch.device:
        if isinstance(self.device, str) and self.device == "auto":
            if isinstance(X, torch.Tensor) and X.device.type != "cpu":
                return X.device
            return resolve_device("auto")
        return resolve_device(self.device)

    def _chunk(self, d: int, dtype: torch.dtype, device: torch.device) -> int:
        if self.chunk_size is not None:
            return int(self.chunk_size)
        return default_chunk_size(d, int(self.n_clusters), torch.finfo(dtype).bits // 8, device)

    def _init_array(self, d: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        C = as_float_tensor(self.init, name="init")
        if C.ndim != 2 or C.shape != (self.n_clusters, d):
            raise ValueError(
                f"init must have shape (n_clusters, n_features) = ({self.n_clusters}, {d}), got {tuple(C.shape)}."
            )
        C = C.to(device=device, dtype=dtype).clone()
        if not bool(torch.isfinite(C).all()):
            raise ValueError("init contains NaN or infinite values.")
        return C

    # ------------------------------------------------------------------ data passes
    @staticmethod
    def _rows_of(X: torch.Tensor, idx: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The rows ``X[idx]`` (a new tensor) on ``device`` in ``dtype``."""
        rows = X.index_select(0, idx.to(X.device))
        if rows.device != device or rows.dtype != dtype:
            rows = rows.to(device=device, dtype=dtype, non_blocking=True)
        return rows

    @staticmethod
    def _chunk_of(X: torch.Tensor, s: int, e: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        xc = X[s:e]
        if xc.device != device or xc.dtype != dtype:
            xc = xc.to(device=device, dtype=dtype, non_blocking=True)
        return xc

    def _scan(
        self, X: torch.Tensor, device: torch.device, dtype: torch.dtype, chunk: int, comm: Comm, pool: SpanPool
    ) -> float:
        """One pass: finiteness check and the mean per-feature variance (for ``tol``)."""
        n, d = X.shape

        def work(span: tuple[int, int]) -> torch.Tensor:
            acc = torch.zeros(d + 1, dtype=torch.float64, device=device)
            for s, e in chunks_in(span, chunk):
                xc = self._chunk_of(X, s, e, device, dtype)
                flat = xc.reshape(-1)
                sq = torch.dot(flat, flat)
                if not bool(torch.isfinite(sq)):
                    _raise_not_finite(xc, "X", f" (rows {s}..{e - 1})")
                acc[d] += sq.to(torch.float64)
                acc[:d] += xc.sum(0)
            return acc

        stats = torch.stack(pool.map(work, pool.spans(n, chunk))).sum(0)
        stats = torch.cat([stats, torch.tensor([float(n)], dtype=torch.float64, device=device)])
        comm.allreduce_(stats)
        n_tot = float(stats[-1])
        mean = stats[:d] / n_tot
        return max(0.0, (float(stats[d]) / n_tot - float((mean * mean).sum())) / d)

    def _gather_rows(
        self, X: torch.Tensor, idx: torch.Tensor, offset: int, comm: Comm, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        """Rows of the global data at sorted global indices ``idx``, identical on every rank."""
        n = X.shape[0]
        lo = int(torch.searchsorted(idx, torch.tensor(offset)))
        hi = int(torch.searchsorted(idx, torch.tensor(offset + n)))
        local = idx[lo:hi] - offset
        rows = X[local.to(X.device)].to(device=device, dtype=dtype)
        return comm.allgather_rows(rows).to(device)

    def _label_and_inertia(
        self,
        X: torch.Tensor,
        C: torch.Tensor,
        labels: torch.Tensor,
        assigners: list[Assigner] | None,
        device: torch.device,
        dtype: torch.dtype,
        chunk: int,
        pool: SpanPool,
    ) -> float:
        """Label the rows of ``X`` into ``labels`` (unless ``assigners`` is None: labels given)
        and return the exact sum of squared distances to the assigned centroids."""
        spans = pool.spans(X.shape[0], chunk)

        def work(j: int) -> float:
            total = torch.zeros((), dtype=torch.float64, device=device)
            for s, e in chunks_in(spans[j], chunk):
                xc = self._chunk_of(X, s, e, device, dtype)
                if assigners is not None:
                    assigners[j].assign(xc, labels[s:e])
                diff = C.index_select(0, labels[s:e]).sub_(xc)  # one (b, d) temporary
                total += diff.mul_(diff).sum(1).sum(dtype=torch.float64)  # rows in `dtype`, total in float64
            return float(total)

        return float(sum(pool.map(work, range(len(spans)))))

    def _assigners(
        self, C: torch.Tensor, n_workers: int, chunk: int, dtype: torch.dtype, device: torch.device, low: torch.dtype | None
    ) -> list[Assigner]:
        out = []
        for _ in range(max(1, n_workers)):
            a = Assigner(C.shape[0], C.shape[1], chunk, dtype, device, low)
            a.set_centers(C)
            out.append(a)
        return out

    def _assign_pass(
        self,
        batches: Iterable[torch.Tensor],
        C: torch.Tensor,
        device: torch.device,
        dtype: torch.dtype,
        chunk: int,
        low: torch.dtype | None,
        pool: SpanPool,
    ) -> tuple[list[torch.Tensor], float]:
        """Label every row of a stream of batches; labels per batch and the exact inertia."""
        assigners = self._assigners(C, pool.n_threads, chunk, dtype, device, low)
        inertia = 0.0
        labs: list[torch.Tensor] = []
        for xb in batches:
            lab = torch.empty(xb.shape[0], dtype=torch.int64, device=device)
            inertia += self._label_and_inertia(xb, C, lab, assigners, device, dtype, chunk, pool)
            labs.append(lab)
        return labs, inertia

    # ------------------------------------------------------------------ Lloyd
    def _use_hamerly(self, device: torch.device, n_features: int) -> bool:
        """Whether the Lloyd iterations use Hamerly's bounds (``algorithm`` resolved)."""
        if self.algorithm == "auto":
            return device.type == "cpu" and n_features * int(self.n_clusters) >= HAMERLY_MIN_WORK
        return self.algorithm == "hamerly"

    def _lloyd(
        self,
        X: torch.Tensor,
        C: torch.Tensor,
        tol_abs: float,
        comm: Comm,
        device: torch.device,
        dtype: torch.dtype,
        chunk: int,
        low: torch.dtype | None,
        pool: SpanPool,
    ) -> tuple[torch.Tensor, torch.Tensor, float, int, list[int]]:
        """Lloyd iterations on the (local shard) ``X``.

        Returns the centers, labels, inertia, number of iterations, and for
        each iteration the number of points (all ranks) whose distance
        products were computed.

        The first iteration is one pass over the data: per chunk, one fused
        ``addmm`` gives ``||c||^2 - 2 x.c`` for all centroids, ``min`` gives
        the labels, and ``index_add_`` adds the chunk (still in cache) to the
        per-worker float64 cluster sums. Later iterations either repeat that
        pass (``algorithm="lloyd"``; on the CPU only the rows whose label
        changed are moved between the sums), or (``"hamerly"``) first test
        every point's distance bounds and compute distances only for the
        points whose label could change (see ``_kmeans_bounds``). Sums are
        then combined (and all-reduced over ranks), empty clusters re-seeded on
        a copy (as scikit-learn does, without changing labels), and the
        centroids moved to the means.
        """
        st = _LloydState(self, X, C, device, dtype, chunk, low, pool)
        strict = False
        n_iter = 0
        computed_per_iter: list[int] = []
        for it in range(int(self.max_iter)):
            step = st.bounded_step if (st.hamerly and it > 0) else st.assign_step
            results = pool.map(step, range(len(st.spans)))
            st.full = False
            sums, counts, n_changed, n_computed = st.reduce(results, comm)
            computed_per_iter.append(n_computed)
            if bool((counts == 0).any()):
                self._relocate_empty(X, st.C, st.labels, sums, counts, comm, device, dtype, chunk, pool)
            shift = st.move_centres(sums, counts)
            n_iter = it + 1
            if n_changed == 0:
                strict = True
                break
            if shift <= tol_abs:
                break
            st.set_centres()
        C, labels = st.C, st.labels
        if strict:
            inertia = self._label_and_inertia(X, C, labels, None, device, dtype, chunk, pool)
        else:  # label the points with the final centroids, as scikit-learn does
            st.set_centres()
            if st.hamerly:
                pool.map(st.bounded_step, range(len(st.spans)))
                inertia = self._label_and_inertia(X, C, labels, None, device, dtype, chunk, pool)
            else:
                inertia = self._label_and_inertia(X, C, labels, st.assigners, device, dtype, chunk, pool)
        inertia_t = comm.allreduce_(torch.tensor([inertia], dtype=torch.float64, device=device))
        return C, labels, float(inertia_t[0]), n_iter, computed_per_iter

    def _relocate_empty(
        self,
        X: torch.Tensor,
        C: torch.Tensor,
        labels: torch.Tensor,
        sums: torch.Tensor,
        counts: torch.Tensor,
        comm: Comm,
        device: torch.device,
        dtype: torch.dtype,
        chunk: int,
        pool: SpanPool,
    ) -> None:
        """Re-seed empty clusters with the points farthest from their centroid (as scikit-learn).

        ``sums`` and ``counts`` (a copy, not the persistent sums) are changed in place;
        labels are not (the next iteration reassigns the moved points).
        """
        empty = torch.nonzero(counts == 0).flatten().tolist()
        n_e = len(empty)
        n = X.shape[0]
        dist = torch.empty(n, dtype=torch.float64, device=device)

        def work(span: tuple[int, int]) -> None:
            for s, e in chunks_in(span, chunk):
                xc = self._chunk_of(X, s, e, device, dtype)
                diff = C.index_select(0, labels[s:e]).sub_(xc)
                dist[s:e] = diff.mul_(diff).sum(1, dtype=torch.float64)

        pool.map(work, pool.spans(n, chunk))
        t = min(n_e, n)
        vals, idx = torch.topk(dist, t)
        rows = X[idx.to(X.device)].to(device=device, dtype=dtype)
        labs = labels[idx]
        vals = comm.allgather_rows(vals)
        rows = comm.allgather_rows(rows)
        labs = comm.allgather_rows(labs)
        order = torch.sort(vals, descending=True, stable=True).indices[:n_e]
        for cluster, j in zip(empty, order.tolist()):
            x = rows[j].to(torch.float64)
            old = int(labs[j])
            sums[old] -= x
            counts[old] -= 1
            sums[cluster] = x
            counts[cluster] = 1

    def _seed(
        self,
        S: torch.Tensor,
        gen: torch.Generator,
        d: int,
        dtype: torch.dtype,
        device: torch.device,
        comm: Comm,
    ) -> torch.Tensor:
        """Initial centroids from the sample ``S`` (identical on every rank)."""
        k = int(self.n_clusters)
        if not isinstance(self.init, str):
            return self._init_array(d, dtype, device)
        if self.init == "random":
            C = S[torch.randperm(S.shape[0], generator=gen)[:k].to(S.device)].clone()
        else:
            C = kmeans_plusplus(S, k, gen)
        return comm.broadcast_(C.to(device=device, dtype=dtype).contiguous())

    # ------------------------------------------------------------------ fit
    def fit(self, X: Any, y: Any = None) -> "KMeans":
        """Compute the centroids.

        Parameters
        ----------
        X : array or tensor of shape (n_samples, n_features), or a stream of such batches
            The data (float32 or float64; never modified, never copied when it
            is already on the fitting device), or a zero-argument callable /
            re-iterable object yielding ``(b, n_features)`` batches.
        y : ignored
            For scikit-learn compatibility.

        Returns
        -------
        KMeans
            ``self``, fitted.
        """
        self._check_params()
        comm = Comm(Comm.wanted(self.distributed))
        seed = seed_from(self.random_state)
        if comm.enabled:  # every rank uses rank 0's seed
            seed = int(comm.broadcast_(torch.tensor([seed], dtype=torch.int64))[0])
        if _is_stream(X):
            batches = _Batches(X)
            self._fit_stream(batches, seed, comm)
            self.__dict__.pop("feature_names_in_", None)
            return self._publish(torch_out=batches.torch_input)
        X = validate_features(self, X, reset=True)
        Xt = _as_2d(X)
        device = self._fit_device(X)
        n_local, d = Xt.shape
        sizes = comm.sizes(n_local)
        n = sum(sizes)
        offset = sum(sizes[: comm.rank])
        self._check_n_samples(n)
        if device.type == "cuda" and Xt.device != device:
            free, _ = torch.cuda.mem_get_info(device)
            if Xt.numel() * Xt.element_size() < 0.5 * free:
                Xt = Xt.to(device)  # one copy on the GPU, reused every iteration
        with SpanPool(device) as pool:
            self._fit_array(Xt, device, comm, seed, n, offset, pool)
        return self._publish(torch_out=isinstance(X, torch.Tensor))

    def _publish(self, torch_out: bool) -> "KMeans":
        """Expose ``cluster_centers_`` / ``labels_`` as tensors (tensor input) or numpy arrays."""
        C = self.cluster_centers_
        self._device_centers = None
        if not torch_out:
            self.cluster_centers_ = C.cpu().numpy()  # no copy on the CPU
            if C.device.type != "cpu":  # keep the GPU copy for predict / transform
                self._device_centers = (self.cluster_centers_, C)
            if self.labels_ is not None:
                self.labels_ = self.labels_.cpu().numpy()
        return self

    def _centers(self) -> torch.Tensor:
        """``cluster_centers_`` as a tensor on the device where it was fitted."""
        C = self.cluster_centers_
        if isinstance(C, torch.Tensor):
            return C
        pair = self.__dict__.get("_device_centers")
        if pair is not None and pair[0] is C:
            return pair[1]
        return as_float_tensor(C, name="cluster_centers_")  # shares the array's memory

    def _fit_array(
        self, Xt: torch.Tensor, device: torch.device, comm: Comm, seed: int, n: int, offset: int, pool: SpanPool
    ) -> "KMeans":
        """Fit on an in-memory ``(n_local, d)`` tensor (this rank's shard of ``n`` rows)."""
        dtype = Xt.dtype
        n_local, d = Xt.shape
        chunk = self._chunk(d, dtype, device)
        low = resolve_matmul_dtype(self.matmul_dtype, device)
        var_mean = self._scan(Xt, device, dtype, chunk, comm, pool)
        gen = torch.Generator().manual_seed(seed)
        n_init = 1 if not isinstance(self.init, str) else int(self.n_init)
        if not isinstance(self.init, str) and self.n_init != 1:
            warnings.warn("An explicit init array is given: n_init is set to 1.", RuntimeWarning, stacklevel=3)

        if self.sample_size is not None and self.sample_size < n:
            idx = torch.sort(torch.randperm(n, generator=gen)[: int(self.sample_size)]).values
            S = self._gather_rows(Xt, idx, offset, comm, device, dtype)
            self._check_n_samples(S.shape[0])
            C, n_iter, computed = self._fit_sample(S, gen, n_init, dtype, device, comm, chunk, low, pool)
            labs, inertia = self._assign_pass([Xt], C, device, dtype, chunk, low, pool)
            inertia_t = comm.allreduce_(torch.tensor([inertia], dtype=torch.float64))
            self._set_fitted(C, labs[0], float(inertia_t[0]), n_iter, d, computed, S.shape[0])
            return self

        m_init = min(n, max(INIT_SAMPLE_SIZE, 40 * int(self.n_clusters)))
        best = None
        for _ in range(n_init):
            if isinstance(self.init, str):
                if m_init < n:
                    idx = torch.sort(torch.randperm(n, generator=gen)[:m_init]).values
                else:
                    idx = torch.arange(n)
                S = self._gather_rows(Xt, idx, offset, comm, device, dtype)
            else:
                S = None
            C0 = self._seed(S, gen, d, dtype, device, comm)
            C, labels, inertia, n_iter, computed = self._lloyd(
                Xt, C0, float(self.tol) * var_mean, comm, device, dtype, chunk, low, pool
            )
            if best is None or inertia < best[2]:
                best = (C, labels, inertia, n_iter, computed)
        self._set_fitted(*best[:4], d, computed=best[4], n_fit=n)
        return self

    def _fit_sample(
        self,
        S: torch.Tensor,
        gen: torch.Generator,
        n_init: int,
        dtype: torch.dtype,
        device: torch.device,
        comm: Comm,
        chunk: int,
        low: torch.dtype | None,
        pool: SpanPool,
    ) -> tuple[torch.Tensor, int, list[int]]:
        """Lloyd on the sample ``S`` (identical on every rank); centroids broadcast from rank 0."""
        single = Comm(False)
        m, d = S.shape
        var_mean = self._scan(S, device, dtype, chunk, single, pool)
        m_init = min(m, max(INIT_SAMPLE_SIZE, 40 * int(self.n_clusters)))
        best = None
        for _ in range(n_init):
            if isinstance(self.init, str) and m_init < m:
                sub = S[torch.sort(torch.randperm(m, generator=gen)[:m_init]).values.to(S.device)]
            else:
                sub = S
            C0 = self._seed(sub, gen, d, dtype, device, single)
            C, _, inertia, n_iter, computed = self._lloyd(
                S, C0, float(self.tol) * var_mean, single, device, dtype, chunk, low, pool
            )
            if best is None or inertia < best[1]:
                best = (C, inertia, n_iter, computed)
        C = comm.broadcast_(best[0].contiguous())
        return C, best[2], best[3]

    def _fit_stream(self, batches: _Batches, seed: int, comm: Comm) -> "KMeans":
        """Reservoir-sample the stream, fit on the sample, label the stream in one pass."""
        k = int(self.n_clusters)
        m = int(self.sample_size) if self.sample_size is not None else POINTS_PER_CENTROID * k
        key_gen = torch.Generator().manual_seed(seed + 1_000_003 * (comm.rank + 1))
        res_rows: torch.Tensor | None = None
        res_keys: torch.Tensor | None = None
        n_local = 0
        device: torch.device | None = None
        dtype: torch.dtype | None = None
        for xb in batches:
            if device is None:
                device, dtype = self._fit_device(xb), xb.dtype
                res_rows = torch.zeros((m, xb.shape[1]), dtype=dtype, device=device)
                res_keys = torch.full((m,), float("inf"), dtype=torch.float64)
            if not bool(torch.isfinite(xb).all()):
                _raise_not_finite(xb, batches.name, f" (rows {n_local}..{n_local + xb.shape[0] - 1} of the stream)")
            b = xb.shape[0]
            u = torch.rand(b, generator=key_gen, dtype=torch.float64)
            n_local += b
            sel = torch.nonzero(u < res_keys.max()).flatten()
            if sel.numel() == 0:
                continue
            cand = u[sel]
            allk = torch.cat([res_keys, cand])
            top = torch.topk(allk, m, largest=False).indices
            keep = torch.zeros(m, dtype=torch.bool)
            keep[top[top < m]] = True
            slots = torch.nonzero(~keep).flatten()
            entering = top[top >= m] - m
            res_keys[slots] = cand[entering]
            res_rows[slots.to(device)] = xb[sel[entering].to(xb.device)].to(device=device, dtype=dtype)
        if device is None:
            raise ValueError(f"{batches.name} yielded no batches; give at least n_clusters={k} rows.")
        d = int(batches.n_features)
        n_total = int(comm.allreduce_(torch.tensor([n_local], dtype=torch.int64))[0])
        self._check_n_samples(n_total)
        valid = torch.isfinite(res_keys)
        keys, rows = res_keys[valid], res_rows[valid.to(device)]
        keys = comm.allgather_rows(keys)
        rows = comm.allgather_rows(rows)
        order = torch.argsort(keys, stable=True)[:m]
        S = rows[order.to(rows.device)].contiguous()
        chunk = self._chunk(d, dtype, device)
        low = resolve_matmul_dtype(self.matmul_dtype, device)
        gen = torch.Generator().manual_seed(seed)
        n_init = 1 if not isinstance(self.init, str) else int(self.n_init)
        with SpanPool(device) as pool:
            C, n_iter, computed = self._fit_sample(S, gen, n_init, dtype, device, comm, chunk, low, pool)
            labs, inertia = self._assign_pass(batches, C, device, dtype, chunk, low, pool)
        inertia_t = comm.allreduce_(torch.tensor([inertia], dtype=torch.float64))
        labels = torch.cat(labs) if labs else torch.empty(0, dtype=torch.int64, device=device)
        self._set_fitted(C, labels, float(inertia_t[0]), n_iter, d, computed, S.shape[0])
        self.n_samples_seen_ = n_total
        return self

    def _set_fitted(
        self,
        C: torch.Tensor,
        labels: torch.Tensor | None,
        inertia: float,
        n_iter: int,
        d: int,
        computed: list[int],
        n_fit: int,
    ) -> None:
        self.distance_fraction_ = np.asarray(computed, dtype=np.float64) / float(n_fit)
        self.algorithm_ = "hamerly" if self._use_hamerly(C.device, d) else "lloyd"
        self.cluster_centers_ = C
        self.labels_ = labels
        self.inertia_ = float(inertia)
        self.n_iter_ = int(n_iter)
        self.n_features_in_ = int(d)

    # ------------------------------------------------------------------ use
    def _prep_predict(self, X: Any) -> tuple[torch.Tensor, int, torch.dtype | None]:
        check_is_fitted(self, ["cluster_centers_"])
        Xt = _as_2d(validate_features(self, X, reset=False))
        C = self._centers()
        chunk = self._chunk(Xt.shape[1], C.dtype, C.device)
        return Xt, chunk, resolve_matmul_dtype(self.matmul_dtype, C.device)

    def _check_chunk_finite(self, xc: torch.Tensor, s: int) -> None:
        if not bool(torch.isfinite(xc).all()):
            _raise_not_finite(xc, "X", f" (rows {s}..{s + xc.shape[0] - 1})")

    def _for_each_chunk(
        self,
        Xt: torch.Tensor,
        chunk: int,
        low: torch.dtype | None,
        fn: Callable[[Assigner, torch.Tensor, int, int], Any],
    ) -> None:
        """Call ``fn(assigner, rows, start, stop)`` on every finite-checked chunk of ``Xt``, in parallel."""
        C = self._centers()
        with SpanPool(C.device) as pool:
            spans = pool.spans(Xt.shape[0], chunk)
            assigners = self._assigners(C, len(spans), chunk, C.dtype, C.device, low)

            def work(j: int) -> None:
                for s, e in chunks_in(spans[j], chunk):
                    xc = self._chunk_of(Xt, s, e, C.device, C.dtype)
                    self._check_chunk_finite(xc, s)
                    fn(assigners[j], xc, s, e)

            pool.map(work, range(len(spans)))

    def predict(self, X: ArrayLike) -> ArrayLike:
        """Index of the nearest centroid of each sample (computed chunk by chunk).

        Parameters
        ----------
        X : array or tensor of shape (n_samples, n_features)

        Returns
        -------
        labels : array or tensor of shape (n_samples,), int64
            numpy for numpy input; a tensor on ``X``'s device for tensor input.
        """
        Xt, chunk, low = self._prep_predict(X)
        labels = torch.empty(Xt.shape[0], dtype=torch.int64, device=self._centers().device)
        self._for_each_chunk(Xt, chunk, low, lambda A, xc, s, e: A.assign(xc, labels[s:e]))
        return _to_output(labels, X)

    def fit_predict(self, X: ArrayLike, y: Any = None) -> ArrayLike:
        """Fit and return the training labels (same type rule as :meth:`predict`)."""
        self.fit(X)
        if self.labels_ is None:  # pragma: no cover - streams always keep labels
            return self.predict(X)
        if isinstance(self.labels_, np.ndarray):
            return self.labels_
        return _to_output(self.labels_, X)

    def transform(self, X: ArrayLike) -> ArrayLike:
        """Euclidean distance of each sample to each centroid.

        Parameters
        ----------
        X : array or tensor of shape (n_samples, n_features)

        Returns
        -------
        distances : array or tensor of shape (n_samples, n_clusters)
        """
        Xt, chunk, low = self._prep_predict(X)
        C = self._centers()
        out = torch.empty((Xt.shape[0], C.shape[0]), dtype=C.dtype, device=C.device)
        self._for_each_chunk(Xt, chunk, low, lambda A, xc, s, e: out[s:e].copy_(A.full_sq_distances(xc).sqrt_()))
        return _to_output(out, X)

    def score(self, X: ArrayLike, y: Any = None) -> float:
        """Opposite of the inertia of ``X`` (higher is better, as in scikit-learn)."""
        Xt, chunk, low = self._prep_predict(X)
        C = self._centers()
        with SpanPool(C.device) as pool:
            _, inertia = self._assign_pass([Xt], C, C.device, C.dtype, chunk, low, pool)
        return -float(inertia)

    @property
    def _n_features_out(self) -> int:
        """Number of output features of :meth:`transform` (``get_feature_names_out``: kmeans0, ...)."""
        return int(self.cluster_centers_.shape[0])

    def __sklearn_tags__(self):  # noqa: D105 - scikit-learn's hook
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
