"""Checkpoint files (atomic, validated) and the trained-model cache of get_trained_model."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

import kmexplain_utils
from kmexplain_utils.chapters import training
from kmexplain_utils.chapters.checkpoints import (
    CheckpointError,
    CheckpointWarning,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from kmexplain_utils.config import get_profile
from kmexplain_utils.chapters.models import TinyResNet

META = {"profile": "smoke", "seed": 0, "version": "0.1.0", "test_acc": 0.5, "levels": ("B4", "B34")}


def _model(seed: int = 0, width: int = 4) -> TinyResNet:
    torch.manual_seed(seed)
    model = TinyResNet(n_classes=3, width=width)
    # non-trivial BatchNorm statistics and weights, so that a round trip is meaningful
    with torch.no_grad():
        model(torch.rand(8, 3, 16, 16))
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model.eval()


def test_round_trip_gives_identical_outputs_and_metadata(tmp_path):
    model = _model(seed=0)
    path = save_checkpoint(tmp_path / "sub" / "m.pt", model, META)
    assert path.exists()
    other = _model(seed=1)
    x = torch.rand(4, 3, 16, 16)
    assert not torch.equal(other(x), model(x))
    metadata = load_checkpoint(path, other, expected_metadata={"profile": "smoke", "seed": 0})
    assert metadata == {**META, "levels": META["levels"]}
    with torch.no_grad():
        assert torch.equal(other.eval()(x), model(x))
    for key, value in model.state_dict().items():
        assert torch.equal(other.state_dict()[key], value), key


def test_load_uses_weights_only_and_refuses_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "state_dict": {}, "metadata": {"x": _Arbitrary()}}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pt.*corrupt or truncated"):
        read_checkpoint(path)


class _Arbitrary:  # a pickled custom object is what weights_only=True refuses
    pass


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[: len(raw) // 2],  # truncated
        lambda raw: b"\x00garbage" * 100,  # not a torch file at all
        lambda raw: b"",  # empty
    ],
    ids=["truncated", "garbage", "empty"],
)
def test_damaged_file_raises_checkpoint_error_naming_the_file(tmp_path, damage):
    path = save_checkpoint(tmp_path / "m.pt", _model(), META)
    path.write_bytes(damage(path.read_bytes()))
    model = _model(seed=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=str(path).replace(".", r"\.")):
        load_checkpoint(path, model)
    for key, value in model.state_dict().items():
        assert torch.equal(before[key], value)


def test_not_a_checkpoint_dictionary(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, path)  # a bare state_dict
    with pytest.raises(CheckpointError, match="not a kmexplain checkpoint"):
        read_checkpoint(path)


def test_metadata_mismatch_names_the_field(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", _model(), META)
    with pytest.raises(CheckpointError, match=r"profile: file has 'smoke', expected 'quick'"):
        load_checkpoint(path, _model(), expected_metadata={"profile": "quick", "seed": 0})
    with pytest.raises(CheckpointError, match=r"version: file has '0.1.0', expected '9.9'"):
        load_checkpoint(path, _model(), expected_metadata={"version": "9.9"})
    # tuples saved as tuples or lists compare equal
    load_checkpoint(path, _model(), expected_metadata={"levels": ["B4", "B34"]})


def test_shape_mismatch_and_missing_keys_leave_the_model_untouched(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", _model(width=4), META)
    wider = _model(width=8)
    before = {k: v.clone() for k, v in wider.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"m\.pt.*shape mismatch.*conv1\.weight"):
        load_checkpoint(path, wider)
    assert all(torch.equal(before[k], v) for k, v in wider.state_dict().items())
    deeper = TinyResNet(n_classes=3, width=4, blocks_per_stage=(2, 1, 1, 1))
    with pytest.raises(CheckpointError, match=r"missing weights \['layer1\.1\."):
        load_checkpoint(path, deeper)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        load_checkpoint(tmp_path / "none.pt", _model())


def test_write_is_atomic_when_saving_fails(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.pt", _model(seed=0), META)
    old_bytes = path.read_bytes()

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"half a file")  # something was written before the failure
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, _model(seed=1), {**META, "seed": 1})
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "new.pt", _model(seed=1), META)
    assert path.read_bytes() == old_bytes  # the old checkpoint is intact
    assert sorted(os.listdir(tmp_path)) == ["m.pt"]  # no partial or temporary file left


# --------------------------------------------------------------------------- get_trained_model


class _TinySet(torch.utils.data.Dataset):
    """ImageSet-like in-memory data: class = which image half is bright."""

    class_names = ["top", "bottom"]
    n_classes = 2

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 2, (n,), generator=g)
        images = 0.5 * torch.rand(n, 3, 16, 16, generator=g)
        images[self.labels == 0, :, :8] += 0.5
        images[self.labels == 1, :, 8:] += 0.5
        self.images = images

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])


@pytest.fixture
def fake_data(monkeypatch):
    """Replace the dataset registry by tiny sets; count the calls."""
    calls: list[tuple[str, str, int]] = []

    def load(name, split, profile, *, seed):
        calls.append((name, split, seed))
        return _TinySet(96 if split == "train" else 48, seed=seed + (0 if split == "train" else 1))

    monkeypatch.setattr(training, "_load_dataset", load)
    return calls


@pytest.fixture
def profile(tmp_path, monkeypatch):
    """A tiny smoke profile, with a cache of its own for each test."""
    monkeypatch.setenv("KMEX_CACHE", str(tmp_path / "cache"))
    return get_profile("smoke").replace(width=4, epochs=1, batch_size=32)


def _same_outputs(a, b) -> bool:
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a(x), b(x))


def test_get_trained_model_trains_once_then_loads_from_cache(fake_data, profile):
    model, info = training.get_trained_model(profile, seed=0, device="cpu")
    assert info["from_cache"] is False and not model.training
    assert len(fake_data) == 2 and all(seed == training.DATA_SEED for *_, seed in fake_data)
    path = training.checkpoint_path(profile, 0)
    assert info["path"] == str(path) and path.exists()
    assert path.parent == training.cache_dir() / "checkpoints"
    for key in ("profile", "dataset", "seed", "version", "train_acc", "test_acc", "train_seconds", "n_classes"):
        assert key in info, key
    assert info["profile"] == "smoke" and info["seed"] == 0 and info["n_classes"] == 2

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cached, cached_info = training.get_trained_model(profile, seed=0, device="cpu")
    assert cached_info["from_cache"] is True and len(fake_data) == 2  # no data loaded, nothing trained
    assert not cached.training and _same_outputs(model, cached)
    assert cached_info["test_acc"] == info["test_acc"]

    _, again = training.get_trained_model(profile, seed=0, device="cpu", retrain=True)
    assert again["from_cache"] is False and len(fake_data) == 4


def test_cache_key_separates_profiles_seeds_and_training_fields(profile):
    p0 = training.checkpoint_path(profile, 0)
    assert training.checkpoint_path(profile, 1) != p0
    assert training.checkpoint_path(profile.replace(epochs=2), 0) != p0
    assert training.checkpoint_path(profile.replace(lr=0.1), 0) != p0
    assert training.checkpoint_path(get_profile("quick"), 0) != p0
    # fields that do not change the weights do not change the key
    assert training.checkpoint_path(profile.replace(n_concepts=99, k_per_class=7), 0) == p0
    # the training threads change the weights (a multi-threaded convolution sums in another order)
    assert profile.train_threads == 1 and training.checkpoint_path(profile.replace(train_threads=2), 0) != p0
    assert training.checkpoint_path(profile.replace(train_threads=None), 0) != p0
    assert p0.name.startswith("smoke-") and "seed0" in p0.name and f"v{kmexplain_utils.__version__}" in p0.name


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_cache_file_is_retrained_with_a_warning(fake_data, profile, damage):
    _, info = training.get_trained_model(profile, seed=0, device="cpu", retrain=True)
    path = training.checkpoint_path(profile, 0)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3] if damage == "truncate" else os.urandom(2000))
    with pytest.warns(CheckpointWarning, match=r"corrupt or mismatched: retraining") as record:
        model, info2 = training.get_trained_model(profile, seed=0, device="cpu")
    assert str(path) in str(record[0].message)
    assert info2["from_cache"] is False and not model.training
    # the file was replaced by a valid one
    load_checkpoint(path, TinyResNet(2, width=4))


def test_checkpoint_of_another_profile_is_retrained(fake_data, profile):
    path = training.checkpoint_path(profile, 0)
    other = training._expected_metadata(get_profile("quick"), 0)
    save_checkpoint(path, TinyResNet(2, width=4), {**other, "n_classes": 2})
    with pytest.warns(CheckpointWarning, match=r"profile: file has 'quick', expected 'smoke'.*retraining"):
        _, info = training.get_trained_model(profile, seed=0, device="cpu")
    assert info["from_cache"] is False and info["profile"] == "smoke"
    # other package version
    save_checkpoint(path, TinyResNet(2, width=4), {**training._expected_metadata(profile, 0), "version": "0.0.1", "n_classes": 2})
    with pytest.warns(CheckpointWarning, match=r"version: file has '0.0.1'"):
        training.get_trained_model(profile, seed=0, device="cpu")


def test_checkpoint_with_wrong_shapes_is_retrained(fake_data, profile):
    path = training.checkpoint_path(profile, 0)
    save_checkpoint(path, TinyResNet(2, width=8), {**training._expected_metadata(profile, 0), "n_classes": 2})
    with pytest.warns(CheckpointWarning, match="shape mismatch"):
        _, info = training.get_trained_model(profile, seed=0, device="cpu")
    assert info["from_cache"] is False


def test_unwritable_cache_warns_and_still_returns_the_model(fake_data, profile, monkeypatch):
    def fail(*args, **kwargs):
        raise PermissionError("read-only file system (simulated)")

    monkeypatch.setattr(training, "save_checkpoint", fail)
    with pytest.warns(CheckpointWarning, match="Could not write the checkpoint"):
        model, info = training.get_trained_model(profile, seed=3, device="cpu")
    assert info["from_cache"] is False and model(torch.rand(1, 3, 16, 16)).shape == (1, 2)


def test_metadata_is_converted_to_plain_types_or_rejected_before_writing(tmp_path):
    import numpy as np

    meta = {"torch": torch.__version__, "acc": np.float64(0.25), "n": torch.tensor(3), "path": tmp_path}
    path = save_checkpoint(tmp_path / "m.pt", _model(), meta)
    _, loaded = read_checkpoint(path)
    assert loaded == {"torch": str(torch.__version__), "acc": 0.25, "n": 3, "path": str(tmp_path)}
    assert type(loaded["torch"]) is str and type(loaded["n"]) is int
    with pytest.raises(TypeError, match=r"metadata\['obj'\] holds a _Arbitrary"):
        save_checkpoint(tmp_path / "bad.pt", _model(), {"obj": _Arbitrary()})
    assert not (tmp_path / "bad.pt").exists()


def test_training_threads_are_the_profiles_and_the_callers_setting_is_restored(fake_data, profile, monkeypatch):
    seen = []
    step = torch.optim.AdamW.step

    def spy(self, *a, **k):
        seen.append(torch.get_num_threads())
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    before = torch.get_num_threads()
    training.get_trained_model(profile.replace(train_threads=1), seed=0, device="cpu")
    assert seen and set(seen) == {1} and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="train_threads must be >= 1"):
        training.train_model(TinyResNet(2, width=4), _TinySet(8, seed=0), profile=profile.replace(train_threads=0),
                             seed=0, device="cpu")


def test_train_checkpoints_side_by_side_gives_the_weights_trained_here(tmp_path, monkeypatch):
    """Two networks trained in worker processes (real generated data, no fake: a worker imports
    the package afresh) are the ones get_trained_model trains in this process."""
    monkeypatch.setenv("KMEX_CACHE", str(tmp_path / "cache"))
    tiny = get_profile("smoke").replace(n_train=64, n_test=32, width=4, epochs=1, batch_size=32)
    jobs = [(tiny, 0), (tiny, 1)]
    done = training.train_checkpoints(jobs, device="cpu", processes=2)
    assert [(r["seed"], r["trained_now"], r["n_train"]) for r in done] == [(0, True, 64), (1, True, 64)]
    assert all(training.checkpoint_path(tiny, s).exists() for s in (0, 1))
    side_by_side, info = training.get_trained_model(tiny, seed=1, device="cpu")
    assert info["from_cache"] is True and info["path"] == done[1]["path"]
    here, _ = training.get_trained_model(tiny, seed=1, device="cpu", retrain=True)
    state, again = side_by_side.state_dict(), here.state_dict()
    assert all(torch.equal(state[k], again[k]) for k in state)
    # cached now: nothing is trained again
    assert [r["trained_now"] for r in training.train_checkpoints(jobs, device="cpu")] == [False, False]
    with pytest.raises(ValueError, match="processes must be >= 1"):
        training.train_checkpoints(jobs, processes=0)
