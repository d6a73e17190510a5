"""Tiny models shared by the tests (imported by test modules, not collected)."""

from __future__ import annotations

import torch
from torch import nn


class _Block(nn.Module):
    """3x3 convolution (with bias, or without it and followed by batch norm), then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int, batch_norm: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=not batch_norm)
        self.bn = nn.BatchNorm2d(c_out) if batch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class SmallResNetLike(nn.Module):
    """``layer1..layer4`` (strides 1, 2, 2, 2), global average pooling and ``fc``.

    torchvision ResNet's module names. With ``stem=True`` a stride-1 ``conv1`` (+ ReLU)
    comes first, as in a ResNet; ``batch_norm=True`` puts batch norm in every block.
    Subclasses change the stem by overriding :meth:`stem_forward`.
    """

    def __init__(self, n_classes: int = 3, width: int = 4, *, stem: bool = False, batch_norm: bool = False) -> None:
        super().__init__()
        if stem:
            self.conv1 = nn.Conv2d(3, width, 3, 1, 1)
        self.layer1 = _Block(width if stem else 3, width, 1, batch_norm)
        self.layer2 = _Block(width, 2 * width, 2, batch_norm)
        self.layer3 = _Block(2 * width, 4 * width, 2, batch_norm)
        self.layer4 = _Block(4 * width, 8 * width, 2, batch_norm)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * width, n_classes)

    def stem_forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv1(x)) if hasattr(self, "conv1") else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem_forward(x)))))
        return self.fc(torch.flatten(self.avgpool(x), 1))
