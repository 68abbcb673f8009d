"""Our OpenVINO export in OpenVINO's Model API (``model_api.models.AnomalyDetection``), as anomalib's inferencer."""

from __future__ import annotations

import cv2
import numpy as np
import openvino as ov
import pytest
import torch
from anomalib.deploy import OpenVINOInferencer
from anomalib.engine import Engine
from model_api.adapters import OpenvinoAdapter, create_core
from model_api.models import AnomalyDetection, Model

from anomalib_medical.data import DigitAnatomy
from anomalib_medical.models import SyntheticTaskLocaliser

# OpenVINO runs bf16 by default on CPUs with avx512_bf16/AMX; parity is checked in fp32.
FP32 = {"INFERENCE_PRECISION_HINT": "f32"}
OUTPUTS = {"pred_score", "pred_label", "anomaly_map", "pred_mask"}


@pytest.mark.slow
def test_model_api_matches_openvino_inferencer(tmp_path) -> None:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    datamodule = DigitAnatomy(
        root=tmp_path / "digits", cell_size=8, samples_per_type=4, train_size=16, train_batch_size=8, eval_batch_size=10
    )
    model = SyntheticTaskLocaliser(
        depth=2,
        base_channels=4,
        max_channels=8,
        image_size=(24, 24),
        train_tasks=["sink_deformation"],
        validation_tasks=[],
        visualizer=False,
        seed=0,
    )
    Engine(max_epochs=1, logger=False, default_root_dir=tmp_path / "results", enable_progress_bar=False).fit(
        model, datamodule=datamodule
    )
    path = model.to_openvino(tmp_path / "export", onnx_kwargs={"opset_version": 18})
    torch.set_num_threads(previous)
    assert {output.get_any_name() for output in ov.Core().read_model(path).outputs} == OUTPUTS

    assert isinstance(Model.create_model(str(path), device="CPU", preload=False), AnomalyDetection)
    adapter = OpenvinoAdapter(create_core(), str(path), device="CPU", plugin_config=FP32)
    wrapper = AnomalyDetection(adapter, preload=True)
    inferencer = OpenVINOInferencer(path, device="CPU", config=FP32)
    rng = np.random.default_rng(0)
    for shape in [(30, 30, 3), (24, 40, 3)]:
        image = (rng.random(shape) * 255).astype(np.uint8)
        expected = inferencer.predict(image)
        result = wrapper(image)
        assert result.pred_score == pytest.approx(float(expected.pred_score.item()), rel=1e-4, abs=1e-6)
        assert result.pred_label == str(bool(expected.pred_label.item()))
        # Model API returns the map as 8-bit grey levels and both maps at the input's size
        size = (shape[1], shape[0])
        expected_map = cv2.resize(np.round(expected.anomaly_map.squeeze() * 255).astype(np.uint8), size)
        assert np.abs(result.anomaly_map.astype(int) - expected_map.astype(int)).max() <= 1
        expected_mask = cv2.resize(expected.pred_mask.squeeze().astype(np.uint8), size)
        assert np.mean(result.pred_mask != expected_mask) < 0.01
