"""Squid on DigitAnatomy: image AUROC per score type and anomaly type, pixel AUROC per map type.

Trains a recipe (default: the CPU recipe) with anomalib's Engine, reports anomalib's own test metrics for
the recipe's configured score, then scores the test set with every score type and both map types of the
same trained model (the components are standardised with the statistics stored in the checkpointed
buffers, exactly as the model does at inference).

    python benchmarks/squid_digit_anatomy.py                         # CPU recipe, 6 epochs
    python benchmarks/squid_digit_anatomy.py --max-epochs 20         # the longer run of the README
    python benchmarks/squid_digit_anatomy.py --config configs/squid_digit_anatomy_paper.yaml --max-epochs 3

Prints Markdown tables; ``--json`` also writes the numbers.
"""

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from anomalib.engine import Engine
from lightning.pytorch import seed_everything
from sklearn.metrics import average_precision_score, roc_auc_score

from anomalib_medical.models.components.detector import SCORE_COMPONENTS, SCORE_WEIGHTS

REPO = Path(__file__).resolve().parents[1]
ANOMALY_TYPES = ("novel", "missing", "disorder", "flipped")


def instantiate(spec: dict[str, Any], **overrides: Any) -> Any:
    """Build ``class_path(**init_args, **overrides)`` from a config section (nested class specs too)."""
    module, name = spec["class_path"].rsplit(".", 1)
    init_args = {key: build(value) for key, value in (spec.get("init_args") or {}).items()}
    return getattr(importlib.import_module(module), name)(**init_args | overrides)


def build(value: Any) -> Any:
    """Instantiate a ``{class_path, init_args}`` value, or each such item of a list; other values as they are."""
    if isinstance(value, dict) and "class_path" in value:
        return instantiate(value)
    if isinstance(value, list):
        return [build(item) for item in value]
    return value


def load_recipe(
    path: Path,
    data_root: Path | None = None,
    seed: int | None = None,
    data_overrides: dict[str, Any] | None = None,
    **model_overrides: Any,
) -> tuple[Any, Any, dict]:
    """Model (without visualizer), datamodule and trainer arguments of an anomalib CLI config file.

    Everything is seeded before the model is built, as ``anomalib train`` does: with ``seed``, or else the
    recipe's ``seed_everything``. ``data_overrides`` replace datamodule arguments (``data_root`` the root).
    """
    config = yaml.safe_load(path.read_text())
    seed_everything(config.get("seed_everything", 0) if seed is None else seed, verbose=False)
    model = instantiate(config["model"], visualizer=False, **model_overrides)
    data_overrides = dict(data_overrides or {}) | ({"root": data_root} if data_root else {})
    datamodule = instantiate(config["data"], **data_overrides)
    trainer = {key: build(value) for key, value in (config.get("trainer") or {}).items()}  # e.g. callbacks
    return model, datamodule, trainer


def machine_header(command: str) -> str:
    """Markdown header naming the command, threads and machine."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("n/a",)
    return (
        f"command: `{command}`  \n"
        f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} logical CPUs, "
        f"load average {load[0]:.1f} at the end (shared machine), torch threads {torch.get_num_threads()}, "
        f"torch {torch.__version__}"
    )


@torch.no_grad()
def score_test_set(model: Any, datamodule: Any) -> dict[str, np.ndarray]:
    """Raw score components, both anomaly maps, labels, masks and anomaly types of the test set."""
    detector = model.model.eval()
    transform = model.pre_processor.transform
    types = dict(
        zip(datamodule.test_data.samples["image_path"], datamodule.test_data.samples["anomaly_type"], strict=True)
    )
    raw, image_maps, feature_maps, labels, masks, kinds = [], [], [], [], [], []
    map_type = detector.anomaly_map_type
    for batch in datamodule.test_dataloader():
        image, mask = transform(batch.image, batch.gt_mask)
        image = detector.reduce_channels(image)
        detector.anomaly_map_type = "image"
        scores, image_map = detector.raw_scores(image)
        detector.anomaly_map_type = "feature"
        _, feature_map = detector.raw_scores(image, components=())
        raw.append(scores)
        image_maps.append(image_map)
        feature_maps.append(feature_map)
        labels.append(batch.gt_label)
        masks.append(mask)
        kinds.extend(types[path] for path in batch.image_path)
    detector.anomaly_map_type = map_type
    standardised = (torch.cat(raw) - detector.score_mean) / detector.score_std
    return {
        "scores": {
            name: (standardised @ standardised.new_tensor(weights)).numpy() for name, weights in SCORE_WEIGHTS.items()
        },
        "labels": torch.cat(labels).numpy().astype(int),
        "types": np.array(kinds),
        "masks": torch.cat(masks).numpy().ravel() > 0.5,
        "maps": {"image": torch.cat(image_maps).numpy().ravel(), "feature": torch.cat(feature_maps).numpy().ravel()},
    }


def auroc_table(results: dict[str, Any]) -> tuple[str, dict]:
    """Markdown table of image AUROC (and AP) per score type and anomaly type."""
    labels, types = results["labels"], results["types"]
    header = "| score | AUROC | AP | " + " | ".join(ANOMALY_TYPES) + " |"
    rows = [header, "|" + "---|" * (3 + len(ANOMALY_TYPES))]
    numbers: dict[str, dict[str, float]] = {}
    for name, scores in results["scores"].items():
        row = {"AUROC": roc_auc_score(labels, scores), "AP": average_precision_score(labels, scores)}
        for kind in ANOMALY_TYPES:
            keep = (labels == 0) | (types == kind)
            row[kind] = roc_auc_score(labels[keep], scores[keep])
        numbers[name] = row
        rows.append(f"| {name} | " + " | ".join(f"{value:.3f}" for value in row.values()) + " |")
    return "\n".join(rows), numbers


def main() -> None:
    """Train, test and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "squid_digit_anatomy.yaml")
    parser.add_argument("--max-epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument("--data-root", type=Path, default=None, help="override the datamodule's root")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=None, help="default: the recipe's seed_everything")
    parser.add_argument("--work-dir", type=Path, default=Path("results") / "benchmarks" / "squid_digit_anatomy")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    overrides = {}
    if args.max_epochs:  # a shorter/longer run keeps the cosine schedule over the whole run
        overrides["scheduler_t_max"] = args.max_epochs
    model, datamodule, trainer_args = load_recipe(args.config, args.data_root, args.seed, **overrides)
    if args.max_epochs:
        trainer_args["max_epochs"] = args.max_epochs
        trainer_args["check_val_every_n_epoch"] = args.max_epochs
    engine = Engine(**trainer_args, logger=False, default_root_dir=args.work_dir, enable_progress_bar=False)

    start = time.perf_counter()
    engine.fit(model, datamodule=datamodule)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    (test_metrics,) = engine.test(model, datamodule=datamodule, verbose=False)
    test_seconds = time.perf_counter() - start

    results = score_test_set(model, datamodule)
    table, numbers = auroc_table(results)
    pixel = {name: roc_auc_score(results["masks"], values) for name, values in results["maps"].items()}

    print(machine_header("python " + " ".join(sys.argv)))
    print(
        f"\nrecipe {args.config.name}: {trainer_args['max_epochs']} epochs, fit {fit_seconds:.0f} s, "
        f"test {test_seconds:.0f} s; anomalib test metrics (score_type={model.model.score_type}, "
        f"anomaly_map_type={model.model.anomaly_map_type}):"
    )
    print("  " + ", ".join(f"{key} {value:.3f}" for key, value in test_metrics.items()))
    print("\nImage AUROC per score type (rows) and anomaly type (columns, each against all normal images):\n")
    print(table)
    print("\nPixel AUROC per anomaly map type: " + ", ".join(f"{key} {value:.3f}" for key, value in pixel.items()))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "config": str(args.config),
                    "epochs": trainer_args["max_epochs"],
                    "threads": args.threads,
                    "fit_seconds": fit_seconds,
                    "test_seconds": test_seconds,
                    "test_metrics": test_metrics,
                    "image_auroc": numbers,
                    "pixel_auroc": pixel,
                    "score_components": SCORE_COMPONENTS,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
