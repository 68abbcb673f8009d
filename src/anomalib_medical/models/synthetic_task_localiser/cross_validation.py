"""Cross-validation set and ensemble of synthetic-task localisers (Baugh et al., 2023, Sec. 2.4).

For ``T`` training tasks there are ``5 choose T`` folds: fold ``k`` trains on the ``k``-th ``T``-combination of
the five tasks (the paper's order, :data:`.tasks.TASK_NAMES`) and validates/selects on the other tasks. As in the
authors' code, each fold also gets its own data fold: the normal training images are split into five parts, one
per task; the parts of the validation tasks are held out of training and added to the validation split (which
the synthetic validation corrupts), and the larger side is always the training side. Datamodules whose training
images are generated anew every epoch (``DigitAnatomy``) or whose validation split is of another dataset class
cannot hold images out: their folds differ by tasks only (a warning says so). Every fold model is then tested,
and so is their ensemble (:class:`.ensemble.SyntheticTaskLocaliserEnsemble`, the mean of their maps), whose
thresholds come from the un-folded validation split and whose checkpoint is saved for ``anomalib export``.

Usage (any ``anomalib train`` recipe of the model; options after ``--`` go to anomalib's CLI)::

    python -m anomalib_medical.models.synthetic_task_localiser.cross_validation \
        --config configs/synthetic_task_localiser_digit_anatomy.yaml --num_train_tasks 4 \
        --output results/stl_cv -- --trainer.max_epochs 30

It prints a table and writes ``<output>/cross_validation.json`` and ``<output>/ensemble/model.ckpt``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from anomalib.cli import AnomalibCLI
from anomalib.data import AnomalibDataModule
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.trainer.states import TrainerFn

from .ensemble import SyntheticTaskLocaliserEnsemble
from .lightning_model import SYNTHETIC_PIXEL_AP, SyntheticTaskLocaliser
from .tasks import TASK_NAMES, num_folds, task_split

logger = logging.getLogger(__name__)

#: Test metrics of the report (the evaluator's ranking metrics, on the raw maps: :func:`..metrics.raw_metrics`).
REPORTED_METRICS = (
    "image_AUROC",
    "image_AUPR",
    "image_AveragePrecision",
    "pixel_AUROC",
    "pixel_AUPR",
    "pixel_AveragePrecision",
    "pixel_ChunkedAveragePrecision",
)


def hold_out_data_fold(datamodule: AnomalibDataModule, held_out_parts: Sequence[int], seed: int = 0) -> bool:
    """Move the ``held_out_parts`` of five (seeded) parts of the training images into the validation split.

    The larger side trains (the authors' rule), so for ``T < 3`` training tasks the roles swap.

    Returns:
        Whether images were held out (``False`` when the datamodule's subsets cannot be split and joined).

    """
    datamodule.setup(TrainerFn.FITTING)
    train, validation = datamodule.train_data, datamodule.val_data
    custom_loader = type(datamodule).train_dataloader is not AnomalibDataModule.train_dataloader
    if type(train) is not type(validation) or custom_loader:
        logger.warning(
            "%s cannot hold training images out into its validation split: the folds differ by tasks only.",
            type(datamodule).__name__,
        )
        return False
    parts = np.array_split(np.random.default_rng(seed).permutation(len(train)), len(TASK_NAMES))
    held = np.sort(np.concatenate([parts[i] for i in held_out_parts]))
    kept = np.setdiff1d(np.arange(len(train)), held)
    if len(held) > len(kept):
        held, kept = kept, held
    datamodule.train_data = train.subsample(kept.tolist())
    datamodule.val_data = validation + train.subsample(held.tolist())
    return True


def _selected_checkpoint(trainer: Trainer) -> tuple[Path, float | None]:
    """Best checkpoint on ``synthetic_pixel_AP`` and its score, else the last checkpoint saved."""
    callbacks = trainer.checkpoint_callbacks
    for callback in callbacks:
        if callback.monitor == SYNTHETIC_PIXEL_AP and callback.best_model_path:
            return Path(callback.best_model_path), float(callback.best_model_score)
    saved = [c.last_model_path or c.best_model_path for c in callbacks if c.last_model_path or c.best_model_path]
    if not saved:
        msg = "no checkpoint was saved: give the recipe a ModelCheckpoint"
        raise RuntimeError(msg)
    return Path(saved[0]), None


def _metrics(results: list[dict[str, float]]) -> dict[str, float]:
    return {name: float(results[0][name]) for name in REPORTED_METRICS if results and name in results[0]}


def run_cross_validation(
    config: Path,
    num_train_tasks: int,
    output: Path,
    folds: Sequence[int] | None = None,
    data_folds: bool = True,
    overrides: Sequence[str] = (),
    seed: int = 0,
) -> dict[str, Any]:
    """Train and test the fold models of ``num_train_tasks`` training tasks, then test their ensemble.

    Args:
        config: An ``anomalib train`` recipe of :class:`SyntheticTaskLocaliser`.
        num_train_tasks: Training tasks per fold (1-4).
        output: Results folder.
        folds: Folds to run (default: all ``5 choose T``).
        data_folds: Hold each fold's data part out of training (see :func:`hold_out_data_fold`).
        overrides: Extra anomalib CLI arguments (e.g. ``["--trainer.max_epochs", "2"]``).
        seed: ``seed_everything(seed + fold)`` runs before each fold's model is built (weights, data order).

    Returns:
        Per-fold and ensemble results, also written to ``output / "cross_validation.json"``.

    """
    folds = list(range(num_folds(num_train_tasks))) if folds is None else list(folds)
    report: dict[str, Any] = {"config": str(config), "num_train_tasks": num_train_tasks, "folds": []}
    checkpoints = []
    for fold in folds:
        train_tasks, validation_tasks = task_split(num_train_tasks, fold)
        seed_everything(seed + fold)
        cli = AnomalibCLI(
            [
                "fit",
                "--config",
                str(config),
                f"--model.init_args.train_tasks={json.dumps(train_tasks)}",
                f"--model.init_args.validation_tasks={json.dumps(validation_tasks)}",
                f"--default_root_dir={output / f'fold_{fold}'}",
                *overrides,
            ],
            run=False,
        )
        if not isinstance(cli.model, SyntheticTaskLocaliser):
            msg = f"the recipe's model is {type(cli.model).__name__}, expected SyntheticTaskLocaliser"
            raise TypeError(msg)
        held_out = data_folds and hold_out_data_fold(cli.datamodule, [TASK_NAMES.index(t) for t in validation_tasks])
        start = time.perf_counter()
        cli.engine.fit(cli.model, datamodule=cli.datamodule)
        train_seconds = time.perf_counter() - start
        checkpoint, score = _selected_checkpoint(cli.engine.trainer)
        test = _metrics(cli.engine.test(cli.model, datamodule=cli.datamodule))
        checkpoints.append(checkpoint)
        report["folds"].append(
            {
                "fold": fold,
                "train_tasks": train_tasks,
                "validation_tasks": validation_tasks,
                "data_fold": held_out,
                "checkpoint": str(checkpoint),
                SYNTHETIC_PIXEL_AP: score,
                "train_seconds": train_seconds,
                "epochs": cli.engine.trainer.current_epoch,
                "test": test,
            },
        )
    cli = AnomalibCLI(
        ["test", "--config", str(config), f"--default_root_dir={output / 'ensemble'}", *overrides], run=False
    )
    ensemble = SyntheticTaskLocaliserEnsemble.from_checkpoints(checkpoints)
    cli.engine.validate(ensemble, datamodule=cli.datamodule)
    report["ensemble"] = {
        "members": len(checkpoints),
        "test": _metrics(cli.engine.test(ensemble, datamodule=cli.datamodule)),
    }
    ensemble_checkpoint = output / "ensemble" / "model.ckpt"
    cli.engine.trainer.save_checkpoint(ensemble_checkpoint)
    report["ensemble"]["checkpoint"] = str(ensemble_checkpoint)
    output.mkdir(parents=True, exist_ok=True)
    (output / "cross_validation.json").write_text(json.dumps(report, indent=2))
    return report


def format_report(report: dict[str, Any]) -> str:
    """Table of the per-fold and ensemble results."""
    header = f"| fold | train tasks | {SYNTHETIC_PIXEL_AP} | " + " | ".join(REPORTED_METRICS) + " |"
    lines = [header, "|" + "---|" * (3 + len(REPORTED_METRICS))]

    def row(name: str, tasks: str, score: float | None, test: dict[str, float]) -> str:
        values = " | ".join(f"{test.get(m, float('nan')):.3f}" for m in REPORTED_METRICS)
        return f"| {name} | {tasks} | {'-' if score is None else f'{score:.3f}'} | {values} |"

    for fold in report["folds"]:
        lines.append(row(str(fold["fold"]), ", ".join(fold["train_tasks"]), fold[SYNTHETIC_PIXEL_AP], fold["test"]))
    lines.append(row("ensemble", f"{report['ensemble']['members']} folds", None, report["ensemble"]["test"]))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, required=True, help="anomalib train recipe of SyntheticTaskLocaliser")
    parser.add_argument("--num_train_tasks", type=int, default=4, help="training tasks per fold (1-4)")
    parser.add_argument("--folds", type=int, nargs="*", help="folds to run (default: all 5-choose-T)")
    parser.add_argument("--output", type=Path, default=Path("results/synthetic_task_localiser_cv"))
    parser.add_argument("--data_folds", action=argparse.BooleanOptionalAction, default=True, help="hold data parts out")
    parser.add_argument("--seed", type=int, default=0, help="fold k runs seed_everything(seed + k)")
    args, overrides = parser.parse_known_args(argv)
    overrides = [arg for arg in overrides if arg != "--"]
    report = run_cross_validation(
        args.config, args.num_train_tasks, args.output, args.folds, args.data_folds, overrides, args.seed
    )
    print(format_report(report))


if __name__ == "__main__":
    main()
