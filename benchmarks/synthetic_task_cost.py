"""Cost per image of each synthetic task (and of the labelling), in 2-D and 3-D.

    OMP_NUM_THREADS=1 python benchmarks/synthetic_task_cost.py [--sizes 64 128 256] [--volume 48] [--images 32]

Each task corrupts ``--images`` different images (natural photographs from scikit-image, grey, in [-1, 1]; the
other images are the intra-dataset sources) after a warm-up; the table gives milliseconds per image for the task
alone and for task + flipped-Gaussian labelling (what training pays per image, on the CPU, single-threaded).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
from skimage import data, transform

from anomalib_medical.models.synthetic_task_localiser.labelling import label_anomalies
from anomalib_medical.models.synthetic_task_localiser.tasks import TASK_NAMES, InterDatasetBlendingTask, build_task
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
        result.append(np.flip(resized, axis=-1).copy() * 2 - 1 if i >= len(PHOTOS) else resized * 2 - 1)
    return result


def time_task(name: str, shape: tuple[int, ...], count: int) -> tuple[float, float]:
    task = build_task(name, push_distance=(0.5, 10.0 * shape[0] / 256))
    if isinstance(task, InterDatasetBlendingTask):  # steady state: every photograph read and resized once
        for source in task.sources:
            load_source_image(source, shape)
    batch = images(shape, count)
    rng = np.random.default_rng(0)
    task(batch[0], rng, others=batch[1:])  # warm-up
    task_seconds = label_seconds = 0.0
    for i, image in enumerate(batch):
        start = time.perf_counter()
        output = task(image, rng, others=batch[:i] + batch[i + 1 :])
        middle = time.perf_counter()
        label_anomalies(output.image, image, output.mask)
        task_seconds += middle - start
        label_seconds += time.perf_counter() - middle
    return 1000 * task_seconds / count, 1000 * (task_seconds + label_seconds) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256], help="2-D image sides")
    parser.add_argument("--volume", type=int, default=48, help="3-D volume side (0: skip)")
    parser.add_argument("--images", type=int, default=32, help="images per measurement")
    args = parser.parse_args()

    print(f"command: {' '.join(sys.argv)}")
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, {platform.platform()}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load average {os.getloadavg()[0]:.1f} "
        "(shared machine: other jobs were running)"
    )
    shapes = [(s, s) for s in args.sizes] + ([(args.volume,) * 3] if args.volume else [])
    print("\nms per image: task alone / task + labelling\n")
    print("| task | " + " | ".join("x".join(map(str, s)) for s in shapes) + " |")
    print("|---|" + "---|" * len(shapes))
    for name in TASK_NAMES:
        cells = []
        for shape in shapes:
            if name == "inter_dataset_blending" and len(shape) == 3:
                cells.append("n/a (2-D photos)")
                continue
            alone, labelled = time_task(name, shape, args.images)
            cells.append(f"{alone:.1f} / {labelled:.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
