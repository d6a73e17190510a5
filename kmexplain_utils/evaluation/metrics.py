"""Metrics of the evaluation: concept maps vs parts, and attribution maps.

Two families, all pure functions on tensors or arrays:

*Semantic fidelity of concept maps* (METHOD section 6) -- a concept map gives
every pixel a concept index ``k in {0..K'-1}``; the ground truth gives every
pixel a part index ``j in {0..J-1}`` (``0`` = background):

- :func:`nmi` -- normalised mutual information between concepts and parts
  (scikit-learn's :func:`~sklearn.metrics.normalized_mutual_info_score`);
- :func:`purity` -- share of pixels whose concept's majority part is their part;
- :func:`ami` -- adjusted mutual information (NMI corrected for chance: a random
  partition scores about 0 whatever the number of concepts);
- :func:`pool_labels` -- the part map pooled to a feature grid and resampled
  back: the best any map on that grid can score (the *resolution ceiling*);
- :func:`fit_concept_to_part` + :func:`miou` -- map each concept to a part by
  majority vote on *training* images, then the intersection over union per part
  on *test* images; :func:`nothing_found_miou` is the floor to compare with.

*Attribution maps* -- a map gives every pixel a relevance score:

- :func:`deletion_insertion` -- the deletion and insertion curves of
  Petsiuk et al. (RISE, BMVC 2018) and their areas;
- :func:`pointing_game` -- is the most relevant pixel on the object?
- :func:`energy_in_mask` -- share of the (shifted) relevance on the object;
- :func:`deciding_part_scores` -- where a *contrastive* map puts its positive
  mass and its peak, against the part that decides between two classes.

The Spearman correlation of two sets of maps (the model-randomisation sanity
check of Adebayo et al., 2018) is :func:`kmexplain_utils.evaluation.sanity.spearman_maps`.

Every function validates its inputs once and names the expected shapes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from .._torch import eval_mode
from .._validation import to_numpy
from ..resample import GridGeometry

__all__ = [
    "DecidingPartScores",
    "DeletionInsertion",
    "ami",
    "baseline_images",
    "deciding_part_scores",
    "deletion_insertion",
    "energy_in_mask",
    "expected_mutual_information",
    "fit_concept_to_part",
    "miou",
    "nmi",
    "nothing_found_miou",
    "parts_without_concept",
    "pointing_game",
    "purity",
    "pool_labels",
    "random_maps",
]

ArrayLike = torch.Tensor | np.ndarray


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
_to_numpy = to_numpy  # tensors and arrays as arrays (kmexplain_utils._validation)


def _label_pair(
    concepts: ArrayLike, parts: ArrayLike, mask: ArrayLike | None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate two label maps of equal shape and return their (masked) flat pixels."""
    c = _to_numpy(concepts, "concepts")
    p = _to_numpy(parts, "parts")
    if c.shape != p.shape:
        raise ValueError(
            f"concepts and parts must have the same shape (N, H, W); got {c.shape} and {p.shape}. "
            "Upsample the concept map to the image size first (ConceptModel.concept_map(..., size=...))."
        )
    for arr, name in ((c, "concepts"), (p, "parts")):
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"{name} must hold integer labels, got dtype {arr.dtype}")
    c = c.reshape(-1)
    p = p.reshape(-1)
    if mask is not None:
        m = _to_numpy(mask, "mask")
        if m.shape != _to_numpy(concepts, "concepts").shape:
            raise ValueError(f"mask must have the shape of concepts {tuple(concepts.shape)}, got {m.shape}")
        m = m.reshape(-1).astype(bool)
        c, p = c[m], p[m]
    if c.size == 0:
        raise ValueError("No pixel to evaluate: the mask selects nothing.")
    return c, p


def _contingency(c: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Counts ``table[k, j]`` of pixels with concept ``k`` and part ``j`` (rows/columns of absent labels kept).

    Built with one ``np.bincount`` when the labels are small non-negative
    integers (the usual case), else through ``np.unique``.
    """
    c = c.astype(np.int64, copy=False)
    p = p.astype(np.int64, copy=False)
    if c.min() < 0 or p.min() < 0 or (int(c.max()) + 1) * (int(p.max()) + 1) > 10_000_000:
        _, c = np.unique(c, return_inverse=True)
        _, p = np.unique(p, return_inverse=True)
    kc, kp = int(c.max()) + 1, int(p.max()) + 1
    return np.bincount(c * kp + p, minlength=kc * kp).reshape(kc, kp)


def _entropy(counts: np.ndarray) -> float:
    q = counts[counts > 0].astype(np.float64)
    q /= q.sum()
    return float(-(q * np.log(q)).sum())


def _information(concepts: ArrayLike, parts: ArrayLike, mask: ArrayLike | None
                 ) -> tuple[np.ndarray, float, float] | None:
    """What NMI and AMI are made of, from one contingency table of the pixels (the set-up both share).

    Returns ``(table, I(K; J), (H(K) + H(J)) / 2)``, the table ``(K, J)`` without the rows and
    columns of absent labels; ``None`` when both sides are one cluster (NMI = AMI = 1 then, as in
    scikit-learn). Same values as scikit-learn's scores, much faster on millions of pixels (the
    tests compare them).
    """
    from sklearn.metrics import mutual_info_score

    table = _contingency(*_label_pair(concepts, parts, mask))
    table = table[table.sum(1) > 0][:, table.sum(0) > 0]
    if table.shape == (1, 1):
        return None
    mi = float(mutual_info_score(None, None, contingency=table))
    return table, mi, (_entropy(table.sum(1)) + _entropy(table.sum(0))) / 2


# --------------------------------------------------------------------------
# concept maps vs parts
# --------------------------------------------------------------------------
def nmi(concepts: ArrayLike, parts: ArrayLike, mask: ArrayLike | None = None) -> float:
    """Normalised mutual information between a concept map and the part map.

    ``NMI(K, J) = I(K; J) / ((H(K) + H(J)) / 2)`` over pixels, where ``K`` is a
    pixel's concept and ``J`` its ground-truth part (scikit-learn's
    :func:`~sklearn.metrics.normalized_mutual_info_score`, arithmetic mean).
    1 = the concepts are the parts up to renaming; 0 = independent.

    NMI is **not comparable across different numbers of concepts**: it is
    biased *upwards* by more clusters (a random partition into more clusters
    scores higher). Compare levels at one ``K'`` only, and read :func:`ami`
    beside it.

    Parameters
    ----------
    concepts : Tensor or ndarray, shape (N, H, W), integer
        Concept index of every pixel (the concept map upsampled to the image).
    parts : Tensor or ndarray, shape (N, H, W), integer
        Ground-truth part of every pixel (``0`` = background).
    mask : Tensor or ndarray, shape (N, H, W), bool, optional
        Evaluate only these pixels, e.g. the object mask: background is 80-90 %
        of the pixels, so plain NMI mostly measures object vs background.

    Returns
    -------
    float

    Example
    -------
    >>> import torch
    >>> parts = torch.tensor([[[0, 1], [2, 2]]])
    >>> round(nmi(parts + 5, parts), 6)
    1.0
    """
    # sklearn.metrics.normalized_mutual_info_score(p, c), from one contingency table
    info = _information(concepts, parts, mask)
    if info is None:
        return 1.0
    _, mi, mean_h = info
    if mi <= 0:
        return 0.0
    return float(mi / max(mean_h, np.finfo(np.float64).eps))


#: the window of :func:`expected_mutual_information`: this many standard deviations, plus ``EMI_WINDOW_COUNTS``
EMI_WINDOW_SD = 12
EMI_WINDOW_COUNTS = 30


def expected_mutual_information(table: ArrayLike) -> float:
    """``E[I]``, the mutual information expected between random partitions with the margins of ``table``.

    The expectation of AMI (Vinh, Epps and Bailey 2010): for every pair of a row of size ``a`` and a
    column of size ``b`` among ``N`` items, the count ``n`` of their cell is hypergeometric, and
    ``E[I] = sum_{a, b} sum_n P(n) (n / N) log(N n / (a b))``. scikit-learn's compiled routine sums
    ``n`` over its whole support, up to ``min(a, b)`` (hundreds of thousands of pixels: 0.3 s a call
    here); this sum stops ``EMI_WINDOW_SD`` standard deviations plus ``EMI_WINDOW_COUNTS`` counts from
    the mean, where ``P(n)`` is below ``1e-30`` (a Gaussian tail at 12 sd is ``5e-32``; a Poisson
    one of mean 1 at 31 counts, ``1e-34``). The tests compare it with scikit-learn's on random and
    skewed tables.

    Parameters
    ----------
    table : array_like, shape (K, J), non-negative integers
        The contingency table.

    Returns
    -------
    float
        In nats.

    Example
    -------
    >>> round(expected_mutual_information([[5, 1], [0, 4]]), 6)
    0.061231
    """
    from scipy.special import gammaln

    t = np.asarray(table)
    if t.ndim != 2 or (t.size and (t.min() < 0 or not np.all(np.equal(np.mod(t, 1), 0)))):
        raise ValueError("table must be a 2-D array of non-negative integer counts")
    a, b = t.sum(1).astype(np.int64), t.sum(0).astype(np.int64)
    N = int(t.sum())
    if N <= 1:
        return 0.0
    a, b = a[a > 0], b[b > 0]
    lg = lambda v: gammaln(np.asarray(v, dtype=np.float64) + 1)  # noqa: E731 - log(v!)
    emi = 0.0
    for ai in a.tolist():
        for bj in b.tolist():
            mean = ai * bj / N
            sd = np.sqrt(float(ai) * bj * (N - ai) * (N - bj) / (float(N) * N * (N - 1)))
            half = EMI_WINDOW_SD * sd + EMI_WINDOW_COUNTS
            lo = int(max(1, ai + bj - N, np.floor(mean - half)))
            hi = int(min(ai, bj, np.ceil(mean + half)))
            if hi < lo:
                continue
            n = np.arange(lo, hi + 1, dtype=np.float64)
            log_p = (lg(ai) + lg(bj) + lg(N - ai) + lg(N - bj) - lg(N)
                     - lg(n) - lg(ai - n) - lg(bj - n) - lg(N - ai - bj + n))
            emi += float((np.exp(log_p) * n / N * np.log(N * n / (float(ai) * float(bj)))).sum())
    return emi


def ami(concepts: ArrayLike, parts: ArrayLike, mask: ArrayLike | None = None) -> float:
    """Adjusted mutual information between a concept map and the part map.

    ``AMI = (I - E[I]) / (mean(H(K), H(J)) - E[I])`` where ``E[I]`` is the
    mutual information expected between random partitions with the same
    cluster sizes (scikit-learn's
    :func:`~sklearn.metrics.adjusted_mutual_info_score`, arithmetic mean).
    0 = no better than chance, 1 = the parts up to renaming; unlike
    :func:`nmi` it does not grow with the number of concepts by itself.

    Parameters
    ----------
    concepts, parts : Tensor or ndarray, shape (N, H, W), integer
        Concept and ground-truth part of every pixel.
    mask : Tensor or ndarray, shape (N, H, W), bool, optional
        Evaluate only these pixels (e.g. the object mask).

    Returns
    -------
    float
        A random concept map scores about 0 (NMI does not):

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> parts, random_map = rng.integers(0, 3, (1, 32, 32)), rng.integers(0, 8, (1, 32, 32))
    >>> abs(ami(random_map, parts)) < 0.005 < nmi(random_map, parts)
    True
    """
    info = _information(concepts, parts, mask)
    if info is None:
        return 1.0  # scikit-learn's convention for two one-cluster partitions
    table, mi, mean_h = info
    emi = expected_mutual_information(table)  # from the contingency table, without relabelling pixels
    denom = mean_h - emi
    eps = np.finfo(np.float64).eps
    denom = min(denom, -eps) if denom < 0 else max(denom, eps)
    return float((mi - emi) / denom)


def pool_labels(parts: ArrayLike, grid: tuple[int, int], geometry: GridGeometry | None = None, *,
                object_majority: bool = False) -> torch.Tensor:
    """The part map pooled to a feature grid and resampled back: the resolution ceiling.

    Every pixel belongs to the grid position whose registered centre is
    nearest (the rule :func:`kmexplain_utils.concepts.upsample_labels` uses);
    each position takes the majority part of its pixels, and every pixel
    then takes its position's label. Scored like a concept map, this is the
    best any map on that grid can do.

    Parameters
    ----------
    parts : Tensor or ndarray, shape (N, H, W), integer
        Ground-truth part maps (non-negative labels).
    grid : (int, int)
        ``(h, w)`` of the feature grid.
    geometry : GridGeometry, optional
        Where the grid's positions sit (``LevelFeatures.grid_geometry_``);
        default stride ``H / h``, offset 0.
    object_majority : bool, default False
        Take the majority among the *object* parts (labels > 0) of a position
        whenever it has object pixels: the ceiling of the object-pixel scores
        (on object pixels, a position's background majority says nothing).

    Returns
    -------
    torch.Tensor
        ``(N, H, W)`` int64: constant over the pixels of each position.

    Example
    -------
    >>> import torch
    >>> parts = torch.tensor([[[0, 0, 1, 1], [0, 2, 1, 1], [0, 0, 0, 0], [0, 0, 0, 3]]])
    >>> pool_labels(parts, (2, 2))[0].tolist()  # centres on pixels 0 and 2 (stride 2, offset 0)
    [[0, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    """
    from ..concepts import upsample_labels
    from ..resample import infer_geometry

    p = torch.as_tensor(_to_numpy(parts, "parts")).long()
    if p.ndim != 3 or p.min() < 0:
        raise ValueError(f"parts must be non-negative integer maps (N, H, W), got shape {tuple(p.shape)}")
    n, H, W = p.shape
    h, w = (int(grid[0]), int(grid[1]))
    geo = infer_geometry((h, w), (H, W)) if geometry is None else geometry
    pos = upsample_labels(torch.arange(h * w).view(1, h, w), (H, W), geo)[0].reshape(-1)  # (H*W,)
    n_parts = int(p.max()) + 1
    flat = p.reshape(n, -1)
    key = (torch.arange(n)[:, None] * (h * w) + pos[None, :]) * n_parts + flat
    counts = torch.bincount(key.reshape(-1), minlength=n * h * w * n_parts).view(n, h * w, n_parts)
    if object_majority:
        has_object = counts[..., 1:].sum(2) > 0
        counts[..., 0] = torch.where(has_object, torch.zeros_like(counts[..., 0]), counts[..., 0])
    pooled = counts.argmax(dim=2)  # (n, h*w): majority part (ties: the smaller label)
    return pooled.gather(1, pos.expand(n, -1)).view(n, H, W)


def purity(concepts: ArrayLike, parts: ArrayLike, mask: ArrayLike | None = None) -> float:
    """Purity of concepts with respect to parts.

    ``purity = (1 / n) * sum_k max_j |{pixels of concept k and part j}|``:
    the share of pixels whose part is the majority part of their concept.
    It rewards many small concepts (``K' = n`` gives 1) and, with 80-90 %
    background, every map scores about 0.85 on all pixels: report it on object
    pixels (``mask``) too.

    Parameters
    ----------
    concepts, parts : Tensor or ndarray, shape (N, H, W), integer
        Concept and ground-truth part of every pixel.
    mask : Tensor or ndarray, shape (N, H, W), bool, optional
        Evaluate only these pixels.

    Returns
    -------
    float in (0, 1]
    """
    c, p = _label_pair(concepts, parts, mask)
    table = _contingency(c, p)  # (concepts, parts), as sklearn.metrics.cluster.contingency_matrix
    return float(table.max(axis=1).sum() / c.size)


def fit_concept_to_part(
    concepts_train: ArrayLike, parts_train: ArrayLike, n_concepts: int | None = None
) -> np.ndarray:
    """Map every concept to its majority part on **training** images.

    ``mapping[k] = argmax_j |{training pixels of concept k and part j}|``.
    A concept that never occurs is mapped to background (``0``). Fit on
    training images and evaluate with :func:`miou` on test images, so that the
    matching is not tuned on the data it is scored on.

    Parameters
    ----------
    concepts_train, parts_train : Tensor or ndarray, shape (N, H, W), integer
        Concept maps and part maps of the training images.
    n_concepts : int, optional
        Number of concepts ``K'`` (default: largest concept index + 1).

    Returns
    -------
    ndarray, shape (K',), int64
        The part assigned to each concept.
    """
    c, p = _label_pair(concepts_train, parts_train, None)
    if c.min() < 0 or p.min() < 0:
        raise ValueError("Concept and part labels must be non-negative integers.")
    k = int(c.max()) + 1 if n_concepts is None else int(n_concepts)
    if c.max() >= k:
        raise ValueError(f"concepts_train holds index {int(c.max())} but n_concepts={k}.")
    n_parts = int(p.max()) + 1
    table = np.bincount(c.astype(np.int64) * n_parts + p.astype(np.int64), minlength=k * n_parts).reshape(k, n_parts)
    mapping = table.argmax(axis=1)
    mapping[table.sum(axis=1) == 0] = 0
    return mapping.astype(np.int64)


def miou(
    concepts_test: ArrayLike, parts_test: ArrayLike, mapping: ArrayLike, n_parts: int
) -> tuple[float, np.ndarray]:
    """Mean intersection over union after mapping concepts to parts.

    The predicted part of a pixel is ``mapping[concept]``;
    ``IoU_j = |pred = j and gt = j| / |pred = j or gt = j|`` over all test
    pixels, and the mean runs over the parts **present in the ground truth**
    (background included).

    Parameters
    ----------
    concepts_test, parts_test : Tensor or ndarray, shape (N, H, W), integer
        Concept maps and part maps of the test images.
    mapping : Tensor or ndarray, shape (K',), integer
        Concept-to-part mapping from :func:`fit_concept_to_part`.
    n_parts : int
        Number of part labels, background included.

    Returns
    -------
    miou : float
        Mean IoU over the parts present.
    per_part : ndarray, shape (n_parts,)
        IoU of each part; ``nan`` for parts absent from ``parts_test``.
    """
    c, p = _label_pair(concepts_test, parts_test, None)
    m = _to_numpy(mapping, "mapping").astype(np.int64).reshape(-1)
    if c.max() >= m.size or c.min() < 0:
        raise ValueError(
            f"concepts_test holds indices in [{int(c.min())}, {int(c.max())}] "
            f"but the mapping covers only {m.size} concepts."
        )
    if p.max() >= n_parts or m.max() >= n_parts:
        raise ValueError(f"Part labels must lie in [0, {n_parts - 1}] (n_parts={n_parts}).")
    pred = m[c]
    # confusion[j, i] = pixels of ground-truth part j predicted as part i
    confusion = np.bincount(p.astype(np.int64) * n_parts + pred, minlength=n_parts * n_parts).reshape(n_parts, n_parts)
    inter = np.diag(confusion).astype(np.float64)
    gt, pr = confusion.sum(axis=1), confusion.sum(axis=0)
    per_part = np.full(n_parts, np.nan)
    present = gt > 0
    per_part[present] = inter[present] / (gt + pr - inter)[present]
    return float(np.nanmean(per_part)), per_part


def nothing_found_miou(parts_test: ArrayLike, n_parts: int) -> float:
    """The "nothing found" floor of :func:`miou`: every pixel predicted background.

    Background IoU is then the background share of the pixels and every other
    part scores 0, so the floor is ``IoU_bg / (number of parts present)``. A
    concept map must beat this to have found anything.

    Parameters
    ----------
    parts_test : Tensor or ndarray, shape (N, H, W), integer
    n_parts : int
        Number of part labels, background included.

    Returns
    -------
    float
    """
    p = _to_numpy(parts_test, "parts_test")
    zeros = np.zeros_like(p)
    return miou(zeros, p, np.zeros(1, dtype=np.int64), n_parts)[0]


def parts_without_concept(mapping: ArrayLike, n_parts: int) -> list[int]:
    """Parts that no concept is mapped to (they score IoU 0 in :func:`miou`).

    Small parts (under about 2 % of the pixels) often end up here.
    """
    m = set(_to_numpy(mapping, "mapping").astype(int).tolist())
    return [j for j in range(n_parts) if j not in m]


# --------------------------------------------------------------------------
# attribution maps
# --------------------------------------------------------------------------
def _check_maps(maps: ArrayLike, n: int | None = None, name: str = "maps") -> torch.Tensor:
    if isinstance(maps, np.ndarray):
        maps = torch.from_numpy(np.ascontiguousarray(maps))
    if not isinstance(maps, torch.Tensor):
        raise TypeError(f"{name} must be a tensor or array of shape (N, h, w), got {type(maps).__name__}")
    if maps.ndim == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.ndim != 3:
        raise ValueError(f"{name} must have shape (N, h, w), got {tuple(maps.shape)}")
    if n is not None and maps.shape[0] != n:
        raise ValueError(f"{name} has {maps.shape[0]} maps but there are {n} images/masks.")
    maps = maps.float()
    if not bool(torch.isfinite(maps).all()):
        raise ValueError(f"{name} contains NaN or infinite values.")
    return maps


def _resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample ``(N, h, w)`` grid maps to ``size`` at registered coordinates (stride ``H / h``, offset 0).

    Pass maps already at the image size (e.g. ``Explanation.attribution``
    resampled with the model's registration) for networks with other offsets.
    """
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    from ..attribution import upsample_map

    return upsample_map(maps, size)


def _check_masks(masks: ArrayLike, name: str = "object_masks") -> torch.Tensor:
    if isinstance(masks, np.ndarray):
        masks = torch.from_numpy(np.ascontiguousarray(masks))
    if not isinstance(masks, torch.Tensor) or masks.ndim != 3:
        raise ValueError(f"{name} must be a bool tensor of shape (N, H, W)")
    return masks.bool()


def random_maps(
    n: int, size: tuple[int, int], *, random_state: int | torch.Generator = 0
) -> torch.Tensor:
    """Uniform random maps ``(n, H, W)``: the chance baseline of every attribution metric."""
    gen = random_state if isinstance(random_state, torch.Generator) else torch.Generator().manual_seed(int(random_state))
    return torch.rand((n, *size), generator=gen)


@dataclasses.dataclass
class DeletionInsertion:
    """Deletion and insertion curves of a set of attribution maps.

    Attributes
    ----------
    fractions : ndarray, shape (S + 1,)
        Share of pixels removed (deletion) or inserted (insertion), ``0..1``.
    deletion, insertion : ndarray, shape (N, S + 1)
        Probability of the target class along each curve.
    deletion_auc, insertion_auc : ndarray, shape (N,)
        Area under each curve (trapezoid rule over ``fractions``). Deletion:
        lower is better; insertion: higher is better.
    baseline : str
        What removed pixels were replaced by (see :func:`deletion_insertion`).
    """

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    deletion_auc: np.ndarray
    insertion_auc: np.ndarray
    baseline: str


def _blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = k / k.sum()
    c = images.shape[1]
    pad = (radius, radius, radius, radius)
    out = F.pad(images, pad, mode="replicate")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return out


def _baseline_images(images: torch.Tensor, baseline: str | float) -> tuple[torch.Tensor, str]:
    h, w = images.shape[-2:]
    if isinstance(baseline, str):
        if baseline == "blur":
            sigma = max(h, w) / 16
            return _blur(images, sigma), f"blur (Gaussian, sigma={sigma:g} px)"
        if baseline == "mean":
            return images.mean(dim=(2, 3), keepdim=True).expand_as(images).clone(), "mean (per-image channel mean)"
        raise ValueError(f"baseline must be 'blur', 'mean' or a number in [0, 1], got {baseline!r}")
    value = float(baseline)
    return torch.full_like(images, value), f"constant {value:g}"


def baseline_images(images: torch.Tensor, baseline: Literal["blur", "mean"] | float = "blur") -> tuple[torch.Tensor, str]:
    """The images that removed pixels become in :func:`deletion_insertion`, and a description.

    Parameters
    ----------
    images : Tensor, shape (N, 3, H, W)
    baseline : {"blur", "mean"} or float, default "blur"
        See :func:`deletion_insertion`.

    Returns
    -------
    baseline : Tensor, shape (N, 3, H, W)
    description : str
    """
    return _baseline_images(images, baseline)


def deletion_insertion(
    model: torch.nn.Module,
    images: torch.Tensor,
    maps: ArrayLike,
    target: ArrayLike,
    *,
    steps: int = 20,
    baseline: Literal["blur", "mean"] | float = "blur",
    batch_size: int = 256,
    random_state: int = 0,
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> DeletionInsertion:
    """Deletion and insertion curves (Petsiuk et al., 2018) and their AUC.

    Pixels are ranked by decreasing attribution (ties broken at random with
    ``random_state``). *Deletion* replaces the top ``t`` share of pixels by the
    baseline image and records the target-class probability for
    ``t = 0, 1/S, ..., 1``; a faithful map makes it fall fast (low AUC).
    *Insertion* starts from the baseline image and puts the top ``t`` share of
    original pixels back; a faithful map makes it rise fast (high AUC).

    Parameters
    ----------
    model : nn.Module
        Classifier taking images ``(N, 3, H, W)`` in ``[0, 1]``; run in eval mode, every
        submodule's mode restored as found afterwards.
    images : Tensor, shape (N, 3, H, W)
        Images in ``[0, 1]``.
    maps : Tensor or ndarray, shape (N, h, w)
        Attribution maps; upsampled bilinearly to ``(H, W)`` when smaller.
    target : Tensor or ndarray, shape (N,)
        Class whose probability is tracked (usually the predicted class).
    steps : int, default 20
        Number ``S`` of steps; ``S + 1`` points per curve.
    baseline : {"blur", "mean"} or float, default "blur"
        Value of removed pixels: ``"blur"`` = the image blurred with a
        Gaussian of standard deviation ``max(H, W) / 16`` px (Petsiuk's
        insertion canvas), ``"mean"`` = the image's mean colour, a number =
        that constant grey level (``0.0`` = black). The value used is stored in
        the ``baseline`` field of :class:`DeletionInsertion`; report it with the results.
    batch_size : int, default 256
        Images per forward pass.
    random_state : int, default 0
        Seed of the tie-breaking.
    score : callable, optional
        ``score(logits (B, C), target (B,)) -> (B,)``; default the softmax
        probability of ``target``.

    Returns
    -------
    DeletionInsertion
    """
    from .._validation import check_rgb_images

    check_rgb_images(images)
    n, _, h, w = images.shape
    maps_t = _resize_maps(_check_maps(maps, n), (h, w))
    tgt = torch.as_tensor(_to_numpy(target, "target") if not isinstance(target, torch.Tensor) else target)
    tgt = tgt.long().reshape(-1)
    if tgt.numel() != n:
        raise ValueError(f"target must have shape (N,) = ({n},), got {tuple(tgt.shape)}")
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    steps = int(steps)
    if score is None:

        def score(logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return logits.softmax(dim=1).gather(1, t[:, None])[:, 0]

    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = images.device
    base, base_doc = _baseline_images(images, baseline)

    # rank of every pixel (0 = most relevant), ties broken by a seeded permutation
    gen = torch.Generator().manual_seed(int(random_state))
    flat = maps_t.reshape(n, -1).cpu()
    n_pix = flat.shape[1]
    perm = torch.stack([torch.randperm(n_pix, generator=gen) for _ in range(n)])
    shuffled = flat.gather(1, perm)
    order = perm.gather(1, torch.argsort(shuffled, dim=1, descending=True, stable=True))
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n_pix).expand(n, -1).contiguous())
    rank = rank.reshape(n, 1, h, w)
    counts = torch.round(torch.arange(steps + 1, dtype=torch.float64) * n_pix / steps).long()

    fractions = (counts.double() / n_pix).numpy()
    curves = {"deletion": np.zeros((n, steps + 1)), "insertion": np.zeros((n, steps + 1))}
    per_batch = max(1, int(batch_size) // (steps + 1))
    # every submodule's train/eval flag is restored as found (not model.train(flag), which would set them all)
    with eval_mode(model), torch.no_grad():
        for start in range(0, n, per_batch):
            sl = slice(start, min(n, start + per_batch))
            x = images[sl].to(device)
            b = base[sl].to(device)
            r = rank[sl].to(device)
            t = tgt[sl].to(device)
            m = x.shape[0]
            # keep[s, i] = pixel among the top counts[s] of image i
            keep = r[None] < counts.to(device).view(-1, 1, 1, 1, 1)  # (S+1, m, 1, H, W)
            for kind in ("deletion", "insertion"):
                if kind == "deletion":
                    batch = torch.where(keep, b[None], x[None])
                else:
                    batch = torch.where(keep, x[None], b[None])
                logits = model(batch.reshape(-1, *x.shape[1:]))
                s = score(logits, t.repeat(steps + 1))
                curves[kind][sl] = s.view(steps + 1, m).T.double().cpu().numpy()

    def auc(c: np.ndarray) -> np.ndarray:
        return np.trapezoid(c, fractions, axis=1) if hasattr(np, "trapezoid") else np.trapz(c, fractions, axis=1)

    return DeletionInsertion(
        fractions=fractions,
        deletion=curves["deletion"],
        insertion=curves["insertion"],
        deletion_auc=auc(curves["deletion"]),
        insertion_auc=auc(curves["insertion"]),
        baseline=base_doc,
    )


def pointing_game(maps: ArrayLike, object_masks: ArrayLike, *, tolerance: int = 0) -> np.ndarray:
    """Pointing game: is the maximum of each map on the object?

    The map is upsampled bilinearly to the mask size; its arg-max pixel (the
    first one in row-major order when several tie) is a *hit* when it lies in
    the object mask dilated by ``tolerance`` pixels (a square neighbourhood,
    Zhang et al. 2016 use 15 px at 224 px). Images with an empty mask count as
    misses.

    Parameters
    ----------
    maps : Tensor or ndarray, shape (N, h, w)
    object_masks : Tensor or ndarray, shape (N, H, W), bool
    tolerance : int, default 0
        Pixels of tolerance around the mask.

    Returns
    -------
    ndarray, shape (N,), bool
    """
    masks = _check_masks(object_masks)
    maps_t = _resize_maps(_check_maps(maps, masks.shape[0]), tuple(masks.shape[-2:]))
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    m = masks.float().cpu()
    if tolerance > 0:
        m = F.max_pool2d(m[:, None], 2 * tolerance + 1, stride=1, padding=tolerance)[:, 0]
    idx = maps_t.cpu().reshape(maps_t.shape[0], -1).argmax(dim=1)
    return (m.reshape(m.shape[0], -1).gather(1, idx[:, None])[:, 0] > 0).numpy()


def energy_in_mask(
    maps: ArrayLike, object_masks: ArrayLike, *, positive: Literal["shift", "relu"] = "shift"
) -> np.ndarray:
    """Share of attribution energy that falls on the object.

    ``E = sum_{p in mask} m+(p) / sum_p m+(p)`` with the map upsampled
    bilinearly to the mask size and made non-negative by

    - ``"shift"`` (default): ``m+ = m - min_p m``. CAM and k-means maps carry an
      arbitrary per-map constant (``b_c``, ``-||mu||^2``) that would change a
      clipped map; subtracting the minimum makes ``E`` invariant to it (and
      to positive rescaling).
    - ``"relu"``: ``m+ = max(m, 0)`` (the usual energy-based pointing game).

    A random map scores about the object's share of the pixels, a map that is
    zero off the object scores 1. Maps without positive energy give ``nan``.

    Parameters
    ----------
    maps : Tensor or ndarray, shape (N, h, w)
    object_masks : Tensor or ndarray, shape (N, H, W), bool
    positive : {"shift", "relu"}, default "shift"

    Returns
    -------
    ndarray, shape (N,), float
    """
    masks = _check_masks(object_masks)
    maps_t = _resize_maps(_check_maps(maps, masks.shape[0]), tuple(masks.shape[-2:])).cpu().double()
    flat = maps_t.reshape(maps_t.shape[0], -1)
    if positive == "shift":
        flat = flat - flat.min(dim=1, keepdim=True).values
    elif positive == "relu":
        flat = flat.clamp_min(0)
    else:
        raise ValueError(f"positive must be 'shift' or 'relu', got {positive!r}")
    total = flat.sum(dim=1)
    inside = (flat * masks.reshape(masks.shape[0], -1).cpu().double()).sum(dim=1)
    out = torch.where(total > 0, inside / total.clamp_min(1e-300), torch.full_like(total, float("nan")))
    return out.numpy()



@dataclasses.dataclass
class DecidingPartScores:
    """Where contrastive maps put their mass and their peak, against the deciding part.

    Attributes
    ----------
    mass : ndarray, shape (N,)
        Share of the map's positive mass (``max(m, 0)``) on the deciding part;
        ``nan`` when the map has no positive value.
    peak : ndarray, shape (N,), bool
        The map's maximum (first in row-major order on ties) lies on the part.
    part_share : ndarray, shape (N,)
        The part's share of the image's pixels: what a random map's ``mass``
        is expected to be.
    """

    mass: np.ndarray
    peak: np.ndarray
    part_share: np.ndarray


def deciding_part_scores(maps: ArrayLike, parts: ArrayLike, deciding_part: ArrayLike) -> DecidingPartScores:
    """Score contrastive maps against the ground-truth part that decides between two classes.

    For an image whose predicted class and rival class differ in exactly one
    attribute, the part carrying that attribute (``deciding_part[i]``, a part
    label) is where a "why this class rather than that one" map should put
    its positive mass and its peak.

    Parameters
    ----------
    maps : Tensor or ndarray, shape (N, H, W)
        Contrastive maps at the part maps' size (positive = evidence for the
        predicted class against the rival).
    parts : Tensor or ndarray, shape (N, H, W), integer
        Ground-truth part maps.
    deciding_part : Tensor or ndarray, shape (N,), integer
        Part label of the deciding part of each image.

    Returns
    -------
    DecidingPartScores

    Example
    -------
    >>> import torch
    >>> parts = torch.tensor([[[0, 3], [0, 0]]])
    >>> s = deciding_part_scores(torch.tensor([[[1.0, 3.0], [-2.0, 0.0]]]), parts, torch.tensor([3]))
    >>> float(s.mass[0]), bool(s.peak[0]), float(s.part_share[0])
    (0.75, True, 0.25)
    """
    p = torch.as_tensor(_to_numpy(parts, "parts")).long()
    if p.ndim != 3:
        raise ValueError(f"parts must have shape (N, H, W), got {tuple(p.shape)}")
    m = _check_maps(maps, p.shape[0]).cpu().double()
    if tuple(m.shape[-2:]) != tuple(p.shape[-2:]):
        raise ValueError(f"maps {tuple(m.shape)} and parts {tuple(p.shape)} must have the same size (N, H, W)")
    d = torch.as_tensor(_to_numpy(deciding_part, "deciding_part")).long().reshape(-1)
    if d.numel() != p.shape[0]:
        raise ValueError(f"deciding_part must have shape (N,) = ({p.shape[0]},), got {tuple(d.shape)}")
    if p.shape[0] == 0:  # no image has a deciding part (e.g. no class pair differs in one attribute)
        empty = np.zeros(0, dtype=np.float64)
        return DecidingPartScores(mass=empty, peak=np.zeros(0, dtype=bool), part_share=empty.copy())
    on = (p == d[:, None, None]).reshape(p.shape[0], -1)
    flat = m.reshape(m.shape[0], -1)
    pos = flat.clamp_min(0)
    total = pos.sum(1)
    inside = (pos * on).sum(1)
    mass = torch.where(total > 0, inside / total.clamp_min(1e-300), torch.full_like(total, float("nan")))
    peak = on.gather(1, flat.argmax(1, keepdim=True))[:, 0]
    return DecidingPartScores(mass=mass.numpy(), peak=peak.numpy(), part_share=on.double().mean(1).numpy())
