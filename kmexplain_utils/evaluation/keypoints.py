"""Keypoint-based part measurements (CUB-200-2011 style).

CUB-200-2011 marks each bird with up to 15 *keypoints* (merged to 12 part
labels, :mod:`kmexplain_utils.data.cub`), not with part masks. The disc part
maps the loader draws around them are an approximation; the measurements here
use the keypoints themselves. Keypoints are a list with one float64 array
``(P_i, 3)`` per image: ``(x, y, part label)`` in pixels of the image the maps
are scored on, where pixel ``(r, c)`` covers ``[c, c + 1) x [r, r + 1)`` (its
centre is ``(c + 0.5, r + 0.5)``) and labels ``>= 1`` index ``part_names``
(``0`` is the background and never a keypoint). They come from
:meth:`kmexplain_utils.data.base.ImageSet.keypoints_at` or, for a dataset with
dense part masks only (the book's generated creatures), from
:func:`keypoints_from_parts`.

Two families of measurements:

*Concept maps at keypoints* -- :func:`labels_at_keypoints` reads a label map
(e.g. a concept map at image size) under every keypoint; :func:`keypoint_scores`
gives NMI, AMI and purity (:mod:`kmexplain_utils.evaluation.metrics`) of the concepts
against the keypoints' parts, and their contingency table.

*Part consistency of prototypes* -- the consistency of EvalProtoPNet (Huang et
al., "Evaluation and Improvement of Interpretability for Self-Explainable
Part-Prototype Networks", ICCV 2023): on each test image of its class, a
prototype's activation map is upsampled to the image and the box of
``72 x 72`` px (on 224 px images) around its maximum is checked for the
visible keypoints of each part (:func:`peak_locations`, :func:`parts_in_boxes`);
a prototype is *consistent* when one part falls in its box on at least 80 % of
those images (:func:`part_consistency`). For the k-means classifier the
activation map of prototype ``mu`` is its per-position score
``2 mu . a - ||mu||^2`` (:func:`class_prototype_maps`);
:func:`prototype_consistency` runs the whole pipeline in batches.

Two choices differ from EvalProtoPNet's code and are documented where they
apply: the maps are upsampled bilinearly *at the registered coordinates* of
the grid (:func:`kmexplain_utils.resample.resample_map`; EvalProtoPNet uses
OpenCV's bicubic resize), and by default a part's frequency is divided by all
the images of the prototype's class (an image where the part is not visible
counts as not containing it); ``visible=`` / ``denominator="visible"`` divides
by the images where the part is visible, as EvalProtoPNet's code does.

Example
-------
>>> import torch
>>> from kmexplain_utils.evaluation.keypoints import keypoints_from_parts, keypoint_scores
>>> parts = torch.zeros(1, 6, 6, dtype=torch.long)
>>> parts[0, :3], parts[0, 3:] = 1, 2                      # two halves: two parts
>>> kp = keypoints_from_parts(parts)
>>> kp[0].tolist()                                         # (x, y, label)
[[2.5, 1.5, 1.0], [2.5, 4.5, 2.0]]
>>> keypoint_scores(parts + 10, kp).nmi                    # a concept map equal to the parts
1.0
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from .._torch import as_generator
from .._validation import check_is_fitted, check_keypoints, to_numpy
from ..classifier import KMeansClassifier
from .metrics import ami, nmi, purity
from ..resample import GridGeometry, as_size, infer_geometry, resample_map
from ..scores import prototype_scores

__all__ = [
    "KeypointScores",
    "PartConsistency",
    "class_prototype_maps",
    "keypoint_scores",
    "keypoints_from_parts",
    "labels_at_keypoints",
    "part_consistency",
    "parts_in_boxes",
    "peak_locations",
    "prototype_consistency",
]

#: EvalProtoPNet's box: 72 px on 224 px images (half-size 36).
_BOX_FRACTION = 72 / 224


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
_numpy = to_numpy  # tensors and arrays as arrays (kmexplain_utils._validation)


def _int_maps(x: Any, name: str) -> np.ndarray:
    """``(N, H, W)`` integer maps as an int64 array."""
    a = _numpy(x, name)
    if a.ndim != 3:
        raise ValueError(f"{name} must be integer maps of shape (N, H, W), got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must hold integer labels, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def _bool_array(x: Any, name: str, ndim: int, what: str) -> np.ndarray:
    a = _numpy(x, name)
    if a.ndim != ndim:
        raise ValueError(f"{name} must have shape {what}, got shape {a.shape}")
    if a.dtype != np.bool_:
        raise TypeError(f"{name} must be boolean {what}, got dtype {a.dtype}")
    return a


def _visible(keypoints: list[np.ndarray], n_parts: int) -> np.ndarray:
    """``(N, n_parts)`` bool: which parts have a keypoint in each image."""
    vis = np.zeros((len(keypoints), n_parts), dtype=bool)
    for i, k in enumerate(keypoints):
        vis[i, k[:, 2].astype(np.int64)] = True
    return vis


# --------------------------------------------------------------------------
# keypoints and labels
# --------------------------------------------------------------------------
def keypoints_from_parts(parts: Any, n_parts: int | None = None) -> list[np.ndarray]:
    """Pseudo-keypoints from dense part maps: one per part present, on the part.

    For each image and each part label ``k > 0`` present, the keypoint is the
    centre ``(c + 0.5, r + 0.5)`` of the part pixel nearest to the part's
    centroid (pixel centres averaged), so it lies on the part even when the
    part is not convex; ties go to the first pixel in row-major order. For a
    dataset with part masks but no keypoints (the generated creatures).

    Parameters
    ----------
    parts : (N, H, W) int tensor or array
        Part label of every pixel, ``0`` = background.
    n_parts : int, optional
        Number of part labels including the background; labels must be below it.

    Returns
    -------
    list of numpy.ndarray
        ``N`` float64 arrays ``(P_i, 3)`` = ``(x, y, part label)``, labels
        ascending; ``(0, 3)`` for an image without parts.

    Example
    -------
    >>> import numpy as np
    >>> L = np.zeros((1, 4, 4), dtype=np.int64)
    >>> L[0, :, 0] = L[0, 3, :3] = 1                       # an L: its centroid (1.0, 2.5) is off it
    >>> keypoints_from_parts(L)[0].tolist()
    [[0.5, 2.5, 1.0]]
    """
    p = _int_maps(parts, "parts")
    if p.size and p.min() < 0:
        raise ValueError(f"parts must hold non-negative labels (0 = background), got minimum {int(p.min())}")
    if n_parts is not None and p.size and p.max() >= n_parts:
        raise ValueError(f"parts holds label {int(p.max())} but n_parts={n_parts}; labels must lie in [0, n_parts)")
    out = []
    for img in p:
        ys, xs = np.nonzero(img > 0)
        if ys.size == 0:
            out.append(np.zeros((0, 3), dtype=np.float64))
            continue
        lab = img[ys, xs]
        cx, cy = xs + 0.5, ys + 0.5
        labels, inv, counts = np.unique(lab, return_inverse=True, return_counts=True)
        mx, my = np.bincount(inv, weights=cx) / counts, np.bincount(inv, weights=cy) / counts
        d2 = (cx - mx[inv]) ** 2 + (cy - my[inv]) ** 2
        order = np.lexsort((d2, inv))  # by part, then distance; stable: ties stay in row-major order
        first = order[np.r_[0, np.flatnonzero(np.diff(inv[order])) + 1]]
        out.append(np.column_stack([cx[first], cy[first], lab[first]]).astype(np.float64))
    return out


def labels_at_keypoints(label_maps: Any, keypoints: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """The label of a map under every keypoint, and the keypoint's part.

    Parameters
    ----------
    label_maps : (N, H, W) int tensor or array
        A label per pixel at image size (e.g. a concept map upsampled to the image).
    keypoints : list of (P_i, 3) arrays
        ``(x, y, part label)`` per image (see the module docstring).

    Returns
    -------
    concepts, parts : numpy.ndarray
        ``(sum_i P_i,)`` int64 each, images in order: the label of pixel
        ``(floor(y), floor(x))`` (clipped to the image) and the keypoint's part label.

    Example
    -------
    >>> import numpy as np
    >>> maps = np.array([[[0, 1], [2, 3]]])
    >>> labels_at_keypoints(maps, [np.array([[1.7, 0.2, 4], [0.5, 9.0, 5]])])
    (array([1, 2]), array([4, 5]))
    """
    m = _int_maps(label_maps, "label_maps")
    n, H, W = m.shape
    kps = check_keypoints(keypoints, n)
    if not sum(len(k) for k in kps):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    img = np.concatenate([np.full(len(k), i, dtype=np.int64) for i, k in enumerate(kps)])
    k = np.concatenate(kps)
    r = np.clip(np.floor(k[:, 1]), 0, H - 1).astype(np.int64)
    c = np.clip(np.floor(k[:, 0]), 0, W - 1).astype(np.int64)
    return m[img, r, c], k[:, 2].astype(np.int64)


@dataclasses.dataclass(frozen=True)
class KeypointScores:
    """How well a label map separates the parts, read at the keypoints.

    Attributes
    ----------
    nmi, ami, purity : float
        :func:`kmexplain_utils.evaluation.metrics.nmi`, :func:`~kmexplain_utils.evaluation.metrics.ami` and
        :func:`~kmexplain_utils.evaluation.metrics.purity` of the labels under the keypoints
        against the keypoints' parts (one sample per keypoint).
    n_keypoints : int
        Number of keypoints scored.
    contingency : numpy.ndarray
        ``(n_labels, n_parts)`` int64 counts: row = label ``0..max`` under the
        keypoint, column = part label ``0..max`` (column 0, the background, is zero).
    """

    nmi: float
    ami: float
    purity: float
    n_keypoints: int
    contingency: np.ndarray


def keypoint_scores(label_maps: Any, keypoints: Sequence[Any]) -> KeypointScores:
    """NMI, AMI and purity of a label map against the parts, at the keypoints.

    Unlike pixel scores against disc part maps, each keypoint is one sample:
    the label under it (:func:`labels_at_keypoints`) against its part.

    Parameters
    ----------
    label_maps : (N, H, W) int tensor or array
        Non-negative labels at image size (a concept map).
    keypoints : list of (P_i, 3) arrays
        ``(x, y, part label)`` per image.

    Returns
    -------
    KeypointScores

    Raises
    ------
    ValueError
        When there is no keypoint at all.

    Example
    -------
    >>> import numpy as np
    >>> maps = np.array([[[0, 0], [1, 1]]])
    >>> s = keypoint_scores(maps, [np.array([[0.5, 0.5, 1], [1.5, 0.5, 1], [0.5, 1.5, 2]])])
    >>> round(s.nmi, 6), s.purity, s.n_keypoints, s.contingency.tolist()
    (1.0, 1.0, 3, [[0, 2, 0], [0, 0, 1]])
    """
    c, p = labels_at_keypoints(label_maps, keypoints)
    if c.size == 0:
        raise ValueError(
            "No keypoint to score: every image's keypoint array is empty. Use a dataset with visible "
            "keypoints (ImageSet.has_keypoints) or make them from part maps with keypoints_from_parts."
        )
    if c.min() < 0:
        raise ValueError(f"label_maps must hold non-negative labels, got {int(c.min())} under a keypoint")
    n_lab, n_part = int(c.max()) + 1, int(p.max()) + 1
    table = np.bincount(c * n_part + p, minlength=n_lab * n_part).reshape(n_lab, n_part)
    return KeypointScores(nmi=nmi(c, p), ami=ami(c, p), purity=purity(c, p), n_keypoints=int(c.size),
                          contingency=table)


# --------------------------------------------------------------------------
# prototypes: peaks, boxes, consistency
# --------------------------------------------------------------------------
def peak_locations(maps: Any, image_size: Any, geometry: GridGeometry | None = None) -> np.ndarray:
    """Where each activation map peaks on the image, after upsampling it to the image.

    Each map is resampled to the image with
    :func:`kmexplain_utils.resample.resample_map` (bilinear at the grid's
    registered coordinates: position ``(i, j)`` sits on pixel
    ``(s_r i + o_r, s_c j + o_c)``), and the arg-max pixel (the first one in
    row-major order on ties) is returned as its centre: pixel ``(r, c)`` gives
    ``(x, y) = (c + 0.5, r + 0.5)``, the keypoints' convention. EvalProtoPNet
    upsamples with a bicubic resize instead. Before the first registered
    centre the border value is kept, so a map peaking on the first row (or
    column) of a grid with a positive offset peaks on a plateau whose first
    pixel, the image's border, is returned.

    Parameters
    ----------
    maps : (N, M, h, w) float tensor or array
        ``M`` activation maps per image on a grid (e.g. :func:`class_prototype_maps`).
    image_size : int or (int, int)
        ``(H, W)`` of the image.
    geometry : GridGeometry, optional
        Where the grid's positions sit (``LevelFeatures.grid_geometry_``);
        default :func:`kmexplain_utils.resample.infer_geometry` (stride
        ``H / h``, offset 0), so maps already at image size are not resampled.

    Returns
    -------
    numpy.ndarray
        ``(N, M, 2)`` float64 ``(x, y)`` of each map's peak.

    Example
    -------
    >>> import torch
    >>> from kmexplain_utils.resample import GridGeometry
    >>> m = torch.zeros(1, 1, 3, 3)
    >>> m[0, 0, 1, 2] = 1.0                                  # row 1, column 2 of a stride-4 grid
    >>> peak_locations(m, 12, GridGeometry.registered(4, 1)).tolist()  # pixel (4 * 1 + 1, 4 * 2 + 1)
    [[[9.5, 5.5]]]
    """
    t = maps if isinstance(maps, torch.Tensor) else torch.as_tensor(_numpy(maps, "maps"))
    if t.ndim != 4:
        raise ValueError(f"maps must have shape (N, M, h, w), got {tuple(t.shape)}; add missing axes with [:, None]")
    if not t.is_floating_point():
        t = t.to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError("maps hold NaN or inf: the peak is undefined; fill padded maps with a finite value")
    H, W = as_size(image_size, name="image_size")
    n, m, h, w = t.shape
    geo = infer_geometry((h, w), (H, W)) if geometry is None else geometry
    out = np.zeros((n, m, 2), dtype=np.float64)
    chunk = max(1, (1 << 24) // max(1, m * H * W))  # about 16 M upsampled values at a time
    for start in range(0, n, chunk):
        up = resample_map(t[start:start + chunk], geo, (H, W))
        flat = up.reshape(up.shape[0], m, H * W).argmax(dim=2).cpu().numpy()
        out[start:start + chunk, :, 0] = flat % W + 0.5
        out[start:start + chunk, :, 1] = flat // W + 0.5
    return out


def parts_in_boxes(
    peaks: Any, keypoints: Sequence[Any], n_parts: int, box_size: float, *, image_size: Any = None
) -> np.ndarray:
    """Which parts have a keypoint in the square box around each peak.

    The box of peak ``(x, y)`` is ``[x - b/2, x + b/2] x [y - b/2, y + b/2]``
    (``b = box_size``, edges included), clipped to the image when
    ``image_size`` is given (it is not shifted: a peak near the border gets a
    smaller box). EvalProtoPNet uses ``b = 72`` px on 224 px images. Part 0
    (background) is never counted.

    Parameters
    ----------
    peaks : (N, M, 2) float tensor or array
        ``(x, y)`` of ``M`` peaks per image (:func:`peak_locations`); a NaN peak boxes nothing.
    keypoints : list of (P_i, 3) arrays
        ``(x, y, part label)`` per image, labels in ``[1, n_parts)``.
    n_parts : int
        Number of part labels including the background.
    box_size : float
        Side of the box in pixels.
    image_size : int or (int, int), optional
        ``(H, W)``: clip the boxes to ``[0, W] x [0, H]``.

    Returns
    -------
    numpy.ndarray
        ``(N, M, n_parts)`` bool: ``[n, m, k]`` is True when a keypoint of part
        ``k`` of image ``n`` lies in the box of peak ``(n, m)``.

    Example
    -------
    >>> import numpy as np
    >>> kp = [np.array([[10.0, 10.0, 1], [30.0, 10.0, 2]])]
    >>> parts_in_boxes(np.array([[[12.0, 12.0], [40.0, 40.0]]]), kp, 3, 8).tolist()
    [[[False, True, False], [False, False, False]]]
    """
    pk = _numpy(peaks, "peaks").astype(np.float64)
    if pk.ndim != 3 or pk.shape[2] != 2:
        raise ValueError(f"peaks must have shape (N, M, 2) = (x, y) per map, got {pk.shape}")
    if int(n_parts) < 1:
        raise ValueError(f"n_parts must be >= 1 (background included), got {n_parts}")
    if not box_size > 0:
        raise ValueError(f"box_size must be a positive number of pixels, got {box_size}")
    n, m, _ = pk.shape
    kps = check_keypoints(keypoints, n, n_parts=int(n_parts))
    half = float(box_size) / 2
    x0, x1, y0, y1 = pk[..., 0] - half, pk[..., 0] + half, pk[..., 1] - half, pk[..., 1] + half
    if image_size is not None:
        H, W = as_size(image_size, name="image_size")
        x0, x1, y0, y1 = np.clip(x0, 0, W), np.clip(x1, 0, W), np.clip(y0, 0, H), np.clip(y1, 0, H)
    out = np.zeros((n, m, int(n_parts)), dtype=bool)
    for i, k in enumerate(kps):
        if not len(k):
            continue
        kx, ky = k[None, :, 0], k[None, :, 1]
        inside = (kx >= x0[i][:, None]) & (kx <= x1[i][:, None]) & (ky >= y0[i][:, None]) & (ky <= y1[i][:, None])
        onehot = np.zeros((len(k), int(n_parts)))
        onehot[np.arange(len(k)), k[:, 2].astype(np.int64)] = 1.0
        out[i] = inside.astype(np.float64) @ onehot > 0
    out[..., 0] = False
    return out


@dataclasses.dataclass(frozen=True)
class PartConsistency:
    """EvalProtoPNet's part consistency of prototypes.

    Attributes
    ----------
    score : float
        Share of the prototypes (with at least one valid image) that are
        consistent; NaN when no prototype has a valid image.
    frequency : numpy.ndarray
        ``(M, n_parts)`` float64: share of a prototype's valid images whose box
        holds part ``k`` (column 0, the background, is 0); NaN rows for
        prototypes without valid images.
    consistent : numpy.ndarray
        ``(M,)`` bool: ``max_k frequency >= threshold`` (False without valid images).
    n_images : numpy.ndarray
        ``(M,)`` int64 number of valid images of each prototype.
    hits : numpy.ndarray
        ``(M, n_parts)`` int64: valid images whose box holds part ``k``.
    counted : numpy.ndarray
        ``(M, n_parts)`` int64: the denominator of ``frequency`` (``n_images``
        repeated, or the valid images where part ``k`` is visible).
    threshold : float
        The part threshold ``consistent`` was decided with.
    """

    score: float
    frequency: np.ndarray
    consistent: np.ndarray
    n_images: np.ndarray
    hits: np.ndarray
    counted: np.ndarray
    threshold: float

    @classmethod
    def combine(cls, results: Sequence[PartConsistency]) -> PartConsistency:
        """The consistency over the union of disjoint image sets, from their counts.

        Counts add up, so measuring a large test set in chunks and combining
        gives exactly the result of one call on all its images.

        Example
        -------
        >>> import numpy as np
        >>> in_box = np.zeros((4, 1, 2), dtype=bool)
        >>> in_box[:3, 0, 1] = True
        >>> valid = np.ones((4, 1), dtype=bool)
        >>> whole = part_consistency(in_box, valid, 0.7)
        >>> halves = PartConsistency.combine([part_consistency(in_box[:2], valid[:2], 0.7),
        ...                                   part_consistency(in_box[2:], valid[2:], 0.7)])
        >>> halves.frequency.tolist() == whole.frequency.tolist(), halves.score
        (True, 1.0)
        """
        results = list(results)
        if not results:
            raise ValueError("combine needs at least one PartConsistency")
        if len({r.hits.shape for r in results}) != 1 or len({r.threshold for r in results}) != 1:
            raise ValueError("combine needs results over the same prototypes and parts, with the same threshold")
        hits = sum(r.hits for r in results)
        n_images = sum(r.n_images for r in results)
        counted = sum(r.counted for r in results)
        return _consistency(hits, n_images, results[0].threshold, counted)


def _consistency(hits: np.ndarray, n_images: np.ndarray, threshold: float,
                 denom: np.ndarray | None = None) -> PartConsistency:
    """From counts: ``hits (M, K)`` boxes holding part k, ``n_images (M,)``, optional ``denom (M, K)``."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must lie in (0, 1], got {threshold}")
    has = n_images > 0
    d = n_images[:, None] if denom is None else denom
    with np.errstate(invalid="ignore", divide="ignore"):
        freq = np.where(d > 0, hits / np.where(d > 0, d, 1), 0.0)  # no visible image: 0, as EvalProtoPNet
    freq = np.where(has[:, None], freq, np.nan)
    best = np.where(has, np.nan_to_num(freq, nan=-np.inf).max(axis=1, initial=-np.inf), -np.inf)
    consistent = has & (best >= threshold)
    score = float(consistent[has].mean()) if has.any() else float("nan")
    counted = np.broadcast_to(d, hits.shape).astype(np.int64)
    return PartConsistency(score=score, frequency=freq.astype(np.float64), consistent=consistent,
                           n_images=n_images.astype(np.int64), hits=hits.astype(np.int64), counted=counted,
                           threshold=float(threshold))


def part_consistency(in_box: Any, valid: Any, threshold: float = 0.8, *, visible: Any = None) -> PartConsistency:
    """EvalProtoPNet's consistency: does a prototype box the same part on the images of its class?

    For each prototype ``m``, over the images ``n`` with ``valid[n, m]`` (the
    test images of the prototype's class), ``frequency[m, k]`` is the share of
    them whose box holds part ``k``; an image where part ``k`` is not visible
    counts as not holding it. The prototype is consistent when
    ``max_k frequency[m, k] >= threshold``; ``score`` is the share of consistent
    prototypes among those with at least one valid image (the others are
    flagged by ``n_images == 0`` and NaN frequencies).

    Parameters
    ----------
    in_box : (N, M, n_parts) bool array or tensor
        :func:`parts_in_boxes`.
    valid : (N, M) bool array or tensor
        Which (image, prototype) pairs count (the ``mask`` of :func:`class_prototype_maps`).
    threshold : float, default 0.8
        EvalProtoPNet's part threshold.
    visible : (N, n_parts) bool array or tensor, optional
        Which parts are visible in each image. With it, ``frequency[m, k]``
        divides by the valid images where part ``k`` is visible (EvalProtoPNet's
        code; 0 when there is none) instead of all valid images.

    Returns
    -------
    PartConsistency

    Example
    -------
    >>> import numpy as np
    >>> in_box = np.zeros((5, 2, 3), dtype=bool)
    >>> in_box[:4, 0, 1] = True                            # prototype 0 boxes part 1 on 4 of 5 images
    >>> in_box[::2, 1, 2] = True                           # prototype 1 boxes part 2 on 3 of 5
    >>> r = part_consistency(in_box, np.ones((5, 2), dtype=bool))
    >>> r.frequency[:, 1:].tolist(), r.consistent.tolist(), r.score
    ([[0.8, 0.0], [0.0, 0.6]], [True, False], 0.5)
    """
    ib = _bool_array(in_box, "in_box", 3, "(N, M, n_parts)")
    v = _bool_array(valid, "valid", 2, "(N, M)")
    if v.shape != ib.shape[:2]:
        raise ValueError(f"valid must have shape (N, M) = {ib.shape[:2]} to match in_box {ib.shape}, got {v.shape}")
    hits = (ib & v[:, :, None]).sum(axis=0)
    denom = None
    if visible is not None:
        vis = _bool_array(visible, "visible", 2, "(N, n_parts)")
        if vis.shape != (ib.shape[0], ib.shape[2]):
            raise ValueError(f"visible must have shape (N, n_parts) = {(ib.shape[0], ib.shape[2])}, got {vis.shape}")
        if (ib & ~vis[:, None, :]).any():
            raise ValueError("in_box marks a part that visible says is not visible in that image; "
                             "compute both from the same keypoints")
        denom = (v[:, :, None] & vis[:, None, :]).sum(axis=0)
    return _consistency(hits, v.sum(axis=0), threshold, denom)


def _class_table(class_index: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``(C, K_max)`` int64 global prototype indices of each class, ``-1`` padded."""
    ci = class_index.cpu().to(torch.int64)
    counts = torch.bincount(ci, minlength=n_classes)
    table = torch.full((n_classes, int(counts.max()) if ci.numel() else 0), -1, dtype=torch.int64)
    order = torch.argsort(ci, stable=True)
    start = torch.cumsum(counts, 0) - counts
    slot = torch.arange(ci.numel()) - start[ci[order]]
    table[ci[order], slot] = order
    return table


def class_prototype_maps(
    position_features: torch.Tensor, classifier: KMeansClassifier, labels: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Score maps of each image's own-class prototypes (EvalProtoPNet's prototype activations).

    The map of prototype ``mu`` is its per-position score ``2 mu . a - ||mu||^2``
    (:func:`kmexplain_utils.scores.prototype_scores`). Classes can have fewer
    prototypes than others: the slots are padded up to the largest class.

    Parameters
    ----------
    position_features : (N, D, h, w) float tensor
        Position vectors of the level the classifier was fitted on.
    classifier : KMeansClassifier
        Fitted.
    labels : (N,) labels
        Class label of each image, of the kind given to ``fit`` (mapped with
        :meth:`KMeansClassifier.class_columns <kmexplain_utils.classifier.KMeansClassifier.class_columns>`).

    Returns
    -------
    maps : torch.Tensor
        ``(N, K_max, h, w)`` score maps on ``position_features``' device (0 in padded slots).
    mask : torch.Tensor
        ``(N, K_max)`` bool (CPU): which slots hold a real prototype.
    index : torch.Tensor
        ``(N, K_max)`` int64 (CPU): row of ``classifier.prototypes_`` of each slot, ``-1`` for padding.

    Example
    -------
    >>> import torch
    >>> from kmexplain_utils.classifier import KMeansClassifier
    >>> Z = torch.tensor([[0.0, 0.0], [0.0, 1.0], [5.0, 5.0], [6.0, 5.0]])
    >>> clf = KMeansClassifier(2, device="cpu").fit(Z, ["a", "a", "b", "b"])
    >>> maps, mask, index = class_prototype_maps(torch.rand(3, 2, 4, 4), clf, ["b", "a", "b"])
    >>> tuple(maps.shape), mask.all().item(), sorted(index[0].tolist())
    ((3, 2, 4, 4), True, [2, 3])
    """
    if not isinstance(position_features, torch.Tensor) or position_features.ndim != 4:
        shape = getattr(position_features, "shape", type(position_features).__name__)
        raise ValueError(f"position_features must be a tensor (N, D, h, w), got {shape}")
    check_is_fitted(classifier, ["prototypes_", "prototype_class_index_"])
    n = position_features.shape[0]
    cols = classifier.class_columns(labels, n=n).cpu()
    index = _class_table(classifier.prototype_class_index_, len(classifier.classes_))[cols]
    mask = index >= 0
    protos = classifier.prototypes_
    mu = protos[index.clamp(min=0).to(protos.device)].to(position_features.device)  # (N, K_max, D)
    h, w = position_features.shape[-2:]
    slots = [prototype_scores(position_features, mu[:, k], paired=True) for k in range(index.shape[1])]
    maps = torch.stack(slots, 1) if slots else position_features.new_zeros(n, 0, h, w)
    maps = maps.masked_fill(~mask[:, :, None, None].to(maps.device), 0)
    return maps, mask, index


def prototype_consistency(
    position_features: torch.Tensor,
    classifier: KMeansClassifier,
    labels: Any,
    keypoints: Sequence[Any],
    n_parts: int,
    *,
    image_size: Any,
    geometry: GridGeometry | None = None,
    box_size: float | None = None,
    threshold: float = 0.8,
    denominator: Literal["valid", "visible"] = "valid",
    peaks: Literal["max", "random"] = "max",
    random_state: int | torch.Generator | None = None,
    batch_size: int = 64,
) -> PartConsistency:
    """EvalProtoPNet's consistency of every prototype of a k-means classifier.

    For each image (a test image), the score maps of the prototypes of its
    class (:func:`class_prototype_maps`) are upsampled to the image, their
    peaks found (:func:`peak_locations`), the parts boxed around them counted
    (:func:`parts_in_boxes`) and accumulated per prototype, in batches of
    ``batch_size`` images; then :func:`part_consistency`'s rule.

    Parameters
    ----------
    position_features : (N, D, h, w) float tensor
        Position vectors of the test images.
    classifier : KMeansClassifier
        Fitted on pooled vectors of the same level.
    labels : (N,) labels
        True class of each image (labels of the kind given to ``fit``).
    keypoints : list of (P_i, 3) arrays
        ``(x, y, part label)`` per image, in pixels of ``image_size``.
    n_parts : int
        Number of part labels including the background (``len(part_names)``).
    image_size : int or (int, int)
        ``(H, W)`` of the images.
    geometry : GridGeometry, optional
        Where the grid's positions sit; default stride ``H / h``, offset 0.
    box_size : float, optional
        Side of the box; default ``round(72 / 224 * min(H, W))`` (EvalProtoPNet's 72 px at 224 px).
    threshold : float, default 0.8
        Part threshold.
    denominator : {"valid", "visible"}, default "valid"
        Divide a part's count by all the images of the class, or by those where
        the part is visible (EvalProtoPNet's code; see :func:`part_consistency`).
    peaks : {"max", "random"}, default "max"
        ``"max"``: the box is centred on each map's peak (the measurement).
        ``"random"``: on a pixel drawn uniformly from the image for every
        (image, prototype), whatever the maps say: the chance level of the
        consistency for these keypoints and this box size.
    random_state : int, torch.Generator or None
        Seed of the random peaks, by the package's rule (an int seeds a new
        generator, a generator is used as is, ``None`` is fresh randomness);
        unused with ``peaks="max"``.
    batch_size : int, default 64
        Images per batch.

    Returns
    -------
    PartConsistency
        Over all ``P`` rows of ``classifier.prototypes_``.

    Example
    -------
    >>> import numpy as np, torch
    >>> from kmexplain_utils.classifier import KMeansClassifier
    >>> clf = KMeansClassifier(1, device="cpu").fit(torch.eye(2), [0, 1])
    >>> A = torch.zeros(2, 2, 4, 4)
    >>> A[0, 0, 1, 1] = A[1, 1, 2, 3] = 1.0                # each image holds its prototype once
    >>> kp = [np.array([[12.0, 12.0, 1]]), np.array([[28.0, 20.0, 2]])]
    >>> r = prototype_consistency(A, clf, [0, 1], kp, 3, image_size=32)
    >>> r.consistent.tolist(), r.score
    ([True, True], 1.0)
    """
    if not isinstance(position_features, torch.Tensor) or position_features.ndim != 4:
        shape = getattr(position_features, "shape", type(position_features).__name__)
        raise ValueError(f"position_features must be a tensor (N, D, h, w), got {shape}")
    if denominator not in ("valid", "visible"):
        raise ValueError(f"denominator must be 'valid' or 'visible', got {denominator!r}")
    if peaks not in ("max", "random"):
        raise ValueError(f"peaks must be 'max' (the maps' peaks) or 'random' (the chance level), got {peaks!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    check_is_fitted(classifier, ["prototypes_", "prototype_class_index_"])
    gen = as_generator(random_state) if peaks == "random" else None
    n = position_features.shape[0]
    lab = labels if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if lab.ndim != 1 or lab.shape[0] != n:
        raise ValueError(f"labels must have shape (N,) = ({n},), one class label per image; got {tuple(lab.shape)}")
    H, W = as_size(image_size, name="image_size")
    kps = check_keypoints(keypoints, n, n_parts=int(n_parts))
    box = max(1, round(_BOX_FRACTION * min(H, W))) if box_size is None else box_size
    P = int(classifier.prototypes_.shape[0])
    hits = np.zeros((P, int(n_parts)), dtype=np.int64)
    n_img = np.zeros(P, dtype=np.int64)
    vis = _visible(kps, int(n_parts))
    seen = np.zeros((P, int(n_parts)), dtype=np.int64)
    with torch.no_grad():
        for start in range(0, n, int(batch_size)):
            sl = slice(start, start + int(batch_size))
            maps, mask, index = class_prototype_maps(position_features[sl], classifier, lab[sl])
            if gen is None:
                centres = peak_locations(maps, (H, W), geometry)
            else:  # pixel centres drawn uniformly, one per (image, slot)
                pix = torch.randint(0, H * W, maps.shape[:2], generator=gen).numpy()
                centres = np.stack([pix % W + 0.5, pix // W + 0.5], axis=-1).astype(np.float64)
            in_box = parts_in_boxes(centres, kps[sl], int(n_parts), box, image_size=(H, W))
            m = mask.numpy()
            rows, imgs = index.numpy()[m], np.nonzero(m)[0]
            np.add.at(hits, rows, in_box[m])
            np.add.at(n_img, rows, 1)
            np.add.at(seen, rows, vis[sl][imgs])
    return _consistency(hits, n_img, threshold, seen if denominator == "visible" else None)
