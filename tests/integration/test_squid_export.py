"""Squid export: OpenVINO FP32 parity with torch, INT8 post-training quantisation, the stock CLI."""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.deploy import CompressionType, ExportType, OpenVINOInferencer
from anomalib.engine import Engine
from anomalib.models import AnomalibModule
from scipy.stats import spearmanr

from anomalib_medical.data import DigitAnatomy
from anomalib_medical.models import Squid
from tests.conftest import assert_succeeded, console_script, run_command

pytestmark = pytest.mark.slow

TINY = {
    "image_size": 24,
    "patches_per_side": 3,
    "levels": 2,
    "base_channels": 4,
    "skip_ops": ["concat", "none"],
    "merge_levels": 1,
    "memory_slots": 6,
    "top_k": 2,
    "decoder_memory": ["position", "none"],
    "decoder_memory_slots": 5,
    "num_heads": 2,
    "score_type": "combined",
}
ONNX_KWARGS = {"opset_version": 18}
# OpenVINO runs bf16 by default on CPUs with avx512_bf16/AMX; parity is checked in fp32.
FP32 = {"INFERENCE_PRECISION_HINT": "f32"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Squid, Engine, DigitAnatomy]:
    root = tmp_path_factory.mktemp("squid_export")
    datamodule = DigitAnatomy(
        root=root / "digits",
        cell_size=8,
        samples_per_type=4,
        train_size=32,
        train_batch_size=8,
        eval_batch_size=10,
    )
    torch.manual_seed(0)
    model = Squid(**TINY, visualizer=False)
    engine = Engine(
        max_epochs=1,
        logger=False,
        default_root_dir=root / "results",
        enable_progress_bar=False,
        accelerator="cpu",
        devices=1,
    )
    engine.fit(model, datamodule=datamodule)
    return model, engine, datamodule


def _assert_relative_close(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-3) -> None:
    """Elementwise ``|a - e| <= rtol * max|e|``: relative to the scale of the output."""
    scale = float(np.abs(expected).max())
    assert scale > 0
    assert float(np.abs(actual - expected).max()) <= rtol * scale


def test_openvino_raw_outputs_match_torch(trained, tmp_path):
    model, _, _ = trained
    raw_model = copy.deepcopy(model).eval()
    raw_model.post_processor = None  # export the raw pred_score and anomaly_map
    path = raw_model.to_openvino(tmp_path, onnx_kwargs=ONNX_KWARGS)
    inferencer = OpenVINOInferencer(path, device="CPU", config=FP32)
    image = torch.rand(5, 3, 40, 40)  # any size: the exported graph resizes
    with torch.no_grad():
        expected = raw_model(image)
    outputs = inferencer.model(image.numpy())
    actual = {output.any_name: outputs[output] for output in inferencer.model.outputs}
    assert set(actual) == {"pred_score", "anomaly_map"}
    _assert_relative_close(actual["pred_score"], expected.pred_score.numpy())
    _assert_relative_close(actual["anomaly_map"], expected.anomaly_map.numpy())


def test_openvino_raw_outputs_match_torch_with_a_feature_bank(trained, tmp_path):
    """The bank is a buffer baked into the graph: the exported feature residual is the bank distance.

    The score is the feature residual alone, so that the comparison is of the bank's part of the graph.
    """
    _, _, datamodule = trained
    torch.manual_seed(0)
    model = Squid(
        **TINY | {"anomaly_map_type": "feature", "score_type": "residual_feature"},
        feature_residual="bank",
        feature_bank_images=16,
        score_stats_images=6,
        visualizer=False,
    )
    Engine(
        max_epochs=1,
        logger=False,
        default_root_dir=tmp_path / "results",
        enable_progress_bar=False,
        accelerator="cpu",
        devices=1,
    ).fit(model, datamodule=datamodule)
    model.eval()
    model.post_processor = None
    inferencer = OpenVINOInferencer(model.to_openvino(tmp_path, onnx_kwargs=ONNX_KWARGS), device="CPU", config=FP32)
    image = torch.rand(5, 3, 24, 24)
    with torch.no_grad():
        expected = model(image)
    outputs = inferencer.model(image.numpy())
    actual = {output.any_name: outputs[output] for output in inferencer.model.outputs}
    _assert_relative_close(actual["pred_score"], expected.pred_score.numpy())
    _assert_relative_close(actual["anomaly_map"], expected.anomaly_map.numpy())


def test_engine_export_openvino_post_processed_parity(trained, tmp_path):
    model, engine, datamodule = trained
    path = engine.export(model, ExportType.OPENVINO, export_root=tmp_path, onnx_kwargs=ONNX_KWARGS)
    inferencer = OpenVINOInferencer(path, device="CPU", config=FP32)
    batch = next(iter(datamodule.test_dataloader()))
    model.eval()
    with torch.no_grad():
        expected = model(batch.image)
    predictions = inferencer.predict(batch.image)
    # Post-processing rescales around the threshold, which magnifies the raw outputs' < 1e-3 relative difference
    # (checked above on the raw graph); 5e-3 on the normalised [0, 1] scale is still far below any decision margin.
    np.testing.assert_allclose(np.asarray(predictions.pred_score).ravel(), expected.pred_score.numpy(), atol=5e-3)
    np.testing.assert_allclose(
        np.asarray(predictions.anomaly_map).ravel(), expected.anomaly_map.numpy().ravel(), atol=5e-3
    )


def assert_int8_export_ranks_like_torch(model: AnomalibModule, engine: Engine, datamodule, root: Path) -> None:
    """``anomalib export --compression_type INT8_PTQ``: quantised, and the raw image scores keep torch's ranking.

    Scored with one component (``residual_image``, the SimSID recipe's score): INT8 once collapsed it to one
    score for every image, twice (the quantised smoothing before the max; unused components' constants
    widening the calibration range). The tiny models' scores sit close together, so INT8 steps are coarse and
    quantisation noise reorders neighbours: a few distinct scores and a clearly positive rank correlation.
    """
    raw_model = copy.deepcopy(model).eval()
    raw_model.post_processor = None  # raw pred_score: no clipping by the normalisation
    raw_model.model.score_type = "residual_image"
    path = engine.export(
        raw_model,
        ExportType.OPENVINO,
        export_root=root,
        compression_type=CompressionType.INT8_PTQ,
        datamodule=datamodule,
        onnx_kwargs=ONNX_KWARGS,
    )
    assert "FakeQuantize" in path.read_text()
    inferencer = OpenVINOInferencer(path, device="CPU", config=FP32)
    quantised, expected = [], []
    for batch in datamodule.test_dataloader():
        predictions = inferencer.predict(batch.image)
        assert np.isfinite(np.asarray(predictions.anomaly_map)).all()
        quantised.append(np.asarray(predictions.pred_score).ravel())
        with torch.no_grad():
            expected.append(raw_model(batch.image).pred_score.numpy())
    quantised_scores, torch_scores = np.concatenate(quantised), np.concatenate(expected)
    assert np.isfinite(quantised_scores).all()
    assert len(np.unique(quantised_scores)) >= 3  # coarse steps are fine (tiny models), one score is not
    assert spearmanr(quantised_scores, torch_scores).statistic > 0.2


def test_int8_post_training_quantisation_keeps_the_score_ranking(trained, tmp_path):
    model, engine, datamodule = trained
    assert_int8_export_ranks_like_torch(model, engine, datamodule, tmp_path)


def test_stock_cli_export(trained, tmp_path):
    _, engine, _ = trained
    checkpoint = tmp_path / "squid.ckpt"
    engine.trainer.save_checkpoint(checkpoint)
    args = [f"--model.{key}={value}" for key, value in TINY.items() if not isinstance(value, list)]
    args += [f"--model.{key}=[{','.join(value)}]" for key, value in TINY.items() if isinstance(value, list)]
    command = [
        console_script("anomalib"),
        "export",
        "--model",
        "Squid",
        *args,
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
    assert (tmp_path / "cli" / "weights" / "openvino" / "model.xml").is_file()
