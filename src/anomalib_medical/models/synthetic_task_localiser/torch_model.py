"""Torch model of the synthetic-task localiser: positional encoding + U-Net regressing the anomaly label map."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from anomalib.data import InferenceBatch
from torch import nn

from anomalib_medical.data.transforms import equalise_histogram
from anomalib_medical.models.components.unet import Initialisation, UNet, check_input_rank, check_spatial_dims
from anomalib_medical.models.components.validation import check_number

ScoreAggregation = Literal["mean", "max"]
InputRange = Literal["unit", "task"]


class FourierCoordinateEncoding(nn.Module):
    """Positional-encoding channels for images or volumes with a fixed layout (Baugh et al., 2023, Sec. 2.4).

    One CoordConv channel per spatial axis (its coordinate in [-1, 1]) and ``2 * num_features`` Gaussian random
    Fourier features ``sin/cos(2 pi B u)`` of the coordinates ``u`` in [0, 1), with ``B ~ N(0, scale^2)`` of shape
    ``(num_features, spatial_dims)``, drawn once as the authors do (NumPy's ``default_rng(seed)``, seed 42) and
    stored as a buffer. The authors use 32 features of scale 12: 66 channels in 2-D, 67 in 3-D.

    Args:
        num_features: Number of random frequencies.
        scale: Standard deviation of the frequencies.
        seed: Seed of the frequency draw.
        spatial_dims: 2 for images ``(N, C, H, W)``, 3 for volumes ``(N, C, D, H, W)``.

    """

    def __init__(self, num_features: int = 32, scale: float = 12.0, seed: int = 42, spatial_dims: int = 2) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        draw = np.random.default_rng(seed).standard_normal((num_features, self.spatial_dims)) * scale
        self.register_buffer("frequencies", torch.from_numpy(draw).float())
        self.frequencies: torch.Tensor

    @property
    def num_channels(self) -> int:
        """Number of encoding channels."""
        return self.spatial_dims + 2 * self.frequencies.shape[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Compute the encoding ``(N, num_channels, *spatial)`` for inputs ``(N, C, *spatial)``.

        Raises:
            ValueError: If the input does not have ``spatial_dims`` spatial axes.

        """
        check_input_rank("FourierCoordinateEncoding", images, self.spatial_dims)
        sizes = images.shape[2:]
        axes = [torch.arange(size, dtype=images.dtype, device=images.device) for size in sizes]
        unit = torch.stack(torch.meshgrid(*[a / n for a, n in zip(axes, sizes, strict=True)], indexing="ij"))
        signed = [a * (2 / max(n - 1, 1)) - 1 for a, n in zip(axes, sizes, strict=True)]
        coordinates = torch.stack(torch.meshgrid(*signed, indexing="ij"))
        phases = 2 * math.pi * torch.tensordot(self.frequencies.to(images.dtype), unit, dims=1)
        encoding = torch.cat([coordinates, torch.sin(phases), torch.cos(phases)])
        return encoding.unsqueeze(0).expand(images.shape[0], *encoding.shape)


class SyntheticTaskLocaliserModel(nn.Module):
    """U-Net with positional-encoding input channels, trained to regress synthetic-anomaly labels (2-D or 3-D).

    The inputs (images ``(N, C, H, W)`` or volumes ``(N, C, D, H, W)``) are reduced to one grey channel and brought
    into the intensity space of the authors' data and of the synthetic tasks (:meth:`to_task_space`): images in
    [0, 1] (as anomalib sends them, ``input_range="unit"``) are mapped to [-1, 1]; volumes arrive z-scored within
    the brain with a zero background (``input_range="task"``, the authors' brain MRI) and are kept as they are.
    Histogram equalisation (per image, or per volume in 3-D; Mueller et al., 2023; Baugh et al. equalise
    radiographs in their pre-processing) maps either to [-1, 1]. Doing this in the model keeps it in the exported
    graph.

    Args:
        depth: U-Net depth (authors: 7 for 256x256 radiographs, 5 for 80x112x80 brain volumes).
        base_channels: Channels of the first U-Net stage.
        max_channels: Channel cap of the U-Net (``None``: nnU-Net's 512 in 2-D, 320 in 3-D).
        positional_encoding: Add :class:`FourierCoordinateEncoding` channels to the input.
        fourier_features: Random Fourier frequencies of the encoding.
        fourier_scale: Scale of the frequencies.
        score_aggregation: Image score from the clipped pixel map: ``"mean"`` (the authors' sample-wise score)
            or ``"max"``.
        histogram_equalisation: Equalise each grey image's (volume's) histogram (256 bins) before the network.
        spatial_dims: 2 for images, 3 for volumes.
        initialisation: U-Net weights: ``"he"`` (the authors') or ``"pytorch"`` (see :class:`UNet`).
        input_range: ``"unit"`` (inputs in [0, 1], mapped to [-1, 1]) or ``"task"`` (inputs already in task
            space); ``None``: ``"unit"`` for images, ``"task"`` for volumes.

    Raises:
        ValueError: If an argument is out of range, or (in ``forward``) the input has the wrong rank.

    """

    def __init__(
        self,
        depth: int = 7,
        base_channels: int = 32,
        max_channels: int | None = None,
        positional_encoding: bool = True,
        fourier_features: int = 32,
        fourier_scale: float = 12.0,
        score_aggregation: ScoreAggregation = "mean",
        histogram_equalisation: bool = False,
        spatial_dims: int = 2,
        initialisation: Initialisation = "he",
        input_range: InputRange | None = None,
    ) -> None:
        super().__init__()
        if input_range not in {None, "unit", "task"}:
            msg = f"input_range must be 'unit', 'task' or None, got {input_range!r}"
            raise ValueError(msg)
        if score_aggregation not in {"mean", "max"}:
            msg = f"score_aggregation must be 'mean' or 'max', got {score_aggregation!r}"
            raise ValueError(msg)
        check_number("fourier_features", fourier_features, 0, integer=True)
        check_number("fourier_scale", fourier_scale, 0, low_open=True)
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.encoding = (
            FourierCoordinateEncoding(fourier_features, fourier_scale, spatial_dims=self.spatial_dims)
            if positional_encoding
            else None
        )
        in_channels = 1 + (self.encoding.num_channels if self.encoding is not None else 0)
        self.unet = UNet(
            in_channels,
            1,
            depth=depth,
            base_channels=base_channels,
            max_channels=max_channels,
            spatial_dims=self.spatial_dims,
            initialisation=initialisation,
        )
        self.score_aggregation = score_aggregation
        self.histogram_equalisation = histogram_equalisation
        self.input_range: InputRange = input_range or ("unit" if self.spatial_dims == 2 else "task")

    def to_task_space(self, images: torch.Tensor) -> torch.Tensor:
        """Grey ``(N, 1, *spatial)`` in task space from ``(N, C, *spatial)`` inputs (mean over channels).

        Raises:
            ValueError: If the input does not have ``spatial_dims`` spatial axes.

        """
        check_input_rank("SyntheticTaskLocaliserModel", images, self.spatial_dims)
        grey = images.mean(dim=1, keepdim=True)
        if self.histogram_equalisation:
            # One histogram per image or volume: a volume's voxels are equalised together as one plane.
            grey = equalise_histogram(grey.reshape(*grey.shape[:2], -1, grey.shape[-1])).reshape(grey.shape)
        elif self.input_range == "task":
            return grey
        return grey * 2 - 1

    def localise(self, grey: torch.Tensor) -> torch.Tensor:
        """Raw label-map regression ``(N, 1, *spatial)`` for grey inputs in task space."""
        inputs = grey if self.encoding is None else torch.cat([grey, self.encoding(grey)], dim=1)
        return self.unet(inputs)

    def score(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        """Image (volume) scores ``(N,)`` from anomaly maps ``(N, 1, *spatial)``."""
        flat = anomaly_map.flatten(1)
        return flat.mean(dim=1) if self.score_aggregation == "mean" else flat.amax(dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor | InferenceBatch:
        """Raw map in training mode; in eval mode the map clipped to [0, 1] and the image score."""
        prediction = self.localise(self.to_task_space(images))
        if self.training:
            return prediction
        anomaly_map = prediction.clamp(0, 1)
        return InferenceBatch(pred_score=self.score(anomaly_map), anomaly_map=anomaly_map)
