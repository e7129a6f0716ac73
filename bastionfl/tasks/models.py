"""Image classifiers for BastionFL: a small CNN and WRN-16-1.

Both use BatchNorm (RNP masks BN scales) and expose their three stage outputs through
``forward_features`` (NAD distils attention maps of those stages).
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from bastionfl.config import IMAGE_MODELS

__all__ = ["SmallCNN", "WideResNet", "build_model", "MODEL_NAMES"]

MODEL_NAMES = IMAGE_MODELS  # the configuration's catalogue is the one list


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU stages and a two-layer head; works for any input size >= 4x4."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        w = width
        self.stage1 = nn.Sequential(nn.Conv2d(in_channels, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.stage2 = nn.Sequential(
            nn.MaxPool2d(2), nn.Conv2d(w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU()
        )
        self.stage3 = nn.Sequential(
            nn.MaxPool2d(2), nn.Conv2d(2 * w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * w * 4, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the three stage outputs (for attention distillation)."""
        a1 = self.stage1(x)
        a2 = self.stage2(a1)
        a3 = self.stage3(a2)
        return self.head(self.pool(a3)), [a1, a2, a3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]


class _WideBasic(nn.Module):
    """Pre-activation wide residual block (BN-ReLU-conv twice, projection shortcut when shape changes)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        y = self.conv1(o)
        y = self.conv2(F.relu(self.bn2(y)))
        return y + (self.shortcut(o) if self.shortcut is not None else x)


class WideResNet(nn.Module):
    """WRN-depth-k (Zagoruyko & Komodakis); depth 16, k 1 gives WRN-16-1 as used by ABL, NAD and RNP."""

    def __init__(self, depth: int = 16, widen: int = 1, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.block1 = self._group(widths[0], widths[1], n, 1)
        self.block2 = self._group(widths[1], widths[2], n, 2)
        self.block3 = self._group(widths[2], widths[3], n, 2)
        self.bn = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    @staticmethod
    def _group(cin: int, cout: int, n: int, stride: int) -> nn.Sequential:
        return nn.Sequential(*[_WideBasic(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(n)])

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the outputs of the three residual groups (for attention distillation)."""
        a1 = self.block1(self.conv1(x))
        a2 = self.block2(a1)
        a3 = self.block3(a2)
        out = F.relu(self.bn(a3))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out), [a1, a2, a3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]


def build_model(name: str, in_channels: int, num_classes: int) -> nn.Module:
    """Model factory for the image task; ``name`` is one of MODEL_NAMES."""
    if name == "cnn":
        return SmallCNN(in_channels=in_channels, num_classes=num_classes)
    if name == "wrn-16-1":
        return WideResNet(16, 1, in_channels=in_channels, num_classes=num_classes)
    if name == "wrn-16-4":  # 2.7 M parameters: the large-model case for secure aggregation
        return WideResNet(16, 4, in_channels=in_channels, num_classes=num_classes)
    raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}")
