"""Tests of kmexplain_utils.evaluation.metrics on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import normalized_mutual_info_score

from kmexplain_utils.evaluation import metrics


@pytest.fixture
def parts() -> torch.Tensor:
    """Six 16x16 part maps: background 0, a body 1, a head 2 and a small tail 3 (shifted per image)."""
    p = torch.zeros(6, 16, 16, dtype=torch.int64)
    for i in range(6):
        p[i, 4 + i // 3 : 12, 3 + i % 3 : 11] = 1
        p[i, 1 : 4 + i // 3, 5:9] = 2
        p[i, 8:10, 11 + i % 3 - 1 : 14] = 3
    return p


# ---------------------------------------------------------------- concept maps
def test_perfect_concept_map_scores_one(parts):
    relabel = torch.tensor([7, 2, 0, 5])  # concepts = parts under a permutation
    concepts = relabel[parts]
    assert metrics.nmi(concepts, parts) == pytest.approx(1.0)
    assert metrics.nmi(concepts, parts, mask=parts > 0) == pytest.approx(1.0)
    assert metrics.purity(concepts, parts) == pytest.approx(1.0)
    mapping = metrics.fit_concept_to_part(concepts, parts, n_concepts=8)
    assert mapping[7] == 0 and mapping[2] == 1 and mapping[0] == 2 and mapping[5] == 3
    mean, per_part = metrics.miou(concepts, parts, mapping, n_parts=4)
    assert mean == pytest.approx(1.0)
    np.testing.assert_allclose(per_part, 1.0)


def test_random_concept_map_is_near_zero_and_near_floor():
    gen = torch.Generator().manual_seed(0)
    parts = torch.randint(0, 4, (20, 32, 32), generator=gen)
    parts[:, :16] = 0  # half background
    concepts = torch.randint(0, 6, parts.shape, generator=gen)
    assert metrics.nmi(concepts, parts) < 0.01
    assert metrics.nmi(concepts, parts, mask=parts > 0) < 0.01
    mapping = metrics.fit_concept_to_part(concepts[:10], parts[:10], n_concepts=6)
    mean, _ = metrics.miou(concepts[10:], parts[10:], mapping, n_parts=4)
    floor = metrics.nothing_found_miou(parts[10:], n_parts=4)
    assert abs(mean - floor) < 0.05


def test_nmi_matches_sklearn_with_and_without_mask(parts):
    gen = torch.Generator().manual_seed(1)
    concepts = torch.where(torch.rand(parts.shape, generator=gen) < 0.7, parts, torch.randint(0, 5, parts.shape, generator=gen))
    expected = normalized_mutual_info_score(parts.flatten().numpy(), concepts.flatten().numpy())
    assert metrics.nmi(concepts, parts) == pytest.approx(expected, abs=1e-12)
    mask = parts > 0
    expected_obj = normalized_mutual_info_score(parts[mask].numpy(), concepts[mask].numpy())
    assert metrics.nmi(concepts, parts, mask=mask) == pytest.approx(expected_obj, abs=1e-12)
    # numpy input gives the same
    assert metrics.nmi(concepts.numpy(), parts.numpy()) == pytest.approx(expected, abs=1e-12)


def test_purity_hand_computed():
    parts = torch.tensor([[[0, 0, 0, 1], [1, 1, 2, 2]]])
    concepts = torch.tensor([[[0, 0, 1, 1], [1, 1, 1, 2]]])
    # concept 0: {0,0} -> 2; concept 1: {0,1,1,1,2} -> 3; concept 2: {2} -> 1
    assert metrics.purity(concepts, parts) == pytest.approx(6 / 8)
    mask = parts > 0
    # object pixels: concept 1: {1,1,1,2} -> 3; concept 2: {2} -> 1
    assert metrics.purity(concepts, parts, mask=mask) == pytest.approx(4 / 5)


def test_mapping_majority_and_unused_concept():
    parts = torch.tensor([[[0, 0, 1, 1], [2, 2, 2, 1]]])
    concepts = torch.tensor([[[0, 0, 0, 1], [1, 1, 1, 1]]])
    mapping = metrics.fit_concept_to_part(concepts, parts, n_concepts=3)
    np.testing.assert_array_equal(mapping, [0, 2, 0])  # concept 2 never occurs -> background
    assert metrics.parts_without_concept(mapping, 3) == [1]


def test_miou_hand_computed_and_absent_part_is_nan():
    parts = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1]]])
    concepts = torch.tensor([[[0, 1, 1, 1], [0, 0, 1, 0]]])
    mapping = np.array([0, 1])
    mean, per_part = metrics.miou(concepts, parts, mapping, n_parts=3)
    # background: gt {4 px}, pred {4 px: (0,0),(1,0),(1,1),(1,3)}, inter 3, union 5
    # part 1: gt {4}, pred {4: (0,1),(0,2),(0,3),(1,2)}, inter 3, union 5
    assert per_part[0] == pytest.approx(3 / 5)
    assert per_part[1] == pytest.approx(3 / 5)
    assert np.isnan(per_part[2])
    assert mean == pytest.approx(3 / 5)


def test_nothing_found_floor(parts):
    bg = float((parts == 0).float().mean())
    assert metrics.nothing_found_miou(parts, n_parts=4) == pytest.approx(bg / 4)
    # a part absent from the ground truth does not count in the mean
    assert metrics.nothing_found_miou(parts, n_parts=6) == pytest.approx(bg / 4)


def test_concept_metrics_validate_inputs(parts):
    with pytest.raises(ValueError, match="same shape"):
        metrics.nmi(parts[:, :8], parts)
    with pytest.raises(TypeError, match="integer labels"):
        metrics.nmi(parts.float(), parts)
    with pytest.raises(ValueError, match="mapping covers only 2"):
        metrics.miou(parts, parts, np.array([0, 1]), n_parts=4)
    with pytest.raises(ValueError, match="selects nothing"):
        metrics.purity(parts, parts, mask=torch.zeros_like(parts, dtype=torch.bool))


# ------------------------------------------------------------- attribution maps
@pytest.fixture
def object_masks() -> torch.Tensor:
    m = torch.zeros(4, 12, 12, dtype=torch.bool)
    for i in range(4):
        m[i, 2 + i : 7 + i, 3:8] = True
    return m


def test_map_marking_the_object_wins_pointing_game_and_energy(object_masks):
    maps = object_masks.float() * torch.linspace(1, 2, 12)  # zero off the object
    np.testing.assert_array_equal(metrics.pointing_game(maps, object_masks), True)
    np.testing.assert_allclose(metrics.energy_in_mask(maps, object_masks), 1.0)
    np.testing.assert_allclose(metrics.energy_in_mask(maps, object_masks, positive="relu"), 1.0)
    opposite = (~object_masks).float()
    np.testing.assert_array_equal(metrics.pointing_game(opposite, object_masks), False)
    np.testing.assert_allclose(metrics.energy_in_mask(opposite, object_masks), 0.0)


def test_pointing_game_tolerance(object_masks):
    maps = torch.zeros(4, 12, 12)
    for i in range(4):
        maps[i, 1 + i, 5] = 1.0  # one pixel above the object
    assert not metrics.pointing_game(maps, object_masks).any()
    assert metrics.pointing_game(maps, object_masks, tolerance=1).all()


def test_energy_is_shift_and_scale_invariant_and_random_is_area(object_masks):
    gen = torch.Generator().manual_seed(0)
    maps = torch.rand(4, 12, 12, generator=gen)
    e = metrics.energy_in_mask(maps, object_masks)
    np.testing.assert_allclose(metrics.energy_in_mask(3.0 * maps - 7.0, object_masks), e, rtol=1e-6)
    big = torch.zeros(200, 64, 64, dtype=torch.bool)
    big[:, 10:40, 20:50] = True
    e_rand = metrics.energy_in_mask(metrics.random_maps(200, (64, 64)), big)
    assert abs(e_rand.mean() - big.float().mean().item()) < 0.01
    assert np.isnan(metrics.energy_in_mask(-torch.ones(1, 4, 4), big[:1, :4, :4], positive="relu")[0])


def test_low_resolution_maps_are_upsampled(object_masks):
    masks = torch.zeros(1, 16, 16, dtype=torch.bool)
    masks[0, :8, :8] = True
    coarse = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    assert metrics.pointing_game(coarse, masks)[0]
    assert metrics.energy_in_mask(coarse, masks)[0] > 0.5


class _RegionModel(torch.nn.Module):
    """Two-class model whose class-0 logit only sees the top-left quadrant."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(20.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        region = x[:, :, : h // 2, : w // 2].mean(dim=(1, 2, 3))
        logit0 = self.scale * (region - 0.5)
        return torch.stack([logit0, torch.zeros_like(logit0)], dim=1)


def test_deletion_insertion_ranks_the_faithful_map_first():
    model = _RegionModel()
    images = torch.ones(3, 3, 16, 16)
    covering = torch.zeros(3, 16, 16)
    covering[:, :8, :8] = 1.0
    opposite = 1.0 - covering
    target = torch.zeros(3, dtype=torch.long)
    good = metrics.deletion_insertion(model, images, covering, target, steps=8, baseline=0.0)
    bad = metrics.deletion_insertion(model, images, opposite, target, steps=8, baseline=0.0)
    assert good.deletion_auc.max() < 0.35
    assert bad.deletion_auc.min() > 0.7
    assert good.insertion_auc.min() > 0.7
    assert bad.insertion_auc.max() < 0.35
    # end points: original image and the baseline image
    p_orig = model(images).softmax(1)[:, 0].detach().numpy()
    p_base = model(torch.zeros_like(images)).softmax(1)[:, 0].detach().numpy()
    np.testing.assert_allclose(good.deletion[:, 0], p_orig, rtol=1e-6)
    np.testing.assert_allclose(good.deletion[:, -1], p_base, rtol=1e-6)
    np.testing.assert_allclose(good.insertion[:, 0], p_base, rtol=1e-6)
    np.testing.assert_allclose(good.insertion[:, -1], p_orig, rtol=1e-6)
    np.testing.assert_allclose(good.fractions, np.linspace(0, 1, 9))
    np.testing.assert_allclose(good.deletion_auc, np.trapezoid(good.deletion, good.fractions, axis=1))
    assert good.baseline == "constant 0"


def test_deletion_insertion_baselines_batches_and_no_mutation():
    model = _RegionModel()
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(5, 3, 8, 8, generator=gen)
    maps = torch.rand(5, 4, 4, generator=gen)  # coarse maps are upsampled
    images_copy, maps_copy = images.clone(), maps.clone()
    target = torch.zeros(5, dtype=torch.long)
    a = metrics.deletion_insertion(model, images, maps, target, steps=4, baseline="blur", batch_size=5)
    b = metrics.deletion_insertion(model, images, maps, target, steps=4, baseline="blur", batch_size=1000)
    np.testing.assert_allclose(a.deletion, b.deletion, rtol=1e-6)
    assert a.baseline.startswith("blur")
    m = metrics.deletion_insertion(model, images, maps, target, steps=4, baseline="mean")
    assert m.baseline.startswith("mean")
    assert torch.equal(images, images_copy) and torch.equal(maps, maps_copy)
    assert model.training  # mode restored
    with pytest.raises(ValueError, match="baseline"):
        metrics.deletion_insertion(model, images, maps, target, baseline="zeros")
    with pytest.raises(ValueError, match=r"\(N,\)"):
        metrics.deletion_insertion(model, images, maps, target[:2])
    with pytest.raises(ValueError, match="maps"):
        metrics.deletion_insertion(model, images, maps[:2], target)


@pytest.mark.parametrize("case", ["random", "one_concept", "one_part", "both_single", "sparse_labels"])
def test_nmi_equals_sklearn_on_edge_cases(case):
    g = np.random.default_rng(3)
    parts = g.integers(0, 4, (3, 10, 10))
    concepts = g.integers(0, 5, (3, 10, 10))
    if case == "one_concept":
        concepts[:] = 2
    elif case == "one_part":
        parts[:] = 0
    elif case == "both_single":
        concepts[:] = 7
        parts[:] = 1
    elif case == "sparse_labels":
        concepts = concepts * 1000 - 3  # negative and large labels take the np.unique path
    expected = normalized_mutual_info_score(parts.ravel(), concepts.ravel())
    assert metrics.nmi(concepts, parts) == pytest.approx(expected, abs=1e-12)


def test_purity_matches_sklearn_contingency():
    from sklearn.metrics.cluster import contingency_matrix

    g = np.random.default_rng(4)
    parts = g.integers(0, 4, (2, 12, 12))
    concepts = g.integers(0, 6, (2, 12, 12))
    table = contingency_matrix(concepts.ravel(), parts.ravel())
    assert metrics.purity(concepts, parts) == pytest.approx(table.max(axis=1).sum() / parts.size)


# ---------------------------------------------------------------- AMI, ceiling, deciding part, rank correlation
def test_ami_matches_sklearn_and_is_near_zero_for_random_maps(parts):
    from sklearn.metrics import adjusted_mutual_info_score

    g = torch.Generator().manual_seed(0)
    for K in (3, 12):
        concepts = torch.randint(K, parts.shape, generator=g)
        want = adjusted_mutual_info_score(parts.reshape(-1).numpy(), concepts.reshape(-1).numpy())
        assert metrics.ami(concepts, parts) == pytest.approx(want, abs=1e-10)
        assert abs(metrics.ami(concepts, parts)) < 0.02  # chance-corrected, whatever K
        mask = parts > 0
        want_m = adjusted_mutual_info_score(parts[mask].numpy(), concepts[mask].numpy())
        assert metrics.ami(concepts, parts, mask) == pytest.approx(want_m, abs=1e-10)
    # NMI, by contrast, grows with the number of random concepts
    assert metrics.nmi(torch.randint(12, parts.shape, generator=g), parts) > metrics.nmi(
        torch.randint(2, parts.shape, generator=g), parts)


@pytest.mark.parametrize("seed", range(6))
def test_expected_mutual_information_matches_sklearn_on_random_and_skewed_tables(seed):
    from sklearn.metrics.cluster._expected_mutual_info_fast import expected_mutual_information as sklearn_emi

    g = np.random.default_rng(seed)
    for _ in range(40):  # from a few items (the whole support) to a million (the window decides)
        K, J = g.integers(1, 14, 2)
        scale = 10 ** g.uniform(0, 5)
        table = g.poisson(scale * g.dirichlet(np.ones(K * J) * g.uniform(0.1, 3))).reshape(K, J)
        table = table[table.sum(1) > 0][:, table.sum(0) > 0]
        if table.sum() < 2:
            continue
        want = sklearn_emi(table.astype(np.int64), int(table.sum()))
        assert metrics.expected_mutual_information(table) == pytest.approx(want, rel=1e-7, abs=1e-12)
    skewed = g.poisson(3000, (16, 9))
    skewed[0] = 200_000  # one concept holds most pixels, the others a few thousand: long, thin sums
    want = sklearn_emi(skewed.astype(np.int64), int(skewed.sum()))
    assert metrics.expected_mutual_information(skewed) == pytest.approx(want, rel=1e-7)


def test_expected_mutual_information_rejects_bad_tables():
    for bad in ([1, 2, 3], [[1, -1], [2, 3]], [[0.5, 1], [1, 1]]):
        with pytest.raises(ValueError, match="non-negative integer counts"):
            metrics.expected_mutual_information(np.asarray(bad))
    assert metrics.expected_mutual_information([[7]]) == 0.0  # one cluster on each side


def test_pool_labels_brute_force_majority_per_registered_position(parts):
    from kmexplain_utils.resample import GridGeometry

    geo = GridGeometry.registered(4, 1.0)
    pooled = metrics.pool_labels(parts, (4, 4), geo)
    def nearest(y: int) -> int:  # the registered position nearest to pixel y (centres 4 i + 1; ties go up)
        return min(3, max(0, int(np.floor((y - 1.0) / 4 + 0.5))))

    for i in range(parts.shape[0]):
        for r in range(16):
            for c in range(16):
                pr, pc = nearest(r), nearest(c)
                rows = [y for y in range(16) if nearest(y) == pr]
                cols = [x for x in range(16) if nearest(x) == pc]
                votes = torch.bincount(parts[i][rows][:, cols].reshape(-1), minlength=4)
                assert int(pooled[i, r, c]) == int(votes.argmax())
    # a part map already constant on the grid is its own ceiling
    coarse = metrics.pool_labels(pooled, (4, 4), geo)
    assert torch.equal(coarse, pooled)


def test_pointing_game_matches_brute_force_on_hand_made_maps():
    g = torch.Generator().manual_seed(1)
    maps = torch.rand(20, 6, 6, generator=g)
    masks = torch.rand(20, 6, 6, generator=g) > 0.6
    hits = metrics.pointing_game(maps, masks)
    for i in range(20):
        flat = maps[i].reshape(-1).tolist()
        j = flat.index(max(flat))
        assert bool(hits[i]) == bool(masks[i].reshape(-1)[j])


def test_deciding_part_scores_match_brute_force():
    g = torch.Generator().manual_seed(2)
    maps = torch.randn(10, 5, 5, generator=g)
    parts = torch.randint(0, 4, (10, 5, 5), generator=g)
    dec = torch.randint(1, 4, (10,), generator=g)
    s = metrics.deciding_part_scores(maps, parts, dec)
    for i in range(10):
        pos = [max(v, 0.0) for v in maps[i].reshape(-1).tolist()]
        on = [int(p) == int(dec[i]) for p in parts[i].reshape(-1).tolist()]
        want = sum(v for v, o in zip(pos, on) if o) / sum(pos)
        assert s.mass[i] == pytest.approx(want)
        flat = maps[i].reshape(-1).tolist()
        assert bool(s.peak[i]) == on[flat.index(max(flat))]
        assert s.part_share[i] == pytest.approx(sum(on) / 25)
    # a map with no positive value has no mass to place
    neg = metrics.deciding_part_scores(-maps.abs() - 1, parts, dec)
    assert np.isnan(neg.mass).all()
    with pytest.raises(ValueError, match=r"\(N,\)"):
        metrics.deciding_part_scores(maps, parts, dec[:3])


def test_spearman_maps_matches_scipy_with_ties():
    from scipy.stats import spearmanr

    from kmexplain_utils.evaluation.sanity import spearman_maps

    g = torch.Generator().manual_seed(3)
    a = torch.rand(4, 6, 6, generator=g)
    b = a + 0.5 * torch.rand(4, 6, 6, generator=g)
    b[0] = b[0].clamp_max(0.6)  # ties
    r = spearman_maps(a, b)
    for i in range(4):
        assert r[i] == pytest.approx(spearmanr(a[i].reshape(-1), b[i].reshape(-1)).statistic)
    assert np.isnan(spearman_maps(a, torch.zeros_like(a))).all()


def test_deciding_part_scores_on_no_image() -> None:
    """Data without deciding parts (e.g. CUB) give empty scores, not a crash."""
    from kmexplain_utils.evaluation.metrics import deciding_part_scores

    out = deciding_part_scores(torch.zeros(0, 4, 4), torch.zeros(0, 4, 4, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    assert out.mass.shape == (0,) and out.peak.shape == (0,) and out.part_share.shape == (0,)
