"""KMeans: agreement with scikit-learn, edge cases, validation, streaming."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans as SKKMeans
from sklearn.datasets import make_blobs

from kmexplain_utils._validation import NotFittedError
from kmexplain_utils.kmeans import KMeans


def _np(a):
    """A fitted array attribute as numpy: a tensor when fitted on a tensor, numpy otherwise."""
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


torch.set_num_threads(1)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _relu_mixture(n: int, d: int, k: int, seed: int) -> np.ndarray:
    """CNN-like data: post-ReLU Gaussian mixture."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(k, d))
    z = rng.integers(k, size=n)
    return np.maximum(mu[z] + 0.8 * rng.normal(size=(n, d)), 0.0)


def _datasets():
    X1, _ = make_blobs(1500, 6, centers=5, cluster_std=2.5, random_state=0)
    X2 = _relu_mixture(2000, 32, 6, seed=1)
    X3 = np.random.default_rng(2).uniform(size=(800, 3))  # no structure at all
    X4, _ = make_blobs(600, 2, centers=[[0, 0], [0, 1], [5, 5]], cluster_std=0.7, random_state=3)
    return {"blobs": (X1, 5), "relu": (X2, 8), "uniform": (X3, 7), "overlap": (X4, 4)}


def _first_centroids(X: np.ndarray, k: int, seed: int) -> np.ndarray:
    return X[np.random.default_rng(seed).choice(len(X), k, replace=False)].copy()


@pytest.mark.parametrize("name", list(_datasets()))
@pytest.mark.parametrize("device", DEVICES)
def test_matches_sklearn_float64(name, device):
    X, k = _datasets()[name]
    C0 = _first_centroids(X, k, seed=10)
    sk = SKKMeans(k, init=C0, n_init=1, algorithm="lloyd", max_iter=300, tol=1e-4).fit(X)
    km = KMeans(k, init=C0, device=device).fit(X)
    assert isinstance(km.cluster_centers_, np.ndarray) and km.cluster_centers_.dtype == np.float64
    np.testing.assert_array_equal(km.labels_, sk.labels_)
    assert km.inertia_ == pytest.approx(sk.inertia_, rel=1e-10)
    assert km.n_iter_ == sk.n_iter_
    np.testing.assert_allclose(_np(km.cluster_centers_), sk.cluster_centers_, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["blobs", "relu"])
@pytest.mark.parametrize("device", DEVICES)
def test_matches_sklearn_float32(name, device):
    X, k = _datasets()[name]
    X = X.astype(np.float32)
    C0 = _first_centroids(X, k, seed=11)
    sk = SKKMeans(k, init=C0, n_init=1, algorithm="lloyd").fit(X)
    km = KMeans(k, init=C0, device=device).fit(X)
    assert km.cluster_centers_.dtype == np.float32
    assert (km.labels_ == sk.labels_).mean() >= 0.999
    assert km.inertia_ == pytest.approx(sk.inertia_, rel=1e-4)


def test_tolerance_is_sklearns():
    """With a loose tol both stop at the same iteration, before convergence."""
    X, k = _datasets()["relu"]
    C0 = _first_centroids(X, k, seed=3)
    for tol in (1e-1, 1e-2, 1e-3):
        sk = SKKMeans(k, init=C0, n_init=1, algorithm="lloyd", tol=tol).fit(X)
        km = KMeans(k, init=C0, tol=tol, device="cpu").fit(X)
        assert km.n_iter_ == sk.n_iter_
        assert km.inertia_ == pytest.approx(sk.inertia_, rel=1e-10)
    # max_iter is honoured
    km = KMeans(k, init=C0, tol=0, max_iter=2, device="cpu").fit(X)
    sk = SKKMeans(k, init=C0, n_init=1, algorithm="lloyd", tol=0, max_iter=2).fit(X)
    assert km.n_iter_ == 2
    assert km.inertia_ == pytest.approx(sk.inertia_, rel=1e-10)


def test_transform_score_predict_consistent_with_sklearn():
    X, k = _datasets()["blobs"]
    C0 = _first_centroids(X, k, seed=4)
    sk = SKKMeans(k, init=C0, n_init=1, algorithm="lloyd").fit(X)
    km = KMeans(k, init=C0, device="cpu").fit(X)
    Xn = np.random.default_rng(5).normal(scale=5, size=(300, X.shape[1]))
    np.testing.assert_allclose(km.transform(Xn), sk.transform(Xn), rtol=1e-9, atol=1e-9)
    assert km.score(Xn) == pytest.approx(sk.score(Xn), rel=1e-10)
    np.testing.assert_array_equal(km.predict(Xn), sk.predict(Xn))
    np.testing.assert_array_equal(km.predict(Xn), km.transform(Xn).argmin(1))
    assert km.score(X) == pytest.approx(-km.inertia_, rel=1e-12)
    np.testing.assert_array_equal(km.fit_predict(X), sk.labels_)


def test_k_equals_n():
    X = np.random.default_rng(0).normal(size=(12, 3))
    km = KMeans(12, random_state=0, device="cpu").fit(X)
    assert km.inertia_ == pytest.approx(0.0, abs=1e-20)
    assert sorted(km.labels_.tolist()) == list(range(12))
    C = np.sort(_np(km.cluster_centers_), axis=0)
    np.testing.assert_allclose(C, np.sort(X, axis=0))


def test_k_greater_than_n_is_a_clear_error():
    X = np.zeros((5, 2))
    with pytest.raises(ValueError, match=r"n_clusters=6.*n_samples=5.*n_clusters <= 5"):
        KMeans(6, device="cpu").fit(X)


def test_duplicate_points():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(4, 3))
    X = np.repeat(base, 50, axis=0)  # 4 distinct points, 50 copies each
    km = KMeans(4, random_state=0, device="cpu").fit(X)
    assert km.inertia_ == pytest.approx(0.0, abs=1e-12)
    assert len(np.unique(_np(km.labels_))) == 4
    # more clusters than distinct points: runs, inertia 0, labels valid
    km = KMeans(6, random_state=0, device="cpu").fit(X)
    assert km.inertia_ == pytest.approx(0.0, abs=1e-12)
    assert km.labels_.min() >= 0 and km.labels_.max() < 6


def test_empty_cluster_is_reseeded_like_sklearn():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(100, 2)), rng.normal(size=(100, 2)) + 10])
    C0 = np.array([[0.0, 0.0], [10.0, 10.0], [1000.0, 1000.0]])  # the third gets no point
    sk = SKKMeans(3, init=C0, n_init=1, algorithm="lloyd").fit(X)
    km = KMeans(3, init=C0, device="cpu").fit(X)
    assert np.bincount(_np(km.labels_), minlength=3).min() > 0
    np.testing.assert_array_equal(_np(km.labels_), sk.labels_)
    assert km.inertia_ == pytest.approx(sk.inertia_, rel=1e-10)
    np.testing.assert_allclose(_np(km.cluster_centers_), sk.cluster_centers_, atol=1e-9)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_error(bad):
    X = np.random.default_rng(0).normal(size=(50, 3))
    X[7, 1] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        KMeans(3, device="cpu").fit(X)
    km = KMeans(3, device="cpu", random_state=0).fit(np.nan_to_num(X, nan=0, posinf=0, neginf=0))
    with pytest.raises(ValueError, match="NaN or infinite"):
        km.predict(X)


def test_shape_errors_name_the_expected_shape():
    with pytest.raises(ValueError, match=r"\(n_samples, n_features\).*got shape \(10,\)"):
        KMeans(2, device="cpu").fit(np.zeros(10))
    with pytest.raises(ValueError, match=r"\(n_samples, n_features\).*permute"):
        KMeans(2, device="cpu").fit(torch.zeros(2, 3, 4, 4))
    km = KMeans(2, random_state=0, device="cpu").fit(np.random.default_rng(0).normal(size=(20, 3)))
    with pytest.raises(ValueError, match=r"X has 4 features, but KMeans is expecting 3 features"):
        km.predict(np.zeros((5, 4)))
    kt = KMeans(2, random_state=0, device="cpu").fit(torch.randn(20, 3))
    with pytest.raises(ValueError, match=r"X has 4 features, but KMeans is expecting 3 features.*\(n_samples, 3\)"):
        kt.predict(torch.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"init must have shape \(n_clusters, n_features\) = \(2, 3\)"):
        KMeans(2, init=np.zeros((3, 3)), device="cpu").fit(np.zeros((20, 3)))
    with pytest.raises(ValueError, match="'init' parameter of KMeans must be"):
        KMeans(2, init="kmeans", device="cpu").fit(np.zeros((20, 3)))


def test_not_fitted():
    km = KMeans(3)
    for method in (km.predict, km.transform, km.score):
        with pytest.raises(NotFittedError, match="fit"):
            method(np.zeros((4, 2)))


def test_float64_stays_float64_and_float32_stays_float32():
    X = np.random.default_rng(0).normal(size=(200, 4))
    km = KMeans(3, random_state=0, device="cpu").fit(X)
    assert km.cluster_centers_.dtype == np.float64
    assert km.transform(X).dtype == np.float64
    km = KMeans(3, random_state=0, device="cpu").fit(X.astype(np.float32))
    assert km.cluster_centers_.dtype == np.float32
    assert km.transform(X.astype(np.float32)).dtype == np.float32
    kt = KMeans(3, random_state=0, device="cpu").fit(torch.from_numpy(X))
    assert kt.cluster_centers_.dtype == torch.float64


def test_numpy_and_torch_inputs_agree_and_types_follow_input():
    X = _relu_mixture(500, 8, 4, seed=0).astype(np.float32)
    a = KMeans(4, random_state=3, device="cpu").fit(X)
    b = KMeans(4, random_state=3, device="cpu").fit(torch.from_numpy(X))
    # fitted attributes follow the input type: numpy for numpy, tensors for tensors
    assert isinstance(a.cluster_centers_, np.ndarray) and isinstance(a.labels_, np.ndarray)
    assert isinstance(b.cluster_centers_, torch.Tensor) and isinstance(b.labels_, torch.Tensor)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_.numpy())
    np.testing.assert_array_equal(a.labels_, b.labels_.numpy())
    assert a.labels_.dtype == np.int64 and a.labels_.shape == (500,)
    assert b.labels_.dtype == torch.int64
    assert isinstance(b.fit_predict(torch.from_numpy(X)), torch.Tensor)
    # lists are arrays (numpy out), not streams
    c = KMeans(4, random_state=3, device="cpu").fit(X.tolist())
    np.testing.assert_array_equal(c.labels_, a.labels_)
    assert isinstance(c.predict(X[:5].tolist()), np.ndarray)
    p_np = a.predict(X)
    p_t = a.predict(torch.from_numpy(X))
    assert isinstance(p_np, np.ndarray) and p_np.dtype == np.int64
    assert isinstance(p_t, torch.Tensor) and p_t.dtype == torch.int64 and p_t.device.type == "cpu"
    np.testing.assert_array_equal(p_np, p_t.numpy())
    assert isinstance(a.transform(torch.from_numpy(X)), torch.Tensor)
    assert isinstance(a.score(X), float)
    assert isinstance(a.fit_predict(X), np.ndarray)


@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_deterministic_for_a_seed(init):
    X = _relu_mixture(3000, 16, 5, seed=7).astype(np.float32)
    a = KMeans(6, init=init, random_state=42, n_init=2, device="cpu").fit(X)
    b = KMeans(6, init=init, random_state=42, n_init=2, device="cpu").fit(X)
    assert np.array_equal(_np(a.cluster_centers_), _np(b.cluster_centers_))
    assert np.array_equal(_np(a.labels_), _np(b.labels_))
    assert a.inertia_ == b.inertia_
    c = KMeans(6, init=init, random_state=43, device="cpu").fit(X)
    assert not np.array_equal(_np(a.cluster_centers_), _np(c.cluster_centers_))


def test_kmeanspp_quality_close_to_sklearn():
    X, _ = make_blobs(4000, 5, centers=10, cluster_std=1.0, random_state=0)
    ours = [KMeans(10, random_state=s, device="cpu").fit(X).inertia_ for s in range(3)]
    theirs = [SKKMeans(10, random_state=s, n_init=1).fit(X).inertia_ for s in range(3)]
    assert np.median(ours) <= 1.05 * np.median(theirs)


def test_inputs_not_modified():
    X = _relu_mixture(400, 6, 3, seed=0).astype(np.float32)
    X_copy = X.copy()
    C0 = _first_centroids(X, 3, seed=0)
    C0_copy = C0.copy()
    Xt = torch.from_numpy(X.copy())
    Xt_copy = Xt.clone()
    km = KMeans(3, init=C0, device="cpu").fit(X)
    km.predict(X), km.transform(X), km.score(X)
    KMeans(3, random_state=0, device="cpu").fit(Xt).predict(Xt)
    np.testing.assert_array_equal(X, X_copy)
    np.testing.assert_array_equal(C0, C0_copy)
    assert torch.equal(Xt, Xt_copy)
    # the fitted centroids do not alias the init array
    assert not np.shares_memory(_np(km.cluster_centers_), C0)


def test_chunk_size_does_not_change_the_result():
    X = _relu_mixture(1000, 12, 5, seed=1)
    C0 = _first_centroids(X, 5, seed=1)
    ref = KMeans(5, init=C0, device="cpu").fit(X)
    for chunk in (13, 128, 5000):
        km = KMeans(5, init=C0, device="cpu", chunk_size=chunk).fit(X)
        assert np.array_equal(_np(km.labels_), _np(ref.labels_))
        assert km.inertia_ == pytest.approx(ref.inertia_, rel=1e-12)


def test_n_init_keeps_the_best_run():
    X, _ = make_blobs(1000, 4, centers=8, cluster_std=1.5, random_state=1)
    singles = [KMeans(8, random_state=5, device="cpu", init="random").fit(X).inertia_]
    best = KMeans(8, random_state=5, n_init=4, device="cpu", init="random").fit(X)
    assert best.inertia_ <= singles[0] + 1e-9
    assert best.score(X) == pytest.approx(-best.inertia_, rel=1e-12)


def test_params_follow_sklearn_contract():
    km = KMeans(5, init="random", random_state=1)
    assert km.get_params()["n_clusters"] == 5
    assert km.set_params(n_clusters=3) is km and km.n_clusters == 3
    X = np.random.default_rng(0).normal(size=(50, 2))
    assert km.fit(X) is km
    with pytest.raises(ValueError, match=r"'n_clusters' parameter of KMeans must be an int in the range \[1, inf\)"):
        KMeans(0).fit(X)
    with pytest.raises(ValueError, match="'tol' parameter"):
        KMeans(2, tol=-1.0).fit(X)


# ---------------------------------------------------------------- streaming and sampling
def _batches_of(X: np.ndarray, b: int):
    return lambda: (X[i : i + b] for i in range(0, len(X), b))


def test_stream_equals_in_memory_when_the_sample_is_everything():
    X = _relu_mixture(1200, 10, 4, seed=3)
    C0 = _first_centroids(X, 4, seed=3)
    ref = KMeans(4, init=C0, device="cpu").fit(X)
    km = KMeans(4, init=C0, device="cpu", sample_size=5000).fit(_batches_of(X, 100))
    # the sample is the whole stream (in another order): same centroids, labels, inertia
    np.testing.assert_allclose(_np(km.cluster_centers_), _np(ref.cluster_centers_), rtol=1e-9, atol=1e-9)
    assert np.array_equal(_np(km.labels_), _np(ref.labels_))
    assert km.inertia_ == pytest.approx(ref.inertia_, rel=1e-9)
    assert km.n_samples_seen_ == 1200


def test_stream_on_a_sample_is_close_and_labels_are_nearest_centroids():
    X = _relu_mixture(6000, 16, 5, seed=4).astype(np.float32)
    C0 = _first_centroids(X, 5, seed=4)
    full = KMeans(5, init=C0, device="cpu").fit(X)
    km = KMeans(5, init=C0, random_state=0, device="cpu", sample_size=1500).fit(_batches_of(X, 512))
    assert km.labels_.shape == (6000,)
    np.testing.assert_array_equal(_np(km.labels_), km.predict(X))
    assert km.inertia_ == pytest.approx(-km.score(X), rel=1e-5)
    assert km.inertia_ <= 1.01 * full.inertia_
    # a list of batches and (x, y) tuples work too; deterministic for a seed
    km2 = KMeans(5, init=C0, random_state=0, device="cpu", sample_size=1500).fit(
        [(torch.from_numpy(X[i : i + 512]), None) for i in range(0, 6000, 512)]
    )
    assert np.array_equal(_np(km.cluster_centers_), _np(km2.cluster_centers_))


def test_stream_reservoir_is_uniform():
    """Each row enters the reservoir with probability m/n (checked on row indices)."""
    n, m = 2000, 200
    X = np.arange(n, dtype=np.float64).reshape(-1, 1)
    counts = np.zeros(n)
    for seed in range(30):
        km = KMeans(1, init=np.zeros((1, 1)), max_iter=1, device="cpu", sample_size=m, random_state=seed)
        km.fit(_batches_of(X, 97))
        # the single centroid is the mean of the sample: E = mean of all rows
        counts[0] += km.cluster_centers_.item()
    mean_of_means = counts[0] / 30
    se = np.sqrt(np.var(np.arange(n)) / m / 30)
    assert abs(mean_of_means - (n - 1) / 2) < 4 * se


def test_stream_errors():
    X = np.random.default_rng(0).normal(size=(100, 3))
    gen = (X[i : i + 10] for i in range(0, 100, 10))
    with pytest.raises(TypeError, match="callable"):
        KMeans(2, device="cpu").fit(gen)
    bad = X.copy()
    bad[55, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        KMeans(2, device="cpu").fit(_batches_of(bad, 10))
    with pytest.raises(ValueError, match="features"):
        KMeans(2, device="cpu").fit(lambda: iter([X[:10], X[10:20, :2]]))
    with pytest.raises(ValueError, match="n_clusters=200.*n_samples=100"):
        KMeans(200, device="cpu").fit(_batches_of(X, 10))


def test_in_memory_sample_size():
    X = _relu_mixture(5000, 8, 4, seed=5).astype(np.float32)
    km = KMeans(4, random_state=1, sample_size=1000, device="cpu").fit(X)
    np.testing.assert_array_equal(_np(km.labels_), km.predict(X))
    assert km.inertia_ == pytest.approx(-km.score(X), rel=1e-5)
    ref = KMeans(4, random_state=1, device="cpu").fit(X)
    assert km.inertia_ <= 1.02 * ref.inertia_


def test_bfloat16_products_flip_few_labels():
    X = _relu_mixture(3000, 64, 8, seed=6).astype(np.float32)
    C0 = _first_centroids(X, 8, seed=6)
    a = KMeans(8, init=C0, device="cpu").fit(X)
    b = KMeans(8, init=C0, device="cpu", matmul_dtype="bfloat16").fit(X)
    assert b.cluster_centers_.dtype == np.float32
    assert np.mean(_np(a.labels_) == _np(b.labels_)) >= 0.98
    assert b.inertia_ == pytest.approx(a.inertia_, rel=1e-2)
    with pytest.raises(ValueError, match="float16.*CPU"):
        KMeans(8, device="cpu", matmul_dtype="float16").fit(X)


def test_worker_threads_give_the_same_fit_and_restore_torch_threads(monkeypatch):
    """The CPU span workers (one per thread) change nothing but speed."""
    X = _relu_mixture(3000, 20, 6, seed=8)  # float64: sums are exact enough to compare tightly
    C0 = _first_centroids(X, 6, seed=8)
    monkeypatch.setenv("KMEX_KMEANS_THREADS", "1")
    one = KMeans(6, init=C0, device="cpu", chunk_size=256).fit(X)
    monkeypatch.setenv("KMEX_KMEANS_THREADS", "3")
    before = torch.get_num_threads()
    three = KMeans(6, init=C0, device="cpu", chunk_size=256).fit(X)
    assert torch.get_num_threads() == before
    assert np.array_equal(_np(one.labels_), _np(three.labels_))
    assert one.n_iter_ == three.n_iter_
    np.testing.assert_allclose(_np(three.cluster_centers_), _np(one.cluster_centers_), rtol=1e-12, atol=1e-12)
    assert three.inertia_ == pytest.approx(one.inertia_, rel=1e-12)
    np.testing.assert_array_equal(three.predict(X), one.predict(X))
    np.testing.assert_allclose(three.transform(X), one.transform(X), rtol=1e-12)


# ---------------------------------------------------------------- the benchmark module
def test_bench_data_streams_and_small_run(tmp_path):
    from kmexplain_utils.kmeans import bench

    X = bench.make_cnn_like(5000, 16, n_modes=8, seed=3, batch_size=1000)
    assert X.dtype == np.float32 and X.min() == 0.0 and (X == 0).mean() > 0.2  # post-ReLU
    np.testing.assert_array_equal(X, bench.make_cnn_like(5000, 16, n_modes=8, seed=3, batch_size=1000))
    streamed = np.concatenate(list(bench.cnn_like_batches(5000, 16, n_modes=8, seed=3, batch_size=1000)()))
    np.testing.assert_array_equal(streamed, X)
    path = tmp_path / "X.npy"
    np.save(path, X)
    from_file = np.concatenate([b.copy() for b in bench.memmap_batches(path, 700)()])
    np.testing.assert_array_equal(from_file, X)

    recs = bench.bench_kmeans(3000, 16, 4, 3, repeats=1, engines=("project", "sklearn"), isolate=False)
    by = {r["engine"]: r for r in recs}
    assert set(by) == {"project", "sklearn", "ratios"}
    assert by["project"]["n_iter"] == by["sklearn"]["n_iter"] == 3
    assert by["project"]["inertia_exact"] == pytest.approx(by["sklearn"]["inertia_exact"], rel=1e-4)
    assert by["ratios"]["project/sklearn"] == pytest.approx(by["project"]["s_per_iter"] / by["sklearn"]["s_per_iter"])
    assert 0 < by["project"]["gflops"] and by["project"]["peak_gflops"] > 0
    out = tmp_path / "r.json"
    import json

    out.write_text(json.dumps([bench._jsonable(r) for r in recs]))
    loaded = bench.load_results(tmp_path)
    assert len(bench.results_table(loaded)) == 2
    assert "project/sklearn" in bench.markdown_report(loaded)


def test_bench_like_for_like_engines():
    """project-lloyd and sklearn-elkan run the same iterations; records name the algorithm."""
    from kmexplain_utils.kmeans import bench

    recs = bench.bench_kmeans(2000, 64, 256, 4, repeats=1, isolate=False,
                              engines=("project", "project-lloyd", "sklearn-elkan"))
    by = {r["engine"]: r for r in recs}
    assert by["project"]["algorithm"] == "hamerly"  # d k = 16384: the bounds are used
    assert by["project-lloyd"]["algorithm"] == "lloyd" and by["project-lloyd"]["distance_fraction"] == 1.0
    assert by["sklearn-elkan"]["algorithm"] == "elkan" and by["sklearn-elkan"]["distance_fraction"] is None
    assert by["project"]["inertia_exact"] == pytest.approx(by["project-lloyd"]["inertia_exact"], rel=1e-9)
    assert by["project"]["inertia_exact"] == pytest.approx(by["sklearn-elkan"]["inertia_exact"], rel=1e-4)
    assert {"project/project-lloyd", "project/sklearn-elkan"} <= set(by["ratios"])
    with pytest.raises(ValueError, match="unknown engine 'sklearn-full'"):
        bench.run_engine("sklearn-full", np.zeros((10, 2), np.float32), np.zeros((2, 2), np.float32), 1)


def test_plot_distance_fraction_draws_one_curve_per_fit():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kmexplain_utils.kmeans import bench

    fig = bench.plot_distance_fraction({"a": [1.0, 0.5, 0.25], "b": np.ones(4)})
    ax = fig.axes[0]
    assert [ln.get_label() for ln in ax.lines] == ["a", "b"]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [100.0, 50.0, 25.0])
    np.testing.assert_allclose(ax.lines[1].get_xdata(), [1, 2, 3, 4])
    _, given = plt.subplots()
    assert bench.plot_distance_fraction({"a": [1.0]}, ax=given) is given.figure
    plt.close("all")
