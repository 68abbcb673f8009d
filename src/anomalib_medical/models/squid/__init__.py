"""SQUID: Deep Feature In-Painting for Unsupervised Anomaly Detection (Xiang et al., CVPR 2023)."""

from .lightning_model import Squid
from .torch_model import SquidModel

__all__ = ["Squid", "SquidModel"]
