"""The front door: Explainer(...).fit(...).explain(...) on any GAP + linear CNN."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from kmexplain_utils import Explainer, Explanation
from kmexplain_utils._validation import NotFittedError
from kmexplain_utils.chapters.models import TinyResNet

FAMILIES = {
    "resnet18": lambda: torchvision.models.resnet18(weights=None, num_classes=3),
    "densenet121": lambda: torchvision.models.densenet121(weights=None, num_classes=3),
    "efficientnet_b0": lambda: torchvision.models.efficientnet_b0(weights=None, num_classes=3),
    "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(weights=None, num_classes=3),
    "regnet_y_400mf": lambda: torchvision.models.regnet_y_400mf(weights=None, num_classes=3),
    "shufflenet_v2_x1_0": lambda: torchvision.models.shufflenet_v2_x1_0(weights=None, num_classes=3),
    "tiny_resnet": lambda: TinyResNet(3, width=8),
}


def _logits_of_order_one(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Re-initialise the linear head so that logits are of order 1 (random heads give ~1e-10 for some)."""
    from kmexplain_utils.architectures import adapt

    lin = adapt(model).head.linear
    with torch.no_grad():
        lin.weight.normal_(0.0, 1.0)
        lin.bias.zero_()
        std = float(model(x).std())
        lin.weight.mul_(1.0 / max(std, 1e-12))
    return model


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(18, 3, 64, 64, generator=g)
    x[6:12, 0] += 0.5   # three classes that differ in colour
    x[12:, 2] += 0.5
    return x.clamp(0, 1), torch.tensor([0] * 6 + [1] * 6 + [2] * 6)


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("level", ["B4", "B234"])
def test_explainer_on_every_family(name: str, level: str, data) -> None:
    x, y = data
    torch.manual_seed(0)
    model = _logits_of_order_one(FAMILIES[name]().eval(), x)
    with torch.no_grad():
        assert 0.5 < float(model(x).abs().max()) < 50
    ex = Explainer(model, level=level, n_prototypes=2, n_concepts=4, device="cpu", positions_per_image=8).fit(x, y)
    e = ex.explain(x[:5])
    assert isinstance(e, Explanation) and len(e) == 5
    assert e.attribution.shape == e.contrastive.shape == e.concepts.shape == (5, 64, 64)
    assert e.concepts.dtype == torch.int64 and e.concept_contributions.shape == (5, 4)
    # the map explains the score exactly: its grid mean is the target's best prototype score
    rel = (e.attribution_grid.double().mean((1, 2)) - e.score.double()).abs() / e.score.double().abs()
    assert float(rel.max()) < 1e-5
    assert e.completeness_error <= 1e-5 * float(e.score.abs().max())
    # the contributions sum to the score, and the contrastive map's mean is the score margin
    assert torch.allclose(e.concept_contributions.sum(1), e.score, rtol=1e-4, atol=1e-4)
    cols_t, cols_v = ex.target_columns(e.target, 5), ex.target_columns(e.versus, 5)
    margin = e.class_scores[torch.arange(5), cols_t] - e.class_scores[torch.arange(5), cols_v]
    assert torch.allclose(e.contrastive_grid.mean((1, 2)), margin, rtol=1e-4, atol=1e-4)
    assert torch.equal(torch.as_tensor(e.predicted), torch.as_tensor(ex.predict(x[:5])))


@pytest.fixture(scope="module")
def fitted(data) -> Explainer:
    x, y = data
    torch.manual_seed(0)
    model = TinyResNet(3, width=8).eval()
    return Explainer(model, level="B34", n_prototypes=2, n_concepts=3, device="cpu",
                     positions_per_image=8).fit(x, y, class_names=["grey", "red", "blue"])


def test_target_by_label_name_and_sequence(fitted: Explainer, data) -> None:
    x, _ = data
    by_label = fitted.explain(x[:4], target=1)
    by_name = fitted.explain(x[:4], target="red")
    assert torch.equal(by_label.attribution, by_name.attribution)
    assert torch.equal(torch.as_tensor(by_name.target), torch.tensor([1, 1, 1, 1]))
    mixed = fitted.explain(x[:2], target=["blue", 0], versus=1)
    assert torch.as_tensor(mixed.target).tolist() == [2, 0] and torch.as_tensor(mixed.versus).tolist() == [1, 1]
    # the score of an explicit target is that class's best prototype score
    assert torch.allclose(mixed.score, mixed.class_scores[torch.arange(2), torch.tensor([2, 0])])
    with pytest.raises(ValueError, match=r"unknown class name 'green'; the classes are \['grey', 'red', 'blue'\]"):
        fitted.explain(x[:2], target="green")
    with pytest.raises(ValueError, match=r"unknown class label\(s\) \[7\]"):
        fitted.explain(x[:2], target=7)
    with pytest.raises(ValueError, match="target has 3 labels but there are n=2 inputs"):
        fitted.explain(x[:2], target=[0, 1, 2])


def test_predict_and_score(fitted: Explainer, data) -> None:
    x, y = data
    pred = fitted.predict(x)
    assert pred.shape == (18,)
    assert fitted.score(x, y) == pytest.approx(float((torch.as_tensor(pred) == y).double().mean()))
    Z = fitted.transform(x)
    assert torch.equal(torch.as_tensor(fitted.classifier_.predict(Z)), torch.as_tensor(pred))


def test_fit_from_a_dataset_equals_fit_from_tensors(data) -> None:
    from torch.utils.data import DataLoader, TensorDataset

    x, y = data
    model = TinyResNet(3, width=8).eval()
    a = Explainer(model, level="B4", n_prototypes=2, n_concepts=3, device="cpu", batch_size=5).fit(x, y)
    b = Explainer(model, level="B4", n_prototypes=2, n_concepts=3, device="cpu").fit(
        DataLoader(TensorDataset(x, y), batch_size=7))
    assert torch.allclose(a.classifier_.prototypes_, b.classifier_.prototypes_, atol=1e-5)
    assert torch.allclose(a.concepts_.centroids_, b.concepts_.centroids_, atol=1e-5)


def test_logits_level_has_no_maps(data) -> None:
    x, y = data
    model = TinyResNet(3, width=8).eval()
    e = Explainer(model, level="logits", n_prototypes=1, device="cpu").fit(x, y).explain(x[:3])
    assert e.attribution is None and e.concepts is None and e.score.shape == (3,)


def test_bad_input_errors(data) -> None:
    x, y = data
    model = TinyResNet(3, width=8).eval()
    ex = Explainer(model, level="B4", n_prototypes=2, n_concepts=3, device="cpu")
    with pytest.raises(NotFittedError, match="not fitted yet; call explainer.fit"):
        ex.explain(x[:2])
    with pytest.raises(ValueError, match="labels are required"):
        ex.fit(x)
    with pytest.raises(ValueError, match="RGB"):
        ex.fit(x[:, :1], y)
    with pytest.raises(ValueError, match=r"smaller than the network's total stride 16"):
        ex.fit(torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 0, 1]))
    with pytest.warns(UserWarning, match="not a multiple of the total stride 16"):
        Explainer(model, level="B4", n_prototypes=1, n_concepts=2, device="cpu").fit(
            torch.rand(6, 3, 40, 40), torch.tensor([0, 1, 2] * 2))
    with pytest.raises(ValueError, match="do not nest"):
        Explainer(model, level="B34", blocks={"B3": "layer4", "B4": "layer4"}, device="cpu").fit(x, y)


def test_training_mode_is_restored_with_a_warning(data) -> None:
    x, y = data
    model = TinyResNet(3, width=8).train()
    before = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(UserWarning, match="training mode"):
        Explainer(model, level="B4", n_prototypes=1, n_concepts=2, device="cpu").fit(x, y)
    assert [m.training for m in model.modules()] == before
    # eval mode: BatchNorm running statistics were not updated
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_registered_maps_differ_from_the_cell_convention(data) -> None:
    x, y = data
    model = TinyResNet(3, width=8).eval()
    exact = Explainer(model, level="B4", n_prototypes=2, n_concepts=3, device="cpu").fit(x, y)
    cell = Explainer(model, level="B4", n_prototypes=2, n_concepts=3, device="cpu", registration="cell").fit(x, y)
    e, c = exact.explain(x[:2]), cell.explain(x[:2])
    assert torch.allclose(e.attribution_grid, c.attribution_grid)  # same grid values ...
    assert not torch.allclose(e.attribution, c.attribution)        # ... drawn at different places
    s = exact.registration_["B4"].stride[0]
    # at the registered centre of position (1, 1) the map takes that position's value
    p = int(s * 1 + exact.registration_["B4"].offset[0])
    assert torch.allclose(e.attribution[:, p, p], e.attribution_grid[:, 1, 1])


def test_plot(fitted: Explainer, data) -> None:
    import io

    import matplotlib

    from kmexplain_utils.chapters.figure_log import image_panel_fractions, png_width

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, _ = data
    e = fitted.explain(x[:2])
    fig = e.plot(1)
    assert len(fig.axes) >= 4
    # default: a 2 x 2 grid, every image panel wider than 170 px on a 736 px text column at 100 dpi
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 4
    # the concept panel: the concept colours alone, opaque over the whole image
    concept_over = np.asarray(panels[3].images[-1].get_array())
    assert concept_over.shape[:2] == tuple(x.shape[-2:]) and np.all(concept_over[..., 3] == 1.0)
    rows = {round(ax.get_position().y0 + ax.get_position().height / 2, 1) for ax in panels}
    assert len(rows) == 2  # panel centres on two heights (colour bars shift the heat maps a little)
    fig.set_dpi(100)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    assert min(image_panel_fractions(fig)) * min(png_width(buf.getvalue()), 736) >= 170
    plt.close(fig)
    row = e.plot(1, ncols=4)  # one row on request
    assert len({round(ax.get_position().y0 + ax.get_position().height / 2, 1) for ax in row.axes if ax.images}) == 1
    plt.close(row)
    with pytest.raises(ValueError, match="ncols must be 1, 2, 3 or 4"):
        e.plot(1, ncols=5)
    with pytest.raises(IndexError, match="not in this explanation"):
        e.plot(5)


def test_score_model_and_with_model(fitted: Explainer, data) -> None:
    import copy

    x, _ = data
    sm = fitted.score_model()
    with torch.no_grad():
        scores = sm(x)
    # the model a k-means map explains: its arg-max is the k-means prediction, its scores the class scores / T
    assert torch.equal(torch.as_tensor(fitted.classes_)[scores.argmax(1)], torch.as_tensor(fitted.predict(x)))
    e = fitted.explain(x[:3])
    assert torch.allclose(scores[:3] * fitted.temperature_, e.class_scores, rtol=1e-5, atol=1e-5)
    assert fitted.temperature_ > 0
    same = fitted.with_model(copy.deepcopy(fitted.model)).explain(x[:3])
    assert torch.allclose(same.attribution, e.attribution)
    noisy = copy.deepcopy(fitted.model)
    with torch.no_grad():
        for p in noisy.layer4.parameters():
            p.normal_()
    assert not torch.allclose(fitted.with_model(noisy).explain(x[:3]).attribution, e.attribution)
    assert fitted.model is not noisy  # the original is untouched


@pytest.mark.parametrize("per_class", [False, True])
def test_string_and_other_non_integer_labels(per_class: bool, data, fitted: Explainer) -> None:
    """fit(x, ["cat", "dog", ...]): the same fit as with the labels' ranks, string labels everywhere after."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = data
    names = np.array(["zebra", "ant", "moose"])[y.numpy()]  # sorted classes: ant, moose, zebra
    model = fitted.model
    kw = dict(level="B34", n_prototypes=2, n_concepts=3, device="cpu", positions_per_image=8,
              per_class_concepts=per_class)
    ex = Explainer(model, **kw).fit(x, list(names))
    ref = Explainer(model, **kw).fit(x, torch.as_tensor(np.unique(names, return_inverse=True)[1]))
    assert ex.classes_.tolist() == ["ant", "moose", "zebra"]
    assert torch.equal(ex.classifier_.prototypes_, ref.classifier_.prototypes_)
    assert ex.temperature_ == ref.temperature_
    pred = ex.predict(x)
    assert isinstance(pred, np.ndarray) and pred.dtype.kind == "U"
    np.testing.assert_array_equal(pred, ex.classes_[np.asarray(ref.predict(x))])
    assert ex.score(x, names) == ref.score(x, torch.as_tensor(np.unique(names, return_inverse=True)[1]))

    e = ex.explain(x[:3], target="zebra", versus=["ant", "moose", "ant"])
    r = ref.explain(x[:3], target=2, versus=[0, 1, 0])
    assert e.target.tolist() == ["zebra"] * 3 and e.versus.tolist() == ["ant", "moose", "ant"]
    assert torch.equal(e.attribution, r.attribution) and torch.equal(e.contrastive, r.contrastive)
    assert torch.equal(e.concepts, r.concepts)
    assert e.predicted.tolist() == ex.classes_[np.asarray(r.predicted)].tolist()
    with pytest.raises(ValueError, match=r"unknown class name 'cat'; the classes are \['ant', 'moose', 'zebra'\]"):
        ex.explain(x[:2], target="cat")
    # the plot's titles name the classes
    fig = e.plot(0)
    titles = " ".join(a.get_title() for a in fig.axes)
    assert "why zebra" in titles and "zebra rather than ant" in titles
    plt.close(fig)

    # other non-integer labels: floats with integer values, booleans
    fl = Explainer(model, level="B4", n_prototypes=1, n_concepts=2, device="cpu").fit(x, y.double() * 2)
    assert fl.classes_.tolist() == [0.0, 2.0, 4.0]
    assert fl.explain(x[:2], target=4.0).target.tolist() == [4.0, 4.0]
    bo = Explainer(model, level="B4", n_prototypes=1, n_concepts=2, device="cpu").fit(x, (y > 0).numpy())
    assert bo.classes_.tolist() == [False, True]
@pytest.mark.parametrize("level", ["logits", "B4", "B234", "B1234"])
def test_fit_runs_the_network_once_over_the_data(data, level: str) -> None:
    """Explainer.fit is one pass over the training images (scales, embeddings and positions together):
    every batch of the data goes through the network exactly once. The only other forward passes are
    probes of ONE image each that read the network: adapting it (128 px: the head identity check), tracing
    the blocks' registration at 256 px (strides, before the pass) and at the data's size (the level's grid;
    not for the logits): three, whatever the data size (before: the data went through the network twice)."""
    x, y = data
    torch.manual_seed(0)
    model = TinyResNet(3, width=8).eval()  # fresh: its adapter is not cached yet
    seen: list[torch.Tensor] = []
    handle = model.register_forward_pre_hook(lambda _m, inp: seen.append(inp[0].detach().clone()))
    try:
        Explainer(model, level=level, n_prototypes=1, n_concepts=2, positions_per_image=4, batch_size=5,
                  device="cpu").fit(x, y)
    finally:
        handle.remove()
    batches = [x[i:i + 5] for i in range(0, len(x), 5)]
    data_calls = [t for t in seen if any(t.shape == b.shape and torch.equal(t, b) for b in batches)]
    assert len(data_calls) == len(batches) == 4
    assert all(any(torch.equal(t, b) for t in data_calls) for b in batches)
    probes = [t for t in seen if not any(t.shape == b.shape and torch.equal(t, b) for b in batches)]
    assert all(t.shape[0] == 1 for t in probes) and len(probes) == (2 if level == "logits" else 3), [tuple(t.shape) for t in probes]


def test_explain_maps_equal_the_position_feature_reference(data) -> None:
    """explain projects each block map on the prototypes and concepts, then resamples (it never builds the
    (N, D_S, H_S, W_S) features): the same maps as attribution_map / concept_map on position_features."""
    from kmexplain_utils.attribution import attribution_map
    from kmexplain_utils.concepts import concept_map

    x, y = data
    torch.manual_seed(0)
    ex = Explainer(torchvision.models.resnet18(weights=None, num_classes=3).eval(), level="B1234", n_prototypes=2,
                   n_concepts=5, positions_per_image=8, device="cpu").fit(x, y)
    e = ex.explain(x[:4])
    feats = ex.level_features_.position_features(ex.model, x[:4])
    mu = ex.classifier_.prototypes_
    assert torch.allclose(ex.transform(x[:4]), feats.mean((2, 3)), rtol=1e-5, atol=1e-6)
    ref = attribution_map(feats, mu[e.prototype])
    assert torch.allclose(e.attribution_grid, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
    rival = ex.classifier_.best_prototype_per_class(ex.transform(x[:4]))[1][torch.arange(4), ex.target_columns(e.versus, 4)]
    ref_c = ref - attribution_map(feats, mu[rival])
    assert torch.allclose(e.contrastive_grid, ref_c, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
    assert torch.equal(e.concepts_grid, concept_map(feats, ex.concepts_.centroids_))


def test_the_steps_of_fit_build_what_fit_builds(data) -> None:
    """fit_level, fit_classifier and fit_concepts (the evaluation's way in) give fit's objects."""
    x, y = data
    torch.manual_seed(0)
    model = TinyResNet(3, width=8).eval()
    kw = dict(level="B34", n_prototypes=2, n_concepts=3, device="cpu", positions_per_image=8)
    whole = Explainer(model, **kw).fit(x, y)
    steps = Explainer(model, **kw)
    with pytest.raises(NotFittedError, match="fit_level"):
        steps.fit_concepts((x, y))
    steps.fit_level(x)
    assert steps.registration_ == whole.registration_ and steps.level_features_.sigma_.keys() == {"B3", "B4"}
    steps.fit_classifier(steps.level_features_.pooled(model, x), y).fit_concepts((x, y))
    for b, sigma in whole.level_features_.sigma_.items():
        assert steps.level_features_.sigma_[b] == pytest.approx(sigma, rel=1e-5)
    torch.testing.assert_close(steps.classifier_.prototypes_, whole.classifier_.prototypes_, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(steps.concepts_.centroids_, whole.concepts_.centroids_, rtol=1e-4, atol=1e-5)
    assert steps.temperature_ == pytest.approx(whole.temperature_, rel=1e-3)
    torch.testing.assert_close(steps.explain(x[:3]).attribution, whole.explain(x[:3]).attribution,
                               rtol=1e-4, atol=1e-4)
