"""A plain U-Net with instance normalisation and GELU, of configurable depth.

The layout follows nnU-Net's generic U-Net as configured by Baugh et al. (2023): two ``3x3`` convolutions per
stage, each followed by affine instance normalisation and GELU; strided convolutions for down-sampling; the channel
count doubles per stage up to a cap; bilinear up-sampling, concatenation with the skip connection and two
convolutions on the way up; a ``1x1`` convolution head without final non-linearity.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .validation import check_number


class ConvNormGELU(nn.Sequential):
    """``3x3`` convolution, affine instance normalisation, GELU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1),
            nn.InstanceNorm2d(out_channels, eps=1e-5, affine=True),
            nn.GELU(),
        )


class UNetStage(nn.Sequential):
    """``num_convs`` :class:`ConvNormGELU` blocks; the first one may down-sample with its stride."""

    def __init__(self, in_channels: int, out_channels: int, num_convs: int = 2, stride: int = 1) -> None:
        super().__init__(
            ConvNormGELU(in_channels, out_channels, stride),
            *[ConvNormGELU(out_channels, out_channels) for _ in range(num_convs - 1)],
        )


class UNet(nn.Module):
    """U-Net for dense regression.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        depth: Number of resolution levels (``depth - 1`` down-samplings; the paper uses 7 for 256x256 images).
            Inputs whose sides are not multiples of ``2 ** (depth - 1)`` work too (skips are matched by resizing).
        base_channels: Channels of the first stage; doubled at each level.
        max_channels: Cap on the channel count (nnU-Net's 2-D default is 480).
        convs_per_stage: Convolutions per stage.

    Example:
        >>> net = UNet(in_channels=3, out_channels=1, depth=3, base_channels=8)
        >>> net(torch.rand(2, 3, 20, 24)).shape
        torch.Size([2, 1, 20, 24])

    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        depth: int = 7,
        base_channels: int = 32,
        max_channels: int = 480,
        convs_per_stage: int = 2,
    ) -> None:
        super().__init__()
        for name, value in {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "depth": depth,
            "base_channels": base_channels,
            "max_channels": max_channels,
            "convs_per_stage": convs_per_stage,
        }.items():
            check_number(name, value, 1, integer=True)
        channels = [min(base_channels * 2**level, max_channels) for level in range(depth)]
        self.encoder = nn.ModuleList(
            UNetStage(
                in_channels if level == 0 else channels[level - 1],
                channels[level],
                convs_per_stage,
                stride=1 if level == 0 else 2,
            )
            for level in range(depth)
        )
        self.decoder = nn.ModuleList(
            UNetStage(channels[level + 1] + channels[level], channels[level], convs_per_stage)
            for level in reversed(range(depth - 1))
        )
        self.head = nn.Conv2d(channels[0], out_channels, kernel_size=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_channels, H, W)`` to ``(B, out_channels, H, W)``."""
        skips = []
        features = images
        for stage in self.encoder:
            features = stage(features)
            skips.append(features)
        for stage, skip in zip(self.decoder, reversed(skips[:-1]), strict=True):
            upsampled = F.interpolate(features, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            features = stage(torch.cat([upsampled, skip], dim=1))
        return self.head(features)
