"""Hamerly's distance bounds for exact accelerated Lloyd iterations.

Nothing here is public API; :class:`kmexplain_utils.kmeans.KMeans` uses it
when ``algorithm="hamerly"`` (the default on the CPU).

Hamerly's algorithm (Hamerly, 2010) keeps two numbers per point ``x_i``
assigned to centroid ``a(i)``:

- ``u_i >= ||x_i - c_a(i)||``, an upper bound on the distance to its centroid;
- ``l_i <= min_{j != a(i)} ||x_i - c_j||``, a lower bound on the distance to
  every other centroid;

and one number per centroid, ``s_j = 1/2 min_{j' != j} ||c_j - c_j'||``. If
``u_i <= max(s_a(i), l_i)`` no other centroid can be nearer (triangle
inequality), so the point keeps its label without any distance computation.
When the centroids move by ``p_j = ||c_j^new - c_j^old||`` the bounds stay
valid after ``u_i += p_a(i)`` and ``l_i -= max_{j != a(i)} p_j``.

The algorithm skips only computations whose result is certain, provided the
bounds are true bounds despite float rounding. Every bound computed here therefore carries a
rigorous rounding margin: the matrix-product form
``||x||^2 - 2 x.c + ||c||^2`` in a float type with unit roundoff ``eps``
differs from the exact value by at most ``(d + 2) eps (||x||^2 + ||c||^2)``
(the classical bound for a dot product of length ``d``), and bf16 factors add
``2 eps_bf16`` of that scale (as do TF32 or bf16 products allowed by
``torch.set_float32_matmul_precision``). A point whose nearest and second-nearest
centroids are closer than the margin is never skipped: it gets the full
distance computation, exactly as in Lloyd.

A skipped point keeps the *exactly* nearest centroid. Plain Lloyd in float32
decides a near-tie (two distances equal to about ``1e-7`` relative) by the
rounding of its products, which depends on how the products are blocked, so
it can pick the other one; the two fits then go on from slightly different
centroids (measured on 30,000 x 256 float32 points, k = 32: the first of
such flips after 18 iterations, then slightly different local optima with
inertias within 1e-5). With float64 data, or away from such ties, the
labels, centroids and iteration counts are the same.
"""

from __future__ import annotations

import torch

__all__ = ["bounds_from_partial", "center_shifts", "half_separation", "product_error_factor"]


def product_error_factor(n_features: int, dtype: torch.dtype, low_dtype: torch.dtype | None = None) -> float:
    """Relative error bound ``gamma`` of a squared distance by the matrix-product form.

    ``|computed - exact| <= gamma * (||x||^2 + ||c||^2)``.

    Parameters
    ----------
    n_features : int
        Length ``d`` of the dot products.
    dtype : torch.dtype
        Accumulation dtype of the products (float32 or float64).
    low_dtype : torch.dtype or None
        Dtype the factors are rounded to before the product (bf16/fp16), if any.
    """
    eps = torch.finfo(dtype).eps / 2  # unit roundoff
    gamma = (int(n_features) + 2) * eps
    if low_dtype is not None:
        gamma += 2.0 * torch.finfo(low_dtype).eps
    elif dtype == torch.float32:
        # torch.set_float32_matmul_precision("high" / "medium") lets float32 products run
        # in TF32 (10-bit mantissa) or bf16 on hardware that has them: widen the margin
        reduced = {"high": 2.0**-10, "medium": torch.finfo(torch.bfloat16).eps}
        gamma += 2.0 * reduced.get(torch.get_float32_matmul_precision(), 0.0)
    # a factor 3 of slack: the additions of the norms, the float32 row norms ||x||^2
    # (themselves within (d + 1) eps) and the square root
    return 3.0 * gamma


def half_separation(C: torch.Tensor) -> torch.Tensor:
    """``s_j``: half the distance from each centroid to its nearest other centroid.

    Parameters
    ----------
    C : torch.Tensor
        ``(k, d)`` centroids.

    Returns
    -------
    torch.Tensor
        ``(k,)`` float64, a guaranteed lower bound of the exact value (``inf``
        when ``k == 1``).
    """
    k, d = C.shape
    if k == 1:
        return torch.full((1,), float("inf"), dtype=torch.float64, device=C.device)
    C64 = C.to(torch.float64)
    sq = (C64 * C64).sum(1)
    scale = sq.unsqueeze(0) + sq.unsqueeze(1)
    d2 = torch.addmm(scale, C64, C64.t(), alpha=-2.0)
    d2.sub_(scale * product_error_factor(d, torch.float64)).clamp_min_(0.0)
    d2.fill_diagonal_(float("inf"))
    return d2.min(1).values.sqrt_().mul_(0.5)


def center_shifts(C_old: torch.Tensor, C_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How far each centroid moved, and the largest move of the *other* centroids.

    Parameters
    ----------
    C_old, C_new : torch.Tensor
        ``(k, d)`` centroids before and after an update.

    Returns
    -------
    shift : torch.Tensor
        ``(k,)`` float64, ``||c_j^new - c_j^old||`` rounded up.
    other_max : torch.Tensor
        ``(k,)`` float64, ``max_{j' != j} shift_j'`` (0 when ``k == 1``).
    """
    diff = C_new.to(torch.float64) - C_old.to(torch.float64)
    shift = diff.mul_(diff).sum(1).sqrt_().mul_(1.0 + 1e-12)
    k = shift.shape[0]
    if k == 1:
        return shift, torch.zeros_like(shift)
    top = torch.topk(shift, 2)
    other = torch.full_like(shift, float(top.values[0]))
    other[top.indices[0]] = top.values[1]
    return shift, other


def bounds_from_partial(
    v1: torch.Tensor, v2: torch.Tensor, x_sq: torch.Tensor, margin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Upper and lower bounds from the two smallest partial distances of rows.

    Parameters
    ----------
    v1, v2 : torch.Tensor
        ``(b,)`` smallest and second-smallest ``||c||^2 - 2 x.c`` of each row.
    x_sq : torch.Tensor
        ``(b,)`` float64 squared norms of the rows.
    margin : torch.Tensor
        ``(b,)`` float64 rounding margin, ``gamma * (||x||^2 + max_j ||c_j||^2)``.

    Returns
    -------
    upper, lower : torch.Tensor
        ``(b,)`` float64: ``u >= ||x - c_a||`` and ``l <= min_{j != a} ||x - c_j||``.
    """
    upper = (v1.to(torch.float64) + x_sq + margin).clamp_min_(0.0).sqrt_()
    lower = (v2.to(torch.float64) + x_sq - margin).clamp_min_(0.0).sqrt_()
    return upper, lower
