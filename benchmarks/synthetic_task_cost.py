"""Cost per image of each synthetic task (and of the labelling), in 2-D and 3-D.

    OMP_NUM_THREADS=1 python benchmarks/synthetic_task_cost.py [--sizes 64 128 256] [--volume 80 112 80] [--images 32]

Each task corrupts ``--images`` different images (natural photographs from scikit-image, grey, in [-1, 1]; the
other images are the intra-dataset sources) after a warm-up; the table gives milliseconds per image for the task
alone and for task + labelling (what training pays per image, on the CPU, single-threaded). Volumes are
brain-like: an ellipsoid of stacked photographs on a zero background, with the authors' foreground
``binary_fill_holes(x != 0)`` (computed once per volume, its cost in the last row); their inter-dataset sources
are other such volumes saved as ``.npy``. ``--probabilistic`` runs the blending tasks as P-PII.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from skimage import data, transform

from anomalib_medical.models.synthetic_task_localiser.tasks import (
    TASK_NAMES,
    InterDatasetBlendingTask,
    build_task,
    nonzero_foreground,
)
from anomalib_medical.models.synthetic_task_localiser.tasks.blending import load_source_image

PHOTOS = ("camera", "moon", "coins", "brick", "grass", "gravel", "page", "text")


def images(shape: tuple[int, ...], count: int) -> list[np.ndarray]:
    """Grey photographs resized to ``shape`` (2-D), or stacks of them (3-D), in [-1, 1]."""
    result = []
    for i in range(count):
        photo = getattr(data, PHOTOS[i % len(PHOTOS)])().astype(float) / 255
        if len(shape) == 3:
            photo = np.stack([np.roll(photo, 7 * k, axis=0) for k in range(8)])
        resized = transform.resize(photo, shape, anti_aliasing=True)
        image = np.flip(resized, axis=-1).copy() * 2 - 1 if i >= len(PHOTOS) else resized * 2 - 1
        if len(shape) == 3:  # brain-like: an ellipsoid on a zero background
            grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
            image = np.where(sum(g**2 for g in grid) < 0.85, image + 1.5, 0.0)
        result.append(image)
    return result


def time_task(name: str, shape: tuple[int, ...], count: int, volumes: Path, probabilistic: bool) -> tuple[float, float]:
    """Milliseconds per image of the task alone and of the task with its labelling."""
    task = build_task(
        name,
        push_distance=(0.5, 10.0 * shape[0] / 256),
        source_images=volumes if len(shape) == 3 else None,
        probabilistic_blending=probabilistic,
    )
    if isinstance(task, InterDatasetBlendingTask):  # steady state: every source read and resized once
        for source in task.sources:
            load_source_image(source, shape, task.source_intensity)
    batch = images(shape, count)
    foregrounds = [nonzero_foreground(image) if len(shape) == 3 else None for image in batch]
    rng = np.random.default_rng(0)
    task(batch[0], rng, foregrounds[0], batch[1:], foregrounds[1:])  # warm-up
    task_seconds = label_seconds = 0.0
    for i, image in enumerate(batch):
        start = time.perf_counter()
        output = task(image, rng, foregrounds[i], batch[:i] + batch[i + 1 :], foregrounds[:i] + foregrounds[i + 1 :])
        middle = time.perf_counter()
        task.label(output.image, image, output.mask, 0.2)
        task_seconds += middle - start
        label_seconds += time.perf_counter() - middle
    return 1000 * task_seconds / count, 1000 * (task_seconds + label_seconds) / count


def time_foreground(shape: tuple[int, ...], count: int) -> float:
    """Milliseconds per volume of the authors' foreground rule."""
    batch = images(shape, count)
    start = time.perf_counter()
    for image in batch:
        nonzero_foreground(image)
    return 1000 * (time.perf_counter() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256], help="2-D image sides")
    parser.add_argument("--volume", type=int, nargs="+", default=[48], help="3-D volume side(s) (0: skip)")
    parser.add_argument("--images", type=int, default=32, help="images per measurement")
    parser.add_argument("--probabilistic", action="store_true", help="blending tasks as P-PII")
    args = parser.parse_args()

    print(f"command: {' '.join(sys.argv)}")
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, {platform.platform()}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load average {os.getloadavg()[0]:.1f} "
        "(shared machine: other jobs were running)"
    )
    volume = tuple(args.volume) * (3 if len(args.volume) == 1 else 1)
    shapes = [(s, s) for s in args.sizes] + ([volume] if args.volume[0] else [])
    print("\nms per image: task alone / task + labelling\n")
    print("| task | " + " | ".join("x".join(map(str, s)) for s in shapes) + " |")
    print("|---|" + "---|" * len(shapes))
    with tempfile.TemporaryDirectory() as folder:
        if args.volume[0]:
            for i, source in enumerate(images(volume, 4)):
                np.save(Path(folder) / f"source_{i}.npy", np.roll(source, 5, axis=0))
        for name in TASK_NAMES:
            cells = []
            for shape in shapes:
                alone, labelled = time_task(name, shape, args.images, Path(folder), args.probabilistic)
                cells.append(f"{alone:.1f} / {labelled:.1f}")
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    if args.volume[0]:
        cells = ["-"] * len(args.sizes) + [f"{time_foreground(volume, args.images):.1f}"]
        print("| foreground `binary_fill_holes(x != 0)` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
