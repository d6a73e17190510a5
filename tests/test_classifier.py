"""Tests of the per-class k-means classifier (METHOD 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kmexplain_utils._validation import NotFittedError
from kmexplain_utils.classifier import KMeansClassifier, PrototypeHead
from kmexplain_utils.sem import decompose_logits


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes, each a mixture of two blobs (multimodal), plus overlap."""
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(6, 5, generator=g) * 3
    Z = torch.cat([centres[i] + torch.randn(40, 5, generator=g) for i in range(6)])
    y = torch.arange(6).repeat_interleave(40) // 2
    return Z, y


def test_predict_equals_nearest_centroid_and_linear_form(data) -> None:
    Z, y = data
    clf = KMeansClassifier(n_prototypes=2, device="cpu").fit(Z, y)
    mu = clf.prototypes_
    assert mu.shape == (6, 5) and clf.prototype_labels_.tolist() == [0, 0, 1, 1, 2, 2]
    Zq = torch.randn(300, 5, generator=torch.Generator().manual_seed(5)) * 4
    d2 = ((Zq[:, None, :] - mu[None]) ** 2).sum(-1)  # explicit squared distances
    assert isinstance(clf.prototype_labels_, np.ndarray) and isinstance(clf.classes_, np.ndarray)
    nearest = torch.from_numpy(clf.prototype_labels_)[d2.argmin(1)]
    assert torch.equal(clf.predict(Zq), nearest)
    assert torch.equal(clf.winning_prototype(Zq), d2.argmin(1))
    head = clf.as_linear()
    assert isinstance(head, PrototypeHead)
    with torch.no_grad():
        assert torch.equal(torch.from_numpy(clf.classes_)[head(Zq).argmax(1)], nearest)
        assert torch.allclose(head(Zq), clf.class_scores(Zq), atol=1e-5)
        assert torch.allclose(head.prototype_scores(Zq), clf.prototype_scores(Zq), atol=1e-5)
    # the head's per-prototype scores are negative squared distances plus ||z||^2 (brute force)
    with torch.no_grad():
        brute = -d2 + (Zq**2).sum(1, keepdim=True)
        assert torch.allclose(head.prototype_scores(Zq), brute, rtol=1e-4, atol=1e-3)
    assert clf.score(Z, y) > 0.9


def test_scores_are_negative_squared_distances_up_to_a_row_constant(data) -> None:
    Z, y = data
    Z64 = Z.double()
    clf = KMeansClassifier(n_prototypes=3, device="cpu").fit(Z64, y)
    s = clf.prototype_scores(Z64)
    d2 = ((Z64[:, None, :] - clf.prototypes_[None]) ** 2).sum(-1)
    assert torch.allclose(s + d2, (Z64**2).sum(1, keepdim=True).expand_as(s), atol=1e-9)
    assert torch.equal(s.argsort(1), (-d2).argsort(1))


def test_prototypes_are_centroids_of_their_class_members(data) -> None:
    Z, y = data
    clf = KMeansClassifier(n_prototypes=2, device="cpu").fit(Z, y)
    for j, c in enumerate(clf.prototype_labels_.tolist()):
        Zc = Z[y == c]
        own = clf.prototypes_[clf.prototype_labels_ == c]
        assign = ((Zc[:, None] - own[None]) ** 2).sum(-1).argmin(1)
        local = j - int((clf.prototype_labels_ < c).sum())
        members = Zc[assign == local]
        assert torch.allclose(clf.prototypes_[j], members.mean(0), atol=1e-4)
        assert int(clf.prototype_sizes_[j]) == len(members)


def test_as_linear_is_an_sem_over_positions() -> None:
    """Prototype scores of pooled maps = spatial mean of per-position prototype scores."""
    g = torch.Generator().manual_seed(1)
    A = torch.rand(12, 6, 4, 4, generator=g, dtype=torch.float64)
    z = A.mean((2, 3))
    clf = KMeansClassifier(n_prototypes=2, device="cpu").fit(z, torch.arange(12) % 3)
    m = decompose_logits(A, clf.as_linear().linear)
    assert m.shape == (12, 6, 4, 4)
    assert torch.allclose(m.mean((2, 3)), clf.prototype_scores(z), atol=1e-12)


def test_best_prototype_per_class(data) -> None:
    Z, y = data
    clf = KMeansClassifier(n_prototypes=2, device="cpu").fit(Z, y)
    scores, index = clf.best_prototype_per_class(Z)
    assert torch.allclose(scores, clf.class_scores(Z))
    assert torch.equal(clf.prototype_class_index_[index], torch.arange(3).expand(len(Z), 3))
    s = clf.prototype_scores(Z)
    assert torch.allclose(s.gather(1, index), scores)


def test_arbitrary_labels_numpy_io_and_determinism(data) -> None:
    Z, y = data
    labels = torch.tensor([2, 5, 7])[y]
    clf = KMeansClassifier(n_prototypes=2, random_state=3, device="cpu").fit(Z.numpy(), labels.numpy())
    assert clf.classes_.tolist() == [2, 5, 7]
    pred = clf.predict(Z.numpy())
    assert isinstance(pred, np.ndarray) and set(pred.tolist()) <= {2, 5, 7}
    assert isinstance(clf.prototype_scores(Z.numpy()), np.ndarray)
    assert isinstance(clf.decision_function(Z.numpy()), np.ndarray)
    assert clf.score(Z.numpy(), labels.numpy()) == clf.score(Z, labels)
    again = KMeansClassifier(n_prototypes=2, random_state=3, device="cpu").fit(Z, labels)
    assert torch.equal(again.prototypes_, clf.prototypes_)


def test_small_class_is_capped_with_a_warning() -> None:
    Z = torch.randn(23, 3, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0] * 20 + [1] * 3)
    with pytest.warns(UserWarning, match=r"class 1 has only 3 .*n_prototypes=5.*3 prototype"):
        clf = KMeansClassifier(n_prototypes=5, device="cpu").fit(Z, y)
    assert clf.n_prototypes_per_class_ == {0: 5, 1: 3}
    assert clf.prototypes_.shape == (8, 3)
    assert clf.class_scores(Z).shape == (23, 2)
    assert (clf.predict(Z[20:]) == 1).all()  # each member is its own prototype


def test_not_fitted_and_validation_messages(data) -> None:
    Z, y = data
    clf = KMeansClassifier()
    with pytest.raises(NotFittedError, match="not fitted.*fit"):
        clf.predict(Z)
    with pytest.raises(NotFittedError):
        clf.as_linear()
    with pytest.raises(ValueError, match=r"\(N, D\).*Pool feature maps"):
        KMeansClassifier(device="cpu").fit(torch.rand(4, 3, 2, 2), torch.zeros(4))
    with pytest.raises(ValueError, match=r"y must have shape \(N,\) = \(240,\)"):
        KMeansClassifier(device="cpu").fit(Z, y[:10])
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        KMeansClassifier(device="cpu").fit(Z, y.double() + 0.5)
    with pytest.raises(ValueError, match="NaN"):
        Zbad = Z.clone()
        Zbad[0, 0] = float("nan")
        KMeansClassifier(device="cpu").fit(Zbad, y)
    with pytest.raises(ValueError, match=r"'n_prototypes' parameter of KMeansClassifier must be an int in the range \[1, inf\)"):
        KMeansClassifier(n_prototypes=0).fit(Z, y)
    with pytest.raises(ValueError, match="'random_state' parameter"):
        KMeansClassifier(random_state=-1).fit(Z, y)
    with pytest.raises(ValueError, match="must not set 'n_clusters'"):
        KMeansClassifier(kmeans_kwargs={"n_clusters": 3}).fit(Z, y)
    fitted = KMeansClassifier(n_prototypes=1, device="cpu").fit(Z, y)
    with pytest.raises(ValueError, match=r"X has 4 features, but KMeansClassifier is expecting 5 features.*\(n_samples, 5\)"):
        fitted.predict(Z[:, :4])
    with pytest.raises(ValueError, match=r"X has 4 features, but KMeansClassifier is expecting 5 features"):
        fitted.predict(Z[:, :4].numpy())
    with pytest.raises(ValueError, match="NaN"):
        fitted.predict(Zbad)
    with pytest.raises(ValueError, match=r"Reshape your data"):
        fitted.predict(Z[0].numpy())


def test_does_not_mutate_inputs(data) -> None:
    Z, y = data
    Z0, y0 = Z.clone(), y.clone()
    clf = KMeansClassifier(n_prototypes=2, device="cpu").fit(Z, y)
    clf.prototype_scores(Z)
    head = clf.as_linear()
    with torch.no_grad():
        head.linear.weight.add_(1.0)  # the head is a copy
    assert torch.equal(Z, Z0) and torch.equal(y, y0)
    assert not torch.equal(head.linear.weight, 2 * clf.prototypes_)
