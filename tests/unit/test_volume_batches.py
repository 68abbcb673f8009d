"""Volumes through anomalib's data path: item/batch types, VolumeDataset, VolumeFolder, voxel and slice metrics."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from lightning.pytorch.trainer.states import TrainerFn
from sklearn.metrics import average_precision_score, roc_auc_score

from anomalib_medical.data.utils.images import make_samples_dataframe
from anomalib_medical.data.utils.volume import VolumeBatch, VolumeDataset, VolumeItem, zscore_in_foreground
from anomalib_medical.data.volume_folder import VolumeFolder, match_masks
from anomalib_medical.metrics import (
    SLICE_ANOMALY_FRACTION,
    ChunkedAveragePrecision,
    SliceAUROC,
    SliceAveragePrecision,
    slice_labels_and_scores,
    volume_metrics,
)
from anomalib_medical.models.synthetic_task_localiser.cross_validation import hold_out_data_fold
from anomalib_medical.models.synthetic_task_localiser.torch_model import SyntheticTaskLocaliserModel
from anomalib_medical.visualization import montage_slices, volume_montage
from tests.unit.fake_volumes import brain_like, write_volume_tree

TINY_NET = {"depth": 2, "base_channels": 2, "max_channels": 4, "positional_encoding": False}


def test_item_and_batch_take_volume_shapes() -> None:
    item = VolumeItem(
        image=torch.rand(1, 4, 5, 6), gt_mask=torch.ones(1, 4, 5, 6), anomaly_map=torch.rand(4, 5, 6), gt_label=1
    )
    assert item.image.shape == (1, 4, 5, 6) and item.image.dtype == torch.float32
    assert item.gt_mask.shape == (4, 5, 6) and item.gt_mask.dtype == torch.bool
    assert item.anomaly_map.shape == (4, 5, 6)
    batch = VolumeBatch(image=torch.rand(1, 4, 5, 6), gt_mask=torch.zeros(1, 1, 4, 5, 6))
    assert batch.image.shape == (1, 1, 4, 5, 6)  # a single volume gets a batch axis
    assert batch.gt_mask.shape == (1, 4, 5, 6)
    batch.update(anomaly_map=torch.rand(1, 1, 4, 5, 6), pred_score=torch.tensor([0.3]))
    (only,) = list(batch)
    assert isinstance(only, VolumeItem) and only.anomaly_map.shape == (4, 5, 6)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: VolumeItem(image=torch.rand(3, 8, 8)), r"Image of a volume must have shape \(C, D, H, W\)"),
        (lambda: VolumeItem(image=torch.rand(1, 2, 2, 2), gt_mask=torch.ones(2, 2, 2, 2)), "1 channel"),
        (lambda: VolumeBatch(image=torch.rand(2, 8, 8)), r"Image of a volume must have shape \(N, C, D, H, W\)"),
        (lambda: VolumeBatch(image=torch.rand(2, 1, 2, 2, 2), gt_mask=torch.ones(2, 2, 2)), r"\(N, D, H, W\)"),
    ],
)
def test_validators_name_the_expected_layout(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_collate_refuses_volumes_of_different_shapes() -> None:
    items = [
        VolumeItem(image=torch.rand(1, 4, 4, 4), image_path="a.npy"),
        VolumeItem(image=torch.rand(1, 4, 4, 5), image_path="b.npy"),
    ]
    with pytest.raises(ValueError, match=r"a\.npy has \(1, 4, 4, 4\), b\.npy has \(1, 4, 4, 5\)"):
        VolumeBatch.collate(items)
    batch = VolumeBatch.collate(items[:1] * 3)
    assert batch.image.shape == (3, 1, 4, 4, 4) and batch.image_path == ["a.npy"] * 3


def test_zscore_in_foreground_is_the_authors_rule() -> None:
    volume = brain_like(np.random.default_rng(0))
    volume[8, 8, 8] = 0  # a hole inside the brain belongs to the foreground (binary_fill_holes)
    scored = zscore_in_foreground(volume)
    foreground = scored != 0
    foreground[8, 8, 8] = True
    assert np.all(scored[volume == 0][~foreground[volume == 0]] == 0)  # background stays 0
    inside = scored[foreground]
    assert abs(inside.mean()) < 1e-5 and abs(inside.std() - 1) < 1e-4
    with pytest.raises(ValueError, match="without non-zero voxels"):
        zscore_in_foreground(np.zeros((3, 3, 3), dtype=np.float32))


def _samples(tmp_path: Path, mask_shape: tuple[int, int, int] = (4, 5, 6)) -> tuple:
    rng = np.random.default_rng(1)
    normal, abnormal, mask = tmp_path / "n.npy", tmp_path / "a.nii.gz", tmp_path / "a_mask.nii.gz"
    np.save(normal, rng.random((4, 5, 6), dtype=np.float32) + 1)
    # NIfTI voxel axes (i, j, k) are read reversed as (D, H, W)
    nib.save(nib.Nifti1Image(rng.random((6, 5, 4)).astype(np.float32) + 1, np.eye(4)), abnormal)
    labels = np.zeros(mask_shape[::-1], dtype=np.uint8)
    labels[1:3, 1:3, 1] = 1
    nib.save(nib.Nifti1Image(labels, np.eye(4)), mask)
    return make_samples_dataframe([normal, abnormal], [0, 1], "test", mask_paths=["", mask]), labels


def test_dataset_reads_volumes_masks_and_labels(tmp_path: Path) -> None:
    samples, labels = _samples(tmp_path)
    dataset = VolumeDataset("toy", samples)
    abnormal, normal = dataset[0], dataset[1]  # anomalib sorts the table by path: a.nii.gz, n.npy
    assert normal.image.shape == abnormal.image.shape == (1, 4, 5, 6)
    assert not normal.gt_mask.any() and normal.gt_label.item() is False
    assert abnormal.gt_label.item() is True
    assert torch.equal(abnormal.gt_mask, torch.from_numpy(labels.transpose(2, 1, 0) != 0))
    batch = dataset.collate_fn([normal, abnormal])
    assert isinstance(batch, VolumeBatch) and batch.gt_mask.shape == (2, 4, 5, 6)
    scored = VolumeDataset("toy", samples, normalisation="zscore")[1].image
    assert abs(float(scored.mean())) < 1e-5 and abs(float(scored.std(unbiased=False)) - 1) < 1e-4


def test_dataset_errors_name_the_files(tmp_path: Path) -> None:
    samples, _ = _samples(tmp_path, mask_shape=(4, 5, 5))
    with pytest.raises(ValueError, match=r"a_mask\.nii\.gz has shape \(4, 5, 5\) but its volume .*a\.nii\.gz"):
        VolumeDataset("toy", samples)[0]
    samples.loc[1, "mask_path"] = str(tmp_path / "absent.npy")
    with pytest.raises(FileNotFoundError, match=r"Abnormal volume .*a\.nii\.gz has no mask file"):
        VolumeDataset("toy", samples)[0]
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['mask_path'\]"):
        VolumeDataset("toy", samples.drop(columns="mask_path"))
    with pytest.raises(ValueError, match="normalisation must be"):
        VolumeDataset("toy", samples, normalisation="minmax")


def test_volume_folder_splits_like_anomalibs_folder(tmp_path: Path) -> None:
    root = write_volume_tree(tmp_path / "tree", normal=10, abnormal=6)
    datamodule = VolumeFolder(
        name="toy", root=root, normal_dir="normal", abnormal_dir="abnormal", mask_dir="masks", seed=0
    )
    datamodule.setup()
    sizes = {split: len(getattr(datamodule, f"{split}_data")) for split in ("train", "val", "test")}
    assert sizes == {"train": 8, "val": 4, "test": 4}  # 20 % of the normals to test, half of test to validation
    for split in ("val", "test"):
        labels = set(getattr(datamodule, f"{split}_data").samples.label_index)
        assert labels == {0, 1}  # thresholds and synthetic validation need both
    batch = next(iter(datamodule.val_dataloader()))
    assert isinstance(batch, VolumeBatch) and batch.image.shape[1:] == (1, 16, 16, 16)
    abnormal = datamodule.test_data.samples.query("label_index == 1").iloc[0]
    assert Path(abnormal.mask_path).name == Path(abnormal.image_path).name.replace(".npy", "_mask.npy")


def test_masks_matched_by_name(tmp_path: Path) -> None:
    volumes = [tmp_path / "case1.nii.gz", tmp_path / "case10.nii.gz", tmp_path / "case2.npy"]
    masks = [tmp_path / "case10_seg.nii.gz", tmp_path / "case1_seg.nii.gz", tmp_path / "case2.npy"]
    assert match_masks(volumes, masks) == [masks[1], masks[0], masks[2]]
    with pytest.raises(ValueError, match=r"case3\.npy needs exactly one mask named case3\[_-\.\]\*; found none"):
        match_masks([tmp_path / "case3.npy"], masks)
    twice = [tmp_path / "case1_seg.npy", tmp_path / "case1-mask.npy"]
    with pytest.raises(ValueError, match=r"found case1_seg\.npy, case1-mask\.npy"):
        match_masks([tmp_path / "case1.npy"], twice)


def test_volume_folder_refuses_an_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "normal").mkdir()
    (tmp_path / "normal" / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"holds no volume .*it holds notes\.txt"):
        VolumeFolder(name="toy", root=tmp_path, normal_dir="normal").samples()


def test_slice_rule_is_the_authors() -> None:
    masks = torch.zeros(1, 3, 128, 128, dtype=torch.bool)
    masks[0, 1, :1, :5] = True  # 5 voxels: not more than 5 / 128^2
    masks[0, 2, :1, :6] = True  # 6 voxels: abnormal
    maps = torch.rand(1, 3, 128, 128)
    labels, scores = slice_labels_and_scores(maps, masks)
    assert labels.tolist() == [0, 0, 1]
    assert 6 / 128**2 > SLICE_ANOMALY_FRACTION >= 5 / 128**2
    torch.testing.assert_close(scores, maps[0].flatten(1).mean(1))
    _, top = slice_labels_and_scores(maps, masks, "mean_top_25")
    expected = maps[0].flatten(1).sort(dim=1, descending=True).values[:, : 128 * 128 // 4].mean(1)
    torch.testing.assert_close(top, expected)
    _, quartile = slice_labels_and_scores(maps, masks, "percentile_75")
    torch.testing.assert_close(quartile, torch.from_numpy(np.percentile(maps[0].flatten(1).numpy(), 75, axis=1)))
    with pytest.raises(ValueError, match=r"need volume maps and masks \(N, D, H, W\)"):
        slice_labels_and_scores(maps[0], masks[0])
    with pytest.raises(ValueError, match="aggregation must be"):
        SliceAveragePrecision(fields=["anomaly_map", "gt_mask"], aggregation="max")


def test_slice_and_voxel_metrics_equal_scikit_learn_on_volumes() -> None:
    rng = np.random.default_rng(3)
    masks = torch.from_numpy(rng.random((5, 6, 8, 8)) < 0.1)
    masks[:, ::2] = False  # half of the slices normal
    maps = torch.from_numpy(rng.random((5, 6, 8, 8)).astype(np.float32)) + 0.5 * masks
    fields = ["anomaly_map", "gt_mask"]
    slice_ap, slice_auroc = SliceAveragePrecision(fields=fields), SliceAUROC(fields=fields)
    chunked = ChunkedAveragePrecision(fields=fields, chunk_size=2, orderings=1)
    for part in (slice(0, 3), slice(3, 5)):  # two batches
        batch = VolumeBatch(image=torch.zeros(part.stop - part.start, 1, 6, 8, 8), gt_mask=masks[part])
        batch.anomaly_map = maps[part]
        for metric in (slice_ap, slice_auroc, chunked):
            metric.update(batch)
    slice_labels = (masks.flatten(2).float().mean(2) > SLICE_ANOMALY_FRACTION).flatten().numpy()
    slice_scores = maps.flatten(2).mean(2).flatten().numpy()
    assert 0 < slice_labels.mean() < 1
    assert slice_ap.compute().item() == pytest.approx(average_precision_score(slice_labels, slice_scores))
    assert slice_auroc.compute().item() == pytest.approx(roc_auc_score(slice_labels, slice_scores))
    order = np.random.default_rng(0).permutation(5)  # the authors' ordering 0, chunks of 2 volumes
    chunks = [order[i : i + 2] for i in range(0, 5, 2)]
    expected = np.mean([average_precision_score(masks[c].flatten(), maps[c].flatten()) for c in chunks])
    assert chunked.compute().item() == pytest.approx(expected)
    assert slice_ap.name == "AveragePrecision"


def test_volume_metrics_names() -> None:
    names = [metric.name for metric in volume_metrics()]
    assert {"image_AUROC", "voxel_AUROC", "voxel_AveragePrecision", "voxel_ChunkedAveragePrecision"} <= set(names)
    assert {"slice_AveragePrecision", "slice_AUROC"} <= set(names)
    assert not [name for name in names if name.startswith("pixel_")]


def test_montage_shows_slices_through_the_mask() -> None:
    volume = torch.from_numpy(brain_like(np.random.default_rng(0)))
    mask = torch.zeros(16, 16, 16, dtype=torch.bool)
    mask[5:9, 4:8, 4:8] = True
    item = VolumeItem(image=volume[None], gt_mask=mask, anomaly_map=mask.float() * 0.8, pred_mask=mask)
    assert montage_slices(item, 4) == [5, 6, 7, 8]  # the mask's extent
    assert montage_slices(item, 2) == [5, 8]
    assert montage_slices(item, 9) == [5, 6, 7, 8]
    normal = VolumeItem(image=volume[None], gt_mask=torch.zeros_like(mask))
    occupied = [d for d in range(16) if volume[d].abs().sum() > 0]
    spread = montage_slices(normal, 4)
    assert len(spread) == 4 and spread[0] == occupied[0] > 0 and spread[-1] == occupied[-1] < 15  # the ball's extent
    options = {"fields": ["image", "gt_mask"], "overlay_fields": [("image", ["anomaly_map"])]}
    options |= {"field_size": (32, 32), "fields_config": {}, "overlay_fields_config": {}, "text_config": {}}
    picture = volume_montage(item, 3, options)
    assert picture.size == (3 * 32, 3 * 32)  # three panels per row, one row per slice
    pixels = np.asarray(picture)
    assert pixels[:32].std() > 0 and pixels[64:].std() > 0


def test_volume_model_takes_task_space_inputs() -> None:
    volumes = torch.randn(2, 1, 8, 8, 8)
    model = SyntheticTaskLocaliserModel(**TINY_NET, spatial_dims=3)
    assert model.input_range == "task"
    torch.testing.assert_close(model.to_task_space(volumes), volumes)  # z-scored volumes kept as they are
    unit = SyntheticTaskLocaliserModel(**TINY_NET, spatial_dims=3, input_range="unit")
    torch.testing.assert_close(unit.to_task_space(volumes.sigmoid()), volumes.sigmoid() * 2 - 1)
    assert SyntheticTaskLocaliserModel(**TINY_NET).input_range == "unit"
    with pytest.raises(ValueError, match="input_range must be"):
        SyntheticTaskLocaliserModel(**TINY_NET, input_range="zscore")


def test_cross_validation_holds_training_volumes_out(tmp_path: Path) -> None:
    root = write_volume_tree(tmp_path / "tree", normal=10, abnormal=6)
    datamodule = VolumeFolder(
        name="toy", root=root, normal_dir="normal", abnormal_dir="abnormal", mask_dir="masks", seed=0
    )
    datamodule.setup(TrainerFn.FITTING)  # as the trainer does: the fold's setup keeps these splits
    training = set(datamodule.train_data.samples.image_path)
    assert hold_out_data_fold(datamodule, [0])  # a 4/1 fold: one of five parts of the 8 training volumes
    kept, validation = set(datamodule.train_data.samples.image_path), datamodule.val_data.samples
    moved = training - kept
    assert len(moved) == 2 and moved <= set(validation.image_path) and len(validation) == 4 + 2
    assert isinstance(datamodule.val_data, VolumeDataset)
    assert set(validation[validation.image_path.isin(moved)].label_index) == {0}
