"""SimSID: Simple Space-Aware Memory Matrix for In-painting and Detecting anomalies (Xiang et al., TPAMI 2024).

Example:
    >>> from anomalib.engine import Engine
    >>> from anomalib_medical.data import DigitAnatomy
    >>> from anomalib_medical.models import SimSID
    >>> engine = Engine(max_epochs=2)
    >>> engine.fit(SimSID(image_size=96, patches_per_side=3), datamodule=DigitAnatomy())  # doctest: +SKIP

Paper: https://arxiv.org/abs/2403.08689; authors' code: https://github.com/MrGiovanni/SimSID (CC BY-NC-ND,
consulted for details only; nothing of it is used here).

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
from anomalib_medical.models.components.generator import MemoryType, OutputActivation
from anomalib_medical.models.components.memory import DecoderMemoryMode
from anomalib_medical.visualization import RadiographVisualizerDefault

from .torch_model import SimSIDModel


class SimSID(ModelInfoExportMixin, AdversarialInpaintingMixin, RadiographVisualizerDefault, AnomalibModule):
    """SimSID as an anomalib model. Defaults are the authors' ZhangLab (chest X-ray) settings.

    SimSID is SQUID with a learned space-aware memory matrix instead of the memory queue (Sec. 3.2),
    learned memories at several decoder levels (hierarchical memory, Sec. 3.3) and tanh output
    normalisation. Training (manual optimisation, two optimisers, score statistics) is shared with
    :class:`~anomalib_medical.models.Squid`, see
    :mod:`anomalib_medical.models.components.adversarial_training`.

    Args:
        image_size: Model input size; the default pre-processor resizes to it.
        in_channels: Channels the network sees (``1``: grey, the mean of anomalib's 3 channels).
        patches_per_side: Patches per side (the paper's N).
        grid: Deprecated name of ``patches_per_side`` (a ``grid`` key is a grid search to ``anomalib benchmark``).
        levels: Encoder down-sampling stages.
        base_channels: Channels of the encoder stem.
        skip_ops: Skip fusion per decoder step from the bottleneck up (``concat``/``add``/``none``).
        merge_levels: Finest decoder levels that work on the whole image (authors' ``initial_combine``).
        memory_type: In-painting memory: ``matrix`` (SimSID) or ``queue`` (SQUID's, for ablations).
        memory_slots: In-painting memory slots per patch position (``num_slots``).
        top_k: Gumbel shrinkage: memory weights kept per query (``shrink_thres``).
        decoder_memory: Decoder memory layout per decoder step from the bottleneck up
            (``none``/``window``/``position``: the hierarchical memory).
        decoder_memory_slots: Slots per decoder-memory bank.
        mask_ratio: Masked-shortcut ratio of the in-painting block (1 disables it).
        decoder_mask_ratio: Masked-shortcut ratio of the decoder memories.
        num_heads: Attention heads of the in-painting transformer.
        dropout: In-painting feed-forward dropout.
        neighbour_attention: In-paint each patch from its 8 neighbours' memory read-outs with the transformer
            layer (the authors' ``use_inpaint``: on for CheXpert and DigitAnatomy, off for ZhangLab, where each
            patch is replaced by its own memory read-out).
        distillation: Use the teacher decoder and the distillation losses.
        teacher_trains_encoder: Let the teacher's reconstruction and distillation losses train the encoder (ours; the
            authors' teacher reads detached features, as in SQUID: see Squid's README).
        backbone: Optional timm backbone replacing the basic encoder.
        pretrained: Load pretrained backbone weights.
        activation: Output normalisation: ``tanh`` (``[-1, 1]``) or ``sigmoid`` (``[0, 1]``).
        discriminator_channels: Channels of the discriminator stages.
        score_type: ``discriminator`` (paper), ``residual_image``, ``residual_feature``, ``residual`` (both
            residuals) or ``combined`` (all three).
        anomaly_map_type: ``image`` or ``feature`` residual map.
        map_sigma: Gaussian smoothing of the anomaly map, pixels.
        residual_pooling: Residual image scores: ``mean`` of the map or ``max`` of the smoothed map (ours).
        feature_residual: ``encoder`` (encoder features of input vs reconstruction), ``memory`` (patch
            distance to the nearest learned memory slot) or ``bank`` (patch distance to eval-mode features of the
            last ``feature_bank_images`` training images of each epoch, ours).
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
        memory_type: MemoryType = "matrix",
        memory_slots: int = 200,
        top_k: int | None = 5,
        decoder_memory: Sequence[DecoderMemoryMode] = ("window", "window", "none", "none"),
        decoder_memory_slots: int = 200,
        mask_ratio: float = 1.0,
        decoder_mask_ratio: float = 1.0,
        num_heads: int = 8,
        dropout: float = 0.0,
        neighbour_attention: bool = False,
        distillation: bool = True,
        teacher_trains_encoder: bool = False,
        backbone: str | None = None,
        pretrained: bool = False,
        activation: OutputActivation = "tanh",
        discriminator_channels: Sequence[int] = (16, 32, 64, 128, 256),
        score_type: ScoreType = "discriminator",
        anomaly_map_type: AnomalyMapType = "image",
        map_sigma: float = 2.0,
        residual_pooling: ResidualPooling = "mean",
        feature_residual: FeatureResidual = "encoder",
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
        self.model = SimSIDModel(
            image_size=size,
            in_channels=in_channels,
            grid=patches_per_side_argument("SimSID", patches_per_side, grid),
            levels=levels,
            base_channels=base_channels,
            skip_ops=tuple(skip_ops),
            merge_levels=merge_levels,
            memory_type=memory_type,
            memory_slots=memory_slots,
            top_k=top_k,
            decoder_memory=tuple(decoder_memory),
            decoder_memory_slots=decoder_memory_slots,
            mask_ratio=mask_ratio,
            decoder_mask_ratio=decoder_mask_ratio,
            num_heads=num_heads,
            dropout=dropout,
            neighbour_attention=neighbour_attention,
            distillation=distillation,
            teacher_trains_encoder=teacher_trains_encoder,
            backbone=backbone,
            pretrained=pretrained,
            activation=activation,
            discriminator_channels=tuple(discriminator_channels),
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
