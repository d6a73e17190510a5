"""Showing prototypes by real data, and measuring how representative they are.

A prototype or concept is shown by its nearest real training images
(:func:`nearest_images`) or nearest real patches (:func:`nearest_patches`,
with :func:`patch_box` giving the pixel box of a feature-map cell).
:func:`prototype_representativeness` measures how far a prototype lies from
the data (METHOD 1): distance to the nearest embedding, relative to the
typical nearest-neighbour distance among embeddings; for the linear head's
rows ``w_c`` also after the best rescaling ``s * w_c`` (their norm is
arbitrary).

Example
-------
>>> import torch
>>> from kmexplain_utils.prototypes import nearest_images, prototype_representativeness
>>> Z = torch.randn(100, 8, generator=torch.Generator().manual_seed(0))
>>> nearest_images(Z[:2], Z, k=3)[:, 0].tolist()
[0, 1]
>>> r = prototype_representativeness(Z[:3], Z)
>>> r.distance.tolist()
[0.0, 0.0, 0.0]
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np
import torch

from ._validation import as_float_tensor, check_tensor
from .features import PositionSample
from .resample import as_size, infer_geometry, position_box

__all__ = [
    "nearest_images",
    "NearestPatches",
    "nearest_patches",
    "patch_box",
    "Representativeness",
    "prototype_representativeness",
    "best_rescaling",
    "highest_scoring_images",
    "prototype_members",
    "attribute_shares",
]


def _matrix(x: Any, name: str, shape_doc: str = "(N, D)") -> torch.Tensor:
    if not isinstance(x, (torch.Tensor, np.ndarray)):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array of shape {shape_doc}, got {type(x).__name__}")
    t = as_float_tensor(x, name=name)
    if t.ndim != 2:
        raise ValueError(f"{name} must have shape {shape_doc}, got shape {tuple(t.shape)}")
    return t


def _sq_dist(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Squared distances ``(a, b)`` by the matrix-product form, clamped at 0."""
    return ((A * A).sum(1)[:, None] - 2 * A @ B.T + (B * B).sum(1)[None, :]).clamp_min_(0)


def nearest_images(
    queries: Any, Z: Any, k: int = 5, *, return_distances: bool = False, chunk_size: int = 8192
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Indices of the ``k`` embeddings nearest to each query (Euclidean).

    Parameters
    ----------
    queries : torch.Tensor
        ``(Q, D)`` prototypes or concept centroids (``(D,)`` for one).
    Z : torch.Tensor
        ``(N, D)`` training embeddings.
    k : int
        Neighbours per query (at most ``N``).
    return_distances : bool
        Also return the distances ``(Q, k)``.
    chunk_size : int
        Rows of ``Z`` per distance block (memory bound).

    Returns
    -------
    torch.Tensor
        ``(Q, k)`` int64 indices into ``Z``, nearest first, on ``Z``'s device.
    """
    Zt = _matrix(Z, "Z")
    if isinstance(queries, (torch.Tensor, np.ndarray)) and queries.ndim == 1:
        queries = queries[None]
    q = _matrix(queries, "queries", "(Q, D)")
    if q.shape[1] != Zt.shape[1]:
        raise ValueError(f"queries have D = {q.shape[1]} but Z has D = {Zt.shape[1]}; shapes (Q, D) and (N, D)")
    if not 1 <= int(k):
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(int(k), Zt.shape[0])
    dtype = torch.promote_types(q.dtype, Zt.dtype)
    q = q.to(device=Zt.device, dtype=dtype)
    best_d = torch.full((q.shape[0], 0), 0.0, dtype=dtype, device=Zt.device)
    best_i = torch.zeros((q.shape[0], 0), dtype=torch.int64, device=Zt.device)
    for s in range(0, Zt.shape[0], chunk_size):
        d = _sq_dist(q, Zt[s : s + chunk_size].to(dtype))
        idx = torch.arange(s, s + d.shape[1], device=Zt.device).expand_as(d)
        cat_d, cat_i = torch.cat([best_d, d], 1), torch.cat([best_i, idx], 1)
        kk = min(k, cat_d.shape[1])
        best_d, pos = cat_d.topk(kk, dim=1, largest=False, sorted=True)
        best_i = cat_i.gather(1, pos)
    if not return_distances:
        return best_i
    # exact distances of the chosen neighbours (the matrix-product form loses
    # precision for near-identical vectors)
    exact = (q[:, None, :] - Zt[best_i].to(dtype)).norm(dim=-1)
    return best_i, exact


@dataclasses.dataclass
class NearestPatches:
    """The real patches nearest to a query vector.

    Attributes
    ----------
    image_index : torch.Tensor
        ``(k,)`` int64 image of each patch.
    yx : torch.Tensor
        ``(k, 2)`` int64 grid cell (row, column) of each patch.
    distance : torch.Tensor
        ``(k,)`` Euclidean distance to the query.
    position : torch.Tensor
        ``(k,)`` int64 row in the :class:`PositionSample`.
    grid : tuple of int
        ``(H_S, W_S)``.
    image_size : tuple of int
        ``(H, W)``.
    """

    image_index: torch.Tensor
    yx: torch.Tensor
    distance: torch.Tensor
    position: torch.Tensor
    grid: tuple[int, int]
    image_size: tuple[int, int]
    geometry: Any = None

    def boxes(self, context: float = 1.0) -> torch.Tensor:
        """Pixel boxes ``(k, 4)`` (top, left, bottom, right) of the patches, see :func:`patch_box`."""
        return patch_box(self.yx, self.grid, self.image_size, context=context, geometry=self.geometry)


def nearest_patches(
    query: torch.Tensor, sample: PositionSample, k: int = 5, *, one_per_image: bool = True
) -> NearestPatches:
    """The ``k`` sampled positions nearest to ``query`` (a prototype or concept centroid).

    Parameters
    ----------
    query : torch.Tensor
        ``(D,)`` vector in the level's position space.
    sample : PositionSample
        Sampled training positions (:func:`kmexplain_utils.features.sample_positions`).
    k : int
        Number of patches.
    one_per_image : bool
        At most one patch per image (the closest), for more varied examples.

    Returns
    -------
    NearestPatches
    """
    if not isinstance(sample, PositionSample):
        raise TypeError(f"sample must be a PositionSample, got {type(sample).__name__}")
    check_tensor(query, 1, name="query", shape_doc="(D,)")
    V = sample.vectors
    if query.shape[0] != V.shape[1]:
        raise ValueError(f"query has D = {query.shape[0]} but the sampled positions have D = {V.shape[1]}")
    qv = query.to(device=V.device, dtype=V.dtype)
    order = _sq_dist(qv[None], V)[0].argsort(stable=True)
    if one_per_image:
        imgs = sample.image_index.to(order.device)[order].cpu().numpy()
        _, first = np.unique(imgs, return_index=True)
        order = order[torch.as_tensor(np.sort(first), device=order.device)]
    order = order[: int(k)]
    d = (V[order] - qv).norm(dim=1)
    return NearestPatches(
        image_index=sample.image_index[order.cpu()],
        yx=sample.yx[order.cpu()],
        distance=d,
        position=order,
        grid=tuple(sample.grid),  # type: ignore[arg-type]
        image_size=tuple(sample.image_size),  # type: ignore[arg-type]
        geometry=sample.geometry,
    )


def patch_box(yx: Any, grid: Any, image_size: Any, *, context: float = 1.0,
              geometry: Any = None) -> torch.Tensor:
    """Pixel box of a feature-grid position: ``(top, left, bottom, right)``, bottom/right exclusive.

    The box is one stride wide, centred on the position's registered centre
    ``s i + o`` (:func:`kmexplain_utils.resample.position_box`); ``context``
    scales it about that centre (clipped to the image). The receptive field
    is larger.

    Parameters
    ----------
    yx : array-like
        ``(2,)`` or ``(M, 2)`` grid positions (row, column).
    grid : int or (int, int)
        ``(H_S, W_S)``.
    image_size : int or (int, int)
        ``(H, W)`` in pixels.
    context : float
        Box scale factor (>= 1 enlarges).
    geometry : GridGeometry, optional
        The grid's geometry; default stride ``H / H_S``, offset 0.

    Returns
    -------
    torch.Tensor
        ``(4,)`` or ``(M, 4)`` int64.

    Example
    -------
    >>> patch_box((0, 6), 7, 224).tolist()
    [0, 176, 16, 208]
    """
    t = torch.as_tensor(yx).long()
    if t.numel() and t.shape[-1] != 2:
        raise ValueError(f"yx must have shape (2,) or (M, 2), got {tuple(t.shape)}")
    gh, gw = as_size(grid, name="grid")
    tt = t.reshape(-1, 2)
    if tt.numel() and ((tt[:, 0] < 0).any() or (tt[:, 0] >= gh).any() or (tt[:, 1] < 0).any() or (tt[:, 1] >= gw).any()):
        raise ValueError(f"grid cells must lie in [0, {gh}) x [0, {gw}), got {tt.tolist()}")
    geo = infer_geometry((gh, gw), image_size) if geometry is None else geometry
    return position_box(t, geo, image_size, context=context)


def best_rescaling(prototypes: Any, Z: Any, *, chunk_size: int = 8192) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``min_{s > 0, i} ||s w - z_i||`` for every prototype ``w``, in closed form.

    For a fixed embedding ``z_i`` the best scale is ``s_i = w . z_i / ||w||^2``
    and the distance is ``sqrt(||z_i||^2 - (w . z_i)^2 / ||w||^2)`` (the
    distance from ``z_i`` to the ray through ``w``). When ``w . z_i <= 0`` the
    infimum is approached as ``s -> 0`` and equals ``||z_i||`` (reported with
    ``s = 0``). The minimum over ``i`` is then exact.

    Returns
    -------
    distance : torch.Tensor
        ``(P,)`` best distance.
    scale : torch.Tensor
        ``(P,)`` the scale ``s`` that reaches it.
    index : torch.Tensor
        ``(P,)`` int64 nearest embedding after rescaling.
    """
    W = _matrix(prototypes, "prototypes", "(P, D)")
    Zt = _matrix(Z, "Z")
    dtype = torch.promote_types(W.dtype, Zt.dtype)
    W = W.to(device=Zt.device, dtype=dtype)
    wn2 = (W * W).sum(1)
    if (wn2 == 0).any():
        raise ValueError("a prototype is the zero vector: it has no direction to rescale")
    best_d2 = torch.full((W.shape[0],), torch.inf, dtype=dtype, device=Zt.device)
    best_s = torch.zeros_like(best_d2)
    best_i = torch.zeros(W.shape[0], dtype=torch.int64, device=Zt.device)
    for s0 in range(0, Zt.shape[0], chunk_size):
        Zc = Zt[s0 : s0 + chunk_size].to(dtype)
        dot = W @ Zc.T  # (P, n)
        zn2 = (Zc * Zc).sum(1)[None, :]
        pos = dot > 0
        d2 = torch.where(pos, (zn2 - dot * dot / wn2[:, None]).clamp_min(0), zn2.expand_as(dot))
        scale = torch.where(pos, dot / wn2[:, None], torch.zeros_like(dot))
        m, j = d2.min(1)
        better = m < best_d2
        best_d2 = torch.where(better, m, best_d2)
        best_s = torch.where(better, scale.gather(1, j[:, None])[:, 0], best_s)
        best_i = torch.where(better, j + s0, best_i)
    exact = (best_s[:, None] * W - Zt[best_i].to(dtype)).norm(dim=1)
    return exact, best_s, best_i


def _nn_distances(Z: torch.Tensor, chunk_size: int) -> torch.Tensor:
    n = Z.shape[0]
    out = torch.empty(n, dtype=Z.dtype, device=Z.device)
    for s in range(0, n, chunk_size):
        d2 = _sq_dist(Z[s : s + chunk_size], Z)
        rows = torch.arange(d2.shape[0], device=Z.device)
        d2[rows, rows + s] = torch.inf  # exclude the point itself
        j = d2.min(1).indices
        out[s : s + d2.shape[0]] = (Z[s : s + d2.shape[0]] - Z[j]).norm(dim=1)  # exact
    return out


@dataclasses.dataclass
class Representativeness:
    """How far prototypes lie from the data (see :func:`prototype_representativeness`).

    Attributes
    ----------
    distance : torch.Tensor
        ``(P,)`` distance of each prototype to its nearest embedding.
    nearest_index : torch.Tensor
        ``(P,)`` int64 index of that embedding.
    nn_median : float
        Median over embeddings of the distance to their nearest other embedding.
    ratio : torch.Tensor
        ``(P,)`` ``distance / nn_median`` (about 1 or less: as close to the data
        as data points are to each other; much more: far from the data).
    rescaled_distance, rescaled_ratio, scale, rescaled_index : torch.Tensor or None
        The same after the best rescaling ``s * prototype`` (``rescale=True``).
        ``scale == 0`` means no positive rescaling helps (the prototype makes
        an obtuse angle with every embedding); the distance is then that of
        the embedding nearest to the origin, the same for every such prototype.
    """

    distance: torch.Tensor
    nearest_index: torch.Tensor
    nn_median: float
    ratio: torch.Tensor
    rescaled_distance: torch.Tensor | None = None
    rescaled_ratio: torch.Tensor | None = None
    scale: torch.Tensor | None = None
    rescaled_index: torch.Tensor | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain lists and floats (for tables)."""
        return {
            f.name: (v.tolist() if isinstance(v, torch.Tensor) else v)
            for f in dataclasses.fields(self)
            for v in [getattr(self, f.name)]
        }


def prototype_representativeness(
    prototypes: Any, Z: Any, *, rescale: bool = False, chunk_size: int = 4096
) -> Representativeness:
    """Distance of each prototype to the nearest embedding, relative to nearest-neighbour distances.

    Parameters
    ----------
    prototypes : torch.Tensor
        ``(P, D)`` linear-head rows ``w_c`` or k-means centroids.
    Z : torch.Tensor
        ``(N, D)`` training embeddings (``N >= 2``).
    rescale : bool
        Also report the best rescaling ``min_{s>0} min_i ||s w - z_i||``
        (closed form, see :func:`best_rescaling`): meaningful for linear
        prototypes, whose norm is arbitrary.
    chunk_size : int
        Rows per distance block.

    Returns
    -------
    Representativeness
    """
    W = _matrix(prototypes, "prototypes", "(P, D)")
    Zt = _matrix(Z, "Z")
    if W.shape[1] != Zt.shape[1]:
        raise ValueError(f"prototypes have D = {W.shape[1]} but Z has D = {Zt.shape[1]}; shapes (P, D) and (N, D)")
    if Zt.shape[0] < 2:
        raise ValueError(f"Z needs at least 2 embeddings to define nearest-neighbour distances, got {Zt.shape[0]}")
    idx, dist = nearest_images(W, Zt, k=1, return_distances=True, chunk_size=chunk_size)  # type: ignore[misc]
    nn = _nn_distances(Zt, chunk_size)
    med = float(torch.quantile(nn, 0.5))  # the usual median (mean of the two middle values)
    if med == 0:
        warnings.warn("the median nearest-neighbour distance is 0 (duplicate embeddings): ratios are infinite",
                      stacklevel=2)
    denom = med if med > 0 else float("nan")
    out = Representativeness(distance=dist[:, 0], nearest_index=idx[:, 0], nn_median=med, ratio=dist[:, 0] / denom)
    if rescale:
        d, s, i = best_rescaling(W, Zt, chunk_size=chunk_size)
        out.rescaled_distance, out.scale, out.rescaled_index = d, s, i
        out.rescaled_ratio = d / denom
    return out


def highest_scoring_images(W: Any, Z: Any, k: int = 5, *, bias: Any = None) -> torch.Tensor:
    """Indices of the ``k`` embeddings with the highest score ``w . z (+ b)`` for every row ``w``.

    A linear-head row is a *direction*: it ranks images by ``w . z`` but has no location among
    them, so "the images nearest to it" is not its fair picture; the images it scores highest are.

    Parameters
    ----------
    W : torch.Tensor
        ``(P, D)`` rows (``(D,)`` for one).
    Z : torch.Tensor
        ``(N, D)`` embeddings.
    k : int
        Images per row (at most ``N``).
    bias : torch.Tensor, optional
        ``(P,)`` biases (they change no ranking; accepted for symmetry with the head).

    Returns
    -------
    torch.Tensor
        ``(P, k)`` int64 indices into ``Z``, highest score first, on ``Z``'s device.

    Examples
    --------
    >>> import torch
    >>> Z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    >>> highest_scoring_images(torch.tensor([[1.0, 0.0]]), Z, k=2).tolist()
    [[2, 0]]
    """
    Zt = _matrix(Z, "Z")
    if isinstance(W, (torch.Tensor, np.ndarray)) and W.ndim == 1:
        W = W[None]
    Wt = _matrix(W, "W", "(P, D)").to(device=Zt.device, dtype=Zt.dtype)
    if Wt.shape[1] != Zt.shape[1]:
        raise ValueError(f"W has D = {Wt.shape[1]} but Z has D = {Zt.shape[1]}; shapes (P, D) and (N, D)")
    scores = Wt @ Zt.T  # (P, N)
    if bias is not None:
        scores = scores + torch.as_tensor(bias, dtype=Zt.dtype, device=Zt.device).reshape(-1, 1)
    return scores.topk(min(int(k), Zt.shape[0]), dim=1).indices


def prototype_members(Z: Any, labels: Any, prototypes: Any, prototype_labels: Any) -> torch.Tensor:
    """For each embedding, the nearest prototype *of its own class* (its k-means cluster).

    Parameters
    ----------
    Z : torch.Tensor
        ``(N, D)`` embeddings.
    labels : (N,) int tensor or array
        Their classes.
    prototypes : torch.Tensor
        ``(P, D)`` prototypes (e.g. ``KMeansClassifier.prototypes_``).
    prototype_labels : (P,) int tensor or array
        The class of each prototype (``KMeansClassifier.prototype_labels_``).

    Returns
    -------
    torch.Tensor
        ``(N,)`` int64 prototype index, on ``Z``'s device.

    Raises
    ------
    ValueError
        When an embedding's class has no prototype.

    Examples
    --------
    >>> import torch
    >>> Z = torch.tensor([[0.0], [1.0], [9.0]])
    >>> prototype_members(Z, [0, 0, 0], torch.tensor([[0.0], [10.0], [1.0]]), [0, 0, 1]).tolist()
    [0, 0, 1]
    """
    Zt = _matrix(Z, "Z")
    mu = _matrix(prototypes, "prototypes", "(P, D)").to(device=Zt.device, dtype=Zt.dtype)
    y = torch.as_tensor(np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)).to(Zt.device)
    py = torch.as_tensor(
        np.asarray(prototype_labels.cpu() if isinstance(prototype_labels, torch.Tensor) else prototype_labels)
    ).to(Zt.device)
    if y.shape != (Zt.shape[0],) or py.shape != (mu.shape[0],):
        raise ValueError(f"labels must be ({Zt.shape[0]},) and prototype_labels ({mu.shape[0]},); "
                         f"got {tuple(y.shape)} and {tuple(py.shape)}")
    missing = sorted(set(y.tolist()) - set(py.tolist()))
    if missing:
        raise ValueError(f"classes {missing} have no prototype")
    d2 = _sq_dist(Zt, mu)
    d2 = torch.where(y[:, None] == py[None, :], d2, torch.full_like(d2, torch.inf))
    return d2.argmin(1)


def attribute_shares(members: Any, values: Any, n_prototypes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Share of each value of a categorical attribute among the members of every prototype.

    Parameters
    ----------
    members : (N,) int tensor or array
        Prototype index of each image (:func:`prototype_members`).
    values : (N,) array
        The attribute of each image (e.g. ``dataset.attributes["facing"]``).
    n_prototypes : int
        Number of prototypes ``P``.

    Returns
    -------
    shares : numpy.ndarray
        ``(P, V)`` fraction of each prototype's members with each value (rows of empty
        prototypes are NaN).
    categories : numpy.ndarray
        ``(V,)`` the values, sorted.
    counts : numpy.ndarray
        ``(P,)`` members per prototype.

    Examples
    --------
    >>> shares, cats, counts = attribute_shares([0, 0, 1, 1], ["l", "r", "r", "r"], 2)
    >>> cats.tolist(), shares.tolist(), counts.tolist()
    (['l', 'r'], [[0.5, 0.5], [0.0, 1.0]], [2, 2])
    """
    m = np.asarray(members.cpu() if isinstance(members, torch.Tensor) else members).astype(np.int64)
    v = np.asarray(values)
    if m.shape != v.shape or m.ndim != 1:
        raise ValueError(f"members and values must both have shape (N,), got {m.shape} and {v.shape}")
    categories, codes = np.unique(v, return_inverse=True)
    table = np.zeros((int(n_prototypes), len(categories)))
    np.add.at(table, (m, codes), 1.0)
    counts = table.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = table / counts[:, None]
    return shares, categories, counts.astype(np.int64)
