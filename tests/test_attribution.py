"""Tests of the gradient-free attribution maps (METHOD 5)."""

from __future__ import annotations

import pytest
import torch

from kmexplain_utils.attribution import (
    GridExplanation,
    attribution_map,
    cam,
    concept_contributions,
    contrastive_map,
    explain,
    upsample_map,
)
from kmexplain_utils.classifier import KMeansClassifier
from kmexplain_utils.concepts import ConceptModel, concept_map
from kmexplain_utils.features import LevelFeatures


from tiny_models import SmallResNetLike


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = SmallResNetLike().eval()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(18, 3, 16, 16, generator=g)
    y = torch.arange(18) % 3
    lf = LevelFeatures("B234").fit(model, x)
    clf = KMeansClassifier(n_prototypes=2, device="cpu").fit(lf.pooled(model, x), y)
    return model, x, y, lf, clf


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_attribution_mean_equals_prototype_score(dtype: torch.dtype, tol: float) -> None:
    g = torch.Generator().manual_seed(0)
    A = torch.randn(4, 6, 5, 7, generator=g).to(dtype)
    mu = torch.randn(4, 6, generator=g).to(dtype)
    z = A.mean((2, 3))
    m = attribution_map(A, mu)
    assert m.shape == (4, 5, 7) and m.dtype == dtype
    score = 2 * (z * mu).sum(1) - (mu * mu).sum(1)
    assert torch.allclose(m.mean((1, 2)), score, atol=tol, rtol=0)
    # ranking over prototypes equals that of negative squared distances
    d2 = ((z - mu) ** 2).sum(1)
    assert torch.allclose(score, -d2 + (z * z).sum(1), atol=tol * 10)
    # a single (D,) prototype is broadcast to every image
    assert torch.allclose(attribution_map(A, mu[0]), attribution_map(A, mu[0].expand(4, -1)))
    # pointwise definition
    assert torch.allclose(m[1, 2, 3], 2 * A[1, :, 2, 3] @ mu[1] - mu[1] @ mu[1], atol=tol)


def test_upsampling_interpolates_between_registered_centres() -> None:
    A = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    mu = torch.rand(3, dtype=torch.float64)
    grid = attribution_map(A, mu)
    up = attribution_map(A, mu, size=(16, 16))  # stride 4, offset 0: position i is centred on pixel 4 i
    assert up.shape == (2, 16, 16)
    # at a position's centre the image map takes the position's value (no blur, no shift) ...
    assert torch.allclose(up[:, ::4, ::4], grid)
    # ... half-way between two centres it is their average, and past the last centre the border is kept
    assert torch.allclose(up[:, 0, 2], (grid[:, 0, 0] + grid[:, 0, 1]) / 2)
    assert torch.allclose(up[:, 0, 13:], grid[:, 0, 3:4].expand(2, 3))
    const = upsample_map(torch.full((1, 3, 3), 2.5), (9, 12))
    assert torch.allclose(const, torch.full((1, 9, 12), 2.5))


def test_attribution_validation() -> None:
    with pytest.raises(ValueError, match=r"\(N, D\) = \(2, 3\) or \(D,\) = \(3,\)"):
        attribution_map(torch.rand(2, 3, 4, 4), torch.rand(2, 4))
    with pytest.raises(ValueError, match=r"\(N, D, H, W\)"):
        attribution_map(torch.rand(3, 4, 4), torch.rand(3))
    with pytest.raises(TypeError, match="torch.Tensor"):
        attribution_map(torch.rand(2, 3, 4, 4), [1.0, 2.0, 3.0])  # type: ignore[arg-type]


def test_explain_winning_prototype(setup) -> None:
    model, x, y, lf, clf = setup
    e = explain(model, x, lf, clf)
    assert isinstance(e, GridExplanation)
    z = lf.pooled(model, x)
    s = clf.prototype_scores(z)
    assert torch.equal(e.prototype, s.argmax(1))
    assert torch.equal(e.predicted, clf.predict(z))
    assert torch.allclose(e.score, s.max(1).values, atol=1e-6)
    assert torch.allclose(e.attribution.mean((1, 2)), e.score, atol=1e-5)
    assert e.attribution.shape == (18, 8, 8)
    assert e.upsampled().shape == (18, 16, 16)
    with torch.no_grad():
        assert torch.allclose(e.logits, model(x), atol=1e-6)
    assert torch.allclose(e.class_scores, clf.class_scores(z))


def test_gradient_free(setup) -> None:
    """No gradient is needed: works with frozen parameters and builds no graph."""
    model, x, y, lf, clf = setup
    xr = x.clone().requires_grad_(True)
    e = explain(model, xr, lf, clf)
    assert not e.attribution.requires_grad and not e.score.requires_grad
    assert not cam(model, xr).requires_grad
    frozen = SmallResNetLike().eval().requires_grad_(False)
    lf2 = LevelFeatures("B34").fit(frozen, x)
    clf2 = KMeansClassifier(2, device="cpu").fit(lf2.pooled(frozen, x), y)
    with torch.no_grad():
        e2 = explain(frozen, x, lf2, clf2)
    assert torch.allclose(e2.attribution.mean((1, 2)), e2.score, atol=1e-5)


def test_contrastive_map(setup) -> None:
    model, x, y, lf, clf = setup
    feats = lf.position_features(model, x)
    m, info = contrastive_map(feats, clf, return_info=True)
    scores = clf.class_scores(feats.mean((2, 3)))
    top2 = scores.topk(2, dim=1).values
    assert torch.allclose(m.mean((1, 2)), top2[:, 0] - top2[:, 1], atol=1e-5)
    assert torch.allclose(info["margin"], top2[:, 0] - top2[:, 1], atol=1e-6)
    assert (info["margin"] >= 0).all()
    # brute force: the prediction is the class of the nearest centroid, and the map is a difference of
    # squared distances of every position vector to the two prototypes
    z = feats.mean((2, 3)).double()
    mu = clf.prototypes_.double()
    nearest = torch.cdist(z, mu).argmin(1)
    assert torch.equal(torch.as_tensor(info["predicted"]), torch.as_tensor(clf.prototype_labels_)[nearest])
    assert (torch.as_tensor(info["rival_class"]) != torch.as_tensor(info["predicted"])).all()
    a = feats.double().permute(0, 2, 3, 1)  # (N, H, W, D)
    d_win = (a - mu[info["winner"]][:, None, None]).pow(2).sum(-1)
    d_rival = (a - mu[info["rival"]][:, None, None]).pow(2).sum(-1)
    assert torch.allclose(m.double(), d_rival - d_win, atol=1e-4)
    # against a chosen class
    m0, info0 = contrastive_map(feats, clf, versus=0, return_info=True)
    assert (info0["rival_class"] == 0).all()
    assert torch.allclose(m0.mean((1, 2)), scores[:, info0["predicted"]].diagonal() - scores[:, 0], atol=1e-5)
    assert contrastive_map(feats, clf, size=16).shape == (18, 16, 16)
    with pytest.raises(ValueError, match=r"unknown class label\(s\) \[9\]"):
        contrastive_map(feats, clf, versus=9)


def test_concept_contributions_sum_to_score(setup) -> None:
    model, x, y, lf, clf = setup
    e = explain(model, x, lf, clf)
    cm = ConceptModel(5, level="B234", positions_per_image=4, device="cpu").fit(model, x, level_features=lf)
    cmap = concept_map(e.position_features, cm.centroids_)
    contrib = concept_contributions(e.attribution, cmap, 5)
    assert contrib.shape == (18, 5)
    assert torch.allclose(contrib.sum(1), e.score, atol=1e-5)
    # definition: (n_k / |P|) * mean of m over the concept's positions
    i, k = 0, int(cmap[0].flatten()[0])
    mask = cmap[i] == k
    expected = mask.sum() / mask.numel() * e.attribution[i][mask].mean()
    assert torch.allclose(contrib[i, k], expected, atol=1e-6)
    absent = [kk for kk in range(5) if not (cmap[i] == kk).any()]
    assert all(contrib[i, kk] == 0 for kk in absent)


def test_concept_contributions_validation() -> None:
    m = torch.rand(2, 4, 4)
    with pytest.raises(ValueError, match="same shape.*do not upsample"):
        concept_contributions(m, torch.zeros(2, 8, 8, dtype=torch.long), 3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        concept_contributions(m, torch.full((2, 4, 4), 3), 3)
    with pytest.raises(TypeError, match="integer"):
        concept_contributions(m, torch.zeros(2, 4, 4), 3)


def test_cam_mean_equals_logit(setup) -> None:
    model, x, y, lf, clf = setup
    with torch.no_grad():
        logits = model(x)
    c = cam(model, x)
    assert c.shape == (18, 2, 2)
    assert torch.allclose(c.mean((1, 2)), logits.max(1).values, atol=1e-5)
    c1 = cam(model, x, target=1, size=16)
    assert c1.shape == (18, 16, 16)
    assert torch.allclose(cam(model, x, target=1).mean((1, 2)), logits[:, 1], atol=1e-5)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        cam(model, x, target=7)


def test_no_mutation(setup) -> None:
    model, x, y, lf, clf = setup
    x0, P0 = x.clone(), clf.prototypes_.clone()
    feats = lf.position_features(model, x)
    f0 = feats.clone()
    explain(model, x, lf, clf)
    contrastive_map(feats, clf)
    attribution_map(feats, clf.prototypes_[0], size=16)
    assert torch.equal(x, x0) and torch.equal(clf.prototypes_, P0) and torch.equal(feats, f0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_whole_pipeline_follows_the_cuda_device() -> None:
    from kmexplain_utils.features import extract_pooled, sample_positions
    from kmexplain_utils.prototypes import nearest_images, nearest_patches, prototype_representativeness

    torch.manual_seed(0)
    cpu_model = SmallResNetLike().eval()
    model = SmallResNetLike().eval().cuda()
    model.load_state_dict(cpu_model.state_dict())
    x_cpu = torch.rand(18, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    y_cpu = torch.arange(18) % 3
    x, y = x_cpu.cuda(), y_cpu.cuda()
    lf = LevelFeatures("B234").fit(model, x)
    lf_cpu = LevelFeatures("B234").fit(cpu_model, x_cpu)
    assert lf.sigma_ == pytest.approx(lf_cpu.sigma_, rel=1e-2)
    feats = lf.position_features(model, x)
    assert feats.is_cuda
    Z, labels = extract_pooled(model, (x, y), lf, batch_size=5)
    assert Z.is_cuda and labels.is_cuda
    Zc, _ = extract_pooled(model, (x_cpu, y_cpu), lf, batch_size=5)  # CPU input: CPU output
    assert not Zc.is_cuda and torch.allclose(Zc, Z.cpu(), atol=1e-5)
    clf = KMeansClassifier(n_prototypes=2, device="auto").fit(Z, labels)
    assert clf.prototypes_.is_cuda
    assert clf.predict(Z).is_cuda and not clf.predict(Z.cpu()).is_cuda
    head = clf.as_linear()
    assert torch.equal(clf.classes_.cuda()[head(Z).argmax(1)], clf.predict(Z))
    e = explain(model, x, lf, clf)
    for t in (e.attribution, e.prototype, e.predicted, e.score, e.class_scores):
        assert t.is_cuda
    assert torch.allclose(e.attribution.mean((1, 2)), e.score, atol=1e-4)
    m, info = contrastive_map(e.position_features, clf, return_info=True)
    assert m.is_cuda and torch.allclose(m.mean((1, 2)), info["margin"], atol=1e-4)
    cm = ConceptModel(4, level="B234", positions_per_image=4, device="auto").fit(model, (x, y), level_features=lf)
    cmap = cm.concept_map(model, x)
    assert cmap.is_cuda and cmap.shape == (18, 8, 8)
    contrib = concept_contributions(e.attribution, cmap, 4)
    assert contrib.is_cuda and torch.allclose(contrib.sum(1), e.score, atol=1e-4)
    c = cam(model, x, size=16)
    assert c.is_cuda and c.shape == (18, 16, 16)
    assert nearest_images(clf.prototypes_, Z, k=3).is_cuda
    r = prototype_representativeness(clf.prototypes_, Z, rescale=True)
    assert r.distance.is_cuda and float(r.ratio.max()) < 10
    patches = nearest_patches(cm.centroids_[0], cm.sample_, k=3)
    assert patches.image_index.shape == (3,)
    s = sample_positions(model, (x, y), lf, per_image=3)
    assert not s.vectors.is_cuda and s.vectors.shape == (54, lf.n_features_)


def test_choose_prototypes_is_the_one_rule() -> None:
    """Target = prediction by default, rival = the best other class; given columns are used as they are."""
    from kmexplain_utils.attribution import choose_prototypes

    Z = torch.tensor([[0.0], [0.2], [1.0], [1.3], [4.0], [4.4]])
    clf = KMeansClassifier(2, device="cpu").fit(Z, [0, 0, 1, 1, 2, 2])
    z = torch.tensor([[0.9], [3.0], [-1.0]])
    c = choose_prototypes(clf, z)
    scores = clf.class_scores(z)
    assert torch.equal(c.predicted, scores.argmax(1)) and torch.equal(c.target, c.predicted)
    second = scores.clone()
    second[torch.arange(3), c.target] = -torch.inf
    assert torch.equal(c.rival, second.argmax(1))
    assert torch.allclose(c.score, scores.max(1).values) and torch.allclose(c.margin, c.score - second.max(1).values)
    P = clf.prototypes_
    # the chosen prototypes are the classes' best: their scores are the class scores
    assert torch.allclose(2 * (z * P[c.prototype]).sum(1) - (P[c.prototype] ** 2).sum(1), c.score)
    assert torch.equal(clf.prototype_class_index_[c.rival_prototype], c.rival)
    fixed = choose_prototypes(clf, z, target=torch.tensor(2), versus=torch.tensor([0, 0, 1]))
    assert fixed.target.tolist() == [2, 2, 2] and fixed.rival.tolist() == [0, 0, 1]
    assert torch.allclose(fixed.margin, scores[:, 2] - scores[torch.arange(3), torch.tensor([0, 0, 1])])
    one = KMeansClassifier(1, device="cpu").fit(Z[:2], [0, 0])
    c1 = choose_prototypes(one, z)
    assert c1.rival is None and c1.margin is None and c1.target.tolist() == [0, 0, 0]
