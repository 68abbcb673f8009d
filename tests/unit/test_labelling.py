"""The flipped-Gaussian labelling function and the per-region post-processing."""

from __future__ import annotations

import numpy as np

from anomalib_medical.models.synthetic_task_localiser.labelling import flipped_gaussian, label_anomalies


def test_flipped_gaussian_is_zero_for_no_change_monotone_bounded_and_symmetric() -> None:
    changes = np.linspace(0, 1, 201)
    labels = flipped_gaussian(changes, sigma=0.2)
    assert labels[0] == 0
    assert np.all(np.diff(labels) > 0)
    assert np.all(np.diff(flipped_gaussian(np.linspace(0, 5, 501), 0.2)) >= 0)
    assert np.all(labels < 1)
    np.testing.assert_allclose(flipped_gaussian(-changes, 0.2), labels)
    np.testing.assert_allclose(flipped_gaussian(0.2, 0.2), 1 - np.exp(-0.5))


def test_flipped_gaussian_is_continuous_and_flat_at_zero() -> None:
    small = np.array([1e-1, 1e-2, 1e-3, 1e-4])
    labels = flipped_gaussian(small, sigma=0.2)
    # 1 - exp(-x^2 / 2s^2) <= x^2 / 2s^2: the label vanishes quadratically (no jump, zero slope at 0).
    assert np.all(labels <= small**2 / (2 * 0.2**2) + 1e-15)
    assert np.all(np.diff(labels / small) < 0)
    # A larger sigma gives a smaller label for the same change.
    assert flipped_gaussian(0.1, sigma=0.4) < flipped_gaussian(0.1, sigma=0.2)


def test_labels_are_zero_without_change_and_outside_the_anomaly() -> None:
    image = np.random.default_rng(0).random((20, 20))
    mask = np.zeros((20, 20), dtype=bool)
    mask[5:10, 6:12] = True
    np.testing.assert_array_equal(label_anomalies(image, image, mask), 0)
    corrupted = image.copy()
    corrupted[5:10, 6:12] += 0.5
    corrupted[0, 0] += 1.0  # a change outside the mask is not an anomaly
    labels = label_anomalies(corrupted, image, mask, sigma=0.2)
    np.testing.assert_allclose(labels[5:10, 6:12], flipped_gaussian(0.5, 0.2))
    outside = np.ones_like(mask)
    outside[5:10, 6:12] = False
    np.testing.assert_array_equal(labels[outside], 0)


def test_unchanged_pixels_enclosed_by_a_changed_region_take_its_label() -> None:
    image = np.zeros((21, 21))
    yy, xx = np.mgrid[:21, :21]
    radius = np.hypot(yy - 10, xx - 10)
    mask = radius <= 8
    corrupted = image + 0.3 * ((radius >= 5) & mask)  # a ring of change around an unchanged core
    labels = label_anomalies(corrupted, image, mask, sigma=0.2)
    ring_label = flipped_gaussian(0.3, 0.2)
    np.testing.assert_allclose(labels[10, 10], ring_label)
    np.testing.assert_allclose(labels[radius < 5], ring_label)
    assert labels[0, 0] == 0


def test_each_region_is_post_processed_separately() -> None:
    image = np.zeros((30, 30))
    mask = np.zeros((30, 30), dtype=bool)
    mask[2:9, 2:9] = True
    mask[15:25, 15:25] = True
    corrupted = image.copy()
    corrupted[2:9, 2:9] = 0.1
    corrupted[15:25, 15:25] = 0.6
    corrupted[19:21, 19:21] = 0.0  # a hole inside the second region
    labels = label_anomalies(corrupted, image, mask)
    np.testing.assert_allclose(labels[5, 5], flipped_gaussian(0.1, 0.2))
    np.testing.assert_allclose(labels[20, 20], flipped_gaussian(0.6, 0.2))
