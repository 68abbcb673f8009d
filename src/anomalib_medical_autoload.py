"""Start-up hook that lets the stock ``anomalib`` command see anomalib-medical's classes.

``anomalib_medical_autoload.pth`` (installed at the root of site-packages) calls :func:`install` at
every interpreter start. It only puts a one-shot meta path finder first in
``sys.meta_path``: nothing is imported and ``python -c pass`` pays for a few attribute look-ups.
When ``anomalib.models`` or ``anomalib.cli`` has finished executing, the finder imports
``anomalib_medical`` (which defines our ``AnomalibModule`` and ``AnomalibDataModule`` subclasses, so
anomalib's CLI and ``anomalib.models.get_model`` resolve them by short name) and removes itself.

Set ``ANOMALIB_MEDICAL_AUTOLOAD=0`` to switch the hook off. This module uses the standard library only.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # the ``typing`` and ``importlib.abc`` imports alone would cost ~10-15 ms at start-up
if TYPE_CHECKING:
    import importlib.abc
    import importlib.machinery
    import types
    from collections.abc import Sequence

ENV_VARIABLE = "ANOMALIB_MEDICAL_AUTOLOAD"
TRIGGER_MODULES = frozenset({"anomalib.models", "anomalib.cli"})


class _LoadAfter:
    """Wraps a module's loader and imports ``anomalib_medical`` once the module has executed."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self._loader.exec_module(module)
        _AutoloadFinder.uninstall()
        try:
            import anomalib_medical  # noqa: F401  (the point of the hook)
        except Exception as error:  # a broken plugin must not take the stock anomalib command down with it
            import warnings

            warnings.warn(
                f"anomalib-medical could not be loaded, its models and datamodules are unavailable: {error!r}. "
                f"Set {ENV_VARIABLE}=0 to silence this hook.",
                RuntimeWarning,
                stacklevel=2,
            )

    def __getattr__(self, name: str) -> object:
        return getattr(self._loader, name)


class _AutoloadFinder:
    """Finds nothing itself; wraps the loader of the trigger modules found by the other finders."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in TRIGGER_MODULES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _LoadAfter(spec.loader)
                return spec
        return None

    @staticmethod
    def uninstall() -> None:
        sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _AutoloadFinder)]


def is_enabled() -> bool:
    """Whether the hook is on (``ANOMALIB_MEDICAL_AUTOLOAD`` unset or not one of 0/false/no/off)."""
    return os.environ.get(ENV_VARIABLE, "1").strip().lower() not in {"0", "false", "no", "off"}


def install() -> None:
    """Put the one-shot finder first in ``sys.meta_path`` (idempotent, no-op when switched off)."""
    if not is_enabled() or any(isinstance(finder, _AutoloadFinder) for finder in sys.meta_path):
        return
    if any(name in sys.modules for name in TRIGGER_MODULES):
        return
    sys.meta_path.insert(0, _AutoloadFinder())
