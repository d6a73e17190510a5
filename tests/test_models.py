"""TinyResNet, the ResNet34 classifier and build_model."""

from __future__ import annotations

import warnings

import pytest
import torchvision
import torch
from torch import nn

from kmexplain_utils.config import get_profile
from kmexplain_utils.chapters.models import ImageNetResNet, TinyResNet, build_model, resnet34_classifier
from kmexplain_utils.chapters.pretrained import IMAGENET_MEAN, IMAGENET_STD, WeightsError

TORCHVISION_NAMES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc")


def _block_shapes(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    handles = [
        getattr(model, name).register_forward_hook(
            lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape))
        )
        for name in ("layer1", "layer2", "layer3", "layer4")
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return shapes


@pytest.mark.parametrize(
    ("size", "grids"),
    [(64, (32, 16, 8, 4)), (32, (16, 8, 4, 2))],
)
def test_tiny_resnet_block_grids_and_widths(size, grids):
    torch.manual_seed(0)
    model = TinyResNet(n_classes=5, width=4).eval()
    shapes = _block_shapes(model, torch.rand(2, 3, size, size))
    for (name, shape), grid, channels in zip(sorted(shapes.items()), grids, (4, 8, 16, 32)):
        assert shape == (2, channels, grid, grid), name
    assert model(torch.rand(2, 3, size, size)).shape == (2, 5)


def test_tiny_resnet_depth_and_stem_stride():
    model = TinyResNet(n_classes=3, width=4, blocks_per_stage=(2, 1, 3, 1), stem_stride=1).eval()
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [2, 1, 3, 1]
    shapes = _block_shapes(model, torch.rand(1, 3, 32, 32))
    assert shapes["layer1"][-1] == 32 and shapes["layer4"][-1] == 4


def test_tiny_resnet_has_torchvision_names_and_gap_linear_head():
    model = TinyResNet(n_classes=7, width=8)
    children = dict(model.named_children())
    for name in TORCHVISION_NAMES:
        assert name in children, name
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d)
    assert isinstance(model.fc, nn.Linear) and model.fc.in_features == 64 and model.fc.out_features == 7
    # the block names inside the stages are torchvision's as well
    assert {"conv1", "bn1", "conv2", "bn2", "downsample"} <= dict(model.layer2[0].named_children()).keys()


def test_tiny_resnet_forward_is_gap_then_linear():
    """Logits = fc(mean over positions of layer4 output): the identity sem.py relies on."""
    torch.manual_seed(1)
    model = TinyResNet(n_classes=4, width=4).eval()
    x = torch.rand(3, 3, 32, 32)
    feats = {}
    h = model.layer4.register_forward_hook(lambda _m, _i, out: feats.__setitem__("a", out))
    with torch.no_grad():
        logits = model(x)
    h.remove()
    expected = feats["a"].mean(dim=(2, 3)) @ model.fc.weight.T + model.fc.bias
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_tiny_resnet_normalises_inside_forward():
    torch.manual_seed(2)
    model = TinyResNet(n_classes=3, width=4, mean=(0.2, 0.3, 0.4), std=(0.5, 0.6, 0.7)).eval()
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor([0.2, 0.3, 0.4]).view(1, 3, 1, 1)
    std = torch.tensor([0.5, 0.6, 0.7]).view(1, 3, 1, 1)
    stem_input = {}
    h = model.conv1.register_forward_hook(lambda _m, inp, _o: stem_input.__setitem__("x", inp[0]))
    with torch.no_grad():
        model(x)
    h.remove()
    torch.testing.assert_close(stem_input["x"], (x - mean) / std)
    # the statistics are buffers: saved in the state_dict and moved with .to()
    assert {"mean", "std"} <= set(model.state_dict())
    # defaults are ImageNet's
    default = TinyResNet(n_classes=3, width=4)
    torch.testing.assert_close(default.mean.flatten(), torch.tensor(IMAGENET_MEAN))
    torch.testing.assert_close(default.std.flatten(), torch.tensor(IMAGENET_STD))


def test_tiny_resnet_zero_init_blocks_start_as_identity_plus_shortcut():
    model = TinyResNet(n_classes=2, width=4)
    for i in range(1, 5):
        for block in getattr(model, f"layer{i}"):
            assert torch.count_nonzero(block.bn2.weight) == 0
    assert torch.count_nonzero(TinyResNet(2, width=4, zero_init_residual=False).layer1[0].bn2.weight) > 0


@pytest.mark.parametrize(
    ("x", "error", "match"),
    [
        (torch.rand(1, 32, 32, 3), ValueError, r"3 channels.*permute\(0, 3, 1, 2\)"),
        (torch.rand(2, 1, 32, 32), ValueError, r"3 channels.*expand"),
        (torch.rand(3, 32, 32), ValueError, r"unsqueeze\(0\)"),
        (torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8), TypeError, r"floating point.*255"),
    ],
)
def test_tiny_resnet_rejects_wrong_input_with_a_fix(x, error, match):
    model = TinyResNet(n_classes=2, width=4).eval()
    with pytest.raises(error, match=match):
        model(x)


def test_tiny_resnet_rejects_bad_hyper_parameters():
    with pytest.raises(ValueError, match="blocks_per_stage"):
        TinyResNet(3, blocks_per_stage=(1, 1, 1))
    with pytest.raises(ValueError, match="n_classes"):
        TinyResNet(0)
    with pytest.raises(ValueError, match="std must be positive"):
        TinyResNet(3, std=(0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match="3 values"):
        TinyResNet(3, mean=(0.5, 0.5))


def test_tiny_resnet_other_channel_count():
    model = TinyResNet(n_classes=2, width=4, in_channels=1).eval()
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 2)
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        model(torch.rand(2, 3, 32, 32))


WEIGHTS_FILE = "resnet34-b627a593.pth"  # the file name of ResNet34_Weights.IMAGENET1K_V1


def test_resnet34_without_weights_is_an_error_that_says_how_to_get_them(tmp_path, monkeypatch):
    """No silent fall-back to random weights: a failed download raises, naming the URL and the place."""
    from kmexplain_utils.chapters import pretrained

    monkeypatch.setenv("KMEX_CACHE", str(tmp_path))

    def no_network(dest):
        raise OSError("simulated: no network")

    # certain and fast also on a machine that has internet
    monkeypatch.setattr(pretrained, "_download_resnet34", no_network)
    with pytest.raises(WeightsError) as err:
        resnet34_classifier(n_classes=5, pretrained=True)
    message = str(err.value)
    for fragment in ("no network", "https://download.pytorch.org/models/" + WEIGHTS_FILE,
                     str(tmp_path / "weights" / WEIGHTS_FILE), "KMEX_CACHE"):
        assert fragment in message, (fragment, message)
    model = resnet34_classifier(n_classes=5, pretrained=False)  # random weights only when asked for
    assert model.imagenet_weights_loaded is False


def test_resnet34_corrupt_cached_weights_are_an_error(tmp_path, monkeypatch):
    """A damaged weights file in the cache is refused by its hash, with the way to replace it."""
    monkeypatch.setenv("KMEX_CACHE", str(tmp_path))
    folder = tmp_path / "weights"
    folder.mkdir(parents=True)
    (folder / WEIGHTS_FILE).write_bytes(b"not a weights file")
    with pytest.raises(WeightsError, match=r"expected b627a593.*Delete it, then: Download https://"):
        resnet34_classifier(n_classes=2)


def test_resnet34_uses_the_cached_weights_file_and_keeps_torchvision_names(tmp_path, monkeypatch):
    """The one loader's path: a file in <cache>/weights with the expected hash is loaded, no download."""
    import torchvision

    from kmexplain_utils.chapters.pretrained import RESNET34_SHA256_ENV, sha256_of

    monkeypatch.setenv("KMEX_CACHE", str(tmp_path))
    folder = tmp_path / "weights"
    folder.mkdir(parents=True)
    torch.manual_seed(3)
    reference = torchvision.models.resnet34()
    torch.save(reference.state_dict(), folder / WEIGHTS_FILE)
    monkeypatch.setenv(RESNET34_SHA256_ENV, sha256_of(folder / WEIGHTS_FILE))  # a stand-in, not the real file
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = resnet34_classifier(n_classes=3, pretrained=True)
    assert isinstance(model, ImageNetResNet) and isinstance(model, torchvision.models.ResNet)
    assert model.imagenet_weights_loaded is True
    torch.testing.assert_close(model.layer3[2].conv1.weight, reference.layer3[2].conv1.weight)
    assert model.fc.out_features == 3
    # the state_dict is exactly torchvision's (normalisation buffers are not persistent)
    assert set(model.state_dict()) == set(reference.state_dict())
    for name in TORCHVISION_NAMES:
        assert hasattr(model, name)
    # normalisation with ImageNet statistics happens inside forward
    model.eval()
    reference.fc = model.fc
    reference.eval()
    x = torch.rand(2, 3, 64, 64)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference((x - mean) / std), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="3 channels"):
        model(torch.rand(1, 1, 64, 64))


def test_build_model_follows_the_profile():
    smoke = get_profile("smoke")
    model = build_model(smoke, n_classes=8)
    assert isinstance(model, TinyResNet)
    assert model.width == smoke.width and model.blocks_per_stage == tuple(smoke.blocks_per_stage)
    assert model.fc.out_features == 8
    paper = get_profile("paper").replace(pretrained=False)
    big = build_model(paper, n_classes=37)
    assert isinstance(big, ImageNetResNet) and big.fc.out_features == 37
    assert [len(getattr(big, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    with pytest.raises(ValueError, match="Unknown model 'vgg'"):
        build_model(smoke.replace(model="vgg"), n_classes=2)


@pytest.mark.parametrize("make", [
    lambda: TinyResNet(3, width=8),
    lambda: ImageNetResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1], num_classes=3),
], ids=["TinyResNet", "ImageNetResNet"])
def test_book_models_are_traceable_by_create_feature_extractor(make):
    """torch.fx traces the book's models (the input check is skipped on a proxy, kept otherwise)."""
    from torchvision.models.feature_extraction import create_feature_extractor

    model = make().eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    fx = create_feature_extractor(model, return_nodes={"layer3": "B3", "layer4": "B4", "fc": "logits"})
    out = fx(x)
    with torch.no_grad():
        maps = _block_shapes(model, x)
        assert torch.allclose(out["logits"], model(x), atol=1e-6)
    assert tuple(out["B4"].shape) == maps["layer4"] and tuple(out["B3"].shape) == maps["layer3"]
    # the check still runs outside tracing
    with pytest.raises(ValueError, match="RGB"):
        model(torch.rand(2, 1, 64, 64))
    assert "check" not in fx.code  # the traced graph holds only tensor operations
