"""Müller et al.'s P-PII against plain blending and histogram equalisation alone, on DigitAnatomy, per seed.

    OMP_NUM_THREADS=1 python benchmarks/localiser_ppii.py --seeds 0 1 2 [--variants plain equalisation p-pii]

Each run is fold 0 of the 4/1 task split of the CPU recipe ``configs/synthetic_task_localiser_digit_anatomy.yaml``
through the cross-validation command (selected on the held-out smooth intensity change, tested on DigitAnatomy's
test split). Prints one row per (variant, seed) and writes ``<output>/results.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from localiser_digit_anatomy import RECIPE

from anomalib_medical.models.synthetic_task_localiser.cross_validation import run_cross_validation

#: variant -> anomalib CLI overrides of the recipe.
VARIANTS: dict[str, list[str]] = {
    "plain": [],
    "equalisation": ["--model.init_args.histogram_equalisation=true"],
    "p-pii": ["--model.init_args.histogram_equalisation=true", "--model.init_args.probabilistic_blending=true"],
}
COLUMNS = ("image_AUROC", "pixel_AUROC", "pixel_AveragePrecision", "pixel_ChunkedAveragePrecision")


def main() -> None:
    """Train every (variant, seed) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--output", type=Path, default=Path("results/localiser_ppii"))
    args = parser.parse_args()
    rows = []
    print("| variant | seed | " + " | ".join(COLUMNS) + " | synthetic pixel AP | seconds |")
    print("|---" * (len(COLUMNS) + 4) + "|")
    for seed in args.seeds:
        for variant in args.variants:
            start = time.perf_counter()
            overrides = [*VARIANTS[variant], f"--model.init_args.seed={seed}"]
            output = args.output / f"{variant}_{seed}"
            report = run_cross_validation(RECIPE, 4, output, [0], overrides=overrides, seed=seed)
            fold = report["folds"][0]
            row = {"variant": variant, "seed": seed, **fold["test"], "synthetic_pixel_AP": fold["synthetic_pixel_AP"]}
            row["seconds"] = time.perf_counter() - start
            rows.append(row)
            values = " | ".join(f"{row[column]:.3f}" for column in (*COLUMNS, "synthetic_pixel_AP"))
            print(f"| {variant} | {seed} | {values} | {row['seconds']:.0f} |", flush=True)
    (args.output / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
