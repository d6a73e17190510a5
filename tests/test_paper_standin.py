"""The paper profile's stand-ins load through the real code: the CUB loader and the one pretrained loader."""

from __future__ import annotations

import warnings

import pytest
import torch

from kmexplain_utils.config import get_profile
from kmexplain_utils.data import load_dataset
from kmexplain_utils.chapters.models import build_model
from kmexplain_utils.chapters.pretrained import WeightsError, resnet34_weights_file
from paper_standin import CUB_PARTS, make_cub_standin, make_resnet34_weights, standin_env


def test_paper_smoke_keeps_the_paper_code_path():
    paper, tiny = get_profile("paper"), get_profile("paper-smoke")
    assert tiny.is_smoke and get_profile("smoke").is_smoke and not paper.is_smoke
    assert (tiny.dataset, tiny.model, tiny.pretrained, tiny.optimizer) == ("cub", "resnet34", True, paper.optimizer)
    assert tiny.n_train == tiny.n_test == 0, "the whole split, as in the paper profile"
    assert tiny.image_size < paper.image_size and tiny.epochs <= 1


def test_cub_standin_loads_with_keypoint_parts(tmp_path):
    make_cub_standin(tmp_path, n_classes=3, n_train_per_class=4, n_test_per_class=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train = load_dataset("cub", "train", "paper-smoke", root=tmp_path)  # the parent of CUB_200_2011/
        test = load_dataset("cub", "test", "paper-smoke", root=tmp_path / "CUB_200_2011")
    assert (len(train), len(test), train.n_classes) == (12, 6, 3)
    assert train.class_names[0] == "Black footed Albatross"
    assert len(train.part_names) == 1 + 12 and set(CUB_PARTS) >= {"left eye", "right eye"}
    x, parts, objects = train.images_at([0, 1]), train.parts_at([0, 1]), train.objects_at([0, 1])
    assert x.shape == (2, 3, 64, 64) and 0 <= x.min() and x.max() <= 1
    assert parts.shape == (2, 64, 64) and int(parts.max()) > 0, "visible keypoints give part discs"
    assert objects.dtype == torch.bool and objects.any() and not objects.all(), "boxes give object masks"


def test_standin_weights_load_through_the_checked_loader(tmp_path, monkeypatch):
    monkeypatch.setenv("KMEX_CACHE", str(tmp_path / "cache"))
    path = make_resnet34_weights(tmp_path / "cache")
    assert path == resnet34_weights_file()
    with pytest.raises(WeightsError, match="expected b627a593"):  # the real file's hash: the stand-in is refused
        build_model(get_profile("paper-smoke"), n_classes=5)
    for k, v in standin_env(path).items():
        monkeypatch.setenv(k, v)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = build_model(get_profile("paper-smoke"), n_classes=5)
    assert model.imagenet_weights_loaded
    saved = torch.load(path, weights_only=True)
    assert torch.equal(model.layer4[2].conv2.weight, saved["layer4.2.conv2.weight"])
    assert model.fc.out_features == 5
