"""Part interventions: what a model really uses, measured by re-rendering (METHOD section 7).

The generated creatures (:mod:`kmexplain_utils.data.parts`) can be re-rendered with a part
removed, an attribute swapped or the distractors removed, every other pixel bit-identical
(:func:`kmexplain_utils.data.parts.intervene`). That gives, for every test image, a ground truth
of *use*, as FunnyBirds (Hesse, Schaub-Meyer and Roth, ICCV 2023) measures it on its rendered
birds:

- :func:`render_interventions` -- the scenes of the first ``n`` test images re-rendered without
  each removable part, with each class attribute swapped to its other value, and without the
  distractors (model-independent: rendered once per process and shared by every seed);
- :func:`measure_interventions` -- for one seed (run by
  :func:`~kmexplain_utils.evaluation.run.run_evaluation`), the records ``intervention_*``:

  * the ground truth of use: per part, the drop of the network's logit and of every level's
    k-means best prototype score of the class each model predicts (``intervention_drop``), of
    its probability (``intervention_prob_drop``) and the share of decisions that change
    (``intervention_flip``); per attribute, the share of decisions that follow a swap to the
    new class (``intervention_swap_follow``);
  * single deletion: per image, the Spearman correlation between a map's mass on each part
    (:func:`part_masses`) and the measured drop (:func:`intervention_effects`,
    :func:`single_deletion`) of the model the map explains; mean and sd over images
    (``intervention_single_deletion``, ``intervention_single_deletion_sd``);
  * target sensitivity: on images whose top two classes differ in one attribute and whose
    decision between them flips when that attribute is swapped, the contrastive map's positive
    mass on the part carrying it (``intervention_target_mass``, ``..._peak``, the part's
    share of the pixels, ``intervention_target_chance``, and the share of maps whose largest
    positive part mass is on it, ``intervention_target_top``);
  * background independence: when the distractors are removed, the share of decisions that
    change (``intervention_background_flip``), the mean absolute change of the predicted class's
    probability (``intervention_background_prob_change``), the rank correlation of each map
    before and after (``intervention_background_map_spearman``) and each map's energy on the
    distractor pixels (``intervention_background_energy``; their area share as method ``area``).

Every map is scored against the model it explains: a k-means map (and its concept
contributions) against its level's k-means classifier, CAM, Grad-CAM, occlusion and the random
map against the network. :func:`intervention_table`, :func:`plot_interventions` and the
``*_reading`` functions turn the records into the chapter's tables, figure and sentences.

This module imports nothing of :mod:`~kmexplain_utils.evaluation.run` (which imports it): the
evaluation's own map set reaches :func:`measure_interventions` as the callables ``explain`` and
``contrast``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "ATTRIBUTES",
    "INTERVENTION_METRICS",
    "InterventionScenes",
    "attribute_moves_reading",
    "background_reading",
    "deciding_part",
    "intervention_effects",
    "intervention_profile",
    "intervention_table",
    "measure_interventions",
    "part_masses",
    "plot_intervention",
    "plot_interventions",
    "record_interventions",
    "render_interventions",
    "scores_under",
    "single_deletion",
    "showcase_reading",
    "single_deletion_reading",
    "target_reading",
    "use_reading",
]

#: the class attributes of the generated creatures, each carried by the part of the same name
ATTRIBUTES = ("head", "tail", "marking")

def intervention_profile(profile: Any) -> Any:
    """The profile whose data can be re-rendered: ``profile`` itself on the generated benchmark.

    Interventions re-render scenes, so they need the generated data set (``"parts"``): the
    photographs of CUB-200-2011 or Oxford-IIIT Pet cannot be redrawn without a part. For such a
    profile this returns the generated benchmark's profile of the same scale: ``"smoke"`` for a
    smoke profile (e.g. ``"paper-smoke"``), else ``"quick"``.

    Parameters
    ----------
    profile : Profile
        The run's profile (:func:`kmexplain_utils.config.get_profile`).

    Returns
    -------
    Profile

    Examples
    --------
    >>> from kmexplain_utils.config import get_profile
    >>> intervention_profile(get_profile("paper-smoke")).name, intervention_profile(get_profile("quick")).name
    ('smoke', 'quick')
    """
    from ..config import get_profile

    if profile.dataset == "parts":
        return profile
    return get_profile("smoke" if profile.name.endswith("smoke") else "quick")


#: metric name -> what it is (merged into :data:`kmexplain_utils.evaluation.run.METRICS`)
INTERVENTION_METRICS: dict[str, str] = {
    "intervention_drop": "mean over images of the drop of the predicted class's score (the network's logit, "
    "a k-means level's best prototype score) when the part (column part) is removed by re-rendering",
    "intervention_prob_drop": "the same for the predicted class's probability (k-means: softmax of the scores "
    "divided by the fitted temperature)",
    "intervention_flip": "share of images whose predicted class changes when the part is removed",
    "intervention_swap_follow": "share of correctly classified images whose prediction becomes the new class "
    "when the attribute (column part) is swapped to its other value",
    "intervention_single_deletion": "mean over images of the Spearman correlation between a map's mass on "
    "each part and the drop of the explained model's score when that part is removed by re-rendering",
    "intervention_single_deletion_sd": "standard deviation over images of the same correlation",
    "intervention_target_mass": "share of a contrastive map's positive mass on the part whose swap flips the "
    "decision between the top two classes (images where the swap flips it for the explained model)",
    "intervention_target_peak": "share of those contrastive maps whose maximum lies on that part",
    "intervention_target_chance": "that part's share of the pixels (a random map's expected mass)",
    "intervention_target_top": "share of those contrastive maps whose largest positive mass over the object parts "
    "is on that part (METHOD section 7)",
    "intervention_background_flip": "share of images whose predicted class changes when the distractors are removed",
    "intervention_background_prob_change": "mean |change| of the predicted class's probability when the "
    "distractors are removed",
    "intervention_background_map_spearman": "mean over images of the Spearman correlation of a map before and "
    "after the distractors are removed (1 = unchanged)",
    "intervention_background_energy": "share of a map's (min-shifted) energy on the distractor pixels; method "
    "'area': their share of the pixels",
}


def deciding_part(class_names: Sequence[str], part_names: Sequence[str], c1: int, c2: int) -> int:
    """Part label that decides between classes ``c1`` and ``c2``, or ``-1``.

    For the generated creatures (class names ``"<head>-<tail type>-<marking>"``, see
    :mod:`kmexplain_utils.data.parts`): when the two classes differ in exactly one attribute, the
    part carrying it (``"head"``, ``"tail"`` or ``"marking"``); otherwise ``-1``.

    Example
    -------
    >>> deciding_part(["red-pointed-striped", "red-round-striped"],
    ...               ["background", "body", "head", "tail", "legs", "marking"], 0, 1)
    3
    """
    a, b = str(class_names[int(c1)]).split("-"), str(class_names[int(c2)]).split("-")
    if len(a) != 3 or len(b) != 3 or not set(ATTRIBUTES) <= set(part_names):
        return -1
    diff = [ATTRIBUTES[i] for i in range(3) if a[i] != b[i]]
    return list(part_names).index(diff[0]) if len(diff) == 1 else -1


# ----------------------------------------------------------------------------- the four measurements
def part_masses(maps: torch.Tensor, parts: torch.Tensor, n_parts: int) -> torch.Tensor:
    """An explanation's mass on each part: ``M_k = sum of the map over part k's pixels`` (METHOD section 7).

    Parameters
    ----------
    maps : torch.Tensor
        ``(N, H, W)`` maps at image size (registered).
    parts : torch.Tensor
        ``(N, H, W)`` integer part labels.
    n_parts : int

    Returns
    -------
    torch.Tensor
        ``(N, n_parts)`` float64; ``nan`` for a part absent from the image.

    Example
    -------
    >>> part_masses(torch.tensor([[[1., 2], [3, 4]]]), torch.tensor([[[0, 1], [1, 2]]]), 4).tolist()
    [[1.0, 5.0, 4.0, nan]]
    """
    if maps.shape != parts.shape or maps.ndim != 3:
        raise ValueError(f"maps and parts must both be (N, H, W), got {tuple(maps.shape)} and {tuple(parts.shape)}")
    m = maps.detach().double().flatten(1).cpu()
    lab = parts.long().flatten(1).cpu()
    if lab.numel() and (lab.min() < 0 or lab.max() >= n_parts):
        raise ValueError(f"part labels must lie in [0, {n_parts}), got [{int(lab.min())}, {int(lab.max())}]")
    out = torch.zeros(m.shape[0], int(n_parts), dtype=torch.float64).scatter_add_(1, lab, m)
    count = torch.zeros_like(out).scatter_add_(1, lab, torch.ones_like(m))
    return out.masked_fill(count == 0, float("nan"))


def intervention_effects(score: Any, images: torch.Tensor, without: dict[int, torch.Tensor],
                         target: torch.Tensor, n_parts: int, *, batch_size: int = 200) -> torch.Tensor:
    """``effect_k(x) = score_c(x) - score_c(x without part k)`` for every image and part.

    Parameters
    ----------
    score : callable
        ``score(images (B, 3, H, W)) -> (B, C)`` class scores (a network's logits, a k-means
        classifier's best prototype scores, or probabilities).
    images : torch.Tensor
        ``(N, 3, H, W)`` the original scenes.
    without : dict of int to torch.Tensor
        ``{k: (N, 3, H, W)}`` the same scenes re-rendered without part ``k`` (a part absent from an
        image may be given unchanged: its effect is then 0, and :func:`single_deletion` skips it
        through the part masses).
    target : torch.Tensor
        ``(N,)`` the column ``c`` scored.
    n_parts : int

    Returns
    -------
    torch.Tensor
        ``(N, n_parts)`` float64; ``nan`` for the parts not in ``without``.
    """
    t = torch.as_tensor(target).long().reshape(-1)
    if t.numel() != images.shape[0]:
        raise ValueError(f"target must have shape (N,) = ({images.shape[0]},), got {tuple(t.shape)}")
    base = scores_under(score, images, batch_size=batch_size).gather(1, t[:, None])[:, 0]
    out = torch.full((images.shape[0], int(n_parts)), float("nan"), dtype=torch.float64)
    for k, xk in without.items():
        if xk.shape != images.shape:
            raise ValueError(f"the scenes without part {k} have shape {tuple(xk.shape)}, not {tuple(images.shape)}")
        if not 0 <= int(k) < int(n_parts):
            raise ValueError(f"part {k} of `without` is not in [0, {n_parts})")
        out[:, int(k)] = base - scores_under(score, xk, batch_size=batch_size).gather(1, t[:, None])[:, 0]
    return out


def single_deletion(masses: torch.Tensor, effects: torch.Tensor, *, min_parts: int = 3) -> np.ndarray:
    """FunnyBirds' single deletion: per image, Spearman correlation between part masses and effects.

    Parts where either is ``nan`` (absent, or not intervened on) are left out; an image with fewer
    than ``min_parts`` parts left (or a constant vector) gives ``nan``.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` correlations in ``[-1, 1]``.

    Example
    -------
    >>> m = torch.tensor([[1., 2, 3, float("nan")]]); e = torch.tensor([[0.1, 0.5, 0.9, 2.0]])
    >>> single_deletion(m, e).tolist()
    [1.0]
    """
    from .sanity import spearman_maps

    if masses.shape != effects.shape or masses.ndim != 2:
        raise ValueError(f"masses and effects must both be (N, parts), got {tuple(masses.shape)} and "
                         f"{tuple(effects.shape)}")
    M, E = masses.double().cpu().numpy(), effects.double().cpu().numpy()
    out = np.full(M.shape[0], np.nan)
    for i in range(M.shape[0]):
        ok = np.isfinite(M[i]) & np.isfinite(E[i])
        if ok.sum() >= min_parts:
            out[i] = spearman_maps(M[i][ok][None], E[i][ok][None])[0]
    return out


def record_interventions(rec: Any, seed: int, level: str, method: str, correlations: np.ndarray, *,
                         note: str | None = None) -> None:
    """Add ``intervention_single_deletion`` (mean over images, ``n`` = images scored) and its sd."""
    ok = np.isfinite(correlations)
    vals = np.asarray(correlations)[ok]
    rec.add(seed, level, method, "intervention_single_deletion", float(vals.mean()) if ok.any() else float("nan"),
            int(ok.sum()), note=note)
    rec.add(seed, level, method, "intervention_single_deletion_sd",
            float(vals.std(ddof=1)) if ok.sum() > 1 else float("nan"), int(ok.sum()), note=note)


def scores_under(score: Any, images: torch.Tensor, *, batch_size: int = 200) -> torch.Tensor:
    """``score(images)`` in batches, without gradients: ``(N, C)`` float64 on the CPU.

    A ``torch.nn.Module`` is run in eval mode, and every module's train/eval flag is restored
    afterwards (a user's network is left as it was found: no batch-norm statistic moves).
    """
    import contextlib

    from .._torch import eval_mode

    if images.ndim != 4:
        raise ValueError(f"images must be (N, 3, H, W), got shape {tuple(images.shape)}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = _device_of(score)
    mode = eval_mode(score) if isinstance(score, torch.nn.Module) else contextlib.nullcontext()
    with torch.no_grad(), mode:
        out = [torch.as_tensor(score(images[s:s + batch_size].to(dev))).detach().double().cpu()
               for s in range(0, images.shape[0], int(batch_size))]
    return torch.cat(out) if out else torch.zeros(0, 0, dtype=torch.float64)


def _device_of(score: Any) -> torch.device:
    params = getattr(score, "parameters", None)
    p = next(params(), None) if callable(params) else None
    return p.device if p is not None else torch.device("cpu")


# ----------------------------------------------------------------------------- the re-rendered scenes
@dataclasses.dataclass(frozen=True)
class InterventionScenes:
    """The first ``n`` scenes of a generated split and their interventions (all ``(n, ...)``, CPU).

    Attributes
    ----------
    images, parts, labels : torch.Tensor
        The original scenes: ``(n, 3, H, W)``, ``(n, H, W)`` int64, ``(n,)``.
    removed : tuple of str
        The parts removed, one at a time (:data:`kmexplain_utils.data.parts.REMOVABLE_PARTS`).
    without, without_parts : dict of str to torch.Tensor
        Images ``(n, 3, H, W)`` and part maps ``(n, H, W)`` without each part.
    footprints : dict of str to torch.Tensor
        ``(n, H, W)`` bool: the pixels the part covered (the body's includes the marking painted
        on it, which goes with it).
    swapped, swapped_labels : dict of str to torch.Tensor
        Images with the attribute (:data:`ATTRIBUTES`) swapped to its other value, and their
        new classes ``(n,)``.
    no_distractors, no_distractor_parts : torch.Tensor
        The scenes without their distractors, and their part maps.
    part_names : tuple of str
    """

    images: torch.Tensor
    parts: torch.Tensor
    labels: torch.Tensor
    removed: tuple[str, ...]
    without: dict[str, torch.Tensor]
    without_parts: dict[str, torch.Tensor]
    footprints: dict[str, torch.Tensor]
    swapped: dict[str, torch.Tensor]
    swapped_labels: dict[str, torch.Tensor]
    no_distractors: torch.Tensor
    no_distractor_parts: torch.Tensor
    part_names: tuple[str, ...]

    @property
    def distractor_pixels(self) -> torch.Tensor:
        """``(n, H, W)`` bool: the pixels that change when the distractors are removed."""
        return (self.images != self.no_distractors).any(1)


def render_interventions(source: Any, n: int) -> InterventionScenes:
    """Re-render the first ``n`` scenes of a generated split with every intervention (batched).

    Each intervention is one call of :func:`kmexplain_utils.data.parts.intervene` for all ``n``
    scenes at once (a swap: one call per new value). The result depends only on the split, so it
    is kept for the process (the last two splits) and shared by every seed; do not modify its
    tensors.

    Parameters
    ----------
    source : ImageSet or SceneSource
        A generated split (:func:`kmexplain_utils.data.parts.make_parts`, e.g.
        ``load_dataset("parts", "test", ...)``) or its ``scene_source``.
    n : int
        Number of scenes, from the first.

    Returns
    -------
    InterventionScenes
    """
    from ..data.parts import SceneSource

    src = source if isinstance(source, SceneSource) else getattr(source, "scene_source", None)
    if not isinstance(src, SceneSource):
        raise TypeError(
            f"interventions need a generated split (the 'parts' data set, which carries .scene_source); got "
            f"{getattr(source, 'name', type(source).__name__)!r}. Real photographs cannot be re-rendered: "
            "run the evaluation with include_interventions=False on them.")
    if int(n) < 1:
        raise ValueError(f"n must be >= 1 scene, got {n}")
    return _render_cached(src, int(n))


@functools.lru_cache(maxsize=2)
def _render_cached(src: Any, n: int) -> InterventionScenes:
    from ..data.parts import PART_NAMES, REMOVABLE_PARTS, class_attributes, class_names, intervene

    idx = torch.arange(n)
    images, parts, labels = intervene(src, idx)
    without, without_parts, footprints = {}, {}, {}
    for part in REMOVABLE_PARTS:
        without[part], without_parts[part], _ = intervene(src, idx, remove=part)
        foot = parts == PART_NAMES.index(part)
        if part == "body":  # the marking painted on the body goes with it
            foot = foot | (parts == PART_NAMES.index("marking"))
        footprints[part] = foot
    n_classes = len(class_names(src.design))
    table = [class_attributes(c, src.design) for c in range(n_classes)]
    swapped, swapped_labels = {}, {}
    for attr in ATTRIBUTES:
        values = list(dict.fromkeys(row[attr] for row in table))
        now = [values.index(table[int(c)][attr]) for c in labels.tolist()]
        target = torch.tensor([(v + 1) % len(values) for v in now])  # the other value (the next one)
        img, lab = images.clone(), labels.clone()
        for v in torch.unique(target).tolist():
            rows = (target == v).nonzero()[:, 0]
            img[rows], _, lab[rows] = intervene(src, rows, swap={attr: values[v]})
        swapped[attr], swapped_labels[attr] = img, lab
    nd, nd_parts, _ = intervene(src, idx, remove_distractors=True)
    return InterventionScenes(images, parts, labels, tuple(REMOVABLE_PARTS), without, without_parts, footprints,
                              swapped, swapped_labels, nd, nd_parts, tuple(PART_NAMES))


# ----------------------------------------------------------------------------- the measurement of one seed
def _models(d: Any) -> dict[str, tuple[str, str, Any, float]]:
    """``key -> (level, method, scorer, temperature)``: the network and every level's k-means classifier."""
    from ..scores import KMeansScoreModel

    out: dict[str, tuple[str, str, Any, float]] = {"network": ("B4", "linear", d.model, 1.0)}
    for sp in d.specs:
        if sp.classify and sp.level != "logits" and sp.registration == "exact" and sp.grid is None:
            # raw best prototype scores; the fitted temperature enters the probabilities only
            scorer = KMeansScoreModel(d.model, d.lfs[sp.name], d.clfs[sp.name])
            out[sp.name] = (sp.label, "kmeans", scorer, float(d.temperatures.get(sp.name, 1.0)))
    return out


def _model_of(d: Any, level: str, method: str, name: str | None) -> str:
    """The key in :func:`_models` of the model that the map ``(level, method)`` explains."""
    if name is None:
        return "network"
    sp = d.spec(name)
    return name if sp.classify else (sp.level if sp.grid is None else "B4")


def _concept_maps(d: Any, sh: Any, att: dict, n: int) -> dict[tuple[str, str], tuple]:
    """Concept contributions as maps: each pixel holds the mean of the k-means map over its concept."""
    from ..attribution import concept_contributions

    out = {}
    for key in d.cms:
        name, K, per_class = key
        sp = d.spec(name)
        if K != sh.profile.n_concepts or per_class or not sp.classify or (sp.label, "kmeans") not in att:
            continue
        maps, labels, _ = att[(sp.label, "kmeans")]
        cp = d.up(d.cmaps_test[key][:n], name, sh.size).long()
        k_total = int(d.cms[key].n_concepts_total_)
        contrib = concept_contributions(maps.double(), cp, k_total)  # (n, K'): sum_k = mean of the map
        area = torch.zeros_like(contrib).scatter_add_(1, cp.flatten(1), torch.ones_like(maps.double()).flatten(1))
        per_pixel = (contrib * cp[0].numel() / area.clamp_min(1)).gather(1, cp.flatten(1)).view_as(maps)
        out[(sp.label, "concepts")] = (per_pixel.float(), labels, name)
    return out


def measure_interventions(sh: Any, d: Any, rec: Any, *, explain: Callable[[torch.Tensor], dict],
                          contrast: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], dict] | None = None,
                          maps: dict | None = None, n_images: int | None = None,
                          batch_size: int = 200) -> dict[str, Any]:
    """Every ``intervention_*`` record of one seed (see the module docstring); returns what it measured.

    Parameters
    ----------
    sh : SharedData
        The evaluation's data step (:func:`~kmexplain_utils.evaluation.run.load_data`) on a
        generated split (``sh.test`` carries ``scene_source``).
    d : SeedData
        One prepared seed (:func:`~kmexplain_utils.evaluation.run.prepare_seed`).
    rec : Recorder
        Where the records go.
    explain : callable
        ``explain(images (n, 3, H, W)) -> {(level, method): (maps (n, H, W), class explained (n,),
        spec name or None)}``: the evaluation's map set (``_attribution_set`` of
        :mod:`~kmexplain_utils.evaluation.run`); a spec name means a k-means map of that spec.
    contrast : callable, optional
        ``contrast(images, c1 (m,), c2 (m,)) -> {(level, method): maps (m, H, W)}``, the contrastive
        maps of :func:`~kmexplain_utils.evaluation.run.measure_contrastive`; ``None``: no target
        sensitivity.
    maps : dict, optional
        ``explain`` already applied to the first ``n_images`` test images (reused).
    n_images : int, optional
        Test images scored, from the first (default ``sh.n_eval``).
    batch_size : int, default 200

    Returns
    -------
    dict
        ``"scenes"`` (:class:`InterventionScenes`), ``"drops"`` (``{model key: (n, parts)}`` score
        drops of the predicted class), ``"predictions"`` and ``"scores"`` (``{model key: {variant:
        (n,) or (n, C)}}``, variants ``"original"``, ``"-<part>"``, ``"swap <attribute>"``,
        ``"no distractors"``; model keys ``"network"`` and the levels), ``"temperatures"``,
        ``"correlations"`` (``{(level, method): (n,)}``), ``"maps"`` and ``"maps_no_distractors"``.
    """
    from . import metrics
    from .sanity import spearman_maps

    n = int(sh.n_eval if n_images is None else n_images)
    if n < 1:
        raise ValueError(f"n_images must be >= 1, got {n}")
    if n > len(sh.test):
        raise ValueError(f"n_images = {n} exceeds the {len(sh.test)} test images")
    sc = render_interventions(sh.test, n)
    names, n_parts = list(sh.part_names), len(sh.part_names)
    if list(sc.part_names) != names:
        raise ValueError(f"the test set's part names {names} are not the generator's {list(sc.part_names)}")
    x = sc.images
    if maps is None:
        maps = explain(x)
    maps = {**maps, **_concept_maps(d, sh, maps, n)}
    models = _models(d)
    variants = {"original": x, **{f"-{p}": sc.without[p] for p in sc.removed},
                **{f"swap {a}": sc.swapped[a] for a in ATTRIBUTES}, "no distractors": sc.no_distractors}
    S = {key: {v: scores_under(m[2], xv, batch_size=batch_size) for v, xv in variants.items()}
         for key, m in models.items()}
    pred = {key: {v: s.argmax(1) for v, s in table.items()} for key, table in S.items()}
    out: dict[str, Any] = {"scenes": sc, "drops": {}, "predictions": pred, "scores": S, "correlations": {},
                           "maps": maps, "temperatures": {k: m[3] for k, m in models.items()}}

    # the ground truth of use, per model and part
    for key, (lv, method, _, temp) in models.items():
        c = pred[key]["original"][:, None]
        p0 = torch.softmax(S[key]["original"] / temp, 1).gather(1, c)[:, 0]
        base = S[key]["original"].gather(1, c)[:, 0]
        drops = torch.full((n, n_parts), float("nan"), dtype=torch.float64)
        what = "logit" if key == "network" else "best prototype score"
        for part in sc.removed:
            k = names.index(part)
            present = sc.footprints[part].flatten(1).any(1)
            drop = base - S[key][f"-{part}"].gather(1, c)[:, 0]
            drops[:, k] = torch.where(present, drop, torch.full_like(drop, float("nan")))
            pdrop = p0 - torch.softmax(S[key][f"-{part}"] / temp, 1).gather(1, c)[:, 0]
            flip = (pred[key][f"-{part}"] != c[:, 0]).double()
            m = int(present.sum())
            for metric, v in (("intervention_drop", drop), ("intervention_prob_drop", pdrop),
                              ("intervention_flip", flip)):
                rec.add(d.seed, lv, method, metric, float(v[present].mean()) if m else float("nan"), m, part=part,
                        note=f"{what} of the predicted class")
        out["drops"][key] = drops
        right = pred[key]["original"] == _columns(d, key, sc.labels)
        for attr in ATTRIBUTES:
            follow = pred[key][f"swap {attr}"] == _columns(d, key, sc.swapped_labels[attr])
            m = int(right.sum())
            rec.add(d.seed, lv, method, "intervention_swap_follow", float(follow[right].double().mean()) if m else
                    float("nan"), m, part=attr, note="correctly classified images")
        nd = pred[key]["no distractors"]
        p_nd = torch.softmax(S[key]["no distractors"] / temp, 1).gather(1, c)[:, 0]
        rec.add(d.seed, lv, method, "intervention_background_flip", float((nd != c[:, 0]).double().mean()), n)
        rec.add(d.seed, lv, method, "intervention_background_prob_change", float((p_nd - p0).abs().mean()), n)

    # single deletion: every map against the drop of the model it explains (the class it explains)
    for (lv, method), (mp, explained, name) in maps.items():
        key = _model_of(d, lv, method, name)
        cols = _columns(d, key, explained)
        base = S[key]["original"].gather(1, cols[:, None])[:, 0]
        eff = torch.full((n, n_parts), float("nan"), dtype=torch.float64)
        masses = torch.full((n, n_parts), float("nan"), dtype=torch.float64)
        pm = part_masses(mp, sc.parts, n_parts)
        for part in sc.removed:
            k = names.index(part)
            eff[:, k] = base - S[key][f"-{part}"].gather(1, cols[:, None])[:, 0]
            # the mass on what is removed: the body's footprint holds the marking too
            masses[:, k] = (mp.double() * sc.footprints[part]).flatten(1).sum(1)
            masses[:, k] = torch.where(torch.isfinite(pm[:, k]), masses[:, k], torch.full_like(masses[:, k], np.nan))
        rho = single_deletion(masses, eff)
        out["correlations"][(lv, method)] = rho
        on = "the network" if key == "network" else f"k-means {models[key][0]}"
        record_interventions(rec, d.seed, lv, method, rho, note=f"drop of the explained class's score on {on}")

    # background independence of the maps
    area = sc.distractor_pixels
    rec.add(d.seed, "pixel", "area", "intervention_background_energy", float(area.double().mean()), n)
    after = explain(sc.no_distractors)
    after = {**after, **_concept_maps_after(d, sh, after, maps, n)}
    out["maps_no_distractors"] = after
    for (lv, method), (mp, _, _) in maps.items():
        if (lv, method) not in after:
            continue
        rho = spearman_maps(mp, after[(lv, method)][0])
        ok = np.isfinite(rho)
        rec.add(d.seed, lv, method, "intervention_background_map_spearman",
                float(rho[ok].mean()) if ok.any() else float("nan"), int(ok.sum()))
        has = area.flatten(1).any(1)
        energy = metrics.energy_in_mask(mp[has], area[has])
        ok = np.isfinite(energy)
        rec.add(d.seed, lv, method, "intervention_background_energy",
                float(energy[ok].mean()) if ok.any() else float("nan"), int(ok.sum()))

    if contrast is not None:
        _target_sensitivity(sh, d, rec, sc, S, pred, models, contrast)
    return out


def _concept_maps_after(d: Any, sh: Any, after: dict, before: dict, n: int) -> dict:
    """Concept-contribution maps of the scenes without distractors (concepts of the original scenes).

    The concept map is not recomputed: the distractors lie on the background, whose concepts are
    read from the original scene; only the k-means map under it changes.
    """
    return _concept_maps(d, sh, after, n) if any(m == "concepts" for _, m in before) else {}


def _columns(d: Any, key: str, labels: torch.Tensor) -> torch.Tensor:
    """Columns of class ``labels`` in the scores of model ``key`` (the network: the labels themselves)."""
    labels = torch.as_tensor(labels).long().cpu()
    if key == "network":
        return labels
    return torch.as_tensor(d.clfs[key].class_columns(labels, n=labels.numel())).long().cpu()


def _target_sensitivity(sh: Any, d: Any, rec: Any, sc: InterventionScenes, S: dict, pred: dict, models: dict,
                        contrast: Callable) -> None:
    """Contrastive maps against the part whose swap flips the decision between the top two classes."""
    from . import metrics

    class_names = list(getattr(sh.test, "class_names", []) or [])
    if not class_names:
        return
    names = list(sh.part_names)
    top2 = S["network"]["original"].topk(2, dim=1).indices
    dec = torch.tensor([deciding_part(class_names, names, int(a), int(b)) for a, b in top2.tolist()])
    rows = (dec >= 0).nonzero()[:, 0]
    if rows.numel() == 0:
        return
    c1, c2, dp = top2[rows, 0], top2[rows, 1], dec[rows]
    cmaps = contrast(sc.images[rows], c1, c2)
    for (lv, method), mp in cmaps.items():
        key = lv if (method == "kmeans" and lv in models) else "network"
        a, b = _columns(d, key, c1), _columns(d, key, c2)
        flips = torch.zeros(rows.numel(), dtype=torch.bool)
        for attr in ATTRIBUTES:
            sel = dp == names.index(attr)
            before = S[key]["original"][rows]
            after = S[key][f"swap {attr}"][rows]
            margin0 = before.gather(1, a[:, None])[:, 0] - before.gather(1, b[:, None])[:, 0]
            margin1 = after.gather(1, a[:, None])[:, 0] - after.gather(1, b[:, None])[:, 0]
            flips |= sel & (torch.sign(margin0) != torch.sign(margin1))
        m = int(flips.sum())
        s = metrics.deciding_part_scores(mp[flips], sc.parts[rows][flips], dp[flips]) if m else None
        note = f"{m} of {rows.numel()} images whose top two classes differ in one attribute flip when it is swapped"
        if m:  # METHOD 7: is the flipping part the object part with the largest (positive) mass?
            pm = part_masses(mp[flips].clamp_min(0), sc.parts[rows][flips], len(names))[:, 1:]
            top = (pm.nan_to_num(-1.0).argmax(1) + 1 == dp[flips]).double().numpy()
        else:
            top = np.zeros(0)
        rec.add(d.seed, lv, method, "intervention_target_top", float(top.mean()) if m else float("nan"), m, note=note)
        for metric, attr_name in (("intervention_target_mass", "mass"), ("intervention_target_peak", "peak"),
                                  ("intervention_target_chance", "part_share")):
            v = np.asarray(getattr(s, attr_name), dtype=float) if s is not None else np.zeros(0)
            ok = np.isfinite(v)
            rec.add(d.seed, lv, method, metric, float(v[ok].mean()) if ok.any() else float("nan"), int(ok.sum()),
                    note=note)


# ----------------------------------------------------------------------------- the records, reported
def _label(level: str, method: str) -> str:
    from ..plotting import method_label

    if method == "concepts":
        return f"concept contributions {level}"
    if method == "linear":
        return "network (linear head)"
    return method_label(level, method)


def _stat(df: Any, metric: str, **eq: Any) -> Any:
    """Mean and sd over seeds of ``metric`` per (level, method[, part]) (pandas DataFrame)."""
    sel = df[df["metric"] == metric]
    for k, v in eq.items():
        sel = sel[sel[k] == v]
    keys = ["level", "method"] + (["part"] if sel["part"].notna().any() else [])
    g = sel.groupby(keys, sort=False)["value"]
    return g.agg(["mean", "std", "count"])


def intervention_table(df: Any, kind: str = "maps") -> Any:
    """The intervention records as one table (mean, and ± sd over seeds where there are several).

    Parameters
    ----------
    df : DataFrame
        Records with ``intervention_*`` rows (:func:`measure_interventions`).
    kind : {"maps", "use"}
        ``"maps"``: one row per map: single deletion (mean over images, then mean ± sd over
        seeds), its spread over images, target sensitivity (mass on the flipping part beside the
        part's pixel share) and background independence (rank correlation of the map before and
        after the distractors go). ``"use"``: one row per model (the network, each level's
        k-means classifier): the share of decisions that change when each part is removed, the
        share that follow each attribute swap, and when the distractors are removed.

    Returns
    -------
    DataFrame
        Cells are strings ``"mean ± sd"``.
    """
    import pandas as pd

    if kind not in ("maps", "use"):
        raise ValueError(f"kind must be 'maps' or 'use', got {kind!r}")
    sel = df[df["metric"].astype(str).str.startswith("intervention_")]
    if sel.empty:
        raise ValueError("no intervention_* records: run measure_interventions (run_evaluation(..., "
                         "include_interventions=True)) first")
    cols = ({"intervention_single_deletion": "single deletion ρ",
             "intervention_single_deletion_sd": "sd over images",
             "intervention_target_mass": "target mass", "intervention_target_chance": "part's share",
             "intervention_target_top": "target part first",
             "intervention_background_map_spearman": "map ρ without distractors"}
            if kind == "maps" else None)
    rows: dict[str, dict[str, str]] = {}
    if kind == "maps":
        for metric, col in cols.items():
            for (lv, m, *_), r in _stat(sel, metric).iterrows():
                rows.setdefault(_label(lv, m), {})[col] = _fmt(r)
        out = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=list(cols.values()))
        out = out.astype(object).where(out.notna(), "")
        out.index.name = "map"
        return out
    for metric, prefix in (("intervention_flip", "removed: "), ("intervention_swap_follow", "swapped: ")):
        for (lv, m, part), r in _stat(sel, metric).iterrows():
            rows.setdefault(_label(lv, m), {})[prefix + str(part)] = _fmt(r, percent=True)
    for (lv, m), r in _stat(sel, "intervention_background_flip").iterrows():
        rows.setdefault(_label(lv, m), {})["distractors removed"] = _fmt(r, percent=True)
    out = pd.DataFrame.from_dict(rows, orient="index")
    out = out.astype(object).where(out.notna(), "")
    out.index.name = "decisions that change (%)"
    return out


def _fmt(r: Any, percent: bool = False) -> str:
    f = 100.0 if percent else 1.0
    mean, sd = f * float(r["mean"]), f * float(r["std"]) if r["count"] > 1 else float("nan")
    digits = 0 if percent else 2
    if not np.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if np.isfinite(sd) else "")


def plot_interventions(df: Any, ax: Any = None):
    """Single deletion of every map: mean over images, mean ± sd over seeds (each seed a dot).

    The random map's value is drawn as a line: a map's mass on a part grows with the part's area,
    and so does, often, the drop when the part goes; the line is what area alone gives.
    """
    import matplotlib.pyplot as plt

    t = _stat(df, "intervention_single_deletion")
    if t.empty:
        raise ValueError("no intervention_single_deletion records: run measure_interventions first")
    t = t.sort_values("mean")
    labels = [_label(lv, m) for lv, m in t.index]
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 0.32 * len(t) + 1.2), layout="constrained")
    y = np.arange(len(t))
    sel = df[df["metric"] == "intervention_single_deletion"]
    for i, (lv, m) in enumerate(t.index):
        v = sel[(sel["level"] == lv) & (sel["method"] == m)]["value"]
        ax.plot(v, [i] * len(v), "o", color="0.6", ms=3, label="one seed" if i == 0 else None)
    colours = ["C3" if m == "random" else "C0" if m in ("kmeans", "concepts") else "C1" for _, m in t.index]
    ax.barh(y, t["mean"], xerr=t["std"].fillna(0), color=colours, alpha=0.8, capsize=2)
    if ("pixel", "random") in t.index:
        ax.axvline(t.loc[("pixel", "random"), "mean"], color="C3", ls="--", lw=1, label="random map")
    ax.set_yticks(y, labels)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlim(-1, 1)
    ax.set_xlabel("Spearman ρ between a map's mass per part and the score drop when the part is removed")
    ax.set_title("Single deletion: does a map rank the parts as removing them does?")
    ax.legend(fontsize="small", loc="lower left", frameon=False)
    return ax.figure


def _mean(df: Any, metric: str, level: str, method: str, part: str | None = None) -> float:
    sel = df[(df["metric"] == metric) & (df["level"] == level) & (df["method"] == method)]
    if part is not None:
        sel = sel[sel["part"] == part]
    return float(sel["value"].mean()) if len(sel) else float("nan")


def use_reading(df: Any, *, follow: float = 0.8) -> str:
    """Does the network use the parts that decide its classes? A sentence generated from the records.

    The rule: the network *uses the deciding parts* when, for every attribute, at least ``follow``
    of its correctly classified images change to the new class when the attribute is swapped
    (``intervention_swap_follow``); removing the legs (not part of the class rule, although their
    colour leans with the class in the generator) is the control. Shortcuts are named where a
    removal of what is not part of the class rule (legs, distractors) changes more decisions than
    removing a deciding part. Removing the body also removes the marking painted on it, and the
    sentence says so.
    """
    swap = {a: _mean(df, "intervention_swap_follow", "B4", "linear", a) for a in ATTRIBUTES}
    flip = {p: _mean(df, "intervention_flip", "B4", "linear", p) for p in ("head", "tail", "marking", "legs", "body")}
    bg = _mean(df, "intervention_background_flip", "B4", "linear")
    if not all(np.isfinite(v) for v in swap.values()):
        return "No attribute swap was measured: nothing can be said about what the network uses."
    uses = all(v >= follow for v in swap.values())
    deciding_min = min(flip[a] for a in ATTRIBUTES)
    shortcuts = [name for name, v in (("the legs", flip["legs"]), ("the distractors", bg)) if v > deciding_min]
    text = ("When an attribute is swapped, the network's decision follows it to the new class on "
            + ", ".join(f"{100 * swap[a]:.0f} % ({a})" for a in ATTRIBUTES)
            + " of the images it classified correctly: "
            + (f"it uses all three deciding parts (rule: at least {100 * follow:.0f} % for each)."
               if uses else f"it does not follow every deciding part (rule: at least {100 * follow:.0f} % for each).")
            + " Removing a part changes its decision on "
            + ", ".join(f"{100 * flip[p]:.0f} % ({_part_words(p)})" for p in flip)
            + " of the images, removing the distractors on "
            f"{100 * bg:.0f} %. ")
    if shortcuts:
        return text + ("Removing " + " and ".join(shortcuts) + ", which are not part of the class rule, changes "
                       "more decisions than removing the least used deciding part: a shortcut.")
    return text + ("No removal of what is not part of the class rule (legs, distractors) changes more decisions "
                   "than removing a deciding part: no shortcut through the legs or the distractors shows.")


def _part_words(part: str) -> str:
    """A removed part as the use reading names it (the body takes the marking painted on it along)."""
    return "body, with the marking painted on it" if part == "body" else part


def single_deletion_reading(df: Any, *, z: float = 2.0) -> str:
    """Which maps rank the parts as their removal does, against the random map (a generated sentence).

    A map lies *above* the random map when its mean correlation exceeds the random map's by more
    than the noise: with several seeds, its mean minus its sd over seeds; with one seed, ``z``
    standard errors of the difference of the two means over images,
    ``z * sqrt(sd_map**2 / n_map + sd_random**2 / n_random)`` (sd over images from the
    ``intervention_single_deletion_sd`` records, the two means treated as independent, which
    overstates the noise of a paired difference). Maps above the random map but not by that
    margin are named as *within the noise*; maps at or below it as *not above it at all*.
    """
    t = _stat(df, "intervention_single_deletion")
    if t.empty:
        return "No single-deletion record."
    t = t.sort_values("mean", ascending=False)
    best = t.index[0]
    rk = ("pixel", "random")
    rnd = float(t.loc[rk, "mean"]) if rk in t.index else float("nan")
    seeds = int(t["count"].max()) > 1
    se: dict = {}
    if not seeds and "n" in df.columns:
        sd = df[df["metric"] == "intervention_single_deletion_sd"].groupby(["level", "method"])["value"].mean()
        n = df[df["metric"] == "intervention_single_deletion"].groupby(["level", "method"])["n"].max()
        se = {k: float(sd[k]) / np.sqrt(float(n[k])) for k in sd.index if k in n.index and float(n[k]) > 0}

    def margin(k: Any, r: Any) -> float:
        if seeds:
            return float(r["std"]) if r["count"] > 1 else 0.0
        return z * float(np.hypot(se[k], se[rk])) if k in se and rk in se else 0.0

    others = [(k, r) for k, r in t.iterrows() if k != rk]
    above = [k for k, r in others if r["mean"] - margin(k, r) > rnd]
    noise = [k for k, r in others if r["mean"] > rnd and k not in above]
    below = [k for k, r in others if r["mean"] <= rnd]
    text = (f"The best map by single deletion is {_label(*best)} (ρ = {t.loc[best, 'mean']:.2f}). The random map "
            f"reaches ρ = {rnd:.2f}: its mass on a part is proportional to the part's area, and so, largely, is "
            "the drop when the part goes, so this is the level that area alone gives, not zero. ")
    if seeds:
        spread = "by more than their seed-to-seed spread"
    elif se:
        n_img = int(df[df["metric"] == "intervention_single_deletion"]["n"].max())
        spread = (f"by more than {z:g} standard errors of the difference (one seed, up to {n_img} images; "
                  "sd over images)")
    else:
        spread = "(one seed and no spread over images recorded: nothing to compare the gap with)"
    text += (f"{len(above)} of {len(others)} maps lie above it {spread}"
             + (": " + ", ".join(_label(*k) for k in above) if above else "") + ". ")
    if noise and (seeds or se):
        text += "Above it, but within that noise: " + ", ".join(_label(*k) for k in noise) + ". "
    if below:
        text += "Not above it at all: " + ", ".join(_label(*k) for k in below) + "."
    return text.rstrip()


def attribute_moves_reading(predictions: Mapping[str, torch.Tensor], class_names: Sequence[str],
                            attribute: str = "tail", removed: Sequence[str] = ("head", "tail")) -> str:
    """How often the network's decision on one attribute changes when a part is removed, by direction.

    Parameters
    ----------
    predictions : mapping
        The network's predicted class per image, ``"original"`` and ``"-<part>"`` for each removed
        part: ``(n,)`` integer tensors (``measure_interventions(...)["predictions"]["network"]``).
    class_names : sequence of str
        ``"<head>-<tail>-<marking>"`` per class (:func:`kmexplain_utils.data.parts.class_names`).
    attribute : {"head", "tail", "marking"}
        The attribute of the decision that is followed.
    removed : sequence of str
        The removed parts, one clause each.

    Returns
    -------
    str
        E.g. ``"The tail decision changes, without the head, on 0 of the 41 read as pointed-tailed
        and 22 of the 39 read as round-tailed; without the tail itself, on ..."``.
    """
    j = ATTRIBUTES.index(attribute)
    value = np.array([str(n).split("-")[j] for n in class_names])  # the attribute of each class
    before = value[predictions["original"].cpu().numpy()]

    suffix = {"head": "-headed", "tail": "-tailed"}.get(attribute, "")  # "pointed-tailed", "striped"

    def moves(part: str) -> str:
        after = value[predictions[f"-{part}"].cpu().numpy()]
        return " and ".join(f"{int(((before == x) & (after != x)).sum())} of the {int((before == x).sum())} "
                            f"read as {x}{suffix}" for x in sorted(set(value)))

    clauses = [f"without the {p}{' itself' if p == attribute else ''}, on {moves(p)}" for p in removed]
    return f"The {attribute} decision changes, " + "; ".join(clauses) + "."


def background_reading(df: Any, *, still: float = 0.9) -> str:
    """Background independence from the records: decisions that change and maps that move when distractors go."""
    bg = _mean(df, "intervention_background_flip", "B4", "linear")
    t = _stat(df, "intervention_background_map_spearman")
    if t.empty or not np.isfinite(bg):
        return "No background-independence record."
    moved = [(_label(*k), r["mean"]) for k, r in t.iterrows() if r["mean"] < still and k != ("pixel", "random")]
    text = (f"Removing the distractors changes the network's decision on {100 * bg:.0f} % of the images. ")
    if moved:
        return text + (f"Maps that move (rank correlation before/after below {still}): "
                       + ", ".join(f"{n} ({v:.2f})" for n, v in moved) + ".")
    return text + f"Every map keeps a rank correlation of at least {still} with itself: they barely move."


def plot_intervention(out: dict, i: int, variant: str, methods: Sequence[tuple[str, str]],
                      class_names: Sequence[str] | None = None, *, ncols: int = 3, size: float = 2.2):
    """One intervention as a picture: the scene before and after, and each method's map.

    The panels come in pairs, one above the other: on top the original image (titled with the
    network's prediction and its probability) or a map of ``methods`` on it; below, the scene
    after the intervention (its prediction and probability) or, for ``variant="distractors"``,
    the map recomputed on it, for a removed part (``variant`` a part name) the same map with
    the part's footprint outlined and titled with its share of the map's positive mass. The
    pairs run left to right, ``ncols`` to a row (the image first, then ``methods`` in order),
    and wrap into further pairs of rows, so that each panel keeps its width in a narrow text
    column.

    Parameters
    ----------
    out : dict
        What :func:`measure_interventions` returned.
    i : int
        Image (row of ``out["scenes"]``).
    variant : str
        A removed part (``"head"``...) or ``"distractors"``.
    methods : sequence of (level, method)
        Keys of ``out["maps"]``.
    class_names : sequence of str, optional
    ncols : int, default 3
        Pairs (columns) per row: 1 + ``len(methods)`` pairs take ``ceil((1 + len(methods)) /
        ncols)`` pairs of rows. Three columns keep each panel above 160 px in a 736 px column.
    size : float, default 2.2
        Inches per panel.

    Returns
    -------
    matplotlib.figure.Figure
        ``2 * ceil((1 + len(methods)) / ncols)`` rows of ``min(ncols, 1 + len(methods))`` axes;
        the axes of unused slots are hidden.
    """
    import matplotlib.pyplot as plt

    from ..plotting import DIVERGING_CMAP

    sc = out["scenes"]
    if variant != "distractors" and variant not in sc.removed:
        raise ValueError(f"variant must be 'distractors' or one of {list(sc.removed)}, got {variant!r}")
    missing = [m for m in methods if m not in out["maps"]]
    if missing:
        raise ValueError(f"no maps {missing}; available: {sorted(out['maps'])}")
    if int(ncols) < 1:
        raise ValueError(f"ncols must be at least 1 (pairs of panels per row), got {ncols}")
    key = "no distractors" if variant == "distractors" else f"-{variant}"
    after_img = sc.no_distractors if variant == "distractors" else sc.without[variant]
    names = list(class_names) if class_names is not None else None
    n_items = 1 + len(methods)
    ncols = min(int(ncols), n_items)
    blocks = -(-n_items // ncols)
    gap = 0.4  # inches between pairs of rows, more than inside a pair
    height = (size + 0.5) * 2 * blocks + gap * (blocks - 1)
    fig = plt.figure(figsize=(size * ncols, height), layout="constrained")
    subs = fig.subfigures(blocks, 1, hspace=gap / height, squeeze=False)[:, 0]
    grid = np.concatenate([sub.subplots(2, ncols, squeeze=False) for sub in subs])  # a block: two rows
    # pair j: its panel before (top) and after (bottom)
    pairs = [(grid[2 * (j // ncols), j % ncols], grid[2 * (j // ncols) + 1, j % ncols]) for j in range(n_items)]
    for ax in grid.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for j in range(n_items, blocks * ncols):
        grid[2 * (j // ncols), j % ncols].set_visible(False)
        grid[2 * (j // ncols) + 1, j % ncols].set_visible(False)
    after_word = "without distractors" if variant == "distractors" else f"without {variant}"

    def title(v: str) -> str:
        s = out["scores"]["network"][v][i]
        c = int(s.argmax())
        p = float(torch.softmax(s, 0)[c])
        return f"{names[c] if names else c}\np = {p:.2f}"

    for r, (img, v) in enumerate(((sc.images, "original"), (after_img, key))):
        pairs[0][r].imshow(img[i].permute(1, 2, 0).numpy())
        pairs[0][r].set_title(("original: " if r == 0 else f"{after_word}: ") + title(v), fontsize=7)
    foot = sc.footprints.get(variant) if variant != "distractors" else sc.distractor_pixels
    for (top, bottom), m in zip(pairs[1:], methods):
        mp = out["maps"][m][0][i]
        lim = float(mp.abs().max()) or 1.0
        top.imshow(mp.numpy(), cmap=DIVERGING_CMAP, vmin=-lim, vmax=lim)
        top.set_title(_label(*m), fontsize=7)
        if variant == "distractors":
            mp2 = out["maps_no_distractors"][m][0][i]
            lim2 = float(mp2.abs().max()) or 1.0
            bottom.imshow(mp2.numpy(), cmap=DIVERGING_CMAP, vmin=-lim2, vmax=lim2)
            on = foot[i]
            peak = bool(on.flatten()[int(mp.flatten().argmax())]) if on.any() else False
            bottom.set_title(f"after; before, its peak {'was' if peak else 'was not'}\non a distractor",
                             fontsize=7)
        else:
            bottom.imshow(mp.numpy(), cmap=DIVERGING_CMAP, vmin=-lim, vmax=lim)
            bottom.contour(foot[i].numpy().astype(float), levels=[0.5], colors="k", linewidths=0.8)
            pos = mp.clamp_min(0)
            share = float((pos * foot[i]).sum() / pos.sum().clamp_min(1e-12))
            bottom.set_title(f"{share:.0%} of its positive mass\non the {variant}", fontsize=7)
    return fig


def showcase_reading(out: dict, i: int, class_names: Sequence[str], *, levels: Sequence[str] = ("B4", "B234"),
                     maps: Sequence[tuple[str, str]] = (("B4", "kmeans"), ("B234", "kmeans"))) -> str:
    """What removing the distractors does to one image: decisions before and after, and where the maps peak.

    Generated from ``out`` (:func:`measure_interventions`): the true class, the network's and each
    level's k-means prediction before and after the distractors are removed, and whether each map
    of ``maps`` has its maximum on a distractor pixel before. The verdict: the distractors
    *explain* a wrong decision when removing them makes it right; a decision that stays wrong is
    not explained by them; a right decision has nothing to explain.
    """
    sc, pred = out["scenes"], out["predictions"]
    names = list(class_names)
    true = int(sc.labels[i])
    keys = ["network", *[lv for lv in levels if lv in pred]]

    def who(k: str) -> str:
        return "the network" if k == "network" else f"k-means {k}"

    parts = []
    for k in keys:
        b, a = int(pred[k]["original"][i]), int(pred[k]["no distractors"][i])
        parts.append(f"{who(k)} predicts {names[b]} ({'right' if b == true else 'wrong'}) and, without the "
                     f"distractors, {names[a]} ({'right' if a == true else 'wrong'})")
    dist = sc.distractor_pixels[i]
    peaks = []
    for m in maps:
        if m in out["maps"]:
            mp = out["maps"][m][0][i]
            on = bool(dist.flatten()[int(mp.flatten().argmax())]) if dist.any() else False
            peaks.append(f"{_label(*m)} {'on a distractor' if on else 'not on a distractor'}")
    b, a = int(pred["network"]["original"][i]), int(pred["network"]["no distractors"][i])
    if b == true:
        verdict = ("The network classifies this image correctly on this seed, so there is no error for the "
                   "distractors to explain here" + ("; removing them changes its decision, so it does react to them."
                                                    if a != b else "; removing them leaves its decision as it is."))
    elif a == true:
        verdict = ("Removing the distractors corrects the network's decision: on this image the distractors "
                   "explain the error (a shortcut through the background).")
    else:
        verdict = ("The decision stays wrong without the distractors: they do not explain this error; the "
                   "creature itself is read as another class.")
    said = "; ".join(parts)
    before, after = pred["network"]["original"], pred["network"]["no distractors"]
    wrong, right_after = before != sc.labels, after == sc.labels
    overall = (f" Over all {len(sc.labels)} images scored, the network errs on {int(wrong.sum())}; removing the "
               f"distractors corrects {int((wrong & right_after).sum())} of them and breaks "
               f"{int((~wrong & ~right_after).sum())} of the {int((~wrong).sum())} it got right.")
    return (f"Image {i} is a {names[true]}. " + said[:1].upper() + said[1:]
            + ". Before the intervention, the maximum of "
            + ("the maps lies: " + ", ".join(peaks) if peaks else "no map was measured") + ". " + verdict + overall)


def target_reading(df: Any) -> str:
    """Target sensitivity from the records: which contrastive map most often ranks the flipping part first."""
    t = _stat(df, "intervention_target_top")
    t = t[np.isfinite(t["mean"])]
    if t.empty:
        return ("No image had two top classes differing in one attribute whose swap flips the decision: target "
                "sensitivity was not measured.")
    t = t.sort_values("mean", ascending=False, kind="stable")
    n = int(df[df["metric"] == "intervention_target_top"]["n"].max())
    best = t.index[0]
    rnd = float(t.loc[("pixel", "random"), "mean"]) if ("pixel", "random") in t.index else float("nan")
    return (f"On the images where swapping the attribute that separates the two top classes flips the decision "
            f"(up to {n} per seed), the contrastive map puts its largest positive part mass on the part carrying it "
            + ", ".join(f"{100 * r['mean']:.0f} % of the time ({_label(*k)})" for k, r in t.iterrows())
            + f". {_label(*best)} follows the flipping part most often"
            + (f"; a random map does so {100 * rnd:.0f} % of the time." if np.isfinite(rnd) else "."))
