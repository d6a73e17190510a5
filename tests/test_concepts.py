"""Tests of concept maps (METHOD 4)."""

from __future__ import annotations

import pytest
import torch

from kmexplain_utils._validation import NotFittedError
from kmexplain_utils.concepts import ConceptModel, concept_map, upsample_labels
from kmexplain_utils.features import LevelFeatures


from tiny_models import SmallResNetLike


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = SmallResNetLike().eval()
    g = torch.Generator().manual_seed(2)
    x = torch.rand(12, 3, 16, 16, generator=g)
    y = torch.arange(12) % 3
    return model, x, y


def test_concept_map_is_nearest_centroid_per_position() -> None:
    g = torch.Generator().manual_seed(0)
    A = torch.randn(3, 4, 5, 6, generator=g, dtype=torch.float64)
    C = torch.randn(7, 4, generator=g, dtype=torch.float64)
    labels = concept_map(A, C)
    assert labels.shape == (3, 5, 6) and labels.dtype == torch.int64
    vectors = A.permute(0, 2, 3, 1).reshape(-1, 4)
    d2 = ((vectors[:, None] - C[None]) ** 2).sum(-1)
    assert torch.equal(labels.reshape(-1), d2.argmin(1))
    # allowed mask: only concepts 0 and 1 for every image
    allowed = torch.zeros(3, 7, dtype=torch.bool)
    allowed[:, :2] = True
    restricted = concept_map(A, C, allowed=allowed)
    assert torch.equal(restricted.reshape(-1), d2[:, :2].argmin(1))


def test_upsampling_takes_the_nearest_registered_position() -> None:
    from kmexplain_utils.resample import GridGeometry

    labels = torch.arange(12).view(1, 3, 4)
    up = upsample_labels(labels, (12, 16))
    assert up.shape == (1, 12, 16) and up.dtype == torch.int64
    # brute force: position i of a stride-4 grid is centred on pixel 4 i (offset 0); ties go to the later one
    def nearest(n_pix: int, n_pos: int) -> torch.Tensor:
        d = (4.0 * torch.arange(n_pos, dtype=torch.float64)[None, :] - torch.arange(n_pix)[:, None]).abs() - 1e-9 * torch.arange(n_pos)
        return d.argmin(1)
    assert torch.equal(up[0], labels[0][nearest(12, 3)][:, nearest(16, 4)])
    # the first edition's rule (each pixel takes the cell it lies in) is the "cell" geometry
    cell = upsample_labels(labels, (12, 16), GridGeometry.cell(4))
    assert torch.equal(cell, labels.repeat_interleave(4, 1).repeat_interleave(4, 2))
    assert not torch.equal(cell, up)
    # brute force at image size: each pixel takes the concept nearest to the vector of its nearest position
    A = torch.rand(2, 3, 3, 4, dtype=torch.float64)
    C = torch.rand(5, 3, dtype=torch.float64)
    iy, ix = nearest(12, 3), nearest(16, 4)
    vec = A[:, :, iy][:, :, :, ix].permute(0, 2, 3, 1)  # (2, 12, 16, 3)
    assert torch.equal(concept_map(A, C, size=(12, 16)), torch.cdist(vec.reshape(-1, 3), C).argmin(1).view(2, 12, 16))


def test_concept_map_validation() -> None:
    with pytest.raises(ValueError, match=r"\(N, D, H, W\)"):
        concept_map(torch.rand(4, 3, 3), torch.rand(2, 4))
    with pytest.raises(ValueError, match=r"D = 5 .*D = 4"):
        concept_map(torch.rand(1, 4, 3, 3), torch.rand(2, 5))
    with pytest.raises(ValueError, match=r"\(K, D\)"):
        concept_map(torch.rand(1, 4, 3, 3), torch.rand(4))
    with pytest.raises(ValueError, match="size must be"):
        upsample_labels(torch.zeros(1, 2, 2, dtype=torch.long), (0, 4))


def test_concept_model_fit_and_maps(setup) -> None:
    model, x, y = setup
    cm = ConceptModel(4, level="B234", positions_per_image=6, device="cpu").fit(model, x)
    lf = cm.level_features_
    assert cm.centroids_.shape == (4, lf.n_features_)
    assert len(cm.sample_) == 12 * 6 and cm.concept_sizes_.sum() == 72
    assert torch.equal(cm.sample_labels_, cm.predict(cm.sample_.vectors))
    maps = cm.concept_map(model, x)
    assert maps.shape == (12, 8, 8) and maps.dtype == torch.int64
    a = lf.position_features(model, x).double().permute(0, 2, 3, 1)  # brute force: nearest centroid per position
    d = torch.cdist(a.reshape(-1, a.shape[-1]), cm.centroids_.double())
    assert torch.equal(maps, d.argmin(1).view(maps.shape))
    full = cm.concept_map(model, x, size="input")
    assert full.shape == (12, 16, 16)
    assert torch.equal(full[:, ::2, ::2], maps)
    # deterministic for a seed
    again = ConceptModel(4, level="B234", positions_per_image=6, device="cpu").fit(model, x, level_features=lf)
    assert torch.equal(again.centroids_, cm.centroids_)
    # the k-means objective was minimised on the sample: each centroid is its members' mean
    for k in range(4):
        members = cm.sample_.vectors[cm.sample_labels_ == k]
        if len(members):
            assert torch.allclose(cm.centroids_[k], members.mean(0), atol=1e-4)


def test_per_class_concepts(setup) -> None:
    model, x, y = setup
    cm = ConceptModel(2, level="B34", per_class=True, positions_per_image=4, device="cpu").fit(model, (x, y))
    assert cm.centroids_.shape[0] == 6
    assert cm.concept_classes_.tolist() == [0, 0, 1, 1, 2, 2]
    maps = cm.concept_map(model, x, target=1)
    assert set(maps.unique().tolist()) <= {2, 3}
    maps_each = cm.concept_map(model, x, target=y)
    for i in range(12):
        assert set(maps_each[i].unique().tolist()) <= {2 * int(y[i]), 2 * int(y[i]) + 1}
    with pytest.raises(ValueError, match="labelled"):
        ConceptModel(2, level="B34", per_class=True, device="cpu").fit(model, x)
    with pytest.raises(ValueError, match="only meaningful"):
        ConceptModel(2, level="B34", positions_per_image=2, device="cpu").fit(model, x).concept_map(model, x, target=0)


def test_concept_model_errors(setup) -> None:
    model, x, y = setup
    with pytest.raises(NotFittedError):
        ConceptModel(3).concept_map(model, x)
    with pytest.raises(ValueError, match="image-level only"):
        ConceptModel(3, level="logits").fit(model, x)
    with pytest.raises(ValueError, match="only 12 positions were sampled for 20 concepts"):
        ConceptModel(20, level="B4", positions_per_image=1, device="cpu").fit(model, x)
    with pytest.raises(ValueError, match="level 'B4' but"):
        ConceptModel(3, level="B34").fit(model, x, level_features=LevelFeatures("B4").fit(model, x))
    with pytest.raises(ValueError, match="positive int"):
        ConceptModel(0).fit(model, x)


def test_no_mutation(setup) -> None:
    model, x, y = setup
    x0 = x.clone()
    A = torch.rand(2, 3, 4, 4)
    C = torch.rand(3, 3)
    A0, C0 = A.clone(), C.clone()
    concept_map(A, C, size=8)
    ConceptModel(2, level="B4", positions_per_image=2, device="cpu").fit(model, x)
    assert torch.equal(x, x0) and torch.equal(A, A0) and torch.equal(C, C0)
