"""One place that resamples feature-map grids: maps, label maps and patch boxes.

A grid's :class:`GridGeometry` says where its positions sit on the image:
position ``(i, j)`` is centred on pixel ``(s_r * i + o_r, s_c * j + o_c)``
(see :func:`kmexplain_utils.architectures.registration`). Every resampling in
the package goes through this module, so that what is drawn is what is scored:

- :func:`resample_map` -- real-valued maps, bilinear interpolation *at the
  registered coordinates* (beyond the first and last centres the border value
  is kept);
- :func:`resample_labels` -- integer maps: each output point takes the label of
  the registered position nearest to it;
- :func:`position_box` -- the pixel box of a position (centred on its registered
  centre, one stride wide, optionally enlarged).

The *cell* convention of the first edition -- position ``i`` of a stride-``s``
grid centred on the middle of the image cell ``[s i, s (i + 1))``, i.e.
``o = (s - 1) / 2``, which is what bilinear resizing with
``align_corners=False`` and nearest upsampling assume -- is the geometry
:meth:`GridGeometry.cell`. It is kept as an option (``registration="cell"``)
so that the book can show its effect; for symmetric padding it is off by
``(s - 1) / 2`` pixels.

Example
-------
>>> import torch
>>> from kmexplain_utils.resample import GridGeometry, resample_map
>>> m = torch.tensor([[[0.0, 4.0]]])             # (N=1, h=1, w=2), stride 4, offset 0
>>> resample_map(m, GridGeometry.registered(4), (1, 8))[0, 0].tolist()
[0.0, 1.0, 2.0, 3.0, 4.0, 4.0, 4.0, 4.0]
>>> resample_map(m, GridGeometry.cell(4), (1, 8))[0, 0].tolist()
[0.0, 0.0, 0.5, 1.5, 2.5, 3.5, 4.0, 4.0]
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

import torch

from ._validation import as_size

__all__ = [
    "GridGeometry",
    "PIXELS",
    "as_size",
    "infer_geometry",
    "resample_map",
    "resample_matrices",
    "resample_labels",
    "position_box",
]


@dataclasses.dataclass(frozen=True)
class GridGeometry:
    """Where the positions of a grid sit on the image (pixel = stride * index + offset).

    Attributes
    ----------
    stride : tuple of float
        ``(s_rows, s_cols)`` in pixels.
    offset : tuple of float
        ``(o_rows, o_cols)`` in pixels.
    """

    stride: tuple[float, float]
    offset: tuple[float, float] = (0.0, 0.0)

    @classmethod
    def registered(cls, stride: Any, offset: Any = 0.0) -> "GridGeometry":
        """From a stride and an offset (numbers or ``(rows, cols)`` pairs)."""
        s = (float(stride), float(stride)) if isinstance(stride, numbers.Real) else tuple(float(v) for v in stride)
        o = (float(offset), float(offset)) if isinstance(offset, numbers.Real) else tuple(float(v) for v in offset)
        if len(s) != 2 or len(o) != 2 or min(s) <= 0:
            raise ValueError(f"stride must be positive and stride/offset scalars or pairs, got {stride!r}, {offset!r}")
        return cls(s, o)  # type: ignore[arg-type]

    @classmethod
    def cell(cls, stride: Any) -> "GridGeometry":
        """The first edition's convention: centred on the middle of each stride-wide cell."""
        g = cls.registered(stride)
        return cls(g.stride, ((g.stride[0] - 1) / 2, (g.stride[1] - 1) / 2))

    @classmethod
    def from_registration(cls, reg: Any, convention: str = "exact") -> "GridGeometry":
        """From a :class:`~kmexplain_utils.architectures.BlockRegistration`; ``convention="cell"`` drops its offset."""
        if convention == "exact":
            return cls.registered(reg.stride, reg.offset)
        if convention == "cell":
            return cls.cell(reg.stride)
        raise ValueError(f"registration must be 'exact' or 'cell', got {convention!r}")

    def centres(self, grid: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel centres ``(rows (h,), cols (w,))`` of a grid of size ``grid``, float64."""
        h, w = as_size(grid, name="grid")
        return (self.stride[0] * torch.arange(h, dtype=torch.float64) + self.offset[0],
                self.stride[1] * torch.arange(w, dtype=torch.float64) + self.offset[1])

    def index_of(self, pixels: torch.Tensor, axis: int) -> torch.Tensor:
        """Fractional grid index of pixel coordinates along ``axis`` (0 rows, 1 columns)."""
        return (pixels - self.offset[axis]) / self.stride[axis]


#: The image's own pixels: stride 1, offset 0.
PIXELS = GridGeometry((1.0, 1.0), (0.0, 0.0))


def infer_geometry(grid: Any, image_size: Any) -> GridGeometry:
    """Registered geometry of a grid when only its size is known: stride = image / grid, offset 0.

    Exact for networks with symmetric padding (torchvision's ResNets, DenseNet's
    dense blocks aside, MobileNet, EfficientNet, RegNet ...) at image sizes that
    are multiples of the stride; pass the real geometry
    (:func:`kmexplain_utils.architectures.registration`) otherwise.
    """
    h, w = as_size(grid, name="grid")
    H, W = as_size(image_size, name="image_size")
    return GridGeometry((H / h, W / w), (0.0, 0.0))


def _interp_matrix(n_src: int, coords: torch.Tensor) -> torch.Tensor:
    """``(n_dst, n_src)`` bilinear weights at fractional source indices ``coords``, border kept."""
    u = coords.clamp(0, n_src - 1)
    i0 = u.floor().long().clamp(0, n_src - 1)
    i1 = (i0 + 1).clamp(max=n_src - 1)
    f = u - i0.to(u.dtype)
    M = torch.zeros(coords.shape[0], n_src, dtype=torch.float64)
    rows = torch.arange(coords.shape[0])
    M.index_put_((rows, i0), 1 - f, accumulate=True)
    M.index_put_((rows, i1), f, accumulate=True)
    return M


def _targets(size: Any, target: GridGeometry | None) -> tuple[tuple[int, int], GridGeometry]:
    return as_size(size), (PIXELS if target is None else target)


def resample_map(
    maps: torch.Tensor, geometry: GridGeometry, size: Any, *, target: GridGeometry | None = None
) -> torch.Tensor:
    """Bilinear resampling of real-valued grid maps at registered coordinates.

    Parameters
    ----------
    maps : torch.Tensor
        ``(..., h, w)`` maps on a grid with ``geometry`` (e.g. ``(N, h, w)``
        attribution maps or ``(N, D, h, w)`` feature maps).
    geometry : GridGeometry
        Where the source positions sit on the image.
    size : int or (int, int)
        Output grid size ``(H, W)``.
    target : GridGeometry, optional
        Where the output positions sit (default :data:`PIXELS`: the image).

    Returns
    -------
    torch.Tensor
        ``(..., H, W)``, same dtype and device as ``maps``. Each output value
        is the bilinear interpolation of the two-by-two source positions around
        its centre; outside the first and last source centres the border value
        is kept.
    """
    if not isinstance(maps, torch.Tensor) or maps.ndim < 2:
        raise ValueError(f"maps must be a tensor (..., h, w), got {getattr(maps, 'shape', type(maps).__name__)}")
    (H, W) = as_size(size)
    h, w = maps.shape[-2:]
    My, Mx = resample_matrices(geometry, (h, w), size, target=target)
    My, Mx = My.to(device=maps.device, dtype=maps.dtype), Mx.to(device=maps.device, dtype=maps.dtype)
    if (H, W) == (h, w) and torch.equal(My, torch.eye(h, dtype=My.dtype, device=My.device)) and \
            torch.equal(Mx, torch.eye(w, dtype=Mx.dtype, device=Mx.device)):
        return maps
    return torch.einsum("Hh,...hw,Ww->...HW", My, maps, Mx)


def resample_matrices(
    geometry: GridGeometry, grid: Any, size: Any, *, target: GridGeometry | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two bilinear weight matrices of :func:`resample_map`: ``out = My @ map @ Mx.T``.

    Resampling is separable and linear, so quantities of a resampled map can be
    computed from the small source map (its mean is ``u @ map @ v`` with ``u, v``
    the column means of ``My, Mx``; one output position is ``My[i] @ map @ Mx[j]``).

    Parameters
    ----------
    geometry : GridGeometry
        Where the source positions sit on the image.
    grid : int or (int, int)
        Source grid size ``(h, w)``.
    size : int or (int, int)
        Output grid size ``(H, W)``.
    target : GridGeometry, optional
        Where the output positions sit (default: the image's pixels).

    Returns
    -------
    My, Mx : torch.Tensor
        ``(H, h)`` and ``(W, w)`` float64 on the CPU; each row sums to 1.

    Example
    -------
    >>> My, Mx = resample_matrices(GridGeometry.registered(4), (1, 2), (1, 8))
    >>> Mx[:, 1].tolist()
    [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0]
    """
    (H, W), tgt = _targets(size, target)
    h, w = as_size(grid, name="grid")
    ty, tx = tgt.centres((H, W))
    return _interp_matrix(h, geometry.index_of(ty, 0)), _interp_matrix(w, geometry.index_of(tx, 1))


def resample_labels(
    labels: torch.Tensor, geometry: GridGeometry, size: Any, *, target: GridGeometry | None = None
) -> torch.Tensor:
    """Resample integer maps: each output point takes the label of the nearest registered position.

    Parameters
    ----------
    labels : torch.Tensor
        ``(..., h, w)`` integer (or bool) maps on a grid with ``geometry``.
    geometry : GridGeometry
        Where the source positions sit on the image.
    size : int or (int, int)
        Output size ``(H, W)``.
    target : GridGeometry, optional
        Where the output points sit (default: the image's pixels).

    Returns
    -------
    torch.Tensor
        ``(..., H, W)``, same dtype and device. A point exactly half-way
        between two centres takes the later one.
    """
    if not isinstance(labels, torch.Tensor) or labels.ndim < 2:
        raise ValueError(f"labels must be a tensor (..., h, w), got {getattr(labels, 'shape', type(labels).__name__)}")
    (H, W), tgt = _targets(size, target)
    h, w = labels.shape[-2:]
    ty, tx = tgt.centres((H, W))
    iy = (geometry.index_of(ty, 0) + 0.5).floor().long().clamp(0, h - 1).to(labels.device)
    ix = (geometry.index_of(tx, 1) + 0.5).floor().long().clamp(0, w - 1).to(labels.device)
    return labels.index_select(-2, iy).index_select(-1, ix)


def position_box(yx: Any, geometry: GridGeometry, image_size: Any, *, context: float = 1.0) -> torch.Tensor:
    """Pixel box ``(top, left, bottom, right)`` (bottom/right exclusive) of grid positions.

    The box is centred on the position's registered centre and is one stride
    wide (times ``context``), clipped to the image. It shows where the
    position looks; its receptive field is larger.

    Parameters
    ----------
    yx : array-like
        ``(2,)`` or ``(M, 2)`` grid positions (row, column).
    geometry : GridGeometry
        The grid's geometry.
    image_size : int or (int, int)
        ``(H, W)``.
    context : float
        Box scale (>= 1 enlarges).

    Returns
    -------
    torch.Tensor
        ``(4,)`` or ``(M, 4)`` int64.

    Example
    -------
    >>> position_box((0, 6), GridGeometry.registered(32), 224).tolist()
    [0, 176, 16, 208]
    """
    t = torch.as_tensor(yx).long()
    single = t.ndim == 1
    t = t.reshape(-1, 2)
    if not context > 0:
        raise ValueError(f"context must be positive, got {context}")
    H, W = as_size(image_size, name="image_size")
    cy = geometry.stride[0] * t[:, 0].double() + geometry.offset[0]
    cx = geometry.stride[1] * t[:, 1].double() + geometry.offset[1]
    hh, hw = 0.5 * geometry.stride[0] * context, 0.5 * geometry.stride[1] * context
    # pixel r covers [r - 0.5, r + 0.5): the box [c - hh, c + hh] in those coordinates
    top = (cy - hh + 0.5).round().clamp(0, H).long()
    bottom = (cy + hh + 0.5).round().clamp(0, H).long()
    left = (cx - hw + 0.5).round().clamp(0, W).long()
    right = (cx + hw + 0.5).round().clamp(0, W).long()
    box = torch.stack([top, left, torch.maximum(bottom, top + 1).clamp(max=H), torch.maximum(right, left + 1).clamp(max=W)], 1)
    return box[0] if single else box
