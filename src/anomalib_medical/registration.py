"""Our models and datamodules as attributes of ``anomalib.models`` / ``anomalib.data`` (where the name is free).

anomalib resolves a short class name in several places by ``getattr`` on its own packages rather than among
subclasses: ``anomalib benchmark`` (``get_model({"class_path": "Squid"})`` and ``get_datamodule``, which keeps
only the last part of a dotted ``class_path``), and ``get_model`` with a dotted path, which only accepts modules
under ``anomalib.models``. Importing ``anomalib_medical`` (as the start-up hook does for the stock ``anomalib``
command) calls :func:`register_with_anomalib`; a name anomalib already defines is never replaced.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType

from anomalib.data import AnomalibDataModule
from anomalib.models import AnomalibModule

from anomalib_medical import data, models

logger = logging.getLogger(__name__)


def _register(target: ModuleType, source: ModuleType, base: type) -> list[str]:
    """Set the ``base`` subclasses of ``source.__all__`` on ``target`` where the name is free; return ours."""
    registered = []
    for name in source.__all__:
        value = getattr(source, name)
        if not (isinstance(value, type) and issubclass(value, base)):
            continue
        existing = getattr(target, name, None)
        if existing is None:
            setattr(target, name, value)
        elif existing is not value:
            logger.warning("%s.%s already exists: anomalib-medical's %s is not set there", target.__name__, name, name)
            continue
        registered.append(name)
    return registered


def register_with_anomalib() -> dict[str, list[str]]:
    """Make our models and datamodules reachable as ``anomalib.models.<Name>`` and ``anomalib.data.<Name>``.

    Returns, per anomalib package, the names that now refer to our classes (idempotent).
    """
    # ``import_module``, not ``import anomalib.models``: the start-up hook runs this while ``anomalib.models`` is
    # still marked as initialising, and attribute access on the ``anomalib`` package would fail then.
    return {
        name: _register(importlib.import_module(name), source, base)
        for name, source, base in (
            ("anomalib.models", models, AnomalibModule),
            ("anomalib.data", data, AnomalibDataModule),
        )
    }
