"""SimSID export: OpenVINO FP32 parity with torch (tanh output, memory matrices), INT8, the stock CLI."""

import copy

import numpy as np
import pytest
import torch
from anomalib.deploy import ExportType, OpenVINOInferencer
from anomalib.engine import Engine

from anomalib_medical.data import DigitAnatomy
from anomalib_medical.models import SimSID
from tests.conftest import assert_succeeded, console_script, run_command
from tests.integration.test_squid_export import (
    FP32,
    ONNX_KWARGS,
    _assert_relative_close,
    assert_int8_export_ranks_like_torch,
)

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
    "discriminator_channels": [4, 8, 16],
    "score_type": "combined",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[SimSID, Engine, DigitAnatomy]:
    root = tmp_path_factory.mktemp("simsid_export")
    datamodule = DigitAnatomy(
        root=root / "digits",
        cell_size=8,
        samples_per_type=4,
        train_size=32,
        train_batch_size=8,
        eval_batch_size=10,
    )
    torch.manual_seed(0)
    model = SimSID(**TINY, visualizer=False)
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


def test_engine_export_openvino_post_processed_parity(trained, tmp_path):
    model, engine, datamodule = trained
    path = engine.export(model, ExportType.OPENVINO, export_root=tmp_path, onnx_kwargs=ONNX_KWARGS)
    inferencer = OpenVINOInferencer(path, device="CPU", config=FP32)
    batch = next(iter(datamodule.test_dataloader()))
    model.eval()
    with torch.no_grad():
        expected = model(batch.image)
    predictions = inferencer.predict(batch.image)
    # post-processed outputs: the normalisation amplifies float differences (raw parity above is 1e-3 relative)
    np.testing.assert_allclose(np.asarray(predictions.pred_score).ravel(), expected.pred_score.numpy(), atol=5e-3)
    np.testing.assert_allclose(
        np.asarray(predictions.anomaly_map).ravel(), expected.anomaly_map.numpy().ravel(), atol=5e-3
    )
    np.testing.assert_array_equal(np.asarray(predictions.pred_label).ravel(), expected.pred_label.numpy())


def test_int8_post_training_quantisation_keeps_the_score_ranking(trained, tmp_path):
    model, engine, datamodule = trained
    assert_int8_export_ranks_like_torch(model, engine, datamodule, tmp_path)


def test_stock_cli_export(trained, tmp_path):
    _, engine, _ = trained
    checkpoint = tmp_path / "simsid.ckpt"
    engine.trainer.save_checkpoint(checkpoint)
    args = [f"--model.{key}={value}" for key, value in TINY.items() if not isinstance(value, list)]
    args += [f"--model.{key}=[{','.join(map(str, value))}]" for key, value in TINY.items() if isinstance(value, list)]
    command = [
        console_script("anomalib"),
        "export",
        "--model",
        "SimSID",
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
