# Copyright (C) 2023-2026 Intel Corporation
# SPDX-License-Identifier: Apache-2.0

"""Test Helpers - Dataset.

Trimmed from ``tests/helpers/data.py`` of open-edge-platform/anomalib (Apache-2.0): only the dummy MVTecAD
generator the model suite uses is kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from anomalib.data.utils import LabelName
from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator
from skimage import img_as_ubyte
from skimage.io import imsave


class DummyImageGenerator:
    """Dummy image generator: flat-colour normal images, Perlin-noise anomalies with their masks.

    Args:
        image_shape: Image shape. Defaults to (256, 256).
        rng: Random number generator.

    """

    def __init__(self, image_shape: tuple[int, int] = (256, 256), rng: np.random.Generator | None = None) -> None:
        self.image_shape = image_shape
        self.augmenter = PerlinAnomalyGenerator()
        self.rng = rng if rng else np.random.default_rng()

    def generate_normal_image(self) -> tuple[np.ndarray, np.ndarray]:
        """Generate a normal image."""
        image = np.zeros([*self.image_shape, 3]).astype(np.uint8)
        image[...] = self.rng.integers(low=0, high=255, size=[3])
        mask = np.zeros(self.image_shape).astype(np.uint8)

        return image, mask

    def generate_abnormal_image(self, beta: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
        """Generate an abnormal image (beta: weight of the perturbation superimposed on the image)."""
        image, _ = self.generate_normal_image()

        perturbation, mask = self.augmenter.generate_perturbation(height=self.image_shape[0], width=self.image_shape[1])
        perturbation = perturbation.cpu().numpy()
        mask = mask.cpu().numpy()

        abnormal_image = (image * (1 - mask) + (beta) * perturbation + (1 - beta) * image * (mask)).astype(np.uint8)

        return abnormal_image, mask.squeeze()

    def generate_image(
        self,
        label: LabelName = LabelName.NORMAL,
        image_filename: Path | str | None = None,
        mask_filename: Path | str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Generate a random image with the label, and save it (and its mask) when file names are given."""
        func = self.generate_normal_image if label == LabelName.NORMAL else self.generate_abnormal_image
        image, mask = func()

        if image_filename:
            self.save_image(filename=image_filename, image=image)

        if mask_filename:
            self.save_image(filename=mask_filename, image=img_as_ubyte(mask))

        return image, mask

    @staticmethod
    def save_image(filename: Path | str, image: np.ndarray, check_contrast: bool = False) -> None:
        """Save image to filesystem."""
        filename = Path(filename)
        filename.parent.mkdir(parents=True, exist_ok=True)
        imsave(fname=filename, arr=image, check_contrast=check_contrast)


class DummyImageDatasetGenerator:
    """Generate a dummy MVTecAD dataset (category ``dummy``) under ``root / "mvtecad"``.

    Args:
        root: Path to the root directory.
        normal_category: Folder of normal images.
        abnormal_category: Folder of abnormal images.
        num_train: Number of training images.
        num_test: Number of test images per category.
        image_shape: Image shape.
        seed: Seed of the random number generator.

    """

    def __init__(
        self,
        root: Path | str,
        normal_category: str = "good",
        abnormal_category: str = "bad",
        num_train: int = 5,
        num_test: int = 5,
        image_shape: tuple[int, int] = (256, 256),
        seed: int | None = None,
    ) -> None:
        self.dataset_root = Path(root) / "mvtecad"
        self.normal_category = normal_category
        self.abnormal_category = abnormal_category
        self.num_train = num_train
        self.num_test = num_test
        self.image_generator = DummyImageGenerator(image_shape=image_shape, rng=np.random.default_rng(seed))

    def generate_dataset(
        self,
        image_extension: str = ".png",
        mask_suffix: str = "_mask",
        mask_extension: str = ".png",
    ) -> None:
        """Generates dummy MVTecAD dataset using the same convention as MVTec AD."""
        dataset_category = "dummy"

        for split in ("train", "test"):
            path = self.dataset_root / dataset_category / split / self.normal_category
            num_images = self.num_train if split == "train" else self.num_test
            for i in range(num_images):
                image_filename = path / f"{i:03}{image_extension}"
                self.image_generator.generate_image(label=LabelName.NORMAL, image_filename=image_filename)

        path = self.dataset_root / dataset_category / "test" / self.abnormal_category
        mask_path = self.dataset_root / dataset_category / "ground_truth" / self.abnormal_category
        for i in range(self.num_test):
            image_filename = path / f"{i:03}{image_extension}"
            mask_filename = mask_path / f"{i:03}{mask_suffix}{mask_extension}"
            self.image_generator.generate_image(LabelName.ABNORMAL, image_filename, mask_filename)
