"""anomalib-medical: unsupervised anomaly detectors for radiographs as anomalib plugins.

Importing this package defines our datamodules and models as subclasses of anomalib's base classes,
which is what lets the stock ``anomalib`` command resolve them by short name
(``anomalib train --model Squid --data DigitAnatomy``); it also sets them on ``anomalib.models`` /
``anomalib.data`` where the name is free, which is how ``anomalib benchmark`` looks them up (see ``registration``).
"""

from anomalib_medical import data, models
from anomalib_medical.data import *  # noqa: F403
from anomalib_medical.models import *  # noqa: F403
from anomalib_medical.registration import register_with_anomalib

register_with_anomalib()

__version__ = "0.1.0"

__all__ = ["__version__", "data", "models", *data.__all__, *models.__all__]
