"""Tests of BrainPhantom: the MNI152 template, T2-like contrast, deformations, lesions with masks, the datamodule."""

from pathlib import Path

import numpy as np
import pytest
import torch

from anomalib_medical.data.brain_phantom import (
    MANIFEST,
    PHANTOM_TYPES,
    BrainPhantom,
    BrainPhantomGenerator,
    load_brain_template,
    smooth_noise,
)
from anomalib_medical.data.utils.volume import VolumeBatch

SHAPE = (20, 28, 20)  # 8 mm voxels: small and fast


@pytest.fixture(scope="module")
def generator() -> BrainPhantomGenerator:
    return BrainPhantomGenerator(load_brain_template(SHAPE))


@pytest.fixture(scope="module")
def still() -> BrainPhantomGenerator:
    """A generator without deformation, bias or noise: subjects are the template."""
    template = load_brain_template(SHAPE)
    return BrainPhantomGenerator(
        template, max_rotation_deg=0, max_scale=0, max_shift_mm=0, elastic_mm=0, bias=0, noise=(0, 0)
    )


def test_template_is_boxed_padded_and_resampled() -> None:
    template = load_brain_template(SHAPE)
    assert template.shape == SHAPE
    assert template.voxel_mm == 8.0
    total = template.tissues.sum(0)
    assert total.max() <= 1.0 + 1e-5
    assert template.tissues.min() >= 0.0
    brain = total >= 0.5
    assert 0.2 < brain.mean() < 0.8
    assert not brain[:, 0].any() and not brain[:, -1].any()  # box (181 mm) padded centred to 224 mm
    with pytest.raises(ValueError, match="aspect"):
        load_brain_template((20, 20, 20))


def test_t2_contrast_fluid_brighter_than_grey_brighter_than_white(still: BrainPhantomGenerator) -> None:
    volume, mask = still.generate("normal", np.random.default_rng(0))
    fluid, grey, white = still.template.tissues
    means = [volume[(tissue > 0.7) & (volume != 0)].mean() for tissue in (fluid, grey, white)]
    assert means[0] > means[1] > means[2]
    assert not mask.any()


def test_normal_subject_is_z_scored_in_the_brain_with_zero_background(generator: BrainPhantomGenerator) -> None:
    volume, mask = generator.generate("normal", np.random.default_rng(1))
    assert volume.dtype == np.float32
    assert volume.shape == SHAPE
    brain = volume != 0
    assert volume[brain].mean() == pytest.approx(0.0, abs=1e-4)
    assert volume[brain].std() == pytest.approx(1.0, abs=1e-3)
    assert not brain[0].any()
    assert mask.dtype == np.bool_
    assert not mask.any()


def test_subjects_are_seeded_and_deformed(generator: BrainPhantomGenerator) -> None:
    first, _ = generator.generate("normal", np.random.default_rng(5))
    again, _ = generator.generate("normal", np.random.default_rng(5))
    other, _ = generator.generate("normal", np.random.default_rng(6))
    np.testing.assert_array_equal(first, again)
    assert ((first != 0) != (other != 0)).mean() > 0.01  # the brain outline moves with the deformation


@pytest.mark.parametrize("kind", ["tumour", "stroke"])
def test_lesions_have_masks_inside_the_brain_and_are_bright(generator: BrainPhantomGenerator, kind: str) -> None:
    for seed in range(3):
        volume, mask = generator.generate(kind, np.random.default_rng(seed))
        assert mask.sum() * generator.template.voxel_mm**3 >= generator.min_lesion_ml * 1000
        assert (volume[mask] != 0).all()  # inside the brain
        assert volume[mask].mean() > volume[(volume != 0) & ~mask].mean()  # T2-bright lesion


def test_tumour_pushes_tissue_outwards(still: BrainPhantomGenerator) -> None:
    rng = np.random.default_rng(3)
    coords = still._subject_map(rng)
    displaced, lesions = still._tumour(rng, coords)
    core = lesions["core"] > 0.5
    centre = np.array([c[core].mean() for c in coords])
    shift = displaced - coords
    offset = coords - centre[:, None, None, None]
    ring = (lesions["rim"] + lesions["oedema"]) > 0.5
    inward = (shift * offset).sum(0)[ring]  # reads from nearer the centre: negative
    assert (inward < 0).mean() > 0.9
    assert np.abs(shift).max() > 0.5  # voxels


def test_stroke_reaches_the_cortex(still: BrainPhantomGenerator) -> None:
    volume, mask = still.generate("stroke", np.random.default_rng(2))
    depth = still._depth[mask]
    assert depth.min() < 16.0  # mm from the brain's edge: cortical
    assert volume[mask].mean() > volume[(volume != 0) & ~mask].mean()


def test_unknown_kind_and_smooth_noise(generator: BrainPhantomGenerator) -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        generator.generate("haemorrhage", np.random.default_rng(0))
    field = smooth_noise(SHAPE, 3, np.random.default_rng(0), channels=2)
    assert field.shape == (2, *SHAPE)
    assert field.std(axis=(1, 2, 3)) == pytest.approx([1.0, 1.0], abs=1e-3)
    assert np.abs(np.diff(field, axis=1)).mean() < 0.3  # smooth: neighbours close


def test_datamodule_generates_once_and_serves_volume_batches(tmp_path: Path) -> None:
    datamodule = BrainPhantom(root=tmp_path, shape=SHAPE, train_size=2, samples_per_type=1, eval_batch_size=3)
    datamodule.prepare_data()
    manifest = datamodule.dataset_dir / MANIFEST
    stamp = manifest.stat().st_mtime_ns
    datamodule.setup()
    assert manifest.stat().st_mtime_ns == stamp  # cached, not generated again
    assert [len(datamodule.train_data), len(datamodule.val_data), len(datamodule.test_data)] == [2, 3, 3]
    test = datamodule.test_data.samples
    assert sorted(test.anomaly_type) == sorted(PHANTOM_TYPES)
    assert (test.label_index == (test.anomaly_type != "normal")).all()
    batch = next(iter(datamodule.test_dataloader()))
    assert isinstance(batch, VolumeBatch)
    assert batch.image.shape == (3, 1, *SHAPE)
    assert batch.gt_mask.shape == (3, *SHAPE)
    assert torch.equal(batch.gt_mask.flatten(1).any(1), batch.gt_label.bool())
    train = np.stack([np.load(path) for path in datamodule.train_data.samples.image_path])
    val = np.stack([np.load(path) for path in datamodule.val_data.samples.image_path])
    assert not any(np.array_equal(t, v) for t in train for v in val)  # splits are different subjects
    Path(test.image_path[0]).unlink()
    with pytest.raises(FileNotFoundError, match=r"delete .* to regenerate"):
        datamodule.setup()


def test_training_flip_and_argument_checks(tmp_path: Path) -> None:
    volume, mask = torch.arange(8.0).reshape(1, 2, 2, 2), torch.zeros(2, 2, 2, dtype=torch.bool)
    mask[0, 0, 0] = True
    flip = BrainPhantom(root=tmp_path, shape=SHAPE).train_augmentations
    torch.manual_seed(0)
    outputs = [flip(volume, mask) for _ in range(20)]
    flipped = [torch.equal(v, volume.flip(-1)) and torch.equal(m, mask.flip(-1)) for v, m in outputs]
    kept = [torch.equal(v, volume) and torch.equal(m, mask) for v, m in outputs]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 0 < sum(flipped) < 20
    assert BrainPhantom(root=tmp_path, flip_left_right=False).train_augmentations is None
    with pytest.raises(ValueError, match="aspect"):
        BrainPhantom(root=tmp_path, shape=(16, 16, 16))
    with pytest.raises(ValueError, match="positive sizes"):
        BrainPhantom(root=tmp_path, train_size=0)


def test_foreign_volumes_for_inter_dataset_blending(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    datamodule = BrainPhantom(
        root=tmp_path, shape=SHAPE, train_size=1, samples_per_type=1, foreign_dir=foreign, foreign_count=3
    )
    datamodule.prepare_data()
    volumes = [np.load(path) for path in sorted(foreign.glob("*.npy"))]
    assert len(volumes) == 3
    for volume in volumes:
        assert volume.shape == SHAPE and volume.dtype == np.float32
        body = volume != 0
        assert 0.1 < body.mean() < 0.9 and not body[0].any()
        assert volume[body].mean() == pytest.approx(0.0, abs=1e-4)
    assert not np.array_equal(volumes[0], volumes[1])
    stamp = foreign.stat().st_mtime_ns
    datamodule.prepare_data()
    assert foreign.stat().st_mtime_ns == stamp  # written once
    other = BrainPhantom(root=tmp_path, shape=(40, 56, 40), train_size=1, samples_per_type=1, foreign_dir=foreign)
    with pytest.raises(
        ValueError, match=r"holds 3 volumes of shapes \[\(20, 28, 20\)\], expected 20 of \(40, 56, 40\)"
    ):
        other.prepare_data()
