"""Measure where a feature-map position looks: exact receptive-field centres.

The reference for :func:`kmexplain_utils.architectures.registration`, which
*derives* each block's stride and offset from the layers: this module
*measures* them. On noise, in float64, one position's activations are
back-propagated to the input; the support of the input gradient (the pixels
with a non-zero gradient) is the theoretical receptive field, and its midpoint
is the position's centre (``../shared/NOTES.md``; a gradient-*weighted*
centroid would instead follow the weights and the content, and be pulled
inwards near the border).

Two precautions make the support exact:

- global pooling inside the encoder (squeeze-and-excitation) would make every
  pixel reach every position; the outputs of ``AdaptiveAvgPool2d(1)`` modules
  are detached during the probe, so only local paths carry gradient;
- a max-pooling window passes gradient to its arg-max only; in the probe copy
  every ``nn.MaxPool2d`` becomes an ``nn.AvgPool2d`` of the same geometry
  (``avg_pool_for_max=True``), so no pixel of the field is missed.

Rows and columns are measured separately on thin images (``(thin, long)`` for
columns, ``(long, thin)`` for rows), long enough that the field of the middle
position is not clipped by the border; this is far cheaper than a square image
of the field's size.

Example
-------
>>> import torchvision
>>> from kmexplain_utils.receptive_field import receptive_field_centres
>>> m = torchvision.models.resnet18(weights=None)
>>> c = receptive_field_centres(m, blocks=["B2"])
>>> c["B2"].index, c["B2"].centre, c["B2"].stride * c["B2"].index[1]   # measured, then s * i
((16, 16), (128.0, 128.0), 128.0)
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import torch
from torch import nn

from .architectures import Adapter, adapt, registration

__all__ = ["MeasuredCentre", "receptive_field_centres"]


@dataclasses.dataclass(frozen=True)
class MeasuredCentre:
    """The measured receptive field of one block position.

    Attributes
    ----------
    block : str
        Block name.
    index : tuple of int
        ``(row, column)`` of the position on its grid (for the axis measured;
        the other index is that of the thin image's grid).
    centre : tuple of float or None
        Measured centre ``(row, column)`` in pixels; ``None`` for an axis not measured.
    extent : tuple of tuple or None
        ``((first, last) rows, (first, last) columns)`` of the gradient support.
    stride : float
        The block's stride (rows), from its grid, for reference.
    """

    block: str
    index: tuple[int, int]
    centre: tuple[float | None, float | None]
    extent: tuple[tuple[int, int] | None, tuple[int, int] | None]
    stride: float


def _probe_copy(model: nn.Module, avg_pool_for_max: bool) -> nn.Module:
    probe = copy.deepcopy(model).double().eval()
    if avg_pool_for_max:
        for name, m in list(probe.named_modules()):
            for cname, child in list(m.named_children()):
                if isinstance(child, nn.MaxPool2d):
                    d = child.dilation if isinstance(child.dilation, int) else max(child.dilation)
                    if d != 1:
                        continue
                    setattr(m, cname, nn.AvgPool2d(child.kernel_size, child.stride, child.padding,
                                                   ceil_mode=child.ceil_mode, count_include_pad=True))
    return probe


def _support(grad: torch.Tensor, dim: int) -> tuple[int, int]:
    other = [d for d in range(grad.ndim) if d != dim]
    nz = torch.nonzero(grad.abs().sum(other) > 0).flatten()
    if nz.numel() == 0:
        raise RuntimeError("the input gradient is zero everywhere: the position does not depend on the image")
    return int(nz[0]), int(nz[-1])


def receptive_field_centres(
    model: nn.Module,
    blocks: Any = None,
    *,
    adapter: Adapter | None = None,
    length: int | None = None,
    thin: int | None = None,
    avg_pool_for_max: bool = True,
    seed: int = 0,
    axes: tuple[int, ...] = (0, 1),
) -> dict[str, MeasuredCentre]:
    """Measure the receptive-field centre of the middle position of each block, in pixels.

    Parameters
    ----------
    model : nn.Module
        A CNN that :func:`kmexplain_utils.architectures.adapt` reads. It is not
        modified (a float64 copy is probed).
    blocks : sequence of str, optional
        Which blocks (default: all of the adapter's).
    adapter : Adapter, optional
        A pre-computed :func:`~kmexplain_utils.architectures.adapt` result
        (e.g. with user-given ``blocks``).
    length : int, optional
        Long side of the thin probe images; default: the largest theoretical
        receptive field plus four strides, rounded up to a multiple of B4's
        stride.
    thin : int, optional
        Short side; default: twice B4's stride (at least 96 pixels).
    avg_pool_for_max : bool
        Replace max-pooling by average pooling in the probe copy (see the
        module docstring).
    seed : int
        Seed of the noise image and of the random weights of the channels.
    axes : tuple of int
        Which axes to measure: ``0`` rows, ``1`` columns (one probe each; the
        centre of an axis not measured is ``None``).

    Returns
    -------
    dict of str to MeasuredCentre
        For columns, ``centre[1]`` is measured on a ``(thin, length)`` image at
        position ``(0, W_b // 2)``; for rows, ``centre[0]`` on a
        ``(length, thin)`` image at ``(H_b // 2, 0)``; both are merged into
        one record with ``index = (H_b // 2, W_b // 2)`` of the long axis.

    Raises
    ------
    RuntimeError
        When the field is clipped by the border (pass a larger ``length``).
    """
    adapter = adapt(model, None) if adapter is None else adapter
    names = tuple(adapter.blocks) if blocks is None else tuple(blocks)
    reg = registration(model, 256, adapter)
    s4 = max(r.stride[0] for r in reg.values())
    rf = max(max(reg[b].receptive_field) for b in names)
    thin = int(thin or max(96, 2 * s4))
    length = int(length or math.ceil((rf + 4 * s4) / s4) * s4)
    probe = _probe_copy(model, avg_pool_for_max)
    detach_hooks = []
    for m in probe.modules():
        if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            detach_hooks.append(m.register_forward_hook(lambda _m, _i, out: out.detach()))
    probe_adapter = Adapter(adapter.family, adapter.head, dict(adapter.blocks), dict(adapter.post))
    modules = probe_adapter.modules(probe, names)
    g = torch.Generator().manual_seed(seed)
    results: dict[str, dict[str, Any]] = {b: {} for b in names}
    try:
        if not axes or any(a not in (0, 1) for a in axes):
            raise ValueError(f"axes must be a non-empty subset of (0, 1), got {axes!r}")
        for axis, size in ((1, (thin, length)), (0, (length, thin))):
            if axis not in axes:
                continue
            x = torch.rand(1, 3, *size, generator=g, dtype=torch.float64, requires_grad=True)
            store: dict[str, torch.Tensor] = {}
            handles = [m.register_forward_hook(lambda _m, _i, out, b=b: store.__setitem__(b, out))
                       for b, m in modules.items()]
            try:
                probe(x)
            finally:
                for h in handles:
                    h.remove()
            for b in names:
                out = store[b]
                post = probe_adapter.post.get(b)
                out = post(out) if post is not None else out
                H, W = out.shape[-2:]
                i = H // 2 if axis == 0 else 0
                j = W // 2 if axis == 1 else 0
                pos = out[0, :, :, j] if axis == 1 else out[0, :, i, :]  # (D, thin-grid)
                r = torch.randn(pos.shape, generator=g, dtype=torch.float64)
                (grad,) = torch.autograd.grad((pos * r).sum(), x, retain_graph=True)
                lo, hi = _support(grad[0], 2 if axis == 1 else 1)
                if lo == 0 or hi == size[axis] - 1:
                    raise RuntimeError(
                        f"the receptive field of {b}'s middle position is clipped by the border "
                        f"(support {lo}..{hi} of {size[axis]} px): pass a larger length="
                    )
                results[b][axis] = ((lo + hi) / 2, (lo, hi), i if axis == 0 else j, float(size[axis] / (W if axis == 1 else H)))
    finally:
        for h in detach_hooks:
            h.remove()
    out_: dict[str, MeasuredCentre] = {}
    for b in names:
        row, col = results[b].get(0), results[b].get(1)
        out_[b] = MeasuredCentre(
            block=b,
            index=(row[2] if row else 0, col[2] if col else 0),
            centre=(row[0] if row else None, col[0] if col else None),
            extent=(row[1] if row else None, col[1] if col else None),
            stride=reg[b].stride[0],
        )
    return out_
