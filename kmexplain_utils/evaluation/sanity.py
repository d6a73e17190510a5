"""Model-randomisation sanity check of explanations (Adebayo et al., 2018).

An explanation that describes the *model* must change when the model's
weights are destroyed. The cascading test re-initialises the network from the
head down, one stage at a time (head, then B4's stage, B3's, B2's, B1's, the
stem), keeping the earlier stages randomised, and after each step compares the
maps of every method with the maps of the trained network by Spearman's rank
correlation, per image. A map that stays highly correlated while the weights
it should depend on are random is explaining something else (the input's edges,
the architecture).

:func:`cascading_randomization` runs the cascade on a deep copy (the model
given is never modified); :func:`randomization_stages` lists the stages of any
network that :func:`kmexplain_utils.architectures.adapt` reads;
:func:`spearman_maps` is the per-image rank correlation.

Example
-------
>>> import torch, torchvision
>>> from kmexplain_utils.evaluation.sanity import cascading_randomization
>>> from kmexplain_utils.attribution import cam
>>> net = torchvision.models.resnet18(weights=None, num_classes=3).eval()
>>> x = torch.rand(2, 3, 64, 64)
>>> recs = cascading_randomization(net, lambda m, x: {"CAM": cam(m, x, target=0, size=64)}, x)
>>> [(r.stage, r.method) for r in recs][:2]
[('head', 'CAM'), ('B4', 'CAM')]
>>> -1.0 <= recs[0].spearman <= 1.0          # rank correlation with the trained network's CAMs
True
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "RandomizationRecord", "spearman_maps", "randomization_stages", "reinitialize", "cascading_randomization",
]


@dataclasses.dataclass(frozen=True)
class RandomizationRecord:
    """One step of the cascade for one method.

    Attributes
    ----------
    step : int
        ``1`` for the first stage randomised, ``2`` when the second one is too, ...
    stage : str
        The stage randomised at this step (``"head"``, ``"B4"``, ..., ``"stem"``
        or a user-given name); all stages of the earlier steps stay randomised.
    method : str
        The key of the map in ``explain_fn``'s output.
    spearman : float
        Mean over images of the rank correlation with the trained network's maps.
    spearman_abs : float
        The same on absolute values (a sign flip does not count as a change).
    per_image : numpy.ndarray
        ``(N,)`` the rank correlation of each image (``nan`` where a map is constant).
    """

    step: int
    stage: str
    method: str
    spearman: float
    spearman_abs: float
    per_image: np.ndarray


def _flat(maps: Any, name: str) -> np.ndarray:
    a = maps.detach().cpu().double().numpy() if isinstance(maps, torch.Tensor) else np.asarray(maps, dtype=np.float64)
    if a.ndim < 2:
        raise ValueError(f"{name} must have shape (N, H, W) (or (N, P)), got {a.shape}")
    return a.reshape(a.shape[0], -1)


def spearman_maps(a: Any, b: Any) -> np.ndarray:
    """Spearman's rank correlation between maps ``a[i]`` and ``b[i]`` of each image.

    Ties get their average rank (as in :func:`scipy.stats.spearmanr`).

    Parameters
    ----------
    a, b : torch.Tensor or numpy.ndarray
        ``(N, H, W)`` (or ``(N, P)``) maps of the same shape.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` correlations in ``[-1, 1]``; ``nan`` where a map is constant.

    Example
    -------
    >>> import numpy as np
    >>> spearman_maps(np.array([[1., 2, 3, 4]]), np.array([[10., 20, 40, 30]]))
    array([0.8])
    """
    from scipy.stats import rankdata

    A, B = _flat(a, "a"), _flat(b, "b")
    if A.shape != B.shape:
        raise ValueError(f"a and b must have the same shape, got {np.shape(a)} and {np.shape(b)}")
    ra = rankdata(A, axis=1) - (A.shape[1] + 1) / 2
    rb = rankdata(B, axis=1) - (B.shape[1] + 1) / 2
    num = (ra * rb).sum(1)
    den = np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return np.clip(out, -1.0, 1.0)


def randomization_stages(model: nn.Module, adapter: Any = None) -> list[tuple[str, list[str]]]:
    """The stages of a network from the head down: ``[("head", [...]), ("B4", [...]), ..., ("stem", [...])]``.

    A stage is the list of modules with their own parameters that run after
    the previous block's output and up to the block's output (in the order of
    one forward pass); ``"head"`` is what runs after B4 (the linear layer),
    ``"stem"`` what runs before B1.

    Parameters
    ----------
    model : nn.Module
        A network :func:`kmexplain_utils.architectures.adapt` reads.
    adapter : Adapter, optional
        A pre-computed ``adapt(model)``.

    Returns
    -------
    list of (str, list of str)
        Stage name and qualified module names, head first; empty stages left out.

    Example
    -------
    >>> import torchvision
    >>> st = randomization_stages(torchvision.models.resnet18(weights=None))
    >>> [name for name, _ in st], st[0][1]
    (['head', 'B4', 'B3', 'B2', 'B1', 'stem'], ['fc'])
    """
    from ..architectures import adapt, probe_input
    from ..features import eval_mode

    adapter = adapt(model) if adapter is None else adapter
    order: list[str] = []
    width: dict[str, int] = {}
    finished: dict[str, tuple[int, int]] = {}
    block_of = {m: b for b, m in adapter.blocks.items()}

    def leaf_hook(_m: nn.Module, _i: Any, out: Any, name: str) -> None:
        if name not in width:
            order.append(name)
            width[name] = int(out.shape[-1]) if isinstance(out, torch.Tensor) and out.ndim == 4 else 0

    def block_hook(_m: nn.Module, _i: Any, out: Any, b: str) -> None:
        finished[b] = (len(order), int(out.shape[-1]))

    handles = []
    for name, m in model.named_modules():
        if any(True for _ in m.parameters(recurse=False)):
            handles.append(m.register_forward_hook(lambda _m, _i, o, name=name: leaf_hook(_m, _i, o, name)))
        if name in block_of:
            handles.append(m.register_forward_hook(lambda _m, _i, o, b=block_of[name]: block_hook(_m, _i, o, b)))
    try:
        with eval_mode(model), torch.no_grad():
            model(probe_input(model, 128))
    finally:
        for h in handles:
            h.remove()
    bounds = [(b, *finished[b]) for b in adapter.blocks if b in finished]  # finest first
    stages: list[tuple[str, list[str]]] = []
    start = 0
    for k, (b, end, w) in enumerate(bounds):
        mods = order[start:end]
        if k == 0:  # what runs at a finer resolution than the first block is the stem
            stages.append(("stem", [n for n in mods if width[n] > w]))
            mods = [n for n in mods if width[n] <= w]
        stages.append((b, mods))
        start = end
    stages.append(("head", order[start:]))
    return [(n, mods) for n, mods in reversed(stages) if mods]


def reinitialize(module: nn.Module, generator_seed: int = 0) -> None:
    """Re-initialise one module's own parameters (in place) as if it were new.

    ``reset_parameters()`` where the module has it (convolutions, linear
    layers, batch norm: weights 1, biases 0, running statistics reset);
    otherwise every parameter is drawn from a normal law with its own mean and
    standard deviation.

    Example
    -------
    >>> from torch import nn
    >>> lin = nn.Linear(4, 2); w = lin.weight.detach().clone()
    >>> reinitialize(lin, 1); bool((lin.weight != w).any())
    True
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(generator_seed))
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
            return
        with torch.no_grad():
            for p in module.parameters(recurse=False):
                std = float(p.std()) if p.numel() > 1 else 1.0
                p.copy_(torch.randn_like(p) * (std if std > 0 else 1.0) + p.mean())


def cascading_randomization(
    model: nn.Module,
    explain_fn: Callable[[nn.Module, torch.Tensor], Mapping[str, Any]],
    x: torch.Tensor,
    layers: Sequence[tuple[str, Sequence[str]]] | None = None,
    random_state: int = 0,
) -> list[RandomizationRecord]:
    """Cascading model randomisation (Adebayo et al., 2018): rank correlation with the trained maps.

    Parameters
    ----------
    model : nn.Module
        The trained network; never modified (a deep copy is randomised).
    explain_fn : callable
        ``explain_fn(model, x) -> {method: maps (N, H, W)}``; called once on
        the trained network and once after each step on the randomised copy
        (it must use the model it is given).
    x : torch.Tensor
        ``(N, 3, H, W)`` the images explained.
    layers : sequence of (str, sequence of str), optional
        The cascade: stage names and module names, in the order they are
        randomised. Default: :func:`randomization_stages` (head, B4, ..., stem).
    random_state : int
        Seed of the re-initialisation (step ``k`` uses ``random_state + k``).

    Returns
    -------
    list of RandomizationRecord
        One per step and method, in cascade order.

    Example
    -------
    >>> import torch, torchvision
    >>> from kmexplain_utils.attribution import cam
    >>> net = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    >>> recs = cascading_randomization(net, lambda m, x: {"CAM": cam(m, x, target=0, size=64)},
    ...                                torch.rand(2, 3, 64, 64), layers=[("fc", ["fc"])])
    >>> len(recs), recs[0].stage
    (1, 'fc')
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    stages = randomization_stages(model) if layers is None else [(str(n), list(m)) for n, m in layers]
    if not stages:
        raise ValueError("no stage to randomise: give layers=[('name', ['module.name', ...]), ...]")
    names = dict(model.named_modules())
    for stage, mods in stages:
        unknown = [m for m in mods if m not in names]
        if unknown:
            raise ValueError(f"stage {stage!r} names module(s) {unknown} that {type(model).__name__} does not have")
    with torch.no_grad():
        reference = {k: _flat(v, k) for k, v in explain_fn(model, x).items()}
    if not reference:
        raise ValueError("explain_fn returned no map")
    work = copy.deepcopy(model)
    work.train(model.training)
    records: list[RandomizationRecord] = []
    for step, (stage, mods) in enumerate(stages, start=1):
        for j, m in enumerate(mods):
            reinitialize(work.get_submodule(m), random_state + 1000 * step + j)
        with torch.no_grad():
            out = explain_fn(work, x)
        missing = set(reference) - set(out)
        if missing:
            raise ValueError(f"explain_fn returned no {sorted(missing)} at step {step} ({stage})")
        for method, ref in reference.items():
            cur = _flat(out[method], method)
            if cur.shape != ref.shape:
                raise ValueError(f"{method}: maps of shape {cur.shape} after step {step}, {ref.shape} before")
            rho = spearman_maps(ref, cur)
            rho_abs = spearman_maps(np.abs(ref), np.abs(cur))
            records.append(RandomizationRecord(step, stage, method, float(np.nanmean(rho)) if np.isfinite(rho).any()
                                               else float("nan"),
                                               float(np.nanmean(rho_abs)) if np.isfinite(rho_abs).any()
                                               else float("nan"), rho))
    return records
