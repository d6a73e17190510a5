"""Keypoint-based part measurements: kmexplain_utils.evaluation.keypoints and ImageSet.keypoints_at."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

from kmexplain_utils.classifier import KMeansClassifier
from kmexplain_utils.data.base import ImageSet
from kmexplain_utils.data.cub import load_cub
from kmexplain_utils._validation import check_keypoints
from kmexplain_utils.evaluation.keypoints import (
    class_prototype_maps,
    keypoint_scores,
    keypoints_from_parts,
    labels_at_keypoints,
    PartConsistency,
    part_consistency,
    parts_in_boxes,
    peak_locations,
    prototype_consistency,
)
from kmexplain_utils.resample import GridGeometry
from kmexplain_utils.scores import prototype_scores
from paper_standin import make_cub_standin


def _random_keypoints(rng, n, size, n_parts, max_p=6):
    return [np.column_stack([rng.uniform(0, size, (p, 2)), rng.integers(1, n_parts, p)])
            for p in rng.integers(0, max_p + 1, n)]


# ============================================================ keypoints_from_parts
def test_keypoint_of_a_non_convex_part_lies_on_it_and_is_nearest_to_the_centroid():
    parts = np.zeros((1, 12, 12), dtype=np.int64)
    parts[0, 1:11, 1:3] = 2        # vertical bar
    parts[0, 9:11, 1:11] = 2       # foot: an L whose centroid is in the empty corner
    ys, xs = np.nonzero(parts[0] == 2)
    centroid = np.array([(xs + 0.5).mean(), (ys + 0.5).mean()])
    assert parts[0, int(centroid[1]), int(centroid[0])] == 0, "the test needs a centroid off the part"
    (kp,) = keypoints_from_parts(torch.from_numpy(parts), n_parts=3)
    assert kp.shape == (1, 3) and kp[0, 2] == 2
    x, y = kp[0, :2]
    assert parts[0, int(np.floor(y)), int(np.floor(x))] == 2
    d2 = (xs + 0.5 - centroid[0]) ** 2 + (ys + 0.5 - centroid[1]) ** 2
    assert np.isclose((x - centroid[0]) ** 2 + (y - centroid[1]) ** 2, d2.min())


def test_keypoint_of_a_disc_is_its_centre_and_every_part_gets_one():
    yy, xx = np.mgrid[0:20, 0:20] + 0.5
    parts = np.zeros((2, 20, 20), dtype=np.int64)
    parts[0][(xx - 6.5) ** 2 + (yy - 13.5) ** 2 <= 9] = 1   # disc centred on pixel (13, 6)
    parts[0][(xx - 15.5) ** 2 + (yy - 4.5) ** 2 <= 4] = 3   # disc centred on pixel (4, 15)
    kps = keypoints_from_parts(parts)
    assert kps[0].tolist() == [[6.5, 13.5, 1.0], [15.5, 4.5, 3.0]]
    assert kps[1].shape == (0, 3), "an image without parts has no keypoint"


# ============================================================ labels_at_keypoints / keypoint_scores
def test_labels_at_keypoints_reads_floor_and_clips():
    maps = np.arange(12).reshape(1, 3, 4)
    kp = [np.array([[0.0, 0.0, 1], [3.99, 2.99, 2], [1.5, 1.0, 1], [-3.0, 7.0, 2], [9.0, -1.0, 1]])]
    concepts, parts = labels_at_keypoints(torch.from_numpy(maps), kp)
    assert concepts.tolist() == [0, 11, 5, 8, 3]
    assert parts.tolist() == [1, 2, 1, 2, 1] and concepts.dtype == parts.dtype == np.int64


def test_keypoint_scores_match_sklearn_and_brute_force_counts():
    rng = np.random.default_rng(0)
    maps = rng.integers(0, 5, size=(6, 16, 16))
    kps = _random_keypoints(rng, 6, 16, 4, max_p=8)
    s = keypoint_scores(maps, kps)
    concepts, parts = [], []
    for n, k in enumerate(kps):  # brute force, one keypoint at a time
        for x, y, lab in k:
            concepts.append(maps[n, int(y), int(x)])
            parts.append(int(lab))
    assert s.n_keypoints == len(parts) > 10
    assert np.isclose(s.nmi, normalized_mutual_info_score(parts, concepts))
    assert np.isclose(s.ami, adjusted_mutual_info_score(parts, concepts))
    table = np.zeros((max(concepts) + 1, max(parts) + 1), dtype=np.int64)
    for c, p in zip(concepts, parts):
        table[c, p] += 1
    assert np.array_equal(s.contingency, table)
    assert np.isclose(s.purity, table.max(axis=1).sum() / len(parts))


def test_a_concept_map_equal_to_the_parts_scores_one():
    rng = np.random.default_rng(1)
    parts = rng.integers(0, 4, size=(3, 10, 10))
    kps = keypoints_from_parts(parts)
    s = keypoint_scores(parts * 7 + 2, kps)  # renamed labels
    assert np.isclose(s.nmi, 1.0) and s.purity == 1.0 and np.isclose(s.ami, 1.0)
    assert s.contingency[:, 0].sum() == 0, "no keypoint is background"


# ============================================================ peak_locations
@pytest.mark.parametrize("stride", [5, 7])
def test_peak_of_a_grid_map_lands_on_its_registered_pixel(stride):
    h = w = 6
    size = stride * h
    # not the first row or column: before the first centre the border value is kept (a plateau
    # whose first pixel would win the arg-max)
    for i, j, offset in [(2, 4, 1.0), (1, 1, 0.0), (5, 3, 2.0), (3, 5, 0.0)]:
        m = torch.zeros(1, 2, h, w)
        m[0, 0, i, j] = 1.0
        m[0, 1] = -1.0
        m[0, 1, j, i] = 0.5
        peaks = peak_locations(m, size, GridGeometry.registered(stride, offset))
        # position (i, j) sits on pixel stride * i + offset, whose centre is at +0.5
        assert peaks[0, 0].tolist() == [stride * j + offset + 0.5, stride * i + offset + 0.5]
        assert peaks[0, 1].tolist() == [stride * i + offset + 0.5, stride * j + offset + 0.5]
        cell = peak_locations(m, size, GridGeometry.cell(stride))
        # the cell convention centres positions (stride - 1) / 2 pixels further
        assert (cell - peaks)[0].tolist() == [[(stride - 1) / 2 - offset] * 2] * 2
    corner = torch.zeros(1, 1, h, w)
    corner[0, 0, 0, 0] = 1.0
    assert peak_locations(corner, size, GridGeometry.registered(stride)).tolist() == [[[0.5, 0.5]]]


def test_peak_of_maps_at_image_size_is_their_argmax():
    rng = np.random.default_rng(2)
    maps = rng.normal(size=(3, 4, 9, 11))
    peaks = peak_locations(maps, (9, 11))
    for n in range(3):
        for m in range(4):
            r, c = np.unravel_index(np.argmax(maps[n, m]), (9, 11))
            assert peaks[n, m].tolist() == [c + 0.5, r + 0.5]


def test_peak_locations_default_geometry_is_stride_image_over_grid():
    m = torch.zeros(1, 1, 4, 4)
    m[0, 0, 3, 1] = 2.0
    assert peak_locations(m, 32).tolist() == [[[8.5, 24.5]]]


# ============================================================ parts_in_boxes
def _brute_in_boxes(peaks, kps, n_parts, box, size=None):
    n, m, _ = peaks.shape
    out = np.zeros((n, m, n_parts), dtype=bool)
    for a in range(n):
        for b in range(m):
            px, py = peaks[a, b]
            x0, x1, y0, y1 = px - box / 2, px + box / 2, py - box / 2, py + box / 2
            if size is not None:
                x0, x1, y0, y1 = max(x0, 0), min(x1, size), max(y0, 0), min(y1, size)
            for x, y, lab in kps[a]:
                if x0 <= x <= x1 and y0 <= y <= y1 and lab > 0:
                    out[a, b, int(lab)] = True
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_parts_in_boxes_matches_a_brute_force_loop(seed):
    rng = np.random.default_rng(seed)
    n, m, n_parts, size = 5, 4, 6, 40
    peaks = rng.uniform(0, size, (n, m, 2))
    kps = _random_keypoints(rng, n, size, n_parts, max_p=10)
    for box in (4, 11.5, 30):
        got = parts_in_boxes(torch.from_numpy(peaks), kps, n_parts, box)
        assert np.array_equal(got, _brute_in_boxes(peaks, kps, n_parts, box))
        assert np.array_equal(parts_in_boxes(peaks, kps, n_parts, box, image_size=size),
                              _brute_in_boxes(peaks, kps, n_parts, box, size))
    assert not got[..., 0].any()


def test_a_box_at_the_border_is_clipped_not_shifted():
    kp = [np.array([[0.1, 0.1, 1], [7.4, 2.5, 2], [7.6, 2.5, 3], [-1.0, 2.0, 4]])]
    peaks = np.array([[[2.5, 2.5]]])  # box of side 10: [-2.5, 7.5] clipped to [0, 7.5]
    clipped = parts_in_boxes(peaks, kp, 5, 10, image_size=32)[0, 0]
    assert clipped.tolist() == [False, True, True, False, False]
    assert parts_in_boxes(peaks, kp, 5, 10)[0, 0].tolist() == [False, True, True, False, True]


# ============================================================ part_consistency
def test_part_consistency_analytic_cases():
    n, n_parts = 10, 4
    in_box = np.zeros((n, 4, n_parts), dtype=bool)
    in_box[:, 0, 2] = True                      # always the head: consistent
    in_box[::2, 1, 1] = in_box[1::2, 1, 3] = True  # alternates: 0.5 and 0.5
    in_box[:8, 2, 3] = True                     # exactly 0.8: counts
    valid = np.ones((n, 4), dtype=bool)
    valid[:, 3] = False                          # no valid image: excluded
    in_box[:, 3, 1] = True                      # ... whatever its boxes say
    r = part_consistency(in_box, valid)
    assert r.n_images.tolist() == [10, 10, 10, 0]
    assert r.frequency[0].tolist() == [0, 0, 1, 0] and r.frequency[1].tolist() == [0, 0.5, 0, 0.5]
    assert r.frequency[2, 3] == 0.8 and np.isnan(r.frequency[3]).all()
    assert r.consistent.tolist() == [True, False, True, False]
    assert r.score == pytest.approx(2 / 3)
    assert part_consistency(in_box, valid, threshold=0.81).consistent.tolist() == [True, False, False, False]


def test_part_consistency_counts_only_valid_images():
    in_box = np.zeros((4, 1, 2), dtype=bool)
    in_box[:2, 0, 1] = True                  # boxes the part on images 0, 1 only
    valid = np.array([[True], [True], [False], [False]])
    r = part_consistency(torch.from_numpy(in_box), torch.from_numpy(valid))
    assert r.frequency[0, 1] == 1.0 and r.n_images.tolist() == [2] and r.score == 1.0


def test_part_consistency_visible_denominator_is_evalprotopnets():
    in_box = np.zeros((4, 1, 3), dtype=bool)
    in_box[:2, 0, 1] = True
    visible = np.zeros((4, 3), dtype=bool)
    visible[:2, 1] = True                      # part 1 seen on two images only
    valid = np.ones((4, 1), dtype=bool)
    assert part_consistency(in_box, valid).frequency[0, 1] == 0.5
    r = part_consistency(in_box, valid, visible=visible)
    assert r.frequency[0].tolist() == [0.0, 1.0, 0.0] and r.consistent.tolist() == [True]
    with pytest.raises(ValueError, match="not visible"):
        part_consistency(in_box, valid, visible=np.zeros((4, 3), dtype=bool))


def test_no_valid_image_at_all_gives_nan_score():
    r = part_consistency(np.zeros((2, 3, 2), dtype=bool), np.zeros((2, 3), dtype=bool))
    assert np.isnan(r.score) and not r.consistent.any()


# ============================================================ class maps and the whole pipeline
def _planted_classifier(D=6):
    """Two classes (labels 3 and 7), two orthogonal prototypes each, planted exactly."""
    g = torch.Generator().manual_seed(0)
    centres = 4.0 * torch.eye(D)[:4]
    Z = torch.cat([c + 0.01 * torch.randn(20, D, generator=g) for c in centres])
    y = np.repeat([3, 3, 7, 7], 20)
    clf = KMeansClassifier(2, device="cpu").fit(Z, y)
    return clf


def test_class_prototype_maps_pads_small_classes_and_matches_the_full_scores():
    g = torch.Generator().manual_seed(3)
    Z = torch.cat([torch.randn(10, 3, generator=g), torch.randn(1, 3, generator=g) + 5])
    y = ["big"] * 10 + ["small"]
    with pytest.warns(UserWarning, match="fewer than n_prototypes"):
        clf = KMeansClassifier(3, device="cpu").fit(Z, y)
    A = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)
    labels = ["small", "big", "big", "small"]
    maps, mask, index = class_prototype_maps(A, clf, labels)
    assert maps.shape == (4, 3, 5, 5)
    assert mask.tolist() == [[True, False, False], [True] * 3, [True] * 3, [True, False, False]]
    assert index[0].tolist() == [3, -1, -1] and sorted(index[1].tolist()) == [0, 1, 2]
    full = prototype_scores(A, clf.prototypes_)
    for n in range(4):
        for k in range(3):
            if mask[n, k]:
                assert torch.allclose(maps[n, k], full[n, index[n, k]])
                assert clf.prototype_labels_[index[n, k]] == labels[n]
            else:
                assert (maps[n, k] == 0).all()


def test_prototype_consistency_end_to_end_on_planted_peaks():
    clf = _planted_classifier()
    P, D = clf.prototypes_.shape
    stride, offset, h = 8, 3.0, 6
    size = stride * h                                 # 48 px: default box round(72 / 224 * 48) = 15
    rng = np.random.default_rng(0)
    n = 10
    labels = np.array([3, 7] * (n // 2))
    A = torch.as_tensor(rng.normal(0, 0.05, (n, D, h, h)))
    kps, where = [], {}
    for i in range(n):
        own = np.flatnonzero(clf.prototype_labels_ == labels[i])
        cells = rng.permutation((h - 1) * (h - 1))[: len(own)]  # off row and column 0 (see above)
        kp = []
        for slot, (p, cell) in enumerate(zip(own, cells)):
            r, c = (v + 1 for v in divmod(int(cell), h - 1))
            A[i, :, r, c] = clf.prototypes_[p].double()
            x, y = stride * c + offset + 0.5, stride * r + offset + 0.5
            where[i, p] = (x, y)
            if slot == 0:                               # first prototype: part 1 always in its box
                kp.append([np.clip(x + 3, 0, size - 1e-3), y, 1])
            elif i % 4 < 2:                             # second: part 2 in its box on half the images
                kp.append([x, np.clip(y - 4, 0, size - 1e-3), 2])
        kp.append([0.0, 0.0, 3])                        # a part in the corner, never planted on
        kps.append(np.array(kp, dtype=np.float64))
    geo = GridGeometry.registered(stride, offset)
    r = prototype_consistency(A.float(), clf, labels, kps, 4, image_size=size, geometry=geo, batch_size=3)
    first = [int(np.flatnonzero(clf.prototype_labels_ == c)[0]) for c in (3, 7)]
    second = [int(np.flatnonzero(clf.prototype_labels_ == c)[1]) for c in (3, 7)]
    assert r.n_images.tolist() == [5] * P
    assert r.consistent[first].all() and not r.consistent[second].any()
    assert np.allclose(r.frequency[first, 1], 1.0)
    assert np.allclose(r.frequency[second, 2], [3 / 5, 3 / 5])   # i % 4 < 2: images 0, 4, 8 and 1, 5, 9
    assert r.score == 0.5
    # the peaks are where the prototypes were planted
    maps, mask, index = class_prototype_maps(A, clf, labels)
    peaks = peak_locations(maps, size, geo)
    for i in range(n):
        for k in range(2):
            assert tuple(peaks[i, k]) == where[i, int(index[i, k])]


def test_prototype_consistency_box_size_default_and_visible_denominator():
    clf = KMeansClassifier(1, device="cpu").fit(torch.eye(2), [0, 1])
    A = torch.zeros(4, 2, 4, 4)
    A[0, 0, 1, 1] = A[2, 0, 1, 1] = 1.0     # class 0: peak on pixel (8, 8), centre (8.5, 8.5)
    A[1, 1, 0, 0] = A[3, 1, 0, 0] = 1.0     # class 1: peak (0.5, 0.5)
    kp = [np.array([[13.4, 8.5, 1]]), np.zeros((0, 3)), np.array([[13.6, 8.5, 1]]), np.array([[1.0, 1.0, 2]])]
    # default box: round(72 / 224 * 32) = 10, half-size 5: x in [3.5, 13.5]
    r = prototype_consistency(A, clf, torch.tensor([0, 1, 0, 1]), kp, 3, image_size=32)
    assert r.frequency[0, 1] == 0.5 and r.frequency[1, 2] == 0.5 and r.score == 0.0
    r = prototype_consistency(A, clf, [0, 1, 0, 1], kp, 3, image_size=32, box_size=12)
    assert r.frequency[0, 1] == 1.0 and r.consistent.tolist() == [True, False]
    r = prototype_consistency(A, clf, [0, 1, 0, 1], kp, 3, image_size=32, denominator="visible")
    assert r.frequency[1, 2] == 1.0 and r.consistent.tolist() == [False, True]


# ============================================================ ImageSet and CUB
def test_imageset_keypoints_round_trip_subset_and_validation():
    imgs = torch.zeros(3, 3, 8, 8)
    names = ["background", "head", "tail"]
    kp = [np.array([[1.0, 2.0, 1], [7.5, 0.0, 2]]), [], torch.tensor([[3.0, 3.0, 2.0]])]
    ds = ImageSet(imgs, [0, 1, 0], parts=torch.zeros(3, 8, 8, dtype=torch.long), part_names=names, keypoints=kp)
    assert ds.has_keypoints
    got = ds.keypoints_at([2, 0])
    assert got[0].tolist() == [[3.0, 3.0, 2.0]] and got[1].dtype == np.float64 and len(got[1]) == 2
    got[0][0, 0] = 99.0
    assert ds.keypoints_at(2)[0][0, 0] == 3.0, "keypoints_at returns copies"
    sub = ds.subset([1, 2])
    assert [k.shape for k in sub.keypoints_at(slice(None))] == [(0, 3), (1, 3)]
    assert ImageSet(imgs, [0, 1, 0]).keypoints_at([0]) is None and not ImageSet(imgs, [0, 1, 0]).has_keypoints
    with pytest.raises(ValueError, match="one array per image: 3 images, got 2"):
        ImageSet(imgs, [0, 1, 0], part_names=names, keypoints=kp[:2])
    with pytest.raises(ValueError, match="part_names is required with keypoints"):
        ImageSet(imgs, [0, 1, 0], keypoints=kp)
    with pytest.raises(ValueError, match=r"keypoints\[0\] has part labels \[3.0\].*\[1, 3\)"):
        ImageSet(imgs, [0, 1, 0], part_names=names, keypoints=[np.array([[1.0, 1.0, 3]]), [], []])
    with pytest.raises(ValueError, match=r"outside the \(H, W\) = \(8, 8\) image"):
        ImageSet(imgs, [0, 1, 0], part_names=names, keypoints=[np.array([[8.0, 1.0, 1]]), [], []])


def test_cub_keypoints_land_on_their_disc_parts(tmp_path):
    make_cub_standin(tmp_path, n_classes=3, n_train_per_class=4, n_test_per_class=2)
    ds = load_cub("train", image_size=64, root=tmp_path, crop="bbox")
    assert ds.has_keypoints
    kps = ds.keypoints_at(slice(None))
    parts = ds.parts_at(slice(None))
    n_exact = n_total = 0
    for k, pm in zip(kps, parts):
        assert k.shape[1] == 3 and ((k[:, :2] >= 0) & (k[:, :2] < 64)).all()
        for x, y, lab in k:
            r, c = int(np.floor(y)), int(np.floor(x))
            n_total += 1
            if pm[r, c] == lab:
                n_exact += 1
                continue
            # overlapped: the pixel took the part of a keypoint nearer to its centre
            d2 = (k[:, 0] - c - 0.5) ** 2 + (k[:, 1] - r - 0.5) ** 2
            nearest = k[np.argmin(d2)]
            assert nearest[2] == pm[r, c] and d2.min() <= (x - c - 0.5) ** 2 + (y - r - 0.5) ** 2
    assert n_total > 50 and n_exact > 0.5 * n_total
    mem = ds.subset([0, 3]).to_memory()
    assert mem.has_keypoints
    for a, b in zip(mem.keypoints_at(slice(None)), ds.keypoints_at([0, 3])):
        assert np.array_equal(a, b)


def test_cub_center_crop_drops_keypoints_outside_it(tmp_path):
    make_cub_standin(tmp_path, n_classes=2, n_train_per_class=6, n_test_per_class=1, seed=4)
    centre = load_cub("train", image_size=48, root=tmp_path, crop="center")
    kps = centre.keypoints_at(slice(None))
    visible = [len(r["keypoints"]) if r["keypoints"] is not None else 0 for r in centre.records]
    assert all(((k[:, :2] >= 0) & (k[:, :2] < 48)).all() for k in kps)
    assert all(len(k) <= v for k, v in zip(kps, visible))
    assert sum(len(k) for k in kps) < sum(visible), "the stand-in's wide images put some keypoints off the square"


# ============================================================ bad inputs
def test_bad_inputs_name_the_problem():
    kp = [np.array([[1.0, 1.0, 1]])]
    with pytest.raises(ValueError, match=r"must have shape \(P, 3\)"):
        check_keypoints([np.zeros((2, 2))], 1)
    with pytest.raises(ValueError, match="list with one"):
        check_keypoints(np.zeros((1, 3)), 1)
    with pytest.raises(ValueError, match="0 is the background"):
        check_keypoints([np.array([[1.0, 1.0, 0]])], 1)
    with pytest.raises(ValueError, match="NaN or inf"):
        check_keypoints([np.array([[np.nan, 1.0, 1]])], 1)
    with pytest.raises(ValueError, match="No keypoint to score"):
        keypoint_scores(np.zeros((2, 4, 4), dtype=np.int64), [np.zeros((0, 3)), []])
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        labels_at_keypoints(np.zeros((4, 4), dtype=np.int64), kp)
    with pytest.raises(TypeError, match="integer labels"):
        keypoints_from_parts(np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="n_parts=2"):
        keypoints_from_parts(np.full((1, 2, 2), 2), n_parts=2)
    with pytest.raises(ValueError, match=r"\(N, M, h, w\)"):
        peak_locations(torch.zeros(2, 4, 4), 8)
    with pytest.raises(ValueError, match="NaN or inf"):
        peak_locations(torch.full((1, 1, 2, 2), float("nan")), 8)
    with pytest.raises(ValueError, match=r"peaks must have shape \(N, M, 2\)"):
        parts_in_boxes(np.zeros((1, 2)), kp, 3, 4)
    with pytest.raises(ValueError, match=r"\[1, 1\)"):
        parts_in_boxes(np.zeros((1, 1, 2)), kp, 1, 4)
    with pytest.raises(ValueError, match="box_size must be a positive"):
        parts_in_boxes(np.zeros((1, 1, 2)), kp, 3, 0)
    with pytest.raises(ValueError, match=r"valid must have shape \(N, M\) = \(2, 3\)"):
        part_consistency(np.zeros((2, 3, 4), dtype=bool), np.zeros((3, 2), dtype=bool))
    with pytest.raises(TypeError, match="boolean"):
        part_consistency(np.zeros((2, 3, 4)), np.zeros((2, 3), dtype=bool))
    with pytest.raises(ValueError, match="threshold must lie in"):
        part_consistency(np.zeros((2, 3, 4), dtype=bool), np.ones((2, 3), dtype=bool), threshold=1.5)
    clf = KMeansClassifier(1, device="cpu").fit(torch.eye(2), [0, 1])
    with pytest.raises(ValueError, match="unknown class label"):
        class_prototype_maps(torch.zeros(1, 2, 3, 3), clf, [5])
    with pytest.raises(ValueError, match=r"position_features must be a tensor \(N, D, h, w\)"):
        prototype_consistency(torch.zeros(2, 3, 3), clf, [0, 1], kp * 2, 2, image_size=8)
    with pytest.raises(ValueError, match=r"labels must have shape \(N,\) = \(1,\)"):
        prototype_consistency(torch.zeros(1, 2, 3, 3), clf, [0, 1], kp, 2, image_size=8)
    with pytest.raises(ValueError, match="denominator must be"):
        prototype_consistency(torch.zeros(1, 2, 3, 3), clf, [0], kp, 2, image_size=8, denominator="all")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prototype_consistency(torch.zeros(1, 2, 3, 3), clf, [0], kp, 2, image_size=8)  # runs quietly


def test_combined_chunks_equal_one_call_on_all_images():
    rng = np.random.default_rng(3)
    in_box = rng.random((30, 4, 5)) < 0.4
    valid = rng.random((30, 4)) < 0.7
    valid[:, 3] = False                                     # a prototype without a valid image
    visible = rng.random((30, 5)) < 0.8
    in_box &= visible[:, None, :]
    for vis in (None, visible):
        whole = part_consistency(in_box, valid, 0.5, visible=vis)
        chunks = [part_consistency(in_box[s], valid[s], 0.5, visible=None if vis is None else vis[s])
                  for s in (slice(0, 7), slice(7, 19), slice(19, 30))]
        merged = PartConsistency.combine(chunks)
        np.testing.assert_array_equal(merged.frequency, whole.frequency)  # NaN rows included
        assert merged.consistent.tolist() == whole.consistent.tolist()
        assert merged.n_images.tolist() == whole.n_images.tolist() and merged.score == whole.score
    with pytest.raises(ValueError, match="at least one"):
        PartConsistency.combine([])
    with pytest.raises(ValueError, match="same threshold"):
        PartConsistency.combine([part_consistency(in_box, valid, 0.5), part_consistency(in_box, valid, 0.8)])


def test_random_peaks_give_the_analytic_chance_level():
    """Boxes on uniform pixels: a keypoint is boxed with probability (pixel centres within b/2) / (H W)."""
    clf = KMeansClassifier(1, device="cpu").fit(torch.eye(2), [0, 1])
    n, size, box = 4000, 32, 10
    labels = np.arange(n) % 2
    kp = [np.array([[16.0, 16.0, 1], [2.0, 2.0, 2]])] * n
    A = torch.rand(n, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    r = prototype_consistency(A, clf, labels, kp, 3, image_size=size, box_size=box, peaks="random",
                              random_state=0, batch_size=512)
    centres = np.arange(size) + 0.5
    near = lambda v: np.count_nonzero(np.abs(centres - v) <= box / 2)  # noqa: E731 (the box is clipped, not shifted)
    expected = np.array([0, near(16.0) ** 2, near(2.0) ** 2]) / size**2
    assert r.n_images.tolist() == [n // 2, n // 2]
    np.testing.assert_allclose(r.frequency, np.stack([expected, expected]), atol=4 * np.sqrt(0.1 * 0.9 / (n // 2)))
    assert r.score == 0.0                                   # chance is far from the 0.8 threshold
    again = prototype_consistency(A.flip(0), clf, labels, kp, 3, image_size=size, box_size=box, peaks="random",
                                  random_state=0, batch_size=512)
    np.testing.assert_array_equal(again.hits, r.hits)       # the maps play no part, the seed does
    with pytest.raises(ValueError, match="peaks must be 'max'"):
        prototype_consistency(A, clf, labels, kp, 3, image_size=size, peaks="centre")
