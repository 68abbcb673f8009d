"""Synthetic-task localiser on DigitAnatomy: task splits, cross-validation ensemble, input options, other models.

    OMP_NUM_THREADS=1 python benchmarks/localiser_digit_anatomy.py [--splits 1 2 3 4] [--all_folds] \
        [--compare Squid SimSID] [-- <anomalib CLI overrides of the recipe, e.g. --trainer.max_epochs 5>]

Trains with the CPU recipe ``configs/synthetic_task_localiser_digit_anatomy.yaml`` through the cross-validation
command: for each train/validation task split ``T/(5-T)`` the first fold (all ``5 choose T`` folds with
``--all_folds``), every fold of ``--ensemble_tasks`` and their ensemble (mean of the maps), then fold 0 of
``--ensemble_tasks`` with histogram equalisation and with the positional encoding switched on. Each model is
selected on its held-out tasks' synthetic pixel AP and tested on DigitAnatomy's test split (pixel masks = the
changed cells). ``--compare`` trains other anomalib-medical models (e.g. ``Squid``, ``SimSID``) on the same data
for ``--compare_epochs`` epochs, with ``--compare_args`` (JSON: model name -> constructor arguments).
Prints a table and writes ``<output>/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from anomalib.engine import Engine
from lightning.pytorch import seed_everything

import anomalib_medical.models
from anomalib_medical.data import DigitAnatomy
from anomalib_medical.models import SyntheticTaskLocaliser
from anomalib_medical.models.synthetic_task_localiser.cross_validation import REPORTED_METRICS, run_cross_validation
from anomalib_medical.models.synthetic_task_localiser.tasks import num_folds

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "synthetic_task_localiser_digit_anatomy.yaml"


def row(name: str, tasks: str, metrics: dict[str, float], seconds: float | None, note: str = "") -> dict[str, Any]:
    return {"model": name, "tasks": tasks, **metrics, "train_seconds": seconds, "note": note}


def fold_rows(report: dict[str, Any], name: str, note: str = "") -> list[dict[str, Any]]:
    rows = []
    for fold in report["folds"]:
        tasks = f"{len(fold['train_tasks'])}/{len(fold['validation_tasks'])} fold {fold['fold']}"
        extra = f"AP_syn={fold['synthetic_pixel_AP']:.3f}, {fold['epochs']} epochs" + (f", {note}" if note else "")
        rows.append(row(name, tasks, fold["test"], fold["train_seconds"], extra))
    return rows


def compare_models(names: list[str], epochs: int, model_args: dict[str, dict], root: Path) -> list[dict[str, Any]]:
    data_args = yaml.safe_load(RECIPE.read_text())["data"]["init_args"]
    rows = []
    for name in names:
        if not hasattr(anomalib_medical.models, name):
            rows.append(row(name, "-", {}, None, "not available in anomalib_medical.models"))
            continue
        seed_everything(0)
        evaluator = SyntheticTaskLocaliser.configure_evaluator()  # the same metrics for every model
        model = getattr(anomalib_medical.models, name)(evaluator=evaluator, **model_args.get(name, {}))
        engine = Engine(max_epochs=epochs, default_root_dir=root / name, logger=False, enable_progress_bar=False)
        datamodule = DigitAnatomy(**data_args)
        start = time.perf_counter()
        engine.fit(model, datamodule=datamodule)
        seconds = time.perf_counter() - start
        metrics = engine.test(model, datamodule=datamodule, verbose=False)[0]
        reported = {key: float(metrics[key]) for key in REPORTED_METRICS if key in metrics}
        rows.append(row(name, "-", reported, seconds, f"{epochs} epochs, {model_args.get(name, {})}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", type=int, nargs="*", default=[1, 2, 3, 4], help="numbers of training tasks")
    parser.add_argument("--all_folds", action="store_true", help="every fold of every split (slow)")
    parser.add_argument("--ensemble_tasks", type=int, default=4, help="split whose folds are all trained and ensembled")
    parser.add_argument("--no_variants", action="store_true", help="skip the histogram-equalisation/encoding runs")
    parser.add_argument("--compare", nargs="*", default=[], help="other anomalib_medical models to train")
    parser.add_argument("--compare_epochs", type=int, default=12)
    parser.add_argument("--compare_args", type=json.loads, default={}, help='JSON, e.g. {"Squid": {"image_size": 48}}')
    parser.add_argument("--output", type=Path, default=Path("results/benchmarks/localiser_digit_anatomy"))
    args, overrides = parser.parse_known_args()
    overrides = [arg for arg in overrides if arg != "--"]

    header = [
        f"command: {' '.join(sys.argv)}",
        f"recipe: {RECIPE.relative_to(RECIPE.parents[1])} {' '.join(overrides)}",
        f"machine: {platform.machine()} {os.cpu_count()} cores, {platform.platform()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch thread(s), load average at start {os.getloadavg()[0]:.1f} "
        "(shared machine: other jobs were running; times are indicative)",
    ]
    print("\n".join(header), flush=True)
    rows: list[dict[str, Any]] = []
    for train_tasks in args.splits:
        everything = args.all_folds or train_tasks == args.ensemble_tasks
        folds = list(range(num_folds(train_tasks))) if everything else [0]
        output = args.output / f"tasks_{train_tasks}"
        report = run_cross_validation(RECIPE, train_tasks, output, folds, overrides=overrides)
        rows += fold_rows(report, "SyntheticTaskLocaliser")
        if len(folds) > 1:
            seconds = sum(fold["train_seconds"] for fold in report["folds"])
            tasks = f"{train_tasks}/{5 - train_tasks} ensemble of {len(folds)}"
            rows.append(row("SyntheticTaskLocaliserEnsemble", tasks, report["ensemble"]["test"], seconds))
    if not args.no_variants:
        for option, note in [
            ("histogram_equalisation", "histogram equalisation"),
            ("positional_encoding", "pos. enc."),
        ]:
            report = run_cross_validation(
                RECIPE,
                args.ensemble_tasks,
                args.output / option,
                [0],
                overrides=[*overrides, f"--model.init_args.{option}=true"],
            )
            rows += fold_rows(report, "SyntheticTaskLocaliser", note)
    rows += compare_models(args.compare, args.compare_epochs, args.compare_args, args.output / "compare")

    columns = ["model", "tasks", *REPORTED_METRICS, "train_seconds", "note"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for entry in rows:
        cells = [
            f"{entry[c]:.3f}" if isinstance(entry.get(c), float) and c != "train_seconds" else str(entry.get(c, "-"))
            for c in columns
        ]
        cells[-2] = "-" if entry["train_seconds"] is None else f"{entry['train_seconds']:.0f} s"
        lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(["", *lines]))
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps({"header": header, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
