"""Loss curves of a short Squid (or SimSID) run on DigitAnatomy, logged by Lightning's CSVLogger.

Trains a recipe (default: Squid's CPU recipe, ``configs/squid_digit_anatomy.yaml``) for a few short epochs with
a ``CSVLogger`` and plots the losses its training step logs against the training batch: teacher
(``generator_teacher``: teacher reconstruction vs input), student (``generator_reconstruction``),
``generator_distillation``, ``generator_adversarial`` and ``discriminator_loss``.

    OMP_NUM_THREADS=1 python benchmarks/loss_curves.py                  # -> docs/images/squid_loss_curves.png
    python benchmarks/loss_curves.py --config configs/simsid_digit_anatomy.yaml \
        --out docs/images/simsid_loss_curves.png

The same ``metrics.csv`` comes from ``anomalib train ... --trainer.logger CSVLogger`` (see the model READMEs).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import torch
import yaml
from anomalib.engine import Engine
from lightning.pytorch.loggers import CSVLogger

from anomalib_medical.data import DigitAnatomy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from squid_digit_anatomy import load_recipe

REPO = Path(__file__).resolve().parents[1]
LOSSES = {
    "generator_teacher": "teacher (reconstruction vs input)",
    "generator_reconstruction": "student (reconstruction vs input)",
    "generator_distillation": "distillation (student vs teacher features)",
    "generator_adversarial": "generator adversarial",
    "discriminator_loss": "discriminator",
}


def train_with_csv_logger(
    config: Path,
    work_dir: Path,
    epochs: int = 4,
    train_size: int = 400,
    log_every: int = 2,
    data_root: Path | None = None,
    **model_overrides: object,
) -> tuple[Path, int]:
    """Train ``config`` for ``epochs`` epochs of ``train_size`` images; return ``metrics.csv`` and batches per epoch.

    The cosine schedule spans the run (``scheduler_t_max = epochs``); validation runs once, at the end.
    """
    model, _, trainer_args = load_recipe(config, scheduler_t_max=epochs, **model_overrides)
    data_args = yaml.safe_load(config.read_text())["data"]["init_args"]
    data_args |= {"train_size": train_size, "samples_per_type": 10}
    if data_root is not None:
        data_args["root"] = data_root
    datamodule = DigitAnatomy(**data_args)
    logger = CSVLogger(save_dir=work_dir, name="loss_curves")
    settings = {
        "max_epochs": epochs,
        "check_val_every_n_epoch": epochs,
        "log_every_n_steps": log_every,
        "logger": logger,
        "default_root_dir": work_dir,
        "enable_progress_bar": False,
    }
    Engine(**trainer_args | settings).fit(model, datamodule=datamodule)
    return Path(logger.log_dir) / "metrics.csv", len(datamodule.train_dataloader())


def plot_loss_curves(metrics: Path, batches_per_epoch: int, path: Path, title: str) -> pd.DataFrame:
    """One panel a loss (``<name>_step`` columns of ``metrics``) against the training batch; returns the curves.

    Raises:
        ValueError: If ``metrics`` lacks one of the losses (a model that does not log it).
    """
    table = pd.read_csv(metrics)
    columns = [f"{name}_step" for name in LOSSES]
    missing = [column for column in columns if column not in table.columns]
    if missing:
        msg = f"{metrics} has no column(s) {missing}: columns are {list(table.columns)}"
        raise ValueError(msg)
    curves = table.dropna(subset=columns, how="all")
    batch = curves["step"]  # Lightning's logging step: training batches done (one per batch, both optimisers)
    figure, axes = plt.subplots(1, len(LOSSES), figsize=(3 * len(LOSSES), 2.6), sharex=True)
    for axis, (name, label) in zip(axes, LOSSES.items(), strict=True):
        values = curves[f"{name}_step"]
        keep = values.notna()
        axis.plot(batch[keep], values[keep], lw=1.0)
        axis.set_title(label, fontsize=8)
        axis.set_xlabel("training batch", fontsize=8)
        axis.tick_params(labelsize=7)
        for epoch in range(1, int(curves["epoch"].max()) + 1):
            axis.axvline(epoch * batches_per_epoch, color="grey", lw=0.5, ls=":")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return curves


def main(argv: Sequence[str] | None = None) -> None:
    """Train, plot, print where the CSV and the picture are."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "squid_digit_anatomy.yaml")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-size", type=int, default=400, help="training images per epoch")
    parser.add_argument("--log-every", type=int, default=2, help="Lightning's log_every_n_steps")
    parser.add_argument("--work-dir", type=Path, default=Path("results") / "loss_curves")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "squid_loss_curves.png")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    metrics, batches = train_with_csv_logger(args.config, args.work_dir, args.epochs, args.train_size, args.log_every)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    title = (
        f"{args.config.name}: {args.epochs} epochs of {args.train_size} DigitAnatomy images, "
        "weighted loss terms as logged (CSVLogger, *_step columns)"
    )
    plot_loss_curves(metrics, batches, args.out, title)
    print(f"metrics: {metrics}\npicture: {args.out}")


if __name__ == "__main__":
    main()
