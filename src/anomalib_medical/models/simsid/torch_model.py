"""PyTorch model of SimSID.

Xiang et al., "Exploiting Structural Consistency of Chest Anatomy for Unsupervised Anomaly Detection in
Radiography Images", TPAMI 2024, arXiv:2403.08689. SimSID keeps SQUID's design (patch encoder, feature
in-painting over neighbouring patches, teacher and student decoders with distillation, a discriminator
whose judgement is the anomaly score) and replaces the space-aware memory *queue* of detached training
features by a space-aware memory *matrix*: one bank of learned slots per patch position, read with
Gumbel shrinkage and trained by back-propagation (Sec. 3.2). Learned matrices also sit at several
decoder levels (hierarchical memory, Sec. 3.3), and the released configurations normalise images to
``[-1, 1]`` with a tanh output layer.

In eval mode :class:`SimSIDModel` returns ``InferenceBatch(pred_score, anomaly_map)``; nothing is
written to any buffer in ``forward`` (a memory matrix is a parameter and has no write path at all).
"""

from collections.abc import Sequence

from anomalib_medical.models.components.conv_blocks import SkipOp
from anomalib_medical.models.components.detector import (
    AnomalyMapType,
    DiscriminatorScoring,
    FeatureResidual,
    InpaintingDetector,
    ResidualPooling,
    ScoreType,
)
from anomalib_medical.models.components.discriminator import ImageDiscriminator
from anomalib_medical.models.components.generator import InpaintingGenerator, MemoryType, OutputActivation
from anomalib_medical.models.components.memory import DecoderMemoryMode


class SimSIDModel(InpaintingDetector):
    """SimSID generator, discriminator and anomaly scoring. Defaults: the authors' ZhangLab setting.

    Args:
        image_size: ``(H, W)`` of the model input.
        in_channels: Channels the network sees (``1``: grey, the mean of anomalib's 3 channels).
        grid: Patches per side (the paper's ``N``).
        levels: Encoder down-sampling stages.
        base_channels: Encoder stem channels.
        skip_ops: Skip fusion per decoder step from the bottleneck up (``concat``/``add``/``none``).
        merge_levels: Finest decoder levels working on the whole image (authors' ``initial_combine``).
        memory_type: In-painting memory: ``"matrix"`` (SimSID) or ``"queue"`` (SQUID's, for ablations).
        memory_slots: In-painting memory slots per patch position (``num_slots``).
        top_k: Gumbel shrinkage: memory weights kept per query (``shrink_thres``).
        decoder_memory: Decoder memory layout per decoder step from the bottleneck up
            (``none``; ``window``: 2 x 2 windows of each patch, the authors' ``V1``; ``position``: one bank
            per patch position, ``V3``).
        decoder_memory_slots: Slots per decoder-memory bank.
        mask_ratio: Masked-shortcut ratio of the in-painting block (1: off, the authors' ZhangLab setting).
        decoder_mask_ratio: Masked-shortcut ratio of the decoder memories.
        num_heads: Attention heads of the in-painting transformer.
        dropout: In-painting feed-forward dropout.
        neighbour_attention: In-paint each patch from its 8 neighbours' memory read-outs with the transformer
            layer (the authors' ``use_inpaint``: on for CheXpert and DigitAnatomy, off for ZhangLab, where each
            patch is replaced by its own memory read-out).
        distillation: Use the teacher decoder and the distillation losses.
        teacher_trains_encoder: Let the teacher's losses train the encoder too (ours; the authors detach its input).
        backbone: Optional timm backbone replacing the basic encoder.
        pretrained: Load pretrained backbone weights.
        activation: ``"tanh"`` (images in ``[-1, 1]``, the authors' chest X-ray setting) or ``"sigmoid"``.
        discriminator_channels: Channels of the discriminator stages.
        score_type: ``discriminator`` (paper), ``residual_image``, ``residual_feature``, ``residual`` (both
            residuals) or ``combined`` (all three).
        anomaly_map_type: ``image`` or ``feature`` residual map.
        map_sigma: Gaussian smoothing of the anomaly map, pixels.
        residual_pooling: Residual image scores: ``mean`` of the map or ``max`` of the smoothed map (ours).
        feature_residual: ``encoder`` (encoder features of input vs reconstruction), ``memory`` (each
            patch's distance to the nearest learned memory slot) or ``bank`` (each patch's distance to eval-mode
            features of recent training images, ours).
        discriminator_scoring: ``"running"`` (eval-mode batch norm) or ``"per_image"`` (each image's own
            batch-norm statistics: the authors' train-mode discriminator scoring one image at a time).
        feature_bank_images: Training images whose eval-mode features the bank holds (``feature_residual="bank"``).

    """

    def __init__(
        self,
        image_size: tuple[int, int] = (128, 128),
        in_channels: int = 1,
        grid: int = 2,
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
    ) -> None:
        generator = InpaintingGenerator(
            image_size=image_size,
            in_channels=in_channels,
            grid=grid,
            levels=levels,
            base_channels=base_channels,
            skip_ops=skip_ops,
            merge_levels=merge_levels,
            memory_type=memory_type,
            memory_slots=memory_slots,
            top_k=top_k,
            decoder_memory=decoder_memory,
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
        )
        discriminator = ImageDiscriminator(image_size, in_channels, discriminator_channels)
        super().__init__(
            generator,
            discriminator,
            in_channels,
            score_type,
            anomaly_map_type,
            map_sigma,
            residual_pooling,
            feature_residual,
            discriminator_scoring,
            feature_bank_images,
        )
