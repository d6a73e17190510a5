"""Tests of kmexplain_utils.evaluation.run: the command line, the record schema, tables and figures."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from kmexplain_utils.evaluation import run as evaluate

LEVELS = ["logits", "B4", "B234"]


@pytest.fixture(scope="module")
def cli_result(tmp_path_factory):
    """One smoke evaluation through the command line (one seed, three levels, with sweeps)."""
    out = tmp_path_factory.mktemp("eval") / "r.json"
    rc = evaluate.main([
        "--profile", "smoke", "--seeds", "1", "--levels", ",".join(LEVELS), "--steps", "4", "--out", str(out),
    ])
    assert rc == 0
    return json.loads(out.read_text())


def test_json_schema_and_every_level_and_metric(cli_result):
    r = cli_result
    assert r["schema"] == evaluate.SCHEMA
    assert r["columns"] == list(evaluate.COLUMNS)
    assert r["profile"]["name"] == "smoke" and r["seeds"] == [0]
    for rec in r["records"]:
        assert list(rec) == list(evaluate.COLUMNS)
        assert rec["metric"] in evaluate.METRICS
        assert rec["value"] is None or isinstance(rec["value"], float)
    df = pd.DataFrame(r["records"])
    main = df[df["sweep"].isna()]

    def present(level, method, metric):
        return ((main["level"] == level) & (main["method"] == method) & (main["metric"] == metric)).sum() == 1

    assert present("B4", "linear", "accuracy")
    for lv in LEVELS:
        assert present(lv, "kmeans", "accuracy") and present(lv, "kmeans", "agreement")
    for method in ("linear", "linear-rescaled", "kmeans"):
        assert present("B4", method, "prototype_nn_ratio")
    concept_metrics = ["nmi", "purity", "nmi_object", "purity_object", "miou", "miou_floor", "parts_without_concept"]
    for lv in ["B4", "B234", "B4@B234-grid"]:  # the resolution control sits beside B234
        for m in concept_metrics:
            assert present(lv, "concepts", m), (lv, m)
    assert not (main["level"] == "B4@B4-grid").any()
    attribution = ["deletion_auc", "insertion_auc", "pointing_game", "energy_in_mask"]
    for lv, method in [("B4", "kmeans"), ("B234", "kmeans"), ("B4@B234-grid", "kmeans"), ("B4", "cam"),
                       ("B3", "gradcam"), ("pixel", "occlusion"), ("pixel", "random")]:
        for m in attribution:
            assert present(lv, method, m), (lv, method, m)
    # the deletion baseline is stated beside the AUCs, and the model each map is scored on
    dele = main[main["metric"] == "deletion_auc"]
    assert dele["note"].str.startswith("blur").all()
    assert (dele[dele["method"] == "kmeans"]["note"].str.contains("on k-means")).all()
    assert (dele[dele["method"] == "cam"]["note"].str.endswith("on linear head")).all()
    for lv in ("B4", "B234"):  # the transfer column: the k-means maps on the linear head
        assert present(lv, "kmeans", "deletion_auc_transfer") and present(lv, "kmeans", "insertion_auc_transfer")
        assert present(lv, "kmeans-cell", "pointing_game") and present(lv, "concepts-cell", "nmi_object")
        assert present(lv, "ceiling", "ami_object") and present(lv, "nmf", "ami_object")
        assert present(lv, "concepts", "ami_object")
    assert present("B234", "random", "deletion_auc")  # the random map on the k-means classifier too
    for method in ("kmeans-rgb", "kmeans-rgbxy"):
        assert present("pixel", method, "miou")
    # Grad-CAM at B4 is ReLU(CAM - b) / |P|: recorded as an identity, not scored as a baseline
    err = main[main["metric"] == "gradcam_identity_error"]["value"]
    assert len(err) == 1 and float(err.iloc[0]) < 1e-4
    assert not present("B4", "gradcam", "deletion_auc")
    # sanity check: every method at every stage; contrastive scores for every method
    sanity = df[df["metric"] == "sanity_spearman"]
    km_maps = {(lv, m) for lv in ("B4", "B234") for m in ("kmeans", "contrastive", "class-specific", "shared")}
    assert set(zip(sanity["level"], sanity["method"])) == km_maps | {("B4", "cam"), ("B3", "gradcam"),
                                                                     ("pixel", "occlusion")}
    assert list(dict.fromkeys(sanity["note"])) == ["head", "B4", "B3"] and sanity["param"].min() == 1
    assert (sanity["n"] > 2).all()
    shares = df[df["metric"].isin(["sanity_shared_share", "sanity_specific_share"])]
    assert set(shares["level"]) == {"B4", "B234"} and (shares["param"] == 0).all()
    contrast = main[(main["metric"] == "contrastive_mass") & main["part"].isna()]
    assert set(zip(contrast["level"], contrast["method"])) == {("B4", "kmeans"), ("B234", "kmeans"), ("B4", "cam"),
                                                               ("B3", "gradcam"), ("pixel", "random")}
    # sweeps: every k of the profile and every K' of the profile
    acc_sweep = df[(df["sweep"] == "k_per_class") & (df["metric"] == "accuracy")]
    assert sorted(acc_sweep[acc_sweep["level"] == "B4"]["param"]) == [1, 2]
    # K chosen on validation data at every level, from the validation accuracies recorded beside it
    val = df[(df["metric"] == "val_accuracy") & (df["level"] == "B234")]
    chosen = main[(main["metric"] == "k_chosen") & (main["level"] == "B234")]["value"].iloc[0]
    assert sorted(val["param"]) == [1, 2] and chosen == val.loc[val["value"].idxmax(), "param"]
    acc_b234 = main[(main["metric"] == "accuracy") & (main["level"] == "B234") & (main["method"] == "kmeans")]
    assert acc_b234["param"].iloc[0] == chosen
    con_sweep = df[(df["sweep"] == "n_concepts") & (df["metric"] == "miou")]
    assert sorted(con_sweep[con_sweep["level"] == "B234"]["param"]) == [3, 4]
    per_class = df[(df["sweep"] == "per_class") & (df["metric"] == "miou")]
    assert set(per_class["level"]) == {"B234"} and set(per_class["method"]) == {"concepts-per-class"}
    # keypoints (pseudo-keypoints from the generated part masks): concepts at keypoints, part consistency
    for lv in ["B4", "B234", "B4@B234-grid"]:
        for m in ("keypoint_nmi", "keypoint_ami", "keypoint_purity"):
            assert present(lv, "concepts", m), (lv, m)
    for lv in ["B4", "B234"]:
        assert present(lv, "kmeans", "part_consistency") and present(lv, "random", "part_consistency")
    kp = main[main["metric"].str.startswith("keypoint_") | (main["metric"] == "part_consistency")]
    assert kp["note"].str.startswith("keypoints from part masks").all()
    assert not (kp["level"] == "logits").any()
    # part interventions (the command line runs them): every map's single deletion, on every model
    sd = main[main["metric"] == "intervention_single_deletion"]
    assert {("B4", "kmeans"), ("B234", "kmeans"), ("B4@B234-grid", "kmeans"), ("B234", "concepts"), ("B4", "cam"),
            ("B3", "gradcam"), ("pixel", "occlusion"), ("pixel", "random")} <= set(zip(sd["level"], sd["method"]))
    drops = main[main["metric"] == "intervention_drop"]
    assert {("B4", "linear"), ("B4", "kmeans"), ("B234", "kmeans")} <= set(zip(drops["level"], drops["method"]))
    # values in range
    bounded = df[df["metric"].isin(["accuracy", "agreement", "nmi", "purity", "nmi_object", "purity_object", "miou",
                                    "miou_floor", "iou", "pointing_game", "energy_in_mask",
                                    "contrastive_mass", "contrastive_peak", "keypoint_nmi", "keypoint_purity",
                                    "part_consistency"])]["value"].dropna()
    assert ((bounded >= 0) & (bounded <= 1 + 1e-9)).all()
    # curves: S + 1 points per (level, method, curve)
    curves = pd.DataFrame(r["curves"])
    assert (curves.groupby(["level", "method", "curve"]).size() == 5).all()
    assert set(curves["curve"]) == {"deletion", "insertion"}
    assert r["info"]["deletion_baseline"].startswith("blur")


def test_examples_are_the_first_test_image_of_each_class():
    from kmexplain_utils.data import load_dataset
    from kmexplain_utils.chapters.training import DATA_SEED

    df = evaluate.run_evaluation("smoke", [0], levels=["B4"], include_sweeps=False, include_extras=False,
                                 deletion_steps=2)
    ex = df.attrs["examples"]
    test = load_dataset("parts", "test", "smoke", seed=DATA_SEED)
    first = [int((test.labels == c).nonzero()[0]) for c in range(test.n_classes)][:8]
    assert ex["index"].tolist() == first
    np.testing.assert_array_equal(ex["images"], test.images[first].numpy())
    assert set(ex["attributions"]) == {"B4/kmeans", "B4/cam", "B3/gradcam", "pixel/occlusion", "pixel/random"}
    assert set(ex["concept_parts"]) == {"B4"} and ex["concept_parts"]["B4"].max() < len(ex["part_names"])
    assert all(m.shape == ex["parts"].shape for m in ex["attributions"].values())
    assert set(ex["concept_maps"]) == {"B4"}


def test_linear_accuracy_matches_training_accuracy(cli_result):
    from kmexplain_utils.data import load_dataset
    from kmexplain_utils.chapters.training import DATA_SEED, accuracy, get_trained_model

    model, _ = get_trained_model("smoke", 0, device="cpu")  # cached by the fixture
    test = load_dataset("parts", "test", "smoke", seed=DATA_SEED)
    rec = [r for r in cli_result["records"] if r["method"] == "linear" and r["metric"] == "accuracy"]
    # the smoke network is barely trained (about 30 % on 8 classes): its logits are near ties, so a
    # different batching or thread count flips a few of the 160 test images; a wrong split, subset or
    # head would be off by far more than 5 points
    assert rec[0]["value"] == pytest.approx(accuracy(model, test), abs=0.05)
    assert rec[0]["n"] == len(test)
    # the floor is background IoU / number of parts present
    floor = next(r for r in cli_result["records"] if r["metric"] == "miou_floor")["value"]
    bg = float((test.parts == 0).double().mean())
    assert floor == pytest.approx(bg / len(torch.unique(test.parts)))


def test_specs_add_resolution_controls_and_cell_twins():
    names = [s.name for s in evaluate._specs(["logits", "B4", "B34", "B234"], cell=False)]
    assert names == ["logits", "B4", "B34", "B234", "B4@B234-grid"]  # the control beside B234
    assert [s.name for s in evaluate._specs(["B4", "B34"], cell=False)] == ["B4", "B34", "B4@B34-grid"]
    cell = [s for s in evaluate._specs(["logits", "B4", "B234"]) if s.registration == "cell"]
    assert [(s.name, s.label) for s in cell] == [("B4|cell", "B4"), ("B234|cell", "B234")]
    ctrl = next(s for s in evaluate._specs(["B234"]) if s.name == "B4@B234-grid")
    assert (ctrl.level, ctrl.grid, ctrl.classify, ctrl.concepts) == ("B4", "B234", False, True)


def _fake_records() -> pd.DataFrame:
    rows = []
    for seed, acc in [(0, 0.9), (1, 0.8)]:
        rows.append({"profile": "p", "seed": seed, "level": "B4", "method": "linear", "metric": "accuracy", "value": acc, "n": 10,
                         "sweep": None, "param": None, "part": None, "note": None})
        rows.append({"profile": "p", "seed": seed, "level": "B4", "method": "kmeans", "metric": "accuracy", "value": acc - 0.1,
                         "n": 10, "sweep": None, "param": 2, "part": None, "note": None})
        rows.append({"profile": "p", "seed": seed, "level": "B4", "method": "concepts", "metric": "nmi_object", "value": 0.2,
                         "n": 10, "sweep": None, "param": 4, "part": None, "note": None})
        rows.append({"profile": "p", "seed": seed, "level": "B4", "method": "kmeans", "metric": "accuracy", "value": 0.5,
                         "n": 10, "sweep": "k_per_class", "param": 1, "part": None, "note": None})
    df = pd.DataFrame(rows, columns=list(evaluate.COLUMNS))
    df.attrs["info"] = {"profile": {"name": "p"}, "seeds": [0, 1]}
    df.attrs["curves"] = pd.DataFrame(
        [{"profile": "p", "seed": 0, "level": "B4", "method": "cam", "curve": c, "fraction": f, "value": 1 - f}
         for c in ("deletion", "insertion") for f in (0.0, 0.5, 1.0)]
    )
    return df


def test_summary_table_mean_and_std_without_sweeps():
    table = evaluate.summary_table(_fake_records(), digits=2)
    nb = "\u202f"  # narrow no-break space: a browser cannot wrap "0.85 ± 0.07"
    assert table.loc[("B4", "linear"), "accuracy"] == f"0.85{nb}±{nb}0.07"
    assert table.loc[("B4", "kmeans"), "accuracy"] == f"0.75{nb}±{nb}0.07"  # the sweep row (0.5) is left out
    assert table.loc[("B4", "concepts"), "nmi_object"] == f"0.20{nb}±{nb}0.00"
    assert list(table.columns) == ["accuracy", "nmi_object"]
    assert not any(" " in cell or "\n" in cell for cell in table.to_numpy().ravel())  # no break opportunity
    one_seed = evaluate.summary_table(_fake_records().query("seed == 0"), ["nmi_object", "accuracy"])
    assert list(one_seed.columns) == ["nmi_object", "accuracy"]
    assert one_seed.loc[("B4", "linear"), "accuracy"] == "0.900"  # one seed: the mean alone


def test_summary_table_keeps_parts_and_stages_apart():
    """A per-part contrastive record and per-stage sanity records are not pooled with the overall record."""
    rows = []
    for seed, overall in ((0, 0.10), (1, 0.20)):
        base = dict(profile="p", seed=seed, level="B4", method="kmeans", n=10, sweep=None, param=None)
        rows.append({**base, "metric": "contrastive_mass", "value": overall, "part": None, "note": None})
        rows.append({**base, "metric": "contrastive_mass", "value": 0.9, "part": "head", "note": None})
        for step, (stage, v) in enumerate((("head", 0.95), ("B4", 0.30), ("B3", 0.05)), 1):
            rows.append({**base, "metric": "sanity_spearman", "value": v, "param": step, "part": None,
                         "note": stage})
        rows.append({**base, "metric": "accuracy", "value": 0.9, "part": None, "note": None})
    df = pd.DataFrame(rows, columns=list(evaluate.COLUMNS))
    table = evaluate.summary_table(df, digits=2)
    nb = "\u202f"
    assert table.loc[("B4", "kmeans"), "contrastive_mass"] == f"0.15{nb}±{nb}0.07"  # the overall records only
    assert "sanity_spearman" not in table.columns                                  # per stage: sanity_table
    assert table.loc[("B4", "kmeans"), "accuracy"] == f"0.90{nb}±{nb}0.00"
    assert "sanity_spearman" not in evaluate.summary_table(df, ["accuracy", "sanity_spearman"]).columns


def test_format_mean_std_is_compact_and_unbreakable():
    assert evaluate.format_mean_std(0.0712, 0.0071) == "0.071\u202f±\u202f0.007"
    assert evaluate.format_mean_std(0.0712, 0.0071, digits=2) == "0.07\u202f±\u202f0.01"
    assert evaluate.format_mean_std(0.5) == evaluate.format_mean_std(0.5, float("nan")) == "0.500"
    assert evaluate.format_mean_std(float("nan"), 0.1) == ""


def test_to_json_turns_nan_into_null(tmp_path):
    df = _fake_records()
    df.loc[0, "value"] = float("nan")
    payload = evaluate.to_json(df, tmp_path / "x.json")
    assert payload["records"][0]["value"] is None
    back = json.loads((tmp_path / "x.json").read_text())
    assert back["records"][1]["value"] == pytest.approx(0.9 - 0.1)
    assert back["curves"][0]["curve"] == "deletion"
    assert not any(isinstance(v, float) and math.isnan(v) for r in back["records"] for v in r.values())


def test_plots_return_figures():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = _fake_records()
    for fig in (evaluate.plot_tradeoff(df), evaluate.plot_curves(df.attrs["curves"], curve="insertion"),
                evaluate.plot_sweeps(df)):
        assert isinstance(fig, matplotlib.figure.Figure)
        plt.close(fig)
    with pytest.raises(ValueError, match="deletion"):
        evaluate.plot_curves(df.attrs["curves"], curve="both")


def test_ground_truth_falls_back_to_object_masks():
    from kmexplain_utils.data.base import ImageSet

    objects = torch.zeros(2, 4, 4, dtype=torch.bool)
    objects[:, 1:3, 1:3] = True
    ds = ImageSet(torch.rand(2, 3, 4, 4), torch.tensor([0, 1]), objects=objects)
    parts, obj, names = evaluate._ground_truth(ds, torch.arange(2))
    assert names == ["background", "object"]
    assert torch.equal(parts, objects.long()) and torch.equal(obj, objects)
    with pytest.raises(ValueError, match="neither part maps nor object masks"):
        evaluate._ground_truth(ImageSet(torch.rand(2, 3, 4, 4), torch.tensor([0, 1])), torch.arange(2))


def test_keypoints_of_the_test_set_come_from_its_keypoints_else_its_part_masks():
    from kmexplain_utils.data.base import ImageSet

    parts = torch.zeros(2, 4, 4, dtype=torch.long)
    parts[:, :2], parts[:, 2:] = 1, 2
    names = ["background", "head", "body"]
    kp, source = evaluate._test_keypoints(ImageSet(torch.rand(2, 3, 4, 4), torch.tensor([0, 1]), parts=parts,
                                                   part_names=names), parts, names)
    assert source == "part masks" and [k[:, 2].tolist() for k in kp] == [[1.0, 2.0], [1.0, 2.0]]
    own = [np.array([[0.5, 0.5, 2.0]]), np.zeros((0, 3))]
    ds = ImageSet(torch.rand(2, 3, 4, 4), torch.tensor([0, 1]), parts=parts, part_names=names, keypoints=own)
    kp, source = evaluate._test_keypoints(ds, parts, names)
    assert source == "keypoints" and kp[0].tolist() == [[0.5, 0.5, 2.0]] and kp[1].shape == (0, 3)
    objects = parts > 0
    assert evaluate._test_keypoints(ImageSet(torch.rand(2, 3, 4, 4), torch.tensor([0, 1]), objects=objects),
                                    objects.long(), ["background", "object"]) == (None, None)


def _square_task(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise images with a bright square in the left (class 0) or right (class 1) half."""
    x = 0.3 * torch.rand(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    for i in range(n):
        r = int(torch.randint(2, 22, (1,), generator=g))
        c = int(torch.randint(2, 8, (1,), generator=g)) + 16 * int(y[i])
        x[i, :, r:r + 8, c:c + 8] = 1.0
    return x, y


def test_kmeans_maps_beat_a_random_map_on_deletion_on_a_model_that_learned():
    """A direction, not a restatement: on a network that learned, k-means maps delete faster than chance."""
    from kmexplain_utils.evaluation import metrics
    from kmexplain_utils.scores import KMeansScoreModel
    from kmexplain_utils.classifier import KMeansClassifier
    from kmexplain_utils.features import LevelFeatures
    from kmexplain_utils.chapters.models import TinyResNet

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    x, y = _square_task(512, g)
    model = TinyResNet(n_classes=2, width=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(80):
        idx = torch.randint(0, 512, (64,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x_test, y_test = _square_task(64, g)
    with torch.no_grad():
        assert float((model(x_test).argmax(1) == y_test).float().mean()) >= 0.9  # the network learned
    lf = LevelFeatures("B34").fit(model, x)
    clf = KMeansClassifier(2, random_state=0, device="cpu").fit(lf.pooled(model, x), y)
    d = evaluate.SeedData(0, model, evaluate.evaluation_specs(["B34"]), {"B34": lf}, {}, {}, {"B34": clf},
                          {}, {}, torch.zeros(0), {}, {}, False)
    maps, explained = evaluate._kmeans_maps(d, "B34", x_test)
    scorer = KMeansScoreModel(model, lf, clf)
    kw = dict(steps=8, random_state=0, baseline=0.0)  # removed pixels become black: the square is gone
    km = metrics.deletion_insertion(scorer, x_test, maps, explained, **kw)
    rnd = metrics.deletion_insertion(scorer, x_test, metrics.random_maps(64, (32, 32)), explained, **kw)
    assert km.deletion_auc.mean() < rnd.deletion_auc.mean() - 0.02
    assert km.insertion_auc.mean() > rnd.insertion_auc.mean()


def test_fewer_data_profile_keeps_the_number_of_steps():
    prof = evaluate.get_profile("smoke")
    fewer = evaluate.fewer_data_profile(prof, 4)
    assert fewer.n_train == prof.n_train // 4 and fewer.epochs == 4 * prof.epochs
    assert fewer.n_train * fewer.epochs == pytest.approx(prof.n_train * prof.epochs, rel=0.01)
    with pytest.raises(ValueError):
        evaluate.fewer_data_profile(prof, 0)


def test_deciding_part_only_for_one_differing_attribute():
    from kmexplain_utils.data.parts import CLASS_NAMES, PART_NAMES

    names = list(CLASS_NAMES)
    for c1 in range(len(names)):
        for c2 in range(len(names)):
            a, b = names[c1].split("-"), names[c2].split("-")
            diff = [i for i in range(3) if a[i] != b[i]]
            want = PART_NAMES.index(("head", "tail", "marking")[diff[0]]) if len(diff) == 1 else -1
            assert evaluate.deciding_part(names, PART_NAMES, c1, c2) == want
    assert evaluate.deciding_part(["a", "b"], PART_NAMES, 0, 1) == -1


def test_claims_table_has_a_verdict_per_claim(cli_result):
    df = pd.DataFrame(cli_result["records"])
    table = evaluate.claims_table(df)
    assert list(table.columns) == list(evaluate.CLAIM_COLUMNS)
    assert list(dict.fromkeys(table["part"])) == list(evaluate.CLAIM_PARTS)
    assert (table["part"] == evaluate.CLAIM_PARTS[0]).sum() == 5  # the abstract's four claims (the last in two)
    assert table["verdict"].isin(["holds", "does not hold", "on average only", "passes", "fails",
                                  "not measurable here"]).all()
    assert table["rule"].str.contains("seed").all()


def _claim_records(override=None):
    """Two seeds of the records claims_table reads, every claim holding; ``override[(level, method, metric[, seed])]``."""
    override = override or {}
    base = {("B4", "linear", "accuracy"): 0.95, ("B4", "kmeans", "accuracy"): 0.95, ("B234", "kmeans", "accuracy"): 0.93,
            ("B4", "kmeans", "prototype_nn_ratio"): 0.5, ("B4", "linear-rescaled", "prototype_nn_ratio"): 3.0,
            ("B4", "concepts", "ami_object"): 0.2, ("B234", "concepts", "ami_object"): 0.3,
            ("B4@B234-grid", "concepts", "ami_object"): 0.2, ("B234", "ceiling", "ami_object"): 0.6,
            ("B4", "kmeans", "pointing_game"): 0.5, ("B234", "kmeans", "pointing_game"): 0.7,
            ("B4@B234-grid", "kmeans", "pointing_game"): 0.5, ("B4", "kmeans", "deletion_auc"): 0.2,
            ("B234", "kmeans", "deletion_auc"): 0.2, ("B234", "random", "deletion_auc"): 0.4}
    rows = []
    for seed in (0, 1):
        for (lv, method, metric), v in base.items():
            v = override.get((lv, method, metric, seed), override.get((lv, method, metric), v))
            rows.append(dict(seed=seed, level=lv, method=method, metric=metric, value=v, sweep=None, note=None))
        for lv in ("B4", "B234"):
            for method in ("kmeans", "contrastive"):
                v = override.get((lv, method, "sanity", seed), 0.1)
                rows.append(dict(seed=seed, level=lv, method=method, metric="sanity_spearman", value=v, sweep=None,
                                 note="B4"))
    return pd.DataFrame(rows)


def test_each_claim_verdict_follows_its_rule_and_a_contradicting_number_flips_it():
    verdict = lambda df, i: evaluate.claims_table(df)["verdict"].iloc[i]  # noqa: E731
    good = _claim_records()
    assert evaluate.claims_table(good)["verdict"].tolist() == ["holds"] * 6 + ["passes"]
    flips = [
        (0, {("B4", "kmeans", "prototype_nn_ratio", 1): 3.5}, "does not hold"),  # one seed is enough
        (1, {("B4", "kmeans", "accuracy"): 0.93}, "does not hold"),               # 2 points lost
        (2, {("B234", "kmeans", "deletion_auc"): 0.45}, "does not hold"),
        (3, {("B234", "kmeans", "accuracy", 1): 0.948}, "does not hold"),         # only 0.2 point on seed 1
        (4, {("B4@B234-grid", "concepts", "ami_object"): 0.35}, "does not hold"),  # the grid explains the gain
        (4, {("B234", "concepts", "ami_object", 1): 0.15}, "on average only"),    # one seed contradicts the mean
        (1, {("B4", "kmeans", "accuracy", 1): 0.93}, "on average only"),          # 2 points on seed 1, 1 on average
        (2, {("B234", "kmeans", "deletion_auc", 1): 0.5}, "on average only"),     # 0.35 on average, below 0.4
        (5, {("B234", "kmeans", "pointing_game", 1): 0.4}, "on average only"),
        (5, {("B234", "kmeans", "pointing_game"): 0.4}, "does not hold"),
        (6, {("B234", "kmeans", "sanity", 0): 0.94}, "fails"),                    # one seed, one level
    ]
    for i, override, want in flips:
        assert verdict(_claim_records(override), i) == want, (i, override)
    rules = evaluate.claims_table(good)["rule"]
    assert "1.5 points" in rules.iloc[1] and "0.5 point on every seed (2 seeds)" in rules.iloc[3]
    from kmexplain_utils.evaluation.sanity import PASS_THRESHOLD

    assert f"below {PASS_THRESHOLD} on every seed" in rules.iloc[6]


def test_the_semantic_fidelity_claim_holds_on_every_seed_or_on_average_only():
    """Seed 1 contradicts the mean (B234 below B4 and the control): the weaker verdict, the seeds printed."""
    df = _claim_records({("B234", "concepts", "ami_object", 1): 0.133, ("B4", "concepts", "ami_object", 1): 0.153,
                         ("B4@B234-grid", "concepts", "ami_object", 1): 0.148,
                         ("B234", "concepts", "ami_object", 0): 0.4})
    row = evaluate.claims_table(df).iloc[4]
    assert row["claim"] == "B234 concepts are semantically more faithful than B4's"
    assert row["verdict"] == "on average only"                     # mean 0.267 against 0.177 and 0.174
    assert "0.153 → 0.133 (0.148)" in row["measured here"] and "0.200 → 0.400 (0.200)" in row["measured here"]
    assert "on every seed (2 seeds)" in row["rule"] and "'on average only' when only the mean does" in row["rule"]
    assert evaluate.claims_table(_claim_records()).iloc[4]["verdict"] == "holds"


def test_claims_table_prints_accuracies_and_their_difference_consistently():
    """96.375 % against 97.25 %: printed 96.38 and 97.25, and the difference of the printed values, -0.87."""
    df = _claim_records({("B4", "kmeans", "accuracy"): 0.96375, ("B4", "linear", "accuracy"): 0.9725,
                         ("B234", "kmeans", "accuracy"): 0.95})
    table = evaluate.claims_table(df, fewer_data=df[df["metric"] == "accuracy"].assign(
        value=lambda d: d["value"].where(d["level"] != "B234", 0.96375).where(d["level"] != "B4", 0.9725)))
    measured = table["measured here"]
    assert measured.iloc[1].startswith("k-means B4 96.38 % against linear head 97.25 %, -0.87 points")
    assert measured.iloc[3].startswith("B234 95.00 % against B4 96.38 %, -1.38 points (per seed: -1.38, -1.38)")
    assert measured.iloc[-1].startswith("B234 96.38 % against B4 97.25 %, -0.87 points")
    assert table["verdict"].iloc[-1] == "holds" and table["verdict"].iloc[1] == "holds"
    # a gap of exactly 0.5 point is not "more than 0.5 point", whatever the float noise of 0.95 - 0.955
    few = df[df["metric"] == "accuracy"].assign(value=lambda d: d["value"].where(d["level"] != "B234", 0.95)
                                                .where(d["level"] != "B4", 0.955))
    assert evaluate.claims_table(df, fewer_data=few)["verdict"].iloc[-1] == "does not hold"


def test_claims_table_reads_the_fewer_data_run():
    few = pd.DataFrame([dict(seed=0, level=lv, method=m, metric="accuracy", value=v, sweep=None, note=None)
                        for lv, m, v in [("B4", "linear", 0.9), ("B4", "kmeans", 0.9), ("B234", "kmeans", 0.88)]])
    row = evaluate.claims_table(_claim_records(), fewer_data=few).iloc[-1]
    assert row["part"] == evaluate.CLAIM_PARTS[1] and row["verdict"] == "holds" and "-2.0" in row["measured here"]
    few.loc[0, "value"] = evaluate.LEARNED_ACCURACY - 0.01   # the network has not learned: no reading
    assert evaluate.claims_table(_claim_records(), fewer_data=few).iloc[-1]["verdict"] == "not measurable here"


def test_the_evaluation_fits_what_the_explainer_fits():
    """prepare_seed's level, classifier, temperature, concepts and maps are Explainer.fit's on the same data and seed.

    With every training image as fitting image (and for sigma_b), the evaluation's data step and the
    front door see the same data: their objects must agree.
    """
    from kmexplain_utils import Explainer

    prof = evaluate.get_profile("smoke")
    sh = evaluate.load_data(prof, n_fit_images=10**6)
    assert sh.x_fit.shape[0] == len(sh.train)
    specs = [sp for sp in evaluate.evaluation_specs(["B4", "B234"]) if sp.registration == "exact" and sp.grid is None]
    d = evaluate.prepare_seed(sh, 1, specs, sigma_images=None)
    x, y = sh.x_fit, sh.train.labels
    for lv in ("B4", "B234"):
        ex = Explainer(d.model, lv, n_prototypes=d.k_chosen[lv], n_concepts=prof.n_concepts, random_state=1,
                       positions_per_image=prof.positions_per_image, device="cpu").fit(x, y)
        mine = d.explainer(lv)
        assert mine is d.explainers[lv] and mine.classifier_ is d.clfs[lv] and mine.level_features_ is d.lfs[lv]
        for b, sig in ex.level_features_.sigma_.items():
            torch.testing.assert_close(torch.as_tensor(mine.level_features_.sigma_[b]).double(),
                                       torch.as_tensor(sig).double(), rtol=1e-5, atol=0)
        torch.testing.assert_close(mine.classifier_.prototypes_.double(), ex.classifier_.prototypes_.double(),
                                   rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(mine.concepts_.centroids_.double(), ex.concepts_.centroids_.double(),
                                   rtol=1e-4, atol=1e-5)
        assert mine.temperature_ == pytest.approx(ex.temperature_, rel=1e-3)
        # the maps the chapter scores are Explainer.explain's
        e_mine, e_ex = mine.explain(x[:4]), ex.explain(x[:4])
        torch.testing.assert_close(e_mine.attribution.float(), e_ex.attribution.float(), rtol=1e-4, atol=1e-4)
        km, _ = evaluate._kmeans_maps(d, lv, x[:4])
        torch.testing.assert_close(km, e_ex.attribution.float(), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="no concept model with 99 concepts"):
        d.explainer("B4", n_concepts=99)
    with pytest.raises(ValueError, match="no k-means classifier of its own"):
        d.explainer("B4@B234-grid")


def _sanity_records(b4_kmeans_seed1=0.98):
    rows = []
    for seed in (0, 1):
        for lv in ("B4", "B234"):
            for step, stage in ((1, "head"), (2, "B4"), (3, "B3")):
                for method, v in (("kmeans", 0.97), ("contrastive", 0.1), ("class-specific", 0.2), ("shared", 0.99)):
                    if (lv, method, seed, stage) == ("B4", "kmeans", 1, "B4"):
                        v = b4_kmeans_seed1
                    rows.append(dict(seed=seed, level=lv, method=method, metric="sanity_spearman", value=v,
                                     param=step, note=stage, sweep=None))
            for metric, v in (("sanity_shared_share", 0.8), ("sanity_specific_share", 0.2),
                              ("sanity_shared_spearman", 0.95)):
                rows.append(dict(seed=seed, level=lv, method="kmeans", metric=metric, value=v, param=0,
                                 note="trained", sweep=None))
        for step, stage in ((1, "head"), (2, "B4"), (3, "B3")):
            rows.append(dict(seed=seed, level="B4", method="cam", metric="sanity_spearman", value=-0.3, param=step,
                             note=stage, sweep=None))
    return pd.DataFrame(rows)


def test_sanity_report_reads_the_rule_and_the_right_records():
    from kmexplain_utils.evaluation.sanity import PASS_THRESHOLD

    v = evaluate.sanity_verdicts(_sanity_records())
    assert not v.loc[("B4", "kmeans"), "passes"] and v.loc[("B4", "contrastive"), "passes"]
    assert v.loc[("B4", "cam"), "passes"] and v.loc[("B4", "kmeans"), "worst"] == pytest.approx(0.98)
    assert list(v["map"])[:2] == ["k-means B4", "k-means B234"]
    # a contradicting number: B4's k-means map below the threshold on every seed passes ...
    low = evaluate.sanity_verdicts(_sanity_records(0.1).replace({"value": {0.97: 0.1}}))
    assert low.loc[("B4", "kmeans"), "passes"]
    # ... but one seed at the threshold fails it
    one = _sanity_records(PASS_THRESHOLD).replace({"value": {0.97: 0.1}})
    assert not evaluate.sanity_verdicts(one).loc[("B4", "kmeans"), "passes"]
    table = evaluate.sanity_table(_sanity_records())
    assert list(table.columns) == ["after head", "after B4", "after B3", "verdict"]
    assert table.loc["k-means B4", "verdict"] == "fails" and table.loc["CAM", "verdict"] == "passes"
    assert table.loc["k-means B4, contrastive", "after B4"].startswith("0.10")
    shares = evaluate.sanity_shares(_sanity_records())
    assert list(shares.index) == ["k-means B4", "k-means B234"] and shares.iloc[0, 0].startswith("0.80")
    with pytest.raises(ValueError, match="measure_sanity"):
        evaluate.sanity_verdicts(_sanity_records(), stage="stem")


def test_plot_sanity_draws_every_map():
    import matplotlib

    matplotlib.use("Agg")
    fig = evaluate.plot_sanity(_sanity_records())
    n_lines = sum(len(ax.get_legend().get_texts()) for ax in fig.axes)
    assert n_lines == 4 + 4 + 1
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_sanity_advice_follows_the_verdicts():
    v = evaluate.sanity_verdicts(_sanity_records())
    text = evaluate.sanity_advice(v)
    assert "fails at B4 and B234" in text and "the contrastive map at B4 and B234, the class-specific part at B4 and B234;" in text
    half = evaluate.sanity_verdicts(_sanity_records().query("not (level == 'B234' and method == 'contrastive')"))
    assert "These pass: the contrastive map at B4, the class-specific part at B4 and B234;" in \
        evaluate.sanity_advice(half)
    good = evaluate.sanity_verdicts(_sanity_records(0.1).replace({"value": {0.97: 0.1}}))
    assert "the k-means maps pass at B4 and B234" in evaluate.sanity_advice(good)
    bad = evaluate.sanity_verdicts(_sanity_records().replace({"value": {0.1: 0.9, 0.2: 0.9}}))
    assert "Neither its contrastive form nor its class-specific part passes" in evaluate.sanity_advice(bad)


def test_choose_k_uses_the_validation_split_only():
    torch.manual_seed(0)
    # two classes, each two tight clusters: K = 2 separates them, K = 1 puts a centroid between
    centres = torch.tensor([[0.0, 0], [10, 0], [5, 5], [5, -5]])
    y = torch.tensor([0, 0, 1, 1]).repeat_interleave(50)
    Z = centres.repeat_interleave(50, 0) + 0.3 * torch.randn(200, 2)
    val = evaluate.validation_split(200, seed=0)
    assert val.sum() == 40 and torch.equal(val, evaluate.validation_split(200, seed=0))
    k, acc = evaluate.choose_k(Z, y, val, [1, 2, 4])
    assert set(acc) == {1, 2, 4} and acc[2] == 1.0 and acc[1] < 1.0 and k == 2   # smallest of the ties
    # a contradicting number: relabel the validation images and the choice follows them, not the training ones
    y_bad = y.clone()
    y_bad[val] = 1 - y_bad[val]
    assert evaluate.choose_k(Z, y_bad, val, [1, 2, 4])[1][2] == 0.0
    with pytest.raises(ValueError, match="some, not all"):
        evaluate.choose_k(Z, y, torch.zeros(200, dtype=torch.bool), [1])


def test_k_cost_and_its_figure():
    import matplotlib

    matplotlib.use("Agg")
    rows = [dict(sweep="k_per_class", metric="accuracy", method="kmeans", seed=s, param=k, level=lv,
                 value=0.95 - (0.01 * k if lv == "B234" else 0) + 0.001 * s)
            for s in (0, 1, 2) for k in (1, 2, 4) for lv in ("B4", "B234")]
    rows += [dict(sweep=None, metric="k_chosen", method="kmeans", seed=s, param=1, level=lv, value=1)
             for s in (0, 1, 2) for lv in ("B4", "B234")]
    df = pd.DataFrame(rows)
    cost = evaluate.k_cost(df)
    np.testing.assert_allclose(cost["mean"].to_numpy(), [-1, -2, -4])
    np.testing.assert_allclose(cost["sd"].to_numpy(), 0, atol=1e-9)
    assert evaluate.k_chosen(df).loc[0, "B234"] == 1
    fig = evaluate.plot_k_cost(df)
    assert len(fig.axes[0].get_legend().get_texts()) == 3
    with pytest.raises(ValueError, match="sweep"):
        evaluate.k_cost(df, level="B1234")


def test_identical_columns_are_shown_once():
    df = _fake_records()
    df.attrs = {}  # (pandas compares the attrs of concatenated frames)
    twin = df[df["metric"] == "nmi_object"].assign(metric="ami_object")
    both = pd.concat([df, twin], ignore_index=True)
    table = evaluate.summary_table(both, ["nmi_object", "ami_object", "accuracy"], merge_identical=True)
    assert list(table.columns) == ["nmi_object = ami_object", "accuracy"]
    # a contradicting number keeps both columns
    both.loc[both.index[-1], "value"] = 0.3
    table = evaluate.summary_table(both, ["nmi_object", "ami_object"], merge_identical=True)
    assert list(table.columns) == ["nmi_object", "ami_object"]
    assert list(evaluate.summary_table(both, ["nmi_object", "ami_object"]).columns) == ["nmi_object", "ami_object"]


def test_record_helpers_read_the_named_rows():
    df = _fake_records()
    assert evaluate.record_stat(df, "B4", "linear", "accuracy") == pytest.approx((0.85, 0.0707107), abs=1e-6)
    assert evaluate.record_stat(df, "B4", "kmeans", "accuracy", sweep="k_per_class")[0] == pytest.approx(0.5)
    assert np.isnan(evaluate.record_stat(df, "B4", "nope", "accuracy")[0])
    assert evaluate.record_per_seed(df, "B4", "kmeans", "accuracy").to_dict() == pytest.approx({0: 0.8, 1: 0.7})
    t = pd.DataFrame({"a": ["", "x"], "b": ["", ""]})
    assert evaluate.drop_empty(t).to_dict() == {"a": {1: "x"}}


def test_intervention_measurements_on_a_known_scene():
    """Part masses, effects of removing a part and their rank correlation (unwired: METHOD section 7)."""
    parts = torch.tensor([[[0, 1], [2, 3]]]).repeat(2, 1, 1)            # four parts of one pixel each
    maps = torch.tensor([[[0.0, 1.0], [2.0, 3.0]], [[3.0, 2.0], [1.0, 0.0]]])
    masses = evaluate.part_masses(maps, parts, 5)
    assert masses[:, :4].tolist() == [[0, 1, 2, 3], [3, 2, 1, 0]] and torch.isnan(masses[:, 4]).all()
    x = torch.zeros(2, 3, 2, 2)
    x[:, 0] = torch.tensor([[0.0, 1.0], [2.0, 3.0]])                    # part k paints k into red

    def score(images):  # class 0 scores the red mass: removing part k (painting it 0) drops it by k
        return torch.stack([images[:, 0].sum((1, 2)), torch.zeros(len(images))], 1)

    without = {}
    for k in range(4):
        xk = x.clone()
        xk[:, 0][parts == k] = 0.0
        without[k] = xk
    eff = evaluate.intervention_effects(score, x, without, torch.tensor([0, 0]), 5)
    assert eff[:, :4].tolist() == [[0, 1, 2, 3], [0, 1, 2, 3]] and torch.isnan(eff[:, 4]).all()
    rho = evaluate.single_deletion(masses, eff)
    np.testing.assert_allclose(rho, [1.0, -1.0])                           # a faithful map, a reversed one
    rec = evaluate.Recorder("p")
    evaluate.record_interventions(rec, 0, "B4", "kmeans", rho)
    assert rec.rows[0]["metric"] == "intervention_single_deletion" and rec.rows[0]["value"] == 0.0
    assert rec.rows[0]["metric"] in evaluate.METRICS
    with pytest.raises(ValueError, match="part labels"):
        evaluate.part_masses(maps, parts + 5, 5)


def test_plot_faithfulness_draws_mean_and_sd_per_map():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for seed, (km, rnd) in enumerate([(0.2, 0.6), (0.4, 0.8)]):
        for (lv, m), v in ((("B234", "kmeans"), km), (("B234", "random"), rnd)):
            rows.append(dict(seed=seed, level=lv, method=m, metric="deletion_auc", value=v, sweep=None))
            rows.append(dict(seed=seed, level=lv, method=m, metric="insertion_auc", value=1 - v,
                             sweep=None))
            rows.append(dict(seed=seed, level=lv, method=m, metric="deletion_auc_transfer", value=0.99,
                             sweep=None))
    fig = evaluate.plot_faithfulness(pd.DataFrame(rows))
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [evaluate.method_label("B234", "kmeans"), evaluate.method_label("B234", "random")]
    # the points are the means over seeds (transfer rows left out), the bars one sd
    xs = sorted(round(float(c.lines[0].get_xdata()[0]), 6) for c in ax.containers)
    assert xs == [0.3, 0.3, 0.7, 0.7]
    widths = {round(float(abs(seg[1][0] - seg[0][0])), 6) for c in ax.containers
              for seg in c.lines[2][0].get_segments()}
    assert widths == {round(2 * np.std([0.2, 0.4], ddof=1), 6)}
    plt.close(fig)
    with pytest.raises(ValueError, match="measure_attribution"):
        evaluate.plot_faithfulness(pd.DataFrame(rows).query("metric == 'deletion_auc_transfer'"))
