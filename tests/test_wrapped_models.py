"""Any CNN as users hold it: inside a normalisation wrapper, a Sequential, DataParallel; a functional last activation.

Small stand-ins built here (nothing is downloaded): the supported network is found inside the
wrapper (:func:`kmexplain_utils.sem.find_network`), its blocks get qualified names, the
registration is the bare network's (a normalisation inside the wrapper does not move positions),
and the explanation of the wrapper equals that of the bare network on normalised images.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from kmexplain_utils import Explainer
from kmexplain_utils.architectures import adapt, registration
from kmexplain_utils.sem import UnsupportedModelError, find_network, last_feature_maps
from tiny_models import SmallResNetLike

torch.set_num_threads(1)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Normalised(nn.Module):
    """What users write: the network as ``.net``, the normalisation in ``forward``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


class Softmaxed(Normalised):
    """A wrapper that changes the output: not a GAP + linear model any more."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).softmax(1)


class TinyLite(nn.Module):
    """The layout of the efficientnet-lite-pytorch port: the last activation is applied in ``forward``."""

    def __init__(self, n_classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8))
        self.blocks = nn.Sequential(*[nn.Sequential(nn.Conv2d(c, 2 * c, 3, 2, 1, bias=False), nn.BatchNorm2d(2 * c),
                                                    nn.ReLU6()) for c in (8, 16, 32)])
        self.conv_head = nn.Conv2d(64, 64, 1, bias=False)
        self.bn_head = nn.BatchNorm2d(64)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(64, n_classes)
        with torch.no_grad():  # a head map spread around 3 so that ReLU6 clips on both sides
            self.bn_head.weight.fill_(1000.0)
            self.bn_head.bias.fill_(3.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.stem(x))
        x = self.blocks(x)
        x = F.relu6(self.bn_head(self.conv_head(x)))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


def _net() -> nn.Module:
    torch.manual_seed(0)
    return SmallResNetLike(3, width=4, stem=True, batch_norm=True).eval()


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(12, 3, 32, 32, generator=g), torch.arange(12) % 3


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


WRAPPERS = {
    "Normalised": (lambda net: Normalised(net), "net"),
    "Sequential(Normalize, net)": (lambda net: nn.Sequential(torchvision.transforms.Normalize(MEAN, STD), net), "1"),
    "DataParallel": (lambda net: nn.DataParallel(net), "module"),
    "DataParallel(Normalised)": (lambda net: nn.DataParallel(Normalised(net)), "module.net"),
}


@pytest.mark.parametrize("kind", list(WRAPPERS))
def test_the_network_inside_a_wrapper_is_found_and_registered_as_the_bare_one(kind: str) -> None:
    make, prefix = WRAPPERS[kind]
    net = _net()
    model = make(net).eval()
    assert find_network(model) == (prefix, net)
    a, bare = adapt(model), adapt(net)
    assert a.family == bare.family == "ResNet"
    assert a.blocks == {b: f"{prefix}.{m}" for b, m in bare.blocks.items()}
    assert a.head.linear is net.fc and a.head.feature_module is net.layer4
    # the wrapper's normalisation is element-wise: the positions sit where the bare network's do
    reg, reg0 = registration(model, 64), registration(net, 64)
    assert {b: (r.grid_size, r.stride, r.offset) for b, r in reg.items()} == \
        {b: (r.grid_size, r.stride, r.offset) for b, r in reg0.items()}
    x, _ = _data()
    normalised = x if kind == "DataParallel" else _normalise(x)
    assert torch.allclose(last_feature_maps(model, x), last_feature_maps(net, normalised), atol=1e-5)


@pytest.mark.parametrize("kind", ["Normalised", "DataParallel(Normalised)"])
def test_explaining_the_wrapper_is_explaining_the_network_on_normalised_images(kind: str) -> None:
    make, _ = WRAPPERS[kind]
    net = _net()
    model = make(net).eval()
    x, y = _data()
    kw = dict(level="B234", n_prototypes=2, n_concepts=3, positions_per_image=4, device="cpu")
    ex = Explainer(model, **kw).fit(x, y)
    ref = Explainer(net, **kw).fit(_normalise(x), y)
    assert torch.allclose(ex.classifier_.prototypes_, ref.classifier_.prototypes_, atol=1e-4)
    e, r = ex.explain(x[:3]), ref.explain(_normalise(x[:3]))
    assert torch.allclose(e.attribution, r.attribution, atol=1e-4)
    assert e.completeness_error < 1e-4


def test_a_wrapper_that_changes_the_logits_is_refused() -> None:
    with pytest.raises(UnsupportedModelError, match="does not reproduce the logits"):
        adapt(Softmaxed(_net()))


def test_a_wrapper_of_an_unsupported_network_says_what_it_wraps() -> None:
    with pytest.raises(UnsupportedModelError, match="Normalised wraps 'net' \\(VGG\\).*VGG"):
        adapt(Normalised(torchvision.models.vgg11(weights=None)))


def test_a_functional_activation_after_the_last_block_is_given_with_the_block() -> None:
    torch.manual_seed(0)
    lite = TinyLite().eval()
    x, y = _data()
    with pytest.raises(UnsupportedModelError, match="could not find"):
        adapt(lite)
    # naming the module alone misses the ReLU6 applied in forward; the error says how to give it
    with pytest.raises(UnsupportedModelError,
                       match=r"blocks=\{'B4': \('bn_head', torch.nn.functional.relu6\)"):
        adapt(lite, {"B4": "bn_head"}, head="fc")
    a = adapt(lite, {"B4": ("bn_head", F.relu6)}, head="fc")
    assert a.blocks["B4"] == "bn_head" and a.post == {"B4": F.relu6}
    assert a.blocks["B3"] == "blocks.1"  # found by the resolution changes, as before
    with pytest.raises(TypeError, match="module name, function"):
        adapt(lite, {"B4": ("bn_head", "relu6")}, head="fc")

    blocks = {"B3": "blocks.1", "B4": ("bn_head", F.relu6)}
    ex = Explainer(lite, level="B34", n_prototypes=2, n_concepts=3, blocks=blocks, head="fc", device="cpu",
                   positions_per_image=4).fit(x, y)
    e = ex.explain(x[:3])
    assert e.attribution.shape == (3, 32, 32) and e.completeness_error < 1e-4
    # the pooled B4 embedding is the ReLU6 of bn_head's output: inside [0, 6]
    z4 = ex.transform(x)[:, ex.level_features_.slices_["B4"]] * ex.level_features_.sigma_["B4"]
    assert float(z4.min()) >= 0 and float(z4.max()) <= 6

    # the same inside a normalisation wrapper, with names qualified in the wrapper
    wrapped = Normalised(lite).eval()
    ew = Explainer(wrapped, level="B34", n_prototypes=2, n_concepts=3, head="net.fc", device="cpu",
                   blocks={"B3": "net.blocks.1", "B4": ("net.bn_head", F.relu6)}, positions_per_image=4).fit(x, y)
    assert ew.explain(x[:3]).completeness_error < 1e-4
    assert registration(wrapped, 32, ew.adapter_)["B4"].stride == (16.0, 16.0)
