"""Chapter 5's readings and checks (kmexplain_utils.evaluation.readings) on synthetic records.

For every reading: the sentence quotes the value of the record it names (change the record, the
sentence changes) and each branch is taken on numbers that call for it. For every check: it holds on
consistent records and fails on a contradicting number.
"""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest

from kmexplain_utils.evaluation import readings
from kmexplain_utils.evaluation import run as evaluate
from kmexplain_utils.evaluation.sanity import PASS_STAGE

SEEDS = (0, 1, 2)
LEVELS = ("B4", "B234", "B1234")
CONTROL = "B4@B234-grid"

#: (level, method, metric) -> value on every seed: a consistent evaluation in which every check holds
BASE = {
    ("B4", "linear", "accuracy"): 0.970, ("logits", "kmeans", "accuracy"): 0.968,
    ("B4", "kmeans", "accuracy"): 0.965, ("B234", "kmeans", "accuracy"): 0.950,
    ("B1234", "kmeans", "accuracy"): 0.940,
    ("B4", "linear", "prototype_nn_ratio"): 4.0, ("B4", "linear-rescaled", "prototype_nn_ratio"): 3.6,
    ("B4", "kmeans", "prototype_nn_ratio"): 0.7,
    # concepts against parts, and their references
    **{(lv, "concepts", "ami_object"): v for lv, v in [("B4", 0.18), ("B234", 0.33), ("B1234", 0.40), (CONTROL, 0.20)]},
    **{(lv, "concepts", "nmi_object"): v for lv, v in [("B4", 0.19), ("B234", 0.34), ("B1234", 0.41), (CONTROL, 0.21)]},
    **{(lv, "concepts", "miou"): v for lv, v in [("B4", 0.21), ("B234", 0.27), ("B1234", 0.29), (CONTROL, 0.22)]},
    **{(lv, "concepts", "purity"): v for lv, v in [("B4", 0.86), ("B234", 0.88), ("B1234", 0.89)]},
    **{(lv, "ceiling", "ami_object"): v for lv, v in [("B4", 0.45), ("B234", 0.70), ("B1234", 0.80)]},
    **{(lv, "ceiling", "miou"): v for lv, v in [("B4", 0.50), ("B234", 0.71), ("B1234", 0.81)]},
    ("pixel", "kmeans-rgb", "ami_object"): 0.58, ("pixel", "kmeans-rgbxy", "ami_object"): 0.38,
    ("pixel", "kmeans-rgb", "miou"): 0.17, ("pixel", "kmeans-rgbxy", "miou"): 0.25,
    ("B4", "nmf", "ami_object"): 0.18, ("B234", "nmf", "ami_object"): 0.26,
    ("B4", "concepts", "miou_floor"): 0.13,
    # the first edition's cell registration
    **{(lv, "concepts-cell", m): v for lv in LEVELS for m, v in [("nmi_object", 0.15), ("ami_object", 0.14),
                                                                  ("miou", 0.20)]},
    ("B4", "kmeans", "pointing_game"): 0.80, ("B234", "kmeans", "pointing_game"): 0.90,
    ("B1234", "kmeans", "pointing_game"): 0.90, (CONTROL, "kmeans", "pointing_game"): 0.82,
    **{(lv, "kmeans-cell", "pointing_game"): v for lv, v in [("B4", 0.75), ("B234", 0.80), ("B1234", 0.80)]},
    # attribution
    ("B4", "kmeans", "deletion_auc"): 0.20, ("B234", "kmeans", "deletion_auc"): 0.22,
    (CONTROL, "kmeans", "deletion_auc"): 0.25, ("B4", "cam", "deletion_auc"): 0.30,
    ("B3", "gradcam", "deletion_auc"): 0.28, ("pixel", "occlusion", "deletion_auc"): 0.26,
    ("pixel", "random", "deletion_auc"): 0.50, ("B234", "random", "deletion_auc"): 0.45,
    ("B4", "kmeans", "insertion_auc"): 0.7, ("B234", "kmeans", "insertion_auc"): 0.7,
    ("B4", "kmeans", "deletion_auc_transfer"): 0.31, ("B234", "kmeans", "deletion_auc_transfer"): 0.33,
    ("B4", "cam", "pointing_game"): 0.85, ("B3", "gradcam", "pointing_game"): 0.86,
    ("pixel", "occlusion", "pointing_game"): 0.87, ("pixel", "random", "pointing_game"): 0.30,
    ("B4", "kmeans", "energy_in_mask"): 0.40, ("B234", "kmeans", "energy_in_mask"): 0.45,
    ("pixel", "random", "energy_in_mask"): 0.20, ("B4", "cam", "energy_in_mask"): 0.42,
    ("B3", "gradcam", "energy_in_mask"): 0.58, ("pixel", "occlusion", "energy_in_mask"): 0.55,
    ("B4", "cam", "gradcam_identity_error"): 1e-7,
    # keypoints (n: keypoints / prototypes)
    **{(lv, "concepts", "keypoint_ami"): v for lv, v in [("B4", 0.10), ("B234", 0.20), ("B1234", 0.25),
                                                          (CONTROL, 0.12)]},
    **{(lv, "kmeans", "part_consistency"): v for lv, v in [("B4", 0.30), ("B234", 0.50), ("B1234", 0.55)]},
    **{(lv, "random", "part_consistency"): v for lv, v in [("B4", 0.40), ("B234", 0.40), ("B1234", 0.40)]},
    # the sanity check's decomposition
    **{(lv, "kmeans", m): v for lv in ("B4", "B234") for m, v in [("sanity_shared_share", 0.55),
                                                                  ("sanity_shared_spearman", 0.93)]},
}
#: sanity_spearman after PASS_STAGE, per (level, method)
SANITY = {("B4", "kmeans"): 0.79, ("B234", "kmeans"): 0.86, ("B4", "contrastive"): 0.10,
          ("B234", "contrastive"): 0.12, ("B4", "class-specific"): 0.20, ("B234", "class-specific"): 0.25,
          ("B4", "cam"): -0.3}
#: contrastive scores per (level, method): mass, peak, part share
CONTRAST = {("B234", "kmeans"): 0.30, ("B4", "kmeans"): 0.25, ("B4", "cam"): 0.20, ("B3", "gradcam"): 0.22,
            ("pixel", "random"): 0.08}
#: accuracy at every K, per seed: B4 and B234 (the cost grows with K, more than the spread)
K_SWEEP = {1: [(0.97, 0.965), (0.97, 0.962), (0.97, 0.966)], 2: [(0.97, 0.955), (0.97, 0.950), (0.97, 0.952)],
           4: [(0.97, 0.945), (0.97, 0.948), (0.97, 0.944)]}
#: (level, method, metric, seed) keys: per-seed overrides of BASE, SANITY ("sanity") or CONTRAST ("contrastive_mass")


def _row(seed, level, method, metric, value, **kw):
    row = dict(profile="test", seed=seed, level=level, method=method, metric=metric, value=value, n=kw.pop("n", 10),
               sweep=None, param=None, part=None, note=None)
    row.update(kw)
    return row


def records(override=None, seeds=SEEDS, sanity_n=128, k_sweep=None):
    """A consistent evaluation's records; ``override[(level, method, metric[, seed])] = value``."""
    override = dict(override or {})
    k_sweep = K_SWEEP if k_sweep is None else k_sweep

    def value(key, seed, default):
        return override.get((*key, seed), override.get(key, default))

    rows = []
    for s, seed in enumerate(seeds):
        for key, v in BASE.items():
            note = None
            if key[2] == "deletion_auc":
                note = "blur, on k-means" if key[1] == "kmeans" else "blur, on the linear head"
            n = 40 if key[2] == "keypoint_ami" else 12 if key[2] == "part_consistency" else 10
            rows.append(_row(seed, *key, value(key, seed, v), note=note, n=n))
        for lv in LEVELS:  # the parts without a concept, main setting
            missing = value((lv, "concepts", "parts_without_concept"), seed, "tail, marking" if lv == "B4" else "")
            rows.append(_row(seed, lv, "concepts", "parts_without_concept", float(len(missing.split(", ")) if missing
                                                                                      else 0), note=missing or None))
        for (lv, method), v in SANITY.items():
            for step, stage in enumerate(("head", PASS_STAGE, "B3"), start=1):
                val = value((lv, method, "sanity"), seed, v) if stage == PASS_STAGE else 0.95
                rows.append(_row(seed, lv, method, "sanity_spearman", val, n=sanity_n, param=step, note=stage))
        for (lv, method), v in CONTRAST.items():
            rows.append(_row(seed, lv, method, "contrastive_mass", value((lv, method, "contrastive_mass"), seed, v)))
            rows.append(_row(seed, lv, method, "contrastive_peak", 0.3))
            rows.append(_row(seed, lv, method, "contrastive_part_share", 0.07))
        for part, v in [("head", 0.35), ("tail", 0.20), ("marking", 0.30)]:
            rows.append(_row(seed, "B234", "kmeans", "contrastive_mass", v, part=part))
        for K, per_seed in k_sweep.items():
            b4, b234 = per_seed[s]
            rows.append(_row(seed, "B4", "kmeans", "accuracy", b4, sweep="k_per_class", param=K))
            rows.append(_row(seed, "B234", "kmeans", "accuracy", b234, sweep="k_per_class", param=K))
        for lv, K in [("B4", 4), ("B234", 1 + s)]:
            rows.append(_row(seed, lv, "kmeans", "k_chosen", float(K)))
        # the ablation (per-part IoU of the concept settings) and the main setting's IoU
        for lv in ("B4", "B234"):
            rows += [_row(seed, lv, "concepts", "iou", 0.5, part="head")]
            for K in (6, 8):
                tail = value((lv, "concepts", "iou_tail", K), seed, 0.0 if lv == "B4" else 0.05 * (K - 5))
                for part, v in [("head", 0.4), ("tail", tail), ("marking", 0.0)]:
                    rows.append(_row(seed, lv, "concepts", "iou", v, sweep="n_concepts", param=K, part=part))
    return pd.DataFrame(rows, columns=list(evaluate.COLUMNS))


def few_records(lin=0.90, b4=0.90, b234=0.88):
    return pd.DataFrame([_row(0, lv, m, metric, v) for lv, m, metric, v in [
        ("B4", "linear", "accuracy", lin), ("B4", "kmeans", "accuracy", b4), ("B234", "kmeans", "accuracy", b234),
        ("B4", "concepts", "ami_object", 0.2), ("B234", "concepts", "ami_object", 0.3)]], columns=list(evaluate.COLUMNS))


PART_SHARE = {"background": 0.80, "body": 0.12, "head": 0.03, "tail": 0.015, "legs": 0.02, "marking": 0.015}


def all_texts(df, fewer=None):
    return {"fidelity": readings.fidelity(df), "keypoints": readings.keypoints(df, "parts", "part masks"),
            "sanity": readings.sanity(df), "k_cost": readings.k_cost(df),
            "fewer_data": readings.fewer_data(few_records() if fewer is None else fewer, 300, 1200)}


# ============================================================================= readings
def test_a_reading_shows_as_markdown():
    r = readings.accuracy(records())
    assert r._repr_markdown_() == str(r) == repr(r) == r.text and r.text.startswith("**Reading.**")
    assert "linear head" in r


def test_accuracy_quotes_its_records_and_takes_each_branch():
    r = readings.accuracy(records())
    assert "The network (its linear head) reaches 97.00 % to 97.00 % test accuracy over the 3 seed(s)." in r
    spread = readings.accuracy(records({("B4", "linear", "accuracy", 1): 0.955}))
    assert "reaches 95.50 % to 97.00 % test accuracy" in spread
    assert "B4 features: 96.50 % against 97.00 % for the linear head" in r
    assert "a change of -0.50 points, negligible" in r and r.values["head_ok"]
    assert "B234 minus B4: -1.5 points on average (higher on 0 seed(s), lower on 3 of 3)" in r
    assert "span 2.8 points" in r  # logits 96.8 ... B1234 94.0
    assert "linear rows 4.0 (3.6 rescaled), k-means centroids 0.70" in r
    moved = readings.accuracy(records({("B4", "kmeans", "accuracy"): 0.940}))
    assert "B4 features: 94.00 %" in moved and "replacing the head costs 3.00 points" in moved
    assert not moved.values["head_ok"]
    gains = readings.accuracy(records({("B4", "kmeans", "accuracy"): 0.990}))
    assert "replacing the head gains 2.00 points" in gains
    # test accuracy moves in steps of 0.125 % (800 images): the printed gap is that of the printed accuracies
    halves = readings.accuracy(records({("B4", "kmeans", "accuracy"): 0.96375, ("B4", "linear", "accuracy"): 0.9725}))
    assert "B4 features: 96.38 % against 97.25 % for the linear head, a change of -0.87 points" in halves
    per_seed = records({**{("B4", "kmeans", "accuracy", s): v for s, v in zip(SEEDS, (0.97125, 0.96625, 0.95375))},
                        **{("B4", "linear", "accuracy", s): v for s, v in zip(SEEDS, (0.98125, 0.9725, 0.96375))}})
    assert "reaches 96.38 % to 98.13 %" in readings.accuracy(per_seed)
    assert "96.38 % against 97.25 % for the linear head, a change of -0.87 points" in readings.accuracy(per_seed)
    for km, lin in [(0.96375, 0.9725), (0.97125, 0.96625), (0.950, 0.96875), (0.9575, 0.945)]:
        text = str(readings.accuracy(records({("B4", "kmeans", "accuracy"): km, ("B4", "linear", "accuracy"): lin})))
        shown = re.search(r"features: ([\d.]+) % against ([\d.]+) %.* (?:of|costs|gains) ([-+]?[\d.]+) points", text)
        a, b, gap = (float(x) for x in shown.groups())
        assert abs(abs(a - b) - abs(gap)) < 1e-9, text
    mixed = readings.accuracy(records({("B234", "kmeans", "accuracy", 1): 0.99}))
    assert "(higher on 1 seed(s), lower on 2 of 3)" in mixed
    tied = readings.accuracy(records({("B234", "kmeans", "accuracy", 2): 0.965}))
    assert "(higher on 0 seed(s), lower on 2 of 3, equal on 1)" in tied
    # a part just under 2 % is not printed as "2.0 %" beside "under 2 %"
    just = readings.where_found(records(), PART_SHARE | {"legs": 0.01996}, 8, 0)
    assert "legs (1.99 %)" in just and "2.00 %" not in just
    with pytest.raises(ValueError, match="run the measurement"):
        readings.accuracy(records().query("method != 'linear'"))


def test_fidelity_quotes_its_records_and_takes_each_branch():
    r = readings.fidelity(records())
    assert "Object-pixel AMI: B234 0.330, B4 0.180 (NMI 0.340 vs 0.190)" in r
    assert "best level B1234 (0.400)" in r and "B4@B234-grid 0.200" in r
    assert "the grid does not explain the gain: the earlier blocks do" in r
    assert "Ceilings: 0.700 on B234's grid, 0.450 on B4's; B234 reaches 47 % of its ceiling, B4 40 %" in r
    assert "colour + position: 0.380, colour alone 0.580; B234 beats neither" in r
    assert "colour alone finds the parts better than the concepts do" in r
    assert "NMF on B234's position vectors, seeds 0, 1, 2: 0.260; concepts (0.330) beat it." in r
    assert "mIoU: B234 0.270, B4 0.210, ceiling 0.710, floor 0.130; colour alone 0.170, colour + position " \
           "0.250: on mIoU B4 beats colour alone, not colour + position and B234 both." in r
    no_better = readings.fidelity(records({("pixel", "kmeans-rgb", "miou"): 0.22}))
    assert "on mIoU B4 beats neither and B234 both (on this measure B4's concept map is no better a part " \
           "map than colour clusters)" in no_better
    assert readings.check_fidelity_text(records(), r).ok and not readings.check_fidelity_text(
        records({("pixel", "kmeans-rgb", "miou"): 0.22}), r).ok
    without = readings.fidelity(records().query("not (level == 'pixel' and metric == 'miou')"))
    assert "floor 0.130. Plain purity" in without  # no colour mIoU recorded: nothing said about it
    assert "spans 0.860 to 0.890 across levels: it says almost nothing" in r
    # the control explains the gain; no gain at all
    assert "a finer grid alone accounts" in readings.fidelity(records({(CONTROL, "concepts", "ami_object"): 0.30}))
    no_gain = readings.fidelity(records({("B234", "concepts", "ami_object"): 0.17}))
    assert "B234 gains nothing over B4" in no_gain and "finer grid alone" not in no_gain
    # the colour baselines, each branch
    both = readings.fidelity(records({("pixel", "kmeans-rgb", "ami_object"): 0.30,
                                      ("pixel", "kmeans-rgbxy", "ami_object"): 0.20}))
    assert "B234 beats both" in both and "colour alone finds" not in both
    assert "beats colour + position, not colour alone" in readings.fidelity(
        records({("pixel", "kmeans-rgbxy", "ami_object"): 0.20}))
    assert "beats colour alone, not colour + position" in readings.fidelity(
        records({("pixel", "kmeans-rgb", "ami_object"): 0.20}))
    assert "concepts (0.330) do not beat it" in readings.fidelity(records({("B234", "nmf", "ami_object"): 0.35}))
    # NMF measured on the first seed only: compared with the concepts on that seed, not their mean over seeds
    first = records().query("method != 'nmf' or seed == 0")
    worse = readings.fidelity(first.assign(value=first["value"].where(
        ~((first["level"] == "B234") & (first["method"] == "concepts") & (first["metric"] == "ami_object")
          & (first["seed"] == 0)), 0.20)))  # mean over seeds 0.287 > NMF 0.260; seed 0: 0.200 < 0.260
    assert "NMF on B234's position vectors, seed 0: 0.260; concepts (0.200) do not beat it." in worse
    assert not worse.values["beats_nmf"] and worse.values["nmf_seeds"] == [0]
    better = readings.fidelity(records({("B234", "concepts", "ami_object"): 0.10,
                                        ("B234", "concepts", "ami_object", 0): 0.30}).query(
        "method != 'nmf' or seed == 0"))  # mean over seeds 0.167 < NMF 0.260; seed 0: 0.300 > 0.260
    assert "seed 0: 0.260; concepts (0.300) beat it." in better and better.values["beats_nmf"]
    assert "NMF" not in readings.fidelity(records().query("method != 'nmf'"))
    # the best level's number is quoted only when the sentence has not quoted it already
    assert "best level B234. Resolution" in readings.fidelity(records({("B1234", "concepts", "ami_object"): 0.30}))
    spread = readings.fidelity(records({("B1234", "concepts", "purity"): 0.99}))
    assert "a spread of 0.130" in spread


def test_registration_table_and_reading():
    df = records()
    table = readings.registration_table(df)
    assert table.loc[("B234", "registered"), "ami_object"] == pytest.approx(0.33)
    assert table.loc[("B234", "cell (first edition)"), "pointing_game"] == pytest.approx(0.80)
    r = readings.registration(df)
    # cell: B234 - B4 = 0 on NMI -> not ahead; pointing: 0.80 - 0.75 = 0.05 -> registered 0.10 grows x 2.0
    assert "B234 − B4, cell → registered: object-pixel NMI = AMI +0.000 → +0.150 (B234 was not ahead with cells)" in r
    assert "pointing game +0.050 → +0.100 (grows × 2.0)" in r
    assert "(object-pixel NMI 0.150 → 0.190 for B4, 0.150 → 0.340 for B234)" in r
    assert "leads B4 by more than one sd of the per-seed difference on object-pixel NMI, AMI, " \
           "mIoU, pointing game." in r
    shrinks = readings.registration(records({("B234", "kmeans", "pointing_game"): 0.82}))
    assert "+0.050 → +0.020 (40 % survives)" in shrinks
    gone = readings.registration(records({("B234", "kmeans", "pointing_game"): 0.80}))
    assert "+0.050 → +0.000 (the gap vanishes)" in gone and "; not on pointing game" in gone
    # NMI and AMI gaps equal to the printed digits here: named once; apart, named each
    assert "; AMI " not in r
    apart = readings.registration(records({("B234", "concepts", "ami_object"): 0.36}))
    assert "object-pixel NMI +0.000 → +0.150" in apart and "; AMI +0.000 → +0.180" in apart
    noisy = readings.registration(records({("B234", "kmeans", "pointing_game", 0): 0.70,
                                           ("B234", "kmeans", "pointing_game", 1): 1.10}))
    assert "not on pointing game" in noisy  # mean gap 0.10 but a per-seed sd of 0.2


def test_where_found_reads_the_ablation_and_the_missing_parts():
    df = records()
    ablation = readings.ablation_table(df, 0)
    assert len(ablation) == 4 and ablation["tail has a concept"].sum() == 2
    r = readings.where_found(df, PART_SHARE, 8, 0)
    assert "(K′ = 8, global concepts): parts without a concept on at least one seed: B4: marking, tail." in r
    assert "under 2 % of the pixels: tail (1.50 %), marking (1.50 %)" in r
    near = readings.where_found(df, {**PART_SHARE, "legs": 0.014996, "tail": 0.019999}, 8, 0)
    assert "legs (1.50 %)" in near and "tail (1.99 %)" in near  # as printed, but never "2.00" under 2 %
    assert "the tail gets a concept in 2 of 4 settings, best IoU 0.150" in r
    assert "best IoU 0.150 (B234, global, K' = 8)" in r
    assert "the marking gets no concept in any of the 4 settings" in r
    assert "IoU of colour alone" not in r and r.values["colour_beats"] == []  # no colour IoU recorded

    def with_colour(marking_rgb):  # main-setting IoU of the concepts and of the colour baselines, every seed
        extra = [_row(s, lv, "concepts", "iou", v, part=p) for s in SEEDS
                 for lv, p, v in [("B4", "tail", 0.05), ("B234", "tail", 0.12), ("B4", "marking", 0.0),
                                  ("B234", "marking", 0.10), (CONTROL, "marking", 0.5)]]
        extra += [_row(s, "pixel", m, "iou", v, part=p) for s in SEEDS
                  for m, p, v in [("kmeans-rgb", "tail", 0.04), ("kmeans-rgb", "marking", marking_rgb),
                                  ("kmeans-rgbxy", "tail", 0.08), ("kmeans-rgbxy", "marking", 0.23)]]
        return pd.concat([df, pd.DataFrame(extra, columns=list(evaluate.COLUMNS))])

    colour = readings.where_found(with_colour(0.21), PART_SHARE, 8, 0)
    assert ("IoU of colour alone (colour + position; best level's concepts): tail 0.040 (0.080; 0.120), "
            "marking 0.210 (0.230; 0.100). Colour beats every level on the marking, lighter or darker than its "
            "body whatever the class.") in colour  # the control is not a level
    assert colour.values["colour_beats"] == ["marking"]
    weaker = readings.where_found(with_colour(0.08), PART_SHARE, 8, 0)
    assert "marking 0.080 (0.230; 0.100)" in weaker and "Colour beats" not in weaker
    none = readings.where_found(records({("B4", "concepts", "parts_without_concept"): ""}),
                                {"background": 0.9, "body": 0.1}, 8, 0)
    assert "seed: none." in none and "pixels: none." in none
    better = readings.where_found(records({("B4", "concepts", "iou_tail", 8): 0.6}), PART_SHARE, 8, 0)
    assert "gets a concept in 3 of 4" in better and "best IoU 0.600 (B4, global, K' = 8)" in better


def test_keypoints_reading_each_branch():
    r = readings.keypoints(records(), "parts", "part masks")
    assert "At 40 pseudo-keypoints" in r and "(the generated set has none)" in r
    assert "AMI B234 0.200, B4 0.100" in r
    assert "(B4@B234-grid 0.120), the same order as object pixels." in r and not r.values["tie"]
    assert "best level" not in r  # B1234 is the best level at the keypoints and on object pixels
    assert "(B4: 30 % of 12; B234: 50 % of 12; " in r  # one chance level for all: quoted once
    # B234 - B4 within one sd over seeds (+0.05, +0.02, -0.05): about equal, whatever the order of the means
    tied = {("B4", "concepts", "keypoint_ami"): 0.20, **{("B234", "concepts", "keypoint_ami", s): v
                                                         for s, v in zip(SEEDS, (0.25, 0.22, 0.15))}}
    tie = readings.keypoints(records(tied), "parts", "part masks")
    assert "AMI B234 0.207, B4 0.200, about equal (difference +0.007 ± 0.051 over seeds; B4@B234-grid 0.120)." in tie
    assert tie.values["tie"] and "same order" not in tie
    apart = readings.keypoints(records(tied | {("B234", "concepts", "keypoint_ami", 2): 0.24}), "parts", "part masks")
    assert "AMI B234 0.237, B4 0.200 (B4@B234-grid 0.120), the same order as object pixels." in apart  # sd 0.015
    assert not apart.values["tie"]
    # the best keypoint level named where it is not the best on object pixels
    best = readings.keypoints(records({("B1234", "concepts", "ami_object"): 0.30}), "parts", "part masks")
    assert "object pixels; best level B1234 (0.250), B234 on object pixels. " in best
    assert best.values["best_level"] == "B1234" and best.values["best_level_pixels"] == "B234"
    chances = readings.keypoints(records({("B4", "random", "part_consistency"): 0.20}), "parts", "part masks")
    assert "(B4: 30 % of 12, chance 20 %; B234: 50 % of 12, chance 40 %; " in chances
    assert "above its chance level at B4, B234, B1234." in chances
    df = records()  # K is chosen per level and seed: each level quotes its own number of prototypes
    df.loc[(df["level"] == "B234") & (df["metric"] == "part_consistency") & (df["seed"] == SEEDS[1]), "n"] = 24
    df.loc[(df["level"] == "B1234") & (df["metric"] == "part_consistency"), "n"] = 8
    per_level = readings.keypoints(df, "parts", "part masks")
    assert "(B4: 30 % of 12; B234: 50 % of 12–24; B1234: 55 % of 8)" in per_level
    assert "above its chance level at B234, B1234, not at B4 (chance 40 %)." in r
    own = readings.keypoints(records({("B4", "concepts", "keypoint_ami"): 0.3}), "cub", "keypoints")
    assert "the 40 keypoints CUB-200-2011 marks" in own and "the reverse of object pixels" in own
    assert "; best level B4 (0.300), B1234 on object pixels." in own
    low = readings.keypoints(records({("kmeans", "part_consistency"): 0}
                                     | {(lv, "kmeans", "part_consistency"): 0.1 for lv in LEVELS}), "parts", None)
    assert "at no level above its chance level" in low
    none = readings.keypoints(records().query("metric not in ['keypoint_ami', 'part_consistency']"), "pets", None)
    assert "Oxford-IIIT Pet has object masks only" in none


def test_attribution_quotes_each_map():
    r = readings.attribution(records())
    assert "relative error 1.0e-07" in r
    assert "k-means 0.200 (B4), 0.220 (B234), random map 0.450 on the same B234 classifier" in r
    assert "the best baseline is occlusion (0.260; CAM 0.300, Grad-CAM B3 0.280, occlusion 0.260, random 0.500)" in r
    assert "linear head: k-means 0.310 (B4), 0.330 (B234)" in r
    assert "Pointing game: k-means B234 0.90, B4 0.80, B4@B234-grid 0.82, CAM 0.85" in r
    assert ("Energy on the object: k-means B234 0.45, B4 0.40, CAM 0.42, Grad-CAM B3 0.58, occlusion 0.55, "
            "random 0.20 (the object's share of the image); Grad-CAM B3 puts the most on the object.") in r
    kmeans_most = readings.attribution(records({("B234", "kmeans", "energy_in_mask"): 0.60}))
    assert "; k-means B234 puts the most on the object." in kmeans_most
    cam = readings.attribution(records({("B4", "cam", "deletion_auc"): 0.1}))
    assert "the best baseline is CAM (0.100" in cam
    assert "random map 0.500" in readings.attribution(records({("B234", "random", "deletion_auc"): 0.5}))


def test_sanity_reading_names_every_map_and_follows_the_verdicts():
    r = readings.sanity(records())
    assert "carries 55 % of a k-means map's variance at B4, 55 % at B234" in r
    assert "rank correlation of map and shared part 0.93 (B4)" in r
    assert "**pass**: k-means B4, contrastive (0.10)" in r and "CAM (-0.30)" in r
    assert "**fail**: k-means B4 (0.79); k-means B234 (0.86)" in r and "fails at B4 and B234" in r
    ok = readings.sanity(records({("B4", "kmeans", "sanity"): 0.3, ("B234", "kmeans", "sanity"): 0.2}))
    assert "**fail**: no map" in ok and "the k-means maps pass at B4 and B234" in ok
    one_seed = readings.sanity(records({("B4", "kmeans", "sanity"): 0.3, ("B234", "kmeans", "sanity"): 0.2,
                                        ("B234", "kmeans", "sanity", 2): 0.6}))
    assert "k-means B234 (0.60)" in one_seed and "fails at B234" in one_seed


def test_contrastive_reading_each_branch():
    table, by_part = readings.contrastive_tables(records())
    assert table.loc["k-means B234", "mass"] == pytest.approx(0.30) and list(by_part.columns) == ["head", "tail",
                                                                                                  "marking"]
    r = readings.contrastive(records(), "parts")
    assert "deciding part: k-means B234 (0.300); k-means Δ 0.300 at B234, 0.250 at B4" in r
    assert "CAM difference 0.200; Grad-CAM B3 0.220; random map 0.080" in r
    assert "cover 0.070 of the pixels" in r and "most mass on the head, least on the tail" in r
    assert "No method puts even half" in r
    high = readings.contrastive(records({("B4", "cam", "contrastive_mass"): 0.6}), "parts")
    assert "deciding part: CAM (0.600)" in high and "The best method puts most of its positive mass" in high
    assert "CAM difference" not in high and "at B4; Grad-CAM B3 0.220; random map" in high  # the best, once
    grad = readings.contrastive(records({("B3", "gradcam", "contrastive_mass"): 0.4}), "parts")
    assert grad.text.count("Grad-CAM B3") == 1 and "at B4; CAM difference 0.200; random map" in grad
    none = readings.contrastive(records().query("~metric.str.startswith('contrastive')"), "pets")
    assert "On pets no test image's top two classes differ" in none


def test_k_cost_reading_each_branch():
    r = readings.k_cost(records())
    assert "-0.6 ± 0.2 at K = 1, -1.8 ± 0.3 at K = 2, -2.4 ± 0.2 at K = 4" in r
    assert "moves by 1.9 points across K" in r and "depends on K more than on the seed" in r
    assert "B4 chose K = 4, 4, 4 and B234 K = 1, 2, 3" in r
    flat = {K: [(0.97, 0.95 + 0.01 * (s - 1) + 0.001 * K) for s in range(3)] for K in (1, 2, 4)}
    assert "within that spread, K does not change it" in readings.k_cost(records(k_sweep=flat))
    one = readings.k_cost(records(seeds=(0,)))
    assert "with one seed, no spread to compare with" in one and "-0.5 at K = 1" in one


def test_fewer_data_reading_each_branch():
    r = readings.fewer_data(few_records(), 300, 1200)
    assert "Trained on 300 images instead of 1200" in r and "reaches 90.00 %, above the 80 % threshold" in r
    assert "88.00 % against 90.00 % for B4 (-2.00 points, 1 seed)" in r and "0.300 against 0.200" in r
    # accuracies in steps of 0.125 %: the printed difference is that of the printed (rounded) accuracies
    steps = readings.fewer_data(few_records(lin=0.88625, b4=0.8775, b234=0.87), 2000, 8000)
    assert "reaches 88.63 %" in steps and "87.00 % against 87.75 % for B4 (-0.75 points, 1 seed)" in steps
    half = readings.fewer_data(few_records(b4=0.96375, b234=0.9725), 300, 1200)
    assert "97.25 % against 96.38 % for B4 (+0.87 points" in half and "+0.88" not in half
    low = readings.fewer_data(few_records(lin=0.5), 300, 1200)
    assert "reaches only 50.00 %" in low and "has not learned" in low and not low.values["learned"]


def test_claims_reading_counts_each_part():
    table = pd.DataFrame({"part": [evaluate.CLAIM_PARTS[0]] * 3 + [evaluate.CLAIM_PARTS[1]] * 2,
                          "claim": ["a", "b", "c", "d", "e"],
                          "verdict": ["holds", "does not hold", "holds", "passes", "fails"]})
    r = readings.claims(table, "quick")
    assert "In the quick profile, of the paper's claims 2 of 3 hold by their rule; not held: “b” (does not hold)." in r
    assert "hypotheses, 1 of 2 hold by their rule; not held: “e” (fails)" in r and r.text.endswith("(fails).")
    table["verdict"] = "holds"
    assert "3 of 3 hold by their rule. Of the book" in readings.claims(table, "quick")


# ============================================================================= checks
CONTRADICTIONS = [
    (readings.check_levels, lambda: records().query("level != 'B4@B234-grid' or method != 'concepts'")),
    (readings.check_deletion_setup, lambda: records().replace({"note": {"blur, on k-means": "mean, on k-means"}})),
    (readings.check_deletion_setup, lambda: records().replace({"note": {"blur, on k-means": "blur, on the linear "
                                                                                             "head"}})),
    (readings.check_gradcam_identity, lambda: records({("B4", "cam", "gradcam_identity_error", 2): 1e-3})),
    (readings.check_ceiling, lambda: records({("B1234", "concepts", "ami_object"): 0.85})),
    (readings.check_head, lambda: records({("B4", "kmeans", "accuracy"): 0.95})),
    (readings.check_network, lambda: records({("B4", "linear", "accuracy", 2): 0.949})),
    (readings.check_prototypes, lambda: records({("B4", "kmeans", "prototype_nn_ratio"): 1.6})),
    (readings.check_prototypes, lambda: records({("B4", "linear-rescaled", "prototype_nn_ratio"): 1.2})),
    (readings.check_purity_spread, lambda: records({("B4", "concepts", "purity"): 0.70})),
    (readings.check_deletion_beats_random, lambda: records({("B234", "kmeans", "deletion_auc"): 0.46})),
    (readings.check_pointing_beats_random, lambda: records({("B234", "kmeans", "pointing_game"): 0.30})),
    (readings.check_contrastive_beats_random, lambda: records({("B234", "kmeans", "contrastive_mass"): 0.05})),
    (readings.check_k_chosen, lambda: records().query("~(metric == 'k_chosen' and seed == 2 and level == 'B234')")),
]


@pytest.mark.parametrize("check, contradicting", CONTRADICTIONS, ids=lambda x: getattr(x, "__name__", ""))
def test_each_check_holds_and_fails_on_a_contradicting_number(check, contradicting):
    good = check(records())
    assert good.ok, good.message
    bad = check(contradicting())
    assert not bad.ok and bad.message.startswith(bad.name)


def test_keypoint_checks_fail_on_contradictions():
    df = records()
    assert readings.check_keypoints(df, "part masks").ok
    assert not readings.check_keypoints(df, "guessed").ok
    assert not readings.check_keypoints(records({("B234", "random", "part_consistency"): 1.2}), "part masks").ok
    assert readings.check_keypoints(df.query("metric != 'keypoint_ami'"), None).ok  # nothing measured, nothing checked
    text = readings.keypoints(df, "parts", "part masks")
    assert readings.check_keypoint_text(df, text).ok
    low = records({(lv, "kmeans", "part_consistency"): 0.1 for lv in LEVELS})
    assert not readings.check_keypoint_text(low, text).ok  # the text says "above" where no level is


def test_text_checks_fail_on_a_reading_of_other_numbers():
    df = records()
    fid = readings.fidelity(df)
    assert readings.check_fidelity_text(df, fid).ok
    assert not readings.check_fidelity_text(records({(CONTROL, "concepts", "ami_object"): 0.30}), fid).ok
    assert not readings.check_fidelity_text(records({("pixel", "kmeans-rgb", "ami_object"): 0.2}), fid).ok
    k = readings.k_cost(df)
    flat = {K: [(0.97, 0.95 + 0.01 * (s - 1) + 0.001 * K) for s in range(3)] for K in (1, 2, 4)}
    assert readings.check_k_text(df, k).ok and not readings.check_k_text(records(k_sweep=flat), k).ok
    assert not readings.check_k_text(records(seeds=(0,)), k).ok
    few = readings.fewer_data(few_records(), 300, 1200)
    assert readings.check_fewer_data_text(few_records(), few).ok
    assert not readings.check_fewer_data_text(few_records(lin=0.5), few).ok


def test_sanity_checks_fail_on_contradictions():
    df = records()
    assert readings.check_sanity_coverage(df).ok
    assert not readings.check_sanity_coverage(records(sanity_n=16)).ok
    assert readings.check_sanity_coverage(records(sanity_n=16), smoke=True).ok
    assert not readings.check_sanity_coverage(df.query("~(metric == 'sanity_spearman' and seed == 1)")).ok
    text = readings.sanity(df)
    assert readings.check_sanity_reading(df, text).ok
    passing = records({("B4", "kmeans", "sanity"): 0.3, ("B234", "kmeans", "sanity"): 0.2})
    assert not readings.check_sanity_reading(passing, text).ok  # the advice says "fails at"; the maps pass
    named = readings.Reading(text.text.replace("CAM (", "CAM ["))
    assert not readings.check_sanity_reading(df, named).ok


def test_claims_check_fails_on_contradictions():
    df = records()
    table = evaluate.claims_table(df, fewer_data=few_records())
    assert readings.check_claims(table, df).ok
    flipped = table.replace({"verdict": {"fails": "passes"}})
    assert not readings.check_claims(flipped, df).ok
    one_part = table.assign(part=evaluate.CLAIM_PARTS[0])
    assert not readings.check_claims(one_part, df).ok
    no_rule = table.assign(rule="")
    assert not readings.check_claims(no_rule, df).ok


def test_chapter_checks_all_hold_on_consistent_records_and_name_what_fails():
    df = records()
    claims = evaluate.claims_table(df, fewer_data=few_records())
    kw = dict(claims_table=claims, fewer=few_records(), keypoint_source="part masks")
    checks = readings.chapter_checks(df, all_texts(df), smoke=False, **kw)
    assert len(checks) == 19 and all(c.ok for c in checks), [c.message for c in checks if not c.ok]
    assert len(readings.chapter_checks(df, all_texts(df), smoke=True, **kw)) == 8
    on_parts = readings.chapter_checks(df, all_texts(df), smoke=False, dataset="parts", **kw)
    assert len(on_parts) == 20 and all(c.ok for c in on_parts) and "network" in [c.name for c in on_parts]
    weak = records({("B4", "linear", "accuracy", 0): 0.93})  # a seed under NETWORK_ACCURACY
    failed = [c.name for c in readings.chapter_checks(weak, all_texts(weak), smoke=False, dataset="parts", **kw)
              if not c.ok]
    assert failed == ["network"]
    assert "network" not in [c.name for c in readings.chapter_checks(weak, all_texts(weak), smoke=False,
                                                                      dataset="cub", **kw)]
    bad = records({("B234", "kmeans", "deletion_auc"): 0.9})
    failed = [c.name for c in readings.chapter_checks(bad, all_texts(bad), smoke=False, **kw) if not c.ok]
    assert failed == ["deletion vs random"]
    with pytest.raises(ValueError, match="sanity"):
        readings.chapter_checks(df, {"fidelity": None}, smoke=False, **kw)


def test_block_levels_leave_out_logits_and_controls():
    assert readings.block_levels(records()) == ["B4", "B234", "B1234"]
    assert math.isnan(readings._mean(records(), "B34", "kmeans", "accuracy"))


# ============================================================================= tables the chapter shows
def test_attribution_tables_split_main_and_transfer_columns():
    df = records({("B4", "kmeans", "deletion_auc", 0): 0.10, ("B4", "kmeans", "deletion_auc", 1): 0.20,
                  ("B4", "kmeans", "deletion_auc", 2): 0.30})
    main, transfer = readings.attribution_tables(df)
    assert list(main.columns) == ["deletion_auc", "insertion_auc", "pointing_game", "energy_in_mask"]
    assert list(transfer.columns) == ["deletion_auc_transfer"]  # the records have no insertion transfer
    label = evaluate.method_label("B4", "kmeans")
    assert main.loc[label, "deletion_auc"] == "0.200\u202f±\u202f0.100"  # mean ± sd over the three seeds
    assert label in transfer.index and evaluate.method_label("B4", "cam") not in transfer.index
    assert main.index.name == "method"


def test_part_iou_table_and_part_shares():
    import torch

    df = records()
    df = pd.concat([df, pd.DataFrame([_row(0, "B4", "ceiling", "iou", 0.9, part="head")],
                                     columns=list(evaluate.COLUMNS))])
    df = pd.concat([df, pd.DataFrame([_row(0, "pixel", "kmeans-rgb", "iou", 0.2, part="head")],
                                     columns=list(evaluate.COLUMNS))])
    iou = readings.part_iou_table(df, ["background", "head", "tail", "marking"])
    assert list(iou.columns) == ["head"]  # only the main setting (no sweep rows), parts in the given order
    assert iou.loc[("kmeans-rgb", "pixel"), "head"] == pytest.approx(0.2)  # the colour baseline beside them
    assert iou.loc[("concepts", "B4"), "head"] == pytest.approx(0.5)
    assert iou.loc[("ceiling", "B4"), "head"] == pytest.approx(0.9)
    parts = torch.tensor([[[0, 0], [1, 2]]])
    assert readings.part_shares(parts, ["background", "body", "head", "tail"]) == \
        {"background": 0.5, "body": 0.25, "head": 0.25, "tail": 0.0}
