"""PyTorch model of SQUID (Xiang et al., CVPR 2023).

Xiang et al., "SQUID: Deep Feature In-Painting for Unsupervised Anomaly Detection", CVPR 2023.

The image is cut into a grid of patches, each patch is encoded, the bottleneck features are
in-painted from a space-aware memory *queue* of detached training features and decoded by the
*student* generator (with hierarchical decoder memories); a *teacher* generator decodes the plain
encoder features and both are coupled by feature distillation (Sec. 3.4). A discriminator judges the
student's reconstructions (Sec. 3.5). The generator, the discriminator and the standardised score
components are shared with SimSID (:mod:`anomalib_medical.models.components`).

In eval mode :class:`SquidModel` returns ``InferenceBatch(pred_score, anomaly_map)``; nothing is written
to any buffer in ``forward``. Queue updates and score statistics are written only by the Lightning
module's ``training_step``.
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
from anomalib_medical.models.components.generator import InpaintingGenerator
from anomalib_medical.models.components.memory import DecoderMemoryMode


class SquidModel(InpaintingDetector):
    """SQUID generator (memory queue), discriminator and anomaly scoring.

    Defaults are the authors' ZhangLab (chest X-ray) settings (``configs/zhang_best.py``).

    Args:
        image_size: ``(H, W)`` of the model input.
        in_channels: Channels the network sees. With ``1``, 3-channel inputs are averaged to grey
            inside ``forward`` (so exported graphs take anomalib's 3-channel images).
        grid: Patches per side (the paper's ``N``).
        levels: Encoder down-sampling stages.
        base_channels: Encoder stem channels.
        skip_ops: Skip fusion per decoder step from the bottleneck up (``concat``/``add``/``none``).
        merge_levels: Finest decoder levels working on the whole image (authors' ``initial_combine``).
        memory_slots: Memory-queue length per patch position (``num_slots``).
        top_k: Gumbel shrinkage parameter (``shrink_thres``).
        decoder_memory: Decoder memory layout per decoder step from the bottleneck up.
        decoder_memory_slots: Slots per decoder-memory bank (``mem_num_slots``).
        mask_ratio: Masked-shortcut ratio (in-painting block and decoder memories).
        num_heads: Attention heads of the in-painting transformer.
        dropout: In-painting feed-forward dropout.
        distillation: Use the teacher decoder.
        teacher_trains_encoder: Let the teacher's losses train the encoder too (ours; the authors detach its input).
        backbone: Optional timm backbone replacing the basic encoder.
        pretrained: Pretrained backbone weights.
        discriminator_channels: Channels of the discriminator stages.
        score_type: Image score: ``discriminator`` (paper), ``residual_image``, ``residual_feature``,
            ``residual`` (both residuals) or ``combined`` (all three; see :meth:`InpaintingDetector.raw_scores`).
        anomaly_map_type: ``"image"``: smoothed squared residual of the reconstruction; ``"feature"``:
            the feature residual of ``feature_residual``.
        map_sigma: Gaussian smoothing of the squared image residual in pixels (``0`` disables it).
        residual_pooling: Image score of a pixel residual map: ``"max"`` of the smoothed map (ours, the
            default: DigitAnatomy's anomalies are single cells) or the ``"mean"`` reconstruction error.
        feature_residual: ``"memory"`` (each patch's distance to the memory queue, the default),
            ``"encoder"`` (encoder features of input vs reconstruction) or ``"bank"`` (each patch's distance to
            eval-mode features of recent training images, ours).
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
        discriminator_channels: Sequence[int] = (16, 32, 64, 128, 128),
        score_type: ScoreType = "discriminator",
        anomaly_map_type: AnomalyMapType = "image",
        map_sigma: float = 2.0,
        residual_pooling: ResidualPooling = "max",
        feature_residual: FeatureResidual = "memory",
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
            memory_type="queue",
            memory_slots=memory_slots,
            top_k=top_k,
            decoder_memory=decoder_memory,
            decoder_memory_slots=decoder_memory_slots,
            mask_ratio=mask_ratio,
            decoder_mask_ratio=mask_ratio,
            num_heads=num_heads,
            dropout=dropout,
            neighbour_attention=True,
            distillation=distillation,
            backbone=backbone,
            pretrained=pretrained,
            activation="sigmoid",
            teacher_trains_encoder=teacher_trains_encoder,
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
