"""Anomaly detection models (``anomalib.models.components.AnomalibModule`` subclasses)."""

__all__: list[str] = []
