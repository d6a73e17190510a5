"""Training, evaluation and the trained-model cache.

- :func:`train_model` -- seeded, device-agnostic training loop with a
  progress bar (AdamW + one-cycle, or the KMEx SGD + cosine recipe).
- :func:`accuracy`, :func:`predict_logits` -- batched evaluation.
- :func:`get_trained_model` -- the model of a profile and seed: loaded from
  the checkpoint cache when it is there, trained and saved otherwise. Every
  chapter calls it, so the first chapter that runs trains and the others
  reuse the result.
- :func:`train_checkpoints` -- the networks of several seeds (and profiles)
  into the cache, trained side by side on the CPU, one process per network.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._torch import eval_mode, model_device
from .checkpoints import (
    CheckpointError,
    CheckpointWarning,
    check_metadata,
    load_state_dict_checked,
    read_checkpoint,
    save_checkpoint,
)
from .. import __version__
from ..config import Profile, cache_dir, get_profile, progress, resolve_device, set_seed
from ..data import dataset_version, load_dataset
from .models import build_model

__all__ = [
    "TRAINING_RECIPE_VERSION",
    "DATA_SEED",
    "TRAINING_FIELDS",
    "TrainResult",
    "train_model",
    "predict_logits",
    "accuracy",
    "training_config_hash",
    "checkpoint_path",
    "get_trained_model",
    "train_checkpoints",
]

#: Bumped whenever the training loop changes in a way that changes the weights
#: (it is part of the checkpoint key, so old checkpoints are not reused).
TRAINING_RECIPE_VERSION = 1

#: Seed of the training/test data used by :func:`get_trained_model` (the model
#: seed varies, the data stay the same).
DATA_SEED = 0

#: Profile fields that change the trained weights (hashed into the cache key).
TRAINING_FIELDS = (
    "dataset",
    "image_size",
    "n_train",
    "n_test",
    "model",
    "width",
    "blocks_per_stage",
    "pretrained",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "optimizer",
    "train_threads",
)

#: Datasets whose classes do not change under a left-right flip.
_FLIP_INVARIANT = {"parts", "pets", "cub"}


@dataclasses.dataclass
class TrainResult:
    """What :func:`train_model` reports.

    Attributes
    ----------
    train_acc : float or None
        Accuracy on the (un-augmented) training set, model in eval mode
        (``None`` when not measured).
    test_acc : float or None
        Accuracy on ``test_set`` (``None`` without one).
    history : list of dict
        One dict per epoch: ``epoch``, ``loss`` (mean training loss),
        ``train_acc`` (running accuracy on augmented batches), ``lr`` (at the
        end of the epoch), ``seconds`` (since the start) and, when measured,
        ``test_acc``.
    seconds : float
        Wall-clock training time, evaluation included.
    """

    train_acc: float | None
    test_acc: float | None
    history: list[dict[str, float]]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """Plain dictionary (JSON-serialisable)."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- data


def _in_memory(dataset: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(images, labels)`` tensors of an in-memory dataset, else ``None``."""
    if isinstance(dataset, torch.utils.data.TensorDataset) and len(dataset.tensors) >= 2:
        return dataset.tensors[0], torch.as_tensor(dataset.tensors[1])
    if isinstance(getattr(type(dataset), "images", None), property):
        return None  # computed on access (e.g. a LazyImageSet reading every file): go item by item
    images = getattr(dataset, "images", None)
    labels = getattr(dataset, "labels", None)
    if isinstance(images, torch.Tensor) and labels is not None:
        labels = torch.as_tensor(labels)
        if images.ndim == 4 and labels.ndim == 1 and len(images) == len(labels):
            return images, labels
    return None


def _batches(
    dataset: Any,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    num_workers: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images (B, 3, H, W), labels (B,))`` batches on the CPU.

    The order is drawn from ``generator`` alone, so in-memory sets and
    DataLoader-backed sets give the same batches for the same seed.
    """
    n = len(dataset)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    index_batches = [order[start : start + batch_size] for start in range(0, stop, batch_size)]
    tensors = _in_memory(dataset)
    if tensors is not None:
        images, labels = tensors
        for idx in index_batches:
            yield images[idx], labels[idx]
        return
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=[idx.tolist() for idx in index_batches], num_workers=num_workers
    )
    for x, y in loader:
        yield x, torch.as_tensor(y)


def _flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image ``(B, C, H, W)`` left-right with probability 1/2."""
    mask = (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device)
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


def _affine(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    degrees: float = 30.0,
    scale: tuple[float, float] = (0.9, 1.1),
    shift: float = 0.1,
) -> torch.Tensor:
    """Random flip, rotation, scaling and shift of each image ``(B, C, H, W)``.

    One bilinear resampling per image (borders replicated); the parameters
    are drawn on the CPU from ``generator``, so the result depends on the
    seed only.
    """
    b = x.shape[0]
    u = torch.rand(b, 5, generator=generator, dtype=torch.float64)
    angle = (2 * u[:, 0] - 1) * math.radians(degrees)
    zoom = scale[0] + (scale[1] - scale[0]) * u[:, 1]
    sign = torch.where(u[:, 2] < 0.5, -1.0, 1.0)  # horizontal flip
    tx, ty = (2 * u[:, 3] - 1) * 2 * shift, (2 * u[:, 4] - 1) * 2 * shift
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos * sign, -sin, tx], 1), torch.stack([sin * sign, cos, ty], 1)], 1
    ).to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


_AUGMENTATIONS = ("none", "flip", "affine")


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    dataset: Any,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """Logits of every image of ``dataset``, in order.

    Parameters
    ----------
    model : torch.nn.Module
        Classifier taking ``(B, 3, H, W)`` images in ``[0, 1]``.
    dataset : Dataset or torch.Tensor
        An ``ImageSet``/``TensorDataset``/any dataset of ``(image, label)``,
        or a tensor of images ``(N, 3, H, W)``.
    device : str or torch.device, optional
        Where to compute. ``None`` (default): the model's device; ``"auto"``:
        :func:`~kmexplain_utils.config.resolve_device` (the model is moved).
    batch_size : int, default 256
        Images per forward pass.

    Returns
    -------
    torch.Tensor
        ``(N, n_classes)`` float logits on the CPU. The model's train/eval
        mode is restored afterwards.
    """
    dev = model_device(model) if device is None else resolve_device(device)
    model.to(dev)
    with eval_mode(model):
        if isinstance(dataset, torch.Tensor):
            chunks = (dataset[i : i + batch_size] for i in range(0, len(dataset), batch_size))
        else:
            chunks = (x for x, _ in _batches(dataset, batch_size))
        out = [model(x.to(dev, non_blocking=True)).float().cpu() for x in chunks]
    if not out:
        raise ValueError("predict_logits got an empty dataset (0 images).")
    return torch.cat(out)


def _labels_of(dataset: Any) -> torch.Tensor:
    tensors = _in_memory(dataset)
    if tensors is not None:
        return tensors[1]
    labels = getattr(dataset, "labels", None)
    if labels is not None:
        return torch.as_tensor(labels)
    return torch.cat([y for _, y in _batches(dataset, 256)])


def accuracy(
    model: nn.Module,
    dataset: Any,
    device: str | torch.device | None = None,
    batch_size: int = 256,
) -> float:
    """Fraction of images of ``dataset`` whose arg-max logit is the label.

    Parameters
    ----------
    model : torch.nn.Module
        Classifier taking ``(B, 3, H, W)`` images in ``[0, 1]``.
    dataset : Dataset
        Yields ``(image (3, H, W), label)``; in-memory sets (``.images``,
        ``.labels``) are batched without a DataLoader.
    device : str or torch.device, optional
        ``None``: the model's device; ``"auto"``: the best available device.
    batch_size : int, default 256

    Returns
    -------
    float
        Accuracy in ``[0, 1]``.
    """
    logits = predict_logits(model, dataset, device=device, batch_size=batch_size)
    labels = _labels_of(dataset).to(logits.device)
    return float((logits.argmax(1) == labels).float().mean())


# --------------------------------------------------------------------------- training


def _make_optimizer(
    model: nn.Module, profile: Profile, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    opt_name = profile.optimizer.strip().lower()
    if opt_name == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=profile.lr, weight_decay=profile.weight_decay)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=profile.lr, total_steps=max(total_steps, 2), pct_start=0.25
        )
    elif opt_name == "sgd":
        optimizer = torch.optim.SGD(
            model.parameters(), lr=profile.lr, momentum=0.5, weight_decay=profile.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    else:
        raise ValueError(f"Unknown optimizer {profile.optimizer!r} in profile {profile.name!r}; use 'adamw' or 'sgd'.")
    return optimizer, scheduler


def train_model(
    model: nn.Module,
    train_set: Any,
    *,
    profile: Profile,
    seed: int,
    device: str | torch.device | None = "auto",
    test_set: Any = None,
    augment: bool | str | None = None,
    eval_each_epoch: bool = False,
    train_accuracy: bool = True,
) -> TrainResult:
    """Train ``model`` on ``train_set`` with the schedule of ``profile``.

    ``profile.optimizer == "adamw"``: AdamW with a one-cycle learning rate
    (peak ``profile.lr``); ``"sgd"``: SGD with momentum 0.5 and a cosine
    schedule from ``profile.lr`` (the KMEx fine-tuning recipe). Cross-entropy
    loss, ``profile.epochs`` epochs of ``profile.batch_size`` images (the
    last incomplete batch of an epoch is dropped).

    Parameters
    ----------
    model : torch.nn.Module
        Classifier taking ``(B, 3, H, W)`` images in ``[0, 1]``; trained in place.
    train_set : Dataset
        Yields ``(image (3, H, W) float in [0, 1], label int)``. In-memory sets
        (an ``ImageSet`` with ``.images``/``.labels``, or a ``TensorDataset``)
        are batched directly from their tensors.
    profile : Profile
        Uses ``epochs``, ``batch_size``, ``lr``, ``weight_decay``,
        ``optimizer``, ``num_workers``, ``train_threads`` (the CPU threads of
        the training loop; the caller's setting is restored) and ``dataset``.
    seed : int
        Seeds the shuffling, the augmentation and the global generators; on
        the CPU the same seed gives the same weights.
    device : str or torch.device, default "auto"
        See :func:`~kmexplain_utils.config.resolve_device`; ``None`` keeps the
        model's device.
    test_set : Dataset, optional
        Evaluated at the end (and after every epoch with ``eval_each_epoch``).
    augment : {"flip", "affine", "none"} or bool, optional
        Augmentation of the training batches, on tensors: ``"flip"`` random
        left-right flips; ``"affine"`` flips plus random rotation (+-30
        degrees), scaling (0.9-1.1) and shift (+-10 %); ``"none"``. ``True``
        means ``"flip"``, ``False`` ``"none"``. Default: ``"flip"`` for
        datasets whose classes are flip-invariant (``parts``, ``pets``,
        ``cub``), ``"none"`` otherwise (e.g. MNIST digits).
    eval_each_epoch : bool, default False
        Also measure ``test_acc`` after every epoch (into ``history``).
    train_accuracy : bool, default True
        Measure ``train_acc`` at the end (one more pass over the training set);
        ``False`` leaves it ``None``.

    Returns
    -------
    TrainResult
        Final train/test accuracy, per-epoch history and seconds. The model
        is left in eval mode on ``device``.
    """
    if len(train_set) == 0:
        raise ValueError("train_set is empty: nothing to train on.")
    if int(profile.epochs) < 1 or int(profile.batch_size) < 1:
        raise ValueError(f"profile.epochs and profile.batch_size must be >= 1, got {profile.epochs}, {profile.batch_size}")
    if profile.train_threads is not None and int(profile.train_threads) < 1:
        raise ValueError(f"profile.train_threads must be >= 1 or None (torch's setting), got {profile.train_threads}")
    start = time.perf_counter()
    dev = model_device(model) if device is None else resolve_device(device)
    set_seed(seed)
    gen = torch.Generator().manual_seed(int(seed))
    if augment is None:
        augment = profile.dataset.strip().lower() in _FLIP_INVARIANT
    if isinstance(augment, bool):
        augment = "flip" if augment else "none"
    if augment not in _AUGMENTATIONS:
        raise ValueError(f"augment must be one of {_AUGMENTATIONS} or a bool, got {augment!r}")

    n = len(train_set)
    batch_size = int(profile.batch_size)
    drop_last = n >= batch_size
    steps_per_epoch = n // batch_size if drop_last else 1
    total_steps = steps_per_epoch * int(profile.epochs)

    # channels-last weights and batches: the convolutions run about 1.5x faster per step on the CPU
    # (TinyResNet, 64 px, batch 64: 68 vs 101 ms on 2 cores) and use the tensor-core layout on a GPU
    model.to(dev, memory_format=torch.channels_last)
    optimizer, scheduler = _make_optimizer(model, profile, total_steps)
    history: list[dict[str, float]] = []
    bar = progress(total=total_steps, desc=f"training {type(model).__name__} ({profile.name})")
    threads = torch.get_num_threads()
    if profile.train_threads is not None and dev.type == "cpu":
        torch.set_num_threads(int(profile.train_threads))  # restored below
    try:
        for epoch in range(int(profile.epochs)):
            model.train()
            loss_sum, correct, seen = 0.0, 0, 0
            for x, y in _batches(
                train_set,
                batch_size,
                shuffle=True,
                generator=gen,
                drop_last=drop_last,
                num_workers=profile.num_workers,
            ):
                x = x.to(dev, non_blocking=True)
                if augment == "flip":
                    x = _flip(x, gen)
                elif augment == "affine":
                    x = _affine(x, gen)
                x = x.contiguous(memory_format=torch.channels_last)
                y = y.to(dev, non_blocking=True)
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_sum += float(loss.detach()) * len(y)
                correct += int((logits.detach().argmax(1) == y).sum())
                seen += len(y)
                bar.update(1)
            record: dict[str, float] = {
                "epoch": epoch + 1,
                "loss": loss_sum / max(seen, 1),
                "train_acc": correct / max(seen, 1),
                "lr": float(optimizer.param_groups[0]["lr"]),
            }
            if test_set is not None and (eval_each_epoch or epoch == int(profile.epochs) - 1):
                record["test_acc"] = accuracy(model, test_set)
            record["seconds"] = time.perf_counter() - start
            history.append(record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['train_acc']:.3f}")
    finally:
        torch.set_num_threads(threads)
        bar.close()
        model.to(memory_format=torch.contiguous_format)  # the usual layout for the caller
    model.eval()
    train_acc = accuracy(model, train_set) if train_accuracy else None
    test_acc = history[-1].get("test_acc") if test_set is not None else None
    return TrainResult(
        train_acc=train_acc,
        test_acc=test_acc,
        history=history,
        seconds=time.perf_counter() - start,
    )


# --------------------------------------------------------------------------- cache


def _load_dataset(name: str, split: str, profile: Profile, *, seed: int) -> Any:
    """:func:`kmexplain_utils.data.load_dataset` (a seam the tests replace)."""
    return load_dataset(name, split, profile, seed=seed)


def _package_version() -> str:

    return __version__


def training_config_hash(profile: Profile) -> str:
    """12-hex-digit hash of the profile fields that change the trained weights.

    Covers :data:`TRAINING_FIELDS`, :data:`TRAINING_RECIPE_VERSION`,
    :data:`DATA_SEED` and the version of the data set's generator or loader.
    """
    fields = {name: getattr(profile, name) for name in TRAINING_FIELDS}
    if fields["train_threads"] is None:  # torch's setting: the key of the profiles that never set it
        del fields["train_threads"]
    fields["recipe"] = TRAINING_RECIPE_VERSION
    fields["data_seed"] = DATA_SEED
    fields["data_version"] = dataset_version(profile.dataset)
    text = json.dumps(fields, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def checkpoint_path(profile: Profile, seed: int = 0) -> Path:
    """Cache file of the model of ``profile`` and ``seed``.

    ``cache_dir()/checkpoints/<profile>-<config hash>-seed<seed>-v<version>.pt``.
    """
    key = f"{profile.name}-{training_config_hash(profile)}-seed{int(seed)}-v{_package_version()}"
    return cache_dir() / "checkpoints" / f"{key}.pt"


def _expected_metadata(profile: Profile, seed: int) -> dict[str, Any]:
    return {
        "profile": profile.name,
        "config_hash": training_config_hash(profile),
        "dataset": profile.dataset,
        "model": profile.model,
        "seed": int(seed),
        "version": _package_version(),
    }


def _trained_without_its_weights(profile: Profile, metadata: dict[str, Any]) -> bool:
    """True for a checkpoint of a pretrained profile that started from random weights (older versions fell back)."""
    return bool(profile.pretrained and profile.model == "resnet34" and not metadata.get("imagenet_weights_loaded", True))


def _load_cached(
    path: Path, profile: Profile, seed: int, dev: torch.device
) -> tuple[nn.Module, dict[str, Any]] | None:
    """The cached model, or ``None`` (with a warning) when unusable."""
    try:
        state, metadata = read_checkpoint(path)
        check_metadata(path, metadata, _expected_metadata(profile, seed))
        if "n_classes" not in metadata:
            raise CheckpointError(f"Checkpoint {path} has no 'n_classes' in its metadata.")
        # the weights are overwritten: do not try to download ImageNet weights again
        model = build_model(profile.replace(pretrained=False), int(metadata["n_classes"]))
        load_state_dict_checked(path, model, state)
    except CheckpointError as exc:
        warnings.warn(f"{exc} It is corrupt or mismatched: retraining.", CheckpointWarning, stacklevel=3)
        return None
    if _trained_without_its_weights(profile, metadata):
        warnings.warn(
            f"Checkpoint {path} was trained from random weights (the ImageNet weights were missing): "
            "retraining from the ImageNet weights.",
            CheckpointWarning,
            stacklevel=3,
        )
        return None
    return model.to(dev).eval(), metadata


def get_trained_model(
    profile: Profile | str | None = None,
    seed: int = 0,
    *,
    device: str | torch.device | None = "auto",
    retrain: bool = False,
    train_accuracy: bool = True,
) -> tuple[nn.Module, dict[str, Any]]:
    """The trained classifier of a profile and seed, from the cache or trained now.

    Looks for :func:`checkpoint_path` ``(profile, seed)``; if it is missing,
    corrupt, truncated or from another profile/version (a
    :class:`~kmexplain_utils.chapters.checkpoints.CheckpointWarning` says which), loads
    ``load_dataset(profile.dataset, "train"/"test", profile, seed=DATA_SEED)``,
    builds the model with the seed, trains it with :func:`train_model` and
    saves it atomically.

    Parameters
    ----------
    profile : Profile or str, optional
        Defaults to :func:`~kmexplain_utils.config.get_profile` (``KMEX_PROFILE``).
    seed : int, default 0
        Model seed (initialisation, shuffling, augmentation). The data are
        always those of ``DATA_SEED``.
    device : str or torch.device, default "auto"
        Where the model is trained and returned.
    retrain : bool, default False
        Ignore (and overwrite) the cached checkpoint.
    train_accuracy : bool, default True
        When it trains: measure the accuracy on the whole training set at the end (``False``:
        ``train_acc`` is ``None``; :func:`train_checkpoints` skips it, a chapter measures it).

    Returns
    -------
    model : torch.nn.Module
        In eval mode on ``device``.
    info : dict
        ``profile``, ``dataset``, ``model``, ``seed``, ``data_seed``,
        ``version``, ``config_hash``, ``n_classes``, ``class_names``,
        ``train_acc``, ``test_acc``, ``train_seconds``, ``history``,
        ``device`` (of training), ``torch_version``, ``created`` (UTC),
        ``imagenet_weights_loaded`` (resnet34 only), ``path`` and
        ``from_cache``.
    """
    if profile is None or isinstance(profile, str):
        profile = get_profile(profile)
    seed = int(seed)
    dev = resolve_device(device)
    path = checkpoint_path(profile, seed)

    if path.exists() and not retrain:
        cached = _load_cached(path, profile, seed, dev)
        if cached is not None:
            model, metadata = cached
            return model, {**metadata, "path": str(path), "from_cache": True}


    train_set = _load_dataset(profile.dataset, "train", profile, seed=DATA_SEED)
    test_set = _load_dataset(profile.dataset, "test", profile, seed=DATA_SEED)
    class_names = list(getattr(train_set, "class_names", []) or [])
    n_classes = int(getattr(train_set, "n_classes", 0) or len(class_names))
    if n_classes < 1:
        n_classes = int(_labels_of(train_set).max()) + 1

    set_seed(seed)
    model = build_model(profile, n_classes)
    result = train_model(model, train_set, profile=profile, seed=seed, device=dev, test_set=test_set,
                         train_accuracy=train_accuracy)
    metadata: dict[str, Any] = {
        **_expected_metadata(profile, seed),
        "data_seed": DATA_SEED,
        "n_classes": n_classes,
        "class_names": class_names,
        "train_acc": result.train_acc,
        "test_acc": result.test_acc,
        "train_seconds": result.seconds,
        "history": result.history,
        "device": str(dev),
        "torch_version": str(torch.__version__),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if hasattr(model, "imagenet_weights_loaded"):
        metadata["imagenet_weights_loaded"] = bool(model.imagenet_weights_loaded)
    try:
        save_checkpoint(path, model, metadata)
    except OSError as exc:  # a read-only cache must not stop a chapter
        warnings.warn(
            f"Could not write the checkpoint {path} ({type(exc).__name__}: {exc}); the model will be "
            "retrained next time. Set KMEX_CACHE to a writable folder to keep it.",
            CheckpointWarning,
            stacklevel=2,
        )
    return model.eval(), {**metadata, "path": str(path), "from_cache": False}


# --------------------------------------------------------------------------- several networks
def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def _train_in_worker(profile: Profile, seed: int) -> dict[str, Any]:
    """One network in a worker process of :func:`train_checkpoints` (no progress bar: it would print into the page)."""
    from ..config import set_progress

    set_progress(False)
    _model, info = get_trained_model(profile, seed, device="cpu", train_accuracy=False)
    return {key: info[key] for key in ("path", "test_acc", "train_seconds", "from_cache")}


def train_checkpoints(
    jobs: Sequence[tuple[Profile | str, int]],
    *,
    device: str | torch.device | None = "auto",
    processes: int | None = None,
) -> list[dict[str, Any]]:
    """Put the networks of several ``(profile, seed)`` pairs in the checkpoint cache, side by side.

    A network already in the cache is only read. On the CPU, the missing ones of profiles with
    ``train_threads`` set train in worker processes, ``processes`` at a time (default: the cores
    this process may use, divided by ``train_threads``), each with ``train_threads`` threads: with
    one thread each, two networks on 2 cores take about 1.4 times as long as one with both cores
    (a batch of 32 small images uses two threads poorly). The weights are those that
    :func:`get_trained_model` trains in this process (same profile, same threads). On a GPU, or
    for profiles without ``train_threads``, they train one after another here.

    Parameters
    ----------
    jobs : sequence of (Profile or str, int)
        The profiles (or profile names) and model seeds.
    device : str or torch.device, default "auto"
        Where the networks would be trained (see
        :func:`~kmexplain_utils.config.resolve_device`).
    processes : int, optional
        Worker processes at most.

    Returns
    -------
    list of dict
        One per job, in order: ``profile``, ``seed``, ``n_train``, ``epochs``, ``path``,
        ``test_acc``, ``train_seconds`` (of the training, whenever it happened) and
        ``trained_now``.
    """
    pairs = [(get_profile(p) if p is None or isinstance(p, str) else p, int(s)) for p, s in jobs]
    if processes is not None and int(processes) < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    dev = resolve_device(device)
    cached = [checkpoint_path(p, s).exists() for p, s in pairs]
    side_by_side = [i for i, (p, _s) in enumerate(pairs)
                    if not cached[i] and dev.type == "cpu" and p.train_threads is not None]
    results: dict[int, dict[str, Any]] = {}
    if len(side_by_side) > 1:
        threads = max(int(pairs[i][0].train_threads or 1) for i in side_by_side)
        n_proc = min(len(side_by_side), int(processes or max(1, _cores() // threads)))
        if n_proc > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            # spawn, not fork: a forked child of a process whose OpenMP pool has run can hang
            bar = progress(total=len(side_by_side), desc=f"training {len(side_by_side)} networks, {n_proc} at a time")
            try:  # the bar counts finished networks (a worker prints nothing)
                with ProcessPoolExecutor(n_proc, mp_context=multiprocessing.get_context("spawn")) as pool:
                    futures = {pool.submit(_train_in_worker, *pairs[i]): i for i in side_by_side}
                    for f in as_completed(futures):
                        results[futures[f]] = f.result()
                        bar.update(1)
            finally:
                bar.close()
    out = []
    for i, (p, s) in enumerate(pairs):
        if i in results:
            info = results[i]
        else:  # cached, on a GPU, or not run side by side: here
            _model, info = get_trained_model(p, s, device=dev)
        out.append({"profile": p.name, "seed": s, "n_train": p.n_train, "epochs": p.epochs, "path": info["path"],
                    "test_acc": info["test_acc"], "train_seconds": info["train_seconds"],
                    "trained_now": not cached[i]})
    return out
