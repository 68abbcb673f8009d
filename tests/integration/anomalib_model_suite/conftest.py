# Copyright (C) 2023-2025 Intel Corporation
# SPDX-License-Identifier: Apache-2.0

"""Fixtures of anomalib's model suite (from ``tests/conftest.py`` of open-edge-platform/anomalib), trimmed.

Changed: the project folder is pytest's per-worker temporary folder (anomalib's ``<repo>/tmp`` is removed by
whichever ``pytest -n`` worker ends first), and only the dummy MVTecAD data set is generated, with small images.
"""

from pathlib import Path

import pytest

from tests.integration.anomalib_model_suite.data import DummyImageDatasetGenerator

IMAGE_SHAPE = (64, 64)


@pytest.fixture(scope="session")
def project_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a temporary directory path that is used as the project directory for the entire test."""
    return tmp_path_factory.mktemp("anomalib_model_suite")


@pytest.fixture(scope="session")
def dataset_path(project_path: Path) -> Path:
    """Generate the dummy MVTecAD data set and return the dataset path."""
    dataset_path_ = project_path / "datasets"
    DummyImageDatasetGenerator(root=dataset_path_, image_shape=IMAGE_SHAPE, seed=0).generate_dataset()
    return dataset_path_
