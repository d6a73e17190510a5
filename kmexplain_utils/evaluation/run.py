"""The quantitative evaluation of the book (METHOD section 6), and its command line.

:func:`run_evaluation` is a data step and a list of measurements. For every
seed, :func:`prepare_seed` loads the trained network (from the cache), fits
every level, classifier and concept model and makes **one** forward pass over
the training and test images for all of them (pooled embeddings, logits,
concept maps); then one function per measurement adds records:

- :func:`measure_accuracy` -- the linear head and the k-means classifier at
  every level, with the number of prototypes per class K chosen on a validation
  split carved from the training images (:func:`choose_k`), and B4's and B234's
  test accuracy at every K on every seed (:func:`k_cost`, :func:`plot_k_cost`);
- :func:`measure_representativeness` -- linear rows vs k-means centroids;
- :func:`measure_concepts` -- concept maps vs parts: NMI and AMI, purity, on
  all and on object pixels, mIoU with its floor, per-part IoU and the parts
  that get no concept; for the main setting, the resolution control
  ``B4@<level>-grid``, the old cell registration (``concepts-cell``), and on
  the first seed the ablation over the number of concepts and per-class
  concepts;
- :func:`measure_concept_references` -- the resolution ceiling of every grid
  (object-pixel scores from the majority *object* part of each position),
  k-means on RGB and RGB+xy pixels, NMF on the same position vectors;
- :func:`measure_attribution` -- deletion / insertion AUC **on the model each
  map explains** (k-means maps on the k-means classifier of their level, the
  rest on the linear head; the k-means maps on the linear head as the
  labelled ``*_transfer`` metrics), pointing game and energy on the object,
  for the k-means maps, the resolution control, the cell registration, CAM,
  Grad-CAM at B3, occlusion and a random map; the identity
  ``Grad-CAM(B4) = ReLU(CAM - b) / |P|`` is checked and recorded, not counted as a baseline;
- :func:`measure_sanity` -- the k-means maps split into the part every prototype shares and a
  class-specific remainder, and the cascading model randomisation
  (:func:`kmexplain_utils.evaluation.sanity.randomisation_protocol`, every seed): Spearman correlation of the
  maps of every method with the trained network's;
- :func:`measure_contrastive` -- contrastive maps against the ground-truth
  deciding part (images whose top two classes differ in one attribute);
- :func:`measure_keypoints` -- the concept maps read at the part keypoints
  (NMI, AMI, purity: CUB-200-2011's own keypoints, or one pseudo-keypoint per
  part on a data set with part masks only) and EvalProtoPNet's part
  consistency of the k-means prototypes of every level, beside its chance
  level (boxes on random pixels); skipped on a data set without parts.

The claims table (:func:`claims_table`) turns the records into verdicts by rules it prints; the
report functions (:func:`sanity_table`, :func:`sanity_shares`, :func:`sanity_verdicts`,
:func:`sanity_advice`, :func:`plot_sanity`, :func:`plot_faithfulness`, :func:`k_cost`,
:func:`record_stat`...) keep the chapter's cells short.

- :func:`~kmexplain_utils.evaluation.interventions.measure_interventions` -- part interventions
  (METHOD section 7, FunnyBirds): the test scenes re-rendered without each part, with each
  attribute swapped and without their distractors; the drop of each model's score (the ground
  truth of use), single deletion, target sensitivity and background independence of every map
  (records ``intervention_*``; generated data only, module
  :mod:`~kmexplain_utils.evaluation.interventions`).

Records (rows of the returned DataFrame and ``"records"`` of the JSON) have
the columns of :data:`COLUMNS`:

=========  =====  ==============================================================
column     type   meaning
=========  =====  ==============================================================
profile    str    profile name
seed       int    model / k-means seed
level      str    ``logits``, ``B4`` ... ``B1234``, ``B4@B234-grid`` (resolution
                  control), ``pixel`` (pixel-level methods)
method     str    ``linear``, ``linear-rescaled``, ``kmeans``, ``kmeans-cell``,
                  ``concepts``, ``concepts-cell``, ``concepts-per-class``,
                  ``ceiling``, ``kmeans-rgb``, ``kmeans-rgbxy``, ``nmf``, ``cam``,
                  ``gradcam``, ``occlusion``, ``random``; in the sanity records also
                  ``contrastive``, ``class-specific``, ``shared``
metric     str    see :data:`METRICS`
value      float  the measurement
n          int    number of items averaged (images, prototypes, parts...)
sweep      str    ``null``, ``"k_per_class"``, ``"n_concepts"`` or ``"per_class"``
param      int    ``K`` (accuracy), ``K'`` (concepts), randomisation stage
part       str    part name (``iou``, contrastive scores per deciding part)
note       str    e.g. the deletion baseline, the parts without a concept,
                  the randomisation stage, the model a map is scored on
=========  =====  ==============================================================

Command line::

    python -m kmexplain_utils.evaluation --profile quick --seeds 3 --out results.json

writes ``{"schema": "kmexplain-evaluation/2", "profile": {...}, "seeds": [...],
"columns": [...], "metrics": {...}, "records": [...], "curves": [...], "info": {...}}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import numpy as np
import torch

from .. import config
from ..config import Profile, get_profile, progress, resolve_device, set_progress
from ..plotting import method_label, plot_curves, plot_qualitative, plot_sweeps, plot_tradeoff
from .interventions import (INTERVENTION_METRICS, deciding_part, intervention_effects, measure_interventions,
                            part_masses, record_interventions, single_deletion)

__all__ = [
    "COLUMNS",
    "LEARNED_ACCURACY",
    "METRICS",
    "SCHEMA",
    "FeatureSpace",
    "Recorder",
    "SeedData",
    "SharedData",
    "CLAIM_COLUMNS",
    "CLAIM_PARTS",
    "VALIDATION_FRACTION",
    "choose_k",
    "claims_table",
    "deciding_part",
    "drop_empty",
    "evaluation_specs",
    "fewer_data_profile",
    "evaluation_networks",
    "accuracy_percent",
    "format_mean_std",
    "records_link",
    "intervention_effects",
    "load_data",
    "main",
    "measure_accuracy",
    "measure_attribution",
    "measure_concept_references",
    "measure_concepts",
    "measure_contrastive",
    "measure_interventions",
    "measure_seed_interventions",
    "measure_keypoints",
    "measure_representativeness",
    "measure_sanity",
    "merge_identical_columns",
    "plot_curves",
    "plot_qualitative",
    "plot_sweeps",
    "plot_tradeoff",
    "prepare_seed",
    "k_chosen",
    "k_cost",
    "part_masses",
    "plot_faithfulness",
    "plot_k_cost",
    "plot_sanity",
    "record_interventions",
    "record_per_seed",
    "record_stat",
    "run_evaluation",
    "sanity_advice",
    "sanity_label",
    "sanity_shares",
    "sanity_table",
    "sanity_verdicts",
    "single_deletion",
    "summary_table",
    "to_json",
    "validation_split",
]

SCHEMA = "kmexplain-evaluation/2"

COLUMNS = ("profile", "seed", "level", "method", "metric", "value", "n", "sweep", "param", "part", "note")

#: a network "has learned" (and readings that depend on it may be drawn) at this test accuracy or above
LEARNED_ACCURACY = 0.8

_CONCEPT_METRICS: dict[str, str] = {
    "nmi": "NMI of concepts vs parts over all test pixels (biased upwards by more concepts)",
    "ami": "adjusted mutual information of concepts vs parts over all test pixels (0 = chance)",
    "purity": "purity of concepts vs parts over all test pixels",
    "nmi_object": "NMI of concepts vs parts over object pixels",
    "ami_object": "AMI of concepts vs parts over object pixels",
    "purity_object": "purity of concepts vs parts over object pixels",
    "miou": "mean IoU over parts after the concept-to-part mapping fitted on training images",
    "miou_floor": "'nothing found' floor: mIoU when every pixel is predicted background",
    "iou": "IoU of one part (column part)",
    "parts_without_concept": "number of parts no concept is mapped to (their names in note)",
}

#: metric name -> what it is (higher is better unless said otherwise)
METRICS: dict[str, str] = {
    "accuracy": "test accuracy of the classifier (param: prototypes per class K)",
    "val_accuracy": "accuracy on the validation split carved from the training images, per K (chooses K)",
    "k_chosen": "prototypes per class chosen on the validation split (the K of the level's classifier)",
    "agreement": "share of test images where the k-means classifier predicts the linear head's class",
    "prototype_nn_ratio": "mean over prototypes of (distance to the nearest training embedding) / "
    "(median nearest-neighbour distance among training embeddings); lower = more representative",
    **_CONCEPT_METRICS,
    "deletion_auc": "area under the deletion curve on the model the map explains (lower = more faithful)",
    "insertion_auc": "area under the insertion curve on the model the map explains (higher = more faithful)",
    "deletion_auc_transfer": "deletion AUC of a k-means map tracked on the linear head instead (transfer)",
    "insertion_auc_transfer": "insertion AUC of a k-means map tracked on the linear head instead (transfer)",
    "pointing_game": "share of images whose map maximum lies on the object",
    "energy_in_mask": "share of the (min-shifted) map energy on the object",
    "gradcam_identity_error": "max |Grad-CAM(B4) - ReLU(CAM - b) / |P|| relative to max |CAM|",
    "sanity_spearman": "median over images of the Spearman correlation of the maps of a randomised network "
    "(cascade step in param, stage in note) with the trained network's (lower = the map depends on the weights)",
    "sanity_shared_share": "median share of a k-means map's spatial variance carried by its shared part "
    "(the mean prototype's map): Cov(m, s) / Var(m)",
    "sanity_specific_share": "median share carried by its class-specific part (1 - the shared share)",
    "sanity_shared_spearman": "median Spearman correlation of a k-means map with its shared part",
    **INTERVENTION_METRICS,
    "contrastive_mass": "share of a contrastive map's positive mass on the deciding part",
    "contrastive_peak": "share of contrastive maps whose maximum lies on the deciding part",
    "contrastive_part_share": "the deciding part's share of the pixels (a random map's expected mass)",
    "keypoint_nmi": "NMI of the concept under each part keypoint vs the keypoint's part (source in note)",
    "keypoint_ami": "AMI of the concept under each part keypoint vs the keypoint's part (0 = chance)",
    "keypoint_purity": "purity of the concepts under the part keypoints",
    "part_consistency": "share of the k-means prototypes whose box (72/224 of the side, around the peak of "
    "their score map) holds the same part on >= 80 % of their class's test images (EvalProtoPNet)",
}

_CONTROL_FMT = "B4@{}-grid"
#: the k-means maps whose deletion / insertion curves are measured (pointing and energy: every level)
_DELETION_LEVELS = ("B4", "B234", "B4@B234-grid")
_CELL = "|cell"


@dataclasses.dataclass(frozen=True)
class FeatureSpace:
    """One feature space evaluated: a level, a resolution control, or a level under the cell registration.

    Attributes
    ----------
    name : str
        Key of its fitted objects (``"B234"``, ``"B4@B234-grid"``, ``"B234|cell"``).
    level : str
        The level whose blocks it reads.
    grid : str or None
        The level whose grid it is put on (resolution control).
    registration : {"exact", "cell"}
    classify, concepts, attribution : bool
        Whether it gets a k-means classifier, concept models, attribution maps.
    """

    name: str
    level: str
    grid: str | None
    registration: str
    classify: bool
    concepts: bool
    attribution: bool

    @property
    def label(self) -> str:
        """The ``level`` column of its records."""
        return self.name.replace(_CELL, "")


def evaluation_specs(levels: Sequence[str]) -> list[FeatureSpace]:
    """The feature spaces :func:`run_evaluation` evaluates for ``levels`` (for :func:`prepare_seed`).

    Every level; the resolution control ``B4@B234-grid`` (``B4@<level>-grid`` of every multi-block
    level with B4 when B234 is not evaluated); every block level under the cell registration.
    """
    return [dataclasses.replace(sp, attribution=sp.attribution and sp.grid in (None, "B234"))
            for sp in _specs(levels)]


def _specs(levels: Sequence[str], cell: bool = True) -> list[FeatureSpace]:
    from ..features import LevelFeatures, parse_level

    blocks_of = {lv: parse_level(lv) for lv in levels}
    spatial = [lv for lv in levels if LevelFeatures(lv).has_positions]
    specs = [FeatureSpace(lv, lv, None, "exact", True, lv in spatial, lv in spatial) for lv in levels]
    with_b4 = [lv for lv in spatial if len(blocks_of[lv]) > 1 and "B4" in blocks_of[lv]]
    for lv in (["B234"] if "B234" in with_b4 else with_b4):  # the control the book reads: beside B234
        specs.append(FeatureSpace(_CONTROL_FMT.format(lv), "B4", lv, "exact", False, True, True))
    if cell:
        specs += [FeatureSpace(lv + _CELL, lv, None, "cell", False, True, True) for lv in spatial]
    return specs


def _ground_truth(data: Any, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Part maps ``(n, H, W)``, object masks ``(n, H, W)`` and part names of images ``idx``.

    Data sets with object masks but no parts (MNIST strokes, Oxford-IIIT Pet trimaps) use the
    object mask as a two-part map ``["background", "object"]``: the concept metrics then measure
    object vs background only (and object-pixel NMI is 0 by definition).
    """
    parts = data.parts_at(idx) if hasattr(data, "parts_at") else None
    objects = data.objects_at(idx) if hasattr(data, "objects_at") else None
    if parts is not None and getattr(data, "part_names", None) is not None:
        names = list(data.part_names)
        return parts.long(), (objects if objects is not None else parts > 0).bool(), names
    if objects is not None:
        return objects.long(), objects.bool(), ["background", "object"]
    raise ValueError(
        f"the data set {getattr(data, 'name', type(data).__name__)!r} has neither part maps nor object masks: "
        "the concept and localisation metrics need one of them (use the 'parts' data set)."
    )


# ----------------------------------------------------------------------------- the data step
@dataclasses.dataclass
class SharedData:
    """What every seed shares: the profile, the data sets and their ground truth."""

    profile: Profile
    train: Any
    test: Any
    x_fit: torch.Tensor
    parts_fit: torch.Tensor
    parts_test: torch.Tensor
    objects_test: torch.Tensor
    part_names: list[str]
    n_eval: int
    #: part keypoints of every test image ((P_i, 3) arrays, :mod:`kmexplain_utils.evaluation.keypoints`), or None
    keypoints_test: list[np.ndarray] | None = None
    #: The keypoints' source, ``"keypoints"`` (the data set's own) or ``"part masks"`` (one per part present)
    keypoint_source: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.parts_test.shape[-2:])  # type: ignore[return-value]


@dataclasses.dataclass
class SeedData:
    """One seed after the data step: the network, every fitted level, model and map.

    ``cms``, ``cmaps_train``, ``cmaps_test`` are keyed by ``(spec name, K', per_class)``;
    concept maps stay on the level's grid (int16, CPU), for the first ``n_fit``
    training images and all test images.
    """

    seed: int
    model: torch.nn.Module
    specs: list[FeatureSpace]
    lfs: dict[str, Any]
    cms: dict[tuple[str, int, bool], Any]
    nmf: dict[str, Any]
    clfs: dict[str, Any]
    Z_train: dict[str, torch.Tensor]
    Z_test: dict[str, torch.Tensor]
    logits_test: torch.Tensor
    cmaps_train: dict[tuple[str, int, bool], torch.Tensor]
    cmaps_test: dict[tuple[str, int, bool], torch.Tensor]
    ablation: bool
    mappings: dict[tuple[str, int, bool], np.ndarray] = dataclasses.field(default_factory=dict)
    temperatures: dict[str, float] = dataclasses.field(default_factory=dict)
    #: prototypes per class of each level's classifier, chosen on the validation split (:func:`choose_k`)
    k_chosen: dict[str, int] = dataclasses.field(default_factory=dict)
    #: ``{name: {K: accuracy}}``, the validation accuracy of each level at each candidate K
    val_accuracy: dict[str, dict[int, float]] = dataclasses.field(default_factory=dict)
    #: ``(n_train,)`` True for the training images held out to choose K
    validation: torch.Tensor | None = None
    #: ``{level: Explainer}``: the front door's object of each level with a classifier, whose steps fitted
    #: ``lfs``, ``clfs``, ``temperatures`` and the main concept model (see :meth:`explainer`)
    explainers: dict[str, Any] = dataclasses.field(default_factory=dict)

    def scorer(self, name: str) -> Any:
        """The k-means classifier of a level as a model (images -> class scores / its fitted temperature)."""
        from ..scores import KMeansScoreModel

        return KMeansScoreModel(self.model, self.lfs[name], self.clfs[name],
                                temperature=self.temperatures.get(name, 1.0))

    def spec(self, name: str) -> FeatureSpace:
        return next(sp for sp in self.specs if sp.name == name)

    def explainer(self, name: str, n_concepts: int | None = None) -> Any:
        """The :class:`~kmexplain_utils.Explainer` of a level: the one :func:`prepare_seed` fitted.

        :func:`prepare_seed` builds every level's classifier, temperature, level features and main
        concept model with the steps of ``Explainer.fit`` (``fit_level``, ``fit_concepts``,
        ``fit_classifier``), so ``explain`` here is what a user of the front door gets;
        ``tests/test_evaluate.py`` proves them equal to ``Explainer(model, level, K, K',
        random_state=seed).fit(images, labels)`` on the same images. ``n_concepts`` picks another
        concept model of the sweep (a copy of the explainer holding it).
        """
        import copy

        if name not in self.explainers:
            raise ValueError(f"{name!r} has no k-means classifier of its own: use a level ({list(self.explainers)})")
        ex = self.explainers[name]
        if n_concepts is None or n_concepts == ex.n_concepts:
            return ex
        if (name, n_concepts, False) not in self.cms:
            have = sorted(k for (nm, k, pc) in self.cms if nm == name and not pc)
            raise ValueError(f"no concept model with {n_concepts} concepts at {name!r}; fitted: {have}")
        twin = copy.copy(ex)
        twin.n_concepts, twin.concepts_ = n_concepts, self.cms[(name, n_concepts, False)]
        return twin

    def up(self, maps: torch.Tensor, name: str, size: tuple[int, int]) -> torch.Tensor:
        """Grid label maps -> pixels (each pixel takes the nearest registered position)."""
        from ..concepts import upsample_labels

        return upsample_labels(maps.long(), size, self.lfs[name].grid_geometry_)


def load_data(profile: Profile, n_fit_images: int = 500) -> SharedData:
    """The data step shared by all seeds: training and test sets, the fitting images, parts and masks."""
    from ..data import load_dataset
    from ..chapters.training import DATA_SEED

    train = load_dataset(profile.dataset, "train", profile, seed=DATA_SEED)
    test = load_dataset(profile.dataset, "test", profile, seed=DATA_SEED)
    n_fit = min(int(n_fit_images), len(train))
    parts_fit, _, part_names = _ground_truth(train, torch.arange(n_fit))
    parts_test, objects_test, _ = _ground_truth(test, torch.arange(len(test)))
    keypoints, source = _test_keypoints(test, parts_test, part_names)
    return SharedData(profile, train, test, train.images_at(torch.arange(n_fit)), parts_fit, parts_test,
                      objects_test, part_names, min(int(profile.n_eval_images), len(test)), keypoints, source)


def _test_keypoints(test: Any, parts_test: torch.Tensor, part_names: list[str]) -> tuple[list | None, str | None]:
    """The test set's own keypoints; else one pseudo-keypoint per part of its part masks; else none.

    A set whose ground truth is only an object mask (``["background", "object"]``) has no parts to
    point at: no keypoints.
    """
    from .keypoints import keypoints_from_parts

    if getattr(test, "has_keypoints", False):
        return test.keypoints_at(torch.arange(len(test))), "keypoints"
    if list(part_names) != ["background", "object"]:
        return keypoints_from_parts(parts_test, len(part_names)), "part masks"
    return None, None


def _concept_settings(prof: Profile, sp: FeatureSpace, ablation: bool) -> list[tuple[int, bool]]:
    """(K', per_class) of the concept models fitted for a spec."""
    from ..features import parse_level

    out = [(prof.n_concepts, False)]
    if ablation and sp.registration == "exact" and sp.grid is None:
        out += [(K, False) for K in prof.concept_sweep if K != prof.n_concepts]
        if len(parse_level(sp.level)) > 2:  # per-class concepts where the fine grids are
            out.append((max(2, prof.n_concepts // 2), True))
    return out


def _fit_concepts(prof: Profile, sh: SharedData, model: Any, specs: Sequence[FeatureSpace], lfs: dict, seed: int,
                  device: Any, ablation: bool, explainers: dict) -> tuple[dict, dict]:
    """The concept models of every spec; a level's main one is its explainer's (``Explainer.fit_concepts``)."""
    from sklearn.decomposition import NMF

    from ..concepts import ConceptModel

    y_fit = sh.train.labels[: sh.x_fit.shape[0]]
    cms: dict[tuple[str, int, bool], Any] = {}
    nmf: dict[str, Any] = {}
    for sp in specs:
        if not sp.concepts:
            continue
        base = None
        ex = explainers.get(sp.name)
        for K, per_class in _concept_settings(prof, sp, ablation):
            if ex is not None and (K, per_class) == (ex.n_concepts, ex.per_class_concepts):
                cm = ex.fit_concepts((sh.x_fit, y_fit), sample=base).concepts_
            else:  # the ablations: other K', per-class concepts, the controls and the cell registration
                cm = ConceptModel(K, level=sp.level, per_class=per_class, positions_per_image=prof.positions_per_image,
                                  random_state=seed, device=device)
                cm.fit(model, (sh.x_fit, y_fit), level_features=lfs[sp.name], sample=base)
            base = base or cm.sample_
            cms[(sp.name, K, per_class)] = cm
        if ablation and sp.name in ("B4", "B234"):  # the concept baseline of the literature (Deep Feature Factorization)
            V = base.vectors.double().clamp_min(0).cpu().numpy()
            nmf[sp.name] = NMF(prof.n_concepts, init="nndsvda", max_iter=200, random_state=seed).fit(V)
    return cms, nmf


def _pass_maps(feats: torch.Tensor, sp: FeatureSpace, d_cms: dict, nmf: dict, pred: torch.Tensor,
               out: dict[tuple[str, int, bool], list]) -> None:
    """Concept maps (and NMF maps, key ``(name, -1, False)``) of one batch at one spec."""
    from ..concepts import concept_map

    for (name, K, per_class), cm in d_cms.items():
        if name != sp.name:
            continue
        allowed = (pred[:, None].to(cm.concept_classes_.device) == cm.concept_classes_[None, :]) if per_class else None
        out.setdefault((name, K, per_class), []).append(
            concept_map(feats, cm.centroids_, allowed=allowed).to(torch.int16).cpu())
    if sp.name in nmf:
        n, D, h, w = feats.shape
        V = feats.permute(0, 2, 3, 1).reshape(-1, D).double().clamp_min(0).cpu().numpy()
        lab = torch.from_numpy(nmf[sp.name].transform(V).argmax(1)).view(n, h, w).to(torch.int16)
        out.setdefault((sp.name, -1, False), []).append(lab)


def _features_pass(model: torch.nn.Module, data: Any, n: int, specs: Sequence[FeatureSpace], lfs: dict, cms: dict,
                   nmf: dict, n_maps: int, batch_size: int) -> tuple[dict, torch.Tensor, dict]:
    """One forward pass per batch for every spec: pooled embeddings, logits and concept maps.

    Returns ``({spec: (n, D_S)}, logits (n, C), {key: (n_maps, H_S, W_S) int16})`` on the CPU.
    """
    from ..features import block_features, eval_mode

    mdev = next(model.parameters()).device
    pooled: dict[str, list[torch.Tensor]] = {sp.name: [] for sp in specs if sp.classify}
    cmaps: dict[tuple[str, int, bool], list[torch.Tensor]] = {}
    logits_all = []
    with eval_mode(model), torch.no_grad(), block_features(model) as extract:
        for s in range(0, n, batch_size):
            x = data.images_at(torch.arange(s, min(s + batch_size, n)))
            maps, logits = extract(x.to(mdev), return_logits=True)
            logits_all.append(logits.float().cpu())
            pred = logits.argmax(1)
            for sp in specs:
                need_maps = sp.concepts and s < n_maps
                if not (sp.classify or need_maps):
                    continue
                if not need_maps:  # the pooled embeddings alone: from the block maps, no (B, D_S, H_S, W_S) features
                    pooled[sp.name].append(lfs[sp.name].pooled_of_pass(maps, logits, tuple(x.shape[-2:])).float().cpu())
                    continue
                feats, z = lfs[sp.name].features_of_pass(maps, logits, tuple(x.shape[-2:]))
                if sp.classify:
                    pooled[sp.name].append(z.float().cpu())
                if need_maps:
                    m = min(n_maps - s, feats.shape[0])
                    _pass_maps(feats[:m], sp, cms, nmf, pred[:m], cmaps)
    return ({k: torch.cat(v) for k, v in pooled.items()}, torch.cat(logits_all),
            {k: torch.cat(v) for k, v in cmaps.items()})


#: share of the training images held out to choose K (prototypes per class)
VALIDATION_FRACTION = 0.2


def validation_split(n: int, seed: int, fraction: float = VALIDATION_FRACTION) -> torch.Tensor:
    """``(n,)`` boolean mask of the training images held out to choose K (a seeded random ``fraction``).

    Example
    -------
    >>> m = validation_split(10, seed=0); int(m.sum())
    2
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    g = torch.Generator().manual_seed(int(seed))
    mask = torch.zeros(int(n), dtype=torch.bool)
    mask[torch.randperm(int(n), generator=g)[: max(1, round(fraction * int(n)))]] = True
    return mask


def choose_k(Z: torch.Tensor, y: torch.Tensor, validation: torch.Tensor, candidates: Sequence[int], *,
             random_state: int = 0, device: Any = "cpu") -> tuple[int, dict[int, float]]:
    """Prototypes per class chosen on validation data: fit on the rest of the training set, score on it.

    Parameters
    ----------
    Z : torch.Tensor
        ``(N, D)`` training embeddings of a level.
    y : torch.Tensor
        ``(N,)`` their labels.
    validation : torch.Tensor
        ``(N,)`` boolean, the held-out images (:func:`validation_split`); never the test set.
    candidates : sequence of int
        The K tried.

    Returns
    -------
    (int, dict of int to float)
        The K with the best validation accuracy (the smallest on a tie), and every K's accuracy.
    """
    from ..classifier import KMeansClassifier

    val = torch.as_tensor(validation).bool()
    if val.shape != (Z.shape[0],) or not val.any() or val.all():
        raise ValueError("validation must be an (N,) boolean mask holding out some, not all, training images")
    yt = torch.as_tensor(y)
    acc = {}
    for k in sorted({int(k) for k in candidates}):
        clf = KMeansClassifier(k, random_state=random_state, device=device).fit(Z[~val], yt[~val])
        acc[k] = float((torch.as_tensor(clf.predict(Z[val])).cpu() == yt[val]).double().mean())
    best = max(acc.values())
    return min(k for k, a in acc.items() if a == best), acc


def prepare_seed(sh: SharedData, seed: int, specs: Sequence[FeatureSpace], *, device: Any = "cpu",
                 ablation: bool = False, batch_size: int = 200, sigma_images: int | None = 256,
                 k: int | str = "validation") -> SeedData:
    """The data step of one seed: the cached network, levels, concepts, one features pass, classifiers.

    Every k-means classifier is fitted on all training images with the number of prototypes per
    class ``k``: ``"validation"`` (default) chooses it per level among ``profile.k_sweep`` and
    ``profile.k_per_class`` on a validation split carved from the training images
    (:func:`choose_k`, :func:`validation_split`; never the test set), an int fixes it; concept models on the first ``n_fit`` training images (the first
    ``sigma_images`` fit ``sigma_b``; ``None``: all ``n_fit``); ``ablation`` adds the concept sweep
    and per-class concepts (first seed). Every level with a classifier is an
    :class:`~kmexplain_utils.Explainer` fitted by the steps of ``Explainer.fit`` (``fit_level``,
    ``fit_concepts``, ``fit_classifier``), each on the data the evaluation gives it (a test proves
    them equal to ``Explainer.fit``'s on the same images and seed); the data step shares one forward
    pass between all levels instead of one per level. :meth:`SeedData.explainer` hands them out.
    """
    from ..explainer import Explainer
    from ..features import LevelFeatures
    from ..chapters.training import get_trained_model

    prof = sh.profile
    model, _info = get_trained_model(prof, seed, device=device)
    model.eval()
    x_sigma = sh.x_fit[:sigma_images]
    exs = {sp.name: Explainer(model, sp.level, n_concepts=prof.n_concepts, random_state=seed, device=device,
                              registration=sp.registration, positions_per_image=prof.positions_per_image,
                              batch_size=batch_size).fit_level(x_sigma) for sp in specs if sp.classify}
    # the resolution controls and the cell twins have no classifier: their level features alone
    lfs = {sp.name: exs[sp.name].level_features_ if sp.name in exs else LevelFeatures(
        sp.level, grid=sp.grid, batch_size=batch_size, registration=sp.registration).fit(model, x_sigma)
        for sp in specs}
    cms, nmf = _fit_concepts(prof, sh, model, specs, lfs, seed, device, ablation, exs)
    n_fit = sh.x_fit.shape[0]
    Z_train, _, cm_train = _features_pass(model, sh.train, len(sh.train), specs, lfs, cms, nmf, n_fit, batch_size)
    Z_test, logits_test, cm_test = _features_pass(model, sh.test, len(sh.test), specs, lfs, cms, nmf,
                                                  len(sh.test), batch_size)
    y = sh.train.labels
    val = validation_split(len(y), seed)
    k_chosen, val_acc = {}, {}
    for name, Z in Z_train.items():
        if k == "validation":
            k_chosen[name], val_acc[name] = choose_k(Z, y, val, (*prof.k_sweep, prof.k_per_class),
                                                     random_state=seed, device=device)
        else:
            k_chosen[name] = int(k)
    for name, Z in Z_train.items():
        exs[name].n_prototypes = k_chosen[name]
        exs[name].fit_classifier(Z, y)
    clfs = {name: ex.classifier_ for name, ex in exs.items()}
    temps = {name: ex.temperature_ for name, ex in exs.items()}
    return SeedData(seed, model, list(specs), lfs, cms, nmf, clfs, Z_train, Z_test, logits_test, cm_train,
                    cm_test, ablation, temperatures=temps, k_chosen=k_chosen, val_accuracy=val_acc,
                    validation=val, explainers=exs)


# ----------------------------------------------------------------------------- measurements
class Recorder:
    """The records of one evaluation: ``add(...)`` appends one row with the columns of :data:`COLUMNS`."""

    def __init__(self, profile: str) -> None:
        self.profile = profile
        self.rows: list[dict[str, Any]] = []

    def add(self, seed: int, level: str, method: str, metric: str, value: float, n: int, *,
            sweep: str | None = None, param: int | None = None, part: str | None = None,
            note: str | None = None) -> None:
        """Append one record (a non-finite value is stored as NaN)."""
        v = float(value)
        self.rows.append({
            "profile": self.profile, "seed": int(seed), "level": level, "method": method, "metric": metric,
            "value": v if math.isfinite(v) else float("nan"), "n": int(n), "sweep": sweep,
            "param": None if param is None else int(param), "part": part, "note": note,
        })


def _score_labels(rec: Recorder, seed: int, level: str, method: str, K: int, maps_train: torch.Tensor,
                  maps_test: torch.Tensor, sh: SharedData, *, sweep: str | None = None,
                  full: bool = True, maps_object: torch.Tensor | None = None) -> np.ndarray:
    """Every concept metric of one label map (at pixels) against the parts; returns the train-fitted mapping.

    ``maps_object`` (default ``maps_test``) is the map the object-pixel scores use.
    """
    from . import metrics

    n_parts, names, obj = len(sh.part_names), sh.part_names, sh.objects_test
    on_obj = maps_test if maps_object is None else maps_object
    mapping = metrics.fit_concept_to_part(maps_train, sh.parts_fit, n_concepts=K)
    mean_iou, per_part = metrics.miou(maps_test, sh.parts_test, mapping, n_parts)
    n_img = maps_test.shape[0]
    add = lambda metric, v, n=n_img, **kw: rec.add(seed, level, method, metric, v, n, sweep=sweep, param=K, **kw)  # noqa: E731
    add("miou", mean_iou)
    add("nmi_object", metrics.nmi(on_obj, sh.parts_test, obj))
    add("ami_object", metrics.ami(on_obj, sh.parts_test, obj))
    missing = metrics.parts_without_concept(mapping, n_parts)
    add("parts_without_concept", len(missing), n_parts, note=", ".join(names[j] for j in missing) or None)
    for j, pname in enumerate(names):
        if np.isfinite(per_part[j]):
            add("iou", per_part[j], part=pname)
    if full:
        add("nmi", metrics.nmi(maps_test, sh.parts_test))
        add("ami", metrics.ami(maps_test, sh.parts_test))
        add("purity", metrics.purity(maps_test, sh.parts_test))
        add("purity_object", metrics.purity(on_obj, sh.parts_test, obj))
        add("miou_floor", metrics.nothing_found_miou(sh.parts_test, n_parts))
    return mapping


def measure_concepts(sh: SharedData, d: SeedData, rec: Recorder) -> None:
    """Concept maps vs parts for every concept model of the seed (main setting, controls, cell, ablation)."""
    prof = sh.profile
    for key in d.cms:
        name, K, per_class = key
        sp = d.spec(name)
        main_setting = K == prof.n_concepts and not per_class
        method = "concepts-per-class" if per_class else ("concepts-cell" if sp.registration == "cell" else "concepts")
        sweep = None if main_setting else ("per_class" if per_class else "n_concepts")
        K_total = d.cms[key].n_concepts_total_
        start = len(rec.rows)
        d.mappings[key] = _score_labels(
            rec, d.seed, sp.label, method, K_total, d.up(d.cmaps_train[key], name, sh.size),
            d.up(d.cmaps_test[key], name, sh.size), sh, sweep=sweep, full=main_setting)
        if main_setting and d.ablation and sp.registration == "exact" and sp.grid is None:
            sweep_metrics = ("miou", "nmi_object", "ami_object", "parts_without_concept", "iou")
            rec.rows += [{**r, "sweep": "n_concepts"} for r in rec.rows[start:]  # also a point of the K' sweep
                         if r["metric"] in sweep_metrics]


def _pixel_kmeans(sh: SharedData, K: int, seed: int, xy: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means on RGB (+ xy) pixels: labels of the fitting images and of the test images."""
    from sklearn.cluster import KMeans as SKKMeans

    def feats(x: torch.Tensor) -> torch.Tensor:
        n, _, H, W = x.shape
        f = x.permute(0, 2, 3, 1)
        if xy:
            yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
            f = torch.cat([f, yy.expand(n, H, W)[..., None], xx.expand(n, H, W)[..., None]], dim=-1)
        return f.reshape(n, H * W, -1)

    g = torch.Generator().manual_seed(seed)
    F_fit = feats(sh.x_fit)
    idx = torch.randint(F_fit.shape[1], (F_fit.shape[0], 32), generator=g)
    sample = F_fit.gather(1, idx[..., None].expand(-1, -1, F_fit.shape[2])).reshape(-1, F_fit.shape[2])
    km = SKKMeans(K, n_init=1, random_state=seed).fit(sample.numpy())
    H, W = sh.size

    def predict(x: torch.Tensor) -> torch.Tensor:
        out = [torch.from_numpy(km.predict(feats(x[s:s + 100]).reshape(-1, sample.shape[1]).numpy()))
               for s in range(0, x.shape[0], 100)]
        return torch.cat(out).view(x.shape[0], H, W).long()

    return predict(sh.x_fit), predict(sh.test.images_at(torch.arange(len(sh.test))))


def measure_concept_references(sh: SharedData, d: SeedData, rec: Recorder) -> None:
    """Reference points of the concept scores: resolution ceilings, RGB(+xy) k-means, NMF.

    :func:`run_evaluation` measures them on the first seed only: the ceilings do not depend on the
    seed at all, and the pixel baselines only through their k-means initialisation.
    """
    from . import metrics

    K, n_parts = sh.profile.n_concepts, len(sh.part_names)
    for sp in d.specs:
        if sp.concepts and sp.registration == "exact" and sp.grid is None:
            geo, grid = d.lfs[sp.name].grid_geometry_, tuple(d.cmaps_test[(sp.name, K, False)].shape[-2:])
            _score_labels(rec, d.seed, sp.name, "ceiling", n_parts, metrics.pool_labels(sh.parts_fit, grid, geo),
                          metrics.pool_labels(sh.parts_test, grid, geo), sh,
                          maps_object=metrics.pool_labels(sh.parts_test, grid, geo, object_majority=True))
    for xy in (False, True):
        tr, te = _pixel_kmeans(sh, K, d.seed, xy)
        _score_labels(rec, d.seed, "pixel", "kmeans-rgbxy" if xy else "kmeans-rgb", K, tr, te, sh)
    for name in d.nmf:
        key = (name, -1, False)
        _score_labels(rec, d.seed, name, "nmf", K, d.up(d.cmaps_train[key], name, sh.size),
                      d.up(d.cmaps_test[key], name, sh.size), sh)


def measure_accuracy(sh: SharedData, d: SeedData, rec: Recorder, *, sweep: bool = False,
                     sweep_levels: Sequence[str] = ("B4", "B234")) -> None:
    """Accuracy of the linear head and of the k-means classifier at every level, and the K sweep.

    Records the test accuracy and agreement of each level's classifier (``param`` = its K, chosen
    on validation data), ``k_chosen`` and, for every candidate K, the validation accuracy that chose
    it (``val_accuracy``, sweep ``k_per_class``). The test accuracy at every K (sweep
    ``k_per_class``, classifiers refitted on all training images) is recorded for ``sweep_levels``
    on every seed, and for every level with ``sweep``.
    """
    from ..classifier import KMeansClassifier

    prof, y_test = sh.profile, sh.test.labels
    n_test = len(y_test)
    linear_pred = d.logits_test.argmax(1)
    rec.add(d.seed, "B4", "linear", "accuracy", float((linear_pred == y_test).double().mean()), n_test)
    n_val = int(d.validation.sum()) if d.validation is not None else 0
    for sp in d.specs:
        if not sp.classify:
            continue
        clf = d.clfs[sp.name]
        pred = torch.as_tensor(clf.predict(d.Z_test[sp.name])).cpu()
        method = "kmeans-cell" if sp.registration == "cell" else "kmeans"
        K = d.k_chosen.get(sp.name, clf.n_prototypes)
        rec.add(d.seed, sp.label, method, "accuracy", float((pred == y_test).double().mean()), n_test, param=K)
        rec.add(d.seed, sp.label, method, "agreement", float((pred == linear_pred).double().mean()), n_test, param=K)
        if sp.name in d.val_accuracy:
            rec.add(d.seed, sp.label, method, "k_chosen", K, n_val, param=K,
                    note=f"on a validation split of {n_val} training images")
            for k, a in d.val_accuracy[sp.name].items():
                rec.add(d.seed, sp.label, method, "val_accuracy", a, n_val, sweep="k_per_class", param=k)
        if sp.registration == "exact" and (sweep or sp.name in sweep_levels):
            for k in sorted(set(prof.k_sweep) | {prof.k_per_class, K}):
                other = clf if k == K else KMeansClassifier(
                    k, random_state=d.seed, device=clf.device).fit(d.Z_train[sp.name], sh.train.labels)
                acc = float((torch.as_tensor(other.predict(d.Z_test[sp.name])).cpu() == y_test).double().mean())
                rec.add(d.seed, sp.name, "kmeans", "accuracy", acc, n_test, sweep="k_per_class", param=k)


def measure_representativeness(sh: SharedData, d: SeedData, rec: Recorder) -> None:
    """Distance of the linear rows (raw, best rescaled) and of the k-means centroids to the data (pooled B4)."""
    from ..prototypes import prototype_representativeness
    from ..sem import linear_prototypes

    if "B4" not in d.clfs:
        return
    sigma = float(d.lfs["B4"].sigma_["B4"])  # the linear head acts on the raw pooled B4 features
    Zb4 = d.Z_train["B4"].double() * sigma
    Wl, _b = linear_prototypes(d.model)
    r_lin = prototype_representativeness(Wl.detach().double().cpu(), Zb4, rescale=True)
    protos = d.clfs["B4"].prototypes_.detach().double().cpu() * sigma
    r_km = prototype_representativeness(protos, Zb4)
    rec.add(d.seed, "B4", "linear", "prototype_nn_ratio", float(r_lin.ratio.mean()), Wl.shape[0])
    rec.add(d.seed, "B4", "linear-rescaled", "prototype_nn_ratio", float(r_lin.rescaled_ratio.mean()), Wl.shape[0])
    rec.add(d.seed, "B4", "kmeans", "prototype_nn_ratio", float(r_km.ratio.mean()), protos.shape[0],
            param=d.clfs["B4"].n_prototypes)


# ----------------------------------------------------------------------------- attribution
def _kmeans_maps(d: SeedData, name: str, x: torch.Tensor, target: Any = None, *,
                 batch_size: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means maps at image size of spec ``name`` for classes ``target`` (default: its own prediction).

    Returns ``(maps (N, H, W), explained class labels (N,))``. A resolution control uses B4's classifier,
    a cell-registration twin the classifier of its level (the pooled features barely depend on the
    registration; its maps are resampled with the cell convention).
    """
    from ..attribution import attribution_map

    sp = d.spec(name)
    clf, lf = d.clfs[name if sp.classify else (sp.level if sp.grid is None else "B4")], d.lfs[name]
    maps, labels = [], []
    for s in range(0, x.shape[0], batch_size):
        feats = lf.position_features(d.model, x[s:s + batch_size])
        scores, index = clf.best_prototype_per_class(feats.mean((2, 3)))
        col = scores.argmax(1) if target is None else \
            clf.class_columns(target[s:s + batch_size], n=index.shape[0]).to(index.device)
        mu = clf.prototypes_.to(device=feats.device, dtype=feats.dtype)[index.gather(1, col[:, None])[:, 0]]
        maps.append(attribution_map(feats, mu, size=tuple(x.shape[-2:]), geometry=lf.grid_geometry_).float().cpu())
        labels.append(torch.as_tensor(np.asarray(clf.classes_))[col.cpu()].long())
    return torch.cat(maps), torch.cat(labels)


def _attribution_set(d: SeedData, x: torch.Tensor, *, batch_size: int = 200) -> dict[tuple[str, str], tuple]:
    """Every map of images ``x``: key ``(level, method)`` -> ``(maps (N, H, W), class explained, spec or None)``."""
    from . import metrics
    from ..attribution import cam
    from .baselines import grad_cam as grad_cam_block
    from .baselines import occlusion

    out: dict[tuple[str, str], tuple] = {}
    for sp in d.specs:
        if sp.attribution:  # a level without positions (the logits) has no map
            maps, labels = _kmeans_maps(d, sp.name, x, batch_size=batch_size)
            out[(sp.label, "kmeans-cell" if sp.registration == "cell" else "kmeans")] = (maps, labels, sp.name)
    size = tuple(x.shape[-2:])
    mdev = next(d.model.parameters()).device
    pred = torch.cat([d.model(x[s:s + batch_size].to(mdev)).argmax(1).cpu() for s in range(0, x.shape[0], batch_size)]
                     ) if x.shape[0] else torch.zeros(0, dtype=torch.long)
    out[("B4", "cam")] = (cam(d.model, x.to(mdev), target=pred.to(mdev), size=size).float().cpu(), pred, None)
    out[("B3", "gradcam")] = (grad_cam_block(d.model, x.to(mdev), pred, block="B3", size=size).float().cpu(), pred, None)
    out[("pixel", "occlusion")] = (occlusion(d.model, x, pred, patch=max(1, size[0] // 4), stride=max(1, size[0] // 8)),
                                   pred, None)
    out[("pixel", "random")] = (metrics.random_maps(x.shape[0], size, random_state=d.seed), pred, None)
    return out


def _gradcam_identity_error(d: SeedData, x: torch.Tensor, target: torch.Tensor) -> float:
    """max |Grad-CAM(B4) - ReLU(CAM - b) / |P|| / max |CAM| on images ``x``."""
    from ..attribution import cam
    from .baselines import grad_cam as grad_cam_block
    from ..sem import linear_prototypes

    mdev = next(d.model.parameters()).device
    g = grad_cam_block(d.model, x.to(mdev), target, block="B4").double().cpu()
    c = cam(d.model, x.to(mdev), target=target.to(mdev)).double().cpu()
    b = linear_prototypes(d.model)[1].double().cpu()[target][:, None, None]
    ref = (c - b).clamp_min(0) / (c.shape[-2] * c.shape[-1])
    return float((g - ref).abs().max() / c.abs().max().clamp_min(1e-30))


def measure_attribution(sh: SharedData, d: SeedData, rec: Recorder, curves: list, *, steps: int = 10,
                        baseline: str | float = "blur", batch_size: int = 200) -> dict:
    """Faithfulness and localisation of every map on the first ``n_eval`` test images; returns the maps.

    Deletion / insertion track the softmax of the model each map explains: a k-means map its level's
    k-means classifier (:class:`~kmexplain_utils.scores.KMeansScoreModel`, its scores divided by
    the temperature fitted on the training embeddings; the resolution control B4's), every other map
    the network; the k-means maps of B4 and B234 are tracked on the network
    too (``*_transfer``), and the random map on the k-means classifier of B234 as well. Deletion and
    insertion are measured for the k-means maps of B4, B234 and B4@B234-grid; the other levels and
    the cell-registered maps get the pointing game and the energy.
    """
    from . import metrics

    n = sh.n_eval
    x, obj = sh.test.images_at(torch.arange(n)), sh.objects_test[:n]
    att = _attribution_set(d, x, batch_size=batch_size)
    rec.add(d.seed, "B4", "gradcam", "gradcam_identity_error", _gradcam_identity_error(d, x, att[("B4", "cam")][1]), n)
    kw = dict(steps=steps, baseline=baseline, batch_size=max(batch_size, steps + 1) * 2, random_state=d.seed)
    jobs = []
    for (lv, method), (maps, target, name) in att.items():
        if method == "kmeans" and lv in _DELETION_LEVELS:
            sp = d.spec(name)
            own = sp.name if sp.classify else "B4"
            jobs.append((lv, method, maps, target, d.scorer(own), ""))
            if sp.classify:
                jobs.append((lv, method, maps, target, d.model, "_transfer"))
        elif method not in ("kmeans", "kmeans-cell"):
            jobs.append((lv, method, maps, target, d.model, ""))
        rec.add(d.seed, lv, method, "pointing_game", float(metrics.pointing_game(maps, obj).mean()), n)
        energy = metrics.energy_in_mask(maps, obj)
        rec.add(d.seed, lv, method, "energy_in_mask", float(np.nanmean(energy)), int(np.isfinite(energy).sum()))
    if "B234" in d.clfs:
        maps, target, _ = att[("pixel", "random")]
        km_target = torch.as_tensor(np.asarray(d.clfs["B234"].classes_))[d.scorer("B234")(x).argmax(1).cpu()]
        jobs.append(("B234", "random", maps, km_target, d.scorer("B234"), ""))
    for lv, method, maps, target, scorer, suffix in jobs:
        di = metrics.deletion_insertion(scorer, x, maps, target, **kw)
        on = "linear head" if scorer is d.model else f"k-means {lv if lv != 'B4@B234-grid' else 'B4'}"
        for kind, auc, curve in (("deletion", di.deletion_auc, di.deletion), ("insertion", di.insertion_auc, di.insertion)):
            rec.add(d.seed, lv, method, f"{kind}_auc{suffix}", float(auc.mean()), n, note=f"{di.baseline}; on {on}")
            for f, v in zip(di.fractions, curve.mean(0)):
                curves.append({"profile": sh.profile.name, "seed": d.seed, "level": lv, "method": method + suffix,
                               "curve": kind, "fraction": float(f), "value": float(v)})
    return att


# ----------------------------------------------------------------------------- sanity check and contrastive maps
def measure_sanity(sh: SharedData, d: SeedData, rec: Recorder, *, n_images: int = 128,
                   n_stages: int | None = 3, batch_size: int = 128) -> list:
    """The sanity check of :func:`kmexplain_utils.evaluation.sanity.randomisation_protocol` on one seed.

    On the first ``n_images`` test images (not limited to ``n_eval``; 128 so that at least 100 of them
    have a defined rank correlation for every map: a map that is constant on an image, e.g. an
    all-zero Grad-CAM, has none, and ``n`` of a record counts only the defined ones), with the explainers of B4 and B234
    (:meth:`SeedData.explainer`): the decomposition of the trained k-means maps (metrics
    ``sanity_shared_share``, ``sanity_specific_share``, ``sanity_shared_spearman``, median over
    images, ``param`` 0) and the cascade over the first ``n_stages`` stages (head, B4, B3; metric
    ``sanity_spearman``, median over images, ``param`` = step, ``note`` = stage) for the k-means,
    contrastive, class-specific and shared maps, CAM, Grad-CAM B3 and occlusion. Returns the
    protocol's records.
    """
    from .sanity import randomisation_protocol

    n = min(int(n_images), len(sh.test))
    levels = [lv for lv in ("B4", "B234") if lv in d.clfs]
    if n < 2 or not levels:
        return []
    x = sh.test.images_at(torch.arange(n))
    recs = randomisation_protocol(d.model, {lv: d.explainer(lv) for lv in levels}, x, n_stages=n_stages,
                                  random_state=d.seed, batch_size=batch_size)
    for r in recs:
        metric = "sanity_spearman" if r.metric == "spearman" else f"sanity_{r.metric}"
        rec.add(d.seed, r.level, r.method, metric, r.median, int(np.isfinite(r.per_image).sum()),
                param=r.step, note=r.stage)
    return recs


def _contrastive_maps(d: SeedData, x: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor) -> dict:
    from . import metrics
    from ..attribution import cam
    from .baselines import grad_cam as grad_cam_block

    size = tuple(x.shape[-2:])
    out = {}
    for lv in ("B4", "B234"):
        if lv in d.clfs:
            out[(lv, "kmeans")] = _kmeans_maps(d, lv, x, c1)[0] - _kmeans_maps(d, lv, x, c2)[0]
    out[("B4", "cam")] = (cam(d.model, x, target=c1, size=size) - cam(d.model, x, target=c2, size=size)).float().cpu()
    out[("B3", "gradcam")] = (grad_cam_block(d.model, x, c1, block="B3", size=size)
                              - grad_cam_block(d.model, x, c2, block="B3", size=size)).float().cpu()
    out[("pixel", "random")] = metrics.random_maps(x.shape[0], size, random_state=d.seed) - 0.5
    return out


def measure_contrastive(sh: SharedData, d: SeedData, rec: Recorder, *, max_images: int = 200) -> None:
    """Contrastive maps ("why c1 rather than c2") scored against the ground-truth deciding part.

    Test images whose network's top two classes ``c1, c2`` differ in exactly one attribute (the
    first ``max_images`` of them); every method explains the same pair: the k-means Δ at B4 and
    B234 (best prototype of c1 minus best of c2), the CAM difference ``s_c1 - s_c2``, the Grad-CAM
    difference at B3 and a random map centred on 0. Overall records and one per deciding part
    (column ``part``).
    """
    from . import metrics

    names = list(getattr(sh.test, "class_names", []) or [])
    if not names:
        return
    top2 = d.logits_test.topk(2, dim=1).indices
    dec = torch.tensor([deciding_part(names, sh.part_names, int(a), int(b)) for a, b in top2.tolist()])
    idx = (dec >= 0).nonzero()[:, 0][: int(max_images)]
    if idx.numel() == 0:
        return
    x, parts, dp = sh.test.images_at(idx), sh.parts_test[idx], dec[idx]
    counts = {sh.part_names[j]: int((dp == j).sum()) for j in torch.unique(dp).tolist()}
    note = ", ".join(f"{k}: {v}" for k, v in counts.items())
    for (lv, method), maps in _contrastive_maps(d, x, top2[idx, 0], top2[idx, 1]).items():
        s = metrics.deciding_part_scores(maps, parts, dp)
        for part, sel in [(None, np.ones(len(dp), bool))] + [(sh.part_names[j], (dp == j).numpy()) for j in
                                                             torch.unique(dp).tolist()]:
            for metric, v in (("contrastive_mass", s.mass), ("contrastive_peak", s.peak.astype(float)),
                              ("contrastive_part_share", s.part_share)):
                vals = v[sel]
                rec.add(d.seed, lv, method, metric, float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan"),
                        int(sel.sum()), part=part, note=note)


# ----------------------------------------------------------------------------- keypoints
def measure_keypoints(sh: SharedData, d: SeedData, rec: Recorder, *, batch_size: int = 200) -> None:
    """Concepts at the part keypoints, and the part consistency of the k-means prototypes.

    - ``keypoint_nmi`` / ``keypoint_ami`` / ``keypoint_purity`` of the main concept setting of every
      level (and resolution control): the concept map at image size read under every keypoint of
      the test images, against the keypoint's part (:func:`kmexplain_utils.evaluation.keypoints.keypoint_scores`);
    - ``part_consistency`` of the k-means classifier of every level on the first ``n_eval`` test
      images (:func:`kmexplain_utils.evaluation.keypoints.prototype_consistency`, EvalProtoPNet's box of 72/224
      of the side and threshold 0.8, each image scored with the prototypes of its true class), and
      the same with boxes on uniformly random pixels (method ``random``): the chance level.

    The records' ``note`` names the keypoints' source (``sh.keypoint_source``). Nothing is
    recorded without keypoints (a data set with object masks only).
    """
    from .keypoints import PartConsistency, keypoint_scores, prototype_consistency

    if sh.keypoints_test is None:
        return
    prof, note = sh.profile, f"keypoints from {sh.keypoint_source}"
    for key in d.cms:
        name, K, per_class = key
        sp = d.spec(name)
        if K != prof.n_concepts or per_class or sp.registration != "exact":
            continue
        res = keypoint_scores(d.up(d.cmaps_test[key], name, sh.size), sh.keypoints_test)
        for metric, v in (("keypoint_nmi", res.nmi), ("keypoint_ami", res.ami), ("keypoint_purity", res.purity)):
            rec.add(d.seed, sp.label, "concepts", metric, v, res.n_keypoints, param=d.cms[key].n_concepts_total_,
                    note=note)
    n = sh.n_eval
    if n == 0:
        return
    labels, kps, n_parts = sh.test.labels[:n], sh.keypoints_test[:n], len(sh.part_names)
    for sp in d.specs:
        if not sp.classify or sp.registration != "exact" or not d.lfs[sp.name].has_positions:
            continue
        lf, clf = d.lfs[sp.name], d.clfs[sp.name]
        measured: dict[str, list] = {"max": [], "random": []}
        gen = torch.Generator().manual_seed(d.seed)
        for s in range(0, n, batch_size):
            x = sh.test.images_at(torch.arange(s, min(n, s + batch_size)))
            feats = lf.position_features(d.model, x)
            for peaks in measured:
                measured[peaks].append(prototype_consistency(
                    feats, clf, labels[s:s + batch_size], kps[s:s + batch_size], n_parts, image_size=sh.size,
                    geometry=lf.grid_geometry_, peaks=peaks, random_state=gen, batch_size=batch_size))
        for peaks, method in (("max", "kmeans"), ("random", "random")):
            res = PartConsistency.combine(measured[peaks])
            rec.add(d.seed, sp.label, method, "part_consistency", res.score, int((res.n_images > 0).sum()),
                    param=clf.n_prototypes, note=note + ("; boxes on random pixels" if peaks == "random" else ""))


# ----------------------------------------------------------------------------- the evaluation
def _seed_list(prof: Profile, seeds: Sequence[int] | int | None) -> list[int]:
    if seeds is None:
        out = list(prof.seeds)
    elif isinstance(seeds, (int, np.integer)):
        if int(seeds) < 1:
            raise ValueError(f"seeds must be >= 1 when given as a count, got {seeds}")
        top = max(prof.seeds, default=-1) + 1
        out = (list(prof.seeds) + list(range(top, top + int(seeds))))[: int(seeds)]
    else:
        out = [int(s) for s in seeds]
    if not out:
        raise ValueError("no seeds to evaluate")
    return out


def _examples(sh: SharedData, d: SeedData, example_indices: Sequence[int] | None, batch_size: int) -> dict:
    """The showcase images with all their maps (concepts also coloured by their train-fitted part)."""
    test = sh.test
    if example_indices is None:
        idx = [int((test.labels == c).nonzero()[0]) for c in torch.unique(test.labels)[:8].tolist()]
    else:
        idx = [int(i) for i in example_indices if 0 <= int(i) < len(test)]
    x = test.images_at(idx)
    att = _attribution_set(d, x, batch_size=batch_size)
    K = sh.profile.n_concepts
    keys = [k for k in d.cms if k[1] == K and not k[2] and d.spec(k[0]).registration == "exact"]
    cmaps = {d.spec(k[0]).label: d.up(d.cmaps_test[k][idx], k[0], sh.size).numpy().astype(np.int64) for k in keys}
    cparts = {d.spec(k[0]).label: d.mappings[k][cmaps[d.spec(k[0]).label]] for k in keys if k in d.mappings}
    return {
        "index": np.asarray(idx), "images": x.numpy(), "parts": sh.parts_test[idx].numpy(),
        "objects": sh.objects_test[idx].numpy(), "labels": test.labels[idx].numpy(),
        "target": att[("B4", "cam")][1].numpy(), "part_names": sh.part_names,
        "class_names": list(getattr(test, "class_names", []) or []), "concept_maps": cmaps, "concept_parts": cparts,
        "attributions": {f"{lv}/{m}": v[0].numpy() for (lv, m), v in att.items() if m != "kmeans-cell"},
        "explained": {f"{lv}/{m}": v[1].numpy() for (lv, m), v in att.items() if m != "kmeans-cell"},
        "seed": d.seed,
    }


def _measure_seed(sh: SharedData, d: SeedData, rec: Recorder, curves: list, tick: Any, *, first: bool,
                  sweeps: bool, attribution: bool, extras: bool, steps: int, baseline: Any,
                  example_indices: Any, batch_size: int, interventions: bool = False) -> dict:
    """Every measurement of one prepared seed; returns the showcase maps on the first seed ({} otherwise)."""
    examples: dict = {}
    t = time.perf_counter()
    measure_accuracy(sh, d, rec, sweep=sweeps and first)
    measure_representativeness(sh, d, rec)
    t = tick("classifiers", t)
    measure_concepts(sh, d, rec)
    t = tick("concepts", t)
    if extras and first:
        measure_concept_references(sh, d, rec)
        t = tick("concept references", t)
    att = None
    if attribution and sh.n_eval > 0:
        att = measure_attribution(sh, d, rec, curves, steps=steps, baseline=baseline, batch_size=batch_size)
        if first:
            examples = _examples(sh, d, example_indices, batch_size)
        t = tick("attribution", t)
    if extras:
        if sh.n_eval > 0:
            measure_sanity(sh, d, rec)
            t = tick("sanity", t)
        measure_contrastive(sh, d, rec)
        t = tick("contrastive", t)
        measure_keypoints(sh, d, rec, batch_size=batch_size)
        t = tick("keypoints", t)
    if interventions and sh.n_eval > 0:
        measure_seed_interventions(sh, d, rec, maps=att, batch_size=batch_size)
        tick("interventions", t)
    return examples


def measure_seed_interventions(sh: SharedData, d: SeedData, rec: Recorder, *, maps: dict | None = None,
                               n_images: int | None = None, batch_size: int = 200) -> dict:
    """:func:`~kmexplain_utils.evaluation.interventions.measure_interventions` with this evaluation's maps.

    Every map of :func:`measure_attribution` (``maps``: its return value on the first ``n_eval``
    test images, reused; else computed) and the contrastive maps of :func:`measure_contrastive`.
    """
    return measure_interventions(sh, d, rec, explain=lambda x: _attribution_set(d, x, batch_size=batch_size),
                                 contrast=lambda x, c1, c2: _contrastive_maps(d, x, c1, c2), maps=maps,
                                 n_images=n_images, batch_size=batch_size)


def _result_frame(rec: Recorder, curves: list, examples: dict, prof: Profile, seed_list: list, specs: list,
                  dev: Any, sh: SharedData, deletion_steps: int, timings: dict, t_start: float) -> Any:
    """The records as a DataFrame with ``attrs`` curves, examples and info."""
    import pandas as pd

    df = pd.DataFrame(rec.rows, columns=list(COLUMNS))
    df.attrs["curves"] = pd.DataFrame(curves, columns=["profile", "seed", "level", "method", "curve", "fraction",
                                                       "value"])
    df.attrs["examples"] = examples
    notes = df.loc[df["metric"] == "deletion_auc", "note"].dropna()
    df.attrs["info"] = {
        "profile": prof.as_dict(), "seeds": seed_list, "levels": list(dict.fromkeys(sp.label for sp in specs)),
        "device": str(dev), "deletion_baseline": notes.iloc[0].split(";")[0] if len(notes) else None,
        "deletion_steps": int(deletion_steps), "n_fit_images": int(sh.x_fit.shape[0]),
        "n_test_images": len(sh.test), "n_eval_images": sh.n_eval, "learned_accuracy": LEARNED_ACCURACY,
        "timings_s": {k: round(float(v), 2) for k, v in timings.items()},
        "seconds": round(time.perf_counter() - t_start, 2),
    }
    return df


def run_evaluation(
    profile: str | Profile | None = "quick",
    seeds: Sequence[int] | int | None = None,
    *,
    levels: Sequence[str] | None = None,
    device: str | torch.device = "auto",
    include_sweeps: bool = True,
    include_attribution: bool = True,
    include_extras: bool = True,
    include_interventions: bool = False,
    deletion_steps: int = 10,
    deletion_baseline: str | float = "blur",
    n_fit_images: int = 500,
    example_indices: Sequence[int] | None = None,
    batch_size: int = 200,
    shared: SharedData | None = None,
    prepared: dict[int, SeedData] | None = None,
) -> pandas.DataFrame:  # noqa: F821
    """Run the evaluation of METHOD section 6 and return tidy records.

    Parameters
    ----------
    profile : str or Profile, default "quick"
        Which profile (``None``: ``KMEX_PROFILE``); sizes come from it.
    seeds : sequence of int or int, optional
        Seeds (model and k-means); an int ``n`` = the first ``n`` of ``profile.seeds``.
    levels : sequence of str, optional
        Default ``profile.levels``; multi-block levels with B4 get their resolution control,
        every block level its cell-registration twin.
    device : str or torch.device, default "auto"
    include_sweeps : bool, default True
        On the first seed: the sweep over prototypes per class and the concept ablation
        (number of concepts, per-class concepts).
    include_attribution : bool, default True
        Attribution metrics (and the showcase maps).
    include_extras : bool, default True
        The concept references (first seed), the sanity check and the contrastive scores (every
        seed).
    include_interventions : bool, default False
        The part interventions (:mod:`~kmexplain_utils.evaluation.interventions`, every seed; the
        generated data set only). Off by default so that chapter 5 stays within its time budget;
        chapter 7 measures them, and the command line runs them unless ``--no-interventions``.
    deletion_steps : int, default 10
    deletion_baseline : {"blur", "mean"} or float, default "blur"
    n_fit_images : int, default 500
        Training images that fit the concepts and the concept-to-part mapping.
    example_indices : sequence of int, optional
        Showcase test images (default: the first of each class, at most 8).
    batch_size : int, default 200
    shared : SharedData, optional
        The output of :func:`load_data` for this profile (reused instead of loading again).
    prepared : dict of int to SeedData, optional
        Seeds already through :func:`prepare_seed` (with the same levels; the first seed with
        ``ablation=include_sweeps``), reused instead of recomputed.

    Returns
    -------
    pandas.DataFrame
        Records with the columns :data:`COLUMNS`; ``df.attrs`` holds ``"curves"`` (mean
        deletion / insertion curves), ``"examples"`` (the showcase maps) and ``"info"``.
    """
    t_start = time.perf_counter()
    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    seed_list = _seed_list(prof, seeds)
    level_list = list(prof.levels if levels is None else levels)
    if not level_list:
        raise ValueError("levels is empty; use e.g. ['logits', 'B4', 'B234']")
    specs = evaluation_specs(level_list)
    dev = resolve_device(device)
    rec, curves, examples, timings = Recorder(prof.name), [], {}, {}
    if include_interventions and prof.dataset != "parts":
        raise ValueError(f"interventions re-render generated scenes: the {prof.dataset!r} data set cannot be "
                         "re-rendered; use include_interventions=False (or a profile on the 'parts' data set)")
    interventions = bool(include_interventions)

    def tick(key: str, t0: float) -> float:
        t1 = time.perf_counter()
        timings[key] = timings.get(key, 0.0) + (t1 - t0)
        return t1

    bar = progress(total=len(seed_list), desc="evaluation")
    previous = getattr(config, "_progress_override", None)
    set_progress(False)  # the inner bars of the package stay quiet under this one
    try:
        t = time.perf_counter()
        sh = shared if shared is not None else load_data(prof, n_fit_images)
        t = tick("data", t)
        missing = [(prof, s) for s in seed_list if s not in (prepared or {})]
        if len(missing) > 1:  # the networks not in the cache yet, side by side on the CPU
            from ..chapters.training import train_checkpoints

            train_checkpoints(missing, device=dev)
            t = tick("training", t)
        for si, seed in enumerate(seed_list):
            first = si == 0
            bar.set_description(f"seed {seed}")
            d = (prepared or {}).get(seed) or prepare_seed(sh, seed, specs, device=dev,
                                                           ablation=include_sweeps and first, batch_size=batch_size)
            t = tick("prepare (model, fits, features)", t)
            examples = _measure_seed(sh, d, rec, curves, tick, first=first, sweeps=include_sweeps,
                                     attribution=include_attribution, extras=include_extras, steps=deletion_steps,
                                     baseline=deletion_baseline, example_indices=example_indices,
                                     batch_size=batch_size, interventions=interventions) or examples
            t = time.perf_counter()
            bar.update(1)
    finally:
        set_progress(previous)
        bar.close()
    return _result_frame(rec, curves, examples, prof, seed_list, specs, dev, sh, deletion_steps, timings, t_start)


#: chapter 5's less-data run: a quarter of the training images, four times the epochs
FEWER_DATA_FRACTION = 4


def evaluation_networks(profile: Profile) -> list[tuple[Profile, int]]:
    """The ``(profile, seed)`` of every network the evaluation uses: one per seed of ``profile``, and
    the less-data network (:func:`fewer_data_profile`, the first seed).

    Hand them to :func:`~kmexplain_utils.chapters.training.train_checkpoints` to train them side by side.

    Example
    -------
    >>> from kmexplain_utils.config import get_profile
    >>> [(p.n_train, s) for p, s in evaluation_networks(get_profile("quick"))]
    [(8000, 0), (8000, 1), (8000, 2), (2000, 0)]
    """
    return [(profile, int(s)) for s in profile.seeds] + [
        (fewer_data_profile(profile, FEWER_DATA_FRACTION), int(profile.seeds[0]))]


def fewer_data_profile(profile: Profile, fraction: int = FEWER_DATA_FRACTION) -> Profile:
    """The profile with ``1 / fraction`` of the training images and ``fraction`` times the epochs.

    The number of optimisation steps (images seen) stays the same, so that a worse network means
    "less data", not "less training". A profile with ``n_train = 0`` (the dataset's own split, the
    paper profile) gets ``len(train) // fraction`` images.
    """
    from ..data import load_dataset
    from ..chapters.training import DATA_SEED

    if int(fraction) < 1:
        raise ValueError(f"fraction must be >= 1, got {fraction}")
    n = int(profile.n_train) or len(load_dataset(profile.dataset, "train", profile, seed=DATA_SEED))
    return profile.replace(n_train=max(1, n // int(fraction)), epochs=int(profile.epochs) * int(fraction))


# ----------------------------------------------------------------------------- the claims, measured
def _m(df: Any, level: str, method: str, metric: str, **eq: Any) -> float:
    sel = (df["level"] == level) & (df["method"] == method) & (df["metric"] == metric)
    sel &= df["sweep"].isna() if "sweep" not in eq else (df["sweep"] == eq.pop("sweep"))
    for k, v in eq.items():
        sel &= df[k] == v
    v = df.loc[sel, "value"]
    return float(v.mean()) if len(v) else float("nan")


#: the two labelled parts of :func:`claims_table`
CLAIM_PARTS = ("the paper's claims (its abstract)", "the book's own hypotheses")
#: the columns of :func:`claims_table`
CLAIM_COLUMNS = ("part", "claim", "measured here", "rule", "verdict")


def _per_seed(df: Any, metric: str, method: str, **eq: Any) -> Any:
    """``seed x level`` table of one main (non-sweep) measurement."""
    sel = (df["metric"] == metric) & (df["method"] == method) & df["sweep"].isna()
    for k, v in eq.items():
        sel &= df[k] == v
    return df[sel].pivot_table(index="seed", columns="level", values="value")


def accuracy_percent(share: float) -> float:
    """An accuracy in percent as the readings and the claims table print it: rounded half up to two
    decimals, ``0.96375`` gives ``96.38``; NaN stays NaN.

    An accuracy on 800 test images moves in steps of 0.125 %, so that two decimals print it (almost)
    exactly; the float noise of ``100 * share`` is removed before rounding (``96.375`` never reads ``96.37``).

    Example
    -------
    >>> accuracy_percent(0.96375), accuracy_percent(0.9725), accuracy_percent(0.95)
    (96.38, 97.25, 95.0)
    """
    x = 100 * float(share)
    if not math.isfinite(x):
        return x
    return float(Decimal(repr(round(x, 6))).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def _gap(a: float, b: float) -> float:
    """The difference ``a - b`` of two percentages of ``accuracy_percent``, in points, as it prints with two decimals.

    Computed from the rounded percentages, so that a sentence ``"a % against b %, a - b points"`` is
    consistent by construction; a threshold compares exactly (``_gap(95.0, 95.5) == -0.5``).
    """
    return round(a - b, 2)


def _accuracy_pair(a: float, b: float, name_a: str = "", name_b: str = "") -> tuple[str, float]:
    """``"<name_a> 96.38 % against <name_b> 97.25 %, -0.87 points"`` and that difference (``_gap``)."""
    pa, pb = accuracy_percent(a), accuracy_percent(b)
    d = _gap(pa, pb)
    na, nb = (f"{name_a} " if name_a else ""), (f"{name_b} " if name_b else "")
    return f"{na}{pa:.2f} % against {nb}{pb:.2f} %, {d:+.2f} points", d


def _seed_gaps(a: Any, b: Any) -> list[float]:
    """Per seed (the index shared by the Series ``a`` and ``b``), ``a - b`` in points as ``_gap`` prints it."""
    return [_gap(accuracy_percent(x), accuracy_percent(y)) for x, y in zip(a, b)]


def _seed_verdict(every: Any, mean: bool) -> str:
    """``"holds"`` when the claim holds on every seed (``every``: one bool per seed, at least one),
    ``"on average only"`` when only the mean over seeds does (``mean``), else ``"does not hold"``.

    Example
    -------
    >>> _seed_verdict([True, True], True), _seed_verdict([True, False], True), _seed_verdict([False], False)
    ('holds', 'on average only', 'does not hold')
    """
    every = np.asarray(every, dtype=bool)
    if every.size and bool(every.all()):
        return "holds"
    return "on average only" if mean else "does not hold"


def claims_table(df: pandas.DataFrame, fewer_data: pandas.DataFrame | None = None) -> pandas.DataFrame:  # noqa: F821
    """The claims, what this evaluation measured, the rule that gives the verdict, and the verdict.

    Two labelled parts (column ``part``, :data:`CLAIM_PARTS`): the paper's claims, as its abstract
    states them, and the book's own hypotheses. The rule of each verdict (thresholds and seeds) is
    written in the column ``rule`` so that the page prints it beside the verdict. A comparison read
    per seed says ``"holds"`` when it holds on every seed and ``"on average only"`` when only the mean
    over seeds does (``_seed_verdict``):

    - no accuracy lost by the k-means head: ``abs(k-means B4 - linear) <= 1.5`` points on every seed
      ("on average only" when only the mean is);
    - the linear prototypes do not represent the data, the k-means ones do: the k-means centroids'
      nearest-embedding ratio is below the best-rescaled linear rows' on every seed;
    - the maps are backed by faithful attribution: on their own k-means classifier, the deletion AUC
      of the k-means maps of B4 and B234 is below the random map's on every seed ("on average only"
      when only the mean is);
    - B234's slight loss of accuracy: B234 below B4 by more than 0.5 point on every seed;
    - B234's better semantic fidelity: object-pixel AMI of B234 above B4's and above the resolution
      control's on every seed ("on average only" when only the mean is);
    - (book) B234's maps localise better: pointing game of B234 above B4's and the control's on
      every seed ("on average only" when only the mean is);
    - (book) the k-means maps pass the model-randomisation check: median rank correlation after the
      head and B4 are randomised below :data:`kmexplain_utils.evaluation.sanity.PASS_THRESHOLD` on every seed,
      for the maps of B4 and B234 (the contrastive maps reported beside);
    - (book, with ``fewer_data``: the records of a run on less data) B234 costs accuracy with less
      data: B234 below B4 by more than 0.5 point on every seed of that run, drawn only when the linear
      head reached :data:`LEARNED_ACCURACY`.

    Accuracies are printed in percent with two decimals (``accuracy_percent``; a step of an 800-image test set
    is 0.125 %), and every difference printed beside them, and compared with a threshold, is computed
    from the two rounded values (``_gap``), so that a cell never contradicts itself.

    Returns
    -------
    DataFrame
        Columns :data:`CLAIM_COLUMNS`; verdicts ``"holds"``, ``"does not hold"``,
        ``"on average only"``, ``"fails"``, ``"passes"``, ``"not measurable here"``.
    """
    import pandas as pd

    from .sanity import PASS_STAGE, PASS_THRESHOLD

    n_seeds = int(df["seed"].nunique())
    seeds = f"{n_seeds} seed{'s' if n_seeds != 1 else ''}"
    on_average = "'on average only' when only the mean does"
    acc = _per_seed(df, "accuracy", "kmeans")
    lin = _per_seed(df, "accuracy", "linear")
    acc_text, acc_gap = _accuracy_pair(acc["B4"].mean(), lin["B4"].mean(), "k-means B4", "linear head")
    acc_gaps = _seed_gaps(acc["B4"], lin["B4"].reindex(acc.index))
    loss_text, loss_gap = _accuracy_pair(acc["B234"].mean(), acc["B4"].mean(), "B234", "B4")
    loss_gaps = _seed_gaps(acc["B234"], acc["B4"])
    r_km = _per_seed(df, "prototype_nn_ratio", "kmeans")["B4"]
    r_lin = _per_seed(df, "prototype_nn_ratio", "linear-rescaled")["B4"]
    ami_seed = _per_seed(df, "ami_object", "concepts").reindex(columns=["B4", "B234", "B4@B234-grid"])
    ami = {lv: float(ami_seed[lv].mean()) for lv in ami_seed.columns}
    ami_wins = (ami_seed["B234"] > ami_seed["B4"]) & (ami_seed["B234"] > ami_seed["B4@B234-grid"])
    ceil = _m(df, "B234", "ceiling", "ami_object")
    pg_seed = _per_seed(df, "pointing_game", "kmeans")
    pg = {lv: float(pg_seed[lv].mean()) for lv in ("B4", "B234", "B4@B234-grid")}
    pg_wins = (pg_seed["B234"] > pg_seed["B4"]) & (pg_seed["B234"] > pg_seed["B4@B234-grid"])
    del_seed = _per_seed(df, "deletion_auc", "kmeans").reindex(columns=["B4", "B234"])
    del_seed["random"] = _per_seed(df, "deletion_auc", "random").reindex(index=del_seed.index, columns=["B234"])
    dele = {k: float(del_seed[k].mean()) for k in del_seed.columns}
    del_wins = del_seed[["B4", "B234"]].max(axis=1) < del_seed["random"]
    san = df[(df["metric"] == "sanity_spearman") & (df["note"] == PASS_STAGE)]
    san = san.pivot_table(index="seed", columns=["level", "method"], values="value")

    def worst(lv: str, method: str) -> float:
        return float(san[(lv, method)].max()) if (lv, method) in san.columns else float("nan")

    def per_seed(gaps: Sequence[float]) -> str:
        return "per seed: " + ", ".join(f"{g:+.2f}" for g in gaps)

    km_sanity = [worst(lv, "kmeans") for lv in ("B4", "B234")]
    con_sanity = [worst(lv, "contrastive") for lv in ("B4", "B234")]
    paper, book = CLAIM_PARTS
    rows = [
        (paper, "A CNN is an SEM whose prototypes (the linear rows) do not represent the data; k-means "
         "prototypes do",
         f"nearest-embedding ratio {r_km.mean():.2f} (k-means centroids) vs {r_lin.mean():.2f} (linear rows, "
         "best rescaled)",
         f"holds when the k-means ratio is below the linear one on every seed ({seeds})",
         "holds" if len(r_km) and bool((r_km < r_lin).all()) else "does not hold"),
        (paper, "Replacing the linear head by k-means costs no accuracy",
         f"{acc_text} ({per_seed(acc_gaps)})",
         f"holds when |k-means B4 − linear| ≤ 1.5 points on every seed ({seeds}); {on_average}",
         _seed_verdict([abs(g) <= 1.5 for g in acc_gaps], abs(acc_gap) <= 1.5)),
        (paper, "The concept maps are backed by gradient-free attribution maps (faithful to the model they "
         "explain)",
         f"deletion AUC {dele['B4']:.3f} (B4), {dele['B234']:.3f} (B234) vs "
         f"{dele['random']:.3f} for a random map, on the k-means classifier (mean of {seeds})",
         f"holds when both k-means AUCs are below the random map's on every seed ({seeds}); {on_average}",
         _seed_verdict(del_wins, max(dele["B4"], dele["B234"]) < dele["random"])),
        (paper, "B234 costs a slight loss of accuracy against B4",
         f"{loss_text} ({per_seed(loss_gaps)})",
         f"holds when B234 is below B4 by more than 0.5 point on every seed ({seeds})",
         "holds" if len(loss_gaps) and all(g < -0.5 for g in loss_gaps) else "does not hold"),
        (paper, "B234 concepts are semantically more faithful than B4's",
         f"object-pixel AMI {ami['B4']:.3f} (B4) → {ami['B234']:.3f} (B234); resolution control "
         f"{ami['B4@B234-grid']:.3f}; ceiling of the grid {ceil:.3f} (mean of {seeds}); per seed, B4 → B234 "
         "(control): " + ", ".join(f"{r['B4']:.3f} → {r['B234']:.3f} ({r['B4@B234-grid']:.3f})"
                                   for _, r in ami_seed.iterrows()),
         f"holds when B234's AMI is above B4's and the control's on every seed ({seeds}); {on_average}",
         _seed_verdict(ami_wins, ami["B234"] > ami["B4"] and ami["B234"] > ami["B4@B234-grid"])),
        (book, "B234 attribution maps localise better (finer maps)",
         f"pointing game {pg['B4']:.2f} (B4), {pg['B234']:.2f} (B234), {pg['B4@B234-grid']:.2f} (control)",
         f"holds when B234 beats B4 and the control on every seed ({seeds}); {on_average}",
         _seed_verdict(pg_wins, pg["B234"] > max(pg["B4"], pg["B4@B234-grid"]))),
        (book, "The k-means attribution maps depend on the network's weights (model-randomisation check)",
         f"median rank correlation with the trained maps after the head and B4 are randomised: "
         f"{km_sanity[0]:.2f} (B4), {km_sanity[1]:.2f} (B234), worst seed; contrastive maps "
         f"{con_sanity[0]:.2f} (B4), {con_sanity[1]:.2f} (B234)",
         f"passes when the median is below {PASS_THRESHOLD} on every seed ({seeds}), for B4 and B234",
         "not measurable here" if not np.isfinite(km_sanity).all() else
         ("passes" if max(km_sanity) < PASS_THRESHOLD else "fails")),
    ]
    if fewer_data is not None:
        f_acc = _per_seed(fewer_data, "accuracy", "kmeans")
        f_lin = float(_per_seed(fewer_data, "accuracy", "linear")["B4"].mean())
        f_text, _ = _accuracy_pair(f_acc["B234"].mean(), f_acc["B4"].mean(), "B234", "B4")
        f_gaps = _seed_gaps(f_acc["B234"], f_acc["B4"])
        n_f = int(fewer_data["seed"].nunique())
        learned = f_lin >= LEARNED_ACCURACY
        rows.append((
            book, "With less data, B234 costs accuracy against B4",
            (f"{f_text} ({per_seed(f_gaps)}; {n_f} seed{'s' if n_f != 1 else ''}; linear head "
             f"{accuracy_percent(f_lin):.2f} %)"),
            f"holds when B234 is below B4 by more than 0.5 point on every seed ({n_f}), read only when the "
            f"linear head reaches {100 * LEARNED_ACCURACY:.0f} %",
            ("holds" if f_gaps and all(g < -0.5 for g in f_gaps) else "does not hold") if learned
            else "not measurable here"))
    return pd.DataFrame(rows, columns=list(CLAIM_COLUMNS))


# ----------------------------------------------------------------------------- K, chosen on validation data
def k_cost(df: pandas.DataFrame, level: str = "B234", reference: str = "B4") -> pandas.DataFrame:  # noqa: F821
    """``level``'s test-accuracy difference against ``reference`` at every K, per seed (points).

    Reads the sweep records (``sweep == "k_per_class"``, metric ``accuracy``) of
    :func:`measure_accuracy`; negative = ``level`` less accurate.

    Returns
    -------
    DataFrame
        Index K; one column per seed, then ``mean`` and ``sd`` (over seeds).

    Example
    -------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"sweep": "k_per_class", "metric": "accuracy", "method": "kmeans",
    ...                    "seed": 0, "param": [1, 1], "level": ["B4", "B234"], "value": [0.9, 0.88]})
    >>> round(float(k_cost(df).loc[1, "mean"]), 6)
    -2.0
    """
    sel = df[(df["sweep"] == "k_per_class") & (df["metric"] == "accuracy") & (df["method"] == "kmeans")]
    t = sel.pivot_table(index=["param", "seed"], columns="level", values="value")
    if level not in t.columns or reference not in t.columns:
        raise ValueError(f"no K sweep of {level} and {reference}: run measure_accuracy with sweep_levels")
    diff = (100 * (t[level] - t[reference])).unstack("seed")
    diff.index = diff.index.astype(int)
    diff.index.name = "K"
    out = diff.copy()
    out["mean"] = diff.mean(axis=1)
    out["sd"] = diff.std(axis=1, ddof=1)
    return out


def k_chosen(df: pandas.DataFrame) -> pandas.DataFrame:  # noqa: F821
    """The K chosen on validation data, per seed (rows) and level (columns)."""
    sel = df[(df["metric"] == "k_chosen") & (df["method"] == "kmeans")]
    return sel.pivot_table(index="seed", columns="level", values="value", sort=False).astype(int)


def plot_k_cost(df: pandas.DataFrame, ax: Any = None, level: str = "B234", reference: str = "B4"):  # noqa: F821
    """B234's accuracy cost against B4 as a function of K: mean ± sd over seeds, each seed as a dot.

    The K chosen on validation data for ``level`` is marked on the axis (one tick mark per seed).
    """
    import matplotlib.pyplot as plt

    cost = k_cost(df, level, reference)
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 3.8), layout="constrained")
    seeds = [c for c in cost.columns if c not in ("mean", "sd")]
    for sd in seeds:
        ax.plot(cost.index, cost[sd], "o", color="0.6", ms=4, label="one seed" if sd == seeds[0] else None)
    ax.errorbar(cost.index, cost["mean"], yerr=cost["sd"].fillna(0), fmt="-o", capsize=3, color="C0",
                label=f"mean ± sd over {len(seeds)} seed{'s' if len(seeds) != 1 else ''}")
    ax.axhline(0, color="k", lw=0.8)
    chosen = k_chosen(df)
    if level in chosen.columns:
        ks = chosen[level].tolist()
        ax.plot(ks, [ax.get_ylim()[0]] * len(ks), "^", color="C3", ms=9, clip_on=False,
                label=f"K chosen on validation ({level})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(cost.index), [str(k) for k in cost.index])
    ax.set_xlabel("prototypes per class K")
    ax.set_ylabel(f"{level} − {reference} test accuracy (points)")
    ax.set_title(f"{level} against {reference} in test accuracy, per K")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return ax.figure


# ----------------------------------------------------------------------------- the sanity check, reported
_SANITY_ORDER = ("kmeans", "contrastive", "class-specific", "shared", "cam", "gradcam", "occlusion")


def sanity_label(level: str, method: str) -> str:
    """Readable name of a map of the sanity check: ``"k-means B4, contrastive"``, ``"CAM"``...

    Example
    -------
    >>> sanity_label("B234", "class-specific"), sanity_label("B3", "gradcam")
    ('k-means B234, class-specific part', 'Grad-CAM B3')
    """
    if method == "kmeans":
        return f"k-means {level}"
    if method in ("contrastive", "class-specific", "shared"):
        return f"k-means {level}, " + {"contrastive": "contrastive", "class-specific": "class-specific part",
                                        "shared": "shared part"}[method]
    return method_label(level, method)


def sanity_verdicts(df: pandas.DataFrame, *, threshold: float | None = None,  # noqa: F821
                    stage: str | None = None) -> pandas.DataFrame:  # noqa: F821
    """Each map of the sanity check, its correlation after ``stage`` and its verdict.

    The rule (:func:`kmexplain_utils.evaluation.sanity.verdicts`, over seeds): a map **passes** when the median
    rank correlation with the trained maps, after the cascade has randomised ``stage`` (default
    :data:`~kmexplain_utils.evaluation.sanity.PASS_STAGE`, the head and B4), is below ``threshold`` (default
    :data:`~kmexplain_utils.evaluation.sanity.PASS_THRESHOLD`) on **every** seed.

    Parameters
    ----------
    df : DataFrame
        Records with ``sanity_spearman`` rows (:func:`measure_sanity`).

    Returns
    -------
    DataFrame
        Index ``(level, method)``; columns ``map`` (label), ``mean``, ``sd`` (over seeds), ``worst``
        (the largest over seeds), ``seeds``, ``passes`` (bool).

    Example
    -------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"metric": "sanity_spearman", "note": "B4", "level": "B4", "method": "kmeans",
    ...                    "seed": [0, 1], "value": [0.3, 0.7]})
    >>> sanity_verdicts(df)["passes"].tolist()       # one seed above 0.5: it fails
    [False]
    """
    import pandas as pd

    from .sanity import PASS_STAGE, PASS_THRESHOLD

    threshold = PASS_THRESHOLD if threshold is None else float(threshold)
    stage = PASS_STAGE if stage is None else stage
    sel = df[(df["metric"] == "sanity_spearman") & (df["note"] == stage)]
    if sel.empty:
        raise ValueError(f"no sanity_spearman record after stage {stage!r}: run measure_sanity first")
    g = sel.groupby(["level", "method"], sort=False)["value"]
    out = pd.DataFrame({"mean": g.mean(), "sd": g.std(ddof=1), "worst": g.max(), "seeds": g.count()})
    out["passes"] = out["worst"] < threshold
    out.insert(0, "map", [sanity_label(lv, m) for lv, m in out.index])
    order = {m: i for i, m in enumerate(_SANITY_ORDER)}
    return out.iloc[sorted(range(len(out)), key=lambda i: order.get(out.index[i][1], 99))]  # stable: B4 first


def sanity_advice(verdicts: pandas.DataFrame) -> str:  # noqa: F821
    """What a reader should look at in a k-means map, given the verdicts of :func:`sanity_verdicts`.

    Reads, at B4 and B234, whether the full k-means map, its contrastive form and its class-specific
    part pass; says which to read and which not to read as the reason of a decision.

    Example
    -------
    >>> import pandas as pd
    >>> idx = pd.MultiIndex.from_tuples([(lv, m) for lv in ("B4", "B234")
    ...                                  for m in ("kmeans", "contrastive", "class-specific")])
    >>> v = pd.DataFrame({"passes": [False, True, True] * 2}, index=idx)
    >>> sanity_advice(v).split(":")[0]
    'What to look at'
    """
    def ok(lv: str, m: str) -> bool | None:
        return bool(verdicts.loc[(lv, m), "passes"]) if (lv, m) in verdicts.index else None

    levels = [lv for lv in ("B4", "B234") if ok(lv, "kmeans") is not None]
    raw_fail = [lv for lv in levels if not ok(lv, "kmeans")]
    good = [f"the {'contrastive map' if m == 'contrastive' else 'class-specific part'} at " + " and ".join(at)
            for m in ("contrastive", "class-specific") if (at := [lv for lv in levels if ok(lv, m)])]
    if not raw_fail:
        return ("What to look at: the k-means maps pass at " + " and ".join(levels) + ": they change when "
                "the weights are destroyed, and can be read as explanations of the decision.")
    text = ("What to look at: the full k-means map fails at " + " and ".join(raw_fail) + ". It is mostly its "
            "shared part, the same for every class: read it as *where the features are strong*, not *why this "
            "class*. ")
    if good:
        return text + ("These pass: " + ", ".join(good) + "; read them for why a class was chosen, beside the "
                       "full map.")
    return text + ("Neither its contrastive form nor its class-specific part passes: no k-means map here shows, by "
                   "this test, what the network learned.")


def sanity_table(df: pandas.DataFrame, digits: int = 2) -> pandas.DataFrame:  # noqa: F821
    """The sanity check as one table: mean ± sd over seeds after each cascade step, and the verdict.

    Rows are the maps (:func:`sanity_label`), columns ``"after <stage>"`` in cascade order and
    ``"verdict"`` (:func:`sanity_verdicts`).
    """
    import pandas as pd

    from .sanity import PASS_STAGE

    sel = df[df["metric"] == "sanity_spearman"]
    g = sel.groupby(["level", "method", "param", "note"], sort=False)["value"].agg(["mean", "std", "count"])
    cells = {}
    for (lv, m, _step, stage), r in g.iterrows():
        cells.setdefault((lv, m), {})[f"after {stage}"] = format_mean_std(
            r["mean"], r["std"] if r["count"] > 1 else None, digits)
    v = sanity_verdicts(df)
    table = pd.DataFrame([{**cells[k], "verdict": "passes" if v.loc[k, "passes"] else "fails"} for k in v.index],
                         index=pd.Index(v["map"].tolist(), name="map"))
    table.columns.name = f"rank correlation with the trained maps (rule: after {PASS_STAGE})"
    return table


def sanity_shares(df: pandas.DataFrame) -> pandas.DataFrame:  # noqa: F821
    """The decomposition of the trained k-means maps, mean ± sd over seeds, one row per level.

    Columns: the shared part's share of the map's variance, the class-specific part's, and the
    rank correlation of the map with its shared part (medians over images, :func:`measure_sanity`).
    """
    names = {"sanity_shared_share": "shared part's share of the variance",
             "sanity_specific_share": "class-specific part's share",
             "sanity_shared_spearman": "rank correlation of the map with its shared part"}
    sel = df[df["metric"].isin(list(names))]
    g = sel.groupby(["level", "metric"], sort=False)["value"].agg(["mean", "std", "count"])
    table = g.apply(lambda r: format_mean_std(r["mean"], r["std"] if r["count"] > 1 else None, 2),
                    axis=1).unstack("metric")
    table = table[[m for m in names if m in table.columns]].rename(columns=names)
    table.index = [f"k-means {lv}" for lv in table.index]
    return table


def plot_sanity(df: pandas.DataFrame, axes: Any = None):  # noqa: F821
    """The cascade: median rank correlation with the trained maps after each step, mean ± sd over seeds.

    Three panels (k-means B4 maps, k-means B234 maps, the baselines); the dashed line is the pass
    threshold, the grey band the step the rule reads. Legends sit below the panels.
    """
    import matplotlib.pyplot as plt

    from .sanity import PASS_STAGE, PASS_THRESHOLD

    sel = df[df["metric"] == "sanity_spearman"]
    if axes is None:
        fig, axes = plt.subplots(1, 3, figsize=(12, 4.2), sharey=True, layout="constrained")
    fig = axes[0].figure
    steps = sel.drop_duplicates("param").sort_values("param")
    ticks = ["trained"] + steps["note"].tolist()
    groups = [("k-means B4", lambda lv, m: lv == "B4" and m in _SANITY_ORDER[:4]),
              ("k-means B234", lambda lv, m: lv == "B234" and m in _SANITY_ORDER[:4]),
              ("baselines", lambda lv, m: m in _SANITY_ORDER[4:])]
    styles = {"kmeans": "-o", "contrastive": "-s", "class-specific": "--^", "shared": ":v"}
    for ax, (title, keep) in zip(axes, groups):
        for (lv, m), g in sel.groupby(["level", "method"], sort=False):
            if not keep(lv, m):
                continue
            st = g.groupby("param")["value"].agg(["mean", "std"]).reindex(steps["param"])
            x = [0, *range(1, len(st) + 1)]
            ax.errorbar(x, [1.0, *st["mean"]], yerr=[0.0, *st["std"].fillna(0)], fmt=styles.get(m, "-o"),
                        capsize=3, label=sanity_label(lv, m).replace(f"k-means {lv}, ", "").replace(
                            f"k-means {lv}", "full map"))
        ax.axhline(PASS_THRESHOLD, color="k", ls="--", lw=0.8)
        if PASS_STAGE in ticks:
            k = ticks.index(PASS_STAGE)
            ax.axvspan(k - 0.3, k + 0.3, color="0.9", zorder=0)
        ax.set_xticks(range(len(ticks)), [t if t == "trained" else f"+ {t}" for t in ticks])
        ax.set_title(title)
        ax.set_xlabel("randomised (cumulative)")
        ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)
    axes[0].set_ylabel("rank correlation with the trained maps")
    axes[0].set_ylim(-0.6, 1.05)
    return fig


def plot_faithfulness(df: pandas.DataFrame, ax: Any = None):  # noqa: F821
    """Deletion and insertion AUC of every attribution map, mean ± sd over seeds, one row per map.

    Each map is scored on the model it explains (``deletion_auc`` and ``insertion_auc`` records,
    not the ``_transfer`` ones). Filled circles: deletion (lower is more faithful); hollow squares:
    insertion (higher is more faithful); each map in its colour from
    :func:`~kmexplain_utils.plotting.method_colors`; error bars are one standard deviation over
    seeds (none with one seed).

    Parameters
    ----------
    df : DataFrame
        Records of :func:`run_evaluation` with ``deletion_auc`` / ``insertion_auc`` rows.
    ax : Axes, optional
        Where to draw; a new figure when omitted.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        When the records hold no deletion or insertion AUC (run ``measure_attribution`` first).
    """
    import matplotlib.pyplot as plt

    from ..plotting import method_colors

    metrics = ["deletion_auc", "insertion_auc"]
    sel = df[df["metric"].isin(metrics) & df["sweep"].isna()]
    if sel.empty:
        raise ValueError("no deletion_auc / insertion_auc records: run measure_attribution "
                         "(run_evaluation with include_attribution=True) first")
    stats = (sel.groupby(["level", "method", "metric"], sort=False)["value"]
             .agg(["mean", "std"]).fillna({"std": 0.0}))
    keys = list(dict.fromkeys(zip(sel["level"], sel["method"])))
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(keys) + 1.4), layout="constrained")
    else:
        fig = ax.figure
    colors = method_colors(len(keys))
    for i, (key, color) in enumerate(zip(keys, colors)):
        for metric, dy, marker, face in (("deletion_auc", -0.15, "o", color),
                                         ("insertion_auc", 0.15, "s", "white")):
            if (*key, metric) not in stats.index:
                continue
            mean, sd = stats.loc[(*key, metric)]
            ax.errorbar(mean, i + dy, xerr=sd, fmt=marker, color=color, mfc=face, mew=1.5, capsize=3)
    ax.set_yticks(range(len(keys)), [method_label(*k) for k in keys])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("area under the curve (probability of the explained class)")
    ax.set_title("Faithfulness on the model each map explains")
    handles = [plt.Line2D([], [], ls="", marker="o", color="0.3", label="deletion (lower is better)"),
               plt.Line2D([], [], ls="", marker="s", color="0.3", mfc="white", mew=1.5,
                          label="insertion (higher is better)")]
    ax.legend(handles=handles, fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.18),
              ncol=2, frameon=False)
    return fig


# ----------------------------------------------------------------------------- tables
def records_link(df: pandas.DataFrame, name: str = "records") -> Any:  # noqa: F821
    """A download link holding the records as CSV, for a page: no file is written anywhere.

    The CSV travels inside the link (a ``data:`` URI), so the link works in the built site, in
    Jupyter and in Colab alike, and the chapter leaves nothing behind in its folder.

    Parameters
    ----------
    df : pandas.DataFrame
        The records.
    name : str
        The downloaded file's name, without its ``.csv``.

    Returns
    -------
    IPython.display.HTML
        ``<a download="name.csv" href="data:text/csv;base64,...">name.csv</a>`` with the row count.

    Example
    -------
    >>> import pandas as pd
    >>> html = records_link(pd.DataFrame({"a": [1, 2]}), "r").data
    >>> html.startswith('<a download="r.csv" href="data:text/csv;base64,') and "2 rows" in html
    True
    """
    import base64
    import html as _html

    from IPython.display import HTML

    payload = base64.b64encode(df.to_csv(index=False).encode("utf-8")).decode("ascii")
    name = _html.escape(f"{name}.csv", quote=True)
    return HTML(f'<a download="{name}" href="data:text/csv;base64,{payload}">{name}</a> '
                f"({len(df)} rows, {df.shape[1]} columns, CSV)")


_PM = "\u202f±\u202f"  # the ± of a table cell, between narrow no-break spaces (never wrapped)


def format_mean_std(mean: float, std: float | None = None, digits: int = 3) -> str:
    """``"0.071 ± 0.007"``: a mean and its standard deviation as one unbreakable table cell.

    The ``±`` sits between narrow no-break spaces (U+202F), so the
    cell is compact and a browser never wraps it; without a finite ``std``
    (one seed) only the mean is written, and a missing mean gives ``""``.

    Examples
    --------
    >>> format_mean_std(0.0712, 0.0071).replace("\\u202f", " ")
    '0.071 ± 0.007'
    >>> format_mean_std(0.5, None, digits=2)
    '0.50'
    """
    if mean is None or not np.isfinite(mean):
        return ""
    if std is None or not np.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f}{_PM}{std:.{digits}f}"


def summary_table(df: pandas.DataFrame, metrics: Sequence[str] | None = None, *,  # noqa: F821
                  digits: int = 3, merge_identical: bool = False) -> pandas.DataFrame:  # noqa: F821
    """Mean ± standard deviation over seeds, one row per (level, method), one column per metric.

    Only the main records are averaged, one per seed in each cell: sweep rows are left out, and so
    are the per-part records (``part`` set: the per-part IoUs, and the contrastive measures of each
    part beside their overall record). A metric recorded several times per seed, level and method
    (``sanity_spearman``, once per randomisation stage, told apart by ``note``) is left out
    altogether, rather than averaged over its stages: :func:`sanity_table` shows it stage by stage.
    Each cell is written compactly,
    ``"0.071 ± 0.007"`` with narrow no-break spaces (U+202F, see
    :func:`format_mean_std`) around the ``±``, so a browser never breaks a value
    over several lines. For a readable page, show a handful of metrics per
    table (several calls, one per group of metrics) rather than all of them.

    Parameters
    ----------
    df : DataFrame
        Records of :func:`run_evaluation`.
    metrics : sequence of str, optional
        Metrics (columns) to show, in order; default all present.
    digits : int
        Decimals.
    merge_identical : bool
        Show columns whose cells are all identical once (:func:`merge_identical_columns`).

    Returns
    -------
    DataFrame
        Strings ``"mean ± std"`` (``"mean"`` for a single seed).
    """
    main = df[df["sweep"].isna() & (df["metric"] != "iou")]
    if "part" in main.columns:
        main = main[main["part"].isna()]
    n = main.groupby(["seed", "level", "method", "metric"], sort=False, dropna=False)["value"].size()
    main = main[~main["metric"].isin(n[n > 1].index.get_level_values("metric"))]  # per stage: not pooled
    g = main.groupby(["level", "method", "metric"], sort=False)["value"].agg(["mean", "std", "count"])

    def fmt(r: Any) -> str:
        return format_mean_std(r["mean"], r["std"] if r["count"] > 1 else None, digits)

    cells = g.apply(fmt, axis=1).unstack("metric")
    cols = [m for m in (metrics or METRICS) if m in cells.columns]
    table = cells[cols].fillna("")
    return merge_identical_columns(table) if merge_identical else table


def merge_identical_columns(table: pandas.DataFrame) -> pandas.DataFrame:  # noqa: F821
    """Show identical columns once: a column whose every cell equals an earlier column's is dropped,
    and the earlier column is renamed ``"a = b"``.

    Example
    -------
    >>> import pandas as pd
    >>> merge_identical_columns(pd.DataFrame({"nmi": ["0.1", "0.2"], "ami": ["0.1", "0.2"], "x": ["1", "2"]}))
      nmi = ami  x
    0       0.1  1
    1       0.2  2
    """
    keep: list[str] = []
    names: dict[str, str] = {}
    for c in table.columns:
        twin = next((k for k in keep if table[k].equals(table[c]) and (table[c] != "").any()), None)
        if twin is None:
            keep.append(c)
            names[c] = str(c)
        else:
            names[twin] += f" = {c}"
    out = table[keep].copy()
    out.columns = [names[c] for c in keep]
    out.columns.name = table.columns.name
    return out


def record_stat(df: pandas.DataFrame, level: str, method: str, metric: str,  # noqa: F821
                **where: Any) -> tuple[float, float]:
    """Mean and standard deviation over seeds of one measurement (``0`` sd for one seed).

    Sweep rows are excluded unless ``sweep=`` is given; other keywords select on their column
    (e.g. ``part="head"``). ``(nan, nan)`` when nothing matches.

    Example
    -------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"level": "B4", "method": "kmeans", "metric": "accuracy", "sweep": None,
    ...                    "seed": [0, 1], "value": [0.9, 0.8]})
    >>> [round(v, 3) for v in record_stat(df, "B4", "kmeans", "accuracy")]
    [0.85, 0.071]
    """
    sel = (df["level"] == level) & (df["method"] == method) & (df["metric"] == metric)
    sel &= df["sweep"].isna() if "sweep" not in where else (df["sweep"] == where.pop("sweep"))
    for col, val in where.items():
        sel &= df[col] == val
    v = df.loc[sel, "value"]
    if not len(v):
        return float("nan"), float("nan")
    return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else 0.0)


def record_per_seed(df: pandas.DataFrame, level: str, method: str, metric: str) -> pandas.Series:  # noqa: F821
    """The values of one main (non-sweep) measurement, indexed by seed."""
    sel = (df["level"] == level) & (df["method"] == method) & (df["metric"] == metric) & df["sweep"].isna()
    return df[sel].set_index("seed")["value"]


def drop_empty(table: pandas.DataFrame) -> pandas.DataFrame:  # noqa: F821
    """A table of strings without its empty rows and columns (cells ``""``)."""
    table = table[(table != "").any(axis=1)]
    return table.loc[:, (table != "").any(axis=0)]


# ----------------------------------------------------------------------------- JSON and command line
def to_json(df: pandas.DataFrame, path: str | None = None) -> dict[str, Any]:  # noqa: F821
    """The records (and curves, info) as a JSON-ready dict; written to ``path`` when given.

    The schema is described in the module docstring (``"schema":
    "kmexplain-evaluation/1"``); ``NaN`` becomes ``null``.
    """

    def clean(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for r in rows:
            out.append({k: (None if isinstance(v, float) and not math.isfinite(v) else
                            (v.item() if isinstance(v, np.generic) else v)) for k, v in r.items()})
        return out

    info = df.attrs.get("info", {})
    curves = df.attrs.get("curves")
    payload = {
        "schema": SCHEMA,
        "profile": info.get("profile"),
        "seeds": info.get("seeds"),
        "columns": list(COLUMNS),
        "metrics": METRICS,
        "records": clean(df.astype(object).where(df.notna(), None).to_dict(orient="records")),
        "curves": clean(curves.to_dict(orient="records")) if curves is not None else [],
        "info": info,
    }
    if path is not None:
        from pathlib import Path

        p = Path(path)
        if p.parent and not p.parent.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=1))
        tmp.replace(p)
    return payload


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m kmexplain_utils.evaluation --profile quick --seeds 3 --out results.json``."""
    parser = argparse.ArgumentParser(
        prog="python -m kmexplain_utils.evaluation.run",
        description="Run the book's quantitative evaluation and write the records as JSON.",
    )
    parser.add_argument("--profile", default=None, help="smoke, quick or paper (default: KMEX_PROFILE, then quick)")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default: the profile's)")
    parser.add_argument("--levels", default=None, help="comma-separated levels, e.g. logits,B4,B234")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--no-sweeps", action="store_true", help="skip the sensitivity sweeps")
    parser.add_argument("--no-interventions", action="store_true",
                        help="skip the part interventions (they need the generated 'parts' data set)")
    parser.add_argument("--steps", type=int, default=10, help="deletion/insertion steps (default 10)")
    parser.add_argument("--out", default="results.json", help="output JSON file (default results.json)")
    args = parser.parse_args(argv)
    levels = [s.strip() for s in args.levels.split(",") if s.strip()] if args.levels else None
    df = run_evaluation(args.profile, args.seeds, levels=levels, device=args.device,
                        include_sweeps=not args.no_sweeps, deletion_steps=args.steps,
                        include_interventions=not args.no_interventions
                        and get_profile(args.profile).dataset == "parts")
    to_json(df, args.out)
    info = df.attrs["info"]
    print(f"{len(df)} records for seeds {info['seeds']} and levels {', '.join(info['levels'])} "
          f"written to {args.out} in {info['seconds']:.0f} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
