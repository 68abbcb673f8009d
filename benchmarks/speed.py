"""Training throughput and inference latency of the package's models, with the AUROC of each backend.

For every registered (model, setting): training images/s (steady-state batches of a short fit), and the
inference latency at batch 1 and 16 of torch eager, OpenVINO FP32 and OpenVINO INT8 (NNCF post-training
quantisation calibrated on the validation split), each with its image AUROC on the test split.
AUROC needs a trained model: pass ``--ckpt`` (e.g. the checkpoint of ``anomalib train``) or ``--train``
(trains the recipe first); otherwise the AUROC columns show ``-``.

    python benchmarks/speed.py                                    # all models and settings
    python benchmarks/speed.py --model squid --setting cpu_recipe --ckpt results/.../model.ckpt
    python benchmarks/speed.py --model squid --setting cpu_recipe --train --threads 1

Add a model by adding its recipes to ``BENCHMARKS``.
"""

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import torch
from anomalib.deploy import CompressionType
from anomalib.engine import Engine
from lightning.pytorch import Callback
from sklearn.metrics import roc_auc_score
from squid_digit_anatomy import REPO, load_recipe, machine_header

# model -> setting -> recipe (an anomalib CLI config): the registry of benchmarked models.
BENCHMARKS: dict[str, dict[str, Path]] = {
    "squid": {
        "authors": REPO / "configs" / "squid_digit_anatomy_paper.yaml",
        "cpu_recipe": REPO / "configs" / "squid_digit_anatomy.yaml",
    },
    "simsid": {
        "authors": REPO / "configs" / "simsid_digit_anatomy_paper.yaml",
        "cpu_recipe": REPO / "configs" / "simsid_digit_anatomy.yaml",
    },
}
ONNX_KWARGS = {"opset_version": 18}


class BatchTimer(Callback):
    """Wall time and size of every training batch."""

    def __init__(self) -> None:
        self.records: list[tuple[float, int]] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        """Start the clock."""
        del trainer, pl_module, batch, batch_idx
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Record the batch."""
        del trainer, pl_module, outputs, batch_idx
        self.records.append((time.perf_counter() - self._start, len(batch.image)))


def training_throughput(recipe: Path, batches: int, warmup: int, work_dir: Path) -> float:
    """Images/s over steady-state training batches (the first ``warmup`` and the last one excluded)."""
    model, datamodule, _ = load_recipe(recipe, work_dir / "data")
    timer = BatchTimer()
    engine = Engine(
        max_epochs=1,
        limit_train_batches=warmup + batches + 1,  # the last batch also refreshes the score statistics
        limit_val_batches=0,
        logger=False,
        default_root_dir=work_dir,
        enable_progress_bar=False,
        callbacks=[timer],
    )
    engine.fit(model, datamodule=datamodule)
    steady = timer.records[warmup:-1]
    return sum(size for _, size in steady) / sum(seconds for seconds, _ in steady)


def latency_ms(run: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``run`` in milliseconds after two warm-up calls."""
    run()
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def image_auroc(predict: Callable[[torch.Tensor], np.ndarray], datamodule: Any) -> float:
    """Image AUROC of ``predict`` (images -> scores) on the test split."""
    scores, labels = [], []
    for batch in datamodule.test_dataloader():
        scores.append(np.asarray(predict(batch.image)).ravel())
        labels.append(batch.gt_label.numpy())
    return roc_auc_score(np.concatenate(labels), np.concatenate(scores))


def benchmark(name: str, setting: str, recipe: Path, args: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    """All measurements of one (model, setting)."""
    row: dict[str, Any] = {"model": name, "setting": setting}
    row["train images/s"] = training_throughput(recipe, args.train_batches, args.warmup, work_dir / "throughput")

    model, datamodule, trainer_args = load_recipe(recipe, work_dir / "data")
    trained = args.ckpt is not None or args.train
    if args.ckpt:
        model = type(model).load_from_checkpoint(args.ckpt)
    else:
        engine = Engine(**trainer_args, logger=False, default_root_dir=work_dir / "train", enable_progress_bar=False)
        if args.train:
            engine.fit(model, datamodule=datamodule)
        else:  # untrained: validate once so that the post-processor holds finite thresholds and ranges
            # (NaN normalisation constants in the graph break NNCF's INT8 calibration)
            engine.validate(model, datamodule=datamodule)
    datamodule.setup()
    model.eval()
    images = torch.cat([batch.image for batch in datamodule.test_dataloader()])[:16]
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": args.threads}

    def torch_predict(batch: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return model(batch).pred_score.numpy()

    backends: dict[str, Callable[[torch.Tensor], np.ndarray]] = {"torch": torch_predict}
    fp32_path = model.to_openvino(work_dir / "openvino_fp32", onnx_kwargs=ONNX_KWARGS)
    int8_path = model.to_openvino(
        work_dir / "openvino_int8",
        compression_type=CompressionType.INT8_PTQ,
        datamodule=datamodule,
        onnx_kwargs=ONNX_KWARGS,
    )
    for label, path in (("openvino fp32", fp32_path), ("openvino int8", int8_path)):
        compiled = ov.Core().compile_model(str(path), "CPU", config)
        backends[label] = lambda batch, compiled=compiled: compiled(batch.numpy())["pred_score"]
    for label, predict in backends.items():
        for size in (1, 16):
            row[f"{label} b{size} ms"] = latency_ms(
                lambda predict=predict, size=size: predict(images[:size]), args.repeats
            )
        row[f"{label} AUROC"] = image_auroc(predict, datamodule) if trained else None
    return row


def main() -> None:
    """Run the registered benchmarks and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(BENCHMARKS), default=None, help="default: all")
    parser.add_argument("--setting", default=None, help="default: all settings of the model")
    parser.add_argument("--ckpt", type=Path, default=None, help="trained checkpoint (one model and setting)")
    parser.add_argument("--train", action="store_true", help="train each recipe before measuring AUROC")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--train-batches", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    selected = [
        (name, setting, recipe)
        for name, settings in BENCHMARKS.items()
        if args.model in {None, name}
        for setting, recipe in settings.items()
        if args.setting in {None, setting}
    ]
    if args.ckpt and len(selected) != 1:
        parser.error("--ckpt needs exactly one --model and --setting")
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="speed_"))
    rows = [
        benchmark(name, setting, recipe, args, work_dir / f"{name}_{setting}") for name, setting, recipe in selected
    ]

    print(machine_header("python " + " ".join(sys.argv)))
    columns = list(rows[0])
    print("\n| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in rows:
        cells = [
            value if isinstance(value, str) else "-" if value is None else f"{value:.3g}" for value in row.values()
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
