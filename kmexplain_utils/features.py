"""Block feature maps and the feature spaces ("levels") of METHOD 3.

A *level* names the space in which k-means runs:

- ``"logits"``: the classifier's output (image-level only, no positions);
- ``"B4"``: the last block ``layer4``;
- ascending block sets such as ``"B34"``, ``"B234"``, ``"B1234"`` (also
  ``"B13"`` ...).

The blocks of any CNN that :func:`kmexplain_utils.architectures.adapt` reads
(ResNet ``layer1..layer4``, DenseNet's dense blocks, EfficientNet's stages ...;
METHOD 3b). For a block set, every block's map is resampled to the finest grid
of the set *at the registered coordinates* (position ``i`` of a block is
centred on pixel ``s_b i + o_b``, see
:func:`kmexplain_utils.architectures.registration` and
:mod:`kmexplain_utils.resample`), so that a position refers to the same image
point in every block; ``registration="cell"`` keeps the first edition's
cell-centred convention as an ablation. Each block is divided by a per-block
constant ``sigma_b`` fitted on training data (``sigma_b = sqrt(mean_p
||a_p||^2)`` over training positions, which equalises the blocks' mean squared
norms), and the blocks are concatenated along channels. The pooled embedding is
the spatial mean of these position vectors.

Example
-------
>>> import torch, torchvision
>>> from kmexplain_utils.features import LevelFeatures, block_features
>>> model = torchvision.models.resnet18(weights=None, num_classes=3).eval()
>>> x = torch.rand(4, 3, 64, 64)
>>> with block_features(model) as extract:
...     maps = extract(x)
>>> {b: tuple(m.shape[1:]) for b, m in maps.items()}
{'B1': (64, 16, 16), 'B2': (128, 8, 8), 'B3': (256, 4, 4), 'B4': (512, 2, 2)}
>>> lf = LevelFeatures("B234").fit(model, x)
>>> lf.position_features(model, x).shape, lf.pooled(model, x).shape
(torch.Size([4, 896, 8, 8]), torch.Size([4, 896]))
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import warnings
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._validation import NotFittedError, check_is_fitted, check_tensor
from ._torch import as_generator, eval_mode, model_device
from .config import progress
from .resample import GridGeometry, infer_geometry, resample_map

__all__ = [
    "BLOCK_MODULES",
    "parse_level",
    "BlockExtractor",
    "block_features",
    "LevelFeatures",
    "BlockLevel",
    "LogitsLevel",
    "PositionSample",
    "iter_batches",
    "extract_pooled",
    "sample_positions",
    "fit_and_sample",
    "eval_mode",
    "model_adapter",
    "model_registration",
]

#: Default module of each block: torchvision ResNet's stages.
BLOCK_MODULES: dict[str, str] = {"B1": "layer1", "B2": "layer2", "B3": "layer3", "B4": "layer4"}

_LEVEL_RE = re.compile(r"^B([1-9]+)$")


def parse_level(level: str) -> tuple[str, ...]:
    """Split a level name into its blocks.

    Parameters
    ----------
    level : str
        ``"logits"`` or ``"B"`` followed by ascending block numbers in 1..4
        (``"B4"``, ``"B34"``, ``"B234"``, ``"B1234"``, ``"B13"`` ...).
        Case-insensitive.

    Returns
    -------
    tuple of str
        ``("logits",)`` for the logits, else the block names, e.g.
        ``("B2", "B3", "B4")``.

    Raises
    ------
    ValueError
        For an empty name, unknown blocks (``"B5"``), repeated or
        descending blocks (``"B43"``), or anything else.

    Example
    -------
    >>> parse_level("B234")
    ('B2', 'B3', 'B4')
    >>> parse_level("logits")
    ('logits',)
    """
    if not isinstance(level, str):
        raise TypeError(f"level must be a string such as 'B4' or 'B234', got {type(level).__name__}")
    text = level.strip()
    if text.lower() == "logits":
        return ("logits",)
    if not text:
        raise ValueError("level is empty; use 'logits', 'B4', 'B34', 'B234' or 'B1234'.")
    match = _LEVEL_RE.match(text[0].upper() + text[1:])
    if match is None:
        raise ValueError(
            f"level {level!r} is not understood; use 'logits' or 'B' followed by block numbers "
            "1-4 in ascending order, e.g. 'B4', 'B34', 'B234', 'B1234'."
        )
    digits = match.group(1)
    bad = sorted({d for d in digits if d not in "1234"})
    if bad:
        raise ValueError(
            f"level {level!r} names block(s) {', '.join('B' + d for d in bad)}, but only B1..B4 exist "
            "(layer1..layer4)."
        )
    if list(digits) != sorted(set(digits)):
        fixed = "B" + "".join(sorted(set(digits)))
        raise ValueError(
            f"level {level!r}: blocks must be listed once each in ascending order; did you mean {fixed!r}?"
        )
    return tuple(f"B{d}" for d in digits)


_ADAPTERS: "weakref.WeakKeyDictionary[nn.Module, Any]" = weakref.WeakKeyDictionary()


def model_adapter(model: nn.Module, blocks: Mapping[str, Any] | None = None, head: Any = None) -> Any:
    """The :class:`~kmexplain_utils.architectures.Adapter` of ``model`` (cached for the default blocks)."""
    from .architectures import adapt

    if blocks is None and head is None:
        cached = _ADAPTERS.get(model)
        if cached is None:
            cached = _ADAPTERS[model] = adapt(model)
        return cached
    return adapt(model, blocks, head)


_REGISTRATIONS: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def model_registration(model: nn.Module, image_size: tuple[int, int]) -> dict[str, Any]:
    """:func:`kmexplain_utils.architectures.registration` of the default blocks, cached per model and size."""
    from .architectures import registration

    per_model = _REGISTRATIONS.setdefault(model, {})
    key = tuple(int(v) for v in image_size)
    if key not in per_model:
        per_model[key] = registration(model, key, model_adapter(model))
    return per_model[key]


def _resolve_blocks(model: nn.Module, blocks: Any, adapter: Any = None) -> tuple[dict[str, nn.Module], dict[str, Any]]:
    """Modules (and post-functions) of the requested blocks."""
    if isinstance(blocks, Mapping) and not all(b in BLOCK_MODULES for b in blocks):
        # free names {"first": "layer1", "mid": module}: hook exactly these modules
        out: dict[str, nn.Module] = {}
        for b, mod in blocks.items():
            if isinstance(mod, nn.Module):
                out[b] = mod
                continue
            try:
                out[b] = model.get_submodule(mod)
            except AttributeError:
                raise ValueError(f"{type(model).__name__} has no module {mod!r} for block {b!r} "
                                 "(see model.named_modules())") from None
        return out, {}
    if isinstance(blocks, Mapping):
        adapter = model_adapter(model, dict(blocks)) if adapter is None else adapter
        names: Sequence[str] = tuple(blocks)
    elif blocks is None:
        names = tuple(BLOCK_MODULES)
    elif isinstance(blocks, str):
        names = tuple(b for b in parse_level(blocks) if b in BLOCK_MODULES)  # the logits name no block
    else:
        names = tuple(blocks)
        for b in names:
            if b not in BLOCK_MODULES:
                raise ValueError(
                    f"unknown block {b!r}; use names among {list(BLOCK_MODULES)} or pass a dict "
                    "{'B1': 'module.name', ...}."
                )
    adapter = model_adapter(model) if adapter is None else adapter
    missing = [b for b in names if b not in adapter.blocks]
    if missing:
        raise ValueError(
            f"block(s) {missing} are not defined for this {adapter.family} model, which has "
            f"{', '.join(f'{b}={m}' for b, m in adapter.blocks.items())}; name them with "
            "blocks={'B1': 'module.name', ...}."
        )
    return adapter.modules(model, names), {b: adapter.post[b] for b in names if b in adapter.post}


class BlockExtractor:
    """Callable returned by :func:`block_features`: one forward pass -> block maps.

    Attributes
    ----------
    blocks : tuple of str
        Block names, in order.
    logits : torch.Tensor or None
        The model's output ``(N, C)`` of the last call.
    """

    def __init__(self, model: nn.Module, modules: dict[str, nn.Module],
                 post: Mapping[str, Any] | None = None) -> None:
        self.model = model
        self.modules = modules
        self.post = dict(post or {})
        self.blocks = tuple(modules)
        self.logits: torch.Tensor | None = None
        self._store: dict[str, torch.Tensor] = {}
        self._handles: list = []

    def _attach(self) -> None:
        for name, module in self.modules.items():
            post = self.post.get(name)

            def hook(_m: nn.Module, _i: tuple, output: torch.Tensor, name: str = name, post: Any = post) -> None:
                # DenseNet applies an in-place ReLU to `features` afterwards: store a copy
                self._store[name] = post(output.clone()) if post is not None else output
            self._handles.append(module.register_forward_hook(hook))

    def _detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._store.clear()

    def __call__(
        self, x: torch.Tensor, *, return_logits: bool = False
    ) -> dict[str, torch.Tensor] | tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Run the model once on ``x`` ``(N, 3, H, W)`` and return ``{"B1": (N, D1, H1, W1), ...}``.

        With ``return_logits=True`` also return the logits ``(N, C)``
        (always available afterwards as :attr:`logits`).
        """
        if not self._handles:
            raise RuntimeError("this extractor's hooks were removed: use it inside its `with block_features(...)` block")
        check_tensor(x, 4, name="x", shape_doc="(N, 3, H, W)")
        self._store.clear()
        with eval_mode(self.model):
            logits = self.model(x)
        missing = [b for b in self.blocks if b not in self._store]
        if missing:
            raise RuntimeError(f"block(s) {missing} were not called during the forward pass")
        maps = {b: self._store[b] for b in self.blocks}
        self._store.clear()
        self.logits = logits
        return (maps, logits) if return_logits else maps


@contextlib.contextmanager
def block_features(model: nn.Module, blocks: Any = None, *, adapter: Any = None) -> Iterator[BlockExtractor]:
    """Context manager giving a callable that returns block feature maps in one forward pass.

    Forward hooks are registered on entry and always removed on exit, also
    when the forward pass raises. Each call runs the model in eval mode and
    restores every module's train/eval flag; the gradient mode is left to the
    caller.

    Parameters
    ----------
    model : nn.Module
        Any CNN that :func:`kmexplain_utils.architectures.adapt` reads.
    blocks : None, str, sequence of str or dict
        ``None``: B1..B4; a level such as ``"B234"``; block names
        ``["B3", "B4"]``; a dict ``{"B1": "features.3", ...}`` naming the
        blocks' modules; or a dict of other names to modules (hooked as given).
    adapter : Adapter, optional
        A pre-computed :func:`~kmexplain_utils.architectures.adapt` result.

    Yields
    ------
    BlockExtractor
        ``extract(x) -> {"B1": (N, D1, H1, W1), ...}``;
        ``extract(x, return_logits=True) -> (maps, logits)``.

    Example
    -------
    >>> import torch, torchvision
    >>> m = torchvision.models.resnet18(weights=None, num_classes=2).eval()
    >>> with block_features(m, "B34") as extract:
    ...     maps, logits = extract(torch.rand(1, 3, 64, 64), return_logits=True)
    >>> list(maps), tuple(logits.shape)
    (['B3', 'B4'], (1, 2))
    """
    extractor = BlockExtractor(model, *_resolve_blocks(model, blocks, adapter))
    extractor._attach()
    try:
        yield extractor
    finally:
        extractor._detach()


# --------------------------------------------------------------------- data
def _first(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        y = batch[1] if len(batch) > 1 else None
        return batch[0], (torch.as_tensor(y) if y is not None else None)
    if isinstance(batch, Mapping) and "image" in batch:
        return batch["image"], batch.get("label")
    raise TypeError(
        "batches must be image tensors (N, 3, H, W) or (images, labels) tuples, "
        f"got {type(batch).__name__}"
    )


def iter_batches(data: Any, batch_size: int = 64) -> tuple[Iterator[tuple[torch.Tensor, torch.Tensor | None]], int | None]:
    """Iterate over ``(images (B, 3, H, W), labels (B,) or None)`` batches of any image source.

    Parameters
    ----------
    data : tensor, tuple, Dataset or DataLoader
        ``(N, 3, H, W)`` images; an ``(images, labels)`` tuple of tensors; a
        dataset whose items are ``(image, label)`` (an ``ImageSet`` is read
        with ``images_at``); or a DataLoader yielding such batches. Order is
        preserved (a DataLoader is used as given).
    batch_size : int
        Batch size for tensors and datasets.

    Returns
    -------
    iterator, int or None
        The batches and the number of images (``None`` if unknown).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    from torch.utils.data import DataLoader, Dataset

    if isinstance(data, torch.Tensor):
        check_tensor(data, 4, name="images", shape_doc="(N, 3, H, W)")
        n = data.shape[0]
        return ((data[i : i + batch_size], None) for i in range(0, n, batch_size)), n
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        X, y = data
        check_tensor(X, 4, name="images", shape_doc="(N, 3, H, W)")
        y = torch.as_tensor(y)
        if y.shape != (X.shape[0],):
            raise ValueError(f"labels must have shape (N,) = ({X.shape[0]},), got {tuple(y.shape)}")
        n = X.shape[0]
        return ((X[i : i + batch_size], y[i : i + batch_size]) for i in range(0, n, batch_size)), n
    if isinstance(data, DataLoader):
        n = len(data.dataset) if hasattr(data.dataset, "__len__") else None  # type: ignore[arg-type]
        return (_first(b) for b in data), n
    if isinstance(data, Dataset):
        n = len(data)  # type: ignore[arg-type]
        if hasattr(data, "images_at") and hasattr(data, "labels"):
            labels = torch.as_tensor(data.labels)

            def gen() -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
                for i in range(0, n, batch_size):
                    idx = torch.arange(i, min(i + batch_size, n))
                    yield data.images_at(idx), labels[idx]

            return gen(), n
        loader = DataLoader(data, batch_size=batch_size, shuffle=False)
        return (_first(b) for b in loader), n
    raise TypeError(
        "data must be an image tensor (N, 3, H, W), an (images, labels) tuple, a Dataset or a "
        f"DataLoader; got {type(data).__name__}"
    )


# ------------------------------------------------------------------- levels
def _as_grid(grid: Any) -> tuple[int, int] | None:
    if grid is None:
        return None
    if isinstance(grid, int):
        grid = (grid, grid)
    grid = tuple(int(g) for g in grid)
    if len(grid) != 2 or min(grid) < 1:
        raise ValueError(f"grid must be an int or a pair (H, W) of positive ints, got {grid}")
    return grid  # type: ignore[return-value]


def _level_class(level: Any) -> type["LevelFeatures"]:
    """The class of a level's feature space, chosen from its name: the one place where the name decides.

    ``"logits"`` -> :class:`LogitsLevel`; a block level, and a name that does
    not parse (its error is raised by ``fit``, as scikit-learn validates
    parameters there), -> :class:`BlockLevel`.
    """
    try:
        return LogitsLevel if parse_level(level) == ("logits",) else BlockLevel
    except (TypeError, ValueError):
        return BlockLevel


class LevelFeatures:
    """Feature space of one level: resized, per-block scaled, concatenated block maps.

    ``LevelFeatures(level, ...)`` builds the level's object, chosen once from
    the name: a :class:`BlockLevel` (block maps resampled to one grid, scaled
    and concatenated) or the :class:`LogitsLevel` (the classifier's output,
    image-level, no positions). Both have the same interface (``fit``,
    ``pooled``, ``maps_and_pooled``, ``features_of_pass``, ``fit_and_sample``'s
    pass, ``registration_`` ...), so that callers never test the level's name;
    ``has_positions`` says whether the level has feature-map positions
    (position features, concept and attribution maps), and the methods that
    need positions raise a clear error on the logits.

    Parameters
    ----------
    level : str
        ``"logits"``, ``"B4"``, ``"B34"``, ``"B234"``, ``"B1234"`` or any
        ascending block set (see :func:`parse_level`).
    scale : {"rms", "none"} or dict
        ``"rms"`` fits ``sigma_b = sqrt(mean_p ||a_p||^2)`` per block on the
        training positions (at the level's grid), so that every block
        contributes equally to squared distances; ``"none"`` uses
        ``sigma_b = 1``; a dict ``{"B2": s2, ...}`` gives the constants.
        The scaling is what makes multi-block levels work (METHOD 3).
    grid : int, (int, int) or str, optional
        Force the target grid: a size (``grid=28``) or the name of another
        level whose finest grid to use (``LevelFeatures("B4", grid="B234")``
        puts B4 on B234's grid: the resolution control "B4@B234-grid").
        Default: the finest grid of the level's blocks for each input.
    batch_size : int
        Batch size used by :meth:`fit` when streaming a dataset.
    device : str or torch.device
        ``"auto"`` computes on the model's device; anything else must be the
        device that holds the model.
    blocks : dict, optional
        Block modules ``{"B1": "module.name", ...}`` for a model whose blocks
        are not found automatically (see :func:`kmexplain_utils.architectures.adapt`).
    head : str or nn.Linear, optional
        The final linear layer, for such a model.
    registration : {"exact", "cell"}
        ``"exact"`` (default) resamples blocks at their registered centres
        ``s_b i + o_b``; ``"cell"`` uses the first edition's cell-centred
        convention (``o = (s - 1) / 2``), kept as an ablation.
        Scale, grid and registration are ignored by the logits level.

    Attributes
    ----------
    blocks_ : tuple of str
        The level's blocks (``("logits",)`` for the logits).
    sigma_ : dict of str to float
        Per-block scale.
    dims_ : dict of str to int
        Channels ``D_b`` of each block.
    slices_ : dict of str to slice
        Channels of each block inside the concatenation.
    n_features_ : int
        ``D_S = sum_b D_b`` (or ``C`` for the logits).
    grid_size_ : tuple of int
        ``(H_S, W_S)`` of the fitting images (``None`` for the logits).
    n_positions_ : int
        Number of positions used to fit ``sigma_``.
    adapter_ : Adapter
        How the model was read (head, block modules).
    registration_ : dict of str to BlockRegistration
        Grid, stride and offset of each block at the fitting image size
        (``{}`` for the logits).
    geometry_ : dict of str to GridGeometry
        Where each block's positions sit on the image (per ``registration``).
    grid_geometry_ : GridGeometry
        Where the level's grid positions sit (the finest block's, or the
        ``grid`` level's).

    Notes
    -----
    All methods run the model in eval mode (its mode is restored afterwards)
    under ``torch.no_grad()``: the method is gradient-free.

    Example
    -------
    >>> import torch, torchvision
    >>> m = torchvision.models.resnet18(weights=None, num_classes=2)
    >>> lf = LevelFeatures("B34").fit(m, torch.rand(8, 3, 64, 64))
    >>> lf.grid_size, lf.n_features_
    ((4, 4), 768)
    """

    #: whether the level has feature-map positions (``False`` for the logits)
    has_positions: bool = True

    def __new__(cls, level: str = "B4", *args: Any, **kwargs: Any) -> "LevelFeatures":
        if cls is LevelFeatures:  # the factory: the level's own class
            cls = _level_class(level)
        return super().__new__(cls)

    def __init__(
        self,
        level: str = "B4",
        *,
        scale: str | Mapping[str, float] = "rms",
        grid: int | tuple[int, int] | None = None,
        batch_size: int = 64,
        device: str | torch.device = "auto",
        blocks: Mapping[str, Any] | None = None,
        head: Any = None,
        registration: str = "exact",
    ) -> None:
        self.level = level
        self.scale = scale
        self.grid = grid
        self.batch_size = batch_size
        self.device = device
        self.blocks = blocks
        self.head = head
        self.registration = registration

    # -- helpers
    @property
    def is_logits(self) -> bool:
        """True for the image-level ``"logits"`` level (``not has_positions``)."""
        return not self.has_positions

    @property
    def grid_size(self) -> tuple[int, int] | None:
        """``(H_S, W_S)`` of the fitting images (alias of ``grid_size_``)."""
        check_is_fitted(self, ["blocks_"])
        return self.grid_size_

    def _check_params(self) -> tuple[str, ...]:
        blocks = parse_level(self.level)
        if not isinstance(self, _level_class(self.level)):
            raise ValueError(
                f"level was changed to {self.level!r} after this {type(self).__name__} was built; "
                f"build a new one: LevelFeatures({self.level!r}, ...)"
            )
        if isinstance(self.scale, str):
            if self.scale not in ("rms", "none"):
                raise ValueError(f"scale must be 'rms', 'none' or a dict of per-block constants, got {self.scale!r}")
        elif isinstance(self.scale, Mapping):
            self._check_scale_dict(blocks)
        else:
            raise TypeError(f"scale must be 'rms', 'none' or a dict, got {type(self.scale).__name__}")
        if isinstance(self.grid, str):
            parse_level(self.grid)  # a bad name fails here, with its own message
            if not _level_class(self.grid).has_positions:
                raise ValueError("grid='logits' has no grid; name a block level such as 'B234'")
        else:
            _as_grid(self.grid)
        return blocks

    def _device_for(self, model: nn.Module) -> torch.device:
        dev = model_device(model)
        if not (isinstance(self.device, str) and self.device == "auto") and self.device is not None:
            want = torch.device(self.device)
            if want.type != dev.type or (want.index is not None and want.index != dev.index):
                raise ValueError(
                    f"device={self.device!r} but the model is on {dev}; move the model first "
                    f"(model.to({str(want)!r})) or use device='auto'."
                )
        return dev

    def _prepare(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, 4, name="x", shape_doc="(N, 3, H, W)")
        if not x.is_floating_point():
            raise TypeError(f"x must be floating point images in [0, 1], got dtype {x.dtype}")
        return x.to(self._device_for(model))

    # -- fitting
    def fit(self, model: nn.Module, data: Any, y: Any = None) -> "LevelFeatures":
        """Fit the per-block scales on training images (streamed, one batch of maps at a time).

        Parameters
        ----------
        model : nn.Module
            ResNet-style model (``layer1..layer4``, see :func:`block_features`).
        data : tensor, tuple, Dataset or DataLoader
            Training images, see :func:`iter_batches`.
        y : ignored
            For scikit-learn compatibility.

        Returns
        -------
        LevelFeatures
            ``self``.
        """
        self._fit_pass(model, data, per_image=0, random_state=None, batch_size=self.batch_size,
                       want_pooled=False, desc=f"fit scales {self.level}")
        return self

    def require_positions(self) -> None:
        """Raise a ``ValueError`` that says why when the level has no positions (the logits)."""

    def sample_size(self, per_image: Any) -> int:
        """Positions to sample per image at this level: ``per_image`` checked (an int >= 1), or 0 without positions."""
        if isinstance(per_image, bool) or not isinstance(per_image, int) or per_image < 1:
            raise ValueError(f"positions_per_image must be an int >= 1, got {per_image!r}")
        return per_image

    def _check_scale_dict(self, blocks: tuple[str, ...]) -> None:
        """Check a dict ``scale`` against the level's blocks."""

    def _check_transformable(self) -> None:
        """Raise ``NotFittedError`` when the level must be fitted before it transforms images."""

    def _fit_pass(self, model: nn.Module, data: Any, *, per_image: int, random_state: Any, batch_size: int,
                  want_pooled: bool, desc: str | None) -> tuple[PositionSample | None, torch.Tensor, torch.Tensor | None]:
        """The one streamed pass behind :meth:`fit` and :func:`fit_and_sample` (see there).

        Sets the level's fitted attributes; returns ``(sample, Z, y)`` (``Z`` and ``y`` empty/``None``
        unless ``want_pooled``).
        """
        raise NotImplementedError

    def pooled(self, model: nn.Module, x: torch.Tensor, *, return_logits: bool = False
               ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Pooled embeddings ``z_S`` ``(N, D_S)`` of images ``x`` ``(N, 3, H, W)`` (and the logits ``(N, C)``)."""
        raise NotImplementedError

    def maps_and_pooled(self, model: nn.Module, x: torch.Tensor
                        ) -> tuple[dict[str, torch.Tensor] | None, torch.Tensor]:
        """One forward pass: the level's block maps (:meth:`BlockLevel.block_maps`; ``None`` without positions) and the
        pooled embeddings ``(N, D_S)``."""
        raise NotImplementedError

    def features_of_pass(self, maps: Mapping[str, torch.Tensor], logits: torch.Tensor, image_size: Any = None
                         ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The level's position features ``(N, D_S, H_S, W_S)`` (``None`` without positions) and pooled
        embeddings ``(N, D_S)`` from one forward pass's block maps (:func:`block_features`) and logits ``(N, C)``.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"LevelFeatures(level={self.level!r}, scale={self.scale!r}, grid={self.grid!r})"


class BlockLevel(LevelFeatures):
    """A block level (``"B4"``, ``"B234"`` ...): registered resampling, per-block scales, concatenation.

    Built by ``LevelFeatures("B234", ...)`` (same parameters and attributes as
    :class:`LevelFeatures`).
    """

    def _check_scale_dict(self, blocks: tuple[str, ...]) -> None:
        missing = [b for b in blocks if b not in self.scale]
        if missing:
            raise ValueError(f"scale dict lacks block(s) {missing} of level {self.level!r}")
        bad = {b: s for b, s in self.scale.items() if not (float(s) > 0 and math.isfinite(float(s)))}
        if bad:
            raise ValueError(f"scale constants must be positive and finite, got {bad}")

    def _check_transformable(self) -> None:
        if self.scale == "rms" and not hasattr(self, "sigma_"):
            raise NotFittedError(f"{self!r} is not fitted; call level_features.fit(model, train_data) first.")

    # -- fitting
    def _fit_pass(self, model: nn.Module, data: Any, *, per_image: int, random_state: Any, batch_size: int,
                  want_pooled: bool, desc: str | None) -> tuple[PositionSample | None, torch.Tensor, torch.Tensor | None]:
        lf = self
        blocks = lf._check_params()
        lf._device_for(model)
        if lf.registration not in ("exact", "cell"):
            raise ValueError(f"registration must be 'exact' or 'cell', got {lf.registration!r}")
        draws = _PositionDraws(data, per_image, random_state, stacklevel=4) if per_image else None
        from .architectures import block_geometries

        out_dev = _out_device(data)
        batches, n = iter_batches(data, batch_size)
        lf.adapter_ = model_adapter(model, lf.blocks, lf.head)
        hooked = lf._hooked_blocks(blocks)
        dev = lf._device_for(model)
        sq = {b: torch.zeros((), dtype=torch.float64, device=dev) for b in blocks}
        count, grid, registered = 0, None, False
        resamplers: dict[tuple, _BlockResampler] = {}
        dims: dict[str, int] = {}
        zs, ys = [], []
        has_y = True
        with eval_mode(model), torch.no_grad(), block_features(model, hooked, adapter=lf.adapter_) as extract:
            for xb, yb in progress(batches, total=None if n is None else math.ceil(n / batch_size),
                                   desc=desc or f"fit {lf.level}"):
                xb = lf._prepare(model, xb)
                if not registered:  # one traced probe image: where each block's positions sit
                    regs = block_geometries(model, lf.adapter_, tuple(xb.shape[-2:]), hooked)
                    lf.registration_ = regs
                    lf.geometry_ = {b: GridGeometry.from_registration(r, lf.registration) for b, r in regs.items()}
                    registered = True
                maps = extract(xb)
                gs = lf._target_grid(maps)
                geo, target = lf._geometries(maps, gs, tuple(xb.shape[-2:]))
                if grid is None:
                    grid = gs
                    lf.grid_geometry_ = target
                B, (H, W) = xb.shape[0], gs
                count += B * H * W
                sources = []
                for b in blocks:
                    m = maps[b]
                    key = (b, tuple(m.shape[-2:]), gs, geo[b], target)
                    if key not in resamplers:
                        resamplers[key] = _BlockResampler(geo[b], tuple(m.shape[-2:]), gs, target, m.dtype, m.device)
                    rs = resamplers[key]
                    dims[b] = m.shape[1]
                    sq[b] += rs.sum_squares(m)  # unscaled: the results are divided by sigma_b afterwards
                    sources.append((rs, m))
                if want_pooled or per_image:
                    if want_pooled:
                        zs.append(torch.cat([rs.pooled(m) for rs, m in sources], dim=1).float().to(out_dev))
                    if draws is not None:
                        pos = draws.draw(B, (H, W), tuple(xb.shape[-2:]), yb)  # (B, k) on CPU
                        py, px = (pos // W).to(dev), (pos % W).to(dev)
                        picked = torch.cat([rs.at(m, py, px) for rs, m in sources], dim=2)  # (B, k, D)
                        draws.vectors.append(picked.reshape(-1, picked.shape[2]).float().cpu())
                    if yb is None:
                        has_y = False
                    elif want_pooled:
                        ys.append(torch.as_tensor(yb).long().to(out_dev))
        if count == 0:
            raise ValueError("data holds no images: cannot fit the level's scales")
        if lf.scale == "rms":
            sigma = {}
            for b in blocks:
                s = math.sqrt(float(sq[b]) / count)
                if not s > 0:
                    warnings.warn(f"block {b} is all zeros on the fitting data; using sigma = 1", stacklevel=3)
                    s = 1.0
                sigma[b] = s
        else:
            sigma = lf._sigmas(blocks)
        lf.blocks_ = blocks
        lf.sigma_ = sigma
        lf.dims_ = dims
        start, lf.slices_ = 0, {}
        for b in blocks:
            lf.slices_[b] = slice(start, start + dims[b])
            start += dims[b]
        lf.n_features_ = start
        lf.grid_size_ = grid if draws is None else draws.grid
        lf.n_positions_ = count
        # the scaling is linear: divide each block's channels of the unscaled results by sigma_b
        scale = torch.cat([torch.full((dims[b],), sigma[b], dtype=torch.float32) for b in blocks])
        Z = torch.cat(zs).div_(scale.to(out_dev)) if zs else torch.empty(0, start)
        sample = None if draws is None else draws.sample(getattr(lf, "grid_geometry_", None), scale)
        return sample, Z, (torch.cat(ys) if (has_y and ys) else None)

    # -- helpers
    def _hooked_blocks(self, blocks: tuple[str, ...]) -> tuple[str, ...]:
        extra = parse_level(self.grid) if isinstance(self.grid, str) else ()
        return tuple(sorted(set(blocks) | set(extra)))

    def _target_blocks(self, maps: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if isinstance(self.grid, str):
            need = parse_level(self.grid)
            missing = [b for b in need if b not in maps]
            if missing:
                raise ValueError(f"maps lack block(s) {missing} that define grid={self.grid!r}")
            return {b: maps[b] for b in need}
        return {b: maps[b] for b in parse_level(self.level) if b in maps} or dict(maps)

    def _target_grid(self, maps: Mapping[str, torch.Tensor]) -> tuple[int, int]:
        forced = None if isinstance(self.grid, str) else _as_grid(self.grid)
        if forced is not None:
            return forced
        sizes = [tuple(m.shape[-2:]) for m in self._target_blocks(maps).values()]
        return max(sizes, key=lambda s: (s[0] * s[1], s))  # type: ignore[return-value]

    def _geometries(
        self, maps: Mapping[str, torch.Tensor], grid: tuple[int, int], image_size: tuple[int, int] | None
    ) -> tuple[dict[str, GridGeometry], GridGeometry]:
        """Geometry of every block of ``maps`` and of the target grid."""
        fitted = getattr(self, "geometry_", None)
        if fitted is not None and all(b in fitted for b in maps):
            geo = {b: fitted[b] for b in maps}
        else:
            # not fitted on a model: strides from the grid sizes, offset 0 (symmetric padding)
            ref = image_size or max((tuple(m.shape[-2:]) for m in maps.values()), key=lambda s: s[0] * s[1])
            geo = {b: infer_geometry(m.shape[-2:], ref) for b, m in maps.items()}
            if self.registration == "cell":
                geo = {b: GridGeometry.cell(g.stride) for b, g in geo.items()}
        forced = None if isinstance(self.grid, str) else _as_grid(self.grid)
        if forced is not None:
            b0, m0 = next(iter(maps.items()))
            ref = image_size or (round(geo[b0].stride[0] * m0.shape[-2]), round(geo[b0].stride[1] * m0.shape[-1]))
            target = GridGeometry.cell((ref[0] / forced[0], ref[1] / forced[1]))
        else:
            target_blocks = [b for b, m in self._target_blocks(maps).items() if tuple(m.shape[-2:]) == grid]
            target = geo[target_blocks[0]]
        return geo, target

    def _adapter_for(self, model: nn.Module) -> Any:
        fitted = getattr(self, "adapter_", None)
        return fitted if fitted is not None else model_adapter(model, self.blocks, self.head)

    def _resize(self, m: torch.Tensor, geometry: GridGeometry, grid: tuple[int, int],
                target: GridGeometry) -> torch.Tensor:
        return resample_map(m, geometry, grid, target=target)

    def _sigmas(self, blocks: tuple[str, ...]) -> dict[str, float]:
        if isinstance(self.scale, Mapping):
            return {b: float(self.scale[b]) for b in blocks}
        if self.scale == "none":
            return {b: 1.0 for b in blocks}
        check_is_fitted(self, ["sigma_"])
        return self.sigma_

    # -- transforming
    def combine(self, maps: Mapping[str, torch.Tensor], image_size: Any = None) -> torch.Tensor:
        """Resample (at the registered coordinates), scale and concatenate block maps.

        Parameters
        ----------
        maps : dict of str to torch.Tensor
            ``{"B2": (N, D2, H2, W2), ...}``.
        image_size : (int, int), optional
            The input size; needed only for an integer ``grid``.

        Returns
        -------
        torch.Tensor
            ``(N, sum D_b, H_S, W_S)`` on the grid of the level's finest block.
        """
        blocks = self._check_params()
        missing = [b for b in blocks if b not in maps]
        if missing:
            raise ValueError(f"maps lack block(s) {missing} of level {self.level!r}")
        sig = self._sigmas(blocks)
        grid = self._target_grid(maps)
        geo, target = self._geometries(maps, grid, None if image_size is None else tuple(image_size))
        return torch.cat([self._resize(maps[b], geo[b], grid, target) / sig[b] for b in blocks], dim=1)

    def position_features(
        self, model: nn.Module, x: torch.Tensor, *, return_logits: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Position vectors ``a^S_p`` of images ``x``: ``(N, sum D_b, H_S, W_S)``.

        Parameters
        ----------
        model : nn.Module
            The model the level was fitted on.
        x : torch.Tensor
            Images ``(N, 3, H, W)``.
        return_logits : bool
            Also return the logits ``(N, C)`` of the same forward pass.
        """
        blocks = self._check_params()
        self._sigmas(blocks)  # NotFittedError early
        x = self._prepare(model, x)
        with eval_mode(model), torch.no_grad(), \
                block_features(model, self._hooked_blocks(blocks), adapter=self._adapter_for(model)) as extract:
            maps, logits = extract(x, return_logits=True)
            feats = self.combine(maps, tuple(x.shape[-2:]))
        return (feats, logits) if return_logits else feats

    def pooled(
        self, model: nn.Module, x: torch.Tensor, *, return_logits: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Pooled embeddings ``z_S`` ``(N, D_S)``: the spatial mean of :meth:`position_features`."""
        feats, logits = self.position_features(model, x, return_logits=True)  # type: ignore[misc]
        z = feats.mean((2, 3))
        return (z, logits) if return_logits else z

    def maps_and_pooled(self, model: nn.Module, x: torch.Tensor
                        ) -> tuple[dict[str, torch.Tensor] | None, torch.Tensor]:
        # the block maps, not the (N, D_S, H_S, W_S) features: maps are computed by projecting then resampling
        maps = self.block_maps(model, x)
        return maps, self.pooled_from_maps(maps, tuple(x.shape[-2:]))

    def features_of_pass(self, maps: Mapping[str, torch.Tensor], logits: torch.Tensor, image_size: Any = None
                         ) -> tuple[torch.Tensor | None, torch.Tensor]:
        feats = self.combine(maps, image_size)
        return feats, feats.mean((2, 3))

    def pooled_of_pass(self, maps: Mapping[str, torch.Tensor], logits: torch.Tensor, image_size: Any = None
                       ) -> torch.Tensor:
        """The pooled embeddings ``(N, D_S)`` of one forward pass (``features_of_pass``'s second value),
        without building the position features: :meth:`pooled_from_maps`."""
        return self.pooled_from_maps(maps, image_size)

    def block_maps(self, model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The level's block maps ``{"B2": (N, D_2, H_2, W_2), ...}`` of images ``x`` (one forward pass).

        Unresampled and unscaled; :meth:`pooled_from_maps` and :meth:`project`
        turn them into the level's pooled embeddings and position scores without
        building the ``(N, D_S, H_S, W_S)`` position features.
        """
        blocks = self._check_params()
        self._sigmas(blocks)  # NotFittedError early
        x = self._prepare(model, x)
        with eval_mode(model), torch.no_grad(), \
                block_features(model, self._hooked_blocks(blocks), adapter=self._adapter_for(model)) as extract:
            return extract(x)

    def _block_resamplers(
        self, maps: Mapping[str, torch.Tensor], image_size: Any
    ) -> tuple[tuple[str, ...], dict[str, float], list[tuple[str, "_BlockResampler", torch.Tensor]]]:
        blocks = self._check_params()
        missing = [b for b in blocks if b not in maps]
        if missing:
            raise ValueError(f"maps lack block(s) {missing} of level {self.level!r}")
        sig = self._sigmas(blocks)
        grid = self._target_grid(maps)
        geo, target = self._geometries(maps, grid, None if image_size is None else tuple(image_size))
        cache = self.__dict__.setdefault("_resamplers", {})
        out = []
        for b in blocks:
            m = maps[b]
            key = (b, tuple(m.shape[-2:]), grid, geo[b], target, m.dtype, str(m.device))
            if key not in cache:
                cache[key] = _BlockResampler(geo[b], tuple(m.shape[-2:]), grid, target, m.dtype, m.device)
            out.append((b, cache[key], m))
        return blocks, sig, out

    def pooled_from_maps(self, maps: Mapping[str, torch.Tensor], image_size: Any = None) -> torch.Tensor:
        """Pooled embeddings ``(N, D_S)`` from :meth:`block_maps`: ``combine(maps).mean((2, 3))``, computed
        from the block maps (the resampling is linear)."""
        _, sig, parts = self._block_resamplers(maps, image_size)
        return torch.cat([rs.pooled(m) / sig[b] for b, rs, m in parts], dim=1)

    def project(self, maps: Mapping[str, torch.Tensor], weights: torch.Tensor, image_size: Any = None) -> torch.Tensor:
        """Inner products ``w . a_p`` of weight vectors with every position vector, from :meth:`block_maps`.

        Equals ``einsum("kd,ndhw->nkhw", weights, combine(maps))`` (or ``"nkd"``
        for per-image weights), but projects each block's own map onto its
        slice of the weights first and resamples the ``K`` projected maps: the
        resampling and the scaling are linear, so the order does not matter, and
        the ``(N, D_S, H_S, W_S)`` features are never built.

        Parameters
        ----------
        maps : dict of str to torch.Tensor
            :meth:`block_maps` of ``N`` images.
        weights : torch.Tensor
            ``(K, D_S)`` the same for every image, or ``(N, K, D_S)`` per image.
        image_size : (int, int), optional
            The images' size (only needed for an integer ``grid``).

        Returns
        -------
        torch.Tensor
            ``(N, K, H_S, W_S)``.
        """
        _, sig, parts = self._block_resamplers(maps, image_size)
        D = sum(m.shape[1] for _, _, m in parts)
        if not isinstance(weights, torch.Tensor) or weights.ndim not in (2, 3) or weights.shape[-1] != D:
            shape = tuple(weights.shape) if isinstance(weights, torch.Tensor) else type(weights).__name__
            raise ValueError(f"weights must be (K, D_S) or (N, K, D_S) with D_S = {D}, got {shape}")
        eq = "kd,ndhw->nkhw" if weights.ndim == 2 else "nkd,ndhw->nkhw"
        out, start = None, 0
        for b, rs, m in parts:
            wb = weights[..., start:start + m.shape[1]].to(device=m.device, dtype=m.dtype) / sig[b]
            start += m.shape[1]
            r = rs.resample(torch.einsum(eq, wb, m))
            out = r if out is None else out + r
        return out  # type: ignore[return-value]


class LogitsLevel(LevelFeatures):
    """The ``"logits"`` level: the classifier's output ``(N, C)`` is the embedding; image-level, no positions.

    Built by ``LevelFeatures("logits")``. It needs no fit beyond the logits'
    width; ``scale``, ``grid`` and ``registration`` are ignored. Position
    features, block maps, concept and attribution maps do not exist here: the
    methods that would return them raise a ``ValueError`` that says so.
    """

    has_positions = False

    def _no_positions(self) -> str:
        return (
            "level 'logits' is image-level only: it has no feature-map positions, so there are no "
            "position features, concept maps or attribution maps; use a block level such as 'B4' or "
            "'B234' (pooled(...) works for 'logits')."
        )

    def require_positions(self) -> None:
        raise ValueError(self._no_positions())

    def sample_size(self, per_image: Any) -> int:
        return 0

    def _fit_pass(self, model: nn.Module, data: Any, *, per_image: int, random_state: Any, batch_size: int,
                  want_pooled: bool, desc: str | None) -> tuple[PositionSample | None, torch.Tensor, torch.Tensor | None]:
        lf = self
        blocks = lf._check_params()
        lf._device_for(model)
        out_dev = _out_device(data)
        batches, n = iter_batches(data, batch_size)
        # no blocks: the logits are the embedding; the level needs only their width
        zs, ys, has_y, width = [], [], True, None
        with eval_mode(model), torch.no_grad():
            for xb, yb in progress(batches, total=None if n is None else math.ceil(n / batch_size),
                                   desc=desc or f"fit {lf.level}"):
                xb = lf._prepare(model, xb if want_pooled else xb[:1])
                out = model(xb)
                width = out.shape[1]
                if not want_pooled:
                    break
                zs.append(out.float().to(out_dev))
                if yb is None:
                    has_y = False
                else:
                    ys.append(torch.as_tensor(yb).long().to(out_dev))
        if width is None:
            raise ValueError("data holds no images")
        lf.blocks_, lf.registration_ = blocks, {}
        lf.sigma_, lf.dims_ = {}, {"logits": width}
        lf.slices_ = {"logits": slice(0, width)}
        lf.n_features_, lf.grid_size_, lf.n_positions_ = width, None, 0
        Z = torch.cat(zs) if zs else torch.empty(0, width)
        return None, Z, (torch.cat(ys) if (has_y and ys) else None)

    def pooled(self, model: nn.Module, x: torch.Tensor, *, return_logits: bool = False
               ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The logits ``(N, C)`` of images ``x`` ``(N, 3, H, W)`` (twice with ``return_logits``)."""
        self._check_params()
        x = self._prepare(model, x)
        with eval_mode(model), torch.no_grad():
            logits = model(x)
        return (logits, logits) if return_logits else logits

    def maps_and_pooled(self, model: nn.Module, x: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, self.pooled(model, x)  # type: ignore[return-value]

    def features_of_pass(self, maps: Mapping[str, torch.Tensor], logits: torch.Tensor, image_size: Any = None
                         ) -> tuple[None, torch.Tensor]:
        return None, logits

    def pooled_of_pass(self, maps: Mapping[str, torch.Tensor], logits: torch.Tensor, image_size: Any = None
                       ) -> torch.Tensor:
        """The logits ``(N, C)``."""
        return logits

    def position_features(self, model: nn.Module, x: torch.Tensor, *, return_logits: bool = False) -> Any:
        """No positions: raises ``ValueError``."""
        self.require_positions()

    def combine(self, maps: Mapping[str, torch.Tensor], image_size: Any = None) -> torch.Tensor:
        """No positions: raises ``ValueError``."""
        self.require_positions()

    def block_maps(self, model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """No blocks: raises ``ValueError``."""
        self.require_positions()

    def pooled_from_maps(self, maps: Mapping[str, torch.Tensor], image_size: Any = None) -> torch.Tensor:
        """No blocks: raises ``ValueError``."""
        self.require_positions()

    def project(self, maps: Mapping[str, torch.Tensor], weights: torch.Tensor, image_size: Any = None) -> torch.Tensor:
        """No positions: raises ``ValueError``."""
        self.require_positions()


# ---------------------------------------------------------------- streaming
def _out_device(data: Any) -> torch.device:
    if isinstance(data, torch.Tensor):
        return data.device
    if isinstance(data, tuple) and data and isinstance(data[0], torch.Tensor):
        return data[0].device
    return torch.device("cpu")


def extract_pooled(
    model: nn.Module,
    data: Any,
    level_features: LevelFeatures,
    *,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    desc: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pooled embeddings of a whole dataset, streamed with a progress bar.

    At most one batch of full-resolution maps is held at a time.

    Parameters
    ----------
    model : nn.Module
        The model.
    data : tensor, tuple, Dataset or DataLoader
        See :func:`iter_batches`.
    level_features : LevelFeatures
        A fitted level (``"logits"`` needs no fit).
    batch_size : int
        Batch size for tensors and datasets.
    device : str or torch.device
        ``"auto"``: the model's device; else must be the model's device.
    desc : str, optional
        Progress-bar label.

    Returns
    -------
    Z : torch.Tensor
        ``(N, D_S)`` float32, on the input tensor's device (CPU for datasets
        and loaders).
    y : torch.Tensor or None
        ``(N,)`` int64 labels when the data has them.

    Example
    -------
    >>> import torch, torchvision
    >>> m = torchvision.models.resnet18(weights=None, num_classes=2)
    >>> x, y = torch.rand(6, 3, 64, 64), torch.tensor([0, 1, 0, 1, 0, 1])
    >>> lf = LevelFeatures("B4").fit(m, x)
    >>> Z, labels = extract_pooled(m, (x, y), lf, batch_size=4)
    >>> tuple(Z.shape), labels.tolist()
    ((6, 512), [0, 1, 0, 1, 0, 1])
    """
    if not isinstance(level_features, LevelFeatures):
        raise TypeError(f"level_features must be a LevelFeatures, got {type(level_features).__name__}")
    level_features._check_transformable()
    LevelFeatures(level_features.level, device=device)._device_for(model)
    out_dev = _out_device(data)
    batches, n = iter_batches(data, batch_size)
    zs, ys = [], []
    has_y = True
    for xb, yb in progress(batches, total=None if n is None else math.ceil(n / batch_size),
                           desc=desc or f"embeddings {level_features.level}"):
        zs.append(level_features.pooled(model, xb).float().to(out_dev))
        if yb is None:
            has_y = False
        else:
            ys.append(torch.as_tensor(yb).long().to(out_dev))
    if not zs:
        raise ValueError("data holds no images")
    return torch.cat(zs), (torch.cat(ys) if has_y else None)


@dataclasses.dataclass
class PositionSample:
    """Feature-map positions sampled from a set of images.

    Attributes
    ----------
    vectors : torch.Tensor
        ``(M, D)`` position vectors ``a^S_p``.
    image_index : torch.Tensor
        ``(M,)`` int64 index of the image each vector comes from.
    yx : torch.Tensor
        ``(M, 2)`` int64 row and column of the position on the grid.
    grid : tuple of int
        ``(H_S, W_S)`` of the grid.
    image_size : tuple of int
        ``(H, W)`` of the images, in pixels.
    labels : torch.Tensor or None
        ``(M,)`` class label of each vector's image.
    geometry : GridGeometry or None
        Where the grid's positions sit on the image (``None``: stride = image
        / grid, offset 0).
    """

    vectors: torch.Tensor
    image_index: torch.Tensor
    yx: torch.Tensor
    grid: tuple[int, int]
    image_size: tuple[int, int]
    labels: torch.Tensor | None = None
    geometry: GridGeometry | None = None

    def __len__(self) -> int:
        return self.vectors.shape[0]


def sample_positions(
    model: nn.Module,
    data: Any,
    level_features: LevelFeatures,
    *,
    per_image: int = 32,
    random_state: int | torch.Generator | None = 0,
    batch_size: int = 64,
    desc: str | None = None,
    return_pooled: bool = False,
) -> PositionSample | tuple[PositionSample, torch.Tensor, torch.Tensor | None]:
    """Sample ``per_image`` positions (without replacement) from every image's feature grid.

    Parameters
    ----------
    model : nn.Module
        The model.
    data : tensor, tuple, Dataset or DataLoader
        Images in a fixed order (see :func:`iter_batches`); ``image_index``
        refers to that order, so do not pass a shuffling DataLoader.
    level_features : LevelFeatures
        A fitted block level.
    per_image : int
        Positions per image (all positions when the grid has fewer).
    random_state : int, torch.Generator or None
        Seed of the position draw (``None``: fresh randomness, see
        the package-wide rule of ``_torch.as_generator``).
    batch_size : int
        Batch size.
    desc : str, optional
        Progress-bar label.
    return_pooled : bool
        Also return the pooled embeddings ``(N, D)`` (float32, CPU) and the
        labels ``(N,)`` (or ``None``) of the same forward passes, so that a
        classifier and concepts are fitted from one pass over the data.

    Returns
    -------
    PositionSample
        Vectors on the CPU (and, with ``return_pooled``, ``Z`` and ``y``).

    Example
    -------
    >>> import torch, torchvision
    >>> m = torchvision.models.resnet18(weights=None, num_classes=2)
    >>> x = torch.rand(3, 3, 64, 64)
    >>> s = sample_positions(m, x, LevelFeatures("B34").fit(m, x), per_image=5)
    >>> tuple(s.vectors.shape), s.grid, s.image_index.tolist()
    ((15, 768), (4, 4), [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2])
    """
    if per_image < 1:
        raise ValueError(f"per_image must be >= 1, got {per_image}")
    level_features.require_positions()
    draws = _PositionDraws(data, per_image, random_state, stacklevel=3)
    batches, n = iter_batches(data, batch_size)
    pooled, ys = [], []
    for xb, yb in progress(batches, total=None if n is None else math.ceil(n / batch_size),
                           desc=desc or f"positions {level_features.level}"):
        feats = level_features.position_features(model, xb)
        B, D, H, W = feats.shape
        if return_pooled:
            pooled.append(feats.mean((2, 3)).float().cpu())
            if yb is not None:
                ys.append(torch.as_tensor(yb).long().cpu())
        pos = draws.draw(B, (H, W), tuple(xb.shape[-2:]), yb)  # (B, k)
        flat = feats.flatten(2).transpose(1, 2)  # (B, HW, D)
        picked = torch.gather(flat, 1, pos.to(flat.device)[..., None].expand(B, pos.shape[1], D))
        draws.vectors.append(picked.reshape(-1, D).float().cpu())
    if not draws.vectors:
        raise ValueError("data holds no images")
    sample = draws.sample(getattr(level_features, "grid_geometry_", None))
    if return_pooled:
        return sample, torch.cat(pooled), (torch.cat(ys) if draws.has_y else None)
    return sample


class _PositionDraws:
    """The bookkeeping of a position sample, the same for :func:`sample_positions` and the fit's pass.

    Each batch draws ``min(per_image, H W)`` positions per image without replacement (the same
    draws for the same seed, whichever function draws them) and records their images, grid rows and
    columns and labels; the caller appends the ``(B k, D)`` vectors at those positions to ``vectors``.
    """

    def __init__(self, data: Any, per_image: int, random_state: int | torch.Generator | None,
                 stacklevel: int) -> None:
        from torch.utils.data import DataLoader, SequentialSampler

        if isinstance(data, DataLoader) and not isinstance(data.sampler, SequentialSampler):
            warnings.warn(
                "the DataLoader does not read the data in order; image_index will not match dataset "
                "indices. Pass the dataset itself or a DataLoader with shuffle=False.",
                stacklevel=stacklevel,
            )
        self.per_image, self.g = per_image, as_generator(random_state)
        self.vectors: list[torch.Tensor] = []
        self.idxs: list[torch.Tensor] = []
        self.yxs: list[torch.Tensor] = []
        self.labs: list[torch.Tensor] = []
        self.has_y, self.offset = True, 0
        self.grid: tuple[int, int] | None = None
        self.image_size: tuple[int, int] | None = None

    def draw(self, n_images: int, grid: tuple[int, int], image_size: tuple[int, int], yb: Any) -> torch.Tensor:
        """``(B, k)`` flat positions (CPU) drawn for the next ``B = n_images`` images on a ``grid``."""
        (H, W), B = grid, n_images
        k = min(self.per_image, H * W)
        pos = torch.rand(B, H * W, generator=self.g).argsort(dim=1)[:, :k]  # (B, k) on CPU
        self.grid, self.image_size = (H, W), image_size
        self.idxs.append((self.offset + torch.arange(B)).repeat_interleave(k))
        self.yxs.append(torch.stack([pos // W, pos % W], dim=-1).reshape(B * k, 2))
        if yb is None:
            self.has_y = False
        else:
            self.labs.append(torch.as_tensor(yb).long().cpu().repeat_interleave(k))
        self.offset += B
        return pos

    def sample(self, geometry: GridGeometry | None, scale: torch.Tensor | None = None) -> PositionSample:
        """The :class:`PositionSample` of the draws (vectors divided by ``scale`` ``(D,)`` when given)."""
        vectors = torch.cat(self.vectors)
        return PositionSample(
            vectors=vectors if scale is None else vectors.div_(scale),
            image_index=torch.cat(self.idxs),
            yx=torch.cat(self.yxs),
            grid=self.grid,  # type: ignore[arg-type]
            image_size=self.image_size,  # type: ignore[arg-type]
            labels=torch.cat(self.labs) if self.has_y else None,
            geometry=geometry,
        )


class _BlockResampler:
    """What the fit needs of ``resample_map(m, geometry, grid, target=target)``, from the block's own map ``m``.

    Resampling is linear and separable (``r = My @ m @ Mx.T`` per channel), so the
    pooled mean, the sum of squares and a few sampled positions of the resampled
    map ``r`` are computed without building ``r`` (``(B, D, H_S, W_S)``, e.g. B4's
    2048 channels on B234's 28x28 grid: 16 times the map itself):

    - ``mean_p r_p = m . (u v^T)`` with ``u, v`` the column means of ``My, Mx``;
    - ``sum_p ||r_p||^2 = sum <m, Gy m Gx>`` with ``Gy = My^T My``, ``Gx = Mx^T Mx``;
    - ``r[:, i, j] = My[i] @ m @ Mx[j]``.
    """

    def __init__(self, geometry: GridGeometry, src: tuple[int, int], grid: tuple[int, int],
                 target: GridGeometry, dtype: torch.dtype, device: torch.device) -> None:
        from .resample import resample_matrices

        My, Mx = resample_matrices(geometry, src, grid, target=target)  # float64 (H, h), (W, w)
        self.identity = tuple(grid) == tuple(src) and torch.equal(My, torch.eye(src[0], dtype=My.dtype)) \
            and torch.equal(Mx, torch.eye(src[1], dtype=Mx.dtype))
        cast = dict(dtype=dtype, device=device)
        self.My, self.Mx = My.to(**cast), Mx.to(**cast)
        self.uv = torch.outer(My.mean(0), Mx.mean(0)).flatten().to(**cast)  # (h w,)
        self.Gy, self.Gx = (My.T @ My).to(**cast), (Mx.T @ Mx).to(**cast)
        self.src_w = src[1]

    def pooled(self, m: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` spatial mean of the resampled map."""
        return m.mean((2, 3)) if self.identity else m.flatten(2) @ self.uv

    def sum_squares(self, m: torch.Tensor) -> torch.Tensor:
        """``sum_{n, d, p} r[n, d, p]^2`` of the resampled map (float64 scalar)."""
        t = m if self.identity else self.Gy @ m @ self.Gx
        return (m * t).sum((2, 3)).double().sum()

    def resample(self, t: torch.Tensor) -> torch.Tensor:
        """``(..., H_S, W_S)`` of a (small) map ``t`` ``(..., h, w)``: exactly ``resample_map``'s weights."""
        return t if self.identity else self.My @ t @ self.Mx.T

    def at(self, m: torch.Tensor, py: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
        """``(B, k, D)`` resampled vectors at grid rows ``py`` and columns ``px`` ``(B, k)``."""
        if self.identity:
            B, D = m.shape[:2]
            flat = m.flatten(2)  # (B, D, h w)
            idx = (py * self.src_w + px)[:, None, :].expand(B, D, py.shape[1])
            return torch.gather(flat, 2, idx).transpose(1, 2)
        return torch.einsum("bkh,bdhw,bkw->bkd", self.My[py], m, self.Mx[px])


def fit_and_sample(
    model: nn.Module,
    data: Any,
    level_features: LevelFeatures,
    *,
    per_image: int = 32,
    random_state: int | torch.Generator | None = 0,
    batch_size: int = 64,
    desc: str | None = None,
) -> tuple[PositionSample | None, torch.Tensor, torch.Tensor | None]:
    """Fit a level and gather its pooled embeddings and a position sample in ONE pass over the data.

    Equivalent to ``level_features.fit(model, data)`` followed by
    :func:`extract_pooled` and :func:`sample_positions` (same seed, same
    order), but the network runs once per image instead of two or three
    times. ``sigma_b`` is only known at the end of the pass, so the pass
    gathers, for each block, the sum of squares of its map resampled to the
    level's grid (for ``sigma_b``), the *unscaled* pooled embedding and the
    *unscaled* sampled positions; the block's channels of both are divided by
    ``sigma_b`` afterwards. This is exact because the scaling is linear,
    ``mean_p(a_p / sigma) = mean_p(a_p) / sigma`` (equal up to float rounding,
    about 1e-7 relative). The resampling is linear too, so these three are
    computed from the block's own map, without building the resampled map
    (see :func:`kmexplain_utils.resample.resample_matrices`).

    Parameters
    ----------
    model : nn.Module
        The model.
    data : tensor, tuple, Dataset or DataLoader
        Images in a fixed order (see :func:`iter_batches`).
    level_features : LevelFeatures
        The level to fit (fitted in place; any level, ``"logits"`` included).
    per_image : int
        Positions sampled (without replacement) from every image's grid; ``0``
        samples none. Ignored for ``"logits"``, which has no positions.
    random_state : int, torch.Generator or None
        Seed of the position draw (the same draws as :func:`sample_positions`).
    batch_size : int
        Images per forward pass.
    desc : str, optional
        Progress-bar label.

    Returns
    -------
    sample : PositionSample or None
        ``N * min(per_image, H_S W_S)`` position vectors (CPU, float32), or
        ``None`` for ``"logits"`` or ``per_image=0``.
    Z : torch.Tensor
        ``(N, D_S)`` float32 pooled embeddings, on the input tensor's device
        (CPU for datasets and loaders).
    y : torch.Tensor or None
        ``(N,)`` int64 labels when the data has them.

    Example
    -------
    >>> import torch, torchvision
    >>> m = torchvision.models.resnet18(weights=None, num_classes=2)
    >>> x, y = torch.rand(3, 3, 64, 64), torch.tensor([0, 1, 0])
    >>> lf = LevelFeatures("B34")
    >>> sample, Z, labels = fit_and_sample(m, (x, y), lf, per_image=5)
    >>> tuple(sample.vectors.shape), tuple(Z.shape), sorted(lf.sigma_)
    ((15, 768), (3, 768), ['B3', 'B4'])
    """
    if not isinstance(level_features, LevelFeatures):
        raise TypeError(f"level_features must be a LevelFeatures, got {type(level_features).__name__}")
    if isinstance(per_image, bool) or not isinstance(per_image, int) or per_image < 0:
        raise ValueError(f"per_image must be an int >= 0, got {per_image!r}")
    return level_features._fit_pass(model, data, per_image=per_image, random_state=random_state,
                                    batch_size=batch_size, want_pooled=True, desc=desc)
