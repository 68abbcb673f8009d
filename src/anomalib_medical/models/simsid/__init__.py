"""SimSID: Simple Space-Aware Memory Matrix for In-painting and Detecting anomalies (Xiang et al., TPAMI 2024)."""

from .lightning_model import SimSID
from .torch_model import SimSIDModel

__all__ = ["SimSID", "SimSIDModel"]
