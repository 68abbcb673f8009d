"""Average precision as Baugh et al. report it, as anomalib metrics any model's evaluator can use.

Baugh et al. (MICCAI 2023, Sec. 4 and Tables 1-2) report pixel-wise average precision computed in chunks of 20
images: the test set is shuffled (orderings seeded 0..9), cut into consecutive chunks of 20 images, the AP of
all pixels of each chunk is computed, and the mean over chunks is averaged over the 10 orderings; they also report
the AP over the whole set. AP is scikit-learn's step-wise ``average_precision_score``, not the trapezoidal area
under the precision-recall curve of anomalib's ``AUPR``, so the numbers differ slightly even over the whole set.

- :class:`AveragePrecision`: AP over every value of the whole set (pixels with ``fields=["anomaly_map",
  "gt_mask"]``, images with ``fields=["pred_score", "gt_label"]``).
- :class:`ChunkedAveragePrecision`: the paper's chunked pixel AP (``chunk_size=20``, ``orderings=10``).

Both keep every prediction until ``compute`` (as anomalib's curve metrics do); a chunk without an anomalous pixel
has an AP of 0 (scikit-learn's value), as in the authors' evaluation.

Raw scores. anomalib's post-processor normalises and clamps scores and maps before the evaluator sees them, which
makes every value beyond the validation range a tie (see :mod:`anomalib_medical.post_processing`). The paper's
metrics are computed on the model's own outputs: :func:`raw_metrics` reads the ``raw_pred_score`` and
``raw_anomaly_map`` fields that :class:`~anomalib_medical.post_processing.RawMapPostProcessor` keeps on the batch,
for any model. The metrics of this module (including :class:`AUROC` and :class:`AUPR`, anomalib's with this check)
raise instead of silently skipping a batch that has ``anomaly_map`` but not ``raw_anomaly_map``.

Volumes (3-D, :class:`~anomalib_medical.data.utils.volume.VolumeBatch`): the same metrics apply voxel-wise
(chunks of 20 *volumes*); :func:`volume_metrics` names them ``voxel_*`` and adds the authors' slice-wise scores
(:class:`SliceAveragePrecision`, :class:`SliceAUROC`): every slice along the first spatial axis ``D`` of every
volume is one sample, abnormal when more than ``5 / 128**2`` of its voxels are (Zimmerer et al.'s proportional
rule, as in the authors' ``eval_metrics.py``), scored by the mean of its map (their table's choice).

Reconstruction quality (what the SimSID report tracks besides detection): :class:`ReconstructionMSE`,
:class:`ReconstructionPSNR` and :class:`ReconstructionSSIM` compare the ``reconstruction`` (or
``teacher_reconstruction``) that Squid and SimSID put on test batches with the input ``image``, both in ``[0, 1]``
(:func:`reconstruction_metrics`).
"""

from __future__ import annotations

import itertools
import warnings
from typing import Literal

import numpy as np
import torch
from anomalib.data import Batch
from anomalib.metrics import AUPR as _AnomalibAUPR
from anomalib.metrics import AUROC as _AnomalibAUROC
from anomalib.metrics import AnomalibMetric, F1Score
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import average_precision_score, roc_auc_score
from torchmetrics import MeanSquaredError, Metric
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure
from torchmetrics.utilities.data import dim_zero_cat

from anomalib_medical.post_processing import RAW_FIELDS

__all__ = [
    "AUPR",
    "AUROC",
    "AveragePrecision",
    "ChunkedAveragePrecision",
    "ReconstructionMSE",
    "ReconstructionPSNR",
    "ReconstructionSSIM",
    "SliceAUROC",
    "SliceAveragePrecision",
    "raw_metrics",
    "reconstruction_metrics",
    "slice_labels_and_scores",
    "volume_metrics",
]

#: Fraction of a slice's voxels above which the slice is abnormal (Zimmerer et al.; Baugh et al.'s evaluation).
SLICE_ANOMALY_FRACTION = 5 / 128**2

SliceAggregation = Literal["mean", "percentile_75", "mean_top_25"]


class _RawFieldCheck:
    """Raise when a ``raw_*`` field is missing but its post-processed field is there (the post-processor's)."""

    fields: list[str]

    def update(self, batch: Batch, *args: object, **kwargs: object) -> None:
        """Check the raw fields, then update as anomalib does (skip or raise on other missing fields)."""
        for field, raw in RAW_FIELDS.items():
            if raw in self.fields and getattr(batch, raw, None) is None and getattr(batch, field, None) is not None:
                msg = (
                    f"{type(self).__name__} reads {raw!r}, but the batch only has the post-processed {field!r}: "
                    "use anomalib_medical.post_processing.RawMapPostProcessor as the model's post_processor"
                )
                raise ValueError(msg)
        super().update(batch, *args, **kwargs)  # type: ignore[misc]


class _PerSampleAveragePrecision(Metric):
    """Keep each sample's predictions and labels, flattened; compute the AP over chunks of samples."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, chunk_size: int | None = None, orderings: int = 1, **kwargs: object) -> None:
        super().__init__(**kwargs)
        if chunk_size is not None and chunk_size < 1:
            msg = f"chunk_size must be a positive integer or None (whole set), got {chunk_size}."
            raise ValueError(msg)
        if orderings < 1:
            msg = f"orderings must be a positive integer, got {orderings}."
            raise ValueError(msg)
        self.chunk_size = chunk_size
        self.orderings = orderings
        self.add_state("predictions", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")
        self.add_state("sizes", default=[], dist_reduce_fx="cat")

    def update(self, predictions: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch: one prediction and one label per sample (a score, or a map of any shape)."""
        batch = predictions.shape[0]
        self.predictions.append(predictions.detach().reshape(batch, -1).flatten().float())
        self.labels.append((labels.reshape(batch, -1) > 0).flatten().int())
        self.sizes.append(torch.full((batch,), predictions[0].numel(), device=predictions.device))

    def compute(self) -> torch.Tensor:
        """AP of the whole set, or the mean over orderings of the mean AP over chunks of ``chunk_size`` samples."""
        predictions = dim_zero_cat(self.predictions).cpu().numpy()
        labels = dim_zero_cat(self.labels).cpu().numpy()
        sizes = dim_zero_cat(self.sizes).cpu().numpy()
        if self.chunk_size is None:
            return torch.tensor(_average_precision(labels, predictions))
        starts = np.concatenate([[0], np.cumsum(sizes)])
        samples = [slice(int(start), int(end)) for start, end in itertools.pairwise(starts)]
        means = []
        for seed in range(self.orderings):
            order = np.random.default_rng(seed=seed).permutation(len(samples))
            chunk_aps = []
            for first in range(0, len(order), self.chunk_size):
                chosen = [samples[index] for index in order[first : first + self.chunk_size]]
                chunk_aps.append(
                    _average_precision(
                        np.concatenate([labels[part] for part in chosen]),
                        np.concatenate([predictions[part] for part in chosen]),
                    )
                )
            means.append(np.mean(chunk_aps))
        return torch.tensor(float(np.mean(means)))


def _average_precision(labels: np.ndarray, predictions: np.ndarray) -> float:
    """scikit-learn's AP; 0 without a positive label (scikit-learn's value, its warning silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.filterwarnings("ignore", message="No positive class found", category=UserWarning)
        return float(average_precision_score(labels, predictions))


class AveragePrecision(_RawFieldCheck, AnomalibMetric, _PerSampleAveragePrecision):  # type: ignore[misc]
    """Average precision over the whole set (scikit-learn's step-wise AP; see the module docstring).

    Args:
        fields: Batch fields ``[prediction, label]``, e.g. ``["anomaly_map", "gt_mask"]``.
        prefix: Prefix of the metric's name (``"pixel_"`` gives ``pixel_AveragePrecision``).
        strict: Raise when a batch lacks a field (``False`` skips it, e.g. masks of a classification set).

    """

    def __init__(self, fields: list[str] | None = None, prefix: str = "", strict: bool = True) -> None:
        super().__init__(fields=fields, prefix=prefix, strict=strict)


class ChunkedAveragePrecision(_RawFieldCheck, AnomalibMetric, _PerSampleAveragePrecision):  # type: ignore[misc]
    """Baugh et al.'s pixel AP: mean AP over chunks of ``chunk_size`` samples, averaged over seeded orderings.

    Args:
        fields: Batch fields ``[prediction, label]``, e.g. ``["anomaly_map", "gt_mask"]``.
        prefix: Prefix of the metric's name (``"pixel_"`` gives ``pixel_ChunkedAveragePrecision``).
        strict: Raise when a batch lacks a field (``False`` skips it).
        chunk_size: Samples per chunk (the paper: 20); the last chunk holds the rest.
        orderings: Shuffles of the samples, seeded ``0 .. orderings - 1`` (the paper: 10).

    """

    def __init__(
        self,
        fields: list[str] | None = None,
        prefix: str = "",
        strict: bool = True,
        chunk_size: int = 20,
        orderings: int = 10,
    ) -> None:
        super().__init__(fields=fields, prefix=prefix, strict=strict, chunk_size=chunk_size, orderings=orderings)


class AUROC(_RawFieldCheck, _AnomalibAUROC):  # type: ignore[misc]
    """anomalib's ``AUROC``, raising on a missing raw field (see the module docstring)."""


class AUPR(_RawFieldCheck, _AnomalibAUPR):  # type: ignore[misc]
    """anomalib's ``AUPR`` (trapezoidal area under the precision-recall curve), raising on a missing raw field."""


def slice_labels_and_scores(
    anomaly_maps: torch.Tensor, masks: torch.Tensor, aggregation: SliceAggregation = "mean"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-slice labels and scores of volumes ``(N, D, H, W)``: one per slice along ``D`` (the authors' rule).

    A slice is abnormal when the fraction of its abnormal voxels exceeds :data:`SLICE_ANOMALY_FRACTION`; its
    score aggregates its map: ``"mean"`` (the paper's table), ``"percentile_75"`` or ``"mean_top_25"`` (the
    mean of its top 25 % voxels), the authors' three options.

    Raises:
        ValueError: If the inputs are not volumes ``(N, D, H, W)`` of one shape, or the aggregation is unknown.

    """
    if anomaly_maps.ndim != 4 or anomaly_maps.shape != masks.shape:
        msg = (
            "slice-wise metrics need volume maps and masks (N, D, H, W) of one shape, got "
            f"{tuple(anomaly_maps.shape)} and {tuple(masks.shape)}"
        )
        raise ValueError(msg)
    slices = anomaly_maps.detach().float().flatten(2).flatten(0, 1)
    labels = (masks.flatten(2).flatten(0, 1).float().mean(dim=1) > SLICE_ANOMALY_FRACTION).int()
    if aggregation == "mean":
        scores = slices.mean(dim=1)
    elif aggregation == "percentile_75":
        scores = torch.quantile(slices, 0.75, dim=1)
    elif aggregation == "mean_top_25":
        scores = slices.topk(max(int(slices.shape[1] * 0.25), 1), dim=1).values.mean(dim=1)
    else:
        msg = f"aggregation must be 'mean', 'percentile_75' or 'mean_top_25', got {aggregation!r}"
        raise ValueError(msg)
    return labels, scores


class _SliceScores(Metric):
    """Keep per-slice labels and scores of volume batches; compute a scikit-learn score over all slices."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, aggregation: SliceAggregation = "mean", **kwargs: object) -> None:
        super().__init__(**kwargs)
        slice_labels_and_scores(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), aggregation)  # checks the name
        self.aggregation = aggregation
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")

    def update(self, anomaly_maps: torch.Tensor, masks: torch.Tensor) -> None:
        """Add the slices of a batch of volume maps and masks ``(N, D, H, W)``."""
        labels, scores = slice_labels_and_scores(anomaly_maps, masks, self.aggregation)
        self.labels.append(labels)
        self.scores.append(scores)

    def _score(self, labels: np.ndarray, scores: np.ndarray) -> float:
        raise NotImplementedError

    def compute(self) -> torch.Tensor:
        """Compute the score over every slice seen."""
        labels = dim_zero_cat(self.labels).cpu().numpy()
        return torch.tensor(self._score(labels, dim_zero_cat(self.scores).cpu().numpy()))


class SliceAveragePrecision(_RawFieldCheck, AnomalibMetric, _SliceScores):  # type: ignore[misc]
    """Slice-wise average precision of volumes (the authors' slice rule; see the module docstring).

    Named ``<prefix>AveragePrecision`` (``slice_AveragePrecision`` in :func:`volume_metrics`).

    Args:
        fields: Batch fields ``[map, mask]`` (``["raw_anomaly_map", "gt_mask"]`` in :func:`volume_metrics`).
        prefix: Prefix of the metric's name.
        strict: Raise when a batch lacks a field (``False`` skips it).
        aggregation: Slice score from its map (see :func:`slice_labels_and_scores`).

    """

    def __init__(
        self,
        fields: list[str] | None = None,
        prefix: str = "",
        strict: bool = True,
        aggregation: SliceAggregation = "mean",
    ) -> None:
        super().__init__(fields=fields, prefix=prefix, strict=strict, aggregation=aggregation)
        self.name = f"{prefix}AveragePrecision"  # slice_AveragePrecision

    def _score(self, labels: np.ndarray, scores: np.ndarray) -> float:
        return _average_precision(labels, scores)


class SliceAUROC(_RawFieldCheck, AnomalibMetric, _SliceScores):  # type: ignore[misc]
    """Slice-wise area under the ROC curve of volumes (scikit-learn's; NaN when the slices have one class).

    Named ``<prefix>AUROC`` (``slice_AUROC`` in :func:`volume_metrics`).

    Arguments as :class:`SliceAveragePrecision`.
    """

    def __init__(
        self,
        fields: list[str] | None = None,
        prefix: str = "",
        strict: bool = True,
        aggregation: SliceAggregation = "mean",
    ) -> None:
        super().__init__(fields=fields, prefix=prefix, strict=strict, aggregation=aggregation)
        self.name = f"{prefix}AUROC"  # slice_AUROC

    def _score(self, labels: np.ndarray, scores: np.ndarray) -> float:
        if len(np.unique(labels)) < 2:
            return float("nan")
        return float(roc_auc_score(labels, scores))


def volume_metrics() -> list[AnomalibMetric]:
    """Test metrics of volumes: :func:`raw_metrics` per volume and per voxel (``voxel_*``), and slice-wise AP/AUROC.

    Names: ``image_AUROC`` ... (one score per volume), ``voxel_AUROC``, ``voxel_AUPR``, ``voxel_AveragePrecision``
    (whole set), ``voxel_ChunkedAveragePrecision`` (chunks of 20 volumes, 10 orderings: the paper's Table 1),
    ``voxel_F1Score``, ``slice_AveragePrecision`` and ``slice_AUROC``.

    Example:
        >>> from anomalib.metrics import Evaluator
        >>> evaluator = Evaluator(test_metrics=volume_metrics())  # the 3-D localiser's default

    """
    pixel = ["raw_anomaly_map", "gt_mask"]
    return [
        *raw_metrics(pixel_prefix="voxel_"),
        SliceAveragePrecision(fields=pixel, prefix="slice_", strict=False),
        SliceAUROC(fields=pixel, prefix="slice_", strict=False),
    ]


def raw_metrics(pixel_prefix: str = "pixel_") -> list[AnomalibMetric]:
    """Test metrics on the raw scores and maps: image and pixel AUROC, AUPR and AP, the chunked pixel AP, and F1.

    The ranking metrics read ``raw_pred_score`` / ``raw_anomaly_map`` (the model needs
    :class:`~anomalib_medical.post_processing.RawMapPostProcessor`); the F1 scores read the thresholded
    ``pred_label`` / ``pred_mask``. Names are anomalib's (``image_AUROC``, ``pixel_AUPR`` ...) and this module's
    (``image_AveragePrecision``, ``pixel_AveragePrecision``, ``pixel_ChunkedAveragePrecision``). Pixel metrics
    skip batches without masks.

    Example:
        >>> from anomalib.metrics import Evaluator
        >>> evaluator = Evaluator(test_metrics=raw_metrics())  # e.g. Squid(evaluator=..., post_processor=...)

    """
    image, pixel = ["raw_pred_score", "gt_label"], ["raw_anomaly_map", "gt_mask"]
    return [
        AUROC(fields=image, prefix="image_"),
        AUPR(fields=image, prefix="image_"),
        AveragePrecision(fields=image, prefix="image_"),
        F1Score(fields=["pred_label", "gt_label"], prefix="image_"),
        AUROC(fields=pixel, prefix=pixel_prefix, strict=False),
        AUPR(fields=pixel, prefix=pixel_prefix, strict=False),
        AveragePrecision(fields=pixel, prefix=pixel_prefix, strict=False),
        ChunkedAveragePrecision(fields=pixel, prefix=pixel_prefix, strict=False),
        F1Score(fields=["pred_mask", "gt_mask"], prefix=pixel_prefix, strict=False),
    ]


class _AgainstGreyInput:
    """Update with ``(reconstruction, image)``, the image averaged to grey for a one-channel reconstruction.

    Squid and SimSID see grey images (``in_channels=1``) while anomalib's batches hold 3-channel ones.
    """

    def update(self, reconstruction: torch.Tensor, image: torch.Tensor) -> None:
        """Compare ``reconstruction`` ``(B, C, H, W)`` with ``image`` ``(B, C', H, W)``, both in ``[0, 1]``."""
        if reconstruction.shape[1] == 1 and image.shape[1] != 1:
            image = image.mean(dim=1, keepdim=True)
        if reconstruction.shape != image.shape:
            msg = (
                f"{type(self).__name__}: reconstruction of shape {tuple(reconstruction.shape)} does not match the "
                f"image of shape {tuple(image.shape)}."
            )
            raise ValueError(msg)
        super().update(reconstruction.float(), image.float())  # type: ignore[misc]


class ReconstructionMSE(AnomalibMetric, _AgainstGreyInput, MeanSquaredError):  # type: ignore[misc]
    """Mean squared error of the reconstruction against the input over all pixels of the test set.

    Args:
        fields: Batch fields ``[reconstruction, image]`` (default ``["reconstruction", "image"]``; the teacher's:
            ``["teacher_reconstruction", "image"]``).
        prefix: Prefix of the metric's name (``"teacher_"`` gives ``teacher_ReconstructionMSE``).
        strict: Raise when a batch lacks a field (``False`` skips it).

    """

    default_fields = ("reconstruction", "image")


class ReconstructionPSNR(AnomalibMetric, _AgainstGreyInput, PeakSignalNoiseRatio):  # type: ignore[misc]
    """Mean over images of the peak signal-to-noise ratio ``10 log10(1 / MSE)`` in dB (data range 1).

    Arguments as :class:`ReconstructionMSE`.
    """

    default_fields = ("reconstruction", "image")

    def __init__(self, fields: list[str] | None = None, prefix: str = "", strict: bool = True) -> None:
        super().__init__(fields=fields, prefix=prefix, strict=strict, data_range=1.0, dim=(1, 2, 3))


class ReconstructionSSIM(AnomalibMetric, _AgainstGreyInput, StructuralSimilarityIndexMeasure):  # type: ignore[misc]
    """Mean structural similarity (Wang et al. 2004, torchmetrics' 11-pixel Gaussian window, data range 1).

    Arguments as :class:`ReconstructionMSE`.
    """

    default_fields = ("reconstruction", "image")

    def __init__(self, fields: list[str] | None = None, prefix: str = "", strict: bool = True) -> None:
        super().__init__(fields=fields, prefix=prefix, strict=strict, data_range=1.0)


def reconstruction_metrics(teacher: bool = False) -> list[AnomalibMetric]:
    """MSE, PSNR and SSIM of the student reconstruction against the input (and of the teacher's with ``teacher``).

    Squid and SimSID put the reconstructions on test batches when a test metric reads them. The teacher's are
    named ``teacher_ReconstructionMSE`` ...; a model without distillation has none (they are skipped).

    Example:
        >>> from anomalib.metrics import Evaluator
        >>> evaluator = Evaluator(test_metrics=reconstruction_metrics())  # e.g. Squid(evaluator=evaluator)

    """
    metrics: list[AnomalibMetric] = [ReconstructionMSE(), ReconstructionPSNR(), ReconstructionSSIM()]
    if teacher:
        fields = ["teacher_reconstruction", "image"]
        metrics += [
            metric(fields=fields, prefix="teacher_", strict=False)
            for metric in (ReconstructionMSE, ReconstructionPSNR, ReconstructionSSIM)
        ]
    return metrics
