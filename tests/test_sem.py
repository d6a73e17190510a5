"""Tests of the exact SEM decomposition of a CNN's logits (METHOD 1)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import tiny_models
from kmexplain_utils.sem import (
    GapHead,
    UnsupportedModelError,
    capture_feature_maps,
    decompose_logits,
    find_gap_linear_head,
    last_feature_maps,
    linear_prototypes,
    logit_maps,
)


class SmallResNetLike(tiny_models.SmallResNetLike):
    """A hand-made model with torchvision ResNet's module names, a normalising stem and a dropout head."""

    def __init__(self, n_classes: int = 4, width: int = 4) -> None:
        super().__init__(n_classes, width, stem=True, batch_norm=True)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.fc = nn.Sequential(nn.Dropout(0.5), nn.Linear(8 * width, n_classes))
        self.register_buffer("mean", torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1))

    def stem_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn1(self.conv1(x - self.mean)))


def _calibrate(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Give a random model non-trivial BN statistics and head, then eval mode.

    Random-init EfficientNet/MobileNet produce logits of ~1e-13, which would
    make the identity test vacuous; batch statistics and a unit-scale head fix it.
    """
    for mod in model.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.momentum = None
            mod.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(x)
        lin = find_gap_linear_head(model).linear
        lin.weight.normal_(0, lin.in_features**-0.5)
        lin.bias.normal_()
    return model.eval()


TORCHVISION_MODELS = [
    ("resnet18", 64, "ResNet"),
    ("resnet34", 96, "ResNet"),
    ("densenet121", 64, "DenseNet"),
    ("efficientnet_b0", 64, "EfficientNet"),
    ("mobilenet_v2", 64, "MobileNetV2"),
]


@pytest.mark.parametrize("name,size,arch", TORCHVISION_MODELS)
def test_identity_on_torchvision_models(name: str, size: int, arch: str) -> None:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None, num_classes=5)
    x = torch.rand(4, 3, size, size)
    _calibrate(model, x)
    head = find_gap_linear_head(model)
    assert head.architecture == arch
    with torch.no_grad():
        s, logits = logit_maps(model, x[:2])
    assert s.shape[:2] == (2, 5)
    assert logits.abs().max() > 0.3  # the identity below is not vacuous
    assert torch.allclose(s.mean((2, 3)), logits, atol=1e-5, rtol=0)


def test_identity_on_small_resnet_like_with_dropout_head() -> None:
    torch.manual_seed(1)
    model = SmallResNetLike()
    x = torch.rand(6, 3, 32, 32)
    _calibrate(model, x)
    head = find_gap_linear_head(model)
    assert head.architecture == "ResNet"
    assert isinstance(head.dropout, nn.Dropout)
    assert head.linear is model.fc[1]
    with torch.no_grad():
        maps, logits = last_feature_maps(model, x, return_logits=True)
    assert maps.shape == (6, 32, 4, 4)
    s = decompose_logits(maps, head.linear)
    assert logits.abs().max() > 0.3
    assert torch.allclose(s.mean((2, 3)), logits, atol=1e-5, rtol=0)


def test_densenet_relu_belongs_to_the_feature_maps() -> None:
    torch.manual_seed(0)
    model = _calibrate(torchvision.models.densenet121(weights=None, num_classes=3), torch.rand(2, 3, 64, 64))
    with torch.no_grad():
        maps = last_feature_maps(model, torch.rand(2, 3, 64, 64))
        raw = model.features(torch.rand(2, 3, 64, 64))
    assert (maps >= 0).all()
    assert (raw < 0).any()  # without the ReLU the identity would fail


def test_decompose_matches_linear_on_random_maps_and_tuple_form() -> None:
    torch.manual_seed(0)
    fc = nn.Linear(7, 3).double()
    A = torch.randn(5, 7, 3, 4, dtype=torch.float64)
    s = decompose_logits(A, fc)
    assert s.dtype == torch.float64 and s.shape == (5, 3, 3, 4)
    assert torch.allclose(s.mean((2, 3)), fc(A.mean((2, 3))), atol=1e-12)
    # per position, it is the linear layer applied to a_p
    assert torch.allclose(s[2, :, 1, 3], fc(A[2, :, 1, 3]), atol=1e-12)
    s2 = decompose_logits(A, (fc.weight, None))
    assert torch.allclose(s2 + fc.bias.view(1, -1, 1, 1), s)


def test_shift_invariance_of_linear_prototypes() -> None:
    """Adding v to every w_c changes no prediction: the prototypes are not anchored in the data."""
    torch.manual_seed(0)
    model = _calibrate(SmallResNetLike(), torch.rand(6, 3, 32, 32))
    x = torch.rand(8, 3, 32, 32)
    W, b = linear_prototypes(model)
    with torch.no_grad():
        maps = last_feature_maps(model, x)
        z = maps.mean((2, 3))
        logits = decompose_logits(maps, (W, b)).mean((2, 3))
        v = 10 * torch.randn(W.shape[1])
        shifted = decompose_logits(maps, (W + v, b)).mean((2, 3))
    assert not torch.allclose(shifted, logits)  # the logits did move ...
    assert torch.allclose(shifted - logits, (z @ v)[:, None].expand_as(logits), atol=1e-4)
    assert torch.equal(shifted.argmax(1), logits.argmax(1))  # ... but no prediction changed
    assert torch.allclose(shifted.softmax(1), logits.softmax(1), atol=1e-5)


def test_linear_prototypes_are_copies() -> None:
    model = SmallResNetLike()
    W, b = linear_prototypes(model)
    assert W.shape == (4, 32) and b.shape == (4,)
    W += 1
    assert not torch.equal(W, model.fc[1].weight)


@pytest.mark.parametrize(
    "factory,pattern",
    [
        (lambda: torchvision.models.vgg11(weights=None, num_classes=3), r"VGG.*7x7.*MLP.*required"),
        (lambda: torchvision.models.mobilenet_v3_small(weights=None, num_classes=3),
         r"MobileNetV3.*Sequential\(Linear, Hardswish, Dropout, Linear\).*required"),
    ],
)
def test_unsupported_torchvision_heads(factory, pattern: str) -> None:
    with pytest.raises(UnsupportedModelError, match=pattern):
        find_gap_linear_head(factory())


def test_mlp_head_and_unknown_model_errors() -> None:
    model = SmallResNetLike()
    model.fc = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))
    with pytest.raises(UnsupportedModelError, match=r"'fc' is Sequential\(Linear, ReLU, Linear\).*one nn.Linear"):
        find_gap_linear_head(model)
    model = SmallResNetLike()
    model.avgpool = nn.AdaptiveMaxPool2d(1)
    with pytest.raises(UnsupportedModelError, match="not a global average pooling"):
        find_gap_linear_head(model)
    with pytest.raises(UnsupportedModelError, match=r"Sequential: no global average pooling found among its layers \(Conv2d.*required"):
        find_gap_linear_head(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2)))
    with pytest.raises(TypeError, match="nn.Module"):
        find_gap_linear_head("resnet")  # type: ignore[arg-type]


def test_hooks_removed_also_when_forward_raises() -> None:
    model = SmallResNetLike().eval()
    with capture_feature_maps(model) as store:
        model(torch.rand(1, 3, 32, 32))
    assert store["maps"].shape == (1, 32, 4, 4)
    assert len(model.layer4._forward_hooks) == 0
    with pytest.raises(RuntimeError):
        with capture_feature_maps(model):
            model(torch.rand(1, 5, 32, 32))  # wrong channel count: conv raises
    assert len(model.layer4._forward_hooks) == 0
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\).*unsqueeze"):
        last_feature_maps(model, torch.rand(3, 32, 32))
    assert len(model.layer4._forward_hooks) == 0


def test_decompose_validation_messages() -> None:
    fc = nn.Linear(8, 2)
    with pytest.raises(ValueError, match=r"\(N, D, H, W\)"):
        decompose_logits(torch.rand(2, 8), fc)
    with pytest.raises(ValueError, match=r"D = 8 .*D = 6"):
        decompose_logits(torch.rand(2, 6, 3, 3), fc)
    with pytest.raises(TypeError, match="floating point"):
        decompose_logits(torch.ones(2, 8, 3, 3, dtype=torch.int64), fc)
    with pytest.raises(TypeError, match="nn.Linear or a tuple"):
        decompose_logits(torch.rand(2, 8, 3, 3), "fc")  # type: ignore[arg-type]


def test_decompose_does_not_mutate_inputs() -> None:
    fc = nn.Linear(8, 2)
    A = torch.rand(2, 8, 3, 3)
    A0, W0 = A.clone(), fc.weight.detach().clone()
    decompose_logits(A, fc)
    assert torch.equal(A, A0) and torch.equal(fc.weight, W0)


def test_gap_head_fields() -> None:
    head = find_gap_linear_head(torchvision.models.efficientnet_b0(weights=None, num_classes=3))
    assert isinstance(head, GapHead)
    assert head.feature_module_name == "features"
    assert isinstance(head.dropout, nn.Dropout)
    assert head.n_classes == 3 and head.n_features == 1280


def test_identity_on_project_tiny_resnet() -> None:
    from kmexplain_utils.chapters.models import TinyResNet

    torch.manual_seed(0)
    model = TinyResNet(n_classes=4, width=8)
    x = torch.rand(6, 3, 32, 32)
    _calibrate(model, x)
    head = find_gap_linear_head(model)
    assert head.architecture == "ResNet" and head.feature_module is model.layer4
    with torch.no_grad():
        s, logits = logit_maps(model, x)
    assert logits.abs().max() > 0.3
    assert torch.allclose(s.mean((2, 3)), logits, atol=1e-5, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_identity_on_cuda() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=5)
    x = torch.rand(4, 3, 64, 64)
    _calibrate(model, x)
    model = model.cuda()
    with torch.no_grad():
        s, logits = logit_maps(model, x.cuda())
    assert s.is_cuda
    assert torch.allclose(s.mean((2, 3)), logits, atol=1e-4, rtol=0)
