"""The classifiers explained in the book: a small ResNet and torchvision's ResNet34.

Both have the ResNet topology with torchvision's module names::

    conv1 -> bn1 -> relu -> maxpool -> layer1 -> layer2 -> layer3 -> layer4
          -> avgpool -> fc

so that the blocks ``B1..B4`` of the method are the outputs of
``layer1..layer4`` in every model, and both take images in ``[0, 1]``: the
mean/std normalisation happens inside ``forward``.

- :class:`TinyResNet` -- width and depth configurable, trains from scratch on
  the offline datasets in about a minute on two CPU cores.
- :func:`resnet34_classifier` -- torchvision's ResNet34 with a new head,
  started from the ImageNet weights of :mod:`kmexplain_utils.chapters.pretrained`
  (the paper setting; a missing file is an error that says how to get it).
- :func:`build_model` -- the model a :class:`~kmexplain_utils.config.Profile`
  asks for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from .._validation import check_rgb_images
from .pretrained import IMAGENET_MEAN, IMAGENET_STD, Normalize, resnet34_imagenet_state_dict

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Profile

__all__ = [
    "TinyResNet",
    "ImageNetResNet",
    "resnet34_classifier",
    "build_model",
]



def _is_proxy(x: object) -> bool:
    """Whether ``x`` is a torch.fx proxy (symbolic tracing, torchvision's create_feature_extractor)."""
    return isinstance(x, torch.fx.Proxy)


def _channel_buffer(values: Sequence[float], name: str, n_channels: int = 3) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float32).reshape(-1)
    if t.numel() == 1:
        t = t.expand(n_channels).clone()
    if t.numel() != n_channels:
        raise ValueError(
            f"{name} must have {n_channels} values (one per input channel), got {t.numel()}: {list(values)}"
        )
    if name == "std" and bool((t <= 0).any()):
        raise ValueError(f"std must be positive, got {t.tolist()}")
    return t.reshape(1, n_channels, 1, 1)


class TinyResNet(nn.Module):
    """A small ResNet (BasicBlocks) for images in ``[0, 1]``, normalised inside.

    Same topology and module names as torchvision's ResNets: a stem
    (``conv1``: 3x3 conv with stride ``stem_stride``, ``bn1``, ``relu``,
    ``maxpool`` = identity), four stages ``layer1..layer4`` of BasicBlocks with
    ``width, 2 width, 4 width, 8 width`` channels and strides ``1, 2, 2, 2``,
    ``avgpool`` (global average pooling) and a linear ``fc``. With
    ``stem_stride=2`` the stages of a 64 px input work on 32/16/8/4 grids
    (16/8/4/2 at 32 px).

    Parameters
    ----------
    n_classes : int
        Number of output logits.
    width : int, default 16
        Channels of ``layer1``; doubles at every stage.
    blocks_per_stage : sequence of 4 int, default (1, 1, 1, 1)
        BasicBlocks in ``layer1..layer4``.
    stem_stride : int, default 2
        Stride of ``conv1`` (1 keeps the full resolution in ``layer1``).
    in_channels : int, default 3
        Channels of the input images (the checks expect RGB when 3).
    mean, std : sequence of float
        Per-channel normalisation applied in ``forward`` (default: ImageNet's
        for RGB, 0.5/0.25 otherwise; one value is broadcast to every channel).
    zero_init_residual : bool, default True
        Start the last BatchNorm of every block at zero, so that each block
        starts as the identity (faster, steadier training from scratch).

    Examples
    --------
    >>> import torch
    >>> model = TinyResNet(n_classes=8, width=8).eval()
    >>> model(torch.rand(2, 3, 64, 64)).shape
    torch.Size([2, 8])
    """

    def __init__(
        self,
        n_classes: int,
        width: int = 16,
        blocks_per_stage: Sequence[int] = (1, 1, 1, 1),
        stem_stride: int = 2,
        in_channels: int = 3,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        zero_init_residual: bool = True,
    ) -> None:
        super().__init__()
        if int(n_classes) < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        if int(width) < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        blocks = tuple(int(b) for b in blocks_per_stage)
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(
                f"blocks_per_stage must give 4 positive counts (layer1..layer4), got {tuple(blocks_per_stage)}"
            )
        if int(stem_stride) < 1:
            raise ValueError(f"stem_stride must be >= 1, got {stem_stride}")
        self.n_classes = int(n_classes)
        self.width = int(width)
        self.blocks_per_stage = blocks
        self.stem_stride = int(stem_stride)
        self.in_channels = int(in_channels)

        if in_channels != 3 and (mean is IMAGENET_MEAN or std is IMAGENET_STD):
            mean, std = (0.5,), (0.25,)  # ImageNet statistics only make sense for RGB
        self.register_buffer("mean", _channel_buffer(mean, "mean", self.in_channels))
        self.register_buffer("std", _channel_buffer(std, "std", self.in_channels))

        w = self.width
        self.conv1 = nn.Conv2d(in_channels, w, kernel_size=3, stride=self.stem_stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()
        self._inplanes = w
        self.layer1 = self._make_stage(w, blocks[0], stride=1)
        self.layer2 = self._make_stage(2 * w, blocks[1], stride=2)
        self.layer3 = self._make_stage(4 * w, blocks[2], stride=2)
        self.layer4 = self._make_stage(8 * w, blocks[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * w, self.n_classes)
        del self._inplanes

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def _make_stage(self, planes: int, n_blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self._inplanes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        layers = [BasicBlock(self._inplanes, planes, stride=stride, downsample=downsample)]
        self._inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(n_blocks - 1)]
        return nn.Sequential(*layers)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` per channel, for ``x`` of shape ``(N, C, H, W)`` in ``[0, 1]``."""
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, n_classes)`` of images ``x`` ``(N, 3, H, W)`` in ``[0, 1]``.

        The input is checked, except while torch.fx traces the model (a proxy
        has no shape to check): ``torchvision``'s ``create_feature_extractor``
        works on it.
        """
        if not _is_proxy(x):
            if self.in_channels == 3:
                check_rgb_images(x, name="x")
            elif x.ndim != 4 or x.shape[1] != self.in_channels:
                raise ValueError(
                    f"x must have shape (N, {self.in_channels}, H, W), got shape {tuple(x.shape)}"
                )
        x = self.normalize(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)

    def extra_repr(self) -> str:
        return (
            f"n_classes={self.n_classes}, width={self.width}, "
            f"blocks_per_stage={self.blocks_per_stage}, stem_stride={self.stem_stride}"
        )


class ImageNetResNet(ResNet):
    """torchvision's :class:`~torchvision.models.ResNet` taking images in ``[0, 1]``.

    Identical to the torchvision model (same module and parameter names, so
    torchvision ``state_dict`` files load as they are) except that ``forward``
    checks the input and applies the ImageNet mean/std normalisation first
    (``normalize``, the package's one normalisation layer,
    :class:`kmexplain_utils.chapters.pretrained.Normalize`). Its ``mean``/``std``
    are non-persistent buffers: they follow ``.to(device)`` but are not part of
    the ``state_dict``.
    """

    def __init__(self, *args, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.normalize = Normalize(mean, std, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, n_classes)`` of images ``x`` ``(N, 3, H, W)`` in ``[0, 1]`` (checked unless fx traces it)."""
        if not _is_proxy(x):
            check_rgb_images(x, name="x")
        return self._forward_impl(self.normalize(x))


def resnet34_classifier(n_classes: int, pretrained: bool = True) -> ImageNetResNet:
    """ResNet34 with a new ``fc`` for ``n_classes``, optionally from ImageNet weights.

    The weights come from the package's one loader,
    :func:`kmexplain_utils.chapters.pretrained.resnet34_imagenet_state_dict`
    (``<cache_dir>/weights``, downloaded once, checked by its hash).

    Parameters
    ----------
    n_classes : int
        Number of output logits of the new head.
    pretrained : bool, default True
        Start the encoder from ImageNet weights.

    Returns
    -------
    ImageNetResNet
        Takes ``(N, 3, H, W)`` images in ``[0, 1]``; returns ``(N, n_classes)``.
        Its attribute ``imagenet_weights_loaded`` records ``pretrained``.

    Raises
    ------
    kmexplain_utils.chapters.pretrained.WeightsError
        When ``pretrained`` and the weights cannot be had (the message says how
        to get the file); the model never continues from random weights.
    """
    if int(n_classes) < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    model = ImageNetResNet(BasicBlock, [3, 4, 6, 3])
    if pretrained:
        model.load_state_dict(resnet34_imagenet_state_dict())
    model.imagenet_weights_loaded = bool(pretrained)
    model.fc = nn.Linear(model.fc.in_features, int(n_classes))
    return model


def build_model(profile: "Profile", n_classes: int) -> nn.Module:
    """The classifier a profile asks for (``profile.model``), freshly initialised.

    Parameters
    ----------
    profile : Profile
        Uses ``model``, ``width``, ``blocks_per_stage`` and ``pretrained``.
    n_classes : int
        Number of classes of the dataset.

    Returns
    -------
    torch.nn.Module
        A :class:`TinyResNet` (``"tiny_resnet"``) or an :class:`ImageNetResNet`
        ResNet34 (``"resnet34"``), in training mode on the CPU. Seed the global
        generator first (``config.set_seed``) for a reproducible initialisation.
    """
    name = profile.model.strip().lower()
    if name == "tiny_resnet":
        return TinyResNet(n_classes, width=profile.width, blocks_per_stage=profile.blocks_per_stage)
    if name == "resnet34":
        return resnet34_classifier(n_classes, pretrained=profile.pretrained)
    raise ValueError(f"Unknown model {profile.model!r} in profile {profile.name!r}; use 'tiny_resnet' or 'resnet34'.")
