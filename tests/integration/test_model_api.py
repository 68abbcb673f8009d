"""Our OpenVINO exports in OpenVINO's Model API (``model_api.models.AnomalyDetection``), as anomalib's inferencer.

The IR carries the four outputs and, through :class:`~anomalib_medical.export.ModelInfoExportMixin`, the
thresholds and the wrapper type in ``rt_info["model_info"]``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import openvino as ov
import pytest
import torch
from anomalib.deploy import OpenVINOInferencer
from anomalib.engine import Engine
from anomalib.post_processing import PostProcessor
from model_api.adapters import OpenvinoAdapter, create_core
from model_api.models import AnomalyDetection, Model

from anomalib_medical.data import DigitAnatomy
from anomalib_medical.export import ModelInfoExportMixin, add_model_info, model_info, read_model_info
from anomalib_medical.models import SimSID, Squid, SyntheticTaskLocaliser, SyntheticTaskLocaliserEnsemble
from tests.unit.test_simsid import TINY as SIMSID_TINY
from tests.unit.test_squid import TINY as SQUID_TINY

# OpenVINO runs bf16 by default on CPUs with avx512_bf16/AMX; parity is checked in fp32.
FP32 = {"INFERENCE_PRECISION_HINT": "f32"}
OUTPUTS = {"pred_score", "pred_label", "anomaly_map", "pred_mask"}
LOCALISER_TINY = {
    "depth": 2,
    "base_channels": 4,
    "max_channels": 8,
    "image_size": (24, 24),
    "train_tasks": ["sink_deformation"],
    "validation_tasks": [],
    "seed": 0,
}
MODELS = {
    "SyntheticTaskLocaliser": (SyntheticTaskLocaliser, LOCALISER_TINY),
    "Squid": (Squid, SQUID_TINY),
    "SimSID": (SimSID, SIMSID_TINY),
}


def test_every_model_writes_model_info_on_export() -> None:
    for model_class in (*(model_class for model_class, _ in MODELS.values()), SyntheticTaskLocaliserEnsemble):
        assert issubclass(model_class, ModelInfoExportMixin), model_class


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_model_api_matches_openvino_inferencer(tmp_path: Path, name: str) -> None:
    model_class, settings = MODELS[name]
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    datamodule = DigitAnatomy(
        root=tmp_path / "digits", cell_size=8, samples_per_type=4, train_size=16, train_batch_size=8, eval_batch_size=10
    )
    model = model_class(**settings, visualizer=False)
    Engine(max_epochs=1, logger=False, default_root_dir=tmp_path / "results", enable_progress_bar=False).fit(
        model, datamodule=datamodule
    )
    path = model.to_openvino(tmp_path / "export", onnx_kwargs={"opset_version": 18})
    torch.set_num_threads(previous)
    assert {output.get_any_name() for output in ov.Core().read_model(path).outputs} == OUTPUTS

    # the thresholds are in the IR, in the units of its outputs, and in the model's own units for reference
    info = read_model_info(path)
    post_processor = model.post_processor
    assert info["model_type"] == "AnomalyDetection"
    assert info["task"] == "segmentation"
    assert float(info["image_threshold"]) == pytest.approx(float(post_processor.normalized_image_threshold))
    assert float(info["pixel_threshold"]) == pytest.approx(float(post_processor.normalized_pixel_threshold))
    assert float(info["raw_image_threshold"]) == pytest.approx(float(post_processor.image_threshold), rel=1e-6)
    assert float(info["raw_pixel_threshold"]) == pytest.approx(float(post_processor.pixel_threshold), rel=1e-6)
    assert np.isfinite([float(info[key]) for key in ("image_min", "image_max", "pixel_min", "pixel_max")]).all()

    assert isinstance(Model.create_model(str(path), device="CPU", preload=False), AnomalyDetection)
    adapter = OpenvinoAdapter(create_core(), str(path), device="CPU", plugin_config=FP32)
    wrapper = AnomalyDetection(adapter, preload=True)
    assert wrapper.params.image_threshold == pytest.approx(float(info["image_threshold"]))
    assert wrapper.params.pixel_threshold == pytest.approx(float(info["pixel_threshold"]))
    assert wrapper.params.normalization_scale == 1.0
    assert wrapper.params.task == "segmentation"
    assert list(wrapper.params.labels) == ["Normal", "Anomaly"]
    inferencer = OpenVINOInferencer(path, device="CPU", config=FP32)
    rng = np.random.default_rng(0)
    images = [(rng.random(shape) * 255).astype(np.uint8) for shape in [(30, 30, 3), (24, 40, 3)]]
    digits = datamodule.test_data[len(datamodule.test_data) - 1].image  # an abnormal DigitAnatomy test image
    images.append(np.asarray(digits.permute(1, 2, 0) * 255, np.uint8))
    for image in images:
        expected = inferencer.predict(image)
        result = wrapper(image)
        score, label = float(expected.pred_score.item()), bool(expected.pred_label.item())
        assert result.pred_score == pytest.approx(score, rel=1e-4, abs=1e-6)
        assert result.pred_label == str(label)
        # the IR's thresholds are the ones its graph applies: they give its labels and masks
        assert (score > wrapper.params.image_threshold) == label
        expected_map, expected_mask = expected.anomaly_map.squeeze(), expected.pred_mask.squeeze()
        assert np.array_equal(expected_map > wrapper.params.pixel_threshold, expected_mask)
        # Model API returns the map as 8-bit grey levels and both maps at the input's size
        size = (image.shape[1], image.shape[0])
        grey = cv2.resize(np.round(expected_map * 255).astype(np.uint8), size).astype(int)
        assert np.abs(result.anomaly_map.astype(int) - grey).max() <= 1
        assert np.mean(result.pred_mask != cv2.resize(expected_mask.astype(np.uint8), size)) < 0.01


def test_model_info_needs_a_fitted_model() -> None:
    model = SyntheticTaskLocaliser(**LOCALISER_TINY, visualizer=False)
    with pytest.raises(ValueError, match="SyntheticTaskLocaliser: the image threshold is not set"):
        model_info(model)


def test_add_model_info_names_a_missing_ir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"OpenVINO IR not found: .*model\.xml"):
        add_model_info(tmp_path / "model.xml", {"task": "segmentation"})


def test_an_unfitted_model_exports_without_model_info(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    class Exporter:  # stands for anomalib's export: returns the IR's path
        def to_openvino(self, export_root: Path) -> Path:
            return export_root / "model.xml"

    class Unfitted(ModelInfoExportMixin, Exporter):
        post_processor = PostProcessor()  # thresholds not set (NaN)

    with caplog.at_level("WARNING", logger="anomalib_medical.export.model_info"):
        path = Unfitted().to_openvino(tmp_path)  # no IR written: add_model_info would raise FileNotFoundError
    assert path == tmp_path / "model.xml"
    assert "exported without Model API's model_info" in caplog.text
    assert "Unfitted: the image threshold is not set" in caplog.text
