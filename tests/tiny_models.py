"""Tiny models shared by the tests (imported by test modules, not collected)."""

from __future__ import annotations

import torch
from torch import nn


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


class SmallResNetLike(nn.Module):
    """``layer1..layer4`` (strides 1, 2, 2, 2), global average pooling and ``fc``."""

    def __init__(self, n_classes: int = 3, width: int = 4) -> None:
        super().__init__()
        self.layer1 = _Block(3, width, 1)
        self.layer2 = _Block(width, 2 * width, 2)
        self.layer3 = _Block(2 * width, 4 * width, 2)
        self.layer4 = _Block(4 * width, 8 * width, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))
