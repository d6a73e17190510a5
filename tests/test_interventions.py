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
    same = iv.single_deletion(drops, drops)[np.isfinite(up)]
    assert same.tolist() == pytest.approx([1.0] * len(same))


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


# ---------------------------------------------------------------------------- readings from the records
def _records(swap=(0.95, 0.9, 0.85), flips=None, background=0.02, rho=None, seeds=(0, 1)):
    """Fake intervention records of the network (and maps) on ``seeds``."""
    flips = flips or {"head": 0.6, "tail": 0.5, "marking": 0.4, "legs": 0.01, "body": 0.7}
    rho = rho or {("B234", "kmeans"): 0.8, ("B4", "cam"): 0.5, ("pixel", "random"): 0.6}
    rows = []
    for s in seeds:
        for a, v in zip(iv.ATTRIBUTES, swap):
            rows.append(dict(seed=s, level="B4", method="linear", metric="intervention_swap_follow", value=v, part=a))
        for p, v in flips.items():
            rows.append(dict(seed=s, level="B4", method="linear", metric="intervention_flip", value=v, part=p))
        rows.append(dict(seed=s, level="B4", method="linear", metric="intervention_background_flip", value=background,
                         part=None))
        for (lv, m), v in rho.items():
            rows.append(dict(seed=s, level=lv, method=m, metric="intervention_single_deletion", value=v + 0.02 * s,
                             part=None))
            rows.append(dict(seed=s, level=lv, method=m, metric="intervention_background_map_spearman", value=0.95,
                             part=None))
    return pd.DataFrame(rows)


def test_use_reading_follows_the_swaps_and_names_a_shortcut():
    assert "uses all three deciding parts" in iv.use_reading(_records())
    assert "no shortcut" in iv.use_reading(_records())
    contradicting = iv.use_reading(_records(swap=(0.95, 0.3, 0.9)))  # the tail swap is not followed
    assert "does not follow every deciding part" in contradicting and "30 % (tail)" in contradicting
    legs = iv.use_reading(_records(flips={"head": 0.6, "tail": 0.5, "marking": 0.4, "legs": 0.45, "body": 0.7}))
    assert "Removing the legs" in legs and "shortcut" in legs and "not part of the class rule" in legs
    assert "70 % (body, with the marking painted on it)" in iv.use_reading(_records())
    assert "the distractors" in iv.use_reading(_records(background=0.5)).split("Removing")[-1]


def test_single_deletion_reading_places_every_map_against_the_random_map():
    text = iv.single_deletion_reading(_records())
    assert "k-means B234 (ρ = 0.81)" in text and "random map reaches ρ = 0.61" in text
    assert "1 of 2 maps lie above it" in text and "Not above it at all: CAM" in text
    flipped = iv.single_deletion_reading(_records(rho={("B234", "kmeans"): 0.2, ("B4", "cam"): 0.9,
                                                       ("pixel", "random"): 0.6}))
    assert "best map by single deletion is CAM" in flipped and "Not above it at all: k-means B234" in flipped
    assert "one seed" in iv.single_deletion_reading(_records(seeds=(0,)))


def test_single_deletion_reading_with_one_seed_weighs_the_gap_against_the_images_noise():
    rho = {("B234", "kmeans"): 0.70, ("B4", "cam"): 0.59, ("B3", "gradcam"): 0.50, ("pixel", "random"): 0.56}
    df = _records(rho=rho, seeds=(0,)).assign(n=80)
    sd = pd.DataFrame([dict(seed=0, level=lv, method=m, metric="intervention_single_deletion_sd", value=0.28,
                            part=None, n=80) for lv, m in rho])
    text = iv.single_deletion_reading(pd.concat([df, sd], ignore_index=True))
    # margin 2 * 0.28 * sqrt(2 / 80) = 0.089: 0.70 - 0.56 clears it, 0.59 - 0.56 does not
    assert "1 of 3 maps lie above it by more than 2 standard errors" in text and "up to 80 images" in text
    assert "sd over images): k-means B234." in text
    assert "within that noise: CAM." in text and "Not above it at all: Grad-CAM B3" in text
    sd["value"] = 0.05  # margin 0.016: both clear it
    text = iv.single_deletion_reading(pd.concat([df, sd], ignore_index=True))
    assert "2 of 3 maps lie above it" in text and "within that noise" not in text


def test_background_reading_and_tables():
    assert "every map keeps" in iv.background_reading(_records()).lower()
    df = _records()
    df.loc[(df["metric"] == "intervention_background_map_spearman") & (df["method"] == "cam"), "value"] = 0.5
    assert "CAM (0.50)" in iv.background_reading(df)
    use = iv.intervention_table(_records(), "use")
    assert use.loc["network (linear head)", "swapped: tail"] == "90 ± 0"
    maps = iv.intervention_table(_records(), "maps")
    assert maps.loc["k-means B234", "single deletion ρ"] == "0.81 ± 0.01"
    with pytest.raises(ValueError, match="kind"):
        iv.intervention_table(_records(), "nope")
    with pytest.raises(ValueError, match="no intervention"):
        iv.intervention_table(_records().assign(metric="accuracy"))


def test_showcase_reading_says_whether_the_distractors_explain_the_error(seed0):
    sh, _, _, out = seed0
    names = sh.test.class_names
    i, true = 0, int(out["scenes"].labels[0])
    wrong = (true + 1) % len(names)

    def with_predictions(before, after):
        pred = {k: dict(v) for k, v in out["predictions"].items()}
        pred["network"]["original"] = pred["network"]["original"].clone()
        pred["network"]["no distractors"] = pred["network"]["no distractors"].clone()
        pred["network"]["original"][i], pred["network"]["no distractors"][i] = before, after
        return iv.showcase_reading({**out, "predictions": pred}, i, names)

    assert "explain the error" in with_predictions(wrong, true)
    assert "do not explain this error" in with_predictions(wrong, wrong)
    assert "no error for the distractors to explain" in with_predictions(true, true)
    assert with_predictions(true, true).startswith(f"Image {i} is a {names[true]}. The network")


def test_plots_return_figures(seed0):
    import matplotlib

    matplotlib.use("Agg")
    sh, _, df, out = seed0
    assert iv.plot_interventions(df).axes
    fig = iv.plot_intervention(out, 0, "head", [("B234", "kmeans"), ("B4", "cam")], sh.test.class_names)
    assert len(fig.axes) == 6
    assert len(iv.plot_intervention(out, 0, "distractors", [("B4", "kmeans")]).axes) == 4
    with pytest.raises(ValueError, match="variant"):
        iv.plot_intervention(out, 0, "wings", [("B4", "kmeans")])
    with pytest.raises(ValueError, match="ncols"):
        iv.plot_intervention(out, 0, "head", [("B4", "kmeans")], ncols=0)
    with pytest.raises(ValueError, match="no maps"):
        iv.plot_intervention(out, 0, "head", [("B9", "kmeans")])


def test_plot_intervention_wraps_before_after_pairs_into_rows_of_three(seed0):
    import matplotlib

    matplotlib.use("Agg")
    sh, _, _, out = seed0
    methods = sorted(out["maps"])[:4]  # the image and four maps: five pairs, two pairs of rows
    fig = iv.plot_intervention(out, 0, "distractors", methods, sh.test.class_names)
    axes = fig.axes
    assert len(axes) == 4 * 3 and sum(ax.get_visible() for ax in axes) == 2 * 5
    grid = [axes[r * 3:(r + 1) * 3] for r in range(4)]
    assert not grid[2][2].get_visible() and not grid[3][2].get_visible()  # one unused slot
    assert grid[0][0].get_title().startswith("original") and grid[1][0].get_title().startswith("without")
    for (top, bottom), m in zip([(grid[0][1], grid[1][1]), (grid[0][2], grid[1][2]),
                                 (grid[2][0], grid[3][0]), (grid[2][1], grid[3][1])], methods):
        assert top.get_title() == iv._label(*m) and bottom.get_title().startswith("after")
        assert top.get_position().x0 == pytest.approx(bottom.get_position().x0)
        assert top.get_position().y0 > bottom.get_position().y0
    fig.canvas.draw()
    widths = [ax.get_window_extent().width for ax in axes if ax.get_visible()]
    assert max(widths) - min(widths) < 1  # every panel the same width
    wide = iv.plot_intervention(out, 0, "head", methods, ncols=5)
    assert len(wide.axes) == 2 * 5 and all(ax.get_visible() for ax in wide.axes)
    assert "positive mass" in wide.axes[5 + 1].get_title()  # row 2, the first map: its share on the head


def test_a_network_in_training_mode_is_left_as_it_was_found():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(4, 2)).train()
    net[4].eval()  # mixed flags
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.rand(4, 3, 8, 8)
    a = iv.scores_under(net, x, batch_size=3)
    torch.testing.assert_close(a, iv.scores_under(net, x))  # eval mode: batch-independent
    assert [m.training for m in net.modules()] == [True, True, True, True, True, False, True]
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # running statistics untouched
    eff = iv.intervention_effects(net, x, {1: x}, torch.zeros(4), 3)
    assert torch.equal(eff[:, 1], torch.zeros(4, dtype=torch.float64)) and eff[:, [0, 2]].isnan().all()


def test_target_reading_names_the_map_that_follows_the_flipping_part():
    rows = [dict(seed=0, level=lv, method=m, metric="intervention_target_top", value=v, n=40, part=None)
            for (lv, m), v in {("B234", "kmeans"): 0.5, ("B4", "cam"): 0.3, ("pixel", "random"): 0.02}.items()]
    text = iv.target_reading(pd.DataFrame(rows))
    assert "50 % of the time (k-means B234)" in text and "k-means B234 follows the flipping part most often" in text
    assert "random map does so 2 %" in text
    rows[1]["value"] = 0.9  # a contradicting number: CAM now leads
    assert "CAM follows the flipping part most often" in iv.target_reading(pd.DataFrame(rows))
    assert "not measured" in iv.target_reading(pd.DataFrame(rows).assign(value=float("nan")))


def test_attribute_moves_reading_counts_each_direction():
    """The tail decision before and after each removal, counted per value read before."""
    names = ["warm-pointed-striped", "warm-round-striped", "cool-pointed-spotted", "cool-round-spotted"]
    pred = {"original": torch.tensor([0, 0, 1, 1, 2]),  # pointed, pointed, round, round, pointed
            "-head": torch.tensor([0, 1, 0, 1, 2]),  # one pointed -> round, one round -> pointed
            "-tail": torch.tensor([2, 0, 0, 2, 2])}  # the two rounds -> pointed
    text = iv.attribute_moves_reading(pred, names, "tail")
    assert text == ("The tail decision changes, without the head, on 1 of the 3 read as pointed-tailed and 1 of "
                    "the 2 read as round-tailed; without the tail itself, on 0 of the 3 read as pointed-tailed "
                    "and 2 of the 2 read as round-tailed.")
    marking = iv.attribute_moves_reading(pred, names, "marking", removed=("head",))
    assert marking == ("The marking decision changes, without the head, on 0 of the 1 read as spotted and "
                       "0 of the 4 read as striped.")  # removing the head moved only the tail
