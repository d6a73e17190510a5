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

A k-means map ``m(p) = 2 mu . a_p - ||mu||^2`` is the sum of a part that every
prototype shares, the map of the mean prototype ``mu_bar``
(``s(p) = 2 mu_bar . a_p - ||mu_bar||^2``), and a class-specific remainder
``r = m - s``. :func:`split_prototype_maps` splits the maps and
:func:`variance_shares` measures the share of each part in a map's spatial
variance. :func:`randomisation_protocol` is the one protocol the book runs
(chapters 5 and 6): the cascade on fitted :class:`~kmexplain_utils.Explainer`
objects, for the k-means maps, the contrastive maps (where the shared part
cancels), the class-specific part and the shared part, beside CAM, Grad-CAM at
B3 and occlusion, with a pass rule (:data:`PASS_THRESHOLD`, :func:`verdicts`).

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
    "PASS_STAGE", "PASS_THRESHOLD", "ProtocolRecord", "RandomizationRecord", "cascading_randomization",
    "randomisation_protocol", "randomization_stages", "reinitialize", "spearman_maps", "split_prototype_maps",
    "variance_shares", "verdicts",
]

#: a map passes the sanity check when its median rank correlation with the trained maps, after the head
#: and the last block (:data:`PASS_STAGE`) are randomised, is below this value (on every seed)
PASS_THRESHOLD = 0.5
#: the cascade step the pass rule reads: the head and B4 re-initialised
PASS_STAGE = "B4"


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
    A, B = _flat(a, "a"), _flat(b, "b")
    if A.shape != B.shape:
        raise ValueError(f"a and b must have the same shape, got {np.shape(a)} and {np.shape(b)}")
    return _spearman_of_ranks(_centred_ranks(A), _centred_ranks(B))


def _centred_ranks(A: np.ndarray) -> np.ndarray:
    """``(N, P)`` average ranks of each row, minus their mean (what :func:`spearman_maps` correlates)."""
    from scipy.stats import rankdata

    return rankdata(A, axis=1) - (A.shape[1] + 1) / 2


def _spearman_of_ranks(ra: np.ndarray, rb: np.ndarray) -> np.ndarray:
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
    # the trained maps' ranks (of the maps and of their absolute values), once for every step
    ref_ranks = {k: (_centred_ranks(v), _centred_ranks(np.abs(v))) for k, v in reference.items()}
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
            rho = _spearman_of_ranks(ref_ranks[method][0], _centred_ranks(cur))
            rho_abs = _spearman_of_ranks(ref_ranks[method][1], _centred_ranks(np.abs(cur)))
            records.append(RandomizationRecord(step, stage, method, float(np.nanmean(rho)) if np.isfinite(rho).any()
                                               else float("nan"),
                                               float(np.nanmean(rho_abs)) if np.isfinite(rho_abs).any()
                                               else float("nan"), rho))
    return records


# ----------------------------------------------------------------------------- the shared part of k-means maps
def split_prototype_maps(
    position_features: torch.Tensor, prototypes: torch.Tensor, index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split k-means maps into the part every prototype shares and a class-specific remainder.

    With ``mu = prototypes[index[i]]`` and ``mu_bar`` the mean of all prototypes,

    - full map ``m(p) = 2 mu . a_p - ||mu||^2`` (the attribution map of ``mu``);
    - shared part ``s(p) = 2 mu_bar . a_p - ||mu_bar||^2``, the same for every prototype;
    - class-specific part ``r(p) = m(p) - s(p) = 2 (mu - mu_bar) . a_p - (||mu||^2 - ||mu_bar||^2)``.

    ``m = s + r`` exactly. A contrastive map ``m_1 - m_2`` is ``r_1 - r_2``: the
    shared part cancels.

    Parameters
    ----------
    position_features : torch.Tensor
        ``(N, D, h, w)`` position vectors ``a_p`` of a level.
    prototypes : torch.Tensor
        ``(P, D)`` every prototype of the classifier.
    index : torch.Tensor
        ``(N,)`` the prototype of each image (e.g. the winning one).

    Returns
    -------
    tuple of torch.Tensor
        ``(full, shared, specific)``, each ``(N, h, w)`` on the grid.

    Example
    -------
    >>> import torch
    >>> a, P = torch.rand(2, 3, 4, 4), torch.rand(5, 3)
    >>> m, s, r = split_prototype_maps(a, P, torch.tensor([0, 4]))
    >>> bool(torch.allclose(m, s + r))
    True
    """
    from ..attribution import attribution_map

    if not isinstance(prototypes, torch.Tensor) or prototypes.ndim != 2:
        raise ValueError(f"prototypes must be a (P, D) tensor, got {getattr(prototypes, 'shape', type(prototypes))}")
    idx = torch.as_tensor(index).long().reshape(-1)
    if idx.numel() != position_features.shape[0]:
        raise ValueError(f"index must have shape (N,) = ({position_features.shape[0]},), got {tuple(idx.shape)}")
    P = prototypes.to(device=position_features.device, dtype=position_features.dtype)
    full = attribution_map(position_features, P[idx.to(P.device)])
    shared = attribution_map(position_features, P.mean(0))
    return full, shared, full - shared


def variance_shares(full: Any, shared: Any) -> tuple[np.ndarray, np.ndarray]:
    """The share of the shared part and of the class-specific part in each map's spatial variance.

    With ``m = s + r`` (see :func:`split_prototype_maps`),
    ``Var(m) = Cov(m, s) + Cov(m, r)``, so ``Cov(m, s) / Var(m)`` and
    ``Cov(m, r) / Var(m)`` sum to 1 exactly: the share of the map's variance that
    each part carries (a part anti-correlated with the map gets a negative share).

    Parameters
    ----------
    full, shared : torch.Tensor or numpy.ndarray
        ``(N, h, w)`` (or ``(N, P)``) the maps ``m`` and their shared parts ``s``.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``(N,)`` shares of the shared and of the class-specific part (``nan`` for a constant map).

    Example
    -------
    >>> import numpy as np
    >>> s = np.array([[0., 1, 2, 3]]); r = np.array([[1., -1, 1, -1]])
    >>> variance_shares(s + r, s)[0].round(3), variance_shares(s + r, s)[1].round(3)
    (array([0.6]), array([0.4]))
    """
    M, S = _flat(full, "full"), _flat(shared, "shared")
    if M.shape != S.shape:
        raise ValueError(f"full and shared must have the same shape, got {np.shape(full)} and {np.shape(shared)}")
    Mc, Sc = M - M.mean(1, keepdims=True), S - S.mean(1, keepdims=True)
    var = (Mc**2).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(var > 0, (Mc * Sc).sum(1) / np.where(var > 0, var, 1.0), np.nan)
    return share, 1.0 - share


# ----------------------------------------------------------------------------- the book's protocol
@dataclasses.dataclass(frozen=True)
class ProtocolRecord:
    """One step of :func:`randomisation_protocol` for one map.

    Attributes
    ----------
    step : int
        ``0`` for the decomposition of the trained maps (no randomisation), then ``1, 2, ...``.
    stage : str
        The stage randomised at this step (all earlier ones stay randomised); ``"trained"`` at step 0.
    level : str
        ``"B4"``, ``"B234"`` ... for k-means maps; ``"B4"`` (CAM), ``"B3"`` (Grad-CAM), ``"pixel"`` (occlusion).
    method : str
        ``"kmeans"`` (the winning prototype's map), ``"contrastive"`` (winner minus the runner-up
        class's best prototype), ``"class-specific"`` (the map minus its shared part), ``"shared"``
        (the mean prototype's map), ``"cam"``, ``"gradcam"``, ``"occlusion"``.
    metric : str
        ``"spearman"`` (rank correlation with the trained maps), or at step 0
        ``"shared_share"`` / ``"specific_share"`` (:func:`variance_shares`) and ``"shared_spearman"``
        (rank correlation of the map with its shared part).
    median, mean : float
        Over the images (``nan`` ignored).
    per_image : numpy.ndarray
        ``(N,)``.
    """

    step: int
    stage: str
    level: str
    method: str
    metric: str
    median: float
    mean: float
    per_image: np.ndarray


#: the baseline maps :func:`randomisation_protocol` can add, in its order
_BASELINES = ("cam", "gradcam", "occlusion")


def _stat(v: np.ndarray) -> tuple[float, float]:
    ok = np.isfinite(v)
    return (float(np.median(v[ok])), float(v[ok].mean())) if ok.any() else (float("nan"), float("nan"))


def randomisation_protocol(
    model: nn.Module,
    explainers: Any,
    images: torch.Tensor,
    *,
    fit_data: tuple[torch.Tensor, Any] | None = None,
    n_stages: int | None = None,
    baselines: bool | Sequence[str] = True,
    occlusion_patch: int | None = None,
    random_state: int = 0,
    batch_size: int = 100,
) -> list[ProtocolRecord]:
    """The book's model-randomisation sanity check (chapters 5 and 6), with the k-means maps decomposed.

    1. **Decomposition** (step 0): for every level, the winning prototype's map ``m`` on the trained
       network is split into its shared part (the mean prototype's map) and its class-specific part
       (:func:`split_prototype_maps`); records the share of each in the map's variance
       (:func:`variance_shares`) and the rank correlation of ``m`` with its shared part.
    2. **Cascade** (Adebayo et al., 2018; :func:`cascading_randomization`): the head is
       re-initialised (the linear layer, and the k-means prototypes replaced by Gaussian vectors with
       the trained prototypes' per-dimension mean and spread: a k-means head re-drawn in the same
       region), then B4's stage, B3's, ... cumulatively, on a copy. After each step, every map
       is compared with the trained network's by Spearman's rank correlation per image. Every map
       keeps explaining what it explained on the trained network: the same prototype indices (the
       winner and the runner-up class's best), the same class for the baselines.

    Maps (at image size, registered): per level ``kmeans`` (the winning prototype's map, as
    :meth:`Explainer.explain` draws it), ``contrastive`` (winner minus the runner-up class's best
    prototype: the shared part cancels), ``class-specific`` (map minus shared part) and ``shared``;
    with ``baselines``, CAM (level ``B4``), Grad-CAM at B3 and occlusion (level ``pixel``) of the
    network's prediction (or those of them named). The network may have any head that
    :func:`kmexplain_utils.architectures.adapt` reads (a ResNet's ``fc``, EfficientNet's
    ``classifier``, ...).

    A map **passes** when the median correlation after the step that randomises
    :data:`PASS_STAGE` is below :data:`PASS_THRESHOLD` (:func:`verdicts`).

    Parameters
    ----------
    model : nn.Module
        The trained network; never modified.
    explainers : Explainer, mapping of str to Explainer, or sequence of str
        Fitted explainers of ``model`` (keyed by level), or level names to fit on ``fit_data``.
    images : torch.Tensor
        ``(N, 3, H, W)`` images in ``[0, 1]`` (the book uses at least 100).
    fit_data : (images, labels), optional
        Training data, when ``explainers`` are level names.
    n_stages : int, optional
        Randomise only the first ``n_stages`` stages of :func:`randomization_stages` (default all).
    baselines : bool or sequence of str
        ``True``: add CAM, Grad-CAM at B3 and occlusion; ``False``: none; or the ones named, among
        ``"cam"``, ``"gradcam"``, ``"occlusion"`` (chapter 6 keeps CAM only: the other two cost a
        backward pass or many forward passes per step).
    occlusion_patch : int, optional
        Side of the occlusion patches, moved by their own side (default ``H // 4``: 16 patches).
    random_state : int
        Seed of the random prototypes and of the re-initialisation.
    batch_size : int
        Images per forward pass.

    Returns
    -------
    list of ProtocolRecord
        Step 0 (decomposition) first, then the cascade in order.

    Example
    -------
    >>> import torch, torchvision
    >>> from kmexplain_utils import Explainer
    >>> net = torchvision.models.resnet18(weights=None, num_classes=2).eval()
    >>> x, y = torch.rand(8, 3, 64, 64), torch.tensor([0, 1] * 4)
    >>> recs = randomisation_protocol(net, ["B4"], x, fit_data=(x, y), n_stages=2, baselines=False)
    >>> sorted({(r.stage, r.method) for r in recs if r.metric == "spearman"})[:2]
    [('B4', 'class-specific'), ('B4', 'contrastive')]
    """
    from ..attribution import cam
    from .baselines import grad_cam, occlusion
    from ..explainer import Explainer
    from .._torch import eval_mode
    from ..resample import resample_map

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(explainers, Explainer):
        explainers = {explainers.level: explainers}
    elif isinstance(explainers, Mapping):
        explainers = dict(explainers)
    else:
        levels = [str(lv) for lv in explainers]
        if fit_data is None:
            raise ValueError("explainers are level names: give fit_data=(train_images, train_labels) to fit them")
        explainers = {lv: Explainer(model, lv, random_state=random_state, device="cpu").fit(*fit_data)
                      for lv in levels}
    for lv, ex in explainers.items():
        if not hasattr(ex, "classifier_"):
            raise ValueError(f"the explainer of {lv!r} is not fitted: call fit(train_images, train_labels) first")
        if not ex.level_features_.has_positions:
            raise ValueError(f"level {lv!r} has no maps: the sanity check needs a spatial level (B4, B234, ...)")
    if isinstance(baselines, bool):
        chosen = set(_BASELINES) if baselines else set()
    elif isinstance(baselines, str):
        raise TypeError(f"baselines must be a bool or a sequence of names, got the string {baselines!r}: "
                        f"write baselines=[{baselines!r}]")
    else:
        chosen = {str(b) for b in baselines}
        unknown = sorted(chosen - set(_BASELINES))
        if unknown:
            raise ValueError(f"unknown baseline(s) {unknown}: choose among {list(_BASELINES)}")
    x = images.detach().cpu().float()
    n, size = x.shape[0], tuple(x.shape[-2:])
    if n < 2:
        raise ValueError(f"give at least 2 images, got {n}")
    patch = int(occlusion_patch or max(1, size[0] // 4))
    batches = [slice(s, s + batch_size) for s in range(0, n, batch_size)]
    g = torch.Generator().manual_seed(int(random_state))
    trained, rand, win, rival = {}, {}, {}, {}
    with eval_mode(model), torch.no_grad():
        for lv, ex in explainers.items():
            clf = ex.classifier_
            P = clf.prototypes_.detach().cpu().float()
            trained[lv] = P
            rand[lv] = P.mean(0) + P.std(0) * torch.randn(P.shape, generator=g)
            scores, index = clf.best_prototype_per_class(torch.cat([ex.transform(x[b]) for b in batches]))
            scores, index = scores.cpu(), index.cpu()
            col = scores.argmax(1)
            rcol = scores.scatter(1, col[:, None], -torch.inf).argmax(1)
            rows = torch.arange(n)
            win[lv], rival[lv] = index[rows, col], index[rows, rcol]
        dev = next(model.parameters()).device
        pred = torch.cat([model(x[b].to(dev)).argmax(1).cpu() for b in batches])

    records: list[ProtocolRecord] = []
    # step 0: the decomposition of the trained maps
    for lv, ex in explainers.items():
        parts = [split_prototype_maps(ex.level_features_.position_features(model, x[b]).cpu().float(),
                                      trained[lv], win[lv][b]) for b in batches]
        full, shared = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        sh, sp = variance_shares(full, shared)
        for metric, v in (("shared_share", sh), ("specific_share", sp), ("shared_spearman", spearman_maps(full, shared))):
            records.append(ProtocolRecord(0, "trained", lv, "kmeans", metric, *_stat(v), v))

    def maps(net: nn.Module, xb: torch.Tensor, b: slice) -> dict[str, torch.Tensor]:
        protos = trained if net is model else rand  # the randomised network has a random k-means head too
        out = {}
        for lv, ex in explainers.items():
            lf = ex.level_features_
            feats = lf.position_features(net, xb).cpu().float()
            full, shared, specific = split_prototype_maps(feats, protos[lv], win[lv][b])
            other = split_prototype_maps(feats, protos[lv], rival[lv][b])[0]
            for method, m in (("kmeans", full), ("contrastive", full - other), ("class-specific", specific),
                              ("shared", shared)):
                out[f"{lv}/{method}"] = resample_map(m, lf.grid_geometry_, size)
        if chosen:
            ndev = next(net.parameters()).device
            t = pred[b].to(ndev)
        if "cam" in chosen:
            out["B4/cam"] = cam(net, xb.to(ndev), target=t, size=size).float().cpu()
        if "gradcam" in chosen:
            out["B3/gradcam"] = grad_cam(net, xb.to(ndev), t, block="B3", size=size).float().cpu()
        if "occlusion" in chosen:
            out["pixel/occlusion"] = occlusion(net, xb, pred[b], patch=patch, stride=patch)
        return out

    def explain_fn(net: nn.Module, xx: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = [maps(net, xx[b], b) for b in batches]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    stages = randomization_stages(model)
    if n_stages is not None:
        stages = stages[: max(1, int(n_stages))]
    for r in cascading_randomization(model, explain_fn, x, layers=stages, random_state=random_state):
        lv, method = r.method.split("/")
        records.append(ProtocolRecord(r.step, r.stage, lv, method, "spearman", *_stat(r.per_image), r.per_image))
    return records


def verdicts(records: Sequence[ProtocolRecord], *, threshold: float = PASS_THRESHOLD,
             stage: str = PASS_STAGE) -> dict[tuple[str, str], bool]:
    """Which maps pass: median rank correlation after ``stage`` is randomised below ``threshold``.

    Parameters
    ----------
    records : sequence of ProtocolRecord
        From :func:`randomisation_protocol` (one seed; for several seeds, a map passes when it passes
        on each: combine with ``all``).
    threshold : float
    stage : str
        The stage whose step the rule reads (default :data:`PASS_STAGE`, ``"B4"``).

    Returns
    -------
    dict of (level, method) to bool

    Example
    -------
    >>> import numpy as np
    >>> r = [ProtocolRecord(2, "B4", "B4", "kmeans", "spearman", 0.9, 0.9, np.array([0.9]))]
    >>> verdicts(r)
    {('B4', 'kmeans'): False}
    """
    out = {(r.level, r.method): bool(r.median < threshold) for r in records
           if r.metric == "spearman" and r.stage == stage}
    if not out:
        raise ValueError(f"no rank correlation recorded after stage {stage!r}: was the cascade cut before it?")
    return out
