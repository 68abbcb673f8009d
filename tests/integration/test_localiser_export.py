"""Synthetic-task localiser ensemble: one AnomalibModule, tested and exported to OpenVINO with parity."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.deploy import ExportType, OpenVINOInferencer
from anomalib.engine import Engine

from anomalib_medical.data import DigitAnatomy
from anomalib_medical.models import SyntheticTaskLocaliser, SyntheticTaskLocaliserEnsemble
from tests.conftest import assert_succeeded, console_script, run_command

pytestmark = pytest.mark.slow

# Image score = max of the map: the mean of an untrained instance-normalised U-Net's map hardly varies between images
# (range ~1e-4 on the validation split), and the post-processor's min-max normalisation would amplify float noise.
TINY = {
    "depth": 3,
    "base_channels": 4,
    "max_channels": 8,
    "image_size": (24, 24),
    "histogram_equalisation": True,
    "score_aggregation": "max",
}
ONNX_KWARGS = {"opset_version": 18}
# OpenVINO runs bf16 by default on CPUs with avx512_bf16/AMX; parity is checked in fp32.
FP32 = {"INFERENCE_PRECISION_HINT": "f32"}


def keep_maps_inside_the_clip(member: SyntheticTaskLocaliser) -> None:
    """Make the untrained map a positive mean of positive features, ~0.5, so the [0, 1] clip hides no difference.

    The head has no bias (as the authors'): shift the last normalisation instead, and average with positive weights.
    """
    with torch.no_grad():
        member.model.unet.decoder[-1][-1][1].bias.fill_(3.0)
        weight = member.model.unet.head.weight.abs_()
        weight.mul_(0.2 / weight.sum())


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory: pytest.TempPathFactory) -> tuple[SyntheticTaskLocaliserEnsemble, Engine, DigitAnatomy]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("localiser_export")
    datamodule = DigitAnatomy(
        root=root / "digits",
        cell_size=8,
        samples_per_type=4,
        train_size=32,
        train_batch_size=8,
        eval_batch_size=10,
    )
    checkpoints = []
    for fold, tasks in enumerate([["sink_deformation"], ["smooth_intensity_change"]]):
        torch.manual_seed(fold)
        member = SyntheticTaskLocaliser(**TINY, train_tasks=tasks, validation_tasks=[], visualizer=False)
        keep_maps_inside_the_clip(member)
        engine = Engine(max_epochs=1, logger=False, default_root_dir=root / f"fold_{fold}", enable_progress_bar=False)
        engine.fit(member, datamodule=datamodule)
        checkpoints.append(root / f"fold_{fold}.ckpt")
        engine.trainer.save_checkpoint(checkpoints[-1])
    model = SyntheticTaskLocaliserEnsemble.from_checkpoints(checkpoints, visualizer=False)
    engine = Engine(logger=False, default_root_dir=root / "ensemble", enable_progress_bar=False)
    engine.validate(model, datamodule=datamodule)
    yield model, engine, datamodule
    torch.set_num_threads(previous)


def _assert_relative_close(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-3) -> None:
    """Elementwise ``|a - e| <= rtol * max|e|``: relative to the scale of the output."""
    scale = float(np.abs(expected).max())
    assert scale > 0
    assert float(np.abs(actual - expected).max()) <= rtol * scale


def test_ensemble_tests_like_any_anomalib_model(ensemble) -> None:
    model, engine, datamodule = ensemble
    assert torch.isfinite(model.post_processor.image_threshold)
    metrics = engine.test(model, datamodule=datamodule, verbose=False)[0]
    assert {"image_AUROC", "image_AUPR", "pixel_AUROC", "pixel_AUPR"} <= set(metrics)


def test_openvino_raw_outputs_match_torch(ensemble, tmp_path: Path) -> None:
    model, _, _ = ensemble
    raw_model = copy.deepcopy(model).eval()
    raw_model.post_processor = None  # export the raw pred_score and anomaly_map
    path = raw_model.to_openvino(tmp_path, onnx_kwargs=ONNX_KWARGS)
    inferencer = OpenVINOInferencer(path, device="CPU", config=FP32)
    for size in [(40, 40), (24, 30)]:  # any size: the exported graph resizes
        image = torch.rand(3, 3, *size)
        with torch.no_grad():
            expected = raw_model(image)
        outputs = inferencer.model(image.numpy())
        actual = {output.any_name: outputs[output] for output in inferencer.model.outputs}
        assert set(actual) == {"pred_score", "anomaly_map"}
        _assert_relative_close(actual["pred_score"], expected.pred_score.numpy())
        _assert_relative_close(actual["anomaly_map"], expected.anomaly_map.numpy())


def test_engine_export_openvino_post_processed_parity(ensemble, tmp_path: Path) -> None:
    model, engine, datamodule = ensemble
    path = engine.export(model, ExportType.OPENVINO, export_root=tmp_path, onnx_kwargs=ONNX_KWARGS)
    inferencer = OpenVINOInferencer(path, device="CPU", config=FP32)
    batch = next(iter(datamodule.test_dataloader()))
    model.eval()
    with torch.no_grad():
        expected = model(batch.image)
    predictions = inferencer.predict(batch.image)
    _assert_relative_close(np.asarray(predictions.pred_score).ravel(), expected.pred_score.numpy())
    _assert_relative_close(np.asarray(predictions.anomaly_map).ravel(), expected.anomaly_map.numpy().ravel())


def test_stock_cli_exports_the_ensemble_checkpoint(ensemble, tmp_path: Path) -> None:
    model, engine, _ = ensemble
    checkpoint = tmp_path / "ensemble.ckpt"
    engine.trainer.save_checkpoint(checkpoint)
    command = [
        console_script("anomalib"),
        "export",
        "--model",
        "SyntheticTaskLocaliserEnsemble",
        "--model.num_members=2",
        "--model.depth=3",
        "--model.base_channels=4",
        "--model.max_channels=8",
        "--model.image_size=[24,24]",
        "--model.histogram_equalisation=true",
        "--model.score_aggregation=max",
        "--ckpt_path",
        str(checkpoint),
        "--export_type",
        "openvino",
        "--onnx_kwargs",
        '{"opset_version": 18}',
        "--export_root",
        str(tmp_path / "cli"),
        "--trainer.logger",
        "false",
    ]
    assert_succeeded(run_command(command))
    exported = tmp_path / "cli" / "weights" / "openvino" / "model.xml"
    inferencer = OpenVINOInferencer(exported, device="CPU", config=FP32)
    image = torch.rand(2, 3, 24, 24)
    model.eval()
    with torch.no_grad():
        expected = model(image)
    _assert_relative_close(
        np.asarray(inferencer.predict(image).anomaly_map).ravel(), expected.anomaly_map.numpy().ravel()
    )


def test_untrained_maps_stay_inside_the_clip(ensemble) -> None:
    """The parity tests compare maps that the [0, 1] clip leaves alone."""
    model, _, _ = ensemble
    model.eval()
    with torch.no_grad():
        raw = model.model.members[0].localise(model.model.members[0].to_task_space(torch.rand(4, 3, 24, 24)))
    assert raw.min() > 0
    assert raw.max() < 1
