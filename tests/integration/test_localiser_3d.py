"""The 3-D localiser through anomalib's engine: fit, held-out-task validation, voxel/slice test metrics, montages,
predict, OpenVINO export parity, and the stock ``anomalib train`` command on volumes."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.callbacks import ModelCheckpoint
from anomalib.deploy import ExportType, OpenVINOInferencer
from anomalib.engine import Engine
from sklearn.metrics import average_precision_score

from anomalib_medical.data.utils.volume import VolumeBatch
from anomalib_medical.data.volume_folder import VolumeFolder
from anomalib_medical.metrics import SliceAUROC
from anomalib_medical.models import SyntheticTaskLocaliser, SyntheticTaskLocaliserEnsemble
from anomalib_medical.models.synthetic_task_localiser.lightning_model import SYNTHETIC_PIXEL_AP
from tests.conftest import REPO_ROOT, assert_succeeded, console_script, parse_recipe, run_command
from tests.integration.test_localiser_export import FP32, ONNX_KWARGS, keep_maps_inside_the_clip
from tests.unit.fake_volumes import write_volume_tree
from tests.unit.test_brain_datasets import _brats_subject, _hcp_tree

pytestmark = pytest.mark.slow

TASKS = {
    "train_tasks": ["intra_dataset_blending", "sink_deformation", "source_deformation"],
    "validation_tasks": ["smooth_intensity_change"],
}
TINY = {"depth": 3, "base_channels": 4, "max_channels": 8, "push_distance": (0.5, 2.0), "foreground_rule": "nonzero"}


def _datamodule(root: Path) -> VolumeFolder:
    return VolumeFolder(
        name="toy_volumes",
        root=root,
        normal_dir="normal",
        abnormal_dir="abnormal",
        mask_dir="masks",
        normalisation="zscore",
        train_batch_size=4,
        eval_batch_size=4,
        seed=0,
    )


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[SyntheticTaskLocaliser, Engine, VolumeFolder, Path]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("localiser_3d")
    datamodule = _datamodule(write_volume_tree(root / "tree"))
    torch.manual_seed(0)
    model = SyntheticTaskLocaliser(**TINY, **TASKS, seed=0)  # spatial_dims left at 2: the data makes it 3-D
    checkpoint = ModelCheckpoint(monitor=SYNTHETIC_PIXEL_AP, mode="max")
    engine = Engine(
        max_epochs=2, logger=False, default_root_dir=root / "results", enable_progress_bar=False, callbacks=[checkpoint]
    )
    engine.fit(model, datamodule=datamodule)
    yield model, engine, datamodule, root
    torch.set_num_threads(previous)


def _raw_predictions(model: SyntheticTaskLocaliser, datamodule: VolumeFolder) -> tuple[np.ndarray, np.ndarray]:
    maps, masks = [], []
    model.eval()
    with torch.no_grad():
        for batch in datamodule.test_dataloader():
            maps.append(model.model(batch.image).anomaly_map.flatten().numpy())
            masks.append(batch.gt_mask.flatten().numpy())
    return np.concatenate(masks), np.concatenate(maps)


def test_volumes_make_the_model_3d_and_test_with_voxel_and_slice_metrics(fitted) -> None:
    model, engine, datamodule, root = fitted
    assert model.model.spatial_dims == 3 and model.hparams["spatial_dims"] == 3
    assert model.pre_processor.transform is None  # volumes are not resized
    assert SYNTHETIC_PIXEL_AP in engine.trainer.callback_metrics  # validated on the held-out task
    assert torch.isfinite(model.post_processor.image_threshold)
    metrics = engine.test(model, datamodule=datamodule, verbose=False)[0]
    expected = {"voxel_AUROC", "voxel_AveragePrecision", "voxel_ChunkedAveragePrecision", "voxel_F1Score"}
    assert expected | {"slice_AveragePrecision", "slice_AUROC", "image_AUROC"} <= set(metrics)
    labels, maps = _raw_predictions(model, datamodule)
    assert metrics["voxel_AveragePrecision"] == pytest.approx(average_precision_score(labels, maps), rel=1e-5)
    montages = sorted((root / "results").rglob("images/**/*.npy.png"))
    assert {path.name for path in montages} == {f"{Path(p).name}.png" for p in datamodule.test_data.samples.image_path}
    reloaded = SyntheticTaskLocaliser.load_from_checkpoint(engine.trainer.checkpoint_callback.best_model_path)
    assert reloaded.model.spatial_dims == 3


def test_predict_returns_volume_batches_with_masks(fitted) -> None:
    model, engine, datamodule, _ = fitted
    predictions = engine.predict(model, datamodule=datamodule)
    assert all(isinstance(batch, VolumeBatch) for batch in predictions)
    first = predictions[0]
    assert first.anomaly_map.shape == first.pred_mask.shape == first.gt_mask.shape
    assert first.pred_label.shape == (len(first),)


def test_ensemble_of_volume_checkpoints_tests_with_volume_metrics(fitted) -> None:
    model, engine, datamodule, _ = fitted
    best = engine.trainer.checkpoint_callback.best_model_path
    ensemble = SyntheticTaskLocaliserEnsemble.from_checkpoints([best, best], visualizer=False)
    assert ensemble.model.spatial_dims == 3
    ensemble_engine = Engine(logger=False, default_root_dir=Path(best).parent / "ensemble", enable_progress_bar=False)
    ensemble_engine.validate(ensemble, datamodule=datamodule)
    metrics = ensemble_engine.test(ensemble, datamodule=datamodule, verbose=False)[0]
    single = engine.test(model, datamodule=datamodule, verbose=False)[0]
    for name in ("voxel_AveragePrecision", "slice_AveragePrecision", "slice_AUROC"):  # two copies: the same maps
        assert metrics[name] == pytest.approx(single[name], rel=1e-5)


def test_inter_dataset_blending_on_volumes_needs_source_volumes(tmp_path: Path) -> None:
    datamodule = _datamodule(write_volume_tree(tmp_path / "tree", normal=4, abnormal=2))
    model = SyntheticTaskLocaliser(**TINY, train_tasks=["inter_dataset_blending"], validation_tasks=[])
    engine = Engine(max_epochs=1, logger=False, default_root_dir=tmp_path, enable_progress_bar=False)
    with pytest.raises(ValueError, match=r"inter_dataset_blending on volumes needs --model\.source_images"):
        engine.fit(model, datamodule=datamodule)


def test_engine_export_of_volumes_matches_torch_at_any_size(fitted, tmp_path: Path) -> None:
    """anomalib's ``Engine.export`` to OpenVINO: post-processor (validation thresholds) in the graph, D/H/W dynamic."""
    model, engine, datamodule, _ = fitted
    model = copy.deepcopy(model).eval()
    keep_maps_inside_the_clip(model)  # the [0, 1] clip of the raw map must not hide a difference
    path = engine.export(model, ExportType.OPENVINO, export_root=tmp_path, onnx_kwargs=ONNX_KWARGS)
    compiled = OpenVINOInferencer(path, config=FP32).model
    test_volumes = next(iter(datamodule.test_dataloader())).image
    for volumes in (test_volumes, torch.randn(2, 1, 12, 20, 16)):
        with torch.no_grad():
            expected = model(volumes)
        outputs = {output.any_name: value for output, value in compiled(volumes.numpy()).items()}
        assert outputs["anomaly_map"].shape == (len(volumes), 1, *volumes.shape[2:])
        np.testing.assert_allclose(outputs["anomaly_map"], expected.anomaly_map.numpy(), rtol=0, atol=1e-4)
        np.testing.assert_allclose(outputs["pred_score"], expected.pred_score.numpy(), rtol=0, atol=1e-4)
        assert np.array_equal(outputs["pred_mask"], expected.pred_mask.numpy())


def test_stock_anomalib_train_on_a_volume_folder(tmp_path: Path) -> None:
    root = write_volume_tree(tmp_path / "tree", normal=6, abnormal=2)
    command = [
        console_script("anomalib"),
        "train",
        "--model",
        "SyntheticTaskLocaliser",
        *[f"--model.{key}={value}" for key, value in {**TINY, "push_distance": "[0.5,2.0]"}.items()],
        f"--model.train_tasks=[{','.join(TASKS['train_tasks'])}]",
        f"--model.validation_tasks=[{','.join(TASKS['validation_tasks'])}]",
        "--model.visualizer=false",
        "--data",
        "VolumeFolder",
        "--data.name=toy",
        f"--data.root={root}",
        "--data.normal_dir=normal",
        "--data.abnormal_dir=abnormal",
        "--data.mask_dir=masks",
        "--data.normalisation=zscore",
        "--data.train_batch_size=4",
        "--data.eval_batch_size=4",
        "--trainer.max_epochs=1",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        f"--default_root_dir={tmp_path / 'results'}",
    ]
    process = run_command(command)
    assert_succeeded(process)
    for name in ("voxel_AveragePrecision", "voxel_ChunkedAveragePrecision", "voxel_AUROC", "slice_AveragePrecision"):
        assert name in process.stdout


def test_brain_mri_recipe_is_the_papers() -> None:
    cli = parse_recipe(REPO_ROOT / "configs" / "synthetic_task_localiser_brain_mri.yaml")
    model, datamodule = cli.model, cli.datamodule
    assert type(datamodule).__name__ == "BraTS" and type(datamodule.normal).__name__ == "HCP"
    assert model.model.spatial_dims == 3 and model.model.input_range == "task"
    assert model.hparams["depth"] == 5 and model.hparams["max_channels"] == 320
    assert model.model.encoding.num_channels == 3 + 64  # 3 coordinates + 32 frequencies as sin and cos
    assert model.learning_rate == 1e-3 and datamodule.train_batch_size == 8
    assert tuple(model.hparams["push_distance"]) == (0.5, 5.0) and model.hparams["foreground_rule"] == "nonzero"
    assert isinstance(model.evaluator.test_metrics[-1], SliceAUROC)  # the volume metrics


def test_brain_phantom_recipe_builds_a_volume_model() -> None:
    cli = parse_recipe(REPO_ROOT / "configs" / "synthetic_task_localiser_brain_phantom.yaml")
    assert type(cli.datamodule).__name__ == "BrainPhantom"
    assert cli.model.model.spatial_dims == 3
    assert "inter_dataset_blending" not in cli.model.hparams["train_tasks"]  # no source volumes offline


def test_stock_anomalib_train_on_brain_phantom(tmp_path: Path) -> None:
    """``anomalib train --model SyntheticTaskLocaliser --data BrainPhantom``: no spatial_dims, the data makes it 3-D.

    With inter-dataset blending from the non-brain volumes that the datamodule's ``prepare_data`` writes, after the
    model (and its tasks) were built.
    """
    foreign = tmp_path / "phantom" / "foreign"
    command = [
        console_script("anomalib"),
        "train",
        "--model",
        "SyntheticTaskLocaliser",
        *[f"--model.{key}={value}" for key, value in {**TINY, "push_distance": "[0.5,2.0]"}.items()],
        f"--model.train_tasks=[{','.join([*TASKS['train_tasks'], 'inter_dataset_blending'])}]",
        f"--model.validation_tasks=[{','.join(TASKS['validation_tasks'])}]",
        f"--model.source_images={foreign}",
        "--model.source_intensity=zscore",
        "--data",
        "BrainPhantom",
        f"--data.root={tmp_path / 'phantom'}",
        f"--data.foreign_dir={foreign}",
        "--data.foreign_count=2",
        "--data.shape=[20,28,20]",
        "--data.train_size=4",
        "--data.samples_per_type=1",
        "--data.train_batch_size=2",
        "--data.eval_batch_size=3",
        "--trainer.max_epochs=1",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        f"--default_root_dir={tmp_path / 'results'}",
    ]
    process = run_command(command)
    assert_succeeded(process)
    for name in ("voxel_AveragePrecision", "voxel_ChunkedAveragePrecision", "slice_AveragePrecision", "slice_AUROC"):
        assert name in process.stdout
    assert len(list((tmp_path / "results").rglob("images/**/*.npy.png"))) == 3  # a montage per test volume
    assert len(list(foreign.glob("*.npy"))) == 2


def test_stock_anomalib_train_on_a_brats_layout_tree(tmp_path: Path) -> None:
    """Train on HCP-layout normal volumes, test on BraTS-layout ones, with the stock command (the paper's pairing)."""
    _brats_subject(tmp_path / "brats" / "BraTS2021_00000", 0)
    _brats_subject(tmp_path / "brats" / "BraTS2021_00001", 1)
    _hcp_tree(tmp_path / "hcp", 3)
    box = "[48,56,48]"  # volumes of 24 x 28 x 24 instead of the paper's 80 x 112 x 80
    command = [
        console_script("anomalib"),
        "train",
        "--model",
        "SyntheticTaskLocaliser",
        *[f"--model.{key}={value}" for key, value in {**TINY, "push_distance": "[0.5,2.0]"}.items()],
        f"--model.train_tasks=[{','.join(TASKS['train_tasks'])}]",
        f"--model.validation_tasks=[{','.join(TASKS['validation_tasks'])}]",
        "--model.visualizer=false",
        "--data",
        "BraTS",
        f"--data.root={tmp_path / 'brats'}",
        f"--data.box_size={box}",
        "--data.train_batch_size=2",
        "--data.normal",
        "HCP",
        f"--data.normal.root={tmp_path / 'hcp'}",
        f"--data.normal.box_size={box}",
        "--trainer.max_epochs=1",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        f"--default_root_dir={tmp_path / 'results'}",
    ]
    process = run_command(command)
    assert_succeeded(process)
    for name in ("voxel_AveragePrecision", "voxel_ChunkedAveragePrecision", "voxel_AUROC", "slice_AveragePrecision"):
        assert name in process.stdout
