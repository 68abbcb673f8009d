"""Re-score trained Squid / SimSID checkpoints with ``feature_residual: bank`` (no training): AUROC as trained vs bank.

For each checkpoint, the image AUROC of its score type (the CPU recipe's ``residual``) on the validation and test
splits, and the pixel AUROC of its anomaly map on the test split, twice:

- *as trained*: the checkpoint unchanged (for the CPU recipe before 2026-12-03, the feature residual is each
  patch's distance to the memory queue);
- *bank*: the same weights loaded with ``feature_residual="bank"``; the bank is filled with the eval-mode
  bottleneck features of the last ``--bank-images`` training images in dataset order, and the score
  statistics come from the ``score_stats_images`` images before them, as a fit does at the end of an epoch.

The validation split only chooses; the test split reports.

    python benchmarks/rescore_feature_residual.py --config configs/squid_digit_anatomy.yaml --bank-images 1400 \\
        benchmarks/results/main_job_seeds_intel/work/*/Squid/DigitAnatomy/sklearn/v0/weights/lightning/model.ckpt

Prints one Markdown row per checkpoint and a min / median / max row.
"""

import argparse
import importlib
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
import yaml
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from squid_digit_anatomy import instantiate, machine_header

COLUMNS = ("val as trained", "val bank", "test as trained", "test bank", "pixel as trained", "pixel bank")


def model_class(config: dict[str, Any]) -> type:
    """The Lightning model class named by a recipe's ``model.class_path``."""
    module, name = config["model"]["class_path"].rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


@torch.no_grad()
def training_images(model: Any, datamodule: Any) -> torch.Tensor:
    """All training images in dataset order, as the network sees them (pre-processed, grey)."""
    dataset = datamodule.train_data
    loader = DataLoader(dataset, batch_size=64, collate_fn=dataset.collate_fn)
    transform = model.pre_processor.transform
    return torch.cat([model.model.reduce_channels(transform(batch.image)) for batch in loader])


@torch.no_grad()
def fill_bank(model: Any, images: torch.Tensor) -> None:
    """Fill ``model``'s feature bank from the last images and its score statistics from the images before them."""
    detector = model.model.eval()
    bank = detector.feature_bank
    if len(images) <= bank.num_slots + model.score_stats_images:
        msg = (
            f"{len(images)} training images cannot fill a bank of {bank.num_slots} and give "
            f"{model.score_stats_images} other images for the score statistics: lower --bank-images."
        )
        raise ValueError(msg)
    bank.fill(
        torch.cat([detector.generator.bottleneck_features(chunk) for chunk in images[-bank.num_slots :].split(64)])
    )
    held = max(bank.num_slots, model._queued_images())  # the queue's images are skipped, as in a fit
    stats_images = images[:-held][-model.score_stats_images :]
    detector.set_score_statistics(torch.cat([detector.raw_scores(chunk)[0] for chunk in stats_images.split(64)]))


@torch.no_grad()
def evaluate(model: Any, loader: Any) -> tuple[float, float]:
    """Image AUROC of ``pred_score`` and pixel AUROC of ``anomaly_map`` (NaN without masks) over a loader."""
    detector = model.model.eval()
    transform = model.pre_processor.transform
    scores, labels, maps, masks = [], [], [], []
    for batch in loader:
        image, mask = transform(batch.image, batch.gt_mask)
        prediction = detector(image)
        scores.append(prediction.pred_score)
        labels.append(batch.gt_label)
        maps.append(prediction.anomaly_map.flatten())
        masks.append(mask.flatten() > 0.5)
    image_auroc = roc_auc_score(torch.cat(labels).numpy(), torch.cat(scores).numpy())
    mask = torch.cat(masks)
    pixel_auroc = roc_auc_score(mask.numpy(), torch.cat(maps).numpy()) if mask.any() else float("nan")
    return float(image_auroc), float(pixel_auroc)


def rescore(checkpoint: Path, config: dict[str, Any], datamodule: Any, bank_images: int) -> dict[str, float]:
    """The :data:`COLUMNS` of one checkpoint.

    Raises:
        ValueError: If the bank model does not hold every weight of the checkpoint.

    """
    cls = model_class(config)
    trained = cls.load_from_checkpoint(checkpoint, map_location="cpu", visualizer=False)
    banked = cls.load_from_checkpoint(
        checkpoint,
        map_location="cpu",
        strict=False,  # the checkpoint has no bank; every other entry is compared below
        visualizer=False,
        feature_residual="bank",
        feature_bank_images=bank_images,
    )
    bank_state = banked.state_dict()
    for name, value in trained.state_dict().items():
        if name not in bank_state or not torch.equal(bank_state[name], value):
            msg = f"{checkpoint}: the bank model did not load {name} from the checkpoint."
            raise ValueError(msg)
    fill_bank(banked, training_images(trained, datamodule))
    val_trained, _ = evaluate(trained, datamodule.val_dataloader())
    val_bank, _ = evaluate(banked, datamodule.val_dataloader())
    test_trained, pixel_trained = evaluate(trained, datamodule.test_dataloader())
    test_bank, pixel_bank = evaluate(banked, datamodule.test_dataloader())
    return dict(zip(COLUMNS, (val_trained, val_bank, test_trained, test_bank, pixel_trained, pixel_bank), strict=True))


def table(rows: dict[str, dict[str, float]]) -> str:
    """Markdown table: one row per checkpoint, then min / median / max of each column."""
    lines = ["| checkpoint | " + " | ".join(COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    lines += [f"| {name} | " + " | ".join(f"{row[c]:.3f}" for c in COLUMNS) + " |" for name, row in rows.items()]
    spread = [
        " / ".join(f"{f([row[c] for row in rows.values()]):.3f}" for f in (min, statistics.median, max))
        for c in COLUMNS
    ]
    lines.append(f"| min / median / max ({len(rows)}) | " + " | ".join(spread) + " |")
    return "\n".join(lines)


def short_name(checkpoint: Path) -> str:
    """The run folder of an anomalib checkpoint (``<run>/<Model>/<data>/<category>/v0/weights/lightning/...``)."""
    parts = checkpoint.resolve().parts
    return parts[-8] if len(parts) >= 8 else checkpoint.stem


def main() -> None:
    """Re-score the checkpoints and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--config", type=Path, required=True, help="the recipe the checkpoints were trained with")
    parser.add_argument("--bank-images", type=int, default=1400)
    parser.add_argument("--data-root", type=Path, default=None, help="override the datamodule's root")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    config = yaml.safe_load(args.config.read_text())
    datamodule = instantiate(config["data"], **({"root": args.data_root} if args.data_root else {}))
    datamodule.setup()
    rows = {}
    for checkpoint in args.checkpoints:
        rows[short_name(checkpoint)] = rescore(checkpoint, config, datamodule, args.bank_images)
        print(
            f"{short_name(checkpoint)}: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[short_name(checkpoint)].items())
        )
    print(machine_header("python " + " ".join(sys.argv)))
    print(f"\nbank of the last {args.bank_images} training images (dataset order); image AUROC of each checkpoint's")
    print("score type on validation and test, pixel AUROC of its anomaly map on test:\n")
    print(table(rows))


if __name__ == "__main__":
    main()
