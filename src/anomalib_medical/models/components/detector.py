"""Anomaly scoring around an in-painting generator and a discriminator (SQUID Sec. 3.5, SimSID Sec. 3.5).

The papers' image score is the discriminator's judgement of the student reconstruction, standardised by
the mean and standard deviation over normal training images (anomaly score A). Short CPU runs need
more than that, so the score is selectable: each *component* (discriminator, image residual, feature
residual) is standardised by its own training statistics and ``score_type`` picks a weighted sum of
them. A residual component pools its map by the mean (the plain reconstruction error) or by the maximum
of the smoothed map (``residual_pooling="max"``: sensitive to small, local anomalies, which a mean over
the image dilutes). The feature residual is either the encoder-feature residual of input and
reconstruction, each patch's distance to the normal features held by the space-aware memory, or its distance
to eval-mode bottleneck features of recent training images (a :class:`~.memory.FeatureBank`; ``feature_residual``). The
anomaly map is ours (the papers report image-level detection only): the image residual or the feature residual
at input resolution, pixel maps smoothed by a Gaussian.

Nothing is written to a buffer in ``forward``; :meth:`InpaintingDetector.set_score_statistics` is the
only writer of the score statistics and is called by the Lightning module's training step.
"""

from collections.abc import Sequence
from typing import Literal

import torch
from anomalib.data import InferenceBatch
from anomalib.models.components import GaussianBlur2d
from torch import nn
from torch.nn import functional as F

from .discriminator import ImageDiscriminator
from .generator import GeneratorOutput, InpaintingGenerator
from .memory import FeatureBank
from .patches import patches_to_image
from .validation import check_number

ScoreType = Literal["discriminator", "residual_image", "residual_feature", "residual", "combined"]
AnomalyMapType = Literal["image", "feature"]
ResidualPooling = Literal["mean", "max"]
FeatureResidual = Literal["encoder", "memory", "bank"]
DiscriminatorScoring = Literal["running", "per_image"]

# Batch fields the Lightning test/predict steps add from :meth:`InpaintingDetector.reconstructions`.
RECONSTRUCTION_FIELDS: tuple[str, ...] = ("reconstruction", "teacher_reconstruction")
# Raw score components, in the order of the ``score_mean``/``score_std`` buffers.
SCORE_COMPONENTS: tuple[str, ...] = ("discriminator", "residual_image", "residual_feature")
# Weights of the standardised components that make up each score type.
SCORE_WEIGHTS: dict[str, tuple[float, float, float]] = {
    "discriminator": (1.0, 0.0, 0.0),
    "residual_image": (0.0, 1.0, 0.0),
    "residual_feature": (0.0, 0.0, 1.0),
    "residual": (0.0, 1.0, 1.0),  # both residuals: no discriminator, which stays at chance in short runs
    "combined": (1.0, 1.0, 1.0),
}


class InpaintingDetector(nn.Module):
    """Generator + discriminator + anomaly scoring; the torch model behind Squid and SimSID.

    Args:
        generator: The teacher/student in-painting generator.
        discriminator: Judges real images against student reconstructions (output range).
        in_channels: Channels the network sees. With ``1``, multi-channel inputs are averaged to grey
            inside ``forward`` (so exported graphs take anomalib's 3-channel images).
        score_type: Image score, see :data:`SCORE_WEIGHTS`.
        anomaly_map_type: ``"image"`` (squared residual of the reconstruction, in ``[0, 1]`` intensity
            units) or ``"feature"`` (the feature residual of ``feature_residual``).
        map_sigma: Gaussian smoothing of the anomaly map in pixels (``0`` disables it).
        residual_pooling: Image score of a pixel residual map: ``"mean"`` of the map or ``"max"`` of the
            smoothed map.
        feature_residual: The feature-space residual (score component and ``"feature"`` map): ``"encoder"``
            (encoder features of input vs reconstruction), ``"memory"`` (patch distance to the memory) or
            ``"bank"`` (patch distance to the :class:`~.memory.FeatureBank` of ``feature_bank_images``
            training images, filled by the Lightning module with the score statistics; ours).
        discriminator_scoring: Batch norm of the discriminator when it scores: ``"running"`` (its running
            statistics, eval mode) or ``"per_image"`` (each image's own statistics: the authors' train-mode
            discriminator with one test image per batch; no buffer changes, batch size does not matter).
        feature_bank_images: Training images whose eval-mode features the bank holds (``feature_residual="bank"``).

    """

    def __init__(
        self,
        generator: InpaintingGenerator,
        discriminator: ImageDiscriminator,
        in_channels: int = 1,
        score_type: ScoreType = "discriminator",
        anomaly_map_type: AnomalyMapType = "image",
        map_sigma: float = 2.0,
        residual_pooling: ResidualPooling = "mean",
        feature_residual: FeatureResidual = "encoder",
        discriminator_scoring: DiscriminatorScoring = "running",
        feature_bank_images: int = 1000,
    ) -> None:
        super().__init__()
        if score_type not in SCORE_WEIGHTS:
            msg = f"Unknown score_type {score_type!r}; expected one of {sorted(SCORE_WEIGHTS)}."
            raise ValueError(msg)
        if anomaly_map_type not in {"image", "feature"}:
            msg = f"Unknown anomaly_map_type {anomaly_map_type!r}."
            raise ValueError(msg)
        if residual_pooling not in {"mean", "max"}:
            msg = f"Unknown residual_pooling {residual_pooling!r}; expected 'mean' or 'max'."
            raise ValueError(msg)
        if feature_residual not in {"encoder", "memory", "bank"}:
            msg = f"Unknown feature_residual {feature_residual!r}; expected 'encoder', 'memory' or 'bank'."
            raise ValueError(msg)
        if discriminator_scoring not in {"running", "per_image"}:
            msg = f"Unknown discriminator_scoring {discriminator_scoring!r}; expected 'running' or 'per_image'."
            raise ValueError(msg)
        normalised = any(isinstance(module, nn.BatchNorm2d) for module in discriminator.modules())
        if discriminator_scoring == "per_image" and normalised and discriminator.output_size == (1, 1):
            msg = (
                "discriminator_scoring='per_image' normalises each image by the statistics of its feature maps, but "
                f"the discriminator's last map is 1 x 1 for image_size {generator.image_size} (one value per "
                "channel, no statistics): use larger images or fewer discriminator_channels."
            )
            raise ValueError(msg)
        check_number("map_sigma", map_sigma, 0)
        check_number("feature_bank_images", feature_bank_images, 1, integer=True)
        self.in_channels = in_channels
        self.score_type = score_type
        self.anomaly_map_type = anomaly_map_type
        self.residual_pooling = residual_pooling
        self.feature_residual = feature_residual
        self.discriminator_scoring = discriminator_scoring
        self.generator = generator
        self.discriminator = discriminator
        self.feature_bank = (
            FeatureBank(generator.grid**2, feature_bank_images, generator.bottleneck_dim)
            if feature_residual == "bank"
            else None
        )
        self.blur = GaussianBlur2d(sigma=map_sigma, channels=1) if map_sigma > 0 else nn.Identity()
        # Mean/std of each raw score component over normal training images (anomaly score A).
        self.register_buffer("score_mean", torch.zeros(len(SCORE_COMPONENTS)))
        self.register_buffer("score_std", torch.ones(len(SCORE_COMPONENTS)))
        self.score_mean: torch.Tensor
        self.score_std: torch.Tensor

    def reduce_channels(self, image: torch.Tensor) -> torch.Tensor:
        """Average a multi-channel image to grey when the network expects one channel."""
        if self.in_channels == 1 and image.shape[1] != 1:
            return image.mean(dim=1, keepdim=True)
        return image

    def image_residual_map(self, image: torch.Tensor, output: GeneratorOutput) -> torch.Tensor:
        """Squared residual of the student reconstruction in ``[0, 1]`` intensity units, ``(B, 1, H, W)``."""
        return (image - self.generator.to_unit_range(output.reconstruction)).pow(2).mean(dim=1, keepdim=True)

    def encoder_residual_map(self, output: GeneratorOutput) -> torch.Tensor:
        """Squared encoder-feature residual between input and reconstruction, ``(B, 1, H, W)``.

        Per encoder level: mean over channels of the squared difference, reassembled from patches,
        up-sampled to the input size; averaged over levels.
        """
        size = output.image.shape[-2:]
        grid = self.generator.grid
        maps = [
            F.interpolate(
                patches_to_image((x - r).pow(2).mean(dim=1, keepdim=True), grid),
                size=size,
                mode="bilinear",
                align_corners=False,
            )
            for x, r in zip(output.encoder_features, self.generator.encode(output.reconstruction), strict=True)
        ]
        return torch.stack(maps).mean(dim=0)

    def memory_distance_map(self, output: GeneratorOutput) -> torch.Tensor:
        """Patch-level map ``(B, 1, H, W)`` of each patch query's cosine distance to its nearest memory item.

        A feature residual with respect to the normal features the space-aware memory holds (a queue of
        training features for SQUID, learned slots for SimSID); constant over each patch. With
        ``feature_residual="bank"``, the distance of each patch's encoder bottleneck to the feature bank instead.
        """
        if self.feature_bank is not None:
            distance = self.feature_bank.nearest_distance(self.generator.patch_vectors(output.encoder_features[-1]))
        else:
            distance = self.generator.inpainting.memory.nearest_distance(output.memory_queries)
        grid = self.generator.grid
        return F.interpolate(distance.reshape(-1, 1, grid, grid), size=output.image.shape[-2:], mode="nearest")

    def pool_and_smooth(self, residual_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image score ``(B,)`` of a pixel residual map (mean, or maximum of the smoothed map) and the smoothed map."""
        smoothed = self.blur(residual_map)
        if self.residual_pooling == "max":
            return smoothed.amax(dim=(1, 2, 3)), smoothed
        return residual_map.mean(dim=(1, 2, 3)), smoothed

    def raw_scores(
        self,
        image: torch.Tensor,
        components: Sequence[str] = SCORE_COMPONENTS,
        output: GeneratorOutput | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw (unstandardised) score components and the anomaly map, without touching any buffer.

        - ``discriminator``: the negative real/fake logit of the student reconstruction (the papers'), with the
          batch norms of ``discriminator_scoring``.
        - ``residual_image``: the pooled squared residual ``(x - x_hat)**2`` (:meth:`pool_and_smooth`).
        - ``residual_feature``: with ``feature_residual="encoder"`` the pooled encoder-feature residual;
          with ``"memory"`` or ``"bank"`` the largest patch distance to the memory or the bank
          (:meth:`memory_distance_map`).

        Args:
            image: Channel-reduced input ``(B, C, H, W)`` in ``[0, 1]``.
            components: Components to compute; the others are returned as zeros.
            output: The generator's eval output for ``image`` when the caller already has it (else computed).

        Returns:
            Scores ``(B, 3)`` in :data:`SCORE_COMPONENTS` order (higher = more anomalous) and the map
            ``(B, 1, H, W)`` (pixel residual maps smoothed; the patch-level memory map as it is).

        """
        if output is None:
            output = self.generator(image, teacher=False)
        zeros = image.new_zeros(image.shape[0])
        image_map = image_score = feature_map = feature_score = zeros
        if "residual_image" in components or self.anomaly_map_type == "image":
            image_score, image_map = self.pool_and_smooth(self.image_residual_map(image, output))
        if "residual_feature" in components or self.anomaly_map_type == "feature":
            if self.feature_residual in {"memory", "bank"}:  # patch-level: pooled and shown as it is
                feature_map = self.memory_distance_map(output)
                feature_score = feature_map.amax(dim=(1, 2, 3))
            else:
                feature_score, feature_map = self.pool_and_smooth(self.encoder_residual_map(output))
        scores = torch.stack(
            [
                -self.discriminator(output.reconstruction, per_image=self.discriminator_scoring == "per_image")
                if "discriminator" in components
                else zeros,
                image_score if "residual_image" in components else zeros,
                feature_score if "residual_feature" in components else zeros,
            ],
            dim=1,
        )
        return scores, image_map if self.anomaly_map_type == "image" else feature_map

    @torch.no_grad()
    def predict_with_reconstructions(
        self, image: torch.Tensor
    ) -> tuple[InferenceBatch, torch.Tensor, torch.Tensor | None]:
        """Eval prediction and the student / teacher reconstructions in ``[0, 1]``, from one generator pass.

        For the visualiser and the reconstruction metrics (the Lightning test and predict steps); not part of
        ``forward``, so exported graphs keep their outputs. The prediction equals ``forward``'s (the student path
        does not depend on the teacher); the teacher's reconstruction is ``None`` without distillation.
        """
        image = self.reduce_channels(self.check_image_size(image))
        output = self.generator(image, teacher=True)
        teacher = output.teacher_reconstruction
        return (
            self.predict(image, output),
            self.generator.to_unit_range(output.reconstruction),
            None if teacher is None else self.generator.to_unit_range(teacher),
        )

    @torch.no_grad()
    def set_score_statistics(self, raw_scores: torch.Tensor) -> None:
        """Store mean and std of raw scores ``(N, 3)`` of normal training images."""
        self.score_mean.copy_(raw_scores.mean(dim=0))
        self.score_std.copy_(raw_scores.std(dim=0, correction=0).clamp_min(1e-8))

    def check_image_size(self, image: torch.Tensor) -> torch.Tensor:
        """Return ``image`` if its height and width are the model's ``image_size``.

        Raises:
            ValueError: If they are not (a check on static shapes: nothing of it enters an exported graph).

        """
        expected = self.generator.image_size
        if tuple(image.shape[-2:]) != expected:
            msg = (
                f"Input images of size {tuple(image.shape[-2:])}, but the model was built for image_size {expected}: "
                "resize them to it (the model's default pre-processor does) or build the model with their size."
            )
            raise ValueError(msg)
        return image

    def predict(self, image: torch.Tensor, output: GeneratorOutput) -> InferenceBatch:
        """``InferenceBatch(pred_score, anomaly_map)`` of channel-reduced ``image`` from its generator output.

        ``pred_score`` is the weighted sum of the standardised score components of ``score_type``
        (for ``"discriminator"`` this is the papers' anomaly score A before its sigmoid).
        """
        weights = SCORE_WEIGHTS[self.score_type]
        active = [index for index, weight in enumerate(weights) if weight]
        raw, anomaly_map = self.raw_scores(image, [SCORE_COMPONENTS[index] for index in active], output)
        # Only the score type's components enter the graph: an unused component standardises to a constant
        # that can be huge (a near-constant discriminator has std ~1e-6), and INT8 calibration of a tensor
        # holding it rounds the used components to zero.
        standardised = (raw[:, active] - self.score_mean[active]) / self.score_std[active]
        pred_score = standardised @ standardised.new_tensor([weights[index] for index in active])
        return InferenceBatch(pred_score=pred_score, anomaly_map=anomaly_map)

    def forward(self, image: torch.Tensor) -> GeneratorOutput | InferenceBatch:
        """Training: generator outputs. Eval: ``InferenceBatch(pred_score, anomaly_map)`` (:meth:`predict`).

        Raises:
            ValueError: If the input's height and width are not the model's ``image_size``.

        """
        image = self.reduce_channels(self.check_image_size(image))
        if self.training:
            return self.generator(image)
        return self.predict(image, self.generator(image, teacher=False))
