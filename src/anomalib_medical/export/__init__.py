"""Deployment helpers for exported models (OpenVINO's Model API metadata)."""

from anomalib_medical.export.model_info import ModelInfoExportMixin, add_model_info, model_info, read_model_info

__all__ = ["ModelInfoExportMixin", "add_model_info", "model_info", "read_model_info"]
