"""Tests of kmexplain_utils.evaluation.interventions: part interventions scored on the smoke profile."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from kmexplain_utils.config import get_profile
from kmexplain_utils.data.parts import PART_NAMES, intervene, make_parts
from kmexplain_utils.evaluation import interventions as iv
from kmexplain_utils.evaluation import run as evaluate
from kmexplain_utils.scores import KMeansScoreModel

N = 12


@pytest.fixture(scope="module")
def seed0():
    """The smoke data step, seed 0 at B4 and B234 (K fixed: no validation sweep), its interventions."""
    sh = evaluate.load_data(get_profile("smoke"))
    d = evaluate.prepare_seed(sh, 0, evaluate.evaluation_specs(["B4", "B234"]), k=2)
    rec = evaluate.Recorder("smoke")
    out = evaluate.measure_seed_interventions(sh, d, rec, n_images=N)
    return sh, d, pd.DataFrame(rec.rows, columns=list(evaluate.COLUMNS)), out


def test_records_are_named_and_cover_every_map_and_model(seed0):
    sh, d, df, out = seed0
    assert df["metric"].str.startswith("intervention_").all()
    assert set(df["metric"]) <= set(evaluate.METRICS) and set(iv.INTERVENTION_METRICS) <= set(df["metric"])
    maps = set(evaluate._attribution_set(d, sh.test.images_at(torch.arange(2))))  # the evaluation's map set
    maps |= {("B4", "concepts"), ("B234", "concepts")}
    scored = set(zip(*df.query("metric == 'intervention_single_deletion'")[["level", "method"]].T.values))
    assert scored == maps
    for metric in ("intervention_drop", "intervention_prob_drop", "intervention_flip"):
        rows = df[df["metric"] == metric]
        assert set(zip(rows["level"], rows["method"])) == {("B4", "linear"), ("B4", "kmeans"), ("B234", "kmeans")}
        assert set(rows["part"]) == {"body", "head", "tail", "legs", "marking"}
    swap = df[df["metric"] == "intervention_swap_follow"]
    assert set(swap["part"]) == set(iv.ATTRIBUTES)
    target = df[df["metric"] == "intervention_target_mass"]
    assert {("B4", "kmeans"), ("B234", "kmeans"), ("B4", "cam"), ("B3", "gradcam"), ("pixel", "random")} == set(
        zip(target["level"], target["method"]))
    # each map against the model it explains
    note = df.query("metric == 'intervention_single_deletion'").set_index(["level", "method"])["note"]
    assert note[("B234", "kmeans")].endswith("on k-means B234") and note[("B4@B234-grid", "kmeans")].endswith(
        "on k-means B4")
    assert note[("B4", "cam")].endswith("on the network") and note[("B234", "concepts")].endswith("k-means B234")
    rho = out["correlations"][("B234", "kmeans")]
    assert rho.shape == (N,) and np.nanmax(np.abs(rho)) <= 1


def test_the_ground_truth_drop_is_a_direct_recomputation(seed0):
    sh, d, _, out = seed0
    head, i = PART_NAMES.index("head"), 3
    x = sh.test.images_at([i])
    x_without, parts_without, _ = intervene(sh.test, [i], remove="head")
    assert not (parts_without == head).any()
    with torch.no_grad():
        logits, logits_without = d.model(x)[0].double(), d.model(x_without)[0].double()
        c = int(logits.argmax())
        assert out["drops"]["network"][i, head].item() == pytest.approx(float(logits[c] - logits_without[c]), abs=1e-5)
        km = KMeansScoreModel(d.model, d.lfs["B234"], d.clfs["B234"])
        s, s_without = km(x)[0].double(), km(x_without)[0].double()
        c = int(s.argmax())
        assert out["drops"]["B234"][i, head].item() == pytest.approx(float(s[c] - s_without[c]), rel=1e-5, abs=1e-4)
    # and by intervention_effects, the generic helper
    eff = iv.intervention_effects(d.model, x, {head: x_without}, torch.tensor([int(logits.argmax())]), len(PART_NAMES))
    assert eff[0, head].item() == pytest.approx(out["drops"]["network"][i, head].item(), abs=1e-5)


def test_a_map_that_is_the_drop_scores_one_and_its_negation_minus_one(seed0):
    """A map whose mass on each part is the measured drop: correlation 1; the negated map: -1."""
    sh, d, _, out = seed0
    sc, drops = out["scenes"], out["drops"]["network"].clone()
    body, mark = PART_NAMES.index("body"), PART_NAMES.index("marking")
    oracle = torch.zeros(sc.parts.shape, dtype=torch.float64)
    for part in sc.removed:
        k = PART_NAMES.index(part)
        value = drops[:, k] - (torch.nan_to_num(drops[:, mark]) if k == body else 0.0)  # body's mass holds the marking
        where = sc.parts == k
        area = where.flatten(1).sum(1).clamp_min(1)
        oracle += torch.where(where, torch.nan_to_num(value / area)[:, None, None], 0.0)
    pred = d.model(sc.images).argmax(1)
    maps = {("pixel", "oracle"): (oracle.float(), pred, None), ("pixel", "anti-oracle"): (-oracle.float(), pred, None)}
    rec = evaluate.Recorder("smoke")
    res = iv.measure_interventions(sh, d, rec, explain=lambda x: maps, maps=maps, n_images=N)
    up, down = res["correlations"][("pixel", "oracle")], res["correlations"][("pixel", "anti-oracle")]
    assert np.isfinite(up).sum() >= N // 2
    np.testing.assert_allclose(up[np.isfinite(up)], 1.0, atol=1e-9)
    np.testing.assert_allclose(down[np.isfinite(down)], -1.0, atol=1e-9)
    assert iv.single_deletion(drops, drops)[np.isfinite(up)].tolist() == pytest.approx([1.0] * int(np.isfinite(up).sum()))


def test_rendered_interventions_change_only_the_footprint():
    ds = make_parts(20, image_size=32, seed=3, split="test")
    sc = iv.render_interventions(ds, 20)
    assert torch.equal(sc.images, ds.images) and torch.equal(sc.parts, ds.parts)
    for part in sc.removed:
        k = PART_NAMES.index(part)
        assert not (sc.without_parts[part] == k).any()
        outside = ~sc.footprints[part]
        assert torch.equal(sc.without[part].permute(1, 0, 2, 3)[:, outside], sc.images.permute(1, 0, 2, 3)[:, outside])
        assert torch.equal(sc.without_parts[part][outside], sc.parts[outside])
    for attr in iv.ATTRIBUTES:  # every label changes, in the attribute's bits only
        assert (sc.swapped_labels[attr] != sc.labels).all()
    # the distractors lie on the background: the object is untouched
    assert torch.equal(sc.no_distractor_parts, sc.parts)
    assert not (sc.distractor_pixels & (sc.parts > 0)).any() and sc.distractor_pixels.any()
    assert iv.render_interventions(ds, 20) is sc  # rendered once per process


def test_bad_input_errors_name_the_fix(seed0):
    sh, d, _, _ = seed0
    with pytest.raises(TypeError, match="generated split"):
        iv.render_interventions(sh.test.subset([0, 1]), 2)
    with pytest.raises(ValueError, match="n must be >= 1"):
        iv.render_interventions(sh.test, 0)
    rec = evaluate.Recorder("smoke")
    with pytest.raises(ValueError, match="exceeds"):
        iv.measure_interventions(sh, d, rec, explain=lambda x: {}, n_images=len(sh.test) + 1)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        iv.part_masses(torch.zeros(2, 4, 4), torch.zeros(2, 4, 5, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="target must have shape"):
        iv.intervention_effects(d.model, torch.zeros(2, 3, 8, 8), {}, torch.zeros(3), 6)
    with pytest.raises(ValueError, match="same shape|both be"):
        iv.single_deletion(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="cannot be re-rendered"):
        evaluate.run_evaluation("paper-smoke", include_interventions=True)
    assert not rec.rows
