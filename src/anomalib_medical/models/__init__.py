"""Anomaly detection models (``anomalib.models.components.AnomalibModule`` subclasses)."""

from anomalib_medical.models.simsid import SimSID
from anomalib_medical.models.squid import Squid
from anomalib_medical.models.synthetic_task_localiser import SyntheticTaskLocaliser, SyntheticTaskLocaliserEnsemble

__all__: list[str] = ["SimSID", "Squid", "SyntheticTaskLocaliser", "SyntheticTaskLocaliserEnsemble"]
