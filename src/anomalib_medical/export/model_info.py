"""The thresholds and the wrapper type in the OpenVINO IR, for OpenVINO's Model API.

anomalib 2.7 exports the model with its post-processor in the graph (outputs ``pred_score``, ``pred_label``,
``anomaly_map``, ``pred_mask``) and writes no runtime information into the IR. OpenVINO's Model API
(``openvino-model-api``) reads its wrapper type and the anomaly parameters from ``rt_info["model_info"]``:
``model_type``, ``image_threshold``, ``pixel_threshold``, ``normalization_scale``, ``task`` and ``labels``
(``model_api.models.AnomalyDetection``; unknown keys are ignored). With the four outputs the wrapper takes
score, label, map and mask from the graph; with a single output it thresholds and normalises it itself with
those parameters. :func:`add_model_info` writes them, in the units of the graph's outputs, so both paths agree
with the graph:

* ``image_threshold`` / ``pixel_threshold``: the values the exported post-processor compares its normalised
  score and map with (anomalib's ``normalized_image_threshold`` / ``normalized_pixel_threshold``, 0.5 at the
  default sensitivity), and ``normalization_scale`` 1 (the outputs are normalised already);
* ``raw_image_threshold`` / ``raw_pixel_threshold`` and ``image_min`` ... ``pixel_max``: the thresholds chosen
  on the validation split and the normalisation range, in the model's own score units (for reference; Model
  API ignores them).

:class:`ModelInfoExportMixin` adds them to every OpenVINO export of a model (``to_openvino``, which
``Engine.export`` and ``anomalib export`` call).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from anomalib.post_processing import PostProcessor

logger = logging.getLogger(__name__)

MODEL_TYPE = "AnomalyDetection"
LABELS = "Normal Anomaly"  # Model API's list format: space-separated


def model_info(model: Any) -> dict[str, str | float]:
    """Model API's ``model_info`` entries of a fitted anomalib model (see the module docstring).

    Raises:
        ValueError: If the model has no anomalib ``PostProcessor`` or its image threshold was never set
            (fit or validate the model first).

    """
    post_processor = getattr(model, "post_processor", None)
    if not isinstance(post_processor, PostProcessor):
        kind = type(post_processor).__name__
        msg = f"{type(model).__name__} has no anomalib PostProcessor (got {kind}): it has no thresholds to export"
        raise ValueError(msg)
    raw_image_threshold = float(post_processor.image_threshold)
    if not math.isfinite(raw_image_threshold):
        msg = f"{type(model).__name__}: the image threshold is not set (fit or validate the model before exporting)"
        raise ValueError(msg)
    raw_pixel_threshold = float(post_processor.pixel_threshold)
    info: dict[str, str | float] = {
        "model_type": MODEL_TYPE,
        "task": "segmentation" if math.isfinite(raw_pixel_threshold) else "classification",
        "labels": LABELS,
        "image_threshold": float(post_processor.normalized_image_threshold),
        "pixel_threshold": float(post_processor.normalized_pixel_threshold),
        "normalization_scale": 1.0,
        "raw_image_threshold": raw_image_threshold,
        "raw_pixel_threshold": raw_pixel_threshold,
    }
    for name in ("image_min", "image_max", "pixel_min", "pixel_max"):
        info[name] = float(getattr(post_processor, name))
    return info


def add_model_info(path: str | Path, info: dict[str, str | float]) -> Path:
    """Write ``info`` into ``rt_info["model_info"]`` of the IR at ``path`` (``.xml``; its ``.bin`` beside it).

    The IR is rewritten in place (through a temporary file in the same folder, weights unchanged).

    Raises:
        FileNotFoundError: If ``path`` or its ``.bin`` file does not exist.

    """
    import openvino as ov

    path = Path(path)
    weights = path.with_suffix(".bin")
    missing = [str(file) for file in (path, weights) if not file.is_file()]
    if missing:
        msg = f"OpenVINO IR not found: {', '.join(missing)}"
        raise FileNotFoundError(msg)
    ir = ov.Core().read_model(path)
    for key, value in info.items():  # numbers as their repr: OpenVINO prints floats with 6 digits
        ir.set_rt_info(repr(value) if isinstance(value, float) else value, ["model_info", key])
    with tempfile.TemporaryDirectory(dir=path.parent) as folder:
        staged = Path(folder) / path.name
        ov.save_model(ir, staged, compress_to_fp16=False)  # weights as exported (FP16 ones stay FP16)
        del ir
        os.replace(staged.with_suffix(".bin"), weights)
        os.replace(staged, path)
    return path


def read_model_info(path: str | Path) -> dict[str, str]:
    """Return the ``rt_info["model_info"]`` entries of the IR at ``path`` as strings (empty if it has none)."""
    import openvino as ov

    ir = ov.Core().read_model(path)
    if not ir.has_rt_info(["model_info"]):
        return {}
    keys = ir.get_rt_info(["model_info"]).value
    return {key: ir.get_rt_info(["model_info", key]).astype(str) for key in keys}


class ModelInfoExportMixin:
    """Adds Model API's ``model_info`` (:func:`model_info`) to every OpenVINO export of an anomalib model.

    A model without thresholds (never fitted or validated) is exported as anomalib does, without ``model_info``,
    and a warning says why.
    """

    def to_openvino(self, *args: Any, **kwargs: Any) -> Path:
        """Export with anomalib's ``to_openvino``, then write :func:`model_info` into the IR."""
        path = super().to_openvino(*args, **kwargs)  # type: ignore[misc]
        try:
            info = model_info(self)
        except ValueError as error:
            logger.warning("%s: exported without Model API's model_info (%s)", path, error)
            return path
        return add_model_info(path, info)
