"""Hamerly's bounds: the same fit as plain Lloyd, bounds that are true bounds under rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans as SKKMeans
from sklearn.datasets import make_blobs

from kmexplain_utils.kmeans._bounds import (
    bounds_from_partial,
    center_shifts,
    half_separation,
    product_error_factor,
)
from kmexplain_utils.kmeans._dist import Assigner
from kmexplain_utils.kmeans import KMeans


def _np(a):
    """A fitted array attribute as numpy: a tensor when fitted on a tensor, numpy otherwise."""
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


torch.set_num_threads(1)


def _relu_mixture(n: int, d: int, modes: int, seed: int, offset: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(modes, d))
    z = rng.integers(modes, size=n)
    return np.maximum(mu[z] + rng.normal(size=(n, d)), 0.0) + offset


def _cases():
    blobs, _ = make_blobs(3000, 8, centers=12, cluster_std=3.0, random_state=0)
    return {
        # overlapping CNN-like clusters: many points near a boundary, labels change for long
        "relu-f32": (_relu_mixture(4000, 64, 40, seed=1).astype(np.float32), 16),
        "relu-f64": (_relu_mixture(3000, 48, 30, seed=2), 12),
        # a large common offset: the matrix-product form loses most of its digits
        "offset-f32": (_relu_mixture(3000, 32, 20, seed=3, offset=300.0).astype(np.float32), 10),
        "blobs-f64": (blobs, 12),
    }


def _fit(X, k, algorithm, C0, device="cpu", **kw):
    return KMeans(k, init=C0, algorithm=algorithm, device=device, **kw).fit(X)


@pytest.mark.parametrize("name", list(_cases()))
@pytest.mark.parametrize("threads", [1, 2])
def test_hamerly_equals_lloyd(name, threads, monkeypatch):
    """Same labels, iterations and centroids as plain Lloyd, from the same start.

    In float64 exactly. In float32 plain Lloyd decides a near-tie (distances equal to about
    1e-7) by the rounding of its products, which depends on how a BLAS blocks them, and the
    bounded step computes its candidates in other blocks: on another machine a rare flip could
    send the two fits along slightly different paths, so float32 is compared within that
    (on this project's machine the float32 fits are identical too).
    """
    monkeypatch.setenv("KMEX_KMEANS_THREADS", str(threads))
    X, k = _cases()[name]
    C0 = X[np.random.default_rng(7).choice(len(X), k, replace=False)].copy()
    for tol, max_iter in ((0.0, 300), (1e-4, 300), (0.0, 3)):
        ham = _fit(X, k, "hamerly", C0, tol=tol, max_iter=max_iter, chunk_size=256)
        llo = _fit(X, k, "lloyd", C0, tol=tol, max_iter=max_iter, chunk_size=256)
        if X.dtype == np.float64:
            np.testing.assert_array_equal(_np(ham.labels_), _np(llo.labels_))
            assert ham.n_iter_ == llo.n_iter_
            np.testing.assert_allclose(_np(ham.cluster_centers_), _np(llo.cluster_centers_), rtol=1e-12, atol=1e-12)
            assert ham.inertia_ == pytest.approx(llo.inertia_, rel=1e-12)
        else:
            assert np.mean(_np(ham.labels_) == _np(llo.labels_)) >= 0.995
            assert ham.inertia_ == pytest.approx(llo.inertia_, rel=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["relu-f32", "offset-f32", "blobs-f64"])
def test_hamerly_equals_lloyd_on_cuda(name):
    """The bounded step is device-agnostic torch code; on a GPU it must give Lloyd's fit too."""
    X, k = _cases()[name]
    C0 = X[np.random.default_rng(7).choice(len(X), k, replace=False)].copy()
    ham = _fit(X, k, "hamerly", C0, device="cuda", tol=0.0, max_iter=100)
    llo = _fit(X, k, "lloyd", C0, device="cuda", tol=0.0, max_iter=100)
    assert ham.algorithm_ == "hamerly" and llo.algorithm_ == "lloyd"
    np.testing.assert_array_equal(_np(ham.labels_), _np(llo.labels_))
    assert ham.n_iter_ == llo.n_iter_
    assert ham.distance_fraction_.mean() < 1.0


def test_hamerly_matches_sklearn_float64_and_converges_strictly():
    X, k = _cases()["relu-f64"]
    C0 = X[np.random.default_rng(3).choice(len(X), k, replace=False)].copy()
    sk = SKKMeans(k, init=C0, n_init=1, algorithm="lloyd", tol=0.0, max_iter=500).fit(X)
    km = _fit(X, k, "hamerly", C0, tol=0.0, max_iter=500)
    assert km.n_iter_ < 500  # stopped because no label changed
    np.testing.assert_array_equal(_np(km.labels_), sk.labels_)
    assert km.n_iter_ == sk.n_iter_
    assert km.inertia_ == pytest.approx(sk.inertia_, rel=1e-10)


def test_hamerly_with_empty_cluster_and_single_cluster():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(100, 2)), rng.normal(size=(100, 2)) + 10])
    C0 = np.array([[0.0, 0.0], [10.0, 10.0], [1000.0, 1000.0]])  # the third is empty at first
    sk = SKKMeans(3, init=C0, n_init=1, algorithm="lloyd").fit(X)
    km = _fit(X, 3, "hamerly", C0)
    np.testing.assert_array_equal(_np(km.labels_), sk.labels_)
    assert km.inertia_ == pytest.approx(sk.inertia_, rel=1e-10)
    one = _fit(X, 1, "hamerly", X[:1].copy())
    np.testing.assert_allclose(_np(one.cluster_centers_)[0], X.mean(0), rtol=1e-12)
    assert (one.labels_ == 0).all()
    assert one.n_iter_ == _fit(X, 1, "lloyd", X[:1].copy()).n_iter_


def test_hamerly_with_bf16_products_stays_close_to_lloyd():
    X, k = _cases()["relu-f32"]
    C0 = X[:k].copy()
    ham = _fit(X, k, "hamerly", C0, matmul_dtype="bfloat16", max_iter=20, tol=0.0)
    llo = _fit(X, k, "lloyd", C0, matmul_dtype="bfloat16", max_iter=20, tol=0.0)
    # bf16 Lloyd decides near ties by rounded products, the bounds by exact distances:
    # nearly all labels agree and the inertias are within rounding
    assert np.mean(_np(ham.labels_) == _np(llo.labels_)) > 0.98
    assert ham.inertia_ == pytest.approx(llo.inertia_, rel=1e-3)


@pytest.mark.parametrize("offset", [0.0, 1e3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matrix_product_error_is_within_the_margin(offset, dtype):
    """|matrix-product form - exact| <= gamma (||x||^2 + ||c||^2), even with a large offset."""
    g = torch.Generator().manual_seed(0)
    d, k = 512, 33
    X = (torch.rand(2000, d, generator=g) + offset).to(dtype)
    C = (X[:k] + 1e-3 * torch.randn(k, d, generator=g, dtype=dtype)).to(dtype)
    A = Assigner(k, d, 4096, dtype, torch.device("cpu"))
    A.set_centers(C)
    approx = A.partial_distances(X).to(torch.float64) + (X * X).sum(1).to(torch.float64).unsqueeze(1)
    X64, C64 = X.to(torch.float64), C.to(torch.float64)
    exact = ((X64.unsqueeze(1) - C64.unsqueeze(0)) ** 2).sum(-1)
    scale = (X64 * X64).sum(1).unsqueeze(1) + (C64 * C64).sum(1).unsqueeze(0)
    err = (approx - exact).abs()
    gamma = product_error_factor(d, dtype)
    assert bool((err <= gamma * scale).all())
    if offset:  # the margin is not vacuous: the observed error reaches a visible share of it
        assert float((err / (gamma * scale)).max()) > 1e-4


def test_half_separation_and_shifts_are_bounds():
    g = torch.Generator().manual_seed(1)
    C = torch.randn(20, 50, generator=g, dtype=torch.float64)
    s = half_separation(C)
    exact = torch.cdist(C, C).fill_diagonal_(float("inf")).min(1).values / 2
    assert bool((s <= exact).all()) and torch.allclose(s, exact, rtol=1e-9)
    assert torch.isinf(half_separation(C[:1])).all()
    C2 = C + 0.1 * torch.randn(20, 50, generator=g, dtype=torch.float64)
    shift, other = center_shifts(C, C2)
    true = (C2 - C).norm(dim=1)
    assert bool((shift >= true).all())
    for j in range(20):
        assert float(other[j]) == float(torch.cat([shift[:j], shift[j + 1 :]]).max())


def test_bounds_from_partial_bracket_the_distances():
    g = torch.Generator().manual_seed(2)
    X = torch.rand(300, 40, generator=g)
    C = torch.rand(7, 40, generator=g)
    A = Assigner(7, 40, 512, torch.float32, torch.device("cpu"))
    A.set_centers(C)
    lab = torch.empty(300, dtype=torch.int64)
    v1, v2 = A.assign_top2(X, lab)
    xs = (X * X).sum(1).to(torch.float64)
    u, low = bounds_from_partial(v1, v2, xs, (xs + A.max_center_sq) * product_error_factor(40, torch.float32))
    D = torch.cdist(X.double(), C.double())
    assert torch.equal(lab, D.argmin(1))
    own = D.gather(1, lab.unsqueeze(1)).squeeze(1)
    others = D.scatter(1, lab.unsqueeze(1), float("inf")).min(1).values
    assert bool((u >= own).all()) and bool((low <= others).all())
    assert float((u - own).max()) < 1e-2 and float((others - low).max()) < 1e-2


def test_algorithm_is_validated():
    with pytest.raises(ValueError, match=r"'algorithm' parameter of KMeans must be a str among \{.*'hamerly'.*\}. Got 'elkan'"):
        KMeans(2, algorithm="elkan").fit(np.zeros((4, 2)))
    assert KMeans(2).get_params()["algorithm"] == "auto"


def test_auto_gives_lloyds_fit_and_saves_work_only_on_wide_data():
    """Behaviour, not the rule: same fit as Lloyd (exactly, in float64); products skipped on wide data only."""
    rng = np.random.default_rng(0)
    def blobs(d: int) -> np.ndarray:  # 8 overlapping blobs: several iterations, most points settle early
        centres = rng.normal(size=(8, d))
        return centres[rng.integers(0, 8, 400)] + 0.7 * rng.normal(size=(400, d))
    small, wide = blobs(8), blobs(1024)
    for X, k in ((small, 4), (wide, 16)):
        auto = KMeans(k, random_state=0, device="cpu").fit(X)
        lloyd = KMeans(k, random_state=0, device="cpu", algorithm="lloyd").fit(X)
        np.testing.assert_array_equal(auto.labels_, lloyd.labels_)
        np.testing.assert_allclose(auto.inertia_, lloyd.inertia_, rtol=1e-12)
        assert (lloyd.distance_fraction_ == 1.0).all()
    assert (KMeans(4, random_state=0, device="cpu").fit(small).distance_fraction_ == 1.0).all()
    assert KMeans(16, random_state=0, device="cpu").fit(wide).distance_fraction_.min() < 1.0

def test_distance_fraction_reports_the_work_the_bounds_save():
    X, k = _cases()["relu-f32"]
    C0 = X[:k].copy()
    ham = _fit(X, k, "hamerly", C0, tol=0.0, max_iter=30)
    llo = _fit(X, k, "lloyd", C0, tol=0.0, max_iter=30)
    assert llo.distance_fraction_.shape == (llo.n_iter_,) and (llo.distance_fraction_ == 1.0).all()
    frac = ham.distance_fraction_
    assert frac.shape == (ham.n_iter_,) and frac[0] == 1.0
    assert 0.0 <= frac.min() and frac.mean() < 0.8 and frac[-5:].mean() < 0.5
    # a fit on a sample reports the fractions of the sample
    sub = KMeans(k, init=C0, sample_size=1000, algorithm="hamerly", device="cpu").fit(X)
    assert sub.distance_fraction_[0] == 1.0 and len(sub.distance_fraction_) == sub.n_iter_


def test_exact_ties_are_broken_as_lloyd_breaks_them():
    """Exact ties (an integer grid, integer start) end in the same fit as Lloyd's first-index rule."""
    g = np.stack(np.meshgrid(np.arange(12.0), np.arange(12.0)), -1).reshape(-1, 2)
    X = np.repeat(g, 3, axis=0)
    C0 = np.array([[2.0, 2.0], [4.0, 2.0], [2.0, 8.0], [8.0, 8.0], [10.0, 4.0]])
    for dtype in (np.float64, np.float32):
        ham = _fit(X.astype(dtype), 5, "hamerly", C0.astype(dtype), tol=0.0, max_iter=50)
        llo = _fit(X.astype(dtype), 5, "lloyd", C0.astype(dtype), tol=0.0, max_iter=50)
        np.testing.assert_array_equal(_np(ham.labels_), _np(llo.labels_))
        assert ham.n_iter_ == llo.n_iter_


def test_margin_widens_when_float32_products_may_be_reduced():
    """TF32/bf16 float32 products (set_float32_matmul_precision) need a wider margin."""
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        full = product_error_factor(896, torch.float32)
        torch.set_float32_matmul_precision("high")
        tf32 = product_error_factor(896, torch.float32)
        torch.set_float32_matmul_precision("medium")
        bf16 = product_error_factor(896, torch.float32)
    finally:
        torch.set_float32_matmul_precision(before)
    assert full < tf32 < bf16
    assert bf16 == pytest.approx(product_error_factor(896, torch.float32, torch.bfloat16))
    assert product_error_factor(896, torch.float64) < 1e-12
