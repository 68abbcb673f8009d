"""Baugh et al.'s average precision metrics and the raw-map metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from anomalib.data import ImageBatch
from anomalib.post_processing import PostProcessor

from anomalib_medical.metrics import AveragePrecision, ChunkedAveragePrecision, raw_metrics
from anomalib_medical.post_processing import RawMapPostProcessor

# three 1x2 "images": predictions and masks
MAPS = torch.tensor([[[0.9, 0.1]], [[0.8, 0.7]], [[0.2, 0.6]]])
MASKS = torch.tensor([[[1, 0]], [[0, 0]], [[0, 1]]], dtype=torch.bool)
# By hand: AP = mean over positives of the precision at their rank.
SINGLE_AP = [1.0, 0.0, 1.0]  # the middle image has no anomalous pixel: AP 0
PAIR_AP = {frozenset({0, 1}): 1.0, frozenset({0, 2}): 1.0, frozenset({1, 2}): 1 / 3}
WHOLE_AP = (1 / 1 + 2 / 4) / 2  # positives at ranks 1 (0.9) and 4 (0.6)


def batch() -> ImageBatch:
    return ImageBatch(image=torch.zeros(3, 3, 1, 2), anomaly_map=MAPS, gt_mask=MASKS)


def test_whole_set_average_precision():
    metric = AveragePrecision(fields=["anomaly_map", "gt_mask"], prefix="pixel_")
    metric.update(batch())
    assert metric.name == "pixel_AveragePrecision"
    assert metric.compute().item() == pytest.approx(WHOLE_AP)


@pytest.mark.parametrize("orderings", [1, 3])
def test_chunks_of_two_follow_the_seeded_orderings(orderings):
    metric = ChunkedAveragePrecision(
        fields=["anomaly_map", "gt_mask"], prefix="pixel_", chunk_size=2, orderings=orderings
    )
    for index in range(3):  # one image per update: chunks do not follow the batches
        metric.update(
            ImageBatch(
                image=torch.zeros(1, 3, 1, 2), anomaly_map=MAPS[index : index + 1], gt_mask=MASKS[index : index + 1]
            )
        )
    expected = []
    for seed in range(orderings):
        order = np.random.default_rng(seed=seed).permutation(3)
        expected.append((PAIR_AP[frozenset(order[:2].tolist())] + SINGLE_AP[order[2]]) / 2)
    assert metric.compute().item() == pytest.approx(np.mean(expected))


def test_chunk_size_limits():
    one = ChunkedAveragePrecision(fields=["anomaly_map", "gt_mask"], chunk_size=1, orderings=2)
    whole = ChunkedAveragePrecision(fields=["anomaly_map", "gt_mask"], chunk_size=20)
    for metric in (one, whole):
        metric.update(batch())
    assert one.compute().item() == pytest.approx(np.mean(SINGLE_AP))
    assert whole.compute().item() == pytest.approx(WHOLE_AP)  # one chunk of all three, whatever the order


def test_image_level_average_precision():
    metric = AveragePrecision(fields=["pred_score", "gt_label"], prefix="image_")
    metric.update(
        ImageBatch(
            image=torch.zeros(4, 3, 2, 2),
            pred_score=torch.tensor([0.1, 0.9, 0.4, 0.3]),
            gt_label=torch.tensor([0, 1, 0, 1]),
        )
    )
    assert metric.compute().item() == pytest.approx((1 / 1 + 2 / 3) / 2)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="chunk_size"):
        ChunkedAveragePrecision(fields=["anomaly_map", "gt_mask"], chunk_size=0)
    with pytest.raises(ValueError, match="orderings"):
        ChunkedAveragePrecision(fields=["anomaly_map", "gt_mask"], orderings=0)


def test_raw_metrics_are_not_changed_by_the_ties_of_anomalib_normalisation():
    """Values above the validation maximum are clamped into ties by the post-processor; raw_metrics ignore that."""
    post_processor = RawMapPostProcessor()
    for name, value in [("image_min", 0.0), ("image_max", 1.0), ("pixel_min", 0.0), ("pixel_max", 1.0)]:
        getattr(post_processor, name).fill_(value)
    post_processor._image_threshold.fill_(0.5)  # anomalib sets both at validation end
    post_processor._pixel_threshold.fill_(0.5)
    # normalised value = x clamped to [0, 1]: the 3.0 (anomalous) and 2.0 (normal) become a tie at 1
    batch = ImageBatch(
        image=torch.zeros(2, 3, 1, 2),
        pred_score=torch.tensor([3.0, 2.0]),
        gt_label=torch.tensor([1, 0]),
        anomaly_map=torch.tensor([[[2.0, 3.0]], [[0.4, 0.2]]]),
        gt_mask=torch.tensor([[[0, 1]], [[1, 0]]], dtype=torch.bool),
    )
    raw_map = batch.anomaly_map.clone()
    post_processor.post_process_batch(batch)
    torch.testing.assert_close(batch.raw_anomaly_map, raw_map)
    torch.testing.assert_close(batch.anomaly_map, raw_map.clamp(0, 1))
    metrics = {metric.name: metric for metric in raw_metrics()}
    for metric in metrics.values():
        metric.update(batch)
    # by hand, raw ranking 3.0+ 2.0- 0.4+ 0.2-: AP (1 + 2/3) / 2
    # tied ranking {1.0+, 1.0-} 0.4+ 0.2-: AP 1/2 * 1/2 + 1/2 * 2/3
    raw_ap, tied_ap = (1 + 2 / 3) / 2, 0.5 * 0.5 + 0.5 * 2 / 3
    assert metrics["pixel_AveragePrecision"].compute().item() == pytest.approx(raw_ap)
    assert metrics["pixel_ChunkedAveragePrecision"].compute().item() == pytest.approx(raw_ap)
    assert metrics["pixel_AUROC"].compute().item() == pytest.approx(0.75)  # pairs (+, -): 3>2, 3>.2, .4<2, .4>.2
    assert metrics["image_AUROC"].compute().item() == pytest.approx(1.0)  # 3.0+ over 2.0-, both tied at 1 after
    post_processed = AveragePrecision(fields=["anomaly_map", "gt_mask"])
    post_processed.update(batch)
    assert post_processed.compute().item() == pytest.approx(tied_ap)
    assert {"image_F1Score", "pixel_F1Score", "image_AUPR", "pixel_AUPR", "image_AveragePrecision"} <= set(metrics)


def test_raw_metrics_refuse_a_batch_post_processed_without_the_raw_maps():
    batch = ImageBatch(image=torch.zeros(3, 3, 1, 2), anomaly_map=MAPS, gt_mask=MASKS)
    PostProcessor().post_process_batch(batch)  # anomalib's: drops the raw values
    for metric in raw_metrics():
        if "raw_anomaly_map" in metric.fields:
            with pytest.raises(ValueError, match="RawMapPostProcessor"):
                metric.update(batch)
