"""Base classes for datamodules that select radiographs from label files and read them from a preprocessed cache.

A subclass only says which images form which split (:meth:`CachedRadiographDataModule.select`), with their
labels and boxes, and how they are preprocessed; this base class caches them
(:class:`~anomalib_medical.data.utils.cache.RadiographCache`) in :meth:`prepare_data` (and in ``setup`` for
whatever is still missing, e.g. when ``setup`` is called by hand) and serves them as anomalib datasets whose
samples table has ``image_path``, ``mask_path``, ``label``, ``label_index``, ``split`` and ``image_id``.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from anomalib.data import AnomalibDataModule
from anomalib.data.utils import Split, TestSplitMode, ValSplitMode
from pandas import DataFrame
from torchvision.transforms.v2 import Transform

from anomalib_medical.data.utils.cache import CachedFiles, CacheEntry, Preprocessing, RadiographCache
from anomalib_medical.data.utils.dataset import FullDepthDataset
from anomalib_medical.data.utils.images import make_samples_dataframe


@dataclass(frozen=True)
class SelectedImage:
    """An image chosen for a split.

    Args:
        entry: What to cache (id, source file, boxes or ``None`` for no mask).
        split: ``"train"``, ``"val"`` or ``"test"``.
        label_index: 0 for normal, 1 for abnormal.
        listed_in: The label file that lists the image, named when the image is missing.

    """

    entry: CacheEntry
    split: Split
    label_index: int
    listed_in: Path


class CachedRadiographDataset(FullDepthDataset):
    """An anomalib dataset over a samples table of cached images.

    Args:
        name: Data set name (shown in logs and result folders).
        samples: Samples table (see :func:`~anomalib_medical.data.utils.images.make_samples_dataframe`).
        augmentations: Transforms applied to each image (and mask).

    """

    def __init__(self, name: str, samples: DataFrame, augmentations: Transform | None = None) -> None:
        super().__init__(augmentations=augmentations)
        self._name = name
        self.samples = samples

    @property
    def name(self) -> str:
        """Data set name."""
        return self._name


class CachedRadiographDataModule(AnomalibDataModule, ABC):
    """Base datamodule: fixed train/val/test splits chosen from label files, images served from a cache.

    Args:
        root: Folder with the data set as its provider distributes it.
        cache_dir: Parent folder of the preprocessed caches; default ``<root>_cache`` next to ``root``.
        preprocessing: How images are preprocessed into the cache.
        train_batch_size: Training batch size.
        eval_batch_size: Validation and test batch size.
        num_workers: Data loader workers; also the threads that fill the cache.
        train_augmentations: Augmentations for training images.
        val_augmentations: Augmentations for validation images.
        test_augmentations: Augmentations for test images.
        augmentations: Augmentations for every split without its own.
        seed: Seed of the random draws that choose the splits.

    """

    def __init__(
        self,
        root: str | Path,
        cache_dir: str | Path | None,
        preprocessing: Preprocessing,
        train_batch_size: int,
        eval_batch_size: int,
        num_workers: int,
        train_augmentations: Transform | None,
        val_augmentations: Transform | None,
        test_augmentations: Transform | None,
        augmentations: Transform | None,
        seed: int,
    ) -> None:
        super().__init__(
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            train_augmentations=train_augmentations,
            val_augmentations=val_augmentations,
            test_augmentations=test_augmentations,
            augmentations=augmentations,
            val_split_mode=ValSplitMode.FROM_DIR,
            test_split_mode=TestSplitMode.FROM_DIR,
            seed=seed,
        )
        self.root = Path(root)
        default_cache = self.root.resolve().with_name(self.root.resolve().name + "_cache")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache
        self.preprocessing = preprocessing
        self.cache = RadiographCache(self.cache_dir, self.name, preprocessing)

    @abstractmethod
    def select(self) -> list[SelectedImage]:
        """Read the label files and choose the images of every split.

        Returns:
            The selected images; each id at most once.

        Raises:
            FileNotFoundError: For a missing label file or image (naming it).
            ValueError: For an unknown column layout or a pool too small for the requested split sizes.

        """

    def rng(self) -> np.random.Generator:
        """Return a fresh generator seeded with ``seed``: every call gives the same draws."""
        return np.random.default_rng(self.seed)

    def prepare_data(self) -> None:
        """Preprocess every selected image (and mask) that is not in the cache yet."""
        self._build(self.select())

    def samples(self) -> DataFrame:
        """Return the samples table of all splits with cached image and mask paths (filling the cache if needed)."""
        selected = self.select()
        files = self._build(selected)
        return make_samples_dataframe(
            image_paths=[file.image for file in files],
            label_indices=[image.label_index for image in selected],
            splits=[image.split for image in selected],
            mask_paths=[file.mask for file in files],
            extra_columns={"image_id": [image.entry.key for image in selected]},
        )

    def _build(self, selected: list[SelectedImage]) -> list[CachedFiles]:
        """Check that the images to preprocess exist, then fill the cache."""
        missing = [image for image in self.cache.missing([i.entry for i in selected]) if not image.source.is_file()]
        if missing:
            listed_in = {image.entry.key: image.listed_in for image in selected}
            first = missing[0]
            msg = (
                f"Image {first.source} is listed in {listed_in[first.key]} but does not exist "
                f"({len(missing)} listed image(s) missing under {self.root})."
            )
            raise FileNotFoundError(msg)
        return self.cache.build([image.entry for image in selected], workers=self.num_workers)

    def _create_test_split(self) -> None:
        """Keep the test split as selected.

        anomalib's default would move training images into a test split that has no normal image.
        """

    def _create_val_split(self) -> None:
        """Keep the validation split as selected."""

    def _setup(self, _stage: str | None = None) -> None:
        """Build the train, val and test datasets from the cached samples."""
        samples = self.samples()
        for split in Split:
            subset = samples[samples.split == split.value].reset_index(drop=True)
            subset.attrs = dict(samples.attrs)
            setattr(self, f"{split.value}_data", CachedRadiographDataset(self.name, subset))
