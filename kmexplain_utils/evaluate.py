"""The quantitative evaluation of the book (METHOD section 6), and its command line.

:func:`run_evaluation` trains (or loads from the cache) the profile's model
for every seed and measures, per level (``"logits"``, ``"B4"``, ``"B34"``,
``"B234"``, ``"B1234"``):

- **accuracy** of the network's linear head and of the k-means classifier
  (same ``k_per_class`` at every level);
- **prototype representativeness** of the linear head's rows (raw and best
  rescaled) vs the k-means centroids, in the pooled B4 space (the linear
  head's space);
- **semantic fidelity** of concept maps (``profile.n_concepts`` concepts)
  against the ground-truth part maps: NMI and purity on all pixels and on
  object pixels, mIoU after a concept-to-part mapping fitted on training
  images and evaluated on test images, and the "nothing found" floor; the
  **resolution control** ``"B4@<level>-grid"`` (B4 resized to the grid of
  each multi-block level) sits beside every multi-block level;
- **attribution** faithfulness and localisation on ``profile.n_eval_images``
  test images: deletion / insertion AUC, pointing game and energy in the
  object mask, for the k-means maps of every block level vs CAM, Grad-CAM
  (``pytorch-grad-cam``, target layer ``model.layer4``) and a random map;
- **sensitivity** (one seed): accuracy over ``profile.k_sweep`` prototypes
  per class, mIoU and object-pixel NMI over ``profile.concept_sweep``.

Result records (the rows of the returned DataFrame, and of ``"records"`` in
the JSON the command line writes) have the columns of :data:`COLUMNS`:

=========  =====  ==============================================================
column     type   meaning
=========  =====  ==============================================================
profile    str    profile name
seed       int    model / k-means seed
level      str    feature space: ``logits``, ``B4``, ``B34``, ``B234``,
                  ``B1234``, ``B4@B234-grid`` ...; ``pixel`` for the random map
method     str    ``linear`` (the network's head), ``linear-rescaled``,
                  ``kmeans``, ``concepts``, ``cam``, ``gradcam``, ``random``
metric     str    see :data:`METRICS`
value      float  the measurement
n          int    number of items averaged (test images, prototypes, pixels...)
sweep      str    ``null``, ``"k_per_class"`` or ``"n_concepts"``
param      int    ``k_per_class`` (accuracy, representativeness) or ``K'``
                  (concept metrics) used; ``null`` otherwise
part       str    part name for ``metric == "iou"``, else ``null``
note       str    e.g. the deletion baseline, or parts without a concept
=========  =====  ==============================================================

Command line::

    python -m kmexplain_utils.evaluate --profile quick --seeds 3 --out results.json

writes ``{"schema": "kmexplain-evaluation/1", "profile": {...}, "seeds": [...],
"columns": [...], "records": [...], "curves": [...], "info": {...}}``.
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

__all__ = [
    "COLUMNS",
    "METRICS",
    "SCHEMA",
    "grad_cam",
    "main",
    "method_label",
    "plot_curves",
    "plot_qualitative",
    "plot_sweeps",
    "plot_tradeoff",
    "run_evaluation",
    "summary_table",
    "to_json",
]

SCHEMA = "kmexplain-evaluation/1"

COLUMNS = ("profile", "seed", "level", "method", "metric", "value", "n", "sweep", "param", "part", "note")

#: metric name -> what it is (higher is better unless said otherwise)
METRICS: dict[str, str] = {
    "accuracy": "test accuracy of the classifier",
    "agreement": "share of test images where the k-means classifier predicts the linear head's class",
    "prototype_nn_ratio": "mean over prototypes of (distance to the nearest training embedding) / "
    "(median nearest-neighbour distance among training embeddings); lower = more representative",
    "nmi": "NMI of concepts vs parts over all test pixels",
    "purity": "purity of concepts vs parts over all test pixels",
    "nmi_object": "NMI of concepts vs parts over object pixels",
    "purity_object": "purity of concepts vs parts over object pixels",
    "miou": "mean IoU over parts after the concept-to-part mapping fitted on training images",
    "miou_floor": "'nothing found' floor: mIoU when every pixel is predicted background",
    "iou": "IoU of one part (column part)",
    "parts_without_concept": "number of parts no concept is mapped to",
    "deletion_auc": "area under the deletion curve (lower = more faithful)",
    "insertion_auc": "area under the insertion curve (higher = more faithful)",
    "pointing_game": "share of images whose map maximum lies on the object",
    "energy_in_mask": "share of the (min-shifted) map energy on the object",
}

_CONTROL_FMT = "B4@{}-grid"


# ----------------------------------------------------------------------------- helpers
@dataclasses.dataclass(frozen=True)
class _Spec:
    """One feature space evaluated: a level, or a resolution control."""

    name: str
    level: str
    grid: str | None
    classify: bool
    concepts: bool
    attribution: bool


def _specs(levels: Sequence[str]) -> list[_Spec]:
    from .features import parse_level

    specs: list[_Spec] = []
    for lv in levels:
        blocks = parse_level(lv)
        spatial = blocks != ("logits",)
        specs.append(_Spec(lv, lv, None, True, spatial, spatial))
    for lv in levels:
        blocks = parse_level(lv)
        if blocks != ("logits",) and len(blocks) > 1 and "B4" in blocks:
            specs.append(_Spec(_CONTROL_FMT.format(lv), "B4", lv, False, True, False))
    return specs


def grad_cam(
    model: torch.nn.Module,
    images: torch.Tensor,
    target: torch.Tensor,
    *,
    target_layer: torch.nn.Module | None = None,
    batch_size: int = 64,
) -> torch.Tensor:
    """Grad-CAM maps (Selvaraju et al., 2017) computed by ``pytorch-grad-cam``.

    Parameters
    ----------
    model : nn.Module
        The classifier (its train/eval mode is restored afterwards).
    images : torch.Tensor
        ``(N, 3, H, W)`` images in ``[0, 1]``.
    target : torch.Tensor
        ``(N,)`` class explained for each image.
    target_layer : nn.Module, optional
        Default ``model.layer4`` (the last block, B4).
    batch_size : int
        Images per pass.

    Returns
    -------
    torch.Tensor
        ``(N, H, W)`` float32 maps on the CPU, upsampled to the image and
        min-max normalised per image by the library.
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
    with eval_mode(model), GradCAM(model=model, target_layers=[layer]) as cam:
        for s in range(0, images.shape[0], batch_size):
            x = images[s : s + batch_size].to(dev)
            targets = [ClassifierOutputTarget(int(c)) for c in tgt[s : s + batch_size]]
            out.append(torch.from_numpy(np.asarray(cam(input_tensor=x, targets=targets), dtype=np.float32)))
    return torch.cat(out)


class _Recorder:
    def __init__(self, profile: str) -> None:
        self.profile = profile
        self.rows: list[dict[str, Any]] = []

    def add(self, seed: int, level: str, method: str, metric: str, value: float, n: int, *,
            sweep: str | None = None, param: int | None = None, part: str | None = None,
            note: str | None = None) -> None:
        v = float(value)
        self.rows.append({
            "profile": self.profile, "seed": int(seed), "level": level, "method": method, "metric": metric,
            "value": v if math.isfinite(v) else float("nan"), "n": int(n), "sweep": sweep,
            "param": None if param is None else int(param), "part": part, "note": note,
        })


def _concept_records(rec: _Recorder, seed: int, name: str, K: int, maps_train: torch.Tensor,
                     parts_train: torch.Tensor, maps_test: torch.Tensor, parts_test: torch.Tensor,
                     objects_test: torch.Tensor, part_names: Sequence[str], *, sweep: str | None,
                     full: bool) -> None:
    from . import metrics

    n_parts = len(part_names)
    mapping = metrics.fit_concept_to_part(maps_train, parts_train, n_concepts=K)
    mean_iou, per_part = metrics.miou(maps_test, parts_test, mapping, n_parts)
    n_img = maps_test.shape[0]
    rec.add(seed, name, "concepts", "miou", mean_iou, n_img, sweep=sweep, param=K)
    rec.add(seed, name, "concepts", "nmi_object", metrics.nmi(maps_test, parts_test, objects_test), n_img,
            sweep=sweep, param=K)
    if not full:
        return
    rec.add(seed, name, "concepts", "nmi", metrics.nmi(maps_test, parts_test), n_img, param=K)
    rec.add(seed, name, "concepts", "purity", metrics.purity(maps_test, parts_test), n_img, param=K)
    rec.add(seed, name, "concepts", "purity_object", metrics.purity(maps_test, parts_test, objects_test),
            n_img, param=K)
    rec.add(seed, name, "concepts", "miou_floor", metrics.nothing_found_miou(parts_test, n_parts), n_img, param=K)
    missing = metrics.parts_without_concept(mapping, n_parts)
    rec.add(seed, name, "concepts", "parts_without_concept", len(missing), n_parts, param=K,
            note=", ".join(part_names[j] for j in missing) or None)
    for j, pname in enumerate(part_names):
        if np.isfinite(per_part[j]):
            rec.add(seed, name, "concepts", "iou", per_part[j], n_img, param=K, part=pname)


def _features_pass(model: torch.nn.Module, data: Any, specs: Sequence[_Spec], lfs: dict,
                   cms: dict, n_maps: int, batch_size: int
                   ) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[tuple[str, int], torch.Tensor]]:
    """One forward pass per batch for every level: pooled embeddings, logits, and concept maps.

    ``data`` is an ``ImageSet`` (read batch by batch with ``images_at``). Returns
    ``({level: (N, D_S)}, logits (N, C), {(level, K'): (n_maps, H_S, W_S) int16})`` on the CPU;
    concept maps stay on the level's grid and are computed for the first ``n_maps`` images only.
    """
    from .concepts import concept_map
    from .features import block_features, eval_mode

    mdev = next(model.parameters()).device
    pooled: dict[str, list[torch.Tensor]] = {sp.name: [] for sp in specs if sp.classify}
    cmaps: dict[tuple[str, int], list[torch.Tensor]] = {key: [] for key in cms}
    logits_all = []
    with eval_mode(model), torch.no_grad(), block_features(model) as extract:
        for s in range(0, len(data), batch_size):
            x = data.images_at(torch.arange(s, min(s + batch_size, len(data))))
            maps, logits = extract(x.to(mdev), return_logits=True)
            logits_all.append(logits.float().cpu())
            for sp in specs:
                need_maps = sp.concepts and s < n_maps
                if not (sp.classify or need_maps):
                    continue
                if sp.level == "logits":
                    pooled[sp.name].append(logits.float().cpu())
                    continue
                feats = lfs[sp.name].combine(maps, tuple(x.shape[-2:]))
                if sp.classify:
                    pooled[sp.name].append(feats.mean((2, 3)).float().cpu())
                if need_maps:
                    m = min(n_maps - s, feats.shape[0])
                    for (name, K), cm in cms.items():
                        if name == sp.name:
                            cmaps[(name, K)].append(concept_map(feats[:m], cm.centroids_).to(torch.int16).cpu())
    Z = {k: torch.cat(v) for k, v in pooled.items()}
    C = {k: torch.cat(v) for k, v in cmaps.items() if v}
    return Z, torch.cat(logits_all), C


def _attribution_maps(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, specs: Sequence[_Spec],
                      lfs: dict, clfs: dict, *, batch_size: int, random_state: int) -> dict[tuple[str, str], torch.Tensor]:
    """Every attribution map of images ``x`` for classes ``target``, upsampled to the images, on the CPU.

    Keys ``(level, method)``: ``(S, "kmeans")`` for every block level with a classifier (the map of
    the best prototype of the target class), ``("B4", "cam")``, ``("B4", "gradcam")``,
    ``("pixel", "random")``.
    """
    from . import metrics
    from .attribution import attribution_map, cam

    mdev = next(model.parameters()).device
    n, size = x.shape[0], tuple(x.shape[-2:])
    att: dict[tuple[str, str], torch.Tensor] = {}
    for sp in specs:
        if not (sp.attribution and sp.name in clfs):
            continue
        clf = clfs[sp.name]
        maps_list = []
        for s in range(0, n, batch_size):
            feats = lfs[sp.name].position_features(model, x[s : s + batch_size])
            _, index = clf.best_prototype_per_class(feats.mean((2, 3)))
            col = clf.class_columns(target[s : s + batch_size], n=index.shape[0]).to(index.device)
            proto = index.gather(1, col[:, None])[:, 0]
            mu = clf.prototypes_.to(device=feats.device, dtype=feats.dtype)[proto]
            maps_list.append(attribution_map(feats, mu, size=size, geometry=lfs[sp.name].grid_geometry_).float().cpu())
        att[(sp.name, "kmeans")] = torch.cat(maps_list)
    att[("B4", "cam")] = torch.cat([
        cam(model, x[s : s + batch_size].to(mdev), target=target[s : s + batch_size].to(mdev), size=size).float().cpu()
        for s in range(0, n, batch_size)
    ])
    att[("B4", "gradcam")] = grad_cam(model, x, target, batch_size=batch_size)
    att[("pixel", "random")] = metrics.random_maps(n, size, random_state=random_state)
    return att


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


# ----------------------------------------------------------------------------- the evaluation
def run_evaluation(
    profile: str | Profile | None = "quick",
    seeds: Sequence[int] | int | None = None,
    *,
    levels: Sequence[str] | None = None,
    device: str | torch.device = "auto",
    include_sweeps: bool = True,
    include_attribution: bool = True,
    deletion_steps: int = 10,
    deletion_baseline: str | float = "blur",
    n_fit_images: int = 500,
    sweep_levels: Sequence[str] | None = None,
    example_indices: Sequence[int] | None = None,
    batch_size: int = 200,
) -> pandas.DataFrame:  # noqa: F821
    """Run the whole evaluation of METHOD section 6 and return tidy records.

    Parameters
    ----------
    profile : str or Profile, default "quick"
        Which profile (``None``: ``KMEX_PROFILE``). Sizes come from it:
        ``n_train``/``n_test`` images, ``k_per_class``, ``n_concepts``,
        ``positions_per_image``, ``n_eval_images``, ``k_sweep``,
        ``concept_sweep``.
    seeds : sequence of int or int, optional
        Seeds (model training and k-means); an int ``n`` means the first
        ``n`` of ``profile.seeds`` (then ``0, 1, ...``). Default ``profile.seeds``.
    levels : sequence of str, optional
        Default ``profile.levels``. Every multi-block level that contains B4
        also gets its resolution control ``"B4@<level>-grid"``.
    device : str or torch.device, default "auto"
        Where the model and k-means run.
    include_sweeps : bool, default True
        Run the sensitivity sweeps (on the first seed).
    include_attribution : bool, default True
        Run the attribution metrics.
    deletion_steps : int, default 10
        Steps of the deletion / insertion curves.
    deletion_baseline : {"blur", "mean"} or float, default "blur"
        What removed pixels become (see :func:`kmexplain_utils.metrics.deletion_insertion`).
    n_fit_images : int, default 500
        Training images (the first ones) used to fit the concepts
        (``positions_per_image`` positions each) and the concept-to-part
        mapping. The k-means classifiers use all training images. The first 256 of them fit ``sigma_b``.
    sweep_levels : sequence of str, optional
        Levels of the concept sweep (default B4, B234 and B4@B234-grid, when
        evaluated).
    example_indices : sequence of int, optional
        Test images kept, with all their maps, for the qualitative figure
        (first seed). Default: the first test image of each class (at most
        8), the images the earlier chapters show.
    batch_size : int, default 200
        Images per forward pass.

    Returns
    -------
    pandas.DataFrame
        One row per measurement, columns :data:`COLUMNS` (see the module
        docstring). ``df.attrs`` holds

        - ``"curves"``: a DataFrame of mean deletion / insertion curves,
          columns ``profile, seed, level, method, curve, fraction, value``;
        - ``"examples"``: numpy arrays for the qualitative figure
          (``images``, ``parts``, ``objects``, ``labels``, ``target``,
          ``concept_maps`` {level: (n, H, W)}, ``attributions``
          {"level/method": (n, H, W)}, ``part_names``, ``class_names``);
        - ``"info"``: profile, seeds, deletion baseline, timings (s) and
          sample sizes.

    Notes
    -----
    The attribution maps all explain the **network's predicted class** and
    deletion/insertion track the network's softmax probability of it: CAM
    and Grad-CAM of that class, the k-means map of the best prototype of
    that class (the winning prototype whenever the k-means classifier agrees
    with the network), and a uniform random map.
    """
    import pandas as pd

    from . import metrics
    from .classifier import KMeansClassifier
    from .concepts import ConceptModel, upsample_labels
    from .data import load_dataset
    from .features import LevelFeatures
    from .prototypes import prototype_representativeness
    from .sem import linear_prototypes
    from .training import DATA_SEED, get_trained_model

    t_start = time.perf_counter()
    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    if seeds is None:
        seed_list = list(prof.seeds)
    elif isinstance(seeds, (int, np.integer)):
        n_seeds = int(seeds)
        if n_seeds < 1:
            raise ValueError(f"seeds must be >= 1 when given as a count, got {seeds}")
        extra = range(max(prof.seeds, default=-1) + 1, max(prof.seeds, default=-1) + 1 + n_seeds)
        seed_list = (list(prof.seeds) + list(extra))[:n_seeds]
    else:
        seed_list = [int(s) for s in seeds]
    if not seed_list:
        raise ValueError("no seeds to evaluate")
    level_list = list(prof.levels if levels is None else levels)
    if not level_list:
        raise ValueError("levels is empty; use e.g. ['logits', 'B4', 'B234']")
    specs = _specs(level_list)
    spec_names = [sp.name for sp in specs if sp.concepts]
    if sweep_levels is None:
        sweep_names = [n for n in ("B4", "B234", _CONTROL_FMT.format("B234")) if n in spec_names] or spec_names
    else:
        sweep_names = list(sweep_levels)
        unknown = [n for n in sweep_names if n not in spec_names]
        if unknown:
            raise ValueError(f"sweep_levels {unknown} are not evaluated block levels; choose among {spec_names}")
    dev = resolve_device(device)
    rec = _Recorder(prof.name)
    curves_rows: list[dict[str, Any]] = []
    examples: dict[str, Any] = {}
    timings: dict[str, float] = {}
    baseline_doc: str | None = None

    def tick(key: str, t0: float) -> float:
        t1 = time.perf_counter()
        timings[key] = timings.get(key, 0.0) + (t1 - t0)
        return t1

    stages = ["model", "fit levels and concepts", "features", "classifiers", "concept metrics", "attribution"]
    bar = progress(total=len(seed_list) * len(stages), desc="evaluation")
    previous = getattr(config, "_progress_override", None)
    set_progress(False)  # the inner bars of the package stay quiet under this one
    try:
        t = time.perf_counter()
        train = load_dataset(prof.dataset, "train", prof, seed=DATA_SEED)
        test = load_dataset(prof.dataset, "test", prof, seed=DATA_SEED)
        n_fit = min(int(n_fit_images), len(train))
        n_scale = min(n_fit, 256)
        x_fit = train.images_at(torch.arange(n_fit))
        parts_fit, _, part_names = _ground_truth(train, torch.arange(n_fit))
        parts_test, objects_test, _ = _ground_truth(test, torch.arange(len(test)))
        H, W = parts_test.shape[-2:]
        n_eval = min(int(prof.n_eval_images), len(test))
        t = tick("data", t)

        for si, seed in enumerate(seed_list):
            sweep_seed = include_sweeps and si == 0
            # -- 1. model
            bar.set_description(f"seed {seed}: model")
            model, _info = get_trained_model(prof, seed, device=dev)
            model.eval()
            t = tick("model", t)
            bar.update(1)

            # -- 2. levels and concepts
            bar.set_description(f"seed {seed}: fit levels and concepts")
            lfs: dict[str, LevelFeatures] = {}
            cms: dict[tuple[str, int], ConceptModel] = {}
            for sp in specs:
                # sigma_b is one number per block: the first n_scale fitting images estimate it well
                lfs[sp.name] = LevelFeatures(sp.level, grid=sp.grid, batch_size=batch_size).fit(model, x_fit[:n_scale])
                if sp.concepts:
                    cm = ConceptModel(prof.n_concepts, level=sp.level, positions_per_image=prof.positions_per_image,
                                      random_state=seed, device=dev)
                    cm.fit(model, x_fit, level_features=lfs[sp.name])
                    cms[(sp.name, prof.n_concepts)] = cm
                    if sweep_seed and sp.name in sweep_names:
                        for K in prof.concept_sweep:
                            if K != prof.n_concepts:
                                cms[(sp.name, K)] = ConceptModel(
                                    K, level=sp.level, positions_per_image=prof.positions_per_image,
                                    random_state=seed, device=dev,
                                ).fit(model, x_fit, level_features=lfs[sp.name], sample=cm.sample_)
            t = tick("fit levels and concepts", t)
            bar.update(1)

            # -- 3. one forward pass per batch for every level: pooled embeddings and concept maps
            bar.set_description(f"seed {seed}: features")

            Z_train, _, cmaps_train = _features_pass(model, train, specs, lfs, cms, n_fit, batch_size)
            Z_test, logits_test, cmaps_test = _features_pass(model, test, specs, lfs, cms, len(test), batch_size)
            t = tick("features", t)
            bar.update(1)

            # -- 4. classifiers, agreement, representativeness, k sweep
            bar.set_description(f"seed {seed}: classifiers")
            y_train, y_test = train.labels, test.labels
            n_test = len(y_test)
            linear_pred = logits_test.argmax(1)
            rec.add(seed, "B4", "linear", "accuracy", float((linear_pred == y_test).double().mean()), n_test)
            clfs: dict[str, KMeansClassifier] = {}
            for sp in specs:
                if not sp.classify:
                    continue
                ks = sorted(set(prof.k_sweep) | {prof.k_per_class}) if sweep_seed else [prof.k_per_class]
                for k in ks:
                    clf = KMeansClassifier(k, random_state=seed, device=dev).fit(Z_train[sp.name], y_train)
                    pred = torch.as_tensor(clf.predict(Z_test[sp.name])).cpu()
                    acc = float((pred == y_test).double().mean())
                    if k == prof.k_per_class:
                        clfs[sp.name] = clf
                        rec.add(seed, sp.name, "kmeans", "accuracy", acc, n_test, param=k)
                        rec.add(seed, sp.name, "kmeans", "agreement", float((pred == linear_pred).double().mean()),
                                n_test, param=k)
                    if sweep_seed:
                        rec.add(seed, sp.name, "kmeans", "accuracy", acc, n_test, sweep="k_per_class", param=k)
            if "B4" in clfs:
                # the linear head acts on the raw pooled B4 features: undo the level's 1/sigma
                sigma = float(lfs["B4"].sigma_["B4"])
                Zb4 = Z_train["B4"].double() * sigma
                Wl, _b = linear_prototypes(model)
                r_lin = prototype_representativeness(Wl.detach().double().cpu(), Zb4, rescale=True)
                r_km = prototype_representativeness(clfs["B4"].prototypes_.detach().double().cpu() * sigma, Zb4)
                n_c = Wl.shape[0]
                rec.add(seed, "B4", "linear", "prototype_nn_ratio", float(r_lin.ratio.mean()), n_c)
                rec.add(seed, "B4", "linear-rescaled", "prototype_nn_ratio", float(r_lin.rescaled_ratio.mean()), n_c)
                rec.add(seed, "B4", "kmeans", "prototype_nn_ratio", float(r_km.ratio.mean()),
                        clfs["B4"].prototypes_.shape[0], param=prof.k_per_class)
            t = tick("classifiers", t)
            bar.update(1)

            # -- 5. concept maps vs parts
            bar.set_description(f"seed {seed}: concept metrics")

            def up(maps: torch.Tensor, name: str) -> torch.Tensor:  # grid -> pixels (nearest registered position)
                return upsample_labels(maps, (H, W), lfs[name].grid_geometry_)

            for (name, K) in cms:
                main_k = K == prof.n_concepts
                if main_k:
                    _concept_records(
                        rec, seed, name, K, up(cmaps_train[(name, K)], name), parts_fit, up(cmaps_test[(name, K)], name),
                        parts_test, objects_test, part_names, sweep=None, full=True,
                    )
                if sweep_seed and name in sweep_names:
                    _concept_records(
                        rec, seed, name, K, up(cmaps_train[(name, K)], name), parts_fit, up(cmaps_test[(name, K)], name),
                        parts_test, objects_test, part_names, sweep="n_concepts", full=False,
                    )
            t = tick("concept metrics", t)
            bar.update(1)

            # -- 6. attribution maps
            bar.set_description(f"seed {seed}: attribution")
            if include_attribution and n_eval > 0:
                x_eval = test.images_at(torch.arange(n_eval))
                obj_eval = objects_test[:n_eval]
                target = linear_pred[:n_eval]
                att = _attribution_maps(model, x_eval, target, specs, lfs, clfs, batch_size=batch_size,
                                        random_state=seed)
                for (lv, method), maps in att.items():
                    di = metrics.deletion_insertion(
                        model, x_eval, maps, target, steps=deletion_steps, baseline=deletion_baseline,
                        batch_size=max(batch_size, deletion_steps + 1) * 2, random_state=seed,
                    )
                    rec.add(seed, lv, method, "deletion_auc", float(di.deletion_auc.mean()), n_eval, note=di.baseline)
                    rec.add(seed, lv, method, "insertion_auc", float(di.insertion_auc.mean()), n_eval, note=di.baseline)
                    hits = metrics.pointing_game(maps, obj_eval)
                    rec.add(seed, lv, method, "pointing_game", float(hits.mean()), n_eval)
                    energy = metrics.energy_in_mask(maps, obj_eval)
                    rec.add(seed, lv, method, "energy_in_mask", float(np.nanmean(energy)),
                            int(np.isfinite(energy).sum()))
                    for curve, values in (("deletion", di.deletion), ("insertion", di.insertion)):
                        for f, v in zip(di.fractions, values.mean(0)):
                            curves_rows.append({"profile": prof.name, "seed": seed, "level": lv, "method": method,
                                                "curve": curve, "fraction": float(f), "value": float(v)})
                    baseline_doc = di.baseline
                if si == 0:
                    # the qualitative figure: the images of the earlier chapters (first test image of each class)
                    if example_indices is None:
                        idx = [int((test.labels == c).nonzero()[0]) for c in torch.unique(test.labels)[:8].tolist()]
                    else:
                        idx = [int(i) for i in example_indices if 0 <= int(i) < len(test)]
                    x_ex = test.images_at(idx)
                    t_ex = linear_pred[idx]
                    att_ex = _attribution_maps(model, x_ex, t_ex, specs, lfs, clfs, batch_size=batch_size,
                                               random_state=seed)
                    examples = {
                        "index": np.asarray(idx),
                        "images": x_ex.numpy(),
                        "parts": parts_test[idx].numpy(),
                        "objects": objects_test[idx].numpy(),
                        "labels": test.labels[idx].numpy(),
                        "target": t_ex.numpy(),
                        "part_names": part_names,
                        "class_names": list(getattr(test, "class_names", []) or []),
                        "concept_maps": {name: up(cmaps_test[(name, K)][idx], name).numpy().astype(np.int64)
                                         for (name, K) in cms if K == prof.n_concepts},
                        "attributions": {f"{lv}/{method}": m.numpy() for (lv, method), m in att_ex.items()},
                        "seed": seed,
                    }
            t = tick("attribution", t)
            bar.update(1)
    finally:
        set_progress(previous)
        bar.close()

    df = pd.DataFrame(rec.rows, columns=list(COLUMNS))
    info = {
        "profile": prof.as_dict(),
        "seeds": seed_list,
        "levels": [sp.name for sp in specs],
        "device": str(dev),
        "deletion_baseline": baseline_doc,
        "deletion_steps": int(deletion_steps),
        "n_fit_images": n_fit,
        "n_scale_images": n_scale,
        "sweep_levels": sweep_names if include_sweeps else [],
        "n_test_images": len(test),
        "n_eval_images": n_eval,
        "timings_s": {k: round(float(v), 2) for k, v in timings.items()},
        "seconds": round(time.perf_counter() - t_start, 2),
    }
    df.attrs["curves"] = pd.DataFrame(curves_rows, columns=["profile", "seed", "level", "method", "curve",
                                                            "fraction", "value"])
    df.attrs["examples"] = examples
    df.attrs["info"] = info
    return df


# ----------------------------------------------------------------------------- tables and figures
def method_label(level: str, method: str) -> str:
    """Readable name of an attribution method: ``"k-means B234"``, ``"CAM"``, ``"Grad-CAM"``, ``"random"``."""
    if method == "kmeans":
        return f"k-means {level}"
    return {"cam": "CAM", "gradcam": "Grad-CAM", "random": "random map", "linear": "linear head"}.get(method, method)


def summary_table(df: pandas.DataFrame, metrics: Sequence[str] | None = None, *,  # noqa: F821
                  digits: int = 3) -> pandas.DataFrame:  # noqa: F821
    """Mean ± standard deviation over seeds, one row per (level, method), one column per metric.

    Sweep rows and per-part IoUs are left out.

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
        if r["count"] > 1 and np.isfinite(r["std"]):
            return f"{r['mean']:.{digits}f} ± {r['std']:.{digits}f}"
        return f"{r['mean']:.{digits}f}"

    cells = g.apply(fmt, axis=1).unstack("metric")
    cols = [m for m in (metrics or METRICS) if m in cells.columns]
    return cells[cols].fillna("")


def _mean_std(df: pandas.DataFrame, level: str, method: str, metric: str) -> tuple[float, float]:  # noqa: F821
    v = df[(df["level"] == level) & (df["method"] == method) & (df["metric"] == metric) & df["sweep"].isna()]["value"]
    return (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0) if len(v) else (float("nan"), float("nan"))


def plot_tradeoff(df: pandas.DataFrame, ax: Any = None, *, fidelity: str = "nmi_object",  # noqa: F821
                  controls: bool = True):
    """Accuracy of the k-means classifier vs semantic fidelity of its concept maps, per level.

    Points are the mean over seeds, bars one standard deviation; the linear
    head's accuracy is the horizontal band. Resolution controls (which have
    no classifier of their own) are drawn at B4's accuracy, hollow.

    Parameters
    ----------
    df : DataFrame
        Records of :func:`run_evaluation`.
    ax : Axes, optional
    fidelity : str, default "nmi_object"
        Concept metric on the x axis (``"miou"``, ``"nmi_object"``, ...).
    controls : bool
        Also draw the resolution controls.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    from .plotting import concept_colors

    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 4.0), layout="constrained")
    else:
        fig = ax.figure
    acc_lin, sd_lin = _mean_std(df, "B4", "linear", "accuracy")
    if np.isfinite(acc_lin):
        ax.axhline(100 * acc_lin, color="0.3", lw=1, ls="--", label="linear head")
        ax.axhspan(100 * (acc_lin - sd_lin), 100 * (acc_lin + sd_lin), color="0.85", zorder=0)
    names = [n for n in dict.fromkeys(df[(df["method"] == "concepts") & (df["metric"] == fidelity)]["level"])]
    levels = [lv for lv in dict.fromkeys(df["level"]) if not str(lv).startswith("B4@") and lv != "pixel"]
    colors = dict(zip(levels, concept_colors(max(1, len(levels)))))
    for name in names:
        is_control = name.startswith("B4@")
        if is_control and not controls:
            continue
        # a control B4@S-grid takes the colour of S, hollow
        color = colors.get(name[3:-5] if is_control else name, "0.5")
        fx, fsd = _mean_std(df, name, "concepts", fidelity)
        ay, asd = _mean_std(df, "B4" if is_control else name, "kmeans", "accuracy")
        ax.errorbar(fx, 100 * ay, xerr=fsd, yerr=100 * asd, fmt="o", ms=7, capsize=3, color=color,
                    mfc="white" if is_control else color, mew=1.5, label=name)
    ax.set_xlabel(f"semantic fidelity: {fidelity.replace('_', ' ')} of concepts vs parts")
    ax.set_ylabel("test accuracy of the k-means classifier (%)")
    ax.set_title("Accuracy vs semantic fidelity, per level")
    ax.legend(fontsize="small", loc="best")
    return fig


def plot_curves(curves: pandas.DataFrame, ax: Any = None, *, curve: str = "deletion"):  # noqa: F821
    """Mean deletion or insertion curve of every map (averaged over images and seeds).

    Parameters
    ----------
    curves : DataFrame
        ``df.attrs["curves"]`` from :func:`run_evaluation`.
    ax : Axes, optional
    curve : {"deletion", "insertion"}

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    if curve not in ("deletion", "insertion"):
        raise ValueError(f"curve must be 'deletion' or 'insertion', got {curve!r}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 3.5), layout="constrained")
    else:
        fig = ax.figure
    sub = curves[curves["curve"] == curve]
    mean = sub.groupby(["level", "method", "fraction"], sort=False)["value"].mean().reset_index()
    for (lv, method), g in mean.groupby(["level", "method"], sort=False):
        label = method_label(lv, method)
        ls = "-" if method == "kmeans" else ("--" if method != "random" else ":")
        ax.plot(100 * g["fraction"], g["value"], ls, label=label)
    ax.set_xlabel(f"pixels {'removed' if curve == 'deletion' else 'inserted'} (%)")
    ax.set_ylabel("probability of the explained class")
    ax.set_title(f"{curve.capitalize()} curves")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize="small")
    return fig


def plot_sweeps(df: pandas.DataFrame, axes: Any = None):  # noqa: F821
    """Sensitivity: accuracy vs prototypes per class, and mIoU / object NMI vs number of concepts.

    Parameters
    ----------
    df : DataFrame
        Records of :func:`run_evaluation` (with ``include_sweeps=True``).
    axes : sequence of 3 Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    if axes is None:
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.5), layout="constrained")
    else:
        fig = axes[0].figure
    from .plotting import concept_colors

    levels = [lv for lv in dict.fromkeys(df["level"]) if not str(lv).startswith("B4@") and lv != "pixel"]
    colors = dict(zip(levels, concept_colors(max(1, len(levels)))))
    panels = [("k_per_class", "accuracy", "prototypes per class K", "k-means test accuracy (%)", 100.0),
              ("n_concepts", "miou", "number of concepts K'", "mIoU (test)", 1.0),
              ("n_concepts", "nmi_object", "number of concepts K'", "object-pixel NMI (test)", 1.0)]
    for ax, (sweep, metric, xlabel, ylabel, scale) in zip(axes, panels):
        sub = df[(df["sweep"] == sweep) & (df["metric"] == metric)]
        for lv, g in sub.groupby("level", sort=False):
            g = g.sort_values("param")
            color = colors.get(lv[3:-5] if lv.startswith("B4@") else lv, "0.5")
            ax.plot(g["param"], scale * g["value"], "o-", label=lv, color=color,
                    mfc="white" if lv.startswith("B4@") else color)
        ax.set_xscale("log", base=2)
        ticks = sorted({int(v) for v in sub["param"].dropna()})
        if ticks:
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(ylabel.split(" (")[0] + " vs " + xlabel.split(" K")[0])
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small", loc="best")
    return fig


def plot_qualitative(examples: dict[str, Any], *, size: float = 1.25):
    """The same test images under every level and baseline, beside the ground-truth parts.

    Rows are images; columns: the image, its part map, the concept map of
    every level (and resolution control), then every attribution map.

    Parameters
    ----------
    examples : dict
        ``df.attrs["examples"]`` from :func:`run_evaluation`.
    size : float
        Inches per panel.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    from .plotting import show_heatmap, show_image, show_label_map

    if not examples:
        raise ValueError("no examples: run_evaluation(..., include_attribution=True) keeps them")
    images = examples["images"]
    cmaps = examples["concept_maps"]
    atts = examples["attributions"]
    cols = (["image", "parts"] + [f"concepts\n{k.replace('-grid', ' grid')}" for k in cmaps]
            + [method_label(*k.split("/")).replace(" ", "\n", 1) for k in atts])
    n = len(images)
    fig, axes = plt.subplots(n, len(cols), figsize=(size * len(cols), size * n + 0.4), squeeze=False,
                             layout="constrained")
    for i in range(n):
        show_image(images[i], ax=axes[i, 0])
        show_label_map(images[i], examples["parts"][i], ax=axes[i, 1])
        for j, m in enumerate(cmaps.values()):
            show_label_map(images[i], m[i], ax=axes[i, 2 + j], background=False, alpha=0.6)
        for j, m in enumerate(atts.values()):
            show_heatmap(images[i], m[i], ax=axes[i, 2 + len(cmaps) + j])
    for j, c in enumerate(cols):
        axes[0, j].set_title(c, fontsize="small")
    return fig


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
