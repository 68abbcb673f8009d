"""anomalib's post-processor, keeping the raw scores and maps on the batch for the ranking metrics.

anomalib's :class:`~anomalib.post_processing.PostProcessor` replaces a batch's ``pred_score`` and ``anomaly_map``
by their normalised values, ``((x - threshold) / (max - min) + 0.5)`` clamped to [0, 1] with the minimum, maximum
and threshold of the validation split. The clamp turns every value beyond the validation range into a tie at 0 or
1, so ranking metrics (AUROC, average precision) computed after it depend on the validation set and can differ
from those of the model's own scores. :class:`RawMapPostProcessor` stores the values it received as
``raw_pred_score`` and ``raw_anomaly_map`` before normalising; the metrics of
:func:`anomalib_medical.metrics.raw_metrics` read them. Thresholding, normalisation, visualisation and export
are anomalib's, unchanged.
"""

from __future__ import annotations

from anomalib.data import Batch
from anomalib.post_processing import PostProcessor

__all__ = ["RAW_FIELDS", "RawMapPostProcessor"]

#: Batch fields whose raw values are kept, and the names they are kept under.
RAW_FIELDS = {"pred_score": "raw_pred_score", "anomaly_map": "raw_anomaly_map"}


class RawMapPostProcessor(PostProcessor):
    """anomalib's post-processor that keeps the raw ``pred_score`` / ``anomaly_map`` as ``raw_*`` batch fields.

    Accepts the arguments of :class:`~anomalib.post_processing.PostProcessor`. Use it with the metrics of
    :func:`anomalib_medical.metrics.raw_metrics` (any model: ``post_processor=RawMapPostProcessor()``).

    Example:
        >>> import torch
        >>> from anomalib.data import ImageBatch
        >>> post_processor = RawMapPostProcessor()
        >>> batch = ImageBatch(image=torch.zeros(1, 3, 2, 2), pred_score=torch.tensor([5.0]))
        >>> post_processor.post_process_batch(batch)
        >>> batch.raw_pred_score
        tensor([5.])

    """

    def post_process_batch(self, batch: Batch) -> None:
        """Keep the raw predictions, then normalise and threshold as anomalib does."""
        for field, raw in RAW_FIELDS.items():
            setattr(batch, raw, getattr(batch, field))
        super().post_process_batch(batch)
