"""The prototype score ``2 mu . a - ||mu||^2``: one formula, one function (METHOD 2, 4, 5).

For a prototype (or concept centroid) ``mu`` and a vector ``a``,
``||a - mu||^2 = ||a||^2 - (2 mu . a - ||mu||^2)``: the score ranks prototypes
exactly as negative squared distances do, and it is *affine* in ``a``, so the
score of a spatial mean is the spatial mean of the per-position scores. The
k-means classifier (pooled embeddings), the attribution maps (per position)
and the concept maps (every centroid at every position) all call
:func:`prototype_scores`.

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

import torch

__all__ = ["prototype_scores"]


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
