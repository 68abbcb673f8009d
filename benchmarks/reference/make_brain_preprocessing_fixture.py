"""Write the brain-preparation fixture of ``tests/unit/test_brain_datasets.py`` by running Baugh et al.'s code.

Usage (CPU, a few seconds)::

    python benchmarks/reference/make_brain_preprocessing_fixture.py \
        --authors /path/to/many-tasks-make-light-work --out tests/fixtures/authors/brain_preprocessing.npz

``--authors`` is a checkout of github.com/matt-baugh/many-tasks-make-light-work. Its
``multitask_method/preprocessing/brain_preproc.py`` reads the data set folders of the authors' machines when it is
imported, so only its imports, functions and ``brain_input_size`` are executed (parsed from the file), and
SimpleITK (not a dependency of this package) is replaced by nibabel returning SimpleITK's array, the voxel axes
reversed. :func:`inputs` makes two small skull-stripped "brains" with a bright lesion and its mask (integer voxels,
seeded; the test makes them again with this function): one stored as HCP's (0.7 mm, LAS), one as BraTS's (1 mm,
LPS). The authors'
``load_and_crop`` prepares each (``"hcp"``: resampled to 1 mm; ``"brats17"``: flipped along H), with the volume as
T1 and T2 and the mask as the segmentation; the fixture stores their low-resolution T2 and segmentation (before
the padding to 80 x 112 x 80, which their dataset container applies at loading). Nothing of the authors' code is
copied into this repository; only numbers it produced are.
"""

from __future__ import annotations

import argparse
import ast
import sys
import tempfile
import types
from pathlib import Path

import nibabel as nib
import numpy as np

AFFINES = {"hcp": np.diag([-0.7, 0.7, 0.7, 1.0]), "brats17": np.diag([-1.0, -1.0, 1.0, 1.0])}
"""Storage of each input: HCP's 0.7 mm LAS, BraTS's 1 mm LPS."""


def inputs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Two ellipsoid "brains" (NIfTI voxel axes, int16) with a bright lesion, and the lesion masks (uint8, label 2)."""
    rng = np.random.default_rng(0)
    volumes = {}
    for name, shape in (("hcp", (30, 36, 28)), ("brats17", (24, 28, 22))):
        grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
        brain = (grid**2).sum(0) < 0.8
        lesion = brain & (((grid - np.array([0.3, 0.3, 0.0])[:, None, None, None]) ** 2).sum(0) < 0.1)
        image = np.where(brain, rng.integers(80, 120, shape), 0) + 150 * lesion
        volumes[name] = (image.astype(np.int16), (2 * lesion).astype(np.uint8))
    return volumes


def authors_module(authors: Path) -> dict:
    """Namespace of the authors' ``brain_preproc.py`` without its module-level data set listing."""
    source = (authors / "multitask_method" / "preprocessing" / "brain_preproc.py").read_text()
    tree = ast.parse(source)
    body = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        or (isinstance(node, ast.Import | ast.ImportFrom) and not getattr(node, "module", "").startswith("multitask"))
        or (isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "brain_input_size")
    ]
    shim = types.ModuleType("SimpleITK")
    shim.ReadImage = lambda path: nib.load(str(path))
    shim.GetArrayFromImage = lambda image: np.asarray(image.dataobj).transpose(2, 1, 0)
    sys.modules["SimpleITK"] = shim
    namespace: dict = {}
    exec(compile(ast.Module(body=body, type_ignores=[]), "brain_preproc.py", "exec"), namespace)
    return namespace


def main() -> None:
    """Run the authors' preparation on :func:`inputs` and write the fixture."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authors", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/authors/brain_preprocessing.npz"))
    args = parser.parse_args()
    module = authors_module(args.authors)
    arrays = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, (image, mask) in inputs().items():
            image_path, mask_path = Path(folder) / f"{name}.nii.gz", Path(folder) / f"{name}_seg.nii.gz"
            nib.save(nib.Nifti1Image(image, AFFINES[name]), image_path)
            nib.save(nib.Nifti1Image(mask, AFFINES[name]), mask_path)
            _, low_res, _ = module["load_and_crop"](image_path, image_path, mask_path, name)
            arrays[f"{name}/t2"], arrays[f"{name}/seg"] = low_res[1].astype(np.float32), low_res[2].astype(np.uint8)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out}: " + ", ".join(f"{key} {value.shape}" for key, value in arrays.items()))


if __name__ == "__main__":
    main()
