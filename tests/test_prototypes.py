"""Tests of nearest images/patches and prototype representativeness."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kmexplain_utils.features import PositionSample
from kmexplain_utils.prototypes import (
    best_rescaling,
    nearest_images,
    nearest_patches,
    patch_box,
    prototype_representativeness,
)


@pytest.fixture(scope="module")
def Z() -> torch.Tensor:
    return torch.randn(200, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_nearest_images_matches_brute_force_with_chunks(Z) -> None:
    Q = torch.randn(5, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    idx, dist = nearest_images(Q, Z, k=7, return_distances=True, chunk_size=13)
    d = ((Q[:, None] - Z[None]) ** 2).sum(-1).sqrt()
    ref_d, ref_i = d.sort(1)
    assert idx.shape == (5, 7) and idx.dtype == torch.int64
    assert torch.equal(idx, ref_i[:, :7])
    assert torch.allclose(dist, ref_d[:, :7], atol=1e-12)
    assert torch.equal(nearest_images(Q[0], Z, k=3), ref_i[:1, :3])
    assert nearest_images(Q, Z[:4], k=10).shape == (5, 4)  # k capped at N
    assert isinstance(nearest_images(Q.numpy(), Z.numpy(), k=2), torch.Tensor)


def test_nearest_images_validation(Z) -> None:
    with pytest.raises(ValueError, match=r"D = 5 but Z has D = 6"):
        nearest_images(torch.rand(2, 5), Z)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        nearest_images(torch.rand(2, 6), Z[None])
    with pytest.raises(TypeError, match=r"\(Q, D\)"):
        nearest_images([[0.0] * 6], Z)


def _sample() -> PositionSample:
    g = torch.Generator().manual_seed(2)
    M = 60
    return PositionSample(
        vectors=torch.randn(M, 4, generator=g),
        image_index=torch.arange(M) // 6,
        yx=torch.stack([torch.arange(M) % 3, torch.arange(M) % 2], 1),
        grid=(3, 2),
        image_size=(30, 20),
    )


def test_nearest_patches() -> None:
    s = _sample()
    q = s.vectors[17] + 0.01
    all_ = nearest_patches(q, s, k=5, one_per_image=False)
    d = (s.vectors - q).norm(dim=1)
    assert torch.equal(all_.position, d.argsort()[:5])
    assert int(all_.position[0]) == 17 and int(all_.image_index[0]) == 2
    assert torch.allclose(all_.distance, d.sort().values[:5], atol=1e-6)
    assert torch.equal(all_.yx, s.yx[all_.position])
    one = nearest_patches(q, s, k=5)
    assert len(set(one.image_index.tolist())) == 5
    # each image's patch is that image's closest position
    for pos, img in zip(one.position.tolist(), one.image_index.tolist()):
        rows = (s.image_index == img).nonzero()[:, 0]
        assert pos == int(rows[d[rows].argmin()])
    assert (one.distance[1:] >= one.distance[:-1]).all()
    assert nearest_patches(q, s, k=50).image_index.shape == (10,)  # only 10 images
    assert one.boxes().shape == (5, 4)
    with pytest.raises(ValueError, match="D = 3"):
        nearest_patches(torch.rand(3), s)


def test_patch_box() -> None:
    # one stride wide, centred on the registered centre 32 i (offset 0), clipped to the image
    assert patch_box((0, 0), 7, 224).tolist() == [0, 0, 16, 16]
    assert patch_box((6, 6), (7, 7), (224, 224)).tolist() == [176, 176, 208, 208]
    assert patch_box((3, 3), 7, 224, context=2.0).tolist() == [64, 64, 128, 128]
    from kmexplain_utils.resample import GridGeometry, resample_labels
    assert patch_box((3, 3), 7, 224, geometry=GridGeometry.cell(32)).tolist() == [96, 96, 128, 128]  # first edition
    # a box holds exactly the pixels whose nearest registered position is its own (brute force)
    geo = GridGeometry.registered(10, 3.0)
    owner = resample_labels(torch.arange(30).view(3, 10), geo, (30, 100), target=None)
    for i, j in [(1, 4), (1, 5), (1, 8)]:  # interior positions (at the border the last one owns the rest)
        t, l, b, r = patch_box((i, j), (3, 10), (30, 100), geometry=geo).tolist()
        mask = owner == 10 * i + j
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert (t, b, l, r) == (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
    with pytest.raises(ValueError, match=r"\[0, 7\)"):
        patch_box((7, 0), 7, 224)


def test_representativeness_against_sklearn(Z) -> None:
    from sklearn.neighbors import NearestNeighbors

    P = torch.cat([Z[:2], Z[5:6] + 0.1, torch.full((1, 6), 10.0, dtype=torch.float64)])
    r = prototype_representativeness(P, Z, rescale=True, chunk_size=17)
    nn = NearestNeighbors(n_neighbors=2).fit(Z.numpy())
    dist, _ = nn.kneighbors(Z.numpy())
    assert r.nn_median == pytest.approx(float(np.median(dist[:, 1])), rel=1e-10)
    dq, iq = NearestNeighbors(n_neighbors=1).fit(Z.numpy()).kneighbors(P.numpy())
    assert r.distance.numpy() == pytest.approx(dq[:, 0], abs=1e-10)
    assert r.nearest_index.tolist() == iq[:, 0].tolist()
    assert r.distance[0] == 0 and r.distance[1] == 0
    assert r.ratio[3] > 5 * r.ratio[2]  # the far prototype is unrepresentative
    assert torch.allclose(r.ratio, r.distance / r.nn_median)
    assert (r.rescaled_distance <= r.distance + 1e-12).all()  # s = 1 is a candidate
    assert set(r.as_dict()) >= {"distance", "ratio", "rescaled_ratio", "scale"}


def test_best_rescaling_closed_form(Z) -> None:
    w = 3.0 * Z[7]  # an embedding's direction, wrong norm
    d, s, i = best_rescaling(w[None], Z)
    assert float(d[0]) == pytest.approx(0.0, abs=1e-9)
    assert float(s[0]) == pytest.approx(1 / 3) and int(i[0]) == 7
    # against a brute-force search over scales
    v = torch.randn(2, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    d, s, i = best_rescaling(v, Z)
    grid = torch.linspace(1e-4, 5, 4001, dtype=torch.float64)
    for p in range(2):
        cand = grid[:, None, None] * v[p] - Z[None]  # (S, N, D)
        brute = cand.norm(dim=-1).min()
        assert float(d[p]) <= float(brute) + 1e-9
        assert float(d[p]) == pytest.approx(float(brute), abs=5e-3)
        assert float(d[p]) == pytest.approx(float((s[p] * v[p] - Z[i[p]]).norm()), abs=1e-9)
    with pytest.raises(ValueError, match="zero vector"):
        best_rescaling(torch.zeros(1, 6), Z)


def test_representativeness_validation_and_no_mutation(Z) -> None:
    with pytest.raises(ValueError, match=r"D = 5 but Z has D = 6"):
        prototype_representativeness(torch.rand(2, 5), Z)
    with pytest.raises(ValueError, match="at least 2"):
        prototype_representativeness(torch.rand(2, 6), Z[:1])
    Z0 = Z.clone()
    P = Z[:3].clone()
    prototype_representativeness(P, Z, rescale=True)
    nearest_images(P, Z)
    assert torch.equal(Z, Z0) and torch.equal(P, Z0[:3])


def test_highest_scoring_images_members_and_attribute_shares():
    from kmexplain_utils.prototypes import attribute_shares, highest_scoring_images, prototype_members

    g = torch.Generator().manual_seed(0)
    Z = torch.randn(50, 4, generator=g)
    W = torch.randn(3, 4, generator=g)
    top = highest_scoring_images(W, Z, k=5, bias=torch.tensor([1.0, -2.0, 3.0]))
    assert torch.equal(top, (Z @ W.T).T.argsort(dim=1, descending=True)[:, :5])
    y = torch.arange(50) % 2
    mu = torch.randn(4, 4, generator=g)
    mu_y = np.array([0, 0, 1, 1])
    members = prototype_members(Z, y, mu, mu_y)
    d = torch.cdist(Z, mu)
    for i in range(50):
        own = np.flatnonzero(mu_y == int(y[i]))
        assert int(members[i]) == own[int(d[i, own].argmin())]
    shares, cats, counts = attribute_shares(members, np.where(y.numpy() == 0, "a", "b"), 4)
    assert counts.sum() == 50 and np.allclose(np.nansum(shares, 1)[counts > 0], 1)
    assert (shares[:2, 1][counts[:2] > 0] == 0).all()  # class-0 prototypes hold only "a"
