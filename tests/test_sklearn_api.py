"""KMeans and KMeansClassifier as scikit-learn estimators: check_estimator, clone, pickle, labels, model selection."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.cluster import KMeans as SKKMeans
from sklearn.datasets import make_blobs
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from kmexplain_utils.classifier import KMeansClassifier
from kmexplain_utils.kmeans import KMeans

torch.set_num_threads(1)

@parametrize_with_checks([KMeans(device="cpu"), KMeansClassifier(device="cpu")])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def _multimodal(n_per_blob: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two classes, each three well separated blobs interleaved with the other class's:
    one prototype per class cannot separate them, three can."""
    centres = np.array([[0, 0], [10, 10], [20, 0], [10, 0], [0, 10], [20, 10]], dtype=float)
    X, blob = make_blobs(n_per_blob * 6, 2, centers=centres, cluster_std=0.8, random_state=seed)
    return X, (blob >= 3).astype(np.int64)


def _string_blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_blobs(150, 4, centers=3, cluster_std=1.0, random_state=seed)
    return X, np.array(["zebra", "ant", "moose"])[y]


def test_nothing_is_declared_as_an_expected_failure():
    """check_estimator passes with no exception: no expected failures and no skip tags on the estimators."""
    from sklearn.utils.estimator_checks import check_estimator

    for est in (KMeans(device="cpu"), KMeansClassifier(device="cpu")):
        assert not hasattr(est, "_xfail_checks") and not hasattr(est, "_more_tags")
        results = check_estimator(est, on_fail=None)
        failed = [(r["check_name"], r["status"]) for r in results if r["status"] != "passed"
                  # scikit-learn skips its array-API check unless SCIPY_ARRAY_API=1 is set: not ours to declare
                  and not (r["status"] == "skipped" and r["check_name"] == "check_array_api_input")]
        assert failed == [], failed
        assert len(results) > 40


def test_decision_function_is_per_class_and_prototype_scores_per_prototype():
    X, names = _string_blobs()
    clf = KMeansClassifier(n_prototypes=2, device="cpu").fit(X, names)
    d, p = clf.decision_function(X), clf.prototype_scores(X)
    assert d.shape == (150, 3) and p.shape == (150, 6)
    # column c = the best score among class c's prototypes, in classes_ order
    for c in range(3):
        np.testing.assert_allclose(d[:, c], p[:, clf.prototype_class_index_.numpy() == c].max(1))
    np.testing.assert_array_equal(clf.classes_[d.argmax(1)], clf.predict(X))
    np.testing.assert_allclose(d, clf.class_scores(X))
    # two classes: scikit-learn's (N,) convention, score of classes_[1] minus classes_[0]
    Xb, yb = _multimodal()
    two = KMeansClassifier(n_prototypes=3, device="cpu").fit(Xb, np.array(["no", "yes"])[yb])
    db, cs = two.decision_function(Xb), two.class_scores(Xb)
    assert db.shape == (len(Xb),)
    np.testing.assert_allclose(db, cs[:, 1] - cs[:, 0])
    np.testing.assert_array_equal(two.classes_[(db > 0).astype(int)], two.predict(Xb))
    t = two.decision_function(torch.from_numpy(Xb))
    assert isinstance(t, torch.Tensor) and t.shape == (len(Xb),)


# ------------------------------------------------------------------------ clone / params
def test_clone_and_set_params():
    clf = KMeansClassifier(n_prototypes=3, random_state=5, device="cpu", kmeans_kwargs={"n_init": 2})
    twin = clone(clf)
    assert twin is not clf and twin.get_params() == clf.get_params()
    X, y = _multimodal()
    clf.fit(X, y)
    fresh = clone(clf)
    assert not hasattr(fresh, "prototypes_") and not hasattr(fresh, "classes_")
    assert fresh.set_params(n_prototypes=1) is fresh and fresh.n_prototypes == 1
    assert fresh.fit(X, y).prototypes_.shape == (2, 2)
    assert clf.prototypes_.shape == (6, 2)

    km = KMeans(4, init=X[:4].copy(), device="cpu")
    kc = clone(km)
    assert kc.init is not km.init and np.array_equal(kc.init, km.init)
    assert kc.set_params(n_clusters=2, init="random").get_params()["n_clusters"] == 2
    with pytest.raises(ValueError, match="Invalid parameter 'n_clusterz'"):
        km.set_params(n_clusterz=3)


def test_hyper_parameters_are_validated_at_fit_not_in_init():
    X, y = _multimodal()
    bad = KMeansClassifier(n_prototypes="four", device=3.5)  # stored as given
    assert bad.n_prototypes == "four" and bad.device == 3.5
    with pytest.raises(ValueError, match="'device' parameter of KMeansClassifier must be an instance of 'str'"):
        bad.fit(X, y)
    bad.set_params(device="cpu")
    with pytest.raises(ValueError, match="'n_prototypes' parameter of KMeansClassifier must be an int"):
        bad.fit(X, y)
    with pytest.raises(ValueError, match="'max_iter' parameter of KMeans must be an int in the range"):
        KMeans(2, max_iter=0).fit(X)
    with pytest.raises(ValueError, match="'distributed' parameter of KMeans"):
        KMeans(2, distributed="yes").fit(X)


# ------------------------------------------------------------------------ pickle
def test_pickle_round_trip_gives_identical_predictions():
    X, names = _string_blobs()
    clf = KMeansClassifier(n_prototypes=2, device="cpu").fit(X, names)
    back = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(back.predict(X), clf.predict(X))
    np.testing.assert_array_equal(back.classes_, clf.classes_)
    assert torch.equal(back.prototypes_, clf.prototypes_)
    assert torch.equal(back.class_columns(["moose", "ant"]), clf.class_columns(["moose", "ant"]))

    for data in (X, torch.from_numpy(X)):
        km = KMeans(3, random_state=0, device="cpu").fit(data)
        kb = pickle.loads(pickle.dumps(km))
        assert type(kb.cluster_centers_) is type(km.cluster_centers_)
        out_a, out_b = km.predict(data), kb.predict(data)
        assert type(out_a) is type(out_b)
        np.testing.assert_array_equal(np.asarray(out_b), np.asarray(out_a))
        np.testing.assert_array_equal(np.asarray(kb.transform(data)), np.asarray(km.transform(data)))


# ------------------------------------------------------------------------ labels
def test_string_labels_are_sorted_and_predicted_as_strings():
    X, names = _string_blobs()
    clf = KMeansClassifier(n_prototypes=2, device="cpu").fit(X, names)
    assert clf.classes_.tolist() == ["ant", "moose", "zebra"]
    assert clf.prototype_labels_.tolist() == ["ant", "ant", "moose", "moose", "zebra", "zebra"]
    assert clf.prototype_class_index_.dtype == torch.int64
    assert clf.prototype_class_index_.tolist() == [0, 0, 1, 1, 2, 2]
    pred = clf.predict(X)
    assert isinstance(pred, np.ndarray) and pred.dtype.kind == "U"
    assert clf.score(X, names) > 0.95
    # brute force: the label of the nearest prototype
    mu = clf.prototypes_.double().numpy()
    nearest = ((X[:, None, :] - mu[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(pred, clf.prototype_labels_[nearest])
    # a tensor in, string labels: numpy strings out; scores stay tensors
    pred_t = clf.predict(torch.from_numpy(X))
    assert isinstance(pred_t, np.ndarray)
    np.testing.assert_array_equal(pred_t, pred)
    assert isinstance(clf.class_scores(torch.from_numpy(X)), torch.Tensor)
    assert isinstance(clf.class_scores(X), np.ndarray) and clf.class_scores(X).shape == (150, 3)
    # class_scores columns follow classes_
    np.testing.assert_array_equal(clf.classes_[clf.class_scores(X).argmax(1)], pred)


def test_numeric_labels_keep_their_kind_and_torch_in_gives_torch_out():
    X, y = _multimodal()
    labels = np.array([-3, 40])[y]
    clf = KMeansClassifier(n_prototypes=3, device="cpu").fit(torch.from_numpy(X).float(), torch.from_numpy(labels))
    assert isinstance(clf.classes_, np.ndarray) and clf.classes_.tolist() == [-3, 40]
    pred = clf.predict(torch.from_numpy(X).float())
    assert isinstance(pred, torch.Tensor) and pred.dtype == torch.int64 and pred.device.type == "cpu"
    assert set(pred.tolist()) <= {-3, 40}
    np.testing.assert_array_equal(clf.predict(X), pred.numpy())
    assert isinstance(clf.winning_prototype(X), np.ndarray)
    assert isinstance(clf.decision_function(torch.from_numpy(X)), torch.Tensor)
    scores, index = clf.best_prototype_per_class(X)
    assert isinstance(scores, torch.Tensor) and index.dtype == torch.int64 and scores.shape == (len(X), 2)


def test_list_input_equals_numpy_input():
    X, y = _multimodal()
    a = KMeansClassifier(n_prototypes=3, device="cpu").fit(X, y)
    b = KMeansClassifier(n_prototypes=3, device="cpu").fit(X.tolist(), y.tolist())
    assert torch.equal(a.prototypes_, b.prototypes_)
    pred = b.predict(X[:10].tolist())
    assert isinstance(pred, np.ndarray)
    np.testing.assert_array_equal(pred, a.predict(X[:10]))
    assert b.score(X.tolist(), y.tolist()) == a.score(X, y)

    km = KMeans(6, random_state=0, device="cpu").fit(X.tolist())
    np.testing.assert_array_equal(km.labels_, KMeans(6, random_state=0, device="cpu").fit(X).labels_)


def test_class_columns():
    X, names = _string_blobs()
    clf = KMeansClassifier(n_prototypes=1, device="cpu").fit(X, names)
    assert clf.class_columns("zebra").tolist() == 2 and clf.class_columns("zebra").dtype == torch.int64
    assert clf.class_columns(["zebra", "ant", "moose"]).tolist() == [2, 0, 1]
    assert clf.class_columns(np.array(["moose"])).tolist() == [1]
    assert clf.class_columns("ant", n=4).tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match=r"unknown class label\(s\) \['cat'\].*\['ant', 'moose', 'zebra'\]"):
        clf.class_columns(["ant", "cat"])
    with pytest.raises(ValueError, match="target has 2 labels but there are n=3 inputs"):
        clf.class_columns(["ant", "moose"], n=3)
    with pytest.raises(ValueError, match="1-D"):
        clf.class_columns([["ant"]])

    Xm, y = _multimodal()
    num = KMeansClassifier(n_prototypes=3, device="cpu").fit(torch.from_numpy(Xm), torch.from_numpy(y * 5 + 2))
    assert num.classes_.tolist() == [2, 7]
    cols = num.class_columns(torch.tensor([7, 2, 7]))
    assert cols.dtype == torch.int64 and cols.tolist() == [1, 0, 1]
    assert num.class_columns(7, n=2).tolist() == [1, 1]
    assert num.class_columns(np.int64(2)).tolist() == 0
    with pytest.raises(ValueError, match=r"unknown class label\(s\) \[3\].*\[2, 7\]"):
        num.class_columns(torch.tensor([3, 2]))
    # the columns select the class's column of class_scores / best_prototype_per_class
    scores, index = num.best_prototype_per_class(torch.from_numpy(Xm))
    col = num.class_columns(7, n=len(Xm))
    assert bool((num.prototype_class_index_[index.gather(1, col[:, None])[:, 0]] == 1).all())


def test_random_state_none_is_non_deterministic_and_an_int_is_deterministic():
    X = np.random.default_rng(0).uniform(size=(400, 3))  # no structure: many local optima
    y = np.arange(400) % 2
    fits = [KMeansClassifier(n_prototypes=6, random_state=None, device="cpu").fit(X, y) for _ in range(3)]
    assert not all(torch.equal(fits[0].prototypes_, f.prototypes_) for f in fits[1:])
    a, b = (KMeansClassifier(n_prototypes=6, random_state=4, device="cpu").fit(X, y) for _ in range(2))
    assert torch.equal(a.prototypes_, b.prototypes_)
    g1, g2 = (KMeansClassifier(6, random_state=np.random.RandomState(1), device="cpu").fit(X, y) for _ in range(2))
    assert torch.equal(g1.prototypes_, g2.prototypes_)  # equal generators, equal fits

    kms = [KMeans(7, random_state=None, device="cpu").fit(X).cluster_centers_ for _ in range(3)]
    assert not all(np.array_equal(kms[0], c) for c in kms[1:])


# ------------------------------------------------------------------------ agreement with scikit-learn
def test_kmeans_in_a_pipeline_matches_sklearn_kmeans():
    X, _ = make_blobs(600, 5, centers=4, cluster_std=2.0, random_state=1)
    C0 = StandardScaler().fit_transform(X)[:4].copy()
    ours = make_pipeline(StandardScaler(), KMeans(4, init=C0, device="cpu")).fit(X)
    theirs = make_pipeline(StandardScaler(), SKKMeans(4, init=C0, n_init=1, algorithm="lloyd")).fit(X)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    np.testing.assert_allclose(ours.transform(X), theirs.transform(X), rtol=1e-9, atol=1e-9)
    assert ours[-1].get_feature_names_out().tolist() == ["kmeans0", "kmeans1", "kmeans2", "kmeans3"]


# ------------------------------------------------------------------------ model selection
def test_cross_val_score_on_pooled_like_features():
    X, names = _string_blobs(seed=3)
    scores = cross_val_score(KMeansClassifier(n_prototypes=2, device="cpu"), X, names, cv=5)
    assert scores.shape == (5,) and np.isfinite(scores).all() and scores.min() > 0.9


def test_grid_search_over_n_prototypes_picks_enough_prototypes():
    X, y = _multimodal()
    search = GridSearchCV(KMeansClassifier(device="cpu"), {"n_prototypes": [1, 2, 3]}, cv=4).fit(X, y)
    means = search.cv_results_["mean_test_score"]
    assert np.isfinite(means).all()
    assert search.best_params_ == {"n_prototypes": 3}
    assert means[0] < 0.85 and means[2] > 0.98  # one prototype per class cannot fit three blobs
    assert search.best_estimator_.prototypes_.shape == (6, 2)
    assert search.score(X, y) > 0.98


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_outputs_stay_on_the_input_device_on_a_gpu():
    X, y = _multimodal()
    Xc, yc = torch.from_numpy(X).float().cuda(), torch.from_numpy(y).cuda()
    clf = KMeansClassifier(n_prototypes=3, device="cuda").fit(Xc, yc)
    pred = clf.predict(Xc)
    assert pred.device.type == "cuda" and pred.dtype == torch.int64
    np.testing.assert_array_equal(pred.cpu().numpy(), clf.predict(X))
    assert clf.class_columns(yc).device.type == "cuda"
    assert clf.score(Xc, yc) > 0.98
    # numpy in, fitted on the GPU: numpy attributes, predictions computed with the GPU centroids
    km = KMeans(6, random_state=0, device="cuda").fit(X)
    assert isinstance(km.cluster_centers_, np.ndarray) and isinstance(km.labels_, np.ndarray)
    np.testing.assert_array_equal(km.predict(X), km.labels_)
    kb = pickle.loads(pickle.dumps(km))
    np.testing.assert_array_equal(kb.predict(X), km.labels_)
    kt = KMeans(6, random_state=0, device="cuda").fit(Xc)
    assert kt.cluster_centers_.device.type == "cuda" and kt.predict(Xc).device.type == "cuda"
