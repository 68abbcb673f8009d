"""Time BrainPhantom's generator and the first ``prepare_data`` of its default configuration; print a table.

Usage (one thread)::

    OMP_NUM_THREADS=1 python benchmarks/brain_data_speed.py --root /tmp/brain_phantom_speed
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from anomalib_medical.data.brain_phantom import PHANTOM_TYPES, BrainPhantom, BrainPhantomGenerator, load_brain_template


def main() -> None:
    """Print the median generation time per subject type and shape, and the default set's preparation time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/brain_phantom_speed"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"# {platform.processor() or platform.machine()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print("| shape | template load (s) | " + " | ".join(f"{kind} (s)" for kind in PHANTOM_TYPES) + " |")
    print("|---|---|" + "---|" * len(PHANTOM_TYPES))
    for shape in ((40, 56, 40), (80, 112, 80)):
        start = time.perf_counter()
        generator = BrainPhantomGenerator(load_brain_template(shape))
        load = time.perf_counter() - start
        medians = []
        for kind in PHANTOM_TYPES:
            times = []
            for index in range(args.repeats):
                start = time.perf_counter()
                generator.generate(kind, np.random.default_rng(index))
                times.append(time.perf_counter() - start)
            medians.append(float(np.median(times)))
        print(f"| {'x'.join(map(str, shape))} | {load:.1f} | " + " | ".join(f"{m:.2f}" for m in medians) + " |")
    shutil.rmtree(args.root, ignore_errors=True)
    start = time.perf_counter()
    BrainPhantom(root=args.root).prepare_data()
    print(f"\nBrainPhantom() first prepare_data (40 train + 2 x 30 eval subjects): {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
