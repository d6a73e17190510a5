"""Profiles, devices, seeds, cache directory and the progress switch."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from kmexplain_utils import config


@pytest.mark.parametrize("name", config.PROFILE_NAMES + config.TEST_PROFILE_NAMES)
def test_every_profile_builds_what_the_chapters_need(name):
    """Checked on the objects a profile builds, not by restating its constants."""
    import dataclasses

    from kmexplain_utils.architectures import registration
    from kmexplain_utils.features import parse_level
    from kmexplain_utils.chapters.models import build_model

    p = config.get_profile(name)
    for level in p.levels:
        parse_level(level)  # every level the chapters loop over is a valid level
    assert {"logits", "B4", "B234"} <= set(p.levels)
    assert p.k_per_class in p.k_sweep and p.n_concepts in p.concept_sweep  # the sweeps contain the defaults
    model = build_model(dataclasses.replace(p, pretrained=False), n_classes=3).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, p.image_size, p.image_size)).shape == (2, 3)
    reg = registration(model, p.image_size)
    # B4 keeps more than one position and B2's grid is finer, so "finer concept maps" can show
    assert reg["B4"].grid_size[0] >= 2 and reg["B2"].grid_size[0] > reg["B4"].grid_size[0]


def test_profiles_grow_from_smoke_to_paper():
    smoke, quick, paper = (config.get_profile(n) for n in ("smoke", "quick", "paper"))
    assert smoke.image_size <= quick.image_size < paper.image_size


def test_quick_training_stays_inside_the_build_budget():
    """The quick recipe (8,000 x 6 epochs, batches of 32; design v3 needs it) costs at most 1.5x the
    image passes of the former 4,000 x 10, measured at 1.4x its CPU time (kmexplain_utils.data.parts)."""
    quick = config.get_profile("quick")
    assert quick.n_train * quick.epochs <= 1.5 * 4000 * 10
    assert quick.n_train // quick.batch_size * quick.epochs >= 1500  # v3's marking needs the steps


def test_paper_profiles_are_cub_and_pets_with_the_same_recipe():
    paper, pets = config.get_profile("paper"), config.get_profile("paper-pets")
    assert (paper.dataset, pets.dataset) == ("cub", "pets")
    assert pets.replace(name="paper", dataset="cub") == paper  # only the data set differs
    assert config.get_profile("paper-smoke").dataset == paper.dataset  # the smoke stage runs the paper's loader

def test_profile_from_environment(monkeypatch):
    monkeypatch.setenv("KMEX_PROFILE", "Quick ")
    assert config.get_profile().name == "quick"
    monkeypatch.delenv("KMEX_PROFILE")
    assert config.get_profile().name == config.DEFAULT_PROFILE


def test_unknown_profile_names_choices(monkeypatch):
    with pytest.raises(ValueError, match="smoke, quick, paper"):
        config.get_profile("fast")
    monkeypatch.setenv("KMEX_PROFILE", "nope")
    with pytest.raises(ValueError, match="KMEX_PROFILE"):
        config.get_profile()


def test_overrides_and_replace_are_checked():
    p = config.get_profile("smoke", epochs=3)
    assert p.epochs == 3 and config.get_profile("smoke").epochs != 3  # the stored profile is unchanged
    with pytest.raises(TypeError, match="no field"):
        p.replace(epoch=2)
    assert p.as_dict()["name"] == "smoke"


def test_resolve_device(monkeypatch):
    monkeypatch.delenv("KMEX_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert config.resolve_device().type == expected
    assert config.resolve_device("cpu").type == "cpu"
    monkeypatch.setenv("KMEX_DEVICE", "cpu")
    assert config.resolve_device("auto").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            config.resolve_device("cuda")


def test_set_seed_reproduces_all_generators():
    config.set_seed(5)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    config.set_seed(5)
    b = (random.random(), np.random.rand(), torch.rand(1).item())
    assert a == b
    with pytest.raises(ValueError):
        config.set_seed(-1)


def test_cache_dir_is_not_created(monkeypatch, tmp_path):
    target = tmp_path / "nested" / "cache"
    monkeypatch.setenv("KMEX_CACHE", str(target))
    assert config.cache_dir() == target
    assert not target.exists()
    made = config.ensure_cache_dir("checkpoints")
    assert made.is_dir() and made.parent == target


def test_cache_dir_default(monkeypatch, tmp_path):
    monkeypatch.delenv("KMEX_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert config.cache_dir() == tmp_path / "kmexplain"


def test_progress_switch(monkeypatch):
    monkeypatch.setenv("KMEX_PROGRESS", "0")
    assert not config.progress_enabled()
    assert config.progress(range(3)).disable
    config.set_progress(True)
    try:
        assert config.progress_enabled()
    finally:
        config.set_progress(None)
    monkeypatch.setenv("KMEX_PROGRESS", "1")
    assert config.progress_enabled()
