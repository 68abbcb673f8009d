"""Anomaly detection models (``anomalib.models.components.AnomalibModule`` subclasses)."""

from anomalib_medical.models.synthetic_task_localiser import SyntheticTaskLocaliser, SyntheticTaskLocaliserEnsemble

__all__: list[str] = ["SyntheticTaskLocaliser", "SyntheticTaskLocaliserEnsemble"]
