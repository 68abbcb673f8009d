"""Teacher/student in-painting generator of SQUID and SimSID.

The image is cut into a grid of patches and every patch is encoded (SQUID Sec. 3.1, SimSID Sec. 3.1).
The bottleneck features are in-painted from a space-aware memory (:class:`InpaintingBlock`: a FIFO
queue in SQUID, a learned matrix in SimSID) and decoded by the *student* decoder, which may read
further space-aware memories at several decoder levels (the hierarchical memory). A *teacher* decoder
reconstructs the image from the plain (detached) encoder features; distillation losses couple the two
at every decoder level (SQUID Sec. 3.4).

The output layer is a sigmoid (images in ``[0, 1]``) or, as in SimSID's released configurations, a
tanh; with tanh the generator maps its ``[0, 1]`` input to ``[-1, 1]`` itself, so callers always pass
``[0, 1]`` images and :meth:`InpaintingGenerator.to_unit_range` maps reconstructions back.
"""

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from .conv_blocks import ConvEncoder, SkipOp, TimmEncoder, UpBlock
from .inpainting import InpaintingBlock
from .memory import DecoderMemoryBlock, DecoderMemoryMode, MemoryMatrix
from .patches import image_to_patches, patches_to_image
from .validation import check_number

MemoryType = Literal["queue", "matrix"]
OutputActivation = Literal["sigmoid", "tanh"]


class GeneratorOutput(NamedTuple):
    """Generator outputs, images in the generator's output range.

    Attributes:
        image: The input image mapped to the output range ``(B, C, H, W)``: the reconstruction target.
        reconstruction: Student reconstruction ``(B, C, H, W)``.
        teacher_reconstruction: Teacher reconstruction, ``None`` without distillation or when not requested.
        student_features: Student decoder features, one per decoder level.
        teacher_features: Teacher decoder features, one per decoder level (empty if no teacher ran).
        encoder_features: Encoder features of the input patches, finest first.
        memory_queries: In-painting memory queries ``(B, grid**2, D)`` (a queue enqueues them after the step).

    """

    image: torch.Tensor
    reconstruction: torch.Tensor
    teacher_reconstruction: torch.Tensor | None
    student_features: list[torch.Tensor]
    teacher_features: list[torch.Tensor]
    encoder_features: list[torch.Tensor]
    memory_queries: torch.Tensor


class PatchDecoder(nn.Module):
    """Decoder from patch bottleneck features to an image, merging patches at a given level.

    Args:
        channels: Encoder channels, finest first (``levels + 1`` entries).
        skip_ops: Skip fusion per decoder step, from the bottleneck up (``levels`` entries).
        out_channels: Image channels.
        grid: Patches per side.
        merge_levels: The finest ``merge_levels`` decoder levels work on the whole image.
        memories: Optional module per decoder step applied after its up-block.
        activation: Output activation, ``"sigmoid"`` (``[0, 1]``) or ``"tanh"`` (``[-1, 1]``).

    """

    def __init__(
        self,
        channels: Sequence[int],
        skip_ops: Sequence[SkipOp],
        out_channels: int,
        grid: int,
        merge_levels: int,
        memories: Sequence[nn.Module] | None = None,
        activation: OutputActivation = "sigmoid",
    ) -> None:
        super().__init__()
        levels = len(channels) - 1
        self.grid = grid
        self.merge_step = levels - merge_levels
        self.ups = nn.ModuleList(
            UpBlock(
                channels[levels - i] + (channels[levels - 1 - i] if op == "concat" else 0),
                channels[levels - 1 - i],
                op,
            )
            for i, op in enumerate(skip_ops)
        )
        self.memories = nn.ModuleList(memories or [nn.Identity() for _ in skip_ops])
        self.out_conv = nn.Conv2d(channels[0], out_channels, 1)
        self.activation = nn.Tanh() if activation == "tanh" else nn.Sigmoid()

    def forward(self, x: torch.Tensor, skips: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Decode bottleneck patch features ``x`` with ``skips`` (finest first, already merged where due).

        Returns:
            The image (before any final resize) and the features after each decoder step.

        """
        features = []
        for step, (up, memory) in enumerate(zip(self.ups, self.memories, strict=True)):
            if step == self.merge_step:
                x = patches_to_image(x, self.grid)
            x = memory(up(x, skips[-1 - step]))
            features.append(x)
        image = self.activation(self.out_conv(x))
        if self.merge_step == len(self.ups):
            image = patches_to_image(image, self.grid)
        return image, features


class InpaintingGenerator(nn.Module):
    """Patch encoder, in-painting block, student decoder (with decoder memories) and teacher decoder.

    Args:
        image_size: ``(H, W)`` of the model input, divisible by ``grid``.
        in_channels: Image channels seen by the network.
        grid: Patches per side (the papers' ``N``).
        levels: Down-sampling stages of the encoder.
        base_channels: Channels of the encoder stem (basic encoder).
        skip_ops: Skip fusion per decoder step from the bottleneck up.
        merge_levels: Finest decoder levels operating on the whole image (authors' ``initial_combine``).
        memory_type: In-painting memory: ``"queue"`` (SQUID's FIFO of detached features) or ``"matrix"``
            (SimSID's learned space-aware memory matrix).
        memory_slots: In-painting memory slots per patch position.
        top_k: Gumbel shrinkage parameter of all memories.
        decoder_memory: Decoder memory layout per decoder step from the bottleneck up.
        decoder_memory_slots: Slots per decoder-memory bank.
        mask_ratio: Masked-shortcut ratio of the in-painting block.
        decoder_mask_ratio: Masked-shortcut ratio of the decoder memories.
        num_heads: Attention heads of the in-painting transformer.
        dropout: Dropout of the in-painting feed-forward network.
        neighbour_attention: In-paint from the neighbours' retrieved features with the transformer layer
            (``False``: each patch's own memory read-out, SimSID's ``use_inpaint = False``).
        distillation: Build the teacher decoder.
        teacher_trains_encoder: Let the teacher's reconstruction loss reach the encoder (ours, off by default: the
            authors' teacher reads detached features, so the encoder learns only through the in-painting path).
        backbone: timm backbone name instead of the basic encoder.
        pretrained: Load pretrained backbone weights.
        activation: Output activation (``"tanh"`` works in ``[-1, 1]``, see the module docstring).

    """

    def __init__(
        self,
        image_size: tuple[int, int],
        in_channels: int,
        grid: int,
        levels: int,
        base_channels: int,
        skip_ops: Sequence[SkipOp],
        merge_levels: int,
        memory_type: MemoryType,
        memory_slots: int,
        top_k: int | None,
        decoder_memory: Sequence[DecoderMemoryMode],
        decoder_memory_slots: int,
        mask_ratio: float,
        decoder_mask_ratio: float,
        num_heads: int,
        dropout: float,
        neighbour_attention: bool,
        distillation: bool,
        backbone: str | None,
        pretrained: bool,
        activation: OutputActivation = "sigmoid",
        teacher_trains_encoder: bool = False,
    ) -> None:
        super().__init__()
        for side in image_size:
            check_number("image_size", side, 1, integer=True)
        for name, value in {
            "in_channels": in_channels,
            "grid": grid,
            "levels": levels,
            "base_channels": base_channels,
            "memory_slots": memory_slots,
            "decoder_memory_slots": decoder_memory_slots,
            "num_heads": num_heads,
        }.items():
            check_number(name, value, 1, integer=True)
        check_number("merge_levels", merge_levels, 0, levels, integer=True)
        check_number("top_k", top_k, 1, integer=True, optional=True)
        check_number("mask_ratio", mask_ratio, 0, 1)
        check_number("decoder_mask_ratio", decoder_mask_ratio, 0, 1)
        check_number("dropout", dropout, 0, 1, high_open=True)
        if image_size[0] % grid or image_size[1] % grid:
            msg = f"Image size {image_size} must be divisible by the patch grid {grid}."
            raise ValueError(msg)
        if len(skip_ops) != levels or len(decoder_memory) != levels:
            msg = f"skip_ops and decoder_memory need one entry per level ({levels})."
            raise ValueError(msg)
        if memory_type not in {"queue", "matrix"}:
            msg = f"Unknown memory_type {memory_type!r}; expected 'queue' or 'matrix'."
            raise ValueError(msg)
        if activation not in {"sigmoid", "tanh"}:
            msg = f"Unknown activation {activation!r}; expected 'sigmoid' or 'tanh'."
            raise ValueError(msg)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.grid = grid
        self.levels = levels
        self.merge_levels = merge_levels
        self.activation = activation
        self.teacher_trains_encoder = teacher_trains_encoder
        self.encoder = (
            TimmEncoder(backbone, in_channels, levels, pretrained)
            if backbone
            else ConvEncoder(in_channels, base_channels, levels)
        )
        channels = self.encoder.channels
        if channels[levels] < 4:  # the in-painting block reduces the bottleneck to channels // 4
            msg = (
                f"The encoder's bottleneck has {channels[levels]} channels (base_channels={base_channels}, "
                f"levels={levels}); the in-painting block needs at least 4."
            )
            raise ValueError(msg)
        sizes = self._feature_sizes(in_channels, (image_size[0] // grid, image_size[1] // grid))
        self.bottleneck_dim = channels[levels] * sizes[levels][0] * sizes[levels][1]
        self.inpainting = InpaintingBlock(
            channels[levels],
            sizes[levels],
            grid,
            memory_slots,
            top_k,
            num_heads,
            mask_ratio,
            dropout,
            neighbour_attention,
        )
        if memory_type == "matrix":  # SimSID: a learned memory matrix reads like the queue, but trains by gradient
            self.inpainting.memory = MemoryMatrix(grid * grid, memory_slots, self.inpainting.memory_dim, top_k)
        memories: list[nn.Module] = []
        for step, mode in enumerate(decoder_memory):
            level = levels - 1 - step
            if mode == "none":
                memories.append(nn.Identity())
                continue
            if level < merge_levels:
                msg = f"Decoder memory at step {step} needs patch features, but that level is merged."
                raise ValueError(msg)
            memories.append(
                DecoderMemoryBlock(
                    channels[level], sizes[level], grid, mode, decoder_memory_slots, top_k, decoder_mask_ratio
                )
            )
        self.student = PatchDecoder(channels, skip_ops, in_channels, grid, merge_levels, memories, activation)
        self.teacher = (
            PatchDecoder(channels, skip_ops, in_channels, grid, merge_levels, activation=activation)
            if distillation
            else None
        )

    @torch.no_grad()
    def _feature_sizes(self, in_channels: int, patch_size: tuple[int, int]) -> list[tuple[int, int]]:
        """Spatial sizes of the encoder's feature maps for one patch (a dry run in eval mode)."""
        self.encoder.eval()
        features = self.encoder(torch.zeros(1, in_channels, *patch_size))
        self.encoder.train()
        return [(feature.shape[-2], feature.shape[-1]) for feature in features]

    def to_output_range(self, image: torch.Tensor) -> torch.Tensor:
        """Map a ``[0, 1]`` image to the output range (``[-1, 1]`` with tanh)."""
        return image * 2.0 - 1.0 if self.activation == "tanh" else image

    def to_unit_range(self, image: torch.Tensor) -> torch.Tensor:
        """Map an image in the output range back to ``[0, 1]``."""
        return (image + 1.0) * 0.5 if self.activation == "tanh" else image

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Encode all patches of ``image`` ``(B, C, H, W)`` (output range); features finest first."""
        return self.encoder(image_to_patches(image, self.grid))

    def patch_vectors(self, features: torch.Tensor) -> torch.Tensor:
        """Patch feature maps ``(B * grid**2, C, h, w)`` as one vector per patch, ``(B, grid**2, C * h * w)``."""
        return features.reshape(-1, self.grid * self.grid, features[0].numel())

    def bottleneck_features(self, image: torch.Tensor) -> torch.Tensor:
        """Return the encoder bottleneck of each patch of ``image`` in ``[0, 1]`` as vectors (:meth:`patch_vectors`)."""
        return self.patch_vectors(self.encode(self.to_output_range(image))[-1])

    def _skips(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Skip connections: the finest ``merge_levels`` are reassembled into whole-image maps."""
        return [
            patches_to_image(feature, self.grid) if level < self.merge_levels else feature
            for level, feature in enumerate(features[: self.levels])
        ]

    def _to_image_size(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[-2:] == self.image_size:
            return image
        return F.interpolate(image, size=self.image_size, mode="bilinear", align_corners=False)

    def forward(self, image: torch.Tensor, teacher: bool = True) -> GeneratorOutput:
        """Reconstruct ``image`` ``(B, C, H, W)`` given in ``[0, 1]``.

        Args:
            image: Input image in ``[0, 1]``.
            teacher: Also run the teacher decoder (needed for the training losses only). The teacher
                reads detached encoder features (it never trains the encoder) unless ``teacher_trains_encoder``.

        """
        image = self.to_output_range(image)
        features = self.encode(image)
        skips = self._skips(features)
        inpainted, queries = self.inpainting(features[-1])
        reconstruction, student_features = self.student(inpainted, skips)
        teacher_reconstruction, teacher_features = None, []
        if teacher and self.teacher is not None:
            if self.teacher_trains_encoder:
                teacher_input, teacher_skips = features[-1], skips
            else:
                teacher_input, teacher_skips = features[-1].detach(), [skip.detach() for skip in skips]
            teacher_reconstruction, teacher_features = self.teacher(teacher_input, teacher_skips)
            teacher_reconstruction = self._to_image_size(teacher_reconstruction)
        return GeneratorOutput(
            image=image,
            reconstruction=self._to_image_size(reconstruction),
            teacher_reconstruction=teacher_reconstruction,
            student_features=student_features,
            teacher_features=teacher_features,
            encoder_features=features,
            memory_queries=queries,
        )
