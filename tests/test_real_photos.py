"""Chapter 6's plumbing: the photo split, K and K' on fitting data, agreement, concept content, sanity wrapper."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from kmexplain_utils import Explainer
from kmexplain_utils.evaluation import real_photos
from kmexplain_utils.data import photos as photo_data

pytest.importorskip("skimage")


# ----------------------------------------------------------------------------- the photos
def test_held_out_and_fitting_photos_are_disjoint_and_cover_all() -> None:
    assert not set(photo_data.HELD_OUT) & set(photo_data.FITTING)
    assert set(photo_data.HELD_OUT) | set(photo_data.FITTING) == set(photo_data.PHOTOS)
    assert set(photo_data.PHOTO_CLASSES) == set(photo_data.HELD_OUT)


def test_right_answers_are_imagenet_class_names() -> None:
    from kmexplain_utils.chapters.pretrained import imagenet_categories

    names = set(imagenet_categories())
    for photo, classes in photo_data.PHOTO_CLASSES.items():
        assert set(classes) <= names, (photo, set(classes) - names)


def test_every_photo_loads_as_rgb_in_unit_range() -> None:
    x, names = photo_data.load_photos(32)
    assert x.shape == (len(photo_data.PHOTOS), 3, 32, 32) and names == list(photo_data.PHOTOS)
    assert 0 <= float(x.min()) and float(x.max()) <= 1 and float(x.std()) > 0.01
    # distinct photos: no two held-out/fitting images are the same picture
    flat = x.flatten(1)
    d = torch.cdist(flat, flat) + torch.eye(len(flat)) * 1e9
    assert float(d.min()) > 1.0


def test_unknown_photo_is_named_in_the_error() -> None:
    with pytest.raises(ValueError, match="unknown photo 'nope'"):
        photo_data.load_photos(16, ["nope"])


def test_lfw_split_is_disjoint() -> None:
    (xf, yf), (xh, yh) = photo_data.lfw_split(16, 3, 4)
    assert xf.shape[0] == 6 and xh.shape[0] == 8
    assert yf.tolist() == [1] * 3 + [0] * 3 and yh.tolist() == [1] * 4 + [0] * 4
    d = torch.cdist(xf.flatten(1), xh.flatten(1))
    assert float(d.min()) > 0
    with pytest.raises(ValueError, match="at most 100"):
        photo_data.lfw_split(16, 60, 50)


# ----------------------------------------------------------------------------- predictions
def test_prediction_table_ranks_and_right_answers() -> None:
    p = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]])
    t = real_photos.prediction_table(p, ["a", "b"], ["x", "y", "z"], {"a": ["x"], "b": []}, top=2)
    assert t["top class"].tolist() == ["x", "z"] and t["runner-up"].tolist() == ["y", "y"]
    assert t["right"].tolist() == [True, False] and t["has class"].tolist() == [True, False]
    assert t.loc[0, "its rank"] == 1 and t.loc[1, "its rank"] == 0 and t.loc[0, "top-k"] == "x, y"
    with pytest.raises(ValueError, match="not class names"):
        real_photos.prediction_table(p, ["a", "b"], ["x", "y", "z"], {"a": ["w"], "b": []})
    with pytest.raises(KeyError, match="no right answers"):
        real_photos.prediction_table(p, ["a", "c"], ["x", "y", "z"], {"a": ["x"], "b": []})


def test_agreement_counts_top1_and_among_known() -> None:
    logits = torch.tensor([[0, 5.0, 1, 0], [0, 0, 1, 9.0], [3.0, 0, 1, 0]])
    scores = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])      # columns: classes 1 and 2
    a = real_photos.agreement(scores, [1, 2], logits)
    # image 0: head 1 = net 1; image 1: head 2, net 3 (unknown), best known 2; image 2: head 1, net 0, best known 2
    assert a == {"top1": pytest.approx(1 / 3), "among_known": pytest.approx(2 / 3), "known": pytest.approx(1 / 3),
                 "n": 3}
    with pytest.raises(ValueError, match="len\\(head_classes\\)"):
        real_photos.agreement(scores, [1], logits)


# ----------------------------------------------------------------------------- K and K'
def test_choose_n_prototypes_uses_validation_and_prefers_small_k_on_ties() -> None:
    g = torch.Generator().manual_seed(0)
    # class 0 has two far-apart modes: one prototype cannot serve both, two can
    a = torch.cat([torch.randn(20, 2, generator=g) * 0.1 + torch.tensor([0.0, 10]),
                   torch.randn(20, 2, generator=g) * 0.1 + torch.tensor([0.0, -10])])
    b = torch.randn(40, 2, generator=g) * 0.1 + torch.tensor([0.5, 0.0])
    Z, y = torch.cat([a, b]), np.array([0] * 40 + [1] * 40)
    K, t = real_photos.choose_n_prototypes(Z, y, [1, 2, 3])
    acc = dict(zip(t["K"], t["validation accuracy"]))
    assert acc[2] > acc[1] and K == 2                     # K = 3 ties with 2: the smaller wins
    assert t["validation images"].iloc[0] == 24           # 30 % of each class
    with pytest.raises(ValueError, match="no K"):
        real_photos.choose_n_prototypes(Z[:6], [0, 0, 0, 1, 1, 1], [5])
    with pytest.raises(ValueError, match="two rows"):
        real_photos.choose_n_prototypes(Z[:2], [0, 1], [1])


def test_choose_n_concepts_finds_the_number_of_blobs() -> None:
    g = torch.Generator().manual_seed(1)
    V = torch.cat([torch.randn(40, 4, generator=g) + 10 * i for i in range(4)])
    K, t = real_photos.choose_n_concepts(V, [2, 3, 4, 5, 6])
    assert K == 4 and t["silhouette"].idxmax() == 2
    with pytest.raises(ValueError, match="at least|\\[2,"):
        real_photos.choose_n_concepts(V, [1, 3])


@pytest.fixture(scope="module")
def fitted() -> tuple[Explainer, torch.Tensor]:
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    x = torch.rand(12, 3, 64, 64)
    ex = Explainer(net, level="B34", n_prototypes=1, n_concepts=4, positions_per_image=8, device="cpu")
    return ex.fit(x, [0, 1, 2] * 4), x


def test_refit_concepts_reuses_the_sample_and_leaves_the_original(fitted) -> None:
    ex, x = fitted
    twin = real_photos.refit_concepts(ex, 2)
    assert twin.concepts_.centroids_.shape[0] == 2 and twin.n_concepts == 2
    assert ex.concepts_.centroids_.shape[0] == 4 and ex.n_concepts == 4
    assert twin.concepts_.sample_ is ex.concepts_.sample_
    e = twin.explain(x[:2])
    assert int(e.concepts.max()) < 2 and e.concept_contributions.shape == (2, 2)


# ----------------------------------------------------------------------------- what the concepts are
def test_colour_name_hues_and_greys() -> None:
    assert real_photos.colour_name(np.array([0.1, 0.8, 0.1])) == "green"
    assert real_photos.colour_name(np.array([0.9, 0.6, 0.1])) == "orange"
    assert real_photos.colour_name(np.array([0.3, 0.1, 0.05])) == "dark red"
    assert real_photos.colour_name(np.array([0.95, 0.95, 0.95])) == "white"


def test_concept_content_of_a_two_colour_image() -> None:
    x = torch.zeros(1, 3, 16, 16)
    x[0, 2, :, 8:] = 1.0                                  # right half blue
    x[0, :, :, :8] = 0.3 + 0.3 * (torch.arange(16) % 2).float()[None, :, None]  # left half grey, striped
    c = torch.zeros(1, 16, 16, dtype=torch.long)
    c[0, :, 8:] = 1
    t = real_photos.concept_content(x, c, 3, step=1)
    assert t["share"].tolist() == [0.5, 0.5, 0.0]
    assert t["colour"].tolist()[:2] == ["grey", "blue"] and t.loc[2, "name"] == "(absent)"
    assert t.loc[0, "texture"] > t.loc[1, "texture"] and t.loc[0, "name"].endswith("textured")
    with pytest.raises(ValueError, match="concepts must be"):
        real_photos.concept_content(x, c[0], 2)


def test_colour_explains_colour_clusters_and_not_colour_blind_ones() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g)
    by_colour = (x[:, 0] > 0.5).long()                   # concept = red channel high
    r = real_photos.colour_explains_concepts(x, by_colour, 2, step=1)
    assert r["colour"] > 0.9 and r["colour"] > r["majority"] + 0.3
    blind = torch.randint(0, 2, (2, 32, 32), generator=g)  # concept unrelated to colour
    r = real_photos.colour_explains_concepts(x, blind, 2, step=1)
    assert r["colour"] < r["majority"] + 0.05 and r["eta2"] < 0.02


# ----------------------------------------------------------------------------- the sanity check: chapter 5's protocol
def test_real_photos_has_no_protocol_of_its_own() -> None:
    assert not {"randomization_protocol", "sanity_maps", "shared_part_share"} & set(dir(real_photos))


def test_shared_protocol_runs_on_efficientnet_lite0_with_cam_only() -> None:
    """Chapter 6's call: the shared protocol on EfficientNet-Lite0, whose head is not a ResNet ``fc``."""
    pytest.importorskip("efficientnet_lite_pytorch")
    from kmexplain_utils.chapters.pretrained import efficientnet_lite0
    from kmexplain_utils.evaluation import sanity

    torch.manual_seed(0)
    net = efficientnet_lite0(weights=False, image_size=64).eval()
    assert not hasattr(net, "fc")
    x = torch.rand(6, 3, 64, 64)
    ex = Explainer(net, level="B34", n_prototypes=1, n_concepts=2, positions_per_image=4, device="cpu")
    ex.fit(x, [0, 1, 2] * 2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    recs = sanity.randomisation_protocol(net, {"B34": ex}, x[:3], baselines=["cam"], n_stages=2)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the network is untouched
    cascade = [r for r in recs if r.metric == "spearman"]
    assert [r.stage for r in cascade] == ["head"] * 5 + ["B4"] * 5
    assert {(r.level, r.method) for r in cascade} == {
        ("B34", "kmeans"), ("B34", "contrastive"), ("B34", "class-specific"), ("B34", "shared"), ("B4", "cam")}
    assert all(r.per_image.shape == (3,) for r in cascade)
    v = sanity.verdicts(recs)                                  # chapter 5's rule reads the B4 step
    assert v == {(r.level, r.method): r.median < sanity.PASS_THRESHOLD for r in cascade if r.stage == "B4"}
    shares = {r.metric: r.per_image for r in recs if r.step == 0}
    np.testing.assert_allclose(shares["shared_share"] + shares["specific_share"], 1.0)


def test_linear_probe_separates() -> None:
    probe = real_photos.linear_probe(torch.tensor([[0.0, 0], [0, 1], [5, 5], [5, 6]]), [0, 0, 1, 1])
    assert probe.score([[0.0, 0.5], [5.0, 5.5]], [0, 1]) == 1.0
