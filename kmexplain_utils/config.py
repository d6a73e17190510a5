"""Profiles, device choice, seeding, the cache directory and the progress switch.

Everything that differs between the tiny ``smoke`` run used by the tests, the
offline ``quick`` default that CI and the static site use, and the ``paper``
setting (ImageNet-pretrained ResNet34 on CUB-200-2011; ``paper-pets`` on Oxford-IIIT Pet) lives in one
:class:`Profile`. Select one with the environment variable ``KMEX_PROFILE``
or by name::

    >>> from kmexplain_utils.config import get_profile
    >>> get_profile("smoke").image_size
    32

Nothing here touches the disk or the network at import time.
"""

from __future__ import annotations

import dataclasses
import os
import random
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "PROFILE_NAMES",
    "TEST_PROFILE_NAMES",
    "Profile",
    "get_profile",
    "resolve_device",
    "set_seed",
    "cache_dir",
    "ensure_cache_dir",
    "progress",
    "progress_enabled",
    "set_progress",
    "in_colab",
]

PROFILE_NAMES = ("smoke", "quick", "paper", "paper-pets")
DEFAULT_PROFILE = "quick"


@dataclasses.dataclass(frozen=True)
class Profile:
    """All sizes and choices of one run of the book.

    Use :func:`get_profile` to obtain one and :meth:`replace` to change a
    field (profiles are immutable).

    Attributes
    ----------
    name : str
        ``"smoke"``, ``"quick"`` or ``"paper"``.
    dataset : str
        Name understood by :func:`kmexplain_utils.data.load_dataset`.
    image_size : int
        Side of the square input images, in pixels.
    n_train, n_test : int
        Number of training and test images (``0`` = the dataset's own split).
    model : str
        ``"tiny_resnet"`` or ``"resnet34"``.
    width : int
        Channels of the first stage of a TinyResNet (doubles every stage).
    blocks_per_stage : tuple of int
        Residual blocks in ``layer1`` .. ``layer4`` of a TinyResNet.
    pretrained : bool
        Start from ImageNet weights (paper profile only).
    epochs, batch_size : int
        Training schedule.
    lr, weight_decay : float
        Optimiser settings.
    optimizer : str
        ``"adamw"`` (one-cycle schedule) or ``"sgd"`` (momentum 0.5, cosine),
        the latter being the KMEx fine-tuning recipe.
    k_per_class : int
        Prototypes (k-means centroids) per class for the k-means classifier.
    k_sweep : tuple of int
        Values of ``k_per_class`` explored in sensitivity plots.
    n_concepts : int
        Concepts (k-means centroids over feature-map positions).
    concept_sweep : tuple of int
        Values of ``n_concepts`` explored in sensitivity plots.
    positions_per_image : int
        Feature-map positions sampled per training image to fit concepts.
    levels : tuple of str
        Feature spaces explained, see :mod:`kmexplain_utils.features`.
    seeds : tuple of int
        Seeds of the multi-seed evaluation.
    n_eval_images : int
        Test images used by the attribution metrics (deletion, insertion...).
    num_workers : int
        DataLoader workers.
    train_threads : int or None
        CPU threads of the training (``None``: torch's setting). With ``1`` the
        weights do not depend on the machine's number of cores (the result of
        a multi-threaded convolution does), and the networks of several seeds
        train side by side, one per core
        (:func:`~kmexplain_utils.chapters.training.train_checkpoints`).
    """

    name: str
    dataset: str
    image_size: int
    n_train: int
    n_test: int
    model: str
    width: int
    blocks_per_stage: tuple[int, ...]
    pretrained: bool
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    optimizer: str
    k_per_class: int
    k_sweep: tuple[int, ...]
    n_concepts: int
    concept_sweep: tuple[int, ...]
    positions_per_image: int
    levels: tuple[str, ...]
    seeds: tuple[int, ...]
    n_eval_images: int
    num_workers: int = 0
    train_threads: int | None = None

    @property
    def is_smoke(self) -> bool:
        """Whether this is a tiny test-sized run (``smoke``, or a variant such as ``paper-smoke``).

        A chapter's claims about accuracy or semantics are only checked when this is false:
        a model trained for one epoch on a few images proves nothing.
        """
        return self.name == "smoke" or self.name.endswith("-smoke")

    def replace(self, **changes: Any) -> "Profile":
        """Return a copy with some fields changed, e.g. ``p.replace(epochs=1)``."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(
                f"Profile has no field(s) {sorted(unknown)}; "
                f"known fields: {[f.name for f in dataclasses.fields(self)]}"
            )
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The profile as a plain dictionary (JSON-serialisable)."""
        return dataclasses.asdict(self)


_LEVELS = ("logits", "B4", "B34", "B234", "B1234")

_PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        dataset="parts",
        image_size=32,
        n_train=1200,
        n_test=160,
        model="tiny_resnet",
        width=8,
        blocks_per_stage=(1, 1, 1, 1),
        pretrained=False,
        epochs=4,
        batch_size=64,
        lr=1e-2,
        weight_decay=5e-4,
        optimizer="adamw",
        k_per_class=2,
        k_sweep=(1, 2),
        n_concepts=4,
        concept_sweep=(3, 4),
        positions_per_image=8,
        levels=_LEVELS,
        seeds=(0, 1),
        n_eval_images=8,
        train_threads=1,
    ),
    "quick": Profile(
        name="quick",
        dataset="parts",
        image_size=64,
        # 8,000 images x 6 epochs in batches of 32: the colour-free parts of design v3 need more
        # images and more steps than v2's 4,000 x 10 x 64 did (kmexplain_utils.data.parts)
        n_train=8000,
        n_test=800,
        model="tiny_resnet",
        width=16,
        blocks_per_stage=(1, 1, 1, 1),
        pretrained=False,
        epochs=6,
        batch_size=32,
        lr=3e-3,
        weight_decay=5e-4,
        optimizer="adamw",
        k_per_class=4,
        k_sweep=(1, 2, 4, 8),
        n_concepts=8,
        concept_sweep=(4, 8, 16),
        # 16 positions of each of the 8,000 training images: the concepts are fitted on 128,000
        # positions, as many as the second edition's 32 of 4,000
        positions_per_image=16,
        levels=_LEVELS,
        seeds=(0, 1, 2),
        n_eval_images=100,
        # one thread a network: the same weights on any machine with this CPU type, and the
        # seeds train side by side (train_checkpoints), faster on 2 cores than one after another
        train_threads=1,
    ),
    "paper": Profile(
        name="paper",
        dataset="cub",
        image_size=224,
        n_train=0,
        n_test=0,
        model="resnet34",
        width=64,
        blocks_per_stage=(3, 4, 6, 3),
        pretrained=True,
        epochs=10,
        batch_size=128,
        lr=0.01,
        weight_decay=1e-4,
        optimizer="sgd",
        k_per_class=5,
        k_sweep=(1, 2, 5, 10),
        n_concepts=10,
        concept_sweep=(5, 10, 20),
        positions_per_image=64,
        levels=_LEVELS,
        seeds=(0, 1, 2),
        n_eval_images=200,
        num_workers=2,
    ),
}


# The second real data set: Oxford-IIIT Pet with the paper's network and recipe. Its ground truth is
# the pet/boundary trimap (object masks, no parts), so the part and keypoint measurements do not apply.
_PROFILES["paper-pets"] = _PROFILES["paper"].replace(name="paper-pets", dataset="pets")

# The paper profile's code path at test sizes, for the tests only: ResNet34 (torchvision topology,
# the ImageNet weights loaded through torchvision's weight enum), the CUB-200-2011 loader and its
# keypoint parts, the whole split (n = 0) and the SGD recipe, on 64 px images and one epoch. The
# tests run it on a generated stand-in of CUB's file layout and a stand-in weights file
# (tests/paper_standin.py), so nothing is downloaded.
_PROFILES["paper-smoke"] = _PROFILES["paper"].replace(
    name="paper-smoke",
    dataset="cub",
    image_size=64,
    epochs=1,
    batch_size=16,
    k_per_class=2,
    k_sweep=(1, 2),
    n_concepts=4,
    concept_sweep=(3, 4),
    positions_per_image=8,
    seeds=(0, 1),
    n_eval_images=8,
)

#: Profiles that exist for the tests (accepted by :func:`get_profile`, not meant for readers).
TEST_PROFILE_NAMES = ("paper-smoke",)


def get_profile(name: str | None = None, **overrides: Any) -> Profile:
    """Return a profile by name, or the one named by ``KMEX_PROFILE``.

    Parameters
    ----------
    name : str, optional
        ``"smoke"``, ``"quick"`` or ``"paper"``. Defaults to the environment
        variable ``KMEX_PROFILE``, then to ``"quick"``.
    **overrides
        Fields to change, e.g. ``epochs=2``.

    Returns
    -------
    Profile

    Raises
    ------
    ValueError
        If the name is not a known profile.
    """
    chosen = name if name is not None else os.environ.get("KMEX_PROFILE", DEFAULT_PROFILE)
    chosen = chosen.strip().lower()
    if chosen not in _PROFILES:
        raise ValueError(
            f"Unknown profile {chosen!r} (from {'argument' if name is not None else 'KMEX_PROFILE'}); "
            f"choose one of {', '.join(PROFILE_NAMES)} (or {', '.join(TEST_PROFILE_NAMES)}, for the tests)."
        )
    profile = _PROFILES[chosen]
    return profile.replace(**overrides) if overrides else profile


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Pick the compute device.

    Parameters
    ----------
    device : str or torch.device or None
        ``"auto"`` (or ``None``) picks ``cuda`` when available, else ``cpu``;
        the environment variable ``KMEX_DEVICE`` overrides ``"auto"``. Any
        other value is passed to :class:`torch.device`.

    Returns
    -------
    torch.device
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        env = os.environ.get("KMEX_DEVICE", "").strip()
        if env and env != "auto":
            return resolve_device(env)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"Device {device!r} was requested but CUDA is not available; "
            "use device='auto' or 'cpu'."
        )
    return dev


def set_seed(seed: int) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) and return a torch generator.

    Parameters
    ----------
    seed : int
        Non-negative seed.

    Returns
    -------
    torch.Generator
        A CPU generator seeded with ``seed``, for code that prefers an
        explicit generator to the global state.
    """
    if int(seed) < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return torch.Generator().manual_seed(seed)


def in_colab() -> bool:
    """True inside Google Colab."""
    return "google.colab" in sys.modules


def cache_dir() -> Path:
    """Directory for checkpoints, features and downloads (not created here).

    ``KMEX_CACHE`` if set; in Colab ``/content/kmexplain_cache``; otherwise
    ``$XDG_CACHE_HOME/kmexplain`` (default ``~/.cache/kmexplain``). Use
    :func:`ensure_cache_dir` to create it before writing.
    """
    env = os.environ.get("KMEX_CACHE")
    if env:
        return Path(env).expanduser()
    if in_colab():
        return Path("/content/kmexplain_cache")
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kmexplain"


def ensure_cache_dir(*parts: str) -> Path:
    """Create and return ``cache_dir() / parts...``."""
    path = cache_dir().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


_progress_override: bool | None = None


def set_progress(enabled: bool | None) -> None:
    """Turn progress bars on or off for this process (``None`` = back to the environment)."""
    global _progress_override
    _progress_override = enabled


def progress_enabled() -> bool:
    """Whether progress bars are shown.

    Off when :func:`set_progress` said so, or when the environment variable
    ``KMEX_PROGRESS`` is ``0``/``false``/``off`` (the book build and the tests
    set it).
    """
    if _progress_override is not None:
        return _progress_override
    return os.environ.get("KMEX_PROGRESS", "1").strip().lower() not in {"0", "false", "off", "no"}


def progress(iterable: Iterable | None = None, **kwargs: Any):
    """A ``tqdm.auto`` progress bar that honours :func:`progress_enabled`.

    Parameters
    ----------
    iterable : iterable, optional
        What to iterate over.
    **kwargs
        Passed to :class:`tqdm.auto.tqdm` (``desc``, ``total``, ``leave`` ...).
    """
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", not progress_enabled())
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)
