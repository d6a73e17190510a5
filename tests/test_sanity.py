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
