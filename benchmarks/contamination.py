"""Robustness to contaminated training data: Squid and SimSID on DigitAnatomy at several normal ratios.

SQUID (CVPR 2023) and SimSID (TPAMI 2024) measure how their AUROC degrades when the training set holds
unlabelled abnormal images. This script trains each model's DigitAnatomy recipe with a fraction
``1 - normal_ratio`` of generated anomalies (all four types, labelled normal) mixed into every training
epoch (``DigitAnatomy(train_abnormal_fraction=...)``), tests on the clean test set, prints a table of
image AUROC per normal ratio for every score type of each trained model (the recipe's own score is marked
with ``*``) and saves the robustness curves of the recipes' scores and of the papers' discriminator score
as a PNG.

Every model is trained with the same seed and the same budget (epochs, optionally capped by wall-clock
seconds). Run small, e.g.::

    OMP_NUM_THREADS=1 python benchmarks/contamination.py --epochs 2 --train-size 800 --samples-per-type 50

Defaults: the recipes ``configs/squid_digit_anatomy.yaml`` and ``configs/simsid_digit_anatomy.yaml``,
normal ratios 100/90/80/70/60 %, the recipes' epochs.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from anomalib.engine import Engine
from lightning.pytorch import Callback, LightningModule, Trainer
from sklearn.metrics import roc_auc_score
from squid_digit_anatomy import REPO, instantiate, machine_header, score_test_set

DEFAULT_RECIPES = [REPO / "configs" / f"{name}_digit_anatomy.yaml" for name in ("squid", "simsid")]
DEFAULT_RATIOS = [1.0, 0.9, 0.8, 0.7, 0.6]


class EpochBudget(Callback):
    """Stop training after the last epoch that fits in ``seconds`` (whole epochs keep score statistics valid)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = self.epoch_start = 0.0

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        now = time.perf_counter()
        if now - self.start + (now - self.epoch_start) > self.seconds:
            trainer.should_stop = True


def train_and_score(
    config: dict[str, Any],
    model_overrides: dict[str, Any],
    data_overrides: dict[str, Any],
    epochs: int,
    budget: float | None,
    seed: int,
    work_dir: Path,
) -> tuple[dict[str, float], float]:
    """Train one recipe on (contaminated) DigitAnatomy; return test image AUROC per score type and training seconds."""
    torch.manual_seed(seed)
    model = instantiate(config["model"], **model_overrides)
    datamodule = instantiate(config["data"], **data_overrides)
    trainer_args = dict(config.get("trainer") or {}) | {"max_epochs": epochs, "check_val_every_n_epoch": epochs}
    engine = Engine(
        **trainer_args,
        logger=False,
        enable_progress_bar=False,
        default_root_dir=work_dir,
        callbacks=[EpochBudget(budget)] if budget else [],
    )
    start = time.perf_counter()
    engine.fit(model, datamodule=datamodule)
    seconds = time.perf_counter() - start
    datamodule.setup("test")
    scored = score_test_set(model, datamodule)
    return {name: float(roc_auc_score(scored["labels"], scores)) for name, scores in scored["scores"].items()}, seconds


def plot(results: dict[str, dict[float, list[float]]], path: Path) -> None:
    """Save AUROC (mean and range over seeds) against the normal ratio: each recipe's score (``*``) and the paper's."""
    import matplotlib as mpl

    mpl.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.5))
    for name, per_ratio in results.items():
        if not name.endswith("*") and "discriminator" not in name:
            continue
        ratios = sorted(per_ratio, reverse=True)
        values = [np.array(per_ratio[ratio]) for ratio in ratios]
        percent = [100 * ratio for ratio in ratios]
        style = "--" if "discriminator" in name else "-"
        axis.plot(percent, [v.mean() for v in values], style, marker="o", label=name)
        axis.fill_between(percent, [v.min() for v in values], [v.max() for v in values], alpha=0.2)
    axis.set_xlabel("normal images in the training set (%)")
    axis.set_ylabel("test image AUROC")
    axis.set_title("DigitAnatomy: training on contaminated data")
    axis.invert_xaxis()
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", type=Path, nargs="+", default=DEFAULT_RECIPES, help="recipe YAMLs (model + data)")
    parser.add_argument("--ratios", type=float, nargs="+", default=DEFAULT_RATIOS, help="normal ratios in (0, 1]")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default: each recipe's)")
    parser.add_argument(
        "--budget-seconds", type=float, default=None, help="wall-clock cap on each training run (whole epochs)"
    )
    parser.add_argument("--train-size", type=int, default=None, help="training images per epoch (default: recipe's)")
    parser.add_argument("--samples-per-type", type=int, default=None, help="test images per type (default: recipe's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (model init and data)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--root", type=Path, default=Path("./datasets/DigitAnatomy"), help="DigitAnatomy root")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/contamination"), help="PNG folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    results: dict[str, dict[float, list[float]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for recipe in args.recipes:
            config = yaml.safe_load(recipe.read_text())
            epochs = args.epochs or config["trainer"]["max_epochs"]
            model_overrides: dict[str, Any] = {"visualizer": False, "scheduler_t_max": epochs}
            data_overrides: dict[str, Any] = {"root": args.root}
            for key, value in (("train_size", args.train_size), ("samples_per_type", args.samples_per_type)):
                if value is not None:
                    data_overrides[key] = value
            name = config["model"]["class_path"].rsplit(".", 1)[-1]
            recipe_score = config["model"]["init_args"].get("score_type", "discriminator")
            for ratio in args.ratios:
                for seed in args.seeds:
                    run_data = data_overrides | {"train_abnormal_fraction": round(1.0 - ratio, 6), "seed": seed}
                    aurocs, seconds = train_and_score(
                        config, model_overrides, run_data, epochs, args.budget_seconds, seed, Path(scratch)
                    )
                    for score, auroc in aurocs.items():
                        label = f"{name} ({score})" + (" *" if score == recipe_score else "")
                        results.setdefault(label, {}).setdefault(ratio, []).append(auroc)
                    print(
                        f"{name:8s} normal {100 * ratio:5.1f} %  seed {seed}  AUROC {aurocs[recipe_score]:.3f} "
                        f"({recipe_score}; discriminator {aurocs['discriminator']:.3f})  ({seconds:.0f} s)",
                        flush=True,
                    )

    print("\n" + machine_header("python " + " ".join(sys.argv)))
    ratios = sorted({ratio for per_ratio in results.values() for ratio in per_ratio}, reverse=True)
    print("\nImage AUROC on the clean test set by normal ratio of the training set")
    print("(mean over seeds; * = the recipe's score)\n")
    print("| model (score) | " + " | ".join(f"{100 * ratio:.0f} %" for ratio in ratios) + " |")
    print("|" + "---|" * (len(ratios) + 1))
    for label, per_ratio in results.items():
        print(f"| {label} | " + " | ".join(f"{np.mean(per_ratio[ratio]):.3f}" for ratio in ratios) + " |")
    path = args.out / "contamination_auroc.png"
    plot(results, path)
    print(f"\nplot: {path}")


if __name__ == "__main__":
    main()
