"""Müller et al.'s probabilistic PII: its labels, its up-scaled gradients, its mean over raters' blends."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from anomalib_medical.models.synthetic_task_localiser import SyntheticTaskLocaliser
from anomalib_medical.models.synthetic_task_localiser.labelling import probabilistic_labels
from anomalib_medical.models.synthetic_task_localiser.tasks import (
    IntraDatasetBlendingTask,
    PoissonBlendingTask,
    SyntheticAnomalyGenerator,
    TargetShape,
    blending,
    build_task,
)
from anomalib_medical.models.synthetic_task_localiser.tasks.poisson import blend_box, laplacian
from anomalib_medical.models.synthetic_task_localiser.tasks.shapes import jitter_shape


def smooth_patch(shape: tuple[int, ...]) -> np.ndarray:
    """A smooth patch with non-zero gradients everywhere (a tilted cosine)."""
    grids = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    return 0.05 * np.cos(3 * sum(grids)) + 0.02 * grids[0]


def flat_image(shape: tuple[int, ...]) -> np.ndarray:
    """Zero everywhere but two far corners (+-100) that widen the range, so that clipping never bites."""
    image = np.zeros(shape)
    image[0, 0], image[-1, -1] = -100.0, 100.0
    return image


class Spy:
    """Record the boxes and the raters' shapes of a P-PII task whose patch is :func:`smooth_patch`."""

    def __init__(self, task: PoissonBlendingTask, monkeypatch: pytest.MonkeyPatch) -> None:
        self.boxes: list[tuple[slice, ...]] = []
        self.raters: list[list[TargetShape]] = []
        anomalies = task.anomalies

        def spy_anomalies(*args: object) -> Iterator[tuple[TargetShape, tuple[slice, ...]]]:
            for shape, box in anomalies(*args):
                self.boxes.append(box)
                self.raters.append([])
                yield shape, box

        def spy_jitter(rng: np.random.Generator, shape: TargetShape) -> TargetShape:
            self.raters[-1].append(jitter_shape(rng, shape))
            return self.raters[-1][-1]

        monkeypatch.setattr(task, "anomalies", spy_anomalies)
        monkeypatch.setattr(task, "_patch", lambda image, shape, rng, sources: smooth_patch(shape.grid_shape))
        monkeypatch.setattr(blending, "jitter_shape", spy_jitter)


def ppii(scale: int, raters: int, **options: float) -> IntraDatasetBlendingTask:
    return IntraDatasetBlendingTask(
        probabilistic=True, gradient_scale=(scale, scale), raters=(raters, raters), min_size=0.2, **options
    )


def test_labels_are_bounded_monotone_in_the_change_and_zero_outside_the_mask() -> None:
    original = np.zeros((10, 10))
    changes = np.linspace(-0.3, 0.3, 100).reshape(10, 10)
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:8] = True
    labels = probabilistic_labels(original + changes, original, mask, scale=10.0)
    assert labels.min() >= 0
    assert labels.max() == 1
    np.testing.assert_array_equal(labels[~mask], 0)
    inside = np.abs(changes[mask])
    order = np.argsort(inside)
    assert np.all(np.diff(labels[mask][order]) >= 0)
    small = inside < 0.1
    np.testing.assert_allclose(labels[mask][small], 10 * inside[small])  # linear below saturation, not flat at 0
    np.testing.assert_array_equal(labels[mask][inside >= 0.1], 1)


def test_task_labels_its_output_with_the_probabilistic_rule_through_the_generator() -> None:
    rng = np.random.default_rng(0)
    images = [np.cos(np.linspace(0, 6, 40))[:, None] * np.sin(np.linspace(0, 4, 36))[None] for _ in range(2)]
    task = build_task("intra_dataset_blending", probabilistic_blending=True)
    assert task.probabilistic
    generator = SyntheticAnomalyGenerator([task])
    soft = 0
    for _ in range(4):
        sample = generator.corrupt(images[0], rng, others=[np.flip(images[1])])
        assert sample.mask.any()
        np.testing.assert_allclose(sample.label, np.minimum(10 * np.abs(sample.image - images[0]), 1) * sample.mask)
        assert images[0].min() - 1e-12 <= sample.image.min() <= sample.image.max() <= images[0].max() + 1e-12
        soft += int(np.any((sample.label > 0.05) & (sample.label < 0.95)))
    assert soft >= 2  # soft-edged anomalies, not only 0/1 labels


def test_blended_laplacian_is_the_up_scaled_source_laplacian_where_the_source_dominates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    task = ppii(scale=13, raters=1, max_anomalies=1)
    spy = Spy(task, monkeypatch)
    image = flat_image((48, 44))
    output = task(image, np.random.default_rng(3))
    (box,), ((rater,),) = spy.boxes, spy.raters
    patch = smooth_patch(rater.grid_shape)
    # On a flat target every mask edge takes the up-scaled source difference (mixed gradients), so the Poisson
    # equation inside the mask reads laplacian(result) = 13 * laplacian(source).
    inner = rater.mask[1:-1, 1:-1]
    assert inner.sum() > 20
    np.testing.assert_allclose(laplacian(output.image[box])[inner], 13 * laplacian(patch)[inner], atol=1e-9)
    # and the change is linear in the factor: 13 times the change of the unscaled blend
    unscaled = ppii(scale=1, raters=1, max_anomalies=1)
    Spy(unscaled, monkeypatch)
    np.testing.assert_allclose(output.image - image, 13 * (unscaled(image, np.random.default_rng(3)).image - image))


def test_corrupted_image_is_the_mean_of_the_raters_blends(monkeypatch: pytest.MonkeyPatch) -> None:
    task = ppii(scale=10, raters=3, max_anomalies=2, continue_probability=1.0)
    spy = Spy(task, monkeypatch)
    image = flat_image((40, 40)) + np.linspace(-0.5, 0.5, 40)[:, None] * 0.1
    output = task(image, np.random.default_rng(1))
    assert len(spy.boxes) == 2
    assert all(len(raters) == 3 for raters in spy.raters)
    expected = np.zeros_like(image)
    for box, raters in zip(spy.boxes, spy.raters, strict=True):
        assert len({r.centre.tobytes() for r in raters}) == 3  # each rater's mask is a different jitter
        for rater in raters:
            expected[box] += blend_box(image[box], 10 * smooth_patch(rater.grid_shape), rater.mask) - image[box]
            assert output.mask[box][rater.mask].all()
    np.testing.assert_allclose(output.image, np.clip(image + expected / 6, image.min(), image.max()), atol=1e-12)


def test_plain_blending_is_unchanged_by_the_p_pii_parameters() -> None:
    image = np.cos(np.linspace(0, 5, 32))[:, None] * np.ones(30)
    other = np.sin(np.linspace(0, 7, 32))[:, None] * np.linspace(-1, 1, 30)
    plain = IntraDatasetBlendingTask()(image, np.random.default_rng(0), others=[other])
    options = IntraDatasetBlendingTask(gradient_scale=(2, 3), raters=(2, 2), label_scale=3.0)
    np.testing.assert_array_equal(options(image, np.random.default_rng(0), others=[other]).image, plain.image)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"gradient_scale": (0, 5)}, "gradient_scale"),
        ({"raters": (3, 2)}, "raters"),
        ({"label_scale": 0.0}, "label_scale"),
    ],
)
def test_bad_p_pii_parameters_are_refused(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IntraDatasetBlendingTask(probabilistic=True, **options)


def test_localiser_passes_the_options_to_its_tasks_and_generators() -> None:
    model = SyntheticTaskLocaliser(
        train_tasks=["intra_dataset_blending", "inter_dataset_blending", "sink_deformation"],
        validation_tasks=["intra_dataset_blending"],
        probabilistic_blending=True,
        source_intensity="zscore",
        foreground_rule="nonzero",
        depth=2,
        base_channels=4,
        max_channels=8,
    )
    blenders = [task for task in model.train_generator.tasks if isinstance(task, PoissonBlendingTask)]
    assert len(blenders) == 2
    assert all(task.probabilistic for task in blenders)
    assert model.validation_generator.tasks[0].probabilistic
    assert blenders[1].source_intensity == "zscore"
    assert model.train_generator.foreground_rule == model.validation_generator.foreground_rule == "nonzero"
    with pytest.raises(ValueError, match="foreground_rule"):
        SyntheticTaskLocaliser(foreground_rule="otsu", depth=2, base_channels=4, max_channels=8)
    with pytest.raises(ValueError, match="source_intensity"):
        SyntheticTaskLocaliser(source_intensity="minmax", depth=2, base_channels=4, max_channels=8)
