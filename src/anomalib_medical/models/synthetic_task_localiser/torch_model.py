"""Torch model of the synthetic-task localiser: positional encoding + U-Net regressing the anomaly label map."""

from __future__ import annotations

import math
from typing import Literal

import torch
from anomalib.data import InferenceBatch
from torch import nn

from anomalib_medical.data.transforms import equalise_histogram
from anomalib_medical.models.components.unet import UNet
from anomalib_medical.models.components.validation import check_number

ScoreAggregation = Literal["mean", "max"]


class FourierCoordinateEncoding(nn.Module):
    """Positional-encoding channels for images with a fixed layout (Baugh et al., 2023, Sec. 2.4).

    Two CoordConv channels (row and column coordinates in [-1, 1]) and ``2 * num_features`` Gaussian random
    Fourier features ``sin/cos(2 pi B u)`` of the coordinates ``u`` in [0, 1), with ``B ~ N(0, scale^2)`` drawn once
    from a fixed seed and stored as a buffer (authors: 32 features, scale 12).

    Args:
        num_features: Number of random frequencies.
        scale: Standard deviation of the frequencies.
        seed: Seed of the frequency draw.

    """

    def __init__(self, num_features: int = 32, scale: float = 12.0, seed: int = 42) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("frequencies", torch.randn(num_features, 2, generator=generator) * scale)
        self.frequencies: torch.Tensor

    @property
    def num_channels(self) -> int:
        """Number of encoding channels."""
        return 2 + 2 * self.frequencies.shape[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Compute the encoding ``(B, num_channels, H, W)`` for images ``(B, C, H, W)``."""
        height, width = images.shape[-2:]
        rows = torch.arange(height, dtype=images.dtype, device=images.device)
        cols = torch.arange(width, dtype=images.dtype, device=images.device)
        unit = torch.stack(torch.meshgrid(rows / height, cols / width, indexing="ij"))
        coordinates = torch.stack(
            torch.meshgrid(rows * (2 / max(height - 1, 1)) - 1, cols * (2 / max(width - 1, 1)) - 1, indexing="ij"),
        )
        phases = 2 * math.pi * torch.einsum("fd,dhw->fhw", self.frequencies.to(images.dtype), unit)
        encoding = torch.cat([coordinates, torch.sin(phases), torch.cos(phases)])
        return encoding.unsqueeze(0).expand(images.shape[0], -1, -1, -1)


class SyntheticTaskLocaliserModel(nn.Module):
    """U-Net with positional-encoding input channels, trained to regress synthetic-anomaly labels.

    The input images (3 channels in [0, 1], as anomalib sends them) are reduced to one grey channel, optionally
    histogram-equalised (Mueller et al., 2023; Baugh et al. equalise in their pre-processing) and mapped to
    [-1, 1], the intensity space of the authors' data and of the synthetic tasks (:meth:`to_task_space`). Doing
    this in the model keeps it in the exported graph.

    Args:
        depth: U-Net depth (paper: 7 for 256x256).
        base_channels: Channels of the first U-Net stage.
        max_channels: Channel cap of the U-Net.
        positional_encoding: Add :class:`FourierCoordinateEncoding` channels to the input.
        fourier_features: Random Fourier frequencies of the encoding.
        fourier_scale: Scale of the frequencies.
        score_aggregation: Image score from the clipped pixel map: ``"mean"`` (the authors' sample-wise score)
            or ``"max"``.
        histogram_equalisation: Equalise each grey image's histogram (256 bins) before the network.

    """

    def __init__(
        self,
        depth: int = 7,
        base_channels: int = 32,
        max_channels: int = 480,
        positional_encoding: bool = True,
        fourier_features: int = 32,
        fourier_scale: float = 12.0,
        score_aggregation: ScoreAggregation = "mean",
        histogram_equalisation: bool = False,
    ) -> None:
        super().__init__()
        if score_aggregation not in {"mean", "max"}:
            msg = f"score_aggregation must be 'mean' or 'max', got {score_aggregation!r}"
            raise ValueError(msg)
        check_number("fourier_features", fourier_features, 0, integer=True)
        check_number("fourier_scale", fourier_scale, 0, low_open=True)
        self.encoding = FourierCoordinateEncoding(fourier_features, fourier_scale) if positional_encoding else None
        in_channels = 1 + (self.encoding.num_channels if self.encoding is not None else 0)
        self.unet = UNet(in_channels, 1, depth=depth, base_channels=base_channels, max_channels=max_channels)
        self.score_aggregation = score_aggregation
        self.histogram_equalisation = histogram_equalisation

    def to_task_space(self, images: torch.Tensor) -> torch.Tensor:
        """Grey ``(B, 1, H, W)`` in [-1, 1] from ``(B, C, H, W)`` images in [0, 1] (mean over channels)."""
        grey = images.mean(dim=1, keepdim=True)
        if self.histogram_equalisation:
            grey = equalise_histogram(grey)
        return grey * 2 - 1

    def localise(self, grey: torch.Tensor) -> torch.Tensor:
        """Raw label-map regression ``(B, 1, H, W)`` for grey images in task space."""
        inputs = grey if self.encoding is None else torch.cat([grey, self.encoding(grey)], dim=1)
        return self.unet(inputs)

    def score(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        """Image scores ``(B,)`` from anomaly maps ``(B, 1, H, W)``."""
        flat = anomaly_map.flatten(1)
        return flat.mean(dim=1) if self.score_aggregation == "mean" else flat.amax(dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor | InferenceBatch:
        """Raw map in training mode; in eval mode the map clipped to [0, 1] and the image score."""
        prediction = self.localise(self.to_task_space(images))
        if self.training:
            return prediction
        anomaly_map = prediction.clamp(0, 1)
        return InferenceBatch(pred_score=self.score(anomaly_map), anomaly_map=anomaly_map)
