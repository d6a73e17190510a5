"""Tests of block features and levels (METHOD 3)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import tiny_models
from kmexplain_utils._validation import NotFittedError
from kmexplain_utils.features import (
    LevelFeatures,
    block_features,
    eval_mode,
    extract_pooled,
    fit_and_sample,
    iter_batches,
    parse_level,
    sample_positions,
)


class SmallResNetLike(tiny_models.SmallResNetLike):
    """torchvision ResNet's module names; B1 at full resolution, B4 at 1/8; a stem and batch norm."""

    def __init__(self, n_classes: int = 3, width: int = 4) -> None:
        super().__init__(n_classes, width, stem=True, batch_norm=True)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    m = SmallResNetLike()
    m.train()
    with torch.no_grad():  # non-trivial BN statistics
        for _ in range(3):
            m(torch.rand(8, 3, 16, 16))
    return m.eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(10, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def _all_hooks(m: nn.Module) -> int:
    return sum(len(mod._forward_hooks) for mod in m.modules())


# ------------------------------------------------------------ parse_level
@pytest.mark.parametrize(
    "level,blocks",
    [("logits", ("logits",)), ("B4", ("B4",)), ("B34", ("B3", "B4")), ("B234", ("B2", "B3", "B4")),
     ("B1234", ("B1", "B2", "B3", "B4")), ("B13", ("B1", "B3")), ("b24", ("B2", "B4")), (" LOGITS ", ("logits",))],
)
def test_parse_level(level: str, blocks: tuple) -> None:
    assert parse_level(level) == blocks


@pytest.mark.parametrize(
    "level,pattern",
    [("B5", r"B5.*only B1..B4"), ("B43", r"ascending.*'B34'"), ("B22", r"once each.*'B2'"),
     ("", "empty"), ("B", "not understood"), ("layer4", "not understood"), ("B0", "B0")],
)
def test_parse_level_errors(level: str, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        parse_level(level)
    with pytest.raises(TypeError, match="string"):
        parse_level(4)  # type: ignore[arg-type]


# --------------------------------------------------------- block_features
def test_block_features_one_pass_and_logits(model: nn.Module, images: torch.Tensor) -> None:
    from kmexplain_utils.features import model_adapter

    model_adapter(model)  # reading the architecture takes one probe pass, once per model
    calls = []
    handle = model.register_forward_pre_hook(lambda m, i: calls.append(1))
    try:
        with torch.no_grad(), block_features(model) as extract:
            maps, logits = extract(images, return_logits=True)
    finally:
        handle.remove()
    assert len(calls) == 1  # one forward pass per extraction
    assert {b: tuple(m.shape) for b, m in maps.items()} == {
        "B1": (10, 4, 16, 16), "B2": (10, 8, 8, 8), "B3": (10, 16, 4, 4), "B4": (10, 32, 2, 2)}
    with torch.no_grad():
        assert torch.allclose(logits, model(images))
        assert torch.allclose(maps["B2"], model.layer2(model.layer1(torch.relu(model.conv1(images)))))
    assert extract.logits is logits


def test_block_features_subsets_and_custom_modules(model: nn.Module, images: torch.Tensor) -> None:
    with torch.no_grad(), block_features(model, "B34") as extract:
        assert list(extract(images)) == ["B3", "B4"]
    with torch.no_grad(), block_features(model, {"first": "layer1", "mid": model.layer3}) as extract:
        maps = extract(images)
    assert list(maps) == ["first", "mid"] and maps["mid"].shape == (10, 16, 4, 4)
    with pytest.raises(ValueError, match="no module 'layer9'.*blocks="):
        with block_features(model, {"B1": "layer9"}):
            pass
    with pytest.raises(ValueError, match="unknown block 'B7'"):
        with block_features(model, ["B7"]):
            pass


def test_hooks_removed_on_exit_and_when_forward_raises(model: nn.Module, images: torch.Tensor) -> None:
    assert _all_hooks(model) == 0
    with block_features(model) as extract:
        assert _all_hooks(model) == 4
        with torch.no_grad():
            extract(images)
    assert _all_hooks(model) == 0
    assert model._forward_hooks == {}
    with pytest.raises(RuntimeError):
        with block_features(model) as extract:
            extract(torch.rand(2, 5, 16, 16))  # conv1 raises on 5 channels
    assert _all_hooks(model) == 0
    with pytest.raises(RuntimeError, match="hooks were removed"):
        extract(images)


# ----------------------------------------------------------------- levels
def test_sigma_gives_equal_contribution_on_fitting_data(model: nn.Module, images: torch.Tensor) -> None:
    lf = LevelFeatures("B1234").fit(model, images)
    feats = lf.position_features(model, images)
    assert feats.shape == (10, 4 + 8 + 16 + 32, 16, 16)
    raw = {b: lf.dims_[b] for b in lf.blocks_}
    assert raw == {"B1": 4, "B2": 8, "B3": 16, "B4": 32}
    for b, sl in lf.slices_.items():
        mean_sq = feats[:, sl].pow(2).sum(1).mean()
        assert mean_sq == pytest.approx(1.0, rel=1e-4), b
    # without scaling the blocks contribute very unequally
    unscaled = LevelFeatures("B1234", scale="none").fit(model, images).position_features(model, images)
    contrib = [float(unscaled[:, sl].pow(2).sum(1).mean()) for sl in lf.slices_.values()]
    assert max(contrib) / min(contrib) > 1.5
    assert [s**2 for s in lf.sigma_.values()] == pytest.approx(contrib, rel=1e-4)


def test_pooled_is_mean_of_position_features(model: nn.Module, images: torch.Tensor) -> None:
    for level in ("B4", "B34", "B234", "B13"):
        lf = LevelFeatures(level).fit(model, images)
        z = lf.pooled(model, images)
        assert z.shape == (10, lf.n_features_)
        assert torch.allclose(z, lf.position_features(model, images).mean((2, 3)), atol=1e-6)


def test_pooled_b4_unscaled_equals_avgpool_output(model: nn.Module, images: torch.Tensor) -> None:
    captured = {}
    h = model.avgpool.register_forward_hook(lambda m, i, o: captured.__setitem__("z", o.flatten(1)))
    try:
        z = LevelFeatures("B4", scale="none").fit(model, images).pooled(model, images)
    finally:
        h.remove()
    assert torch.allclose(z, captured["z"], atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(model.fc(z), model(images), atol=1e-5)


def test_the_level_object_is_chosen_once_from_the_name(model: nn.Module, images: torch.Tensor) -> None:
    import copy
    import pickle

    from kmexplain_utils.features import BlockLevel, LogitsLevel, fit_and_sample

    block, logits = LevelFeatures("B34"), LevelFeatures(level="Logits")
    assert type(block) is BlockLevel and type(logits) is LogitsLevel
    assert isinstance(logits, LevelFeatures) and logits.is_logits and not logits.has_positions
    assert block.has_positions and not block.is_logits
    for lf in (block.fit(model, images), logits.fit(model, images)):
        for twin in (copy.deepcopy(lf), pickle.loads(pickle.dumps(lf))):
            assert type(twin) is type(lf) and twin.level == lf.level
    assert logits.registration_ == {} and set(block.registration_) == {"B3", "B4"}
    # one interface: the callers never test the name
    maps, z = block.maps_and_pooled(model, images)
    assert set(maps) == {"B3", "B4"}
    torch.testing.assert_close(z, block.pooled(model, images), rtol=1e-5, atol=1e-6)
    none, z_logits = logits.maps_and_pooled(model, images)
    with torch.no_grad():
        assert none is None and torch.equal(z_logits, model(images))
        with block_features(model, "B34") as extract:
            maps, out = extract(images, return_logits=True)
    feats, z = block.features_of_pass(maps, out, tuple(images.shape[-2:]))
    assert torch.equal(feats, block.combine(maps, tuple(images.shape[-2:]))) and torch.equal(z, feats.mean((2, 3)))
    assert logits.features_of_pass(maps, out) == (None, out)
    # the pooled embeddings alone (the evaluation's pass over the training images): the same, unbuilt
    torch.testing.assert_close(block.pooled_of_pass(maps, out, tuple(images.shape[-2:])), z, rtol=1e-5, atol=1e-6)
    assert logits.pooled_of_pass(maps, out) is out
    assert block.sample_size(5) == 5 and logits.sample_size(0) == 0 and logits.sample_size("ignored") == 0
    with pytest.raises(ValueError, match="positions_per_image must be an int >= 1"):
        block.sample_size(0)
    block.require_positions()
    for call in (logits.require_positions, lambda: logits.block_maps(model, images),
                 lambda: logits.combine(maps), lambda: logits.project(maps, torch.ones(2, 3)),
                 lambda: logits.pooled_from_maps(maps)):
        with pytest.raises(ValueError, match="image-level only"):
            call()
    assert fit_and_sample(model, images, LevelFeatures("logits"), per_image=4)[0] is None
    # a bad name is reported by fit, as before; a level renamed across the two kinds names the fix
    with pytest.raises(ValueError, match="B1..B4"):
        LevelFeatures("B5").fit(model, images)
    renamed = LevelFeatures("B4")
    renamed.level = "logits"
    with pytest.raises(ValueError, match=r"build a new one: LevelFeatures\('logits'"):
        renamed.fit(model, images)


def test_logits_level(model: nn.Module, images: torch.Tensor) -> None:
    lf = LevelFeatures("logits").fit(model, images)
    with torch.no_grad():
        assert torch.allclose(lf.pooled(model, images), model(images))
    assert lf.n_features_ == 3 and lf.grid_size is None
    with pytest.raises(ValueError, match="image-level only.*'B4'"):
        lf.position_features(model, images)
    with pytest.raises(ValueError, match="image-level only"):
        sample_positions(model, images, lf)


def test_grid_sizes_and_forced_grid(model: nn.Module, images: torch.Tensor) -> None:
    expected = {"B4": (2, 2), "B34": (4, 4), "B234": (8, 8), "B1234": (16, 16), "B24": (8, 8)}
    for level, grid in expected.items():
        lf = LevelFeatures(level).fit(model, images[:2])
        assert lf.grid_size == grid
        assert lf.position_features(model, images[:2]).shape[-2:] == grid
    forced = LevelFeatures("B4", grid=8).fit(model, images)
    assert forced.grid_size == (8, 8)
    f = forced.position_features(model, images)
    assert f.shape == (10, 32, 8, 8)
    # the forced grid is rescaled on its own grid: equal contribution holds there
    assert f.pow(2).sum(1).mean() == pytest.approx(1.0, rel=1e-4)
    with pytest.raises(ValueError, match="grid must be"):
        LevelFeatures("B4", grid=(0, 3)).fit(model, images)


@pytest.mark.parametrize("registration, offset", [("exact", lambda s: 0.0), ("cell", lambda s: (s - 1) / 2)])
def test_resampling_between_blocks_follows_the_registration(registration: str, offset) -> None:
    """B4 resampled onto B3's grid is read at the pixel each B3 position is centred on."""
    def ramp(n: int, stride: int) -> torch.Tensor:  # value = pixel column of each position's centre
        centres = stride * torch.arange(n, dtype=torch.float64) + offset(stride)
        return centres.view(1, 1, 1, n).expand(1, 1, n, n)
    lf = LevelFeatures("B34", scale="none", registration=registration)
    out = lf.combine({"B3": ramp(8, 4), "B4": ramp(4, 8)}, image_size=(32, 32))
    assert out.shape == (1, 2, 8, 8)
    fine, up = out[0, 0], out[0, 1]
    inside = (fine >= 0 + offset(8)) & (fine <= 24 + offset(8))  # between B4's first and last centres
    assert torch.allclose(up[inside], fine[inside], atol=1e-12)
    assert not torch.allclose(up, fine)  # outside them the border value is kept


def test_exact_registration_differs_from_cell_convention(model: nn.Module, images: torch.Tensor) -> None:
    exact = LevelFeatures("B234").fit(model, images)
    cell = LevelFeatures("B234", registration="cell").fit(model, images)
    assert exact.grid_geometry_.offset == (0.0, 0.0)
    s = exact.grid_geometry_.stride[0]
    assert s == 2.0 and cell.grid_geometry_.offset == ((s - 1) / 2, (s - 1) / 2)  # B2's stride is 2 here
    assert not torch.allclose(exact.position_features(model, images), cell.position_features(model, images))
    with pytest.raises(ValueError, match="registration must be 'exact' or 'cell'"):
        LevelFeatures("B4", registration="middle").fit(model, images)


def test_streaming_equals_one_shot(model: nn.Module, images: torch.Tensor) -> None:
    y = torch.arange(10) % 3
    lf_small = LevelFeatures("B234", batch_size=3).fit(model, images)
    lf_big = LevelFeatures("B234", batch_size=100).fit(model, (images, y))
    assert lf_small.sigma_ == pytest.approx(lf_big.sigma_, rel=1e-6)
    one_shot = lf_big.pooled(model, images)
    Z, labels = extract_pooled(model, (images, y), lf_big, batch_size=4)
    assert torch.allclose(Z, one_shot, atol=1e-6) and torch.equal(labels, y)
    Z2, labels2 = extract_pooled(model, DataLoader(TensorDataset(images, y), batch_size=3), lf_big)
    assert torch.allclose(Z2, one_shot, atol=1e-6) and torch.equal(labels2, y)
    Z3, labels3 = extract_pooled(model, images, lf_big, batch_size=7)
    assert torch.allclose(Z3, one_shot, atol=1e-6) and labels3 is None


class _PlainDataset(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i])


def test_dataset_input_and_image_set_fast_path(model: nn.Module, images: torch.Tensor) -> None:
    y = torch.arange(10) % 2
    lf = LevelFeatures("B34").fit(model, _PlainDataset(images, y))
    Z, labels = extract_pooled(model, _PlainDataset(images, y), lf, batch_size=4)
    assert torch.allclose(Z, lf.pooled(model, images), atol=1e-6) and torch.equal(labels, y)

    class FakeImageSet(_PlainDataset):
        labels = y
        def images_at(self, idx):  # noqa: D401
            return self.x[idx]
    Z2, labels2 = extract_pooled(model, FakeImageSet(images, y), lf, batch_size=4)
    assert torch.equal(Z2, Z) and torch.equal(labels2, y)
    with pytest.raises(TypeError, match="DataLoader"):
        iter_batches([1, 2, 3])


def test_sample_positions(model: nn.Module, images: torch.Tensor) -> None:
    y = torch.arange(10) % 3
    lf = LevelFeatures("B234").fit(model, images)
    s = sample_positions(model, (images, y), lf, per_image=5, random_state=3, batch_size=4)
    assert s.vectors.shape == (50, lf.n_features_) and len(s) == 50
    assert s.grid == (8, 8) and s.image_size == (16, 16)
    assert torch.equal(s.image_index, torch.arange(10).repeat_interleave(5))
    assert torch.equal(s.labels, y.repeat_interleave(5))
    feats = lf.position_features(model, images)
    expect = feats[s.image_index, :, s.yx[:, 0], s.yx[:, 1]]
    assert torch.allclose(s.vectors, expect, atol=1e-6)
    for i in range(10):  # without replacement within an image
        cells = s.yx[s.image_index == i]
        assert len({tuple(c) for c in cells.tolist()}) == 5
    again = sample_positions(model, (images, y), lf, per_image=5, random_state=3, batch_size=4)
    assert torch.equal(again.yx, s.yx)
    other = sample_positions(model, (images, y), lf, per_image=5, random_state=4, batch_size=4)
    assert not torch.equal(other.yx, s.yx)
    everything = sample_positions(model, images, LevelFeatures("B4").fit(model, images), per_image=99)
    assert everything.vectors.shape[0] == 10 * 4 and everything.labels is None
    with pytest.warns(UserWarning, match="shuffle=False"):
        sample_positions(model, DataLoader(TensorDataset(images, y), batch_size=4, shuffle=True), lf, per_image=1)


def test_not_fitted_device_and_scale_errors(model: nn.Module, images: torch.Tensor) -> None:
    with pytest.raises(NotFittedError, match="fit"):
        LevelFeatures("B34").pooled(model, images)
    with pytest.raises(NotFittedError, match="fit"):
        extract_pooled(model, images, LevelFeatures("B34"))
    # explicit constants need no fit
    z = LevelFeatures("B34", scale={"B3": 2.0, "B4": 4.0}).pooled(model, images)
    z1 = LevelFeatures("B34", scale="none").pooled(model, images)
    assert torch.allclose(z[:, :16], z1[:, :16] / 2) and torch.allclose(z[:, 16:], z1[:, 16:] / 4)
    with pytest.raises(ValueError, match="lacks block"):
        LevelFeatures("B34", scale={"B3": 1.0}).pooled(model, images)
    with pytest.raises(ValueError, match="scale must be"):
        LevelFeatures("B34", scale="std").fit(model, images)
    with pytest.raises(ValueError, match=r"model is on cpu.*model.to"):
        LevelFeatures("B4", device="meta").fit(model, images)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        LevelFeatures("B4", scale="none").pooled(model, images[0])


def test_no_mutation_and_mode_restored(model: nn.Module, images: torch.Tensor) -> None:
    x0 = images.clone()
    model.train()
    try:
        lf = LevelFeatures("B234").fit(model, images)
        lf.position_features(model, images)
        assert model.training and all(m.training for m in model.modules())
    finally:
        model.eval()
    assert torch.equal(images, x0)
    with eval_mode(model):
        assert not model.training


def test_grid_named_by_another_level(model: nn.Module, images: torch.Tensor) -> None:
    """The resolution control: B4 put on B234's grid, whatever the image size."""
    ctrl = LevelFeatures("B4", grid="B234").fit(model, images)
    assert ctrl.grid_size == (8, 8) and ctrl.n_features_ == 32 and ctrl.blocks_ == ("B4",)
    f = ctrl.position_features(model, images)
    assert ctrl.grid_geometry_ == LevelFeatures("B234").fit(model, images).grid_geometry_
    same = LevelFeatures("B4", grid=8, registration="cell").fit(model, images)  # an int grid tiles the image
    cell = LevelFeatures("B4", grid="B234", registration="cell").fit(model, images)
    assert cell.sigma_ == pytest.approx(same.sigma_)
    assert torch.allclose(cell.position_features(model, images), same.position_features(model, images))
    assert not torch.allclose(f, cell.position_features(model, images))
    big = torch.rand(2, 3, 32, 32)
    assert ctrl.position_features(model, big).shape == (2, 32, 16, 16)
    with pytest.raises(ValueError, match="grid='logits' has no grid"):
        LevelFeatures("B4", grid="logits").fit(model, images)
    with pytest.raises(ValueError, match="define grid='B234'"):
        ctrl.combine({"B4": torch.rand(1, 32, 2, 2)})


# ------------------------------------------------------------ the one pass
@pytest.mark.parametrize("level, kwargs", [
    ("B4", {}), ("B34", {}), ("B1234", {}), ("B234", {"registration": "cell"}),
    ("B234", {"scale": "none"}), ("B34", {"scale": {"B3": 2.0, "B4": 0.5}}), ("B4", {"grid": "B234"}),
])
def test_one_pass_fit_equals_the_separate_passes(model: nn.Module, images: torch.Tensor, level: str, kwargs) -> None:
    """fit_and_sample (scales, pooled embeddings and positions from one pass, rescaled afterwards, computed
    from the blocks' own maps) gives what fit, extract_pooled and sample_positions give in three passes (from
    the resampled maps), on the same data and seed."""
    y = torch.arange(10) % 3
    one = LevelFeatures(level, **kwargs)
    sample, Z, labels = fit_and_sample(model, (images, y), one, per_image=5, random_state=3, batch_size=4)
    sep = LevelFeatures(level, **kwargs).fit(model, images)
    assert one.sigma_ == pytest.approx(sep.sigma_, rel=1e-12)
    for attr in ("blocks_", "dims_", "slices_", "n_features_", "grid_size_", "n_positions_", "geometry_",
                 "grid_geometry_", "registration_"):
        assert getattr(one, attr) == getattr(sep, attr), attr
    Z_sep, y_sep = extract_pooled(model, (images, y), sep, batch_size=4)
    assert Z.dtype == torch.float32 and Z.shape == (10, sep.n_features_)
    assert torch.allclose(Z, Z_sep, rtol=1e-6, atol=1e-7) and torch.equal(labels, y_sep)
    s_sep = sample_positions(model, (images, y), sep, per_image=5, random_state=3, batch_size=4)
    assert torch.equal(sample.image_index, s_sep.image_index) and torch.equal(sample.yx, s_sep.yx)
    assert torch.equal(sample.labels, s_sep.labels)
    assert (sample.grid, sample.image_size, sample.geometry) == (s_sep.grid, s_sep.image_size, s_sep.geometry)
    assert torch.allclose(sample.vectors, s_sep.vectors, rtol=1e-5, atol=1e-6)
    # what the fitted level computes from the resampled maps, too
    feats = one.position_features(model, images)
    assert torch.allclose(sample.vectors, feats[sample.image_index, :, sample.yx[:, 0], sample.yx[:, 1]],
                          rtol=1e-5, atol=1e-6)
    assert torch.allclose(Z, feats.mean((2, 3)), rtol=1e-5, atol=1e-6)
    if kwargs.get("scale", "rms") == "rms":  # sigma_b^2 = mean over positions of ||a_p||^2 of the resampled map
        raw = LevelFeatures(level, **{**kwargs, "scale": "none"}).fit(model, images).position_features(model, images)
        for b, sl in one.slices_.items():
            assert one.sigma_[b] ** 2 == pytest.approx(float(raw[:, sl].double().pow(2).sum(1).mean()), rel=1e-6), b


def test_one_pass_logits_and_options(model: nn.Module, images: torch.Tensor) -> None:
    lf = LevelFeatures("logits")
    sample, Z, labels = fit_and_sample(model, images, lf, per_image=5)
    with torch.no_grad():
        assert sample is None and labels is None and torch.allclose(Z, model(images))
    assert lf.n_features_ == 3 and lf.grid_size_ is None
    # per_image=0: the level and the embeddings only; streaming order and batch size do not matter
    lf2 = LevelFeatures("B234")
    none, Z2, _ = fit_and_sample(model, DataLoader(TensorDataset(images), batch_size=3), lf2, per_image=0)
    assert none is None and torch.allclose(Z2, lf2.pooled(model, images), atol=1e-6)
    with pytest.raises(ValueError, match="per_image must be an int >= 0"):
        fit_and_sample(model, images, LevelFeatures("B4"), per_image=-1)
    with pytest.raises(TypeError, match="must be a LevelFeatures"):
        fit_and_sample(model, images, "B4")  # type: ignore[arg-type]
    with pytest.warns(UserWarning, match="shuffle=False"):
        fit_and_sample(model, DataLoader(TensorDataset(images), batch_size=4, shuffle=True), LevelFeatures("B4"),
                       per_image=1)


@pytest.mark.parametrize("level, kwargs", [("B4", {}), ("B1234", {}), ("B234", {"registration": "cell"}),
                                           ("B4", {"grid": "B234"})])
def test_project_and_pooled_from_block_maps(model: nn.Module, images: torch.Tensor, level: str, kwargs) -> None:
    """Projecting each block map then resampling equals projecting the resampled, scaled, concatenated features."""
    lf = LevelFeatures(level, **kwargs).fit(model, images)
    feats = lf.position_features(model, images)
    maps = lf.block_maps(model, images)
    assert torch.allclose(lf.pooled_from_maps(maps), feats.mean((2, 3)), rtol=1e-5, atol=1e-6)
    w = torch.randn(3, lf.n_features_, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(lf.project(maps, w), torch.einsum("kd,ndhw->nkhw", w, feats), rtol=1e-4, atol=1e-5)
    w_n = torch.randn(10, 2, lf.n_features_, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(lf.project(maps, w_n), torch.einsum("nkd,ndhw->nkhw", w_n, feats), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="weights must be"):
        lf.project(maps, w[:, :-1])
    with pytest.raises(ValueError, match="image-level only"):
        LevelFeatures("logits").fit(model, images).block_maps(model, images)
