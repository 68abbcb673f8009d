"""Synthetic tasks: shapes, confinement to the mask, determinism, the foreground rule, the registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import data, io

from anomalib_medical.models.synthetic_task_localiser.tasks import (
    TASK_NAMES,
    PoissonBlendingTask,
    SinkDeformationTask,
    SmoothIntensityChangeTask,
    SourceDeformationTask,
    SyntheticAnomalyGenerator,
    build_task,
    extract_source_patch,
    nonzero_foreground,
    num_folds,
    place_shape,
    sample_target_shape,
    task_split,
)
from anomalib_medical.models.synthetic_task_localiser.tasks.blending import load_source_image
from anomalib_medical.models.synthetic_task_localiser.tasks.shapes import size_bounds


def smooth_image(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """A smooth random image in [-1, 1] (a few low-frequency cosines)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    image = sum(np.cos(2 * np.pi * (rng.uniform(0.5, 3) * g + rng.random())) for g in grids for _ in range(2))
    return image / np.abs(image).max()


@pytest.fixture(scope="module")
def volume_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("volumes")
    for i in range(2):
        np.save(folder / f"volume_{i}.npy", smooth_image((12, 14, 16), seed=100 + i))
    return folder


def make_task(name: str, ndim: int, folder: Path, **options: float):
    source_images = folder if (name == "inter_dataset_blending" and ndim == 3) else None
    return build_task(name, source_images=source_images, push_distance=(1.0, 4.0), **options)


CASES = [(name, shape) for name in TASK_NAMES for shape in [(32, 36), (14, 16, 18)]]


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_task_output_shape_and_confinement(name: str, shape: tuple[int, ...], volume_folder: Path) -> None:
    task = make_task(name, len(shape), volume_folder)
    image = smooth_image(shape, seed=0)
    changed_anywhere = False
    for seed in range(4):
        output = task(image, np.random.default_rng(seed), others=[smooth_image(shape, seed=1)])
        assert output.image.shape == shape
        assert output.mask.shape == shape
        assert output.mask.dtype == bool
        assert output.mask.any()
        difference = np.abs(output.image - image)
        # Blending may alter pixels just outside the target mask; those changed by more than the tolerance
        # are part of the returned mask, so outside it the change is at most the tolerance.
        tolerance = task.change_tolerance if isinstance(task, PoissonBlendingTask) else 0.0
        assert difference[~output.mask].max(initial=0) <= tolerance
        assert output.image.min() >= image.min() - 1e-9
        assert output.image.max() <= image.max() + 1e-9
        changed_anywhere |= bool(difference.max() > 1e-3)
    assert changed_anywhere


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_task_is_deterministic_under_a_seed(name: str, shape: tuple[int, ...], volume_folder: Path) -> None:
    task = make_task(name, len(shape), volume_folder)
    image, other = smooth_image(shape, seed=2), smooth_image(shape, seed=3)
    first = task(image, np.random.default_rng(7), others=[other])
    second = task(image, np.random.default_rng(7), others=[other])
    third = task(image, np.random.default_rng(8), others=[other])
    np.testing.assert_array_equal(first.image, second.image)
    np.testing.assert_array_equal(first.mask, second.mask)
    assert not np.array_equal(first.mask, third.mask)


@pytest.mark.parametrize("name", ["sink_deformation", "source_deformation", "smooth_intensity_change"])
@pytest.mark.parametrize("shape", [(40, 40), (20, 20, 20)])
def test_each_anomaly_lies_at_least_half_on_the_foreground(name: str, shape: tuple[int, ...]) -> None:
    task = build_task(name, max_anomalies=1)
    image = smooth_image(shape, seed=4)
    foreground = np.zeros(shape, dtype=bool)
    foreground[: shape[0] // 3] = True
    placed = 0
    for seed in range(15):
        output = task(image, np.random.default_rng(seed), foreground=foreground)
        assert (output.mask & foreground).sum() >= 0.5 * output.mask.sum()
        placed += output.mask.any()
    assert placed >= 12


def test_placement_follows_the_overlap_rule_and_reports_impossible_cases() -> None:
    rng = np.random.default_rng(0)
    foreground = np.zeros((30, 30), dtype=bool)
    foreground[5:12, 3:25] = True
    corners = set()
    for _ in range(50):
        mask = sample_target_shape(rng, foreground.shape).mask
        corner = place_shape(rng, mask, foreground.shape, foreground, min_overlap=0.5)
        if corner is None:
            continue
        window = foreground[tuple(slice(c, c + n) for c, n in zip(corner, mask.shape, strict=True))]
        assert (window & mask).sum() >= 0.5 * mask.sum()
        corners.add(tuple(corner))
    assert len(corners) > 10
    assert place_shape(rng, np.ones((3, 3), dtype=bool), (30, 30), np.zeros((30, 30), dtype=bool)) is None


def test_task_without_valid_position_returns_the_image_unchanged() -> None:
    image = smooth_image((24, 24), seed=5)
    output = build_task("smooth_intensity_change")(
        image, np.random.default_rng(0), foreground=np.zeros_like(image, bool)
    )
    np.testing.assert_array_equal(output.image, image)
    assert not output.mask.any()


@pytest.mark.parametrize("shape", [(64, 48), (20, 24, 28)])
def test_target_shapes_respect_size_bounds_and_vary(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    _, upper = size_bounds(shape, 0.06, 0.8)
    kinds = set()
    for _ in range(40):
        target = sample_target_shape(rng, shape)
        assert target.mask.ndim == len(shape)
        assert np.all(np.asarray(target.mask.shape) <= upper)
        assert target.mask[tuple(np.round(target.centre).astype(int))]
        kinds.add(target.kind)
    assert kinds == {"ellipse", "rectangle"}


@pytest.mark.parametrize("kind", ["ellipse", "rectangle"])
def test_boundary_distance_reaches_the_edge(kind: str) -> None:
    rng = np.random.default_rng(1)
    for _ in range(10):
        target = sample_target_shape(rng, (60, 50, 40), kind=kind)
        points = np.argwhere(target.mask).T.astype(float)[:, :50]
        directions = rng.normal(size=points.shape)
        directions /= np.linalg.norm(directions, axis=0)
        distance = target.boundary_distance(points, directions)
        assert np.all(target.contains(points + directions * (distance - 1e-6)))
        assert not np.any(target.contains(points + directions * (distance + 1e-6)))


def test_deformation_mappings_keep_centre_and_edge_and_move_the_right_way() -> None:
    distance, edge = np.linspace(0, 10, 21), np.full(21, 10.0)
    for task in (SinkDeformationTask, SourceDeformationTask):
        exponent = task.exponent(2.0, 10.0)
        assert exponent > 1
        mapped = task.new_distance(distance, edge, exponent)
        np.testing.assert_allclose(mapped[[0, -1]], [0, 10], atol=1e-12)
        assert np.all(np.diff(mapped) > 0)
        # The exponent realises the requested push at the mid-diagonal point.
        start = 5 - 2 / np.sqrt(2) if task is SinkDeformationTask else 5 + 2 / np.sqrt(2)
        np.testing.assert_allclose(
            abs(task.new_distance(np.array([start]), edge[:1], exponent) - start), 2 * np.sqrt(2)
        )
    assert np.all(SinkDeformationTask.new_distance(distance, edge, 2.0) >= distance)  # samples outwards: pulls in
    assert np.all(SourceDeformationTask.new_distance(distance, edge, 2.0) <= distance)  # samples inwards: pushes out


def test_source_patch_has_the_requested_shape_and_the_source_range() -> None:
    rng = np.random.default_rng(0)
    source = smooth_image((50, 60), seed=6)
    patch = extract_source_patch(rng, source, (17, 23))
    assert patch.shape == (17, 23)
    assert source.min() <= patch.min() <= patch.max() <= source.max()


def test_inter_dataset_blending_defaults_to_bundled_photographs_and_rejects_empty_folders(tmp_path: Path) -> None:
    task = build_task("inter_dataset_blending")
    assert len(task.sources) >= 10
    with pytest.raises(FileNotFoundError, match="no source images found under"):
        _ = build_task("inter_dataset_blending", source_images=tmp_path).sources


def test_inter_dataset_blending_lists_a_folder_written_after_the_task_was_built(tmp_path: Path) -> None:
    folder = tmp_path / "foreign"  # absent when the task is built, as a datamodule's prepare_data writes it later
    task = build_task("inter_dataset_blending", source_images=folder)
    folder.mkdir()
    np.save(folder / "volume.npy", smooth_image((12, 12, 12), 1))
    assert task.sources == (str(folder / "volume.npy"),)
    assert task(smooth_image((12, 12, 12), 0), np.random.default_rng(0)).image.shape == (12, 12, 12)


def test_registry_and_cross_validation_folds() -> None:
    assert len(TASK_NAMES) == 5
    with pytest.raises(ValueError, match="unknown task"):
        build_task("cutout")
    for train_count in range(1, 5):
        splits = [task_split(train_count, fold) for fold in range(num_folds(train_count))]
        assert len({tuple(train) for train, _ in splits}) == num_folds(train_count)
        for train, validation in splits:
            assert len(train) == train_count
            assert sorted(train + validation) == sorted(TASK_NAMES)
    assert task_split(4, 0) == (list(TASK_NAMES[:4]), [TASK_NAMES[4]])
    with pytest.raises(ValueError, match="num_train_tasks"):
        task_split(5, 0)


def test_generator_corrupts_and_labels_a_batch_deterministically() -> None:
    generator = SyntheticAnomalyGenerator([build_task(name) for name in TASK_NAMES], sigma=0.2)
    images = torch.from_numpy(np.stack([smooth_image((32, 32), seed=s) for s in range(4)])[:, None]).float()
    corrupted, labels = generator(images, np.random.default_rng(0))
    again, labels_again = generator(images, np.random.default_rng(0))
    assert corrupted.shape == labels.shape == images.shape
    assert corrupted.dtype == labels.dtype == torch.float32
    torch.testing.assert_close(corrupted, again)
    torch.testing.assert_close(labels, labels_again)
    assert labels.min() >= 0
    assert labels.max() <= 1
    assert (labels.flatten(1).amax(1) > 0).all()
    assert not torch.equal(corrupted, images)


def test_external_photographs_are_equalised_into_task_space_whatever_their_range(tmp_path: Path) -> None:
    photograph = load_source_image("camera", (64, 64))
    assert photograph.foreground is None  # as the authors' ImageNet: the whole image
    assert -1 <= photograph.image.min() < -0.9 < 0.9 < photograph.image.max() <= 1
    # equalised: the intensities are spread uniformly over [-1, 1]
    np.testing.assert_allclose(np.quantile(photograph.image, [0.25, 0.5, 0.75]), [-0.5, 0, 0.5], atol=0.05)
    np.save(tmp_path / "camera.npy", 1000 + 50 * data.camera().astype(float))
    shifted = load_source_image(str(tmp_path / "camera.npy"), (64, 64))
    np.testing.assert_allclose(shifted.image, photograph.image, atol=1e-6)


def test_volume_sources_have_the_authors_foreground_and_are_z_scored_within_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    grid = np.meshgrid(*[np.linspace(-1, 1, 20)] * 3, indexing="ij")
    radius = np.sqrt(sum(g**2 for g in grid))
    volume = np.where(radius < 0.8, 5 + 2 * rng.random((20, 20, 20)), 0.0)
    volume[radius < 0.2] = 0  # a hole inside the object: still foreground
    np.save(tmp_path / "ball.npy", volume)
    source = load_source_image(str(tmp_path / "ball.npy"), (20, 20, 20), "zscore")
    np.testing.assert_array_equal(source.foreground, radius < 0.8)
    inside = source.image[source.foreground]
    np.testing.assert_allclose([inside.mean(), inside.std()], [0, 1], atol=1e-6)
    np.testing.assert_array_equal(source.image[~source.foreground], 0)
    with pytest.raises(ValueError, match="source_intensity"):
        build_task("inter_dataset_blending", source_images=tmp_path, source_intensity="minmax")


@pytest.mark.parametrize("shape", [(40, 50), (24, 26, 28)])
def test_source_patch_centre_lies_on_the_source_foreground(shape: tuple[int, ...]) -> None:
    # The source is 1 on a block and 0 elsewhere; its foreground is the block's core, far from the block's edge,
    # so the patch's centre (the region's centre, up to a pixel) reads 1 whenever the rule holds.
    source = np.zeros(shape)
    foreground = np.zeros(shape, dtype=bool)
    block = tuple(slice(n // 2 - 6, n // 2 + 6) for n in shape)
    core = tuple(slice(n // 2 - 2, n // 2 + 2) for n in shape)
    source[block], foreground[core] = 1.0, True
    patch_shape = (9,) * len(shape)
    centres = []
    for seed in range(12):
        patch = extract_source_patch(np.random.default_rng(seed), source, patch_shape, foreground)
        centres.append(patch[(4,) * len(shape)])
    assert min(centres) > 0.9
    anywhere = [
        extract_source_patch(np.random.default_rng(s), source, patch_shape)[(4,) * len(shape)] for s in range(12)
    ]
    assert min(anywhere) < 0.5  # without the rule the centre falls off the block


def test_three_d_targets_need_volumes_and_two_d_targets_images(tmp_path: Path) -> None:
    volume = smooth_image((12, 14, 16), seed=0)
    with pytest.raises(ValueError, match="needs source_images"):
        build_task("inter_dataset_blending")(volume, np.random.default_rng(0))
    photos = tmp_path / "photos"
    photos.mkdir()
    io.imsave(photos / "grey.png", data.camera()[:40, :40], check_contrast=False)
    with pytest.raises(ValueError, match=r"grey\.png has shape \(40, 40\): a 3-D target needs volumes"):
        build_task("inter_dataset_blending", source_images=photos)(volume, np.random.default_rng(0))
    volumes = tmp_path / "volumes"
    volumes.mkdir()
    np.save(volumes / "v.npy", volume)
    with pytest.raises(ValueError, match=r"v\.npy has shape \(12, 14, 16\): a 2-D target needs 2-D images"):
        build_task("inter_dataset_blending", source_images=volumes)(smooth_image((20, 20), 0), np.random.default_rng(0))


def test_nonzero_foreground_is_scipy_fill_holes_of_the_nonzero_voxels() -> None:
    rng = np.random.default_rng(0)
    for shape in [(30, 30), (16, 18, 20)]:
        image = ndimage.gaussian_filter(rng.normal(size=shape), 1.5) * (rng.random(shape) > 0.02)
        image[image < 0.05] = 0
        expected = ndimage.binary_fill_holes(image != 0)
        assert expected.sum() > (image != 0).sum()  # the case has holes to fill
        np.testing.assert_array_equal(nonzero_foreground(image), expected)


def test_generator_gives_the_tasks_the_foregrounds_of_target_and_sources() -> None:
    seen: list[tuple[np.ndarray | None, list[np.ndarray | None]]] = []

    class Spy(SmoothIntensityChangeTask):
        def __call__(self, image, rng, foreground=None, others=(), other_foregrounds=()):
            seen.append((foreground, list(other_foregrounds)))
            return super().__call__(image, rng, foreground, others, other_foregrounds)

    images = np.zeros((3, 1, 20, 20), dtype=np.float32)
    for i in range(3):
        images[i, 0, 2 + i : 15, 3:16] = 1.0
        images[i, 0, 8, 8] = 0.0  # a hole
    generator = SyntheticAnomalyGenerator([Spy()], foreground_rule="nonzero")
    generator(torch.from_numpy(images), np.random.default_rng(0))
    masks = [ndimage.binary_fill_holes(image[0] != 0) for image in images]
    for i, (foreground, others) in enumerate(seen):
        np.testing.assert_array_equal(foreground, masks[i])
        for got, expected in zip(others, masks[:i] + masks[i + 1 :], strict=True):
            np.testing.assert_array_equal(got, expected)
    threshold = SyntheticAnomalyGenerator([build_task("sink_deformation")], foreground_threshold=0.5)
    np.testing.assert_array_equal(threshold.foreground(images[0, 0]), images[0, 0] > 0.5)
    with pytest.raises(ValueError, match="foreground_rule"):
        SyntheticAnomalyGenerator([Spy()], foreground_rule="otsu")
