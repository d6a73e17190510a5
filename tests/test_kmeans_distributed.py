"""KMeans under torch.distributed: 2 processes on gloo equal one process."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

from kmexplain_utils.kmeans import KMeans


def _np(a):
    """A fitted array attribute as numpy: a tensor when fitted on a tensor, numpy otherwise."""
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


pytestmark = pytest.mark.distributed

WORLD = 2


def _data(n: int = 3000, d: int = 12, k: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(k, d))
    z = rng.integers(k, size=n)
    return np.maximum(mu[z] + 0.8 * rng.normal(size=(n, d)), 0.0)


def _split(n: int) -> list[int]:
    return [0, n // 3, n]  # uneven shards: 1/3 and 2/3


CASES = {
    # name: KMeans keyword arguments
    "kmeans++": dict(n_clusters=6, random_state=3),
    "random-n_init": dict(n_clusters=6, random_state=4, init="random", n_init=2),
    "sample": dict(n_clusters=6, random_state=5, sample_size=700),
    "empty": dict(n_clusters=3, init=np.array([[0.0] * 12, [1.0] * 12, [1e3] * 12]), max_iter=50),
    # Hamerly's bounds are per point, so each rank keeps its own; sums and counts are all-reduced
    "hamerly": dict(n_clusters=6, random_state=7, algorithm="hamerly"),
    "hamerly-empty": dict(
        n_clusters=3, init=np.array([[0.0] * 12, [1.0] * 12, [1e3] * 12]), max_iter=50, algorithm="hamerly"
    ),
}


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        X = _data()
        cuts = _split(len(X))
        shard = X[cuts[rank] : cuts[rank + 1]]
        results = {}
        for name, kw in CASES.items():
            km = KMeans(device="cpu", **kw).fit(shard)
            results[name] = (_np(km.cluster_centers_), _np(km.labels_), km.inertia_, km.n_iter_)
        # a stream per rank: centroids agreed across ranks, inertia summed over ranks
        batches = lambda: (shard[i : i + 250] for i in range(0, len(shard), 250))  # noqa: E731
        km = KMeans(n_clusters=6, random_state=6, device="cpu", sample_size=900).fit(batches)
        results["stream"] = (_np(km.cluster_centers_), _np(km.labels_), km.inertia_, km.n_iter_)
        np.save(os.path.join(out_dir, f"rank{rank}.npy"), np.array(results, dtype=object), allow_pickle=True)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def dist_results(tmp_path_factory):
    import torch.multiprocessing as mp

    tmp = tmp_path_factory.mktemp("dist")
    init_file = str(tmp / "init")
    sys.path.insert(0, os.path.dirname(__file__))
    mp.spawn(_worker, args=(init_file, str(tmp)), nprocs=WORLD, join=True)
    return [np.load(tmp / f"rank{r}.npy", allow_pickle=True).item() for r in range(WORLD)]


@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_equal_one_process(dist_results, name):
    X = _data()
    ref = KMeans(device="cpu", distributed=False, **CASES[name]).fit(X)
    cuts = _split(len(X))
    for rank, res in enumerate(dist_results):
        C, labels, inertia, n_iter = res[name]
        np.testing.assert_allclose(C, _np(ref.cluster_centers_), rtol=1e-10, atol=1e-10)
        np.testing.assert_array_equal(labels, _np(ref.labels_)[cuts[rank] : cuts[rank + 1]])
        assert inertia == pytest.approx(ref.inertia_, rel=1e-10)
        assert n_iter == ref.n_iter_


def test_stream_ranks_agree(dist_results):
    X = _data()
    cuts = _split(len(X))
    C0, l0, i0, _ = dist_results[0]["stream"]
    C1, l1, i1, _ = dist_results[1]["stream"]
    np.testing.assert_array_equal(C0, C1)
    assert i0 == i1
    # labels are each rank's own rows, nearest centroid; inertia is the global one
    km = KMeans(n_clusters=6, init=C0, max_iter=1, device="cpu", distributed=False).fit(X)
    km.cluster_centers_ = torch.from_numpy(C0)
    np.testing.assert_array_equal(np.concatenate([l0, l1]), km.predict(X))
    assert i0 == pytest.approx(-km.score(X), rel=1e-10)
    assert len(l0) == cuts[1] and len(l1) == len(X) - cuts[1]


def test_distributed_true_without_init_is_a_clear_error():
    with pytest.raises(RuntimeError, match="init_process_group"):
        KMeans(2, distributed=True, device="cpu").fit(np.zeros((10, 2)))
