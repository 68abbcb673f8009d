"""Baugh et al.'s average precision metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from anomalib.data import ImageBatch

from anomalib_medical.metrics import AveragePrecision, ChunkedAveragePrecision

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
