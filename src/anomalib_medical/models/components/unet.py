"""nnU-Net's generic U-Net as Baugh et al. (2023) configure it, in 2-D or 3-D (``spatial_dims``).

One implementation for both dimensionalities (the convolution and normalisation classes are chosen from
``spatial_dims``, as MONAI's networks do). The layout is that of nnU-Net's ``Generic_UNet`` with the authors'
arguments (``convolutional_pooling=True``, ``convolutional_upsampling=False``, no deep supervision, no dropout,
GELU, affine instance normalisation):

- each stage: ``convs_per_stage`` ``3x3`` (``3x3x3``) convolutions with bias, each followed by affine instance
  normalisation (eps 1e-5) and GELU; the first convolution of every stage but the first has stride 2;
- channels ``base_channels * 2 ** level`` capped at ``max_channels`` (nnU-Net: 512 in 2-D, 320 in 3-D);
- the last convolution of the bottleneck and of every decoder stage but the last maps to the channels of the next
  skip connection; up-sampling is bi-/tri-linear (no transposed convolution) and concatenated with the skip;
- a ``1x1`` convolution head without bias and without final non-linearity;
- He (Kaiming normal, negative slope 0.01) initialisation of every convolution, zero biases.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from .validation import check_number

#: nnU-Net's channel caps per number of spatial dimensions.
MAX_CHANNELS = {2: 512, 3: 320}
_UPSAMPLING = {2: "bilinear", 3: "trilinear"}

Initialisation = Literal["he", "pytorch"]


def check_spatial_dims(spatial_dims: object) -> int:
    """Return ``spatial_dims`` if it is 2 or 3, else raise a ``ValueError`` naming it."""
    if spatial_dims not in MAX_CHANNELS or isinstance(spatial_dims, bool):
        msg = f"spatial_dims must be 2 or 3, got {spatial_dims!r}"
        raise ValueError(msg)
    return int(spatial_dims)  # type: ignore[call-overload]


def check_input_rank(name: str, images: torch.Tensor, spatial_dims: int) -> None:
    """Raise a ``ValueError`` unless ``images`` is ``(N, C, *spatial)`` with ``spatial_dims`` spatial axes."""
    if images.ndim != 2 + spatial_dims:
        layout = "(N, C, H, W)" if spatial_dims == 2 else "(N, C, D, H, W)"
        msg = f"{name} with spatial_dims={spatial_dims} expects {layout} inputs, got shape {tuple(images.shape)}"
        raise ValueError(msg)


class ConvNormGELU(nn.Sequential):
    """``3x3`` (``3x3x3``) convolution with bias, affine instance normalisation, GELU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, spatial_dims: int = 2) -> None:
        spatial_dims = check_spatial_dims(spatial_dims)
        super().__init__(
            getattr(nn, f"Conv{spatial_dims}d")(in_channels, out_channels, kernel_size=3, stride=stride, padding=1),
            getattr(nn, f"InstanceNorm{spatial_dims}d")(out_channels, eps=1e-5, affine=True),
            nn.GELU(),
        )


class UNetStage(nn.Sequential):
    """``num_convs`` :class:`ConvNormGELU`: ``in -> width`` (with ``stride``), ``width -> width``, ``-> out``."""

    def __init__(
        self,
        in_channels: int,
        width: int,
        out_channels: int | None = None,
        num_convs: int = 2,
        stride: int = 1,
        spatial_dims: int = 2,
    ) -> None:
        widths = [in_channels, *[width] * num_convs]
        widths[-1] = width if out_channels is None else out_channels
        super().__init__(
            *[ConvNormGELU(widths[i], widths[i + 1], stride if i == 0 else 1, spatial_dims) for i in range(num_convs)],
        )


def he_initialisation(module: nn.Module, negative_slope: float = 1e-2) -> None:
    """nnU-Net's ``InitWeights_He``: Kaiming-normal convolution weights (leaky-ReLU gain), zero biases."""
    if isinstance(module, nn.Conv2d | nn.Conv3d | nn.ConvTranspose2d | nn.ConvTranspose3d):
        nn.init.kaiming_normal_(module.weight, a=negative_slope)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class UNet(nn.Module):
    """U-Net for dense regression, 2-D or 3-D (see the module docstring for the layout).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        depth: Number of resolution levels (``depth - 1`` down-samplings; the authors use 7 for 256x256 images
            and 5 for 80x112x80 volumes). Inputs whose sides are not multiples of ``2 ** (depth - 1)`` work too
            (the up-sampled features are resized to each skip's size).
        base_channels: Channels of the first stage; doubled at each level.
        max_channels: Cap on the channel count (``None``: nnU-Net's 512 in 2-D, 320 in 3-D).
        convs_per_stage: Convolutions per stage.
        spatial_dims: 2 for images ``(N, C, H, W)``, 3 for volumes ``(N, C, D, H, W)``.
        initialisation: ``"he"`` (nnU-Net's, the authors') or ``"pytorch"`` (PyTorch's default, Kaiming-uniform
            with ``a = sqrt(5)``: smaller weights, which trained faster in short CPU runs; see the localiser README).

    Raises:
        ValueError: If an argument is out of range, or (in ``forward``) the input has the wrong rank.

    Example:
        >>> net = UNet(in_channels=3, out_channels=1, depth=3, base_channels=8)
        >>> net(torch.rand(2, 3, 20, 24)).shape
        torch.Size([2, 1, 20, 24])
        >>> UNet(1, 1, depth=2, base_channels=4, spatial_dims=3)(torch.rand(1, 1, 6, 8, 4)).shape
        torch.Size([1, 1, 6, 8, 4])

    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        depth: int = 7,
        base_channels: int = 32,
        max_channels: int | None = None,
        convs_per_stage: int = 2,
        spatial_dims: int = 2,
        initialisation: Initialisation = "he",
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        if initialisation not in {"he", "pytorch"}:
            msg = f"initialisation must be 'he' or 'pytorch', got {initialisation!r}"
            raise ValueError(msg)
        max_channels = MAX_CHANNELS[self.spatial_dims] if max_channels is None else max_channels
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
        # The deepest stage (bottleneck) and each decoder stage end on the channels of the next skip connection.
        self.encoder = nn.ModuleList(
            UNetStage(
                in_channels if level == 0 else channels[level - 1],
                channels[level],
                channels[level - 1] if level == depth - 1 and level > 0 else channels[level],
                convs_per_stage,
                stride=1 if level == 0 else 2,
                spatial_dims=self.spatial_dims,
            )
            for level in range(depth)
        )
        self.decoder = nn.ModuleList(
            UNetStage(
                2 * channels[level],
                channels[level],
                channels[max(level - 1, 0)],
                convs_per_stage,
                spatial_dims=self.spatial_dims,
            )
            for level in reversed(range(depth - 1))
        )
        self.head = getattr(nn, f"Conv{self.spatial_dims}d")(channels[0], out_channels, kernel_size=1, bias=False)
        if initialisation == "he":
            self.apply(he_initialisation)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map ``(N, in_channels, *spatial)`` to ``(N, out_channels, *spatial)``."""
        check_input_rank("UNet", images, self.spatial_dims)
        skips = []
        features = images
        for stage in self.encoder:
            features = stage(features)
            skips.append(features)
        mode = _UPSAMPLING[self.spatial_dims]
        for stage, skip in zip(self.decoder, reversed(skips[:-1]), strict=True):
            upsampled = F.interpolate(features, size=skip.shape[2:], mode=mode, align_corners=False)
            features = stage(torch.cat([upsampled, skip], dim=1))
        return self.head(features)
