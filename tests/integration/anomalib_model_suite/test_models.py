# Copyright (C) 2023-2024 Intel Corporation
# SPDX-License-Identifier: Apache-2.0

"""Test API.

Tests the models using API. The weight paths from the trained models are used for the rest of the tests.

A trimmed copy of ``tests/integration/model/test_models.py`` of open-edge-platform/anomalib (Apache-2.0), run on
anomalib-medical's registered models (every ``AnomalibModule`` subclass in ``list_models()`` that this package
defines) with what it asserts unchanged. Changed: tiny model settings (the unit tests' ``TINY``), no data-loader
worker processes, ONNX opset 18 (torch 2.14), and a checkpoint fixture (as anomalib's ``ckpt_path`` fixture) that
fits a model first when a ``pytest -n`` worker runs a later step without having run ``test_fit``.
"""

from pathlib import Path
from typing import Any

import pytest
from anomalib.data import AnomalibDataModule, MVTecAD
from anomalib.deploy import ExportType
from anomalib.engine import Engine
from anomalib.models import AnomalibModule, get_model, list_models
from anomalib.utils.path import convert_to_snake_case

import anomalib_medical  # noqa: F401  (defines the models, also where the start-up hook is switched off)
from tests.integration.test_localiser_export import TINY as LOCALISER_TINY
from tests.unit.test_simsid import TINY as SIMSID_TINY
from tests.unit.test_squid import TINY as SQUID_TINY

# Squid at 48 px: at 32 px or less its discriminator's last batch-norm stage sees 1x1 maps, and the dummy data's
# last training batch holds one image.
EXTRA_ARGS: dict[str, dict[str, Any]] = {
    "squid": SQUID_TINY | {"image_size": 48},
    "sim_s_i_d": SIMSID_TINY,
    "synthetic_task_localiser": LOCALISER_TINY | {"depth": 2},
    "synthetic_task_localiser_ensemble": {
        key: LOCALISER_TINY[key] for key in ("base_channels", "max_channels", "image_size")
    }
    | {"depth": 2, "num_members": 2},
}


def models() -> list[str]:
    """Return anomalib-medical's models among all available models."""
    ours = {
        convert_to_snake_case(cls.__name__)
        for cls in AnomalibModule.__subclasses__()
        if cls.__module__.startswith("anomalib_medical.")
    }
    return sorted(ours & list_models())


def export_types() -> list[ExportType]:
    """Return all available export frameworks."""
    return list(ExportType)


@pytest.fixture
def checkpoint(model_name: str, dataset_path: Path, project_path: Path) -> str:
    """Path of the model's checkpoint, fitted first when this worker has not run ``test_fit`` for it."""
    model, dataset, engine = TestAPI._get_objects(model_name, dataset_path, project_path)
    path = project_path / model.name / dataset.name / "dummy" / "v0" / "weights" / "lightning" / "model.ckpt"
    if not path.exists():
        engine.fit(model=model, datamodule=dataset)
    return str(path)


class TestAPI:
    """Do sanity check on all models."""

    @pytest.mark.parametrize("model_name", models())
    def test_fit(self, model_name: str, dataset_path: Path, project_path: Path) -> None:
        """Fit the model and save checkpoint."""
        model, dataset, engine = self._get_objects(
            model_name=model_name,
            dataset_path=dataset_path,
            project_path=project_path,
        )
        engine.fit(model=model, datamodule=dataset)

    @pytest.mark.parametrize("model_name", models())
    def test_test(self, model_name: str, dataset_path: Path, project_path: Path, checkpoint: str) -> None:
        """Test model from checkpoint."""
        model, dataset, engine = self._get_objects(
            model_name=model_name,
            dataset_path=dataset_path,
            project_path=project_path,
        )
        engine.test(
            model=model,
            datamodule=dataset,
            ckpt_path=checkpoint,
        )

    @pytest.mark.parametrize("model_name", models())
    def test_train(self, model_name: str, dataset_path: Path, project_path: Path, checkpoint: str) -> None:
        """Train model from checkpoint."""
        model, dataset, engine = self._get_objects(
            model_name=model_name,
            dataset_path=dataset_path,
            project_path=project_path,
        )
        engine.train(
            model=model,
            datamodule=dataset,
            ckpt_path=checkpoint,
        )

    @pytest.mark.parametrize("model_name", models())
    def test_validate(self, model_name: str, dataset_path: Path, project_path: Path, checkpoint: str) -> None:
        """Validate model from checkpoint."""
        model, dataset, engine = self._get_objects(
            model_name=model_name,
            dataset_path=dataset_path,
            project_path=project_path,
        )
        engine.validate(
            model=model,
            datamodule=dataset,
            ckpt_path=checkpoint,
        )

    @pytest.mark.parametrize("model_name", models())
    def test_predict(self, model_name: str, dataset_path: Path, project_path: Path, checkpoint: str) -> None:
        """Predict using model from checkpoint."""
        model, datamodule, engine = self._get_objects(
            model_name=model_name,
            dataset_path=dataset_path,
            project_path=project_path,
        )
        engine.predict(
            model=model,
            ckpt_path=checkpoint,
            datamodule=datamodule,
        )

    @pytest.mark.parametrize("model_name", models())
    @pytest.mark.parametrize("export_type", export_types())
    def test_export(
        self,
        model_name: str,
        export_type: ExportType,
        dataset_path: Path,
        project_path: Path,
        checkpoint: str,
    ) -> None:
        """Export model from checkpoint."""
        model, _, engine = self._get_objects(
            model_name=model_name,
            dataset_path=dataset_path,
            project_path=project_path,
        )
        # torch 2.14 writes ONNX opset 18; anomalib's default 14 needs a down-conversion that fails.
        export_kwargs: dict[str, Any] = {}
        if export_type in {ExportType.ONNX, ExportType.OPENVINO}:
            export_kwargs["onnx_kwargs"] = {"opset_version": 18}
        engine.export(
            model=model,
            ckpt_path=checkpoint,
            export_type=export_type,
            **export_kwargs,
        )

    @staticmethod
    def _get_objects(
        model_name: str,
        dataset_path: Path,
        project_path: Path,
    ) -> tuple[AnomalibModule, AnomalibDataModule, Engine]:
        """Return model, dataset, and engine objects.

        Args:
            model_name (str): Name of the model to train
            dataset_path (Path): Path to the root of dummy dataset
            project_path (Path): path to the temporary project folder

        Returns:
            tuple[AnomalibModule, AnomalibDataModule, Engine]: Returns the created objects for model, dataset,
                and engine
        """
        dataset = MVTecAD(
            root=dataset_path / "mvtecad",
            category="dummy",
            train_batch_size=2,
            num_workers=0,
        )

        model = get_model(model_name, **EXTRA_ARGS.get(model_name, {}))

        engine = Engine(
            logger=False,
            default_root_dir=project_path,
            max_epochs=1,
            devices=1,
        )
        return model, dataset, engine
