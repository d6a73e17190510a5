"""Model-randomisation sanity check: Spearman against scipy, cascade order, no mutation, stages."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
import torchvision
from torch import nn

from kmexplain_utils.attribution import cam
from kmexplain_utils.evaluation.sanity import cascading_randomization, randomization_stages, reinitialize, spearman_maps


def test_spearman_matches_scipy_with_ties() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, size=(4, 6, 6)).astype(float)   # many ties
    b = a + rng.normal(size=a.shape)
    got = spearman_maps(a, b)
    ref = [scipy.stats.spearmanr(a[i].ravel(), b[i].ravel())[0] for i in range(4)]
    np.testing.assert_allclose(got, ref, atol=1e-12)


def test_spearman_without_ties_is_the_textbook_formula() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(3, 50)), rng.normal(size=(3, 50))
    n = 50
    d = scipy.stats.rankdata(a, axis=1) - scipy.stats.rankdata(b, axis=1)
    np.testing.assert_allclose(spearman_maps(a, b), 1 - 6 * (d**2).sum(1) / (n * (n**2 - 1)), atol=1e-12)


def test_spearman_is_rank_only_and_nan_for_constant_maps() -> None:
    a = torch.rand(2, 4, 4)
    np.testing.assert_allclose(spearman_maps(a, torch.exp(3 * a) + 7), 1.0)
    np.testing.assert_allclose(spearman_maps(a, -a), -1.0)
    assert np.isnan(spearman_maps(torch.ones(1, 4, 4), a[:1])[0])
    with pytest.raises(ValueError, match="same shape"):
        spearman_maps(a, a[:, :2])


def test_stages_of_resnet_cover_every_parameterised_module_once() -> None:
    net = torchvision.models.resnet18(weights=None)
    stages = randomization_stages(net)
    assert [s for s, _ in stages] == ["head", "B4", "B3", "B2", "B1", "stem"]
    mods = [m for _, ms in stages for m in ms]
    own = [n for n, m in net.named_modules() if any(True for _ in m.parameters(recurse=False))]
    assert sorted(mods) == sorted(own) and len(mods) == len(set(mods))
    assert all(m.startswith("layer4") for m in dict(stages)["B4"])
    assert dict(stages)["stem"] == ["conv1", "bn1"]


def test_reinitialize_is_seeded_and_changes_weights() -> None:
    a, b = nn.Conv2d(3, 4, 3), nn.Conv2d(3, 4, 3)
    reinitialize(a, 5)
    reinitialize(b, 5)
    assert torch.equal(a.weight, b.weight)

    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.full((10,), 2.0) + torch.arange(10.0))

    o = Odd()
    before = o.p.detach().clone()
    reinitialize(o, 0)
    assert not torch.equal(o.p, before)


def test_cascade_order_no_mutation_and_what_changes() -> None:
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.rand(3, 3, 64, 64)

    def explain(m, x):
        return {"CAM": cam(m, x, target=0, size=64), "input": x.mean(1)}   # "input" ignores the model

    recs = cascading_randomization(net, explain, x, random_state=0)
    assert [r.stage for r in recs[::2]] == ["head", "B4", "B3", "B2", "B1", "stem"]
    assert [r.step for r in recs[::2]] == [1, 2, 3, 4, 5, 6]
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k
    by = {(r.stage, r.method): r for r in recs}
    # a map that does not depend on the model passes nothing: correlation stays 1
    assert all(abs(by[(s, "input")].spearman - 1) < 1e-12 for s in ("head", "B4", "stem"))
    # CAM depends on the weights: once B4 is random it is far from the trained map
    assert by[("B4", "CAM")].spearman < 0.9
    assert by[("B4", "CAM")].per_image.shape == (3,)
    again = cascading_randomization(net, explain, x, random_state=0)
    assert [r.spearman for r in again] == [r.spearman for r in recs]


def test_cascade_errors() -> None:
    net = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    x = torch.rand(1, 3, 64, 64)
    with pytest.raises(ValueError, match="does not have"):
        cascading_randomization(net, lambda m, x: {"a": x[:, 0]}, x, layers=[("x", ["nope"])])
    with pytest.raises(ValueError, match="no map"):
        cascading_randomization(net, lambda m, x: {}, x, layers=[("fc", ["fc"])])
    with pytest.raises(TypeError):
        cascading_randomization("net", lambda m, x: {}, x)


# ----------------------------------------------------------------------------- the decomposition and the protocol
from kmexplain_utils.evaluation.sanity import (  # noqa: E402
    PASS_THRESHOLD, ProtocolRecord, randomisation_protocol, split_prototype_maps, variance_shares, verdicts,
)


def test_split_is_exact_and_contrastive_maps_lose_the_shared_part() -> None:
    torch.manual_seed(0)
    a = torch.rand(3, 5, 4, 4, dtype=torch.float64)
    P = torch.rand(6, 5, dtype=torch.float64)
    idx = torch.tensor([0, 3, 5])
    m, s, r = split_prototype_maps(a, P, idx)
    mu, mbar = P[idx], P.mean(0)
    ref = 2 * torch.einsum("nd,ndhw->nhw", mu, a) - (mu**2).sum(1)[:, None, None]
    torch.testing.assert_close(m, ref)
    torch.testing.assert_close(s, 2 * torch.einsum("d,ndhw->nhw", mbar, a) - (mbar**2).sum())
    torch.testing.assert_close(m, s + r)
    m2, s2, r2 = split_prototype_maps(a, P, torch.tensor([1, 1, 1]))
    torch.testing.assert_close(s, s2)                       # the shared part does not depend on the prototype
    torch.testing.assert_close(m - m2, r - r2)              # so a contrastive map is a difference of specific parts
    with pytest.raises(ValueError, match="index must have shape"):
        split_prototype_maps(a, P, torch.tensor([0]))
    with pytest.raises(ValueError, match=r"\(P, D\)"):
        split_prototype_maps(a, P[0], idx)


def test_variance_shares_sum_to_one_and_read_the_right_part() -> None:
    rng = np.random.default_rng(0)
    s, r = rng.normal(size=(4, 30)), rng.normal(size=(4, 30))
    sh, sp = variance_shares(s + r, s)
    np.testing.assert_allclose(sh + sp, 1.0)
    ref = [np.cov(s[i] + r[i], s[i])[0, 1] / np.var(s[i] + r[i], ddof=1) for i in range(4)]
    np.testing.assert_allclose(sh, ref)
    big, _ = variance_shares(10 * s + r, 10 * s)          # a dominant shared part takes nearly all the variance
    assert (big > 0.95).all()
    small, _ = variance_shares(0.01 * s + r, 0.01 * s)
    assert (np.abs(small) < 0.05).all()
    assert np.isnan(variance_shares(np.ones((1, 5)), s[:1, :5])[0][0])
    with pytest.raises(ValueError, match="same shape"):
        variance_shares(s, s[:, :3])


def test_verdicts_read_the_stage_and_threshold() -> None:
    def rec(stage, method, med):
        return ProtocolRecord(2, stage, "B4", method, "spearman", med, med, np.array([med]))

    recs = [rec("head", "kmeans", 0.1), rec("B4", "kmeans", 0.98), rec("B4", "contrastive", 0.2)]
    assert verdicts(recs) == {("B4", "kmeans"): False, ("B4", "contrastive"): True}
    # a contradicting number flips the verdict
    assert verdicts([rec("B4", "kmeans", PASS_THRESHOLD - 1e-9)]) == {("B4", "kmeans"): True}
    assert verdicts([rec("B4", "kmeans", PASS_THRESHOLD)]) == {("B4", "kmeans"): False}
    with pytest.raises(ValueError, match="cut before"):
        verdicts([rec("head", "kmeans", 0.1)])


def test_protocol_on_a_network_with_explainers() -> None:
    from kmexplain_utils import Explainer

    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=2).eval()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = torch.rand(12, 3, 64, 64), torch.tensor([0, 1] * 6)
    ex = Explainer(net, "B34", n_prototypes=2, n_concepts=2, device="cpu").fit(x, y)
    recs = randomisation_protocol(net, {"B34": ex}, x[:6], n_stages=2, occlusion_patch=32, random_state=0)
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k
    dec = {(r.metric): r for r in recs if r.step == 0}
    np.testing.assert_allclose(dec["shared_share"].per_image + dec["specific_share"].per_image, 1.0)
    # the k-means map at step 0 is Explainer.explain's own map
    e = ex.explain(x[:6])
    m, s, _ = split_prototype_maps(ex.level_features_.position_features(net, x[:6]), ex.classifier_.prototypes_,
                                   e.prototype)
    torch.testing.assert_close(m.float(), e.attribution_grid.float(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dec["shared_spearman"].per_image, spearman_maps(m, s), atol=1e-6)
    spear = {(r.stage, r.level, r.method): r for r in recs if r.metric == "spearman"}
    assert {k[0] for k in spear} == {"head", "B4"}
    assert {k[2] for k in spear} == {"kmeans", "contrastive", "class-specific", "shared", "cam", "gradcam",
                                     "occlusion"}
    assert all(r.per_image.shape == (6,) for r in spear.values())
    # after the head only, the shared part is drawn by nearly the same mean prototype: it barely changes,
    # while the class-specific part (a random direction) does
    assert spear[("head", "B34", "shared")].median > 0.9
    assert spear[("head", "B34", "class-specific")].median < spear[("head", "B34", "shared")].median
    again = randomisation_protocol(net, ex, x[:6], n_stages=2, occlusion_patch=32, random_state=0)
    assert [r.median for r in again] == [r.median for r in recs]
    with pytest.raises(ValueError, match="fit_data"):
        randomisation_protocol(net, ["B4"], x)
    with pytest.raises(ValueError, match="not fitted"):
        randomisation_protocol(net, {"B4": Explainer(net, "B4")}, x)


def test_protocol_keeps_only_the_baselines_named() -> None:
    """Chapter 6 keeps CAM only; the k-means maps are the same whichever baselines run."""
    from kmexplain_utils import Explainer

    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=2).eval()
    x, y = torch.rand(8, 3, 64, 64), torch.tensor([0, 1] * 4)
    ex = Explainer(net, "B4", n_prototypes=1, n_concepts=2, device="cpu").fit(x, y)
    cam_only = randomisation_protocol(net, ex, x[:4], n_stages=2, baselines=["cam"])
    none = randomisation_protocol(net, ex, x[:4], n_stages=2, baselines=False)
    methods = {r.method for r in cam_only if r.metric == "spearman"}
    assert methods == {"kmeans", "contrastive", "class-specific", "shared", "cam"}
    assert {r.method for r in none if r.metric == "spearman"} == methods - {"cam"}
    km = {(r.stage, r.method): r.median for r in cam_only if r.method != "cam"}
    assert km == {(r.stage, r.method): r.median for r in none}
    with pytest.raises(ValueError, match=r"unknown baseline\(s\) \['gradcm'\]"):
        randomisation_protocol(net, ex, x[:4], n_stages=1, baselines=["cam", "gradcm"])
    with pytest.raises(TypeError, match=r"baselines=\['cam'\]"):
        randomisation_protocol(net, ex, x[:4], n_stages=1, baselines="cam")
