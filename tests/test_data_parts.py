"""The generated part-based creatures, the ImageSet container and load_dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kmexplain_utils.config import get_profile
from kmexplain_utils.data import ImageSet, balanced_order, dataset_names, load_dataset
from kmexplain_utils.data.parts import (
    CLASS_NAMES,
    PART_NAMES,
    class_attributes,
    make_parts,
)

HEAD, TAIL, BODY, LEGS, MARK = (PART_NAMES.index(p) for p in ("head", "tail", "body", "legs", "marking"))


@pytest.fixture(scope="module")
def small() -> ImageSet:
    return make_parts(96, image_size=48, seed=5)


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
    assert small.class_names == CLASS_NAMES and small.n_classes == 8
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
    assert class_attributes(0) == {"head": "red", "tail": "pointed", "marking": "striped"}
    assert class_attributes(7) == {"head": "blue", "tail": "round", "marking": "spotted"}
    # pairs differing in exactly one part attribute
    for c in range(4):
        a, b = class_attributes(c), class_attributes(c + 4)
        assert [k for k in a if a[k] != b[k]] == ["head"]
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
        expected_red = class_attributes(int(small.labels[i]))["head"] == "red"
        assert bool(r > b) == expected_red, f"image {i}: head R={r:.2f} B={b:.2f}"


def test_tail_colour_in_the_image_matches_the_tail_type(small):
    from kmexplain_utils.data.parts import TAIL_COLORS

    refs = torch.tensor(list(TAIL_COLORS.values()))  # (2, 3): pointed, round
    for img, prt, lab in zip(small.images, small.parts, small.labels):
        tail = prt == TAIL
        if tail.sum() < 3:
            continue
        mean = img[:, tail].mean(1)
        expected = list(TAIL_COLORS).index(class_attributes(int(lab))["tail"])
        assert int((refs - mean).norm(dim=1).argmin()) == expected


def test_marking_is_darker_than_the_body_and_uniform_within_a_part(small):
    img, prt = small.images, small.parts
    lum = img.mean(1)
    for i in range(len(small)):
        body, mark = prt[i] == BODY, prt[i] == MARK
        assert lum[i][mark].mean() < 0.75 * lum[i][body].mean()
        # a part is one colour plus pixel noise: small spread inside it
        assert img[i][:, body].std(dim=1).max() < 0.12


def test_tail_shape_and_marking_pattern_follow_the_class():
    ds = make_parts(160, image_size=96, seed=11)
    tail = ds.parts == TAIL
    # boundary pixels of the tail (a 4-neighbour is not tail), relative to sqrt(area):
    # a triangle has a longer outline than a disc of the same area
    pad = torch.nn.functional.pad(tail, (1, 1, 1, 1))
    inner = pad[:, 2:, 1:-1] & pad[:, :-2, 1:-1] & pad[:, 1:-1, 2:] & pad[:, 1:-1, :-2]
    ratio = (tail & ~inner).sum((1, 2)).float() / tail.sum((1, 2)).clamp(min=1).float().sqrt()
    pointed = torch.tensor([class_attributes(int(c))["tail"] == "pointed" for c in ds.labels])
    assert ratio[pointed].mean() > 1.1 * ratio[~pointed].mean()
    # stripes cover about 45 % of the body, spots about 32 %
    mark = (ds.parts == MARK).sum((1, 2)).float()
    cover = mark / (mark + (ds.parts == BODY).sum((1, 2)).float())
    striped = torch.tensor([class_attributes(int(c))["marking"] == "striped" for c in ds.labels])
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
