"""Registration of block positions: derived from the layers, checked against exact receptive fields.

The reference is :func:`kmexplain_utils.receptive_field.receptive_field_centres`: the midpoint of
the input-gradient support of a block's middle position, on noise, in float64, on images long
enough that the field is not clipped. The derived registration (a traced forward pass composing
strides and paddings) must agree within 0.5 px for every block of every family; the first
edition's cell-centred convention must not.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from kmexplain_utils.architectures import adapt, registration
from kmexplain_utils.chapters.models import TinyResNet
from kmexplain_utils.receptive_field import receptive_field_centres
from kmexplain_utils.sem import UnsupportedModelError

FAMILIES = {
    "resnet18": lambda: torchvision.models.resnet18(weights=None),
    "densenet121": lambda: torchvision.models.densenet121(weights=None),
    "efficientnet_b0": lambda: torchvision.models.efficientnet_b0(weights=None),
    "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(weights=None),
    "regnet_y_400mf": lambda: torchvision.models.regnet_y_400mf(weights=None),
    "shufflenet_v2_x1_0": lambda: torchvision.models.shufflenet_v2_x1_0(weights=None),
    "googlenet": lambda: torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True),
    "inception_v3": lambda: torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True),
    "tiny_resnet": lambda: TinyResNet(8, width=8),
}


class TFSamePadNet(nn.Module):
    """Stride-2 stages with TensorFlow-style "same" padding (pad right/bottom only), as in EfficientNet-lite ports."""

    def __init__(self, n_classes: int = 3) -> None:
        super().__init__()
        chans = [3, 8, 16, 32, 64, 64]

        def stage(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(c_in, c_out, 3, 2, 0), nn.ReLU(),
                                 nn.Conv2d(c_out, c_out, 3, 1, 1), nn.ReLU())

        self.features = nn.Sequential(*[stage(a, b) for a, b in zip(chans[:-1], chans[1:])])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(64, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _check_against_measurement(model: nn.Module, blocks=None) -> dict:
    adapter = adapt(model, blocks)
    measured = receptive_field_centres(model, adapter=adapter)
    derived = registration(model, 256, adapter)
    cell_errors = {}
    for b, mc in measured.items():
        r = derived[b]
        for axis in (0, 1):
            i = mc.index[axis]
            assert abs(r.stride[axis] * i + r.offset[axis] - mc.centre[axis]) <= 0.5, (b, axis, r, mc)
            cell_errors[(b, axis)] = abs(r.stride[axis] * i + (r.stride[axis] - 1) / 2 - mc.centre[axis])
    return cell_errors


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_derived_registration_matches_exact_receptive_field_centres(name: str) -> None:
    cell_errors = _check_against_measurement(FAMILIES[name]())
    # the same test fails for the first edition's convention (centre of the grid cell)
    assert max(cell_errors.values()) > 0.5
    assert cell_errors[("B4", 1)] > 0.5


def test_tensorflow_same_padding_has_nonzero_offsets() -> None:
    model = TFSamePadNet()
    reg = registration(model, 64)
    assert [reg[b].stride[0] for b in reg] == [4.0, 8.0, 16.0, 32.0]
    # each ZeroPad2d((0, 1, 0, 1)) + 3x3/2 pad-0 conv centres output i on input 2 i + 1
    assert [reg[b].offset for b in reg] == [(3.0, 3.0), (7.0, 7.0), (15.0, 15.0), (31.0, 31.0)]
    _check_against_measurement(model)


def test_user_sequential_cnn_with_blocks_by_name() -> None:
    from kmexplain_utils import Explainer

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(),       # 0, 1: stride 2
        nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),      # 2, 3: stride 4
        nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),     # 4, 5: stride 8
        nn.Conv2d(32, 32, 3, 2, 1), nn.ReLU(),     # 6, 7: stride 16
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(32, 2),
    ).eval()
    blocks = {"B2": "3", "B3": "5", "B4": "7"}
    adapter = adapt(model, blocks, head="11")
    assert {b: adapter.blocks[b] for b in blocks} == blocks and adapter.head.linear is model[11]
    _check_against_measurement(model, blocks)
    # found automatically too: the last module at each resolution, the head after the pooling
    auto = adapt(model)
    assert auto.blocks == {"B1": "1", "B2": "3", "B3": "5", "B4": "7"}
    x, y = torch.rand(16, 3, 32, 32), torch.tensor([0, 1] * 8)
    ex = Explainer(model, level="B234", n_prototypes=2, n_concepts=3, blocks=blocks, head="11", device="cpu").fit(x, y)
    e = ex.explain(x[:4])
    assert e.attribution.shape == (4, 32, 32)
    assert torch.allclose(e.attribution_grid.mean((1, 2)), e.score, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, layer", [
    ("vgg11", "classifier"), ("alexnet", "avgpool"), ("mobilenet_v3_small", "Hardswish"),
    ("convnext_tiny", "LayerNorm2d"),
])
def test_models_that_break_the_identity_get_a_clear_error(name: str, layer: str) -> None:
    with pytest.raises(UnsupportedModelError, match=layer):
        adapt(getattr(torchvision.models, name)(weights=None))


def test_unknown_block_name_lists_candidates() -> None:
    model = torchvision.models.resnet18(weights=None)
    with pytest.raises(ValueError, match=r"no module 'layer9' for block B3.*Top-level modules: conv1, bn1"):
        adapt(model, {"B3": "layer9"})
    with pytest.raises(ValueError, match="Similar names: layer3"):
        adapt(model, {"B3": "layer3.7"})
    with pytest.raises(ValueError, match=r"block names are \['B1', 'B2', 'B3', 'B4'\]"):
        adapt(model, {"B5": "layer4"})


def test_head_given_that_is_not_linear() -> None:
    model = torchvision.models.resnet18(weights=None)
    with pytest.raises(UnsupportedModelError, match="not an nn.Linear"):
        adapt(model, {"B4": "layer4"}, head="avgpool")


def test_a_map_that_is_not_the_pooled_one_is_refused() -> None:
    model = torchvision.models.resnet18(weights=None).eval()
    with torch.no_grad():
        model.fc.weight.normal_(0, 1.0)
    with pytest.raises(UnsupportedModelError, match="D = 256 channels but the linear layer expects 512"):
        adapt(model, {"B4": "layer3"}, head="fc")
