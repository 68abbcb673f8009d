"""Synthetic-task localiser (Baugh et al., MICCAI 2023): anomaly localisation learnt from synthetic tasks.

See ``README.md`` next to this file for the method, the defaults and measured results.
"""

from .ensemble import SyntheticTaskLocaliserEnsemble, SyntheticTaskLocaliserEnsembleModel
from .lightning_model import SYNTHETIC_PIXEL_AP, SyntheticTaskLocaliser
from .torch_model import FourierCoordinateEncoding, SyntheticTaskLocaliserModel

__all__ = [
    "SYNTHETIC_PIXEL_AP",
    "FourierCoordinateEncoding",
    "SyntheticTaskLocaliser",
    "SyntheticTaskLocaliserEnsemble",
    "SyntheticTaskLocaliserEnsembleModel",
    "SyntheticTaskLocaliserModel",
]
