"""SQUID: Deep Feature In-Painting for Unsupervised Anomaly Detection (Xiang et al., CVPR 2023).

Example:
    >>> from anomalib.engine import Engine
    >>> from anomalib_medical.data import DigitAnatomy
    >>> from anomalib_medical.models import Squid
    >>> engine = Engine(max_epochs=2)
    >>> engine.fit(Squid(image_size=64, patches_per_side=2), datamodule=DigitAnatomy())  # doctest: +SKIP

Paper: https://arxiv.org/abs/2111.13495; authors' code: https://github.com/tiangexiang/SQUID (MIT).

"""

from collections.abc import Sequence

from anomalib.metrics import Evaluator
from anomalib.models.components import AnomalibModule
from anomalib.visualization import Visualizer
from torch import nn

from anomalib_medical.export import ModelInfoExportMixin
from anomalib_medical.models.components.adversarial_training import (
    AdversarialInpaintingMixin,
    ScoreStatistics,
    as_size,
)
from anomalib_medical.models.components.conv_blocks import SkipOp
from anomalib_medical.models.components.deprecation import patches_per_side_argument
from anomalib_medical.models.components.detector import (
    AnomalyMapType,
    DiscriminatorScoring,
    FeatureResidual,
    ResidualPooling,
    ScoreType,
)
from anomalib_medical.models.components.memory import DecoderMemoryMode
from anomalib_medical.visualization import RadiographVisualizerDefault

from .torch_model import SquidModel


class Squid(ModelInfoExportMixin, AdversarialInpaintingMixin, RadiographVisualizerDefault, AnomalibModule):
    """SQUID as an anomalib model. Defaults are the authors' ZhangLab (chest X-ray) settings.

    Training uses manual optimisation with two optimisers: the discriminator is updated at every
    batch, the generator (encoder, in-painting block, student and teacher decoders) every ``n_critic``
    batches, after which the in-painting memory queue enqueues the batch's features (gathered over all
    processes under DDP). At the last batch of every training epoch the raw scores of the most recent
    ``score_stats_images`` training images are recomputed in eval mode and their mean/std stored, so
    that test-time scores are standardised against normal images (the paper's anomaly score A). The
    training loop is shared with SimSID (:mod:`anomalib_medical.models.components.adversarial_training`).

    Args:
        image_size: Model input size; the default pre-processor resizes to it.
        in_channels: Channels the network sees (``1``: grey, the mean of anomalib's 3 channels).
        patches_per_side: Patches per side (the paper's N).
        grid: Deprecated name of ``patches_per_side`` (a ``grid`` key is a grid search to ``anomalib benchmark``).
        levels: Encoder down-sampling stages.
        base_channels: Channels of the encoder stem.
        skip_ops: Skip fusion per decoder step from the bottleneck up (``concat``/``add``/``none``).
        merge_levels: Finest decoder levels that work on the whole image (authors' ``initial_combine``).
        memory_slots: In-painting memory-queue length per patch position (``num_slots``).
        top_k: Gumbel shrinkage: memory weights kept per query (``shrink_thres``).
        decoder_memory: Decoder memory layout per decoder step from the bottleneck up
            (``none``/``position``/``window``).
        decoder_memory_slots: Slots per decoder-memory bank (``mem_num_slots``).
        mask_ratio: Masked-shortcut ratio.
        num_heads: Attention heads of the in-painting transformer.
        dropout: In-painting feed-forward dropout.
        distillation: Use the teacher decoder and the distillation losses.
        teacher_trains_encoder: Let the teacher's reconstruction and distillation losses train the encoder (ours, the
            CPU recipe's; the authors' teacher reads detached features, so their encoder learns only through the
            in-painting path and its features need not tell digits apart, see the README).
        backbone: Optional timm backbone replacing the basic encoder.
        pretrained: Load pretrained backbone weights.
        score_type: ``discriminator`` (paper), ``residual_image``, ``residual_feature``, ``residual`` (both
            residuals) or ``combined`` (all three).
        anomaly_map_type: ``image`` (smoothed squared residual) or ``feature`` (the feature residual).
        map_sigma: Gaussian smoothing of the squared image residual, pixels.
        residual_pooling: Residual image score: ``max`` of the smoothed map (ours) or ``mean`` of the map.
        feature_residual: ``memory`` (patch distance to the memory queue), ``encoder`` (encoder features of
            input vs reconstruction) or ``bank`` (patch distance to eval-mode features of the last
            ``feature_bank_images`` training images of each epoch, ours; the CPU recipe's).
        discriminator_scoring: Discriminator batch norm when scoring: ``running`` (eval mode, ours) or
            ``per_image`` (each image's own statistics, no buffer changed: the authors' train-mode discriminator
            scoring one image per batch, the papers' score).
        feature_bank_images: Training images whose eval-mode features the bank holds (``feature_residual="bank"``).
        reconstruction_weight: Student reconstruction loss weight.
        teacher_weight: Teacher reconstruction loss weight.
        distillation_weight: Distillation loss weight.
        adversarial_weight: Generator adversarial loss weight.
        discriminator_weight: Discriminator loss weight.
        n_critic: Discriminator updates per generator update.
        lr: Generator learning rate.
        discriminator_lr: Discriminator learning rate.
        weight_decay: Generator weight decay.
        scheduler_t_max: Period of the generator's cosine learning-rate schedule, epochs.
        min_lr_ratio: Final learning rate of the schedule relative to ``lr``.
        score_stats_images: Training images used for the score mean/std.
        score_statistics: Which training images: ``recent`` (the last ``score_stats_images`` of each epoch whose
            features left the memory queue, ours) or ``first_images`` (the first ``score_stats_images`` of the
            training dataset in dataset order, augmented as training sees them: the authors', who use 201 for
            chest X-rays and 101 for DigitAnatomy).
        pre_processor: Pre-processor, or ``True`` for a resize to ``image_size``.
        post_processor: Post-processor, or ``True`` for the default.
        evaluator: Evaluator, or ``True`` for the default.
        visualizer: Visualizer, or ``True`` for the default.

    """

    def __init__(
        self,
        image_size: int | Sequence[int] = 128,
        in_channels: int = 1,
        patches_per_side: int = 2,
        grid: int | None = None,
        levels: int = 4,
        base_channels: int = 32,
        skip_ops: Sequence[SkipOp] = ("concat", "concat", "none", "none"),
        merge_levels: int = 2,
        memory_slots: int = 200,
        top_k: int | None = 5,
        decoder_memory: Sequence[DecoderMemoryMode] = ("window", "window", "none", "none"),
        decoder_memory_slots: int = 200,
        mask_ratio: float = 0.95,
        num_heads: int = 8,
        dropout: float = 0.0,
        distillation: bool = True,
        teacher_trains_encoder: bool = False,
        backbone: str | None = None,
        pretrained: bool = False,
        score_type: ScoreType = "discriminator",
        anomaly_map_type: AnomalyMapType = "image",
        map_sigma: float = 2.0,
        residual_pooling: ResidualPooling = "max",
        feature_residual: FeatureResidual = "memory",
        discriminator_scoring: DiscriminatorScoring = "running",
        feature_bank_images: int = 1000,
        reconstruction_weight: float = 10.0,
        teacher_weight: float = 0.01,
        distillation_weight: float = 0.001,
        adversarial_weight: float = 0.005,
        discriminator_weight: float = 0.005,
        n_critic: int = 2,
        lr: float = 1e-4,
        discriminator_lr: float = 1e-4,
        weight_decay: float = 1e-5,
        scheduler_t_max: int = 300,
        min_lr_ratio: float = 0.1,
        score_stats_images: int = 100,
        score_statistics: ScoreStatistics = "recent",
        pre_processor: nn.Module | bool = True,
        post_processor: nn.Module | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        size = as_size(image_size)
        if pre_processor is True:
            pre_processor = self.configure_pre_processor(size)
        super().__init__(
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        self.model = SquidModel(
            image_size=size,
            in_channels=in_channels,
            grid=patches_per_side_argument("Squid", patches_per_side, grid),
            levels=levels,
            base_channels=base_channels,
            skip_ops=tuple(skip_ops),
            merge_levels=merge_levels,
            memory_slots=memory_slots,
            top_k=top_k,
            decoder_memory=tuple(decoder_memory),
            decoder_memory_slots=decoder_memory_slots,
            mask_ratio=mask_ratio,
            num_heads=num_heads,
            dropout=dropout,
            distillation=distillation,
            teacher_trains_encoder=teacher_trains_encoder,
            backbone=backbone,
            pretrained=pretrained,
            score_type=score_type,
            anomaly_map_type=anomaly_map_type,
            map_sigma=map_sigma,
            residual_pooling=residual_pooling,
            feature_residual=feature_residual,
            discriminator_scoring=discriminator_scoring,
            feature_bank_images=feature_bank_images,
        )
        self.configure_adversarial_training(
            reconstruction_weight=reconstruction_weight,
            teacher_weight=teacher_weight,
            distillation_weight=distillation_weight,
            adversarial_weight=adversarial_weight,
            discriminator_weight=discriminator_weight,
            n_critic=n_critic,
            lr=lr,
            discriminator_lr=discriminator_lr,
            weight_decay=weight_decay,
            scheduler_t_max=scheduler_t_max,
            min_lr_ratio=min_lr_ratio,
            score_stats_images=score_stats_images,
            score_statistics=score_statistics,
        )
