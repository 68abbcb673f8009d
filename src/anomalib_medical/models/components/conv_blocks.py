"""Convolutional encoder/decoder blocks of SQUID/SimSID (the authors' ``basic_modules``).

- :class:`ResidualDoubleConv`: conv-BN-ReLU, then (conv-BN-ReLU-conv-BN) with a residual, ReLU.
- :class:`UpBlock`: bilinear up-sampling to the skip's size, skip fusion, :class:`ResidualDoubleConv`.
- :class:`ConvEncoder`: the paper's basic encoder (stride-1 stem, ``levels`` stride-2 stages).
- :class:`TimmEncoder`: any timm ``features_only`` backbone with the same interface.

Encoders return ``levels + 1`` feature maps, finest first; ``channels`` lists their channel counts.
"""

from typing import Literal

import timm
import torch
from torch import nn
from torch.nn import functional as F

SkipOp = Literal["concat", "add", "none"]


class ResidualDoubleConv(nn.Module):
    """Two convolution stages with a residual connection.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        stride: Stride of the first convolution (2 halves the resolution).

    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )
        self.conv2 = nn.Sequential(
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        x = self.conv1(x)
        return torch.relu(self.conv2(x) + x)


class UpBlock(nn.Module):
    """Up-sample to the skip connection's size, fuse it, convolve.

    Args:
        in_channels: Channels after fusion (input + skip channels for ``"concat"``).
        out_channels: Output channels.
        op: ``"concat"`` (concatenate the skip), ``"add"`` (add it) or ``"none"`` (use only its size).

    """

    def __init__(self, in_channels: int, out_channels: int, op: SkipOp = "concat") -> None:
        super().__init__()
        if op not in {"concat", "add", "none"}:
            msg = f"Unknown skip op {op!r}."
            raise ValueError(msg)
        self.op = op
        self.conv = ResidualDoubleConv(in_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Up-sample ``x`` to ``skip``'s spatial size and fuse."""
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        if self.op == "concat":
            x = torch.cat([skip, x], dim=1)
        elif self.op == "add":
            x = x + skip
        return self.conv(x)


class ConvEncoder(nn.Module):
    """The paper's basic encoder: a stride-1 stem and ``levels`` stride-2 residual stages.

    Channels are ``base * (1, 2, 4, 8, 16, 16, ...)`` as in the authors' ``filter_list``.

    Args:
        in_channels: Input channels.
        base_channels: Channels of the stem.
        levels: Number of down-sampling stages.

    """

    def __init__(self, in_channels: int = 1, base_channels: int = 32, levels: int = 4) -> None:
        super().__init__()
        self.channels = [base_channels * 2 ** min(level, 4) for level in range(levels + 1)]
        self.stem = ResidualDoubleConv(in_channels, self.channels[0])
        self.stages = nn.ModuleList(
            ResidualDoubleConv(self.channels[level], self.channels[level + 1], stride=2) for level in range(levels)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return ``levels + 1`` feature maps, finest first."""
        features = [self.stem(x)]
        for stage in self.stages:
            features.append(stage(features[-1]))
        return features


class TimmEncoder(nn.Module):
    """A timm backbone's first ``levels + 1`` feature maps (``features_only``).

    Args:
        backbone: timm model name.
        in_channels: Input channels.
        levels: Feature maps returned minus one.
        pretrained: Load pretrained weights (needs network access or a local timm cache).

    """

    def __init__(self, backbone: str, in_channels: int = 1, levels: int = 4, pretrained: bool = False) -> None:
        super().__init__()
        self.model = timm.create_model(
            backbone,
            pretrained=pretrained,
            features_only=True,
            in_chans=in_channels,
            out_indices=tuple(range(levels + 1)),
        )
        self.channels = list(self.model.feature_info.channels())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return ``levels + 1`` feature maps, finest first."""
        return list(self.model(x))
