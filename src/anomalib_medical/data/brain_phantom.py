"""BrainPhantom: an offline toy set of T2-weighted-like brain volumes with tumour-like and stroke-like lesions.

Every subject is built from the MNI152 2009c nonlinear symmetric template that nilearn ships
(``nilearn/datasets/data/mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz``: 1 mm, 197 x 233 x 189,
skull-stripped), prepared as the real brain data sets (:mod:`anomalib_medical.data.utils.brain`: LAS orientation,
brain box padded centred to 160 x 224 x 160) and resampled to ``shape`` (default 40 x 56 x 40, 4 mm voxels: a
quarter of the paper's 80 x 112 x 80, so it trains on a CPU).

T2-like contrast from the tissue maps: the grey- and white-matter probability maps, cerebrospinal fluid the rest of
the brain mask (``1 - GM - WM``), and a signal per tissue ``CSF > GM > WM`` (:data:`T2_SIGNAL`, each jittered per
subject), so fluid is bright, white matter dark, as on T2-weighted MRI (and as in HCP's ``T2w``).

A normal subject (:meth:`BrainPhantomGenerator.generate`) is the template under a random affine map (rotation,
anisotropic scale, shift) and a smooth elastic displacement, with a smooth multiplicative bias field and Rician
noise; the background (outside the deformed brain mask) is 0 and the brain is z-scored, the intensity space of the
preprocessed HCP / BraTS volumes. Abnormal subjects add one lesion, with its voxel mask:

- ``tumour``: an irregular sphere centred in the white or deep grey matter: a bright necrotic core, a darker rim and
  a T2-bright oedema that reaches further along white matter than through grey matter (not into fluid); the
  surrounding tissue is pushed outwards (mass effect: a radial displacement that decays away from the tumour). The
  mask is the whole tumour (core, rim and oedema: BraTS's whole-tumour label).
- ``stroke``: a wedge of a vascular territory, from a point inside the brain out to the cortex, T2-bright in grey and
  white matter (a subacute infarct, ISLES's ``OT``), without mass effect. The mask is the affected tissue.

Subject ``i`` of each split is drawn from a generator seeded with ``(seed, split, i)``: the data set is reproducible
and its splits are disjoint draws. All splits are generated once into
``<root>/shape<D>x<H>x<W>_seed<seed>_..._v<version>/`` as ``.npy`` volumes and masks with a ``manifest.csv`` (as
DigitAnatomy's evaluation sets) and read back like any volume data set.

Inter-dataset blending: Baugh et al. blend patches of abdominal CTs (MOOD) into brains. ``foreign_dir`` writes
offline stand-ins there, :func:`foreign_volume` (ellipsoid "bodies" with multi-scale texture and blob "organs",
z-scored), for the localiser's ``source_images``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from anomalib.data.utils import LabelName, Split
from scipy import ndimage
from skimage import transform

from anomalib_medical.data.utils.brain import (
    BRAIN_INPUT_SIZE,
    BRAIN_ORIENTATION,
    LeftRightFlip,
    foreground_box,
    pad_centred,
)
from anomalib_medical.data.utils.download import preparation_lock
from anomalib_medical.data.utils.volume import VolumeDataModule
from anomalib_medical.data.utils.volume_reader import read_volume_with_geometry

__all__ = [
    "ANOMALY_TYPES",
    "PHANTOM_TYPES",
    "T2_SIGNAL",
    "TEMPLATE_FILES",
    "BrainPhantom",
    "BrainPhantomGenerator",
    "BrainTemplate",
    "load_brain_template",
    "write_phantom_set",
]

logger = logging.getLogger(__name__)

NORMAL = "normal"
ANOMALY_TYPES = ("tumour", "stroke")
PHANTOM_TYPES = (NORMAL, *ANOMALY_TYPES)
TISSUES = ("csf", "gm", "wm")
T2_SIGNAL = {"csf": 1.0, "gm": 0.55, "wm": 0.35}
"""T2-weighted signal of each tissue, relative to fluid (jittered by up to 5 % per subject)."""

LESION_SIGNAL = {"core": 0.95, "rim": 0.5, "oedema": 0.8, "stroke": 0.8}
"""Signal of the lesion compartments (T2: necrosis and oedema near fluid, enhancing rim near grey matter)."""

TEMPLATE_FILES = {name: f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz" for name in ("t1", "gm", "wm")}
"""nilearn's bundled MNI152 2009 files (in ``nilearn/datasets/data``)."""

FORMAT_VERSION = 2  # bump when the generator's output changes: generated folders are keyed on it
MANIFEST = "manifest.csv"
_STREAMS = {Split.TRAIN: 0, Split.VAL: 1, Split.TEST: 2}
_LESION_ATTEMPTS = 10
_FOREIGN_STREAM = 3


# ------------------------------------------------------------------------------------------- template


@dataclass(frozen=True)
class BrainTemplate:
    """Tissue fractions of the template brain at one resolution.

    Attributes:
        tissues: (3, D, H, W) float32 fractions of CSF, GM and WM (they sum to at most 1; 0 outside the brain).
        voxel_mm: Voxel side in mm (isotropic).

    """

    tissues: np.ndarray
    voxel_mm: float

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape ``(D, H, W)``."""
        return tuple(self.tissues.shape[1:])  # type: ignore[return-value]


def nilearn_data_dir() -> Path:
    """Folder of nilearn's bundled data, found without importing nilearn.

    Raises:
        ModuleNotFoundError: If nilearn is not installed (``pip install anomalib-medical[brain]``).

    """
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        msg = "BrainPhantom needs nilearn's MNI152 template: pip install 'anomalib-medical[brain]' (or nilearn)"
        raise ModuleNotFoundError(msg)
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


@lru_cache(maxsize=4)
def load_brain_template(shape: tuple[int, int, int] = (40, 56, 40)) -> BrainTemplate:
    """Read the MNI152 tissue maps, box and pad them as the real data (160 x 224 x 160 at 1 mm), resample to ``shape``.

    Raises:
        ValueError: If ``shape`` does not have the aspect of 160 x 224 x 160 within one voxel.

    """
    factor = BRAIN_INPUT_SIZE[0] / shape[0]
    if any(abs(size / factor - s) > 1 for size, s in zip(BRAIN_INPUT_SIZE, shape, strict=True)):
        msg = f"shape {shape} must have the aspect of {BRAIN_INPUT_SIZE} (e.g. 40x56x40, 80x112x80)"
        raise ValueError(msg)
    folder = nilearn_data_dir()
    maps = {
        name: read_volume_with_geometry(folder / file, BRAIN_ORIENTATION)[0] / np.float32(255.0)
        for name, file in TEMPLATE_FILES.items()
    }
    brain = ndimage.binary_fill_holes(maps["t1"] > 0)
    box = foreground_box(brain)
    brain = brain[box]
    grey, white = maps["gm"][box] * brain, maps["wm"][box] * brain
    fluid = np.clip(1.0 - grey - white, 0.0, 1.0) * brain
    stacked = [pad_centred(tissue, BRAIN_INPUT_SIZE) for tissue in (fluid, grey, white)]
    tissues = np.stack([_downsample(tissue, shape) for tissue in stacked])
    return BrainTemplate(tissues=tissues.astype(np.float32), voxel_mm=float(factor))


def _downsample(volume: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Average blocks of voxels when ``shape`` divides the volume's, else resize with anti-aliasing."""
    factors = [size // s for size, s in zip(volume.shape, shape, strict=True)]
    if all(f * s == size for f, s, size in zip(factors, shape, volume.shape, strict=True)):
        blocks = volume.reshape(shape[0], factors[0], shape[1], factors[1], shape[2], factors[2])
        return blocks.mean(axis=(1, 3, 5))
    return transform.resize(volume, shape, order=1, preserve_range=True)


# ------------------------------------------------------------------------------------------ generator


def smooth_noise(shape: tuple[int, ...], cells: int, rng: np.random.Generator, channels: int = 1) -> np.ndarray:
    """Smooth random fields ``(channels, *shape)`` of zero mean and unit standard deviation (Gaussian-filtered noise).

    Args:
        shape: Spatial shape.
        cells: Blobs along the longest side (the filter's sigma is ``max(shape) / (2 * cells)``; more: finer).
        rng: Random generator.
        channels: Independent fields.

    """
    sigma = max(shape) / (2.0 * cells)
    fields = []
    for _ in range(channels):
        field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
        fields.append((field - field.mean()) / (field.std() + 1e-8))
    return np.stack(fields).astype(np.float32)


def _sample(fields: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Linearly sample each of ``fields`` (C, D, H, W) at voxel coordinates ``coords`` (3, D, H, W), 0 outside."""
    return np.stack([ndimage.map_coordinates(f, coords, order=1, mode="constant", cval=0.0) for f in fields])


def _smoothstep(x: np.ndarray) -> np.ndarray:
    """0 below -1, 1 above 1, smooth in between (soft lesion borders, about one voxel wide)."""
    t = np.clip((x + 1.0) / 2.0, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


class BrainPhantomGenerator:
    """Generate phantom subjects from a :class:`BrainTemplate` (module docstring).

    Args:
        template: Tissue fractions at the output resolution.
        max_rotation_deg: Largest rotation about each axis.
        max_scale: Largest relative scale change per axis.
        max_shift_mm: Largest shift per axis.
        elastic_mm: Standard deviation of the elastic displacement.
        bias: Largest standard deviation of the log bias field.
        noise: Range of the Rician noise level, relative to the fluid signal.
        min_lesion_ml: Smallest lesion volume in ml (a smaller draw is drawn again, up to 10 times).

    """

    def __init__(
        self,
        template: BrainTemplate,
        max_rotation_deg: float = 8.0,
        max_scale: float = 0.08,
        max_shift_mm: float = 6.0,
        elastic_mm: float = 3.0,
        bias: float = 0.15,
        noise: tuple[float, float] = (0.01, 0.04),
        min_lesion_ml: float = 2.0,
    ) -> None:
        self.template = template
        self.max_rotation_deg = max_rotation_deg
        self.max_scale = max_scale
        self.max_shift_mm = max_shift_mm
        self.elastic_mm = elastic_mm
        self.bias = bias
        self.noise = noise
        self.min_lesion_ml = min_lesion_ml
        self._grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in template.shape], indexing="ij"))
        self._centre = (np.array(template.shape, dtype=np.float32) - 1) / 2
        brain = template.tissues.sum(0) >= 0.5
        self._depth = ndimage.distance_transform_edt(brain) * template.voxel_mm  # mm from the brain's edge

    def _mm(self, millimetres: float) -> float:
        return millimetres / self.template.voxel_mm

    def _subject_map(self, rng: np.random.Generator) -> np.ndarray:
        """Template coordinates (3, D, H, W) of every output voxel: random affine map plus elastic displacement."""
        angles = np.deg2rad(rng.uniform(-self.max_rotation_deg, self.max_rotation_deg, 3))
        rotation = np.eye(3)
        for axis, angle in enumerate(angles):
            i, j = [a for a in range(3) if a != axis]
            turn = np.eye(3)
            turn[[i, i, j, j], [i, j, i, j]] = [np.cos(angle), -np.sin(angle), np.sin(angle), np.cos(angle)]
            rotation = turn @ rotation
        matrix = rotation * rng.uniform(1 - self.max_scale, 1 + self.max_scale, 3)[None, :]
        shift = rng.uniform(-1, 1, 3) * self._mm(self.max_shift_mm)
        offsets = self._grid - self._centre[:, None, None, None]
        coords = np.einsum("ij,j...->i...", matrix, offsets) + (self._centre + shift)[:, None, None, None]
        elastic = smooth_noise(self.template.shape, 5, rng, channels=3) * self._mm(self.elastic_mm)
        return (coords + elastic).astype(np.float32)

    def _pick_centre(self, rng: np.random.Generator, weights: np.ndarray, min_depth_mm: float) -> np.ndarray:
        """Draw a voxel with probability ``weights`` among those at least ``min_depth_mm`` inside the brain."""
        weights = np.where(self._depth >= min_depth_mm, weights, 0.0).ravel()
        index = rng.choice(weights.size, p=weights / weights.sum())
        return np.array(np.unravel_index(index, self.template.shape), dtype=np.float32)

    def _tumour(self, rng: np.random.Generator, coords: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Mass-effect coordinates and the fractions of core, rim and oedema (functions of template position)."""
        _, grey, white = self.template.tissues
        radius = self._mm(rng.uniform(8.0, 16.0))  # core + rim
        centre = self._pick_centre(rng, white + 0.3 * grey, min_depth_mm=radius * self.template.voxel_mm + 8.0)
        offset = coords - centre[:, None, None, None]
        distance = np.sqrt((offset**2).sum(0)) + 1e-6
        shape_noise = 1.0 + 0.2 * _sample(smooth_noise(self.template.shape, 10, rng), coords)[0]
        rho = distance / shape_noise  # irregular radius
        core = _smoothstep(radius * rng.uniform(0.4, 0.7) - rho)
        whole = _smoothstep(radius - rho)
        oedema_reach = radius + self._mm(rng.uniform(6.0, 16.0))
        push = rng.uniform(0.3, 0.6) * radius * np.exp(0.5 - 0.5 * (distance / radius) ** 2) * distance / radius
        displaced = coords - push * offset / distance  # tissue read from nearer the centre: pushed outwards
        tissue = _sample(self.template.tissues, displaced)
        white_preference = np.clip(tissue[2] + 0.4 * tissue[1], 0.0, 1.0)
        oedema = _smoothstep(oedema_reach - rho) * white_preference * (1 - whole)
        return displaced, {"core": core, "rim": whole - core, "oedema": oedema}

    def _stroke(self, rng: np.random.Generator, coords: np.ndarray) -> dict[str, np.ndarray]:
        """Fraction of a wedge from a point inside the brain out to a cortical point (function of template position)."""
        grey = self.template.tissues[1]
        cortex = self._pick_centre(rng, grey * (self._depth < 10.0), min_depth_mm=2.0)
        apex = cortex + (self._centre - cortex) * rng.uniform(0.35, 0.6)
        axis = (cortex - apex) / (np.linalg.norm(cortex - apex) + 1e-6)
        offset = coords - apex[:, None, None, None]
        along = np.einsum("i,i...->...", axis, offset)
        across = np.sqrt(np.maximum((offset**2).sum(0) - along**2, 0.0))
        half_angle = np.tan(np.deg2rad(rng.uniform(12.0, 25.0)))
        shape_noise = 1.0 + 0.25 * _sample(smooth_noise(self.template.shape, 10, rng), coords)[0]
        length = np.linalg.norm(cortex - apex) + self._mm(10.0)
        inside = np.minimum(along * half_angle * shape_noise - across, np.minimum(along, length - along))
        return {"stroke": _smoothstep(inside)}

    def generate(self, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Generate one subject.

        Args:
            kind: ``"normal"``, ``"tumour"`` or ``"stroke"``.
            rng: Random generator of this subject.

        Returns:
            ``(volume, mask)``: float32 ``(D, H, W)`` (z-scored brain, background 0) and bool ``(D, H, W)`` (the
            lesion; empty for a normal subject).

        Raises:
            ValueError: If ``kind`` is unknown.

        """
        if kind not in PHANTOM_TYPES:
            msg = f"kind must be one of {PHANTOM_TYPES}, got {kind!r}"
            raise ValueError(msg)
        coords = self._subject_map(rng)
        lesions: dict[str, np.ndarray] = {}
        tissue_coords = coords
        min_voxels = self.min_lesion_ml * 1000.0 / self.template.voxel_mm**3
        for _ in range(_LESION_ATTEMPTS):  # a wedge may fall mostly into fluid: draw it again
            if kind == "tumour":
                tissue_coords, lesions = self._tumour(rng, coords)
            elif kind == "stroke":
                lesions = self._stroke(rng, coords)
            tissue = _sample(self.template.tissues, tissue_coords)
            if "stroke" in lesions:
                lesions["stroke"] = lesions["stroke"] * (tissue[1] + tissue[2])  # infarcted tissue, not fluid
            brain = tissue.sum(0) >= 0.5
            mask = (sum(lesions.values()) >= 0.5) & brain if lesions else np.zeros(brain.shape, dtype=bool)
            if not lesions or mask.sum() >= min_voxels:
                break
        signal = np.array([T2_SIGNAL[name] for name in TISSUES]) * rng.uniform(0.95, 1.05, len(TISSUES))
        image = np.einsum("c,c...->...", signal, tissue)
        heterogeneity = 1.0 + 0.08 * smooth_noise(self.template.shape, 12, rng)[0]
        for name, fraction in lesions.items():
            image = image * (1 - fraction) + fraction * LESION_SIGNAL[name] * heterogeneity
        image = image * np.exp(rng.uniform(0, self.bias) * smooth_noise(self.template.shape, 3, rng)[0])
        sigma = rng.uniform(*self.noise)
        image = np.hypot(image + sigma * rng.standard_normal(image.shape), sigma * rng.standard_normal(image.shape))
        values = image[brain]
        volume = np.where(brain, (image - values.mean()) / (values.std() + 1e-8), 0.0)
        return volume.astype(np.float32), mask


# ------------------------------------------------------------------------------------------- datasets


def write_phantom_set(
    folder: Path, generator: BrainPhantomGenerator, counts: dict[Split, dict[str, int]], seed: int
) -> pd.DataFrame:
    """Generate every split into ``folder`` (``<split>/<kind>/<index>.npy`` and ``..._mask.npy``) with a manifest.

    Subject ``i`` of a split and kind is drawn from ``np.random.default_rng([seed, split, kind, i])``. The folder is
    written under a temporary name and renamed when complete.

    Returns:
        The samples table (anomalib's columns, ``anomaly_type``), also written to ``folder/manifest.csv``.

    """
    staging = folder.with_name(f".{folder.name}.{os.getpid()}.partial")
    rows = []
    for split, per_kind in counts.items():
        for kind, count in per_kind.items():
            for index in range(count):
                rng = np.random.default_rng([seed, _STREAMS[split], PHANTOM_TYPES.index(kind), index])
                volume, mask = generator.generate(kind, rng)
                relative = Path(split.value) / kind / f"{index:04d}"
                (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                np.save(staging / f"{relative}.npy", volume)
                abnormal = kind != NORMAL
                if abnormal:
                    np.save(staging / f"{relative}_mask.npy", mask.astype(np.uint8))
                rows.append(
                    {
                        "image_path": f"{relative}.npy",
                        "mask_path": f"{relative}_mask.npy" if abnormal else "",
                        "label": "abnormal" if abnormal else "normal",
                        "label_index": int(LabelName.ABNORMAL if abnormal else LabelName.NORMAL),
                        "anomaly_type": kind,
                        "split": split.value,
                        "lesion_voxels": int(mask.sum()),
                    }
                )
    manifest = pd.DataFrame(rows)
    manifest.to_csv(staging / MANIFEST, index=False)
    os.replace(staging, folder)
    return manifest


def foreign_volume(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Make a non-brain volume for inter-dataset blending: an ellipsoid "body", multi-scale texture, blob "organs".

    A stand-in, offline, for the abdominal CTs (MOOD) Baugh et al. blend into brains: z-scored inside the body,
    background 0 (the foreground rule of the sources), float32 ``shape``.
    """
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij"))
    radii = rng.uniform(0.6, 0.95, 3)[:, None, None, None]
    body = ((grid / radii) ** 2).sum(0) < 1.0
    texture = sum(weight * smooth_noise(shape, cells, rng)[0] for weight, cells in ((1.0, 3), (0.5, 8), (0.25, 16)))
    for _ in range(rng.integers(3, 7)):
        centre = rng.uniform(-0.5, 0.5, 3)[:, None, None, None]
        size = rng.uniform(0.1, 0.3)
        texture = texture + rng.choice([-2.0, 2.0]) * (((grid - centre) ** 2).sum(0) < size**2)
    values = texture[body]
    return np.where(body, (texture - values.mean()) / (values.std() + 1e-8), 0.0).astype(np.float32)


def write_foreign_volumes(folder: Path, shape: tuple[int, int, int], count: int, seed: int) -> None:
    """Write ``count`` :func:`foreign_volume` files ``<index>.npy`` into ``folder`` (created whole, then renamed)."""
    staging = folder.with_name(f".{folder.name}.{os.getpid()}.partial")
    staging.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        np.save(
            staging / f"{index:04d}.npy", foreign_volume(shape, np.random.default_rng([seed, _FOREIGN_STREAM, index]))
        )
    os.replace(staging, folder)


class BrainPhantom(VolumeDataModule):
    """BrainPhantom: MNI152-based T2-like brain volumes, normal or with a tumour-like or stroke-like lesion.

    Train: ``train_size`` normal subjects. Validation and test: ``samples_per_type`` normal subjects and as many with
    each lesion type, with voxel masks. Generated once into ``root`` (module docstring) and read back as ``.npy``.
    Volumes are ``(1, D, H, W)`` float32, z-scored in the brain with background 0 (the real data's intensity space).

    Args:
        root: Folder of the generated sets. Defaults to ``"./datasets/BrainPhantom"``.
        shape: ``(D, H, W)`` of the volumes, with the aspect of 160 x 224 x 160 (40 x 56 x 40: 4 mm voxels;
            80 x 112 x 80: the paper's resolution). Defaults to ``(40, 56, 40)``.
        train_size: Normal training subjects. Defaults to ``40``.
        samples_per_type: Subjects per type (normal, tumour, stroke) in each of validation and test.
            Defaults to ``10``.
        flip_left_right: Mirror training volumes left-right with probability 0.5 (the authors' training transform
            for brain MRI). Defaults to ``True``.
        foreign_dir: Folder to write ``foreign_count`` non-brain volumes of ``shape`` into (:func:`foreign_volume`),
            the sources of the localiser's ``inter_dataset_blending`` (``--model.source_images`` the same folder);
            ``None``: none. Defaults to ``None``.
        foreign_count: Non-brain volumes written into ``foreign_dir``. Defaults to ``20``.
        train_batch_size: Training batch size. Defaults to ``8``.
        eval_batch_size: Validation and test batch size. Defaults to ``8``.
        num_workers: Data loader workers. Defaults to ``0``.
        seed: Seed of the subjects. Defaults to ``0``.

    Raises:
        ValueError: If a size is not positive or ``shape`` has the wrong aspect.

    Example:
        >>> from anomalib.engine import Engine
        >>> from anomalib_medical.models import SyntheticTaskLocaliser
        >>> datamodule = BrainPhantom(train_size=8, samples_per_type=4)
        >>> Engine(max_epochs=1).fit(SyntheticTaskLocaliser(spatial_dims=3), datamodule=datamodule)  # doctest: +SKIP

    """

    def __init__(
        self,
        root: str | Path = "./datasets/BrainPhantom",
        shape: tuple[int, int, int] = (40, 56, 40),
        train_size: int = 40,
        samples_per_type: int = 10,
        flip_left_right: bool = True,
        foreign_dir: str | Path | None = None,
        foreign_count: int = 20,
        train_batch_size: int = 8,
        eval_batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            train_augmentations=LeftRightFlip() if flip_left_right else None,
            seed=seed,
        )
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or min(shape) < 1 or min(train_size, samples_per_type, foreign_count) < 1:
            msg = (
                f"BrainPhantom needs a 3-D shape and positive sizes, got shape={shape}, train_size={train_size}, "
                f"samples_per_type={samples_per_type}, foreign_count={foreign_count}"
            )
            raise ValueError(msg)
        factor = BRAIN_INPUT_SIZE[0] / shape[0]
        if any(abs(size / factor - s) > 1 for size, s in zip(BRAIN_INPUT_SIZE, shape, strict=True)):
            msg = f"BrainPhantom shape {shape} must have the aspect of {BRAIN_INPUT_SIZE} (e.g. 40x56x40, 80x112x80)"
            raise ValueError(msg)
        self.root = Path(root)
        self.shape = shape
        self.train_size = train_size
        self.samples_per_type = samples_per_type
        self.category = "x".join(map(str, shape))
        self.foreign_dir = Path(foreign_dir) if foreign_dir is not None else None
        self.foreign_count = foreign_count

    @property
    def name(self) -> str:
        """Data set name."""
        return "BrainPhantom"

    @property
    def dataset_dir(self) -> Path:
        """Folder of this configuration's generated subjects."""
        size = "x".join(map(str, self.shape))
        name = f"shape{size}_train{self.train_size}_n{self.samples_per_type}_seed{self.seed}_v{FORMAT_VERSION}"
        return self.root / name

    def _counts(self) -> dict[Split, dict[str, int]]:
        evaluation = dict.fromkeys(PHANTOM_TYPES, self.samples_per_type)
        return {Split.TRAIN: {NORMAL: self.train_size}, Split.VAL: evaluation, Split.TEST: dict(evaluation)}

    def prepare_data(self) -> None:
        """Generate the subjects into :attr:`dataset_dir`, and the foreign volumes, unless they are there.

        Raises:
            ValueError: If ``foreign_dir`` holds volumes of another shape or number (from other settings).

        """
        if not (self.dataset_dir / MANIFEST).is_file():
            with preparation_lock(self.dataset_dir):
                if not (self.dataset_dir / MANIFEST).is_file():
                    generator = BrainPhantomGenerator(load_brain_template(self.shape))
                    logger.info("Generating BrainPhantom subjects into %s", self.dataset_dir)
                    write_phantom_set(self.dataset_dir, generator, self._counts(), self.seed or 0)
        if self.foreign_dir is not None:
            with preparation_lock(self.foreign_dir):
                if not self.foreign_dir.is_dir():
                    write_foreign_volumes(self.foreign_dir, self.shape, self.foreign_count, self.seed or 0)
            files = sorted(self.foreign_dir.glob("*.npy"))
            shapes = {np.load(path, mmap_mode="r").shape for path in files}
            if len(files) != self.foreign_count or shapes != {self.shape}:
                msg = (
                    f"foreign_dir {self.foreign_dir} holds {len(files)} volumes of shapes {sorted(shapes)}, expected "
                    f"{self.foreign_count} of {self.shape}: delete it, or give each configuration its own folder"
                )
                raise ValueError(msg)

    def samples(self) -> pd.DataFrame:
        """Return the samples table of the generated subjects (generating them first if needed).

        Raises:
            FileNotFoundError: If a file listed in the manifest is missing.

        """
        self.prepare_data()
        samples = pd.read_csv(self.dataset_dir / MANIFEST, keep_default_na=False)
        for column in ("image_path", "mask_path"):
            samples[column] = [str(self.dataset_dir / path) if path else "" for path in samples[column]]
        missing = [path for path in [*samples.image_path, *samples.mask_path] if path and not Path(path).is_file()]
        if missing:
            msg = f"{len(missing)} BrainPhantom file(s) listed in the manifest are missing, e.g. {missing[0]}"
            msg += f" (delete {self.dataset_dir} to regenerate)"
            raise FileNotFoundError(msg)
        samples.attrs["task"] = "segmentation"
        return samples
