"""One place that knows architectures: the head, the blocks B1..B4 and their registration.

Every network the package explains is read through :func:`adapt`, which returns
an :class:`Adapter`:

- the **head**: global average pooling -> optional dropout -> one linear layer
  (:class:`kmexplain_utils.sem.GapHead`), checked numerically: the linear layer
  applied to the spatial mean of B4 must reproduce the model's logits;
- the **blocks** B1..B4 (METHOD 3b): the last feature map at each of the last
  four resolutions of the encoder. B4 is the map that is pooled, B3 the last map
  at twice B4's grid, B2 at four times, B1 at eight times. Known families get
  their stage names (ResNet ``layer1..4``, DenseNet's dense blocks, RegNet's
  ``trunk_output.block1..4`` ...); any other model is read by one forward pass
  that records where the resolution changes; ``blocks={"B1": "features.3", ...}``
  names them by hand.

**Registration.** Position ``i`` of a block with stride ``s`` is centred on
image pixel ``s * i + o`` (rows and columns separately). The pair ``(s, o)`` of
each block is *derived from the layers*: one forward pass runs under a
:class:`torch.overrides.TorchFunctionMode` that follows every tensor from the
image to the block and composes, for each convolution and pooling,
``s' = s * stride`` and ``o' = o + s * (dilation * (k - 1) / 2 - padding)``;
explicit padding (``F.pad``, TensorFlow-style "same" ports) shifts ``o`` by
``-s * pad_left``; element-wise operations, concatenations, normalisations and
activations keep it (and must agree where two branches meet). The image's own
pixels are ``s = 1, o = 0``. Symmetric padding (3x3/2 pad 1 convolutions, 1x1/2
shortcuts, ResNet's 7x7/2 stem and 3x3/2 max-pool) gives ``o = 0``.
:func:`registration` reports it; ``tests/test_registration.py`` measures it
against the exact receptive fields (:func:`kmexplain_utils.receptive_field.receptive_field_centres`).

Example
-------
>>> import torchvision
>>> from kmexplain_utils.architectures import registration
>>> reg = registration(torchvision.models.resnet18(weights=None), 224)
>>> {b: (r.grid_size, r.stride, r.offset) for b, r in reg.items()}["B4"]
((7, 7), (32.0, 32.0), (0.0, 0.0))
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ._torch import eval_mode
from .resample import as_size
from .sem import GapHead, UnsupportedModelError, find_gap_linear_head, find_network

__all__ = [
    "BlockRegistration",
    "Adapter",
    "RegistrationError",
    "adapt",
    "registration",
    "BLOCK_NAMES",
]

#: The four block names, finest first.
BLOCK_NAMES: tuple[str, ...] = ("B1", "B2", "B3", "B4")


class RegistrationError(RuntimeError):
    """The registration of a block could not be derived from the layers."""


@dataclasses.dataclass(frozen=True)
class BlockRegistration:
    """Where the positions of one block's feature map sit on the image.

    Position ``(i, j)`` is centred on pixel ``(stride[0] * i + offset[0],
    stride[1] * j + offset[1])`` (row, column), pixel ``r`` covering ``[r - 0.5,
    r + 0.5)``.

    Attributes
    ----------
    name : str
        Block name (``"B4"``).
    module : str
        Qualified name of the module whose output is the block.
    grid_size : tuple of int
        ``(H_b, W_b)`` at the image size asked for.
    stride : tuple of float
        ``(s_rows, s_cols)`` in pixels.
    offset : tuple of float
        ``(o_rows, o_cols)`` in pixels.
    channels : int
        ``D_b``.
    receptive_field : tuple of float
        Theoretical receptive-field size ``(rows, cols)`` in pixels.
    """

    name: str
    module: str
    grid_size: tuple[int, int]
    stride: tuple[float, float]
    offset: tuple[float, float]
    channels: int
    receptive_field: tuple[float, float]

    def centres(self, grid_size: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel centres ``(rows (H_b,), cols (W_b,))`` of the positions, float64."""
        h, w = self.grid_size if grid_size is None else grid_size
        rows = self.stride[0] * torch.arange(h, dtype=torch.float64) + self.offset[0]
        cols = self.stride[1] * torch.arange(w, dtype=torch.float64) + self.offset[1]
        return rows, cols


@dataclasses.dataclass(frozen=True)
class Adapter:
    """How the package reads one model: its family, head and blocks.

    Attributes
    ----------
    family : str
        ``"ResNet"``, ``"DenseNet"``, ``"EfficientNet"``, ``"MobileNetV2"``,
        ``"RegNet"``, ``"ShuffleNetV2"``, ``"GoogLeNet"``, ``"Inception3"``,
        ``"custom"`` ...
    head : GapHead
        Pooling, dropout and linear layer (``head.linear``).
    blocks : dict of str to str
        Block name -> qualified module name, finest first, ending with ``"B4"``.
    post : dict of str to callable
        Functions applied to a block's hooked output (DenseNet's final ReLU).
    """

    family: str
    head: GapHead
    blocks: dict[str, str]
    post: dict[str, Callable[[torch.Tensor], torch.Tensor]]

    def modules(self, model: nn.Module, names: Any = None) -> dict[str, nn.Module]:
        """The modules of blocks ``names`` (default: all), by block name."""
        names = tuple(self.blocks) if names is None else tuple(names)
        unknown = [b for b in names if b not in self.blocks]
        if unknown:
            raise ValueError(
                f"block(s) {unknown} are not defined for this {self.family} model; it has "
                f"{list(self.blocks)} ({', '.join(f'{b}={m}' for b, m in self.blocks.items())})."
            )
        return {b: model.get_submodule(self.blocks[b]) for b in names}


# ----------------------------------------------------------------- families
def _family_blocks(model: nn.Module) -> tuple[str, dict[str, str], dict[str, Callable]] | None:
    """Blocks of the torchvision families whose stage names are known (None: discover)."""
    from torchvision import models as tvm

    if isinstance(model, tvm.DenseNet):
        return "DenseNet", {
            "B1": "features.denseblock1", "B2": "features.denseblock2",
            "B3": "features.denseblock3", "B4": "features",
        }, {"B4": torch.relu}
    if isinstance(model, tvm.RegNet):
        return "RegNet", {f"B{i}": f"trunk_output.block{i}" for i in range(1, 5)}, {}
    if isinstance(model, tvm.ShuffleNetV2):
        return "ShuffleNetV2", {"B1": "maxpool", "B2": "stage2", "B3": "stage3", "B4": "conv5"}, {}
    if all(hasattr(model, f"layer{i}") for i in range(1, 5)) and hasattr(model, "fc"):
        return "ResNet", {f"B{i}": f"layer{i}" for i in range(1, 5)}, {}
    return None


def _module_name(model: nn.Module, module: nn.Module) -> str:
    for name, m in model.named_modules():
        if m is module:
            return name
    raise ValueError("the module is not part of the model")


def probe_input(model: nn.Module, size: int = 128) -> torch.Tensor:
    p = next(iter(model.parameters()), None)
    dev = p.device if p is not None else torch.device("cpu")
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, size, size, generator=g, dtype=dtype).to(dev)


def _traced_outputs(model: nn.Module, x: torch.Tensor) -> list[tuple[str, Any, tuple[int, ...]]]:
    """``(module name, registration, output shape)`` of every 4-D output, in the order modules finish."""
    mode = _RegistrationMode()
    order: list[tuple[str, Any, tuple[int, ...]]] = []
    handles = []
    for name, m in model.named_modules():
        if not name:
            continue

        def hook(_m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
            if isinstance(out, torch.Tensor) and out.ndim == 4:
                order.append((name, mode.lookup(out), tuple(out.shape)))

        handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            mode.seed(x)
            with mode:
                model(x)
    finally:
        for h in handles:
            h.remove()
    return order


def _discover_blocks(model: nn.Module, b4_module: str, x: torch.Tensor) -> dict[str, str]:
    """B3, B2, B1: the last module at half, a quarter and an eighth of B4's stride.

    Among the modules whose output has that stride (before B4 is computed),
    the outermost ones are kept (a stage, not a layer inside it) and the last
    of them to finish is the block.
    """
    order = _traced_outputs(model, x)
    ends = [i for i, (n, _, _) in enumerate(order) if n == b4_module]
    if not ends or not isinstance(order[ends[-1]][1], _Geo):
        raise UnsupportedModelError(
            f"module {b4_module!r} produced no feature map that could be traced to the image in a forward "
            "pass; name the blocks: blocks={'B1': ..., 'B4': ...}"
        )
    s4 = order[ends[-1]][1].sy
    blocks = {"B4": b4_module}
    for b, factor in (("B3", 2), ("B2", 4), ("B1", 8)):
        hits = [(n, n.count(".")) for n, g, _ in order[: ends[-1]]
                if isinstance(g, _Geo) and math.isclose(g.sy, s4 / factor)]
        if hits:
            depth = min(d for _, d in hits)
            blocks[b] = [n for n, d in hits if d == depth][-1]
    return {b: blocks[b] for b in BLOCK_NAMES if b in blocks}


def _resolve_head(model: nn.Module, head: Any, b4_module: str | None) -> GapHead:
    if head is None:
        return find_gap_linear_head(model)
    linear = model.get_submodule(head) if isinstance(head, str) else head
    if not isinstance(linear, nn.Linear):
        raise UnsupportedModelError(
            f"head={head!r} is a {type(linear).__name__}, not an nn.Linear; pass the name of the final "
            "linear layer (e.g. head='fc' or head='classifier.1')."
        )
    if b4_module is None:
        raise ValueError("with head= given, also give blocks= with at least 'B4' (the map that is pooled)")
    module = model.get_submodule(b4_module)
    return GapHead("custom", module, b4_module, None, "global average (checked numerically)", None, linear)


def _check_identity(model: nn.Module, adapter: Adapter, x: torch.Tensor) -> None:
    """The linear layer on the spatial mean of B4 must give the logits (else: what breaks it)."""
    store: dict[str, torch.Tensor] = {}
    module = model.get_submodule(adapter.blocks["B4"])
    post = adapter.post.get("B4")

    def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
        store["maps"] = post(out.clone()) if post is not None else out.clone()

    h = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        h.remove()
    maps = store.get("maps")
    lin = adapter.head.linear
    if maps is None or maps.ndim != 4:
        raise UnsupportedModelError(f"block B4 ({adapter.blocks['B4']}) gave no (N, D, H, W) map in a forward pass")
    if maps.shape[1] != lin.in_features:
        raise UnsupportedModelError(
            f"{type(model).__name__}: block B4 ({adapter.blocks['B4']}) has D = {maps.shape[1]} channels but the "
            f"linear layer expects {lin.in_features} inputs: something other than global average pooling "
            "(an MLP, a projection) sits between them, so the logits are not an average of per-position scores."
        )
    if not isinstance(logits, torch.Tensor):
        raise UnsupportedModelError(f"the model returned {type(logits).__name__}, not a logits tensor (N, C); "
                                    "put it in eval mode (GoogLeNet and Inception return auxiliary outputs in training)")
    with torch.no_grad():
        rebuilt = lin(maps.mean((2, 3)))
    err = float((rebuilt - logits).abs().max())
    scale = float(logits.abs().max()) + 1e-12
    if not err <= 1e-4 * max(scale, 1.0):
        raise UnsupportedModelError(
            f"{type(model).__name__}: the linear layer applied to the spatial mean of B4 "
            f"({adapter.blocks['B4']}) does not reproduce the logits (largest error {err:.3g}, logits up to "
            f"{scale:.3g}): a non-linear layer sits between the pooling and the linear layer, or B4 is not the map "
            "that is pooled. Required: encoder -> global average pooling -> (dropout) -> linear. If forward "
            "applies a function to B4's output before pooling (e.g. x = F.relu6(self.blocks(x)), as in "
            "EfficientNet-Lite ports), name it with the block: blocks={'B4': ('"
            f"{adapter.blocks['B4']}', torch.nn.functional.relu6), ...}}."
        )


def adapt(model: nn.Module, blocks: Any = None, head: Any = None) -> Adapter:
    """Read a CNN's head and blocks (METHOD 3b), checked by one forward pass.

    Parameters
    ----------
    model : nn.Module
        The classifier, or a module that holds it (a normalisation wrapper,
        ``nn.Sequential(normalize, net)``, ``nn.DataParallel(net)``: the
        network inside is found by :func:`kmexplain_utils.sem.find_network` and
        block names are qualified in ``model``). It is run once in eval mode on
        a small probe image (every module's mode is restored).
    blocks : dict, optional
        ``{"B1": "module.name", ..., "B4": "module.name"}`` (module names or
        node-style dotted names of ``model.named_modules()``); any subset that
        includes the blocks you will use. Default: the family's stages, or the
        last module at each of the last four resolutions. A block whose map is
        a function of a module's output applied in ``forward`` (no module
        outputs it) is given as a pair ``(module name, function)``, e.g.
        ``{"B4": ("blocks", torch.nn.functional.relu6)}`` for a network whose
        ``forward`` does ``x = F.relu6(self.blocks(x))`` before pooling (as
        DenseNet's final ReLU, which is known).
    head : str or nn.Linear, optional
        The final linear layer, for a model the families do not cover (then
        ``blocks`` must name ``"B4"``, the map that is pooled).

    Returns
    -------
    Adapter

    Raises
    ------
    UnsupportedModelError
        When the model does not end in global average pooling -> (dropout) ->
        linear (VGG, AlexNet, MobileNetV3's MLP, ConvNeXt's LayerNorm ...); the
        message names what breaks the identity.
    ValueError
        For a block name that does not exist (the message lists candidates).

    Example
    -------
    >>> import torchvision
    >>> a = adapt(torchvision.models.densenet121(weights=None))
    >>> a.family, a.blocks["B1"], a.blocks["B4"]
    ('DenseNet', 'features.denseblock1', 'features')
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    user_blocks, user_post = _check_block_names(model, blocks)
    gap = _resolve_head(model, head, (user_blocks or {}).get("B4"))
    post: dict[str, Callable] = {}
    known = None
    if head is None:
        prefix, net = find_network(model)
        known = _family_blocks(net)
        if known is not None and prefix:
            known = (known[0], {b: f"{prefix}.{m}" for b, m in known[1].items()}, known[2])
    if known is not None:
        family, names, post = known
    else:
        family = gap.architecture if head is None else "custom"
        names = {}
    b4 = (user_blocks or {}).get("B4") or names.get("B4") or gap.feature_module_name
    if "B4" not in names and gap.post is not None:
        post = {"B4": gap.post}
    if user_blocks and "B4" in user_blocks and user_blocks["B4"] != names.get("B4", gap.feature_module_name):
        post.pop("B4", None)  # a family's function belongs to its own B4 module, not to one named by hand
    post = {**post, **user_post}
    x = probe_input(model)
    with eval_mode(model):
        if not names:
            names = _discover_blocks(model, b4, x)
        names = {**names, **(user_blocks or {})}
        names["B4"] = b4
        ordered = {b: names[b] for b in BLOCK_NAMES if b in names}
        adapter = Adapter(family, gap, ordered, post)
        _check_identity(model, adapter, x)
    return adapter


def _check_block_names(model: nn.Module, blocks: Any) -> tuple[dict[str, str] | None, dict[str, Callable]]:
    """Qualified module names of the blocks named by hand, and the functions given with them."""
    if blocks is None:
        return None, {}
    if not isinstance(blocks, Mapping):
        raise TypeError(
            "blocks must be a dict {'B1': 'module.name', ..., 'B4': 'module.name'}, got "
            f"{type(blocks).__name__}"
        )
    names = dict(model.named_modules())
    out = {}
    post: dict[str, Callable] = {}
    for b, m in blocks.items():
        if b not in BLOCK_NAMES:
            raise ValueError(f"block names are {list(BLOCK_NAMES)}, got {b!r}")
        if isinstance(m, tuple):
            if len(m) != 2 or not callable(m[1]):
                raise TypeError(
                    f"block {b} is given as {m!r}; a pair must be (module name, function applied to its output "
                    "in forward), e.g. ('features', torch.nn.functional.relu6)"
                )
            m, post[b] = m
        if isinstance(m, nn.Module):
            m = _module_name(model, m)
        if m not in names:
            near = [n for n in names if n and (n.startswith(str(m).rsplit(".", 1)[0]) or str(m) in n)][:8]
            top = [n for n, _ in model.named_children()]
            raise ValueError(
                f"{type(model).__name__} has no module {m!r} for block {b}. "
                f"{'Similar names: ' + ', '.join(near) + '. ' if near else ''}"
                f"Top-level modules: {', '.join(top)}; pass existing names, e.g. blocks={{'B4': '{top[-3] if len(top) > 2 else 'name'}', ...}} "
                "(see model.named_modules())."
            )
        out[b] = m
    return out, post


# ------------------------------------------------------------- registration
_UNKNOWN = "unknown"
_GLOBAL = "global"


@dataclasses.dataclass(frozen=True)
class _Geo:
    """Affine registration of one axis pair plus the receptive-field half-extent."""

    sy: float
    oy: float
    sx: float
    ox: float
    ry: float = 0.0  # half receptive field (pixels) beyond the centre, rows
    rx: float = 0.0

    def conv(self, k: tuple[float, float], s: tuple[float, float], p: tuple[float, float],
             d: tuple[float, float]) -> "_Geo":
        return _Geo(
            self.sy * s[0], self.oy + self.sy * (d[0] * (k[0] - 1) / 2 - p[0]),
            self.sx * s[1], self.ox + self.sx * (d[1] * (k[1] - 1) / 2 - p[1]),
            self.ry + self.sy * d[0] * (k[0] - 1) / 2, self.rx + self.sx * d[1] * (k[1] - 1) / 2,
        )

    def shift(self, top: float, left: float) -> "_Geo":
        return dataclasses.replace(self, oy=self.oy - self.sy * top, ox=self.ox - self.sx * left)

    def same_place(self, other: "_Geo") -> bool:
        return all(math.isclose(a, b, abs_tol=1e-6) for a, b in
                   ((self.sy, other.sy), (self.oy, other.oy), (self.sx, other.sx), (self.ox, other.ox)))


def _pair(v: Any, default: Any = None) -> tuple[float, float]:
    if v is None:
        v = default
    if isinstance(v, (int, float)):
        return (float(v), float(v))
    v = tuple(v)
    if len(v) == 0:
        return _pair(default)
    if len(v) == 1:
        return (float(v[0]), float(v[0]))
    return (float(v[0]), float(v[1]))


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any = None) -> Any:
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


class _RegistrationMode(TorchFunctionMode):
    """Follows the registration of every activation through a forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.geo: dict[int, tuple[torch.Tensor, Any]] = {}
        self.conflicts: list[str] = []
        self.unknown_ops: list[str] = []

    def seed(self, x: torch.Tensor) -> None:
        self.geo[id(x)] = (x, _Geo(1.0, 0.0, 1.0, 0.0))

    def lookup(self, t: torch.Tensor) -> Any:
        entry = self.geo.get(id(t))
        return entry[1] if entry is not None and entry[0] is t else None

    def _set(self, t: Any, g: Any) -> None:
        if isinstance(t, torch.Tensor):
            self.geo[id(t)] = (t, g)
        elif isinstance(t, (tuple, list)):
            for u in t:
                self._set(u, g)

    def _inputs(self, args: tuple, kwargs: dict) -> list[tuple[torch.Tensor, Any]]:
        found: list[tuple[torch.Tensor, Any]] = []

        def walk(v: Any) -> None:
            if isinstance(v, torch.Tensor):
                g = self.lookup(v)
                if g is not None:
                    found.append((v, g))
            elif isinstance(v, (tuple, list)):
                for u in v:
                    walk(u)

        walk(args)
        walk(tuple(kwargs.values()))
        return found

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        try:
            self._propagate(func, args, kwargs, out)
        except Exception as e:  # pragma: no cover - never let bookkeeping break the forward pass
            self.unknown_ops.append(f"{getattr(func, '__name__', func)} ({e})")
        return out

    def _propagate(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        name = getattr(func, "__name__", str(func))
        ins = self._inputs(args, kwargs)
        spatial = [(t, g) for t, g in ins if g is not _GLOBAL and t.ndim >= 3]
        if not spatial:
            return
        x, g = spatial[0]
        if g is _UNKNOWN:
            self._set(out, _UNKNOWN)
            return
        if name in ("conv2d", "_conv_forward") and len(args) > 1:
            w = args[1]
            k = (float(w.shape[-2]), float(w.shape[-1]))
            s = _pair(_arg(args, kwargs, 3, "stride", 1))
            d = _pair(_arg(args, kwargs, 5, "dilation", 1))
            pad = _arg(args, kwargs, 4, "padding", 0)
            if isinstance(pad, str):
                p = (0.0, 0.0) if pad == "valid" else tuple(float((d[i] * (k[i] - 1)) // 2) for i in range(2))
            else:
                p = _pair(pad)
            self._set(out, g.conv(k, s, p, d))
            return
        if name in ("max_pool2d", "_max_pool2d", "max_pool2d_with_indices", "avg_pool2d", "lp_pool2d"):
            i0 = 2 if name == "lp_pool2d" else 1
            k = _pair(_arg(args, kwargs, i0, "kernel_size"))
            s = _pair(_arg(args, kwargs, i0 + 1, "stride"), k)
            p = (0.0, 0.0) if name == "lp_pool2d" else _pair(_arg(args, kwargs, i0 + 2, "padding", 0))
            d = _pair(_arg(args, kwargs, 4, "dilation", 1)) if "max" in name else (1.0, 1.0)
            self._set(out, g.conv(k, s, p, d))
            return
        if name in ("pad", "constant_pad_nd"):
            pad = list(_arg(args, kwargs, 1, "pad"))
            left = float(pad[0]) if len(pad) > 0 else 0.0
            top = float(pad[2]) if len(pad) > 2 else 0.0
            self._set(out, g.shift(top, left))
            return
        if name in ("adaptive_avg_pool2d", "adaptive_max_pool2d"):
            o = out[0] if isinstance(out, tuple) else out
            if tuple(o.shape[-2:]) == (1, 1):
                self._set(out, _GLOBAL)
                return
            hi, wi = x.shape[-2:]
            ho, wo = o.shape[-2:]
            if hi % ho == 0 and wi % wo == 0:
                k = (hi / ho, wi / wo)
                self._set(out, g.conv(k, k, (0.0, 0.0), (1.0, 1.0)))
            else:
                self.unknown_ops.append(f"{name} {tuple(x.shape[-2:])}->{tuple(o.shape[-2:])}")
                self._set(out, _UNKNOWN)
            return
        outs = [out] if isinstance(out, torch.Tensor) else [o for o in out if isinstance(o, torch.Tensor)] \
            if isinstance(out, (tuple, list)) else []
        hw = tuple(x.shape[-2:])
        for t, other in spatial[1:]:
            if tuple(t.shape[-2:]) == (1, 1) or other is _UNKNOWN:
                continue
            if tuple(t.shape[-2:]) == hw and not other.same_place(g):
                self.conflicts.append(
                    f"{name}: inputs centred at {g.sy:g}*i{g.oy:+g} and {other.sy:g}*i{other.oy:+g}")
        for o in outs:
            if o.ndim >= 3 and tuple(o.shape[-2:]) == hw:
                rf = max((gg for _, gg in spatial if isinstance(gg, _Geo)), key=lambda q: q.ry + q.rx)
                self._set(o, dataclasses.replace(g, ry=rf.ry, rx=rf.rx))
            elif o.ndim >= 3 and o.shape[-1] > 1 and o.shape[-2] > 1:
                self.unknown_ops.append(f"{name} {hw}->{tuple(o.shape[-2:])}")
                self._set(o, _UNKNOWN)


def block_geometries(
    model: nn.Module, adapter: Adapter, image_size: tuple[int, int], names: Any = None
) -> dict[str, BlockRegistration]:
    modules = adapter.modules(model, names)
    x = probe_input(model)
    x = torch.rand(1, 3, *image_size, dtype=x.dtype, device=x.device)
    mode = _RegistrationMode()
    seen: dict[str, tuple[Any, tuple[int, ...]]] = {}
    handles = []
    for b, m in modules.items():
        def hook(_m: nn.Module, _i: Any, out: torch.Tensor, b: str = b) -> None:
            seen[b] = (mode.lookup(out), tuple(out.shape))
        handles.append(m.register_forward_hook(hook))
    try:
        with eval_mode(model), torch.no_grad():
            mode.seed(x)
            with mode:
                model(x)
    finally:
        for h in handles:
            h.remove()
    out: dict[str, BlockRegistration] = {}
    for b in modules:
        g, shape = seen.get(b, (None, None))
        if not isinstance(g, _Geo):
            why = "; ".join(mode.unknown_ops[:3]) or "its output could not be traced to the image"
            raise RegistrationError(
                f"the registration of block {b} ({adapter.blocks[b]}) could not be derived from the layers ({why}). "
                "Measure it with kmexplain_utils.receptive_field.receptive_field_centres and pass it explicitly."
            )
        out[b] = BlockRegistration(
            name=b, module=adapter.blocks[b], grid_size=(int(shape[-2]), int(shape[-1])),
            stride=(g.sy, g.sx), offset=(g.oy, g.ox), channels=int(shape[1]),
            receptive_field=(2 * g.ry + 1, 2 * g.rx + 1),
        )
    if mode.conflicts:
        warnings.warn(
            "two branches of the network meet with different registrations ("
            + "; ".join(sorted(set(mode.conflicts))[:3]) + "): the first branch's is used.",
            stacklevel=3,
        )
    return out


def registration(
    model: nn.Module, image_size: Any, blocks: Any = None, *, head: Any = None
) -> dict[str, BlockRegistration]:
    """Grid size, stride and offset of each block: position ``i`` is centred on pixel ``stride * i + offset``.

    Derived from the layers by one traced forward pass (see the module
    docstring); it does not depend on the weights.

    Parameters
    ----------
    model : nn.Module
        A CNN that :func:`adapt` reads.
    image_size : int or (int, int)
        Input size ``(H, W)`` in pixels, for the grid sizes.
    blocks : dict, optional
        Block names as for :func:`adapt`.
    head : str or nn.Linear, optional
        As for :func:`adapt`.

    Returns
    -------
    dict of str to BlockRegistration
        ``{"B1": ..., "B4": ...}``, finest first.

    Example
    -------
    >>> import torchvision
    >>> reg = registration(torchvision.models.resnet18(weights=None), 224)
    >>> [(b, r.grid_size[0], r.stride[0], r.offset[0]) for b, r in reg.items()]
    [('B1', 56, 4.0, 0.0), ('B2', 28, 8.0, 0.0), ('B3', 14, 16.0, 0.0), ('B4', 7, 32.0, 0.0)]
    """
    adapter = blocks if isinstance(blocks, Adapter) else adapt(model, blocks, head)
    return block_geometries(model, adapter, as_size(image_size, name="image_size"))
