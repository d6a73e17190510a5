"""The generated part-based creatures, the ImageSet container and load_dataset."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from kmexplain_utils.config import get_profile
from kmexplain_utils.data import ImageSet, balanced_order, dataset_names, load_dataset
from kmexplain_utils.data.parts import (
    ATTRIBUTE_PARTS,
    CLASS_NAMES,
    DEFAULT_DESIGN,
    DESIGNS,
    PART_NAMES,
    SceneSource,
    class_attributes,
    class_names,
    colour_baseline_ami,
    intervene,
    make_parts,
)

HEAD, TAIL, BODY, LEGS, MARK = (PART_NAMES.index(p) for p in ("head", "tail", "body", "legs", "marking"))


@pytest.fixture(scope="module")
def small() -> ImageSet:
    """The second edition's colour-coded design (v2), whose colour tests follow."""
    return make_parts(96, image_size=48, seed=5, design="v2")


# ---------------------------------------------------------------- determinism
def test_same_seed_same_data_and_other_seed_differs():
    from kmexplain_utils.data import parts

    a = make_parts(40, image_size=32, seed=3)
    parts._generate.cache_clear()  # generate again, not from the in-process cache
    b = make_parts(40, image_size=32, seed=3)
    c = make_parts(40, image_size=32, seed=4)
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.parts, b.parts)
    assert torch.equal(a.labels, b.labels)
    assert torch.equal(a.objects, b.objects)
    assert not torch.equal(a.labels, c.labels)
    assert (a.images - c.images).abs().mean() > 0.05
    assert (a.parts != c.parts).float().mean() > 0.1


def test_cached_sets_are_copies():
    a = make_parts(16, image_size=16, seed=8)
    a.images.zero_()
    a.parts.zero_()
    b = make_parts(16, image_size=16, seed=8)
    assert b.images.abs().sum() > 0 and b.parts.abs().sum() > 0


def test_smaller_set_is_a_prefix_of_a_larger_one_across_chunks():
    big = make_parts(300, image_size=24, seed=1)  # two chunks of 256
    part = make_parts(270, image_size=24, seed=1)
    assert torch.equal(big.images[:270], part.images)
    assert torch.equal(big.parts[:270], part.parts)
    assert torch.equal(big.labels[:270], part.labels)


def test_same_scenes_at_any_image_size():
    a = make_parts(64, image_size=32, seed=2)
    b = make_parts(64, image_size=64, seed=2)
    assert torch.equal(a.labels, b.labels)
    # the 64 px part map, pooled 2x2 by majority, mostly equals the 32 px one
    b_down = b.parts.reshape(64, 32, 2, 32, 2).permute(0, 1, 3, 2, 4).reshape(64, 32, 32, 4)
    mode = torch.mode(b_down, dim=-1).values
    assert (mode == a.parts).float().mean() > 0.9


def test_train_and_test_streams_are_disjoint():
    tr = make_parts(64, image_size=32, seed=0, split="train")
    te = make_parts(64, image_size=32, seed=0, split="test")
    assert not torch.equal(tr.labels, te.labels)
    # no test image equals (or nearly equals) any training image
    d = torch.cdist(te.images.flatten(1), tr.images.flatten(1))
    assert d.min() > 1.0
    assert tr.name == "parts-train" and te.name == "parts-test"


# ---------------------------------------------------------------- contents
def test_types_shapes_and_value_range(small):
    assert small.images.dtype == torch.float32 and small.images.shape == (96, 3, 48, 48)
    assert small.images.min() >= 0.0 and small.images.max() <= 1.0
    assert small.parts.dtype == torch.int64 and small.parts.shape == (96, 48, 48)
    assert small.objects.dtype == torch.bool
    assert small.labels.dtype == torch.int64
    assert small.part_names == PART_NAMES and small.part_names[0] == "background"
    assert small.class_names == class_names("v2") and small.n_classes == 8
    assert int(small.parts.min()) == 0 and int(small.parts.max()) == len(PART_NAMES) - 1


def test_object_mask_is_exactly_the_union_of_parts(small):
    assert torch.equal(small.objects, small.parts > 0)


def test_class_balance_and_every_class_reachable():
    ds = make_parts(8 * 13, image_size=16, seed=7)
    assert ds.class_counts().tolist() == [13] * 8
    # every block of eight holds each class once
    blocks = ds.labels.reshape(-1, 8).sort(dim=1).values
    assert torch.equal(blocks, torch.arange(8).expand_as(blocks))


def test_class_attributes_table():
    assert class_attributes(0, "v2") == {"head": "red", "tail": "pointed", "marking": "striped"}
    assert class_attributes(7, "v2") == {"head": "blue", "tail": "round", "marking": "spotted"}
    assert class_attributes(3) == class_attributes(3, DEFAULT_DESIGN)
    # pairs differing in exactly one part attribute, in both designs
    for design in DESIGNS:
        for c in range(4):
            a, b = class_attributes(c, design), class_attributes(c + 4, design)
            assert [k for k in a if a[k] != b[k]] == ["head"]
        for c in (0, 1, 4, 5):
            a, b = class_attributes(c, design), class_attributes(c + 2, design)
            assert [k for k in a if a[k] != b[k]] == ["tail"]
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        class_attributes(8)


def test_every_image_shows_body_head_marking_and_nearly_always_a_tail(small):
    counts = torch.stack([(small.parts == k).sum((1, 2)) for k in range(len(PART_NAMES))], 1)
    assert (counts[:, BODY] > 0).all() and (counts[:, HEAD] > 0).all() and (counts[:, MARK] > 0).all()
    assert (counts[:, TAIL] > 0).float().mean() >= 0.97
    frac = small.objects.float().mean((1, 2))
    assert 0.15 < float(frac.mean()) < 0.35  # the object covers about a quarter of the image
    assert float(frac.min()) > 0.08


def test_head_colour_in_the_image_matches_the_class(small):
    # the part map says where the head is; the pixels there must be red or blue as the class says
    img, prt = small.images, small.parts
    for i in range(len(small)):
        head = prt[i] == HEAD
        r, b = img[i, 0][head].median(), img[i, 2][head].median()
        expected_red = class_attributes(int(small.labels[i]), "v2")["head"] == "red"
        assert bool(r > b) == expected_red, f"image {i}: head R={r:.2f} B={b:.2f}"


def test_tail_colour_in_the_image_matches_the_tail_type(small):
    from kmexplain_utils.data.parts import TAIL_COLORS

    refs = torch.tensor(list(TAIL_COLORS.values()))  # (2, 3): pointed, round
    for img, prt, lab in zip(small.images, small.parts, small.labels):
        tail = prt == TAIL
        if tail.sum() < 3:
            continue
        mean = img[:, tail].mean(1)
        expected = list(TAIL_COLORS).index(class_attributes(int(lab), "v2")["tail"])
        assert int((refs - mean).norm(dim=1).argmin()) == expected


def test_marking_is_darker_than_the_body_and_uniform_within_a_part(small):
    img, prt = small.images, small.parts
    lum = img.mean(1)
    for i in range(len(small)):
        body, mark = prt[i] == BODY, prt[i] == MARK
        assert lum[i][mark].mean() < 0.75 * lum[i][body].mean()
        # a part is one colour plus pixel noise: small spread inside it
        assert img[i][:, body].std(dim=1).max() < 0.12


@pytest.mark.parametrize("design", ["v2", "v3"])
def test_tail_shape_and_marking_pattern_follow_the_class(design):
    ds = make_parts(160, image_size=96, seed=11, design=design)
    tail = ds.parts == TAIL
    # boundary pixels of the tail (a 4-neighbour is not tail), relative to sqrt(area):
    # a triangle has a longer outline than a disc of the same area
    pad = torch.nn.functional.pad(tail, (1, 1, 1, 1))
    inner = pad[:, 2:, 1:-1] & pad[:, :-2, 1:-1] & pad[:, 1:-1, 2:] & pad[:, 1:-1, :-2]
    ratio = (tail & ~inner).sum((1, 2)).float() / tail.sum((1, 2)).clamp(min=1).float().sqrt()
    pointed = torch.tensor([class_attributes(int(c), design)["tail"] == "pointed" for c in ds.labels])
    assert ratio[pointed].mean() > 1.1 * ratio[~pointed].mean()
    # stripes cover about 45 % of the body, spots about 32 %
    mark = (ds.parts == MARK).sum((1, 2)).float()
    cover = mark / (mark + (ds.parts == BODY).sum((1, 2)).float())
    striped = torch.tensor([class_attributes(int(c), design)["marking"] == "striped" for c in ds.labels])
    assert cover[striped].mean() > cover[~striped].mean() + 0.05


def test_distractors_in_head_colours_lie_outside_the_object(small):
    img = small.images
    redish = (img[:, 0] > 0.6) & (img[:, 1] < 0.35) & (img[:, 2] < 0.35)
    blueish = (img[:, 2] > 0.6) & (img[:, 0] < 0.35) & (img[:, 1] < 0.55)
    outside = (redish | blueish) & ~small.objects
    has_distractor = outside.sum((1, 2)) >= 10
    assert 0.2 < has_distractor.float().mean() < 0.95


def test_argument_errors():
    with pytest.raises(ValueError, match="split"):
        make_parts(8, split="val")
    with pytest.raises(ValueError, match="image_size"):
        make_parts(8, image_size=4)
    with pytest.raises(ValueError, match="n must be"):
        make_parts(-1)
    assert len(make_parts(0, image_size=16)) == 0


# ---------------------------------------------------------------- design v3: colour does not identify a part
@pytest.fixture(scope="module")
def v3() -> ImageSet:
    return make_parts(96, image_size=48, seed=5, design="v3")


def test_designs_and_class_names():
    assert DESIGNS == ("v2", "v3") and DEFAULT_DESIGN in DESIGNS
    assert CLASS_NAMES == class_names(DEFAULT_DESIGN)
    assert class_names("v2")[0] == "red-pointed-striped" and class_names("v2")[7] == "blue-round-spotted"
    assert class_names("v3")[0] == "warm-pointed-striped" and class_names("v3")[7] == "cool-round-spotted"
    assert class_attributes(5, "v3") == {"head": "cool", "tail": "pointed", "marking": "spotted"}
    assert class_attributes(5, "v2") == {"head": "blue", "tail": "pointed", "marking": "spotted"}
    ds = make_parts(16, image_size=16, seed=0, design="v3")
    assert ds.class_names == class_names("v3") and ds.name == ("parts-train" if DEFAULT_DESIGN == "v3" else "parts-v3-train")
    with pytest.raises(ValueError, match=r"design must be one of \('v2', 'v3'\), got 'v9'"):
        make_parts(8, design="v9")
    with pytest.raises(ValueError, match="design must be one of"):
        class_attributes(0, "v1")


def test_the_default_design_is_what_make_parts_gives():
    a = make_parts(24, image_size=16, seed=4)
    b = make_parts(24, image_size=16, seed=4, design=DEFAULT_DESIGN)
    assert torch.equal(a.images, b.images) and a.scene_source == b.scene_source


def test_v3_determinism_prefixes_and_sizes():
    from kmexplain_utils.data import parts

    a = make_parts(300, image_size=24, seed=1, design="v3")
    parts._generate.cache_clear()
    b = make_parts(270, image_size=24, seed=1, design="v3")
    assert torch.equal(a.images[:270], b.images) and torch.equal(a.parts[:270], b.parts)
    c = make_parts(64, image_size=48, seed=1, design="v3")
    assert torch.equal(c.labels, a.labels[:64])
    v2 = make_parts(64, image_size=24, seed=1, design="v2")
    assert torch.equal(v2.labels, a.labels[:64])  # the same labels, the same poses: only the looks differ
    assert (v2.images - a.images[:64]).abs().mean() > 0.05
    assert make_parts(16, image_size=17, seed=0, design="v3").images.shape == (16, 3, 17, 17)


def test_v3_keeps_sizes_balance_and_nuisances(v3):
    from kmexplain_utils.data.parts import NUISANCE_NAMES, PALETTE_NAMES

    assert v3.images.shape == (96, 3, 48, 48) and v3.images.min() >= 0 and v3.images.max() <= 1
    assert torch.equal(v3.objects, v3.parts > 0)
    assert v3.class_counts().tolist() == [12] * 8
    assert set(v3.attributes) == set(NUISANCE_NAMES)
    assert set(v3.attributes["body_colour"]) <= set(PALETTE_NAMES)
    counts = torch.stack([(v3.parts == k).sum((1, 2)) for k in range(len(PART_NAMES))], 1)
    assert (counts[:, BODY] > 0).all() and (counts[:, HEAD] > 0).all() and (counts[:, MARK] > 0).all()
    assert (counts[:, TAIL] > 0).float().mean() >= 0.97
    # the deciding parts stay small: head, tail and marking are a few per cent of the image each
    share = counts.float().sum(0) / counts.sum()
    assert 0.02 < share[HEAD] < 0.08 and 0.01 < share[TAIL] < 0.04 and 0.02 < share[MARK] < 0.08
    from kmexplain_utils.evaluation.keypoints import keypoints_from_parts

    kp = keypoints_from_parts(v3.parts[:4], len(PART_NAMES))  # one keypoint per part present, on it
    assert all(len(k) == len(torch.unique(v3.parts[i])) - 1 for i, k in enumerate(kp))


def test_v3_every_part_draws_its_colour_from_one_palette():
    from kmexplain_utils.data.parts import _PALETTE, _V3_SLOTS, _chunk_generator, sample_scenes

    p = sample_scenes(4096, torch.Generator().manual_seed(0), "v3")
    idx = p["part_color_index"]  # (n, 6): palette index of legs, tail, body, marking, head, eye
    assert idx.shape == (4096, len(_V3_SLOTS))
    # within a scene the parts have different colours (so every part stands out from its neighbours)
    assert (idx.sort(1).values.diff(dim=1) > 0).all()
    # head, tail and body draw every palette colour equally often (within sampling error); the marking
    # less evenly (it must differ from the body in luminance, so extreme colours come more often), and
    # the legs and the eye, which take what is left, in between
    freq = torch.stack([torch.bincount(idx[:, j], minlength=len(_PALETTE)) for j in range(idx.shape[1])]).float() / 4096
    even = [_V3_SLOTS.index(s) for s in ("head", "tail", "body")]
    assert (freq[even] - 1 / len(_PALETTE)).abs().max() < 0.025
    rest = [_V3_SLOTS.index(s) for s in ("legs", "eye")]
    assert (freq[rest] - 1 / len(_PALETTE)).abs().max() < 0.07
    mark = freq[_V3_SLOTS.index("marking")]
    assert mark.min() > 0.01 and mark.max() < 0.35, mark
    # the rendered colour of a part is its palette colour (up to jitter, brightness, gain and noise)
    ds = make_parts(64, image_size=48, seed=2, design="v3")
    g_idx = sample_scenes(256, _chunk_generator(2, "train", 0), "v3")["part_color_index"][:64]
    for part, slot in (("body", 2), ("head", 4), ("marking", 3)):
        k = PART_NAMES.index(part)
        for i in range(64):
            m = ds.parts[i] == k
            med = ds.images[i][:, m].median(1).values
            assert (med - _PALETTE[g_idx[i, slot]]).abs().max() < 0.3, (part, i)


def test_public_palette_is_the_rendered_palette_with_warm_then_cool_halves():
    from kmexplain_utils.data.parts import _GROUP, _PALETTE, PALETTE, PALETTE_NAMES, sample_scenes

    assert tuple(PALETTE) == PALETTE_NAMES
    assert torch.equal(torch.tensor(list(PALETTE.values())), _PALETTE)
    rgb = torch.tensor(list(PALETTE.values()))
    # the first four are the warm half (red above blue), the last four the cool half
    assert (_GROUP == torch.tensor([0] * 4 + [1] * 4)).all()
    assert (rgb[:4, 0] > rgb[:4, 2]).all() and (rgb[4:, 2] > rgb[4:, 0]).all()
    # the head of a warm class always takes a colour of the first half, of a cool class the second
    p = sample_scenes(512, torch.Generator().manual_seed(1), "v3")
    head = p["part_color_index"][:, 4]
    assert ((head >= 4).long() == p["head"]).all()


def test_v3_marking_is_not_systematically_darker_than_the_body(v3):
    lum = v3.images.mean(1)
    darker = [
        bool(lum[i][v3.parts[i] == MARK].mean() < lum[i][v3.parts[i] == BODY].mean()) for i in range(len(v3))
    ]
    assert 0.3 < np.mean(darker) < 0.7


def test_v3_head_hue_and_tail_shape_follow_the_class():
    from kmexplain_utils.data.parts import _GROUP, _chunk_generator, sample_scenes

    ds = make_parts(160, image_size=96, seed=11, design="v3")
    attrs = [class_attributes(int(c), "v3") for c in ds.labels]
    # the head's colour is warm (red > blue) or cool (blue > red) as the class says
    for i in range(len(ds)):
        med = ds.images[i][:, ds.parts[i] == HEAD].median(1).values
        assert bool(med[0] > med[2]) == (attrs[i]["head"] == "warm"), i
    # ... and so is the tail's for its shape (pointed: warm, round: cool), in the scene parameters
    p = sample_scenes(256, _chunk_generator(11, "train", 0), "v3")
    assert torch.equal(_GROUP[p["part_color_index"][:, 0 + 1]], p["tail"])  # slot 1 = tail
    assert torch.equal(_GROUP[p["part_color_index"][:, 4]], p["head"])  # slot 4 = head
    # the pointed tail is a long spike: far from its centroid compared with its area
    tail = ds.parts == TAIL
    spread = []
    for i in range(len(ds)):
        rc = torch.nonzero(tail[i]).float()
        spread.append(float((rc - rc.mean(0)).square().sum(1).max().sqrt() / max(len(rc), 1) ** 0.5) if len(rc) > 5 else float("nan"))
    spread_t = torch.tensor(spread)
    pointed = torch.tensor([a["tail"] == "pointed" for a in attrs])
    assert np.nanmedian(spread_t[pointed]) > 1.3 * np.nanmedian(spread_t[~pointed])


@pytest.mark.parametrize("design", ["v2", "v3"])
def test_v3_distractors_never_take_the_heads_shape(design):
    """v3 draws squares, rings and triangles (no disc, the shape of the head and round tail); v2 discs."""
    from kmexplain_utils.data.parts import _chunk_generator, sample_scenes

    s, n = 64, 256
    ds = make_parts(n, image_size=s, seed=3, design=design)
    clean, _, _ = intervene(ds, range(n), remove_distractors=True)
    painted = (ds.images != clean).any(1)  # (n, S, S): the visible pixels of the distractors
    p = sample_scenes(n, _chunk_generator(3, "train", 0), design)
    col = ((p["d_center"] + 1) / 2 * s).floor().long().clamp(0, s - 1)  # (n, 3, 2): x, y pixel
    centre_painted = {0: [], 1: [], 2: []}
    for i in range(n):
        for k in range(3):
            others = [j for j in range(3) if j != k and p["d_on"][i, j]]
            near = any(float((p["d_center"][i, k] - p["d_center"][i, j]).norm()) < 0.6 for j in others)
            x, y = col[i, k].tolist()
            if p["d_on"][i, k] and not near and not ds.objects[i, y, x]:
                centre_painted[int(p["d_kind"][i, k])].append(bool(painted[i, y, x]))
    assert min(len(v) for v in centre_painted.values()) > 20
    # kind 0 (square in v3, disc in v2) and kind 2 (triangle) are filled; kind 1 is a ring in v3
    assert all(centre_painted[0]) and all(centre_painted[2])
    assert not any(centre_painted[1]) if design == "v3" else all(centre_painted[1])


def test_colour_baseline_ami_tells_the_designs_apart():
    v2 = make_parts(200, image_size=32, seed=0, split="test", design="v2")
    v3 = make_parts(200, image_size=32, seed=0, split="test", design="v3")
    ami2 = colour_baseline_ami(v2, k_values=(5, 8))
    ami3 = colour_baseline_ami(v3, k_values=(5, 8))
    assert sorted(ami2) == sorted(ami3) == [5, 8]
    assert min(ami2.values()) > 0.4  # colour-coded parts: RGB alone finds them
    assert max(ami3.values()) <= 0.15  # one palette for every part: it does not
    # the same call gives the same numbers
    assert colour_baseline_ami(v3, k_values=(5, 8)) == ami3


def test_colour_baseline_ami_against_a_direct_computation():
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_mutual_info_score

    # a toy set in which the colour is the part: the AMI is 1
    parts = torch.zeros(4, 8, 8, dtype=torch.int64)
    parts[:, 2:6, 2:4], parts[:, 2:6, 4:6] = 1, 2
    images = torch.zeros(4, 3, 8, 8)
    images[:, 0][parts == 1] = 1.0
    images[:, 1][parts == 2] = 1.0
    toy = ImageSet(images, [0, 1, 0, 1], parts=parts, part_names=["background", "a", "b"])
    assert colour_baseline_ami(toy, k_values=[2]) == {2: pytest.approx(1.0)}
    # on generated images: the same as scikit-learn on all object pixels when every pixel is fitted
    ds = make_parts(16, image_size=24, seed=3, design="v3")
    got = colour_baseline_ami(ds, k_values=[6], max_fit_pixels=10**9, seed=1)
    obj = ds.parts > 0
    rgb = ds.images.permute(0, 2, 3, 1)[obj].double().numpy()
    rng = np.random.default_rng(1)
    fit = rgb[rng.choice(len(rgb), size=len(rgb), replace=False)]
    km = KMeans(n_clusters=6, n_init=4, random_state=1).fit(fit)
    assert got[6] == pytest.approx(adjusted_mutual_info_score(ds.parts[obj].numpy(), km.predict(rgb)))


def test_colour_baseline_ami_errors():
    with pytest.raises(ValueError, match="part maps"):
        colour_baseline_ami(ImageSet(torch.zeros(2, 3, 4, 4), [0, 1]))
    ds = make_parts(8, image_size=16, seed=0)
    with pytest.raises(ValueError, match="k_values"):
        colour_baseline_ami(ds, k_values=[1])
    with pytest.raises(ValueError, match="n_images"):
        colour_baseline_ami(ds, n_images=0)


# ---------------------------------------------------------------- interventions
@pytest.fixture(scope="module", params=["v2", "v3"])
def scene(request) -> ImageSet:
    return make_parts(300, image_size=40, seed=6, split="test", design=request.param)


IDX = [0, 3, 9, 255, 256, 299, 17]  # across two chunks, unordered


def test_intervene_without_intervention_reproduces_the_images_exactly(scene):
    img, prt, lab = intervene(scene, IDX)
    assert torch.equal(img, scene.images[IDX]) and torch.equal(prt, scene.parts[IDX]) and torch.equal(lab, scene.labels[IDX])
    # the same with the source given explicitly, and for scenes beyond the set made
    src = scene.scene_source
    assert src == SceneSource(6, "test", 40, src.design)
    img2, _, _ = intervene({"seed": 6, "split": "test", "image_size": 40, "design": src.design}, IDX)
    assert torch.equal(img2, img)
    longer = make_parts(520, image_size=40, seed=6, split="test", design=src.design)
    assert torch.equal(intervene(src, [515])[0], longer.images[[515]])


@pytest.mark.parametrize("part", ["head", "tail", "legs", "marking", "body"])
def test_a_removed_part_is_gone_and_nothing_outside_its_footprint_changes(scene, part):
    img, prt, lab = intervene(scene, IDX, remove=part)
    k = PART_NAMES.index(part)
    old_img, old_prt = scene.images[IDX], scene.parts[IDX]
    assert not (prt == k).any()
    footprint = old_prt == k
    if part == "body":  # the marking is painted on the body
        footprint |= old_prt == MARK
    changed = (img != old_img).any(1)
    assert not (changed & ~footprint).any()  # bit-identical outside, noise included
    assert torch.equal(prt[~footprint], old_prt[~footprint])
    assert changed[footprint].float().mean() > 0.9  # what lay behind shows instead
    assert torch.equal(lab, scene.labels[IDX])
    # what shows instead: the body under a removed head or marking, never the removed part
    if part == "marking":
        assert (prt[footprint] == BODY).all()


def test_removing_several_parts_at_once(scene):
    _, prt, _ = intervene(scene, IDX, remove=["head", "tail"])
    assert not ((prt == HEAD) | (prt == TAIL)).any()
    one, _, _ = intervene(scene, IDX, remove="head")
    both, _, _ = intervene(scene, IDX, remove=("head", "tail"))
    tail_fp = scene.parts[IDX] == TAIL
    assert torch.equal(both.permute(0, 2, 3, 1)[~tail_fp], one.permute(0, 2, 3, 1)[~tail_fp])


@pytest.mark.parametrize("attr", ["head", "tail", "marking"])
def test_a_swap_changes_the_label_and_only_the_swapped_part(scene, attr):
    design = scene.scene_source.design
    values = {a: sorted({class_attributes(c, design)[a] for c in range(8)}) for a in ("head", "tail", "marking")}
    new = values[attr][0]
    img, prt, lab = intervene(scene, IDX, swap={attr: new})
    part = PART_NAMES.index(ATTRIBUTE_PARTS[attr])
    for j, i in enumerate(IDX):
        want = dict(class_attributes(int(scene.labels[i]), design), **{attr: new})
        assert class_attributes(int(lab[j]), design) == want
        same = want == class_attributes(int(scene.labels[i]), design)
        if same:  # already had the value: nothing changes
            assert torch.equal(img[j], scene.images[i])
            continue
        footprint = (scene.parts[i] == part) | (prt[j] == part)
        changed = (img[j] != scene.images[i]).any(0)
        assert changed.any() and not (changed & ~footprint).any()
        if attr != "head":  # a shape or pattern: the footprint itself moves (a head swap is a recolouring)
            assert not torch.equal(prt[j] == part, scene.parts[i] == part)


def test_removing_the_distractors_changes_only_distractor_pixels(scene):
    img, prt, lab = intervene(scene, list(range(40)), remove_distractors=True)
    old = scene.images[:40]
    changed = (img != old).any(1)
    assert torch.equal(prt, scene.parts[:40]) and torch.equal(lab, scene.labels[:40])
    assert not (changed & (scene.parts[:40] > 0)).any()  # the creature and its noise: untouched
    assert changed.any((1, 2)).float().mean() > 0.5  # most scenes had a distractor
    # the new background is smooth: no distractor edges left, so a second removal changes nothing
    again, _, _ = intervene(scene, list(range(40)), remove_distractors=True, remove=None)
    assert torch.equal(again, img)


def test_intervene_is_deterministic_and_vectorised(scene):
    from kmexplain_utils.data import parts

    a = intervene(scene, IDX, remove="tail", swap={"marking": "striped"})
    parts._generate.cache_clear()
    b = intervene(scene, IDX, remove="tail", swap={"marking": "striped"})
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    # one call for many scenes equals one call per scene
    single = torch.cat([intervene(scene, [i], remove="tail", swap={"marking": "striped"})[0] for i in IDX])
    assert torch.equal(single, a[0])
    assert a[0].shape == (len(IDX), 3, 40, 40) and a[1].shape == (len(IDX), 40, 40) and a[2].shape == (len(IDX),)
    assert a[0].dtype == torch.float32 and a[1].dtype == torch.int64 and a[2].dtype == torch.int64


def test_intervene_at_another_image_size_is_the_same_scene():
    src = SceneSource(seed=0, split="train", image_size=64, design="v3")
    _, prt64, lab64 = intervene(src, range(16), remove="head")
    _, prt32, lab32 = intervene(dataclasses.replace(src, image_size=32), range(16), remove="head")
    assert torch.equal(lab64, lab32)
    down = prt64.reshape(16, 32, 2, 32, 2).permute(0, 1, 3, 2, 4).reshape(16, 32, 32, 4)
    assert (torch.mode(down, dim=-1).values == prt32).float().mean() > 0.9


def test_intervene_errors_name_the_problem():
    ds = make_parts(16, image_size=16, seed=0, design="v3")
    with pytest.raises(ValueError, match=r"cannot remove \['wings'\]: removable parts are"):
        intervene(ds, [0], remove="wings")
    with pytest.raises(ValueError, match="cannot swap 'legs'"):
        intervene(ds, [0], swap={"legs": "4"})
    with pytest.raises(ValueError, match=r"head must be one of \['warm', 'cool'\] in design v3, got 'red'"):
        intervene(ds, [0], swap={"head": "red"})
    with pytest.raises(TypeError, match="subset"):
        intervene(ds.subset([0, 1]), [0])
    with pytest.raises(IndexError, match=">= 0"):
        intervene(ds, [-1])
    with pytest.raises(TypeError, match="integer"):
        intervene(ds, [0.5])
    with pytest.raises(TypeError, match="keys seed, split, image_size"):
        intervene({"seed": 0}, [0])
    assert intervene(ds, [])[0].shape == (0, 3, 16, 16)


# ---------------------------------------------------------------- load_dataset
def test_load_dataset_follows_the_profile():
    prof = get_profile("smoke")
    tr = load_dataset("parts", "train", prof)
    te = load_dataset("parts", "test", "smoke", seed=0)
    assert len(tr) == prof.n_train and len(te) == prof.n_test
    assert tr.image_size == te.image_size == prof.image_size
    assert torch.equal(tr.images, make_parts(prof.n_train, prof.image_size, 0, "train").images)
    other = load_dataset("parts", "train", prof, image_size=20, n=16, seed=9)
    assert other.images.shape == (16, 3, 20, 20)


def test_load_dataset_passes_the_design_of_the_generated_parts():
    v3 = load_dataset("parts", "test", "smoke", design="v3")
    assert torch.equal(v3.images, make_parts(len(v3), v3.image_size, 0, "test", design="v3").images)
    assert v3.scene_source.design == "v3" and v3.class_names == class_names("v3")
    with pytest.raises(TypeError, match="only design="):
        load_dataset("parts", "test", "smoke", colour="red")


def test_load_dataset_errors_list_the_choices():
    with pytest.raises(ValueError, match="parts, mnist, pets, cub"):
        load_dataset("imagenet", "train", "smoke")
    with pytest.raises(ValueError, match="train, test"):
        load_dataset("parts", "validation", "smoke")
    with pytest.raises(ValueError, match="n > 0"):
        load_dataset("parts", "train", n=0, image_size=16)
    with pytest.raises(TypeError, match="Profile"):
        load_dataset("parts", "train", profile=3)
    assert dataset_names() == ["parts", "mnist", "pets", "cub"]


# ---------------------------------------------------------------- ImageSet
def _tiny(n: int = 6, s: int = 5) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    parts = torch.randint(0, 3, (n, s, s), generator=g)
    return ImageSet(
        torch.rand(n, 3, s, s, generator=g),
        torch.arange(n) % 3,
        ["a", "b", "c"],
        parts=parts,
        part_names=["background", "x", "y"],
        name="tiny",
    )


def test_imageset_access_and_subset():
    ds = _tiny()
    img, lab = ds[4]
    assert torch.equal(img, ds.images[4]) and lab == 1 and isinstance(lab, int)
    assert torch.equal(ds.images_at([1, 3]), ds.images[[1, 3]])
    assert torch.equal(ds.parts_at(torch.tensor([2])), ds.parts[2:3])
    assert torch.equal(ds.objects_at(slice(0, 2)), ds.parts[:2] > 0)
    assert torch.equal(ds.images_at([-1]), ds.images[5:6])
    sub = ds.subset([5, 0])
    assert len(sub) == 2 and sub.labels.tolist() == [2, 0] and torch.equal(sub.parts[0], ds.parts[5])
    assert sub.class_names == ds.class_names and sub.part_names == ds.part_names
    assert ds.n_classes == 3 and ds.image_size == 5 and len(ds) == 6
    assert "tiny" in repr(ds)
    with pytest.raises(IndexError, match="out of range"):
        ds.images_at([6])
    # works with a DataLoader
    x, y = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert x.shape == (4, 3, 5, 5) and y.tolist() == [0, 1, 2, 0]


def test_imageset_without_parts():
    ds = ImageSet(torch.zeros(2, 3, 4, 4), [0, 1])
    assert ds.parts_at([0]) is None and ds.objects_at([0]) is None and ds.part_names is None
    assert ds.class_names == ["0", "1"]


def test_imageset_errors_name_the_problem():
    with pytest.raises(ValueError, match="3 channels"):
        ImageSet(torch.zeros(2, 1, 4, 4), [0, 1])
    with pytest.raises(TypeError, match="floating point"):
        ImageSet(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), [0, 1])
    with pytest.raises(ValueError, match=r"parts must have shape \(N, H, W\) = \(2, 4, 4\).*got \(2, 5, 5\)"):
        ImageSet(torch.zeros(2, 3, 4, 4), [0, 1], parts=torch.zeros(2, 5, 5), part_names=["background"])
    with pytest.raises(ValueError, match="objects must have shape"):
        ImageSet(torch.zeros(2, 3, 4, 4), [0, 1], objects=torch.zeros(2, 4, 3))
    with pytest.raises(ValueError, match="part_names is required"):
        ImageSet(torch.zeros(2, 3, 4, 4), [0, 1], parts=torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        ImageSet(torch.zeros(2, 3, 4, 4), [0, 2], ["a", "b"])
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        ImageSet(torch.zeros(2, 3, 4, 4), [0, 1, 1])


def test_balanced_order_prefixes_are_balanced():
    labels = torch.tensor([0] * 30 + [1] * 30 + [2] * 30)  # sorted, like MNIST-5k
    order = balanced_order(labels, seed=0)
    assert sorted(order.tolist()) == list(range(90))
    for n in (3, 9, 30, 61):
        counts = torch.bincount(labels[order[:n]], minlength=3)
        assert counts.max() - counts.min() <= 1
    assert torch.equal(order, balanced_order(labels, seed=0))
    assert not torch.equal(order, balanced_order(labels, seed=1))
    # unequal classes: all items still appear once
    uneven = np.array([0, 0, 0, 0, 1, 2, 2])
    assert sorted(balanced_order(uneven, seed=3).tolist()) == list(range(7))


def test_nuisance_variables_are_exposed_and_consistent_with_the_pictures():
    """make_parts exposes the generator's nuisances (ImageSet.attributes), kept by subset; facing
    is where the head is drawn relative to the body (checked on unrotated-enough creatures)."""
    from kmexplain_utils.data.parts import NUISANCE_NAMES, make_parts

    ds = make_parts(64, image_size=64, seed=3)
    assert set(ds.attributes) == set(NUISANCE_NAMES)
    assert all(v.shape == (64,) for v in ds.attributes.values())
    assert set(ds.attributes["facing"]) == {"left", "right"} and set(ds.attributes["legs"]) == {2, 4}
    assert np.abs(ds.attributes["rotation_deg"]).max() <= 60 + 1e-6
    assert ds.attributes["size"].min() >= 0.88 - 1e-6 and ds.attributes["size"].max() <= 1.12 + 1e-6
    cols = torch.arange(64, dtype=torch.float32)
    checked = 0
    for i in range(64):
        if abs(ds.attributes["rotation_deg"][i]) > 45:
            continue
        head_x = (ds.parts[i] == 2).float().sum(0) @ cols / (ds.parts[i] == 2).sum()
        body_x = (ds.parts[i] == 1).float().sum(0) @ cols / (ds.parts[i] == 1).sum()
        assert (head_x > body_x) == (ds.attributes["facing"][i] == "right"), i
        checked += 1
    assert checked > 20
    sub = ds.subset([5, 1])
    assert sub.attributes["facing"].tolist() == ds.attributes["facing"][[5, 1]].tolist()
