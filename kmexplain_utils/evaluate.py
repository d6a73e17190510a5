"""The quantitative evaluation of the book (METHOD section 6), and its command line.

:func:`run_evaluation` is a data step and a list of measurements. For every
seed, :func:`prepare_seed` loads the trained network (from the cache), fits
every level, classifier and concept model and makes **one** forward pass over
the training and test images for all of them (pooled embeddings, logits,
concept maps); then one function per measurement adds records:

- :func:`measure_accuracy` -- the linear head and the k-means classifier at
  every level (and the sweep over prototypes per class);
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
- :func:`measure_sanity` -- cascading model randomisation: Spearman
  correlation of every method's maps with the trained network's;
- :func:`measure_contrastive` -- contrastive maps against the ground-truth
  deciding part (images whose top two classes differ in one attribute);
- :func:`measure_keypoints` -- the concept maps read at the part keypoints
  (NMI, AMI, purity: CUB-200-2011's own keypoints, or one pseudo-keypoint per
  part on a data set with part masks only) and EvalProtoPNet's part
  consistency of the k-means prototypes of every level, beside its chance
  level (boxes on random pixels); skipped on a data set without parts.

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
                  ``gradcam``, ``occlusion``, ``random``
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

    python -m kmexplain_utils.evaluate --profile quick --seeds 3 --out results.json

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
from typing import Any

import numpy as np
import torch

from . import config
from .config import Profile, get_profile, progress, resolve_device, set_progress
from .plotting import plot_curves, plot_qualitative, plot_sweeps, plot_tradeoff

__all__ = [
    "COLUMNS",
    "LEARNED_ACCURACY",
    "METRICS",
    "SCHEMA",
    "FeatureSpace",
    "Recorder",
    "SeedData",
    "SharedData",
    "claims_table",
    "deciding_part",
    "evaluation_specs",
    "fewer_data_profile",
    "format_mean_std",
    "grad_cam",
    "load_data",
    "main",
    "measure_accuracy",
    "measure_attribution",
    "measure_concept_references",
    "measure_concepts",
    "measure_contrastive",
    "measure_keypoints",
    "measure_representativeness",
    "measure_sanity",
    "method_label",
    "plot_curves",
    "plot_qualitative",
    "plot_sweeps",
    "plot_tradeoff",
    "prepare_seed",
    "run_evaluation",
    "summary_table",
    "to_json",
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
    "accuracy": "test accuracy of the classifier",
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
    "sanity_spearman": "Spearman correlation of the maps of a randomised network (stage in note) with the "
    "trained network's (lower = the map depends on the weights)",
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
    from .features import parse_level

    blocks_of = {lv: parse_level(lv) for lv in levels}
    spatial = [lv for lv in levels if blocks_of[lv] != ("logits",)]
    specs = [FeatureSpace(lv, lv, None, "exact", True, lv in spatial, lv in spatial) for lv in levels]
    with_b4 = [lv for lv in spatial if len(blocks_of[lv]) > 1 and "B4" in blocks_of[lv]]
    for lv in (["B234"] if "B234" in with_b4 else with_b4):  # the control the book reads: beside B234
        specs.append(FeatureSpace(_CONTROL_FMT.format(lv), "B4", lv, "exact", False, True, True))
    if cell:
        specs += [FeatureSpace(lv + _CELL, lv, None, "cell", False, True, True) for lv in spatial]
    return specs


def grad_cam(model: torch.nn.Module, images: torch.Tensor, target: torch.Tensor, *,
             target_layer: torch.nn.Module | None = None, batch_size: int = 64) -> torch.Tensor:
    """Grad-CAM maps computed by ``pytorch-grad-cam`` (upsampled and min-max normalised by the library).

    Kept for comparison with the library; the evaluation uses
    :func:`kmexplain_utils.baselines.grad_cam` (registered resampling, any block).

    Parameters
    ----------
    model : nn.Module
    images : torch.Tensor
        ``(N, 3, H, W)`` images in ``[0, 1]``.
    target : torch.Tensor
        ``(N,)`` class explained for each image.
    target_layer : nn.Module, optional
        Default ``model.layer4``.
    batch_size : int

    Returns
    -------
    torch.Tensor
        ``(N, H, W)`` float32 on the CPU.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from ._validation import check_rgb_images
    from .features import eval_mode

    check_rgb_images(images)
    layer = target_layer if target_layer is not None else getattr(model, "layer4", None)
    if layer is None:
        raise ValueError("model has no 'layer4': pass target_layer= (the last convolutional block)")
    tgt = torch.as_tensor(target).long().reshape(-1)
    if tgt.numel() != images.shape[0]:
        raise ValueError(f"target must have shape (N,) = ({images.shape[0]},), got {tuple(tgt.shape)}")
    dev = next(model.parameters()).device
    out = []
    from ._torch import keep_grads

    # pytorch-grad-cam calls backward(): the parameters' .grad are put back as they were
    with eval_mode(model), keep_grads(model), GradCAM(model=model, target_layers=[layer]) as cam:
        for s in range(0, images.shape[0], batch_size):
            targets = [ClassifierOutputTarget(int(c)) for c in tgt[s : s + batch_size]]
            out.append(torch.from_numpy(np.asarray(cam(input_tensor=images[s : s + batch_size].to(dev),
                                                       targets=targets), dtype=np.float32)))
    return torch.cat(out)


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
    #: part keypoints of every test image ((P_i, 3) arrays, :mod:`kmexplain_utils.keypoints`), or None
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

    def scorer(self, name: str) -> Any:
        """The k-means classifier of a level as a model (images -> class scores / its fitted temperature)."""
        from .baselines import KMeansScoreModel

        return KMeansScoreModel(self.model, self.lfs[name], self.clfs[name],
                                temperature=self.temperatures.get(name, 1.0))

    def spec(self, name: str) -> FeatureSpace:
        return next(sp for sp in self.specs if sp.name == name)

    def up(self, maps: torch.Tensor, name: str, size: tuple[int, int]) -> torch.Tensor:
        """Grid label maps -> pixels (each pixel takes the nearest registered position)."""
        from .concepts import upsample_labels

        return upsample_labels(maps.long(), size, self.lfs[name].grid_geometry_)


def load_data(profile: Profile, n_fit_images: int = 500) -> SharedData:
    """The data step shared by all seeds: training and test sets, the fitting images, parts and masks."""
    from .data import load_dataset
    from .training import DATA_SEED

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
    from .features import parse_level

    out = [(prof.n_concepts, False)]
    if ablation and sp.registration == "exact" and sp.grid is None:
        out += [(K, False) for K in prof.concept_sweep if K != prof.n_concepts]
        if len(parse_level(sp.level)) > 2:  # per-class concepts where the fine grids are
            out.append((max(2, prof.n_concepts // 2), True))
    return out


def _fit_concepts(prof: Profile, sh: SharedData, model: Any, specs: Sequence[FeatureSpace], lfs: dict, seed: int,
                  device: Any, ablation: bool) -> tuple[dict, dict]:
    from sklearn.decomposition import NMF

    from .concepts import ConceptModel

    y_fit = sh.train.labels[: sh.x_fit.shape[0]]
    cms: dict[tuple[str, int, bool], Any] = {}
    nmf: dict[str, Any] = {}
    for sp in specs:
        if not sp.concepts:
            continue
        base = None
        for K, per_class in _concept_settings(prof, sp, ablation):
            cm = ConceptModel(K, level=sp.level, per_class=per_class, positions_per_image=prof.positions_per_image,
                              random_state=seed, device=device)
            cm.fit(model, (sh.x_fit, y_fit), level_features=lfs[sp.name], sample=None if base is None else base)
            base = base or cm.sample_
            cms[(sp.name, K, per_class)] = cm
        if ablation and sp.name in ("B4", "B234"):  # the concept baseline of the literature (Deep Feature Factorization)
            V = base.vectors.double().clamp_min(0).cpu().numpy()
            nmf[sp.name] = NMF(prof.n_concepts, init="nndsvda", max_iter=200, random_state=seed).fit(V)
    return cms, nmf


def _pass_maps(feats: torch.Tensor, sp: FeatureSpace, d_cms: dict, nmf: dict, pred: torch.Tensor,
               out: dict[tuple[str, int, bool], list]) -> None:
    """Concept maps (and NMF maps, key ``(name, -1, False)``) of one batch at one spec."""
    from .concepts import concept_map

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
    from .features import block_features, eval_mode

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
                if sp.level == "logits":
                    pooled[sp.name].append(logits.float().cpu())
                    continue
                need_maps = sp.concepts and s < n_maps
                if not (sp.classify or need_maps):
                    continue
                feats = lfs[sp.name].combine(maps, tuple(x.shape[-2:]))
                if sp.classify:
                    pooled[sp.name].append(feats.mean((2, 3)).float().cpu())
                if need_maps:
                    m = min(n_maps - s, feats.shape[0])
                    _pass_maps(feats[:m], sp, cms, nmf, pred[:m], cmaps)
    return ({k: torch.cat(v) for k, v in pooled.items()}, torch.cat(logits_all),
            {k: torch.cat(v) for k, v in cmaps.items()})


def prepare_seed(sh: SharedData, seed: int, specs: Sequence[FeatureSpace], *, device: Any = "cpu",
                 ablation: bool = False, batch_size: int = 200) -> SeedData:
    """The data step of one seed: the cached network, levels, concepts, one features pass, classifiers.

    Every k-means classifier is fitted with ``profile.k_per_class`` prototypes per class on all
    training images; concept models on the first ``n_fit`` training images (the first 256 fit
    ``sigma_b``); ``ablation`` adds the concept sweep and per-class concepts (first seed).
    """
    from .baselines import fit_temperature
    from .classifier import KMeansClassifier
    from .features import LevelFeatures
    from .training import get_trained_model

    prof = sh.profile
    model, _info = get_trained_model(prof, seed, device=device)
    model.eval()
    lfs = {sp.name: LevelFeatures(sp.level, grid=sp.grid, batch_size=batch_size, registration=sp.registration)
           .fit(model, sh.x_fit[:256]) for sp in specs}
    cms, nmf = _fit_concepts(prof, sh, model, specs, lfs, seed, device, ablation)
    n_fit = sh.x_fit.shape[0]
    Z_train, _, cm_train = _features_pass(model, sh.train, len(sh.train), specs, lfs, cms, nmf, n_fit, batch_size)
    Z_test, logits_test, cm_test = _features_pass(model, sh.test, len(sh.test), specs, lfs, cms, nmf,
                                                  len(sh.test), batch_size)
    clfs = {name: KMeansClassifier(prof.k_per_class, random_state=seed, device=device).fit(Z, sh.train.labels)
            for name, Z in Z_train.items()}
    temps = {name: fit_temperature(torch.as_tensor(clf.class_scores(Z_train[name])).cpu(),
                                   clf.class_columns(sh.train.labels).cpu()) for name, clf in clfs.items()}
    return SeedData(seed, model, list(specs), lfs, cms, nmf, clfs, Z_train, Z_test, logits_test, cm_train,
                    cm_test, ablation, temperatures=temps)


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


def measure_accuracy(sh: SharedData, d: SeedData, rec: Recorder, *, sweep: bool = False) -> None:
    """Accuracy of the linear head and of the k-means classifier at every level (and the K sweep)."""
    from .classifier import KMeansClassifier

    prof, y_test = sh.profile, sh.test.labels
    n_test = len(y_test)
    linear_pred = d.logits_test.argmax(1)
    rec.add(d.seed, "B4", "linear", "accuracy", float((linear_pred == y_test).double().mean()), n_test)
    for sp in d.specs:
        if not sp.classify:
            continue
        pred = torch.as_tensor(d.clfs[sp.name].predict(d.Z_test[sp.name])).cpu()
        method = "kmeans-cell" if sp.registration == "cell" else "kmeans"
        rec.add(d.seed, sp.label, method, "accuracy", float((pred == y_test).double().mean()), n_test,
                param=prof.k_per_class)
        rec.add(d.seed, sp.label, method, "agreement", float((pred == linear_pred).double().mean()), n_test,
                param=prof.k_per_class)
        if sweep and sp.registration == "exact":
            for k in sorted(set(prof.k_sweep) | {prof.k_per_class}):
                clf = d.clfs[sp.name] if k == prof.k_per_class else KMeansClassifier(
                    k, random_state=d.seed, device=d.clfs[sp.name].device).fit(d.Z_train[sp.name], sh.train.labels)
                acc = float((torch.as_tensor(clf.predict(d.Z_test[sp.name])).cpu() == y_test).double().mean())
                rec.add(d.seed, sp.name, "kmeans", "accuracy", acc, n_test, sweep="k_per_class", param=k)


def measure_representativeness(sh: SharedData, d: SeedData, rec: Recorder) -> None:
    """Distance of the linear rows (raw, best rescaled) and of the k-means centroids to the data (pooled B4)."""
    from .prototypes import prototype_representativeness
    from .sem import linear_prototypes

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
            param=sh.profile.k_per_class)


# ----------------------------------------------------------------------------- attribution
def _kmeans_maps(d: SeedData, name: str, x: torch.Tensor, target: Any = None, *,
                 batch_size: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means maps at image size of spec ``name`` for classes ``target`` (default: its own prediction).

    Returns ``(maps (N, H, W), explained class labels (N,))``. A resolution control uses B4's classifier,
    a cell-registration twin the classifier of its level (the pooled features barely depend on the
    registration; its maps are resampled with the cell convention).
    """
    from .attribution import attribution_map

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
    from .attribution import cam
    from .baselines import grad_cam as grad_cam_block
    from .baselines import occlusion

    out: dict[tuple[str, str], tuple] = {}
    for sp in d.specs:
        if sp.attribution and sp.level != "logits":
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
    from .attribution import cam
    from .baselines import grad_cam as grad_cam_block
    from .sem import linear_prototypes

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
    k-means classifier (:class:`~kmexplain_utils.baselines.KMeansScoreModel`, its scores divided by
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
def _fixed_kmeans_map(model: Any, lf: Any, mu: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    from .attribution import attribution_map

    feats = lf.position_features(model, x)
    return attribution_map(feats, mu.to(feats), size=tuple(x.shape[-2:]), geometry=lf.grid_geometry_).float().cpu()


def measure_sanity(sh: SharedData, d: SeedData, rec: Recorder, *, n_images: int = 16) -> None:
    """Cascading model randomisation (Adebayo et al., 2018): how much each method's maps change.

    The network is re-initialised from the head down (:func:`kmexplain_utils.sanity.cascading_randomization`);
    the k-means "head" is its prototypes, replaced at the first stage by Gaussian vectors with the
    trained prototypes' per-dimension mean and spread (the level's ``sigma_b`` stay fixed). Every map
    explains the class explained on the trained network. Records the mean Spearman correlation with the
    trained maps per stage (``param`` = step, ``note`` = stage).
    """
    from .attribution import cam
    from .baselines import grad_cam as grad_cam_block
    from .baselines import occlusion
    from .sanity import cascading_randomization

    n = min(int(n_images), sh.n_eval)
    x = sh.test.images_at(torch.arange(n))
    pred = d.logits_test[:n].argmax(1)
    size = tuple(x.shape[-2:])
    patch, stride = max(1, size[0] // 4), max(1, size[0] // 8)
    km_levels = [lv for lv in ("B4", "B234") if lv in d.clfs]
    mus, rand_mus = {}, {}
    g = torch.Generator().manual_seed(d.seed)
    for lv in km_levels:
        clf = d.clfs[lv]
        _, index = clf.best_prototype_per_class(d.Z_test[lv][:n])
        col = clf.class_columns(pred, n=n).to(index.device)
        P = clf.prototypes_.detach().cpu().float()
        mus[lv] = P[index.gather(1, col[:, None])[:, 0].cpu()]
        rand_mus[lv] = P.mean(0) + P.std(0) * torch.randn(n, P.shape[1], generator=g)

    def all_maps(model: Any, x: torch.Tensor) -> dict[str, torch.Tensor]:
        protos = mus if model is d.model else rand_mus  # a randomised network gets random prototypes
        out = {f"{lv}/kmeans": _fixed_kmeans_map(model, d.lfs[lv], protos[lv], x) for lv in km_levels}
        out["B4/cam"] = cam(model, x, target=pred, size=size).float().cpu()
        out["B3/gradcam"] = grad_cam_block(model, x, pred, block="B3", size=size).float().cpu()
        out["pixel/occlusion"] = occlusion(model, x, pred, patch=patch, stride=stride)
        return out

    for r in cascading_randomization(d.model, all_maps, x, random_state=d.seed):
        lv, method = r.method.split("/")
        rec.add(d.seed, lv, method, "sanity_spearman", r.spearman, int(np.isfinite(r.per_image).sum()),
                param=r.step, note=r.stage)


def deciding_part(class_names: Sequence[str], part_names: Sequence[str], c1: int, c2: int) -> int:
    """Part label that decides between classes ``c1`` and ``c2``, or ``-1``.

    For the generated creatures (class names ``"<head colour>-<tail type>-<marking>"``, see
    :mod:`kmexplain_utils.data.parts`): when the two classes differ in exactly one attribute, the
    part carrying it (``"head"``, ``"tail"`` or ``"marking"``); otherwise ``-1``.

    Example
    -------
    >>> deciding_part(["red-pointed-striped", "red-round-striped"],
    ...               ["background", "body", "head", "tail", "legs", "marking"], 0, 1)
    3
    """
    a, b = str(class_names[int(c1)]).split("-"), str(class_names[int(c2)]).split("-")
    attrs = ("head", "tail", "marking")
    if len(a) != 3 or len(b) != 3 or not set(attrs) <= set(part_names):
        return -1
    diff = [attrs[i] for i in range(3) if a[i] != b[i]]
    return list(part_names).index(diff[0]) if len(diff) == 1 else -1


def _contrastive_maps(d: SeedData, x: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor) -> dict:
    from . import metrics
    from .attribution import cam
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
      the test images, against the keypoint's part (:func:`kmexplain_utils.keypoints.keypoint_scores`);
    - ``part_consistency`` of the k-means classifier of every level on the first ``n_eval`` test
      images (:func:`kmexplain_utils.keypoints.prototype_consistency`, EvalProtoPNet's box of 72/224
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
        if not sp.classify or sp.registration != "exact" or sp.level == "logits":  # logits: no map
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
                    param=prof.k_per_class, note=note + ("; boxes on random pixels" if peaks == "random" else ""))


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
                  example_indices: Any, batch_size: int) -> dict:
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
    if attribution and sh.n_eval > 0:
        measure_attribution(sh, d, rec, curves, steps=steps, baseline=baseline, batch_size=batch_size)
        if first:
            examples = _examples(sh, d, example_indices, batch_size)
        t = tick("attribution", t)
    if extras:
        if first and sh.n_eval > 0:
            measure_sanity(sh, d, rec)
            t = tick("sanity", t)
        measure_contrastive(sh, d, rec)
        t = tick("contrastive", t)
        measure_keypoints(sh, d, rec, batch_size=batch_size)
        tick("keypoints", t)
    return examples


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
        The concept references and the sanity check (first seed) and the contrastive scores
        (every seed).
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
        for si, seed in enumerate(seed_list):
            first = si == 0
            bar.set_description(f"seed {seed}")
            d = (prepared or {}).get(seed) or prepare_seed(sh, seed, specs, device=dev,
                                                           ablation=include_sweeps and first, batch_size=batch_size)
            t = tick("prepare (model, fits, features)", t)
            examples = _measure_seed(sh, d, rec, curves, tick, first=first, sweeps=include_sweeps,
                                     attribution=include_attribution, extras=include_extras, steps=deletion_steps,
                                     baseline=deletion_baseline, example_indices=example_indices,
                                     batch_size=batch_size) or examples
            t = time.perf_counter()
            bar.update(1)
    finally:
        set_progress(previous)
        bar.close()
    return _result_frame(rec, curves, examples, prof, seed_list, specs, dev, sh, deletion_steps, timings, t_start)


def fewer_data_profile(profile: Profile, fraction: int = 4) -> Profile:
    """The profile with ``1 / fraction`` of the training images and ``fraction`` times the epochs.

    The number of optimisation steps (images seen) stays the same, so that a worse network means
    "less data", not "less training". A profile with ``n_train = 0`` (the dataset's own split, the
    paper profile) gets ``len(train) // fraction`` images.
    """
    from .data import load_dataset
    from .training import DATA_SEED

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


def claims_table(df: pandas.DataFrame) -> pandas.DataFrame:  # noqa: F821
    """The paper's claims, what this evaluation measured, and a verdict (one row per claim).

    Verdicts follow fixed rules (stated in the chapter): the head's accuracy holds within 1.5
    points; "more faithful" holds when B234 beats B4 on object-pixel AMI *and* the resolution
    control B4@B234-grid stays below B234; "finer maps" when B234's pointing game beats both B4
    and the control on every seed ("on average only" when it does so on the mean); the accuracy cost holds only when B234 is below B4 on every seed by more than
    half a point; the maps are faithful when the k-means maps beat the random map on deletion on
    their own model.
    """
    import pandas as pd

    acc_lin, acc_b4, acc_b234 = (_m(df, "B4", "linear", "accuracy"), _m(df, "B4", "kmeans", "accuracy"),
                                 _m(df, "B234", "kmeans", "accuracy"))
    per_seed = (df[(df["metric"] == "accuracy") & (df["method"] == "kmeans") & df["sweep"].isna()]
                .pivot_table(index="seed", columns="level", values="value"))
    diff = (per_seed["B234"] - per_seed["B4"]) if {"B4", "B234"} <= set(per_seed.columns) else pd.Series(dtype=float)
    ami = {lv: _m(df, lv, "concepts", "ami_object") for lv in ("B4", "B234", "B4@B234-grid")}
    ceil = _m(df, "B234", "ceiling", "ami_object")
    pg = {lv: _m(df, lv, "kmeans", "pointing_game") for lv in ("B4", "B234", "B4@B234-grid")}
    pg_seed = (df[(df["metric"] == "pointing_game") & (df["method"] == "kmeans") & df["sweep"].isna()]
               .pivot_table(index="seed", columns="level", values="value"))
    pg_wins = bool(len(pg_seed)) and {"B4", "B234", "B4@B234-grid"} <= set(pg_seed.columns) and bool(
        ((pg_seed["B234"] > pg_seed["B4"]) & (pg_seed["B234"] > pg_seed["B4@B234-grid"])).all())
    dele = {k: _m(df, *k, "deletion_auc") for k in [("B4", "kmeans"), ("B234", "kmeans"), ("B234", "random"),
                                                       ("B4", "cam"), ("pixel", "random")]}
    rows = [
        ("A k-means head costs no accuracy",
         f"k-means B4 {100 * acc_b4:.1f} % vs linear head {100 * acc_lin:.1f} %",
         "holds" if abs(acc_b4 - acc_lin) <= 0.015 else "does not hold"),
        ("k-means prototypes represent the data (the linear head's do not)",
         f"nearest-embedding ratio {_m(df, 'B4', 'kmeans', 'prototype_nn_ratio'):.2f} (k-means) vs "
         f"{_m(df, 'B4', 'linear-rescaled', 'prototype_nn_ratio'):.2f} (linear, best rescaled)",
         "holds" if _m(df, "B4", "kmeans", "prototype_nn_ratio") < _m(df, "B4", "linear-rescaled",
                                                                      "prototype_nn_ratio") else "does not hold"),
        ("B234 concepts are semantically more faithful than B4",
         f"object-pixel AMI {ami['B4']:.3f} (B4) → {ami['B234']:.3f} (B234); control B4@B234-grid "
         f"{ami['B4@B234-grid']:.3f}; ceiling of the grid {ceil:.3f}",
         "holds" if ami["B234"] > ami["B4"] and ami["B4@B234-grid"] < ami["B234"] else "not supported"),
        ("B234 attribution maps localise better (finer maps)",
         f"pointing game {pg['B4']:.2f} (B4), {pg['B234']:.2f} (B234), {pg['B4@B234-grid']:.2f} (control)",
         "holds" if pg_wins else ("on average only" if pg["B234"] > max(pg["B4"], pg["B4@B234-grid"])
                                  else "not supported")),
        ("B234 costs a slight loss of accuracy",
         f"B234 − B4 = {100 * diff.mean():+.1f} points (per seed: "
         + ", ".join(f"{100 * v:+.1f}" for v in diff) + ")",
         "holds" if len(diff) and (diff < -0.005).all() else "not observed"),
        ("Gradient-free k-means maps are faithful to the model they explain",
         f"deletion AUC {dele[('B4', 'kmeans')]:.3f} (B4), {dele[('B234', 'kmeans')]:.3f} (B234) vs random "
         f"{dele[('B234', 'random')]:.3f} on the same k-means model; CAM {dele[('B4', 'cam')]:.3f} vs random "
         f"{dele[('pixel', 'random')]:.3f} on the linear head",
         "holds" if max(dele[("B4", "kmeans")], dele[("B234", "kmeans")]) < dele[("B234", "random")]
         else "partly"),
    ]
    return pd.DataFrame(rows, columns=["the paper's claim", "measured here", "verdict"])


# ----------------------------------------------------------------------------- tables
def method_label(level: str, method: str) -> str:
    """Readable name of a method: ``"k-means B234"``, ``"CAM"``, ``"Grad-CAM B3"``, ``"random map"``..."""
    suffix = " (on the linear head)" if method.endswith("_transfer") else ""
    method = method.removesuffix("_transfer")
    if method == "kmeans":
        return f"k-means {level}{suffix}"
    if method == "kmeans-cell":
        return f"k-means {level} (cell registration){suffix}"
    if method == "gradcam":
        return f"Grad-CAM {level}" if level != "B4" else "Grad-CAM"
    return {"cam": "CAM", "random": "random map", "linear": "linear head", "occlusion": "occlusion"}.get(method, method) + (
        f" (on k-means {level})" if method == "random" and level != "pixel" else "")


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
                  digits: int = 3) -> pandas.DataFrame:  # noqa: F821
    """Mean ± standard deviation over seeds, one row per (level, method), one column per metric.

    Sweep rows and per-part IoUs are left out. Each cell is written compactly,
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

    Returns
    -------
    DataFrame
        Strings ``"mean ± std"`` (``"mean"`` for a single seed).
    """
    main = df[df["sweep"].isna() & (df["metric"] != "iou")]
    g = main.groupby(["level", "method", "metric"], sort=False)["value"].agg(["mean", "std", "count"])

    def fmt(r: Any) -> str:
        return format_mean_std(r["mean"], r["std"] if r["count"] > 1 else None, digits)

    cells = g.apply(fmt, axis=1).unstack("metric")
    cols = [m for m in (metrics or METRICS) if m in cells.columns]
    return cells[cols].fillna("")


def _mean_std(df: pandas.DataFrame, level: str, method: str, metric: str) -> tuple[float, float]:  # noqa: F821
    v = df[(df["level"] == level) & (df["method"] == method) & (df["metric"] == metric) & df["sweep"].isna()]["value"]
    return (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0) if len(v) else (float("nan"), float("nan"))


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
    """Command line: ``python -m kmexplain_utils.evaluate --profile quick --seeds 3 --out results.json``."""
    parser = argparse.ArgumentParser(
        prog="python -m kmexplain_utils.evaluate",
        description="Run the book's quantitative evaluation and write the records as JSON.",
    )
    parser.add_argument("--profile", default=None, help="smoke, quick or paper (default: KMEX_PROFILE, then quick)")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default: the profile's)")
    parser.add_argument("--levels", default=None, help="comma-separated levels, e.g. logits,B4,B234")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--no-sweeps", action="store_true", help="skip the sensitivity sweeps")
    parser.add_argument("--steps", type=int, default=10, help="deletion/insertion steps (default 10)")
    parser.add_argument("--out", default="results.json", help="output JSON file (default results.json)")
    args = parser.parse_args(argv)
    levels = [s.strip() for s in args.levels.split(",") if s.strip()] if args.levels else None
    df = run_evaluation(args.profile, args.seeds, levels=levels, device=args.device,
                        include_sweeps=not args.no_sweeps, deletion_steps=args.steps)
    to_json(df, args.out)
    info = df.attrs["info"]
    print(f"{len(df)} records for seeds {info['seeds']} and levels {', '.join(info['levels'])} "
          f"written to {args.out} in {info['seconds']:.0f} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
