"""Parity of our Squid (the paper's protocol) with the authors' SQUID code on DigitAnatomy, epoch by epoch.

Usage (one side per process, so that the two can run at the same time on one thread each)::

    OMP_NUM_THREADS=1 python benchmarks/parity_digit_anatomy.py --squid /path/to/SQUID --side authors \
        --epochs 3 --json authors.json
    OMP_NUM_THREADS=1 python benchmarks/parity_digit_anatomy.py --side ours --epochs 3 --json ours.json
    python benchmarks/parity_digit_anatomy.py --report authors.json ours.json     # the Markdown tables

Both sides train on the same data: ``anomalib_medical.data.DigitAnatomy`` with the settings of
``configs/squid_digit_anatomy_paper.yaml`` (96 px, 1,600 generated training images per epoch in batches of 16, the
same images in the same order on both sides; validation and test: 500 images each), seeded with ``--seed``.

- ``authors``: their ``AE`` and ``SimpleDiscriminator`` built from the checkout at ``configs/digit_best.py`` size
  (:func:`authors_side_by_side.build_models`), their optimisers and generator/discriminator step sequence
  (:func:`authors_side_by_side.authors_training_step`), their cosine schedule (``T_max`` 300, ``eta_min`` 1 % of
  the learning rate) stepped after every epoch, and their scoring: generator in eval mode, discriminator in training
  mode one image at a time, score ``1 - sigmoid((logit - mean) / std)`` with mean/std from their
  ``GanAlert.collect`` over the first 101 training images (``early_stop`` 100), AUROC from their ``GanAlert.alert``.
- ``ours``: the recipe through anomalib's ``Engine`` (its callbacks: best validation ``image_AUROC`` kept and
  tested), ``scheduler_t_max`` kept at 300 so that the learning rate follows the authors' schedule.

After every epoch (same weights; nothing of the training changes, the random state is restored) both sides score
the validation and test sets with the discriminator per image (the paper's) and in eval mode with running
statistics, the two score statistics (``first_images``: the first 101 training images, the papers';
``recent``: our default's 100 images of the epoch before the 200 whose features the queue still holds), and the
reconstruction error the authors' code prints after every epoch (``recon_l1`` of their ``main.py``: mean over
images of the mean absolute difference between student reconstruction and input). Scores are the negative
discriminator logit standardised by the statistics (our ``pred_score``; the authors' score is a decreasing function
of it, so the AUROC is the same). Progress is printed per epoch; ``--json`` keeps everything, test logits included.
"""

import argparse
import contextlib
import copy
import dataclasses
import io
import json
import shlex
import sys
import time
import types
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from anomalib.engine import Engine
from lightning.pytorch import Callback, LightningModule, Trainer
from sklearn.metrics import roc_auc_score
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from authors_side_by_side import SETTINGS, authors_training_step, build_models
from squid_digit_anatomy import load_recipe, machine_header

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "configs" / "squid_digit_anatomy_paper.yaml"
SIDES = ("authors", "ours")
SCORINGS = ("per_image", "running")  # discriminator batch norm: each image's own statistics / running statistics
STATISTICS = ("first_images", "recent")
RECONSTRUCTION = ("recon_l1", "recon_l2")  # per-image reconstruction errors: mean absolute / squared difference
#: The reference measured for the authors' code in issue 12 (test AUROC, reconstruction error) after 3 and 6 epochs.
ISSUE_REFERENCE = {3: (0.40, 0.77), 6: (0.42, 0.80)}
#: SQUID ``main.py`` keeps an epoch whose AUROC is within 0.5 points (percent) of the best so far.
AUTHORS_TOLERANCE = 0.005


@dataclasses.dataclass(frozen=True)
class Setting:
    """Sizes of a parity run; the defaults are the recipe's (the authors' ``digit_best.py``)."""

    cell_size: int = 32
    train_size: int = 1600
    samples_per_type: int = 100
    base_channels: int = 32
    memory_slots: int = 200
    stats_images: int = 101  # the authors' early_stop + 1
    recent_images: int = 100  # our default's score_stats_images

    @property
    def image_size(self) -> int:
        """Image side: a 3 x 3 grid of cells."""
        return 3 * self.cell_size

    def data_overrides(self) -> dict[str, Any]:
        """DigitAnatomy arguments that differ from the recipe's (none at the default setting)."""
        return {"cell_size": self.cell_size, "train_size": self.train_size, "samples_per_type": self.samples_per_type}

    def model_overrides(self) -> dict[str, Any]:
        """Our Squid arguments that differ from the recipe's (none at the default setting)."""
        if self == Setting():
            return {}
        return {
            "image_size": self.image_size,
            "base_channels": self.base_channels,
            "memory_slots": self.memory_slots,
            "decoder_memory_slots": self.memory_slots,
            "score_stats_images": self.stats_images,
        }

    def authors_setting(self) -> dict[str, Any]:
        """The authors' ``digit_best`` construction settings at these sizes."""
        patch = self.cell_size  # 3 x 3 patches: one per cell
        return SETTINGS["digit"]["Squid"] | {
            "image_size": self.image_size,
            "features_root": self.base_channels,
            "num_slots": self.memory_slots,
            "mem_num_slots": self.memory_slots,
            # their multipliers 256 / 64 are the areas of a patch's decoder maps at 32 px patches
            "decoder_memory": [
                None,
                ("MemoryMatrixBlockV3", (patch // 2) ** 2),
                ("MemoryMatrixBlockV3", (patch // 4) ** 2),
            ],
        }


#: A setting for tests and quick checks (48 px, a few images; minutes on one core for both sides).
TINY = Setting(
    cell_size=16, train_size=64, samples_per_type=4, base_channels=4, memory_slots=32, stats_images=8, recent_images=8
)


# ------------------------------------------------------------------------------------------------ scoring


Outputs = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
"""Grey images ``(B, 1, H, W)`` in ``[0, 1]`` -> reconstruction in ``[0, 1]``, per-image logits, running logits."""


def authors_outputs(generator: nn.Module, discriminator: nn.Module) -> Outputs:
    """The authors' scoring (``main.py`` ``val``, ``alert.py``): generator eval, discriminator train mode per image.

    Copies, so that the training modules keep their state; the running logits come from an eval-mode copy.
    """
    generator = copy.deepcopy(generator).eval()
    train_mode, eval_mode = copy.deepcopy(discriminator).train(), copy.deepcopy(discriminator).eval()

    def run(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        recon = generator(images)["recon"]
        per_image = torch.cat([train_mode(image[None]) for image in recon])[:, 0]
        return recon, per_image, eval_mode(recon)[:, 0]

    return run


def our_outputs(module: Any) -> Outputs:
    """Our torch model's generator (eval mode) and discriminator with ``per_image`` and running batch norm."""
    detector = module.model

    def run(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        output = detector.generator(images, teacher=False)
        logits = [detector.discriminator(output.reconstruction, per_image=mode == "per_image") for mode in SCORINGS]
        return detector.generator.to_unit_range(output.reconstruction), *logits

    return run


@torch.no_grad()
def score_images(outputs: Outputs, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, np.ndarray]:
    """Logits of both scorings, labels and the per-image reconstruction error over ``(images, labels)`` batches.

    ``recon_l1`` is what the authors' ``val`` prints: the mean absolute difference of reconstruction and input;
    ``recon_l2`` the mean squared difference (their training loss).
    """
    results: dict[str, list[torch.Tensor]] = {
        "per_image": [],
        "running": [],
        "labels": [],
        "recon_l1": [],
        "recon_l2": [],
    }
    for images, labels in batches:
        recon, per_image, running = outputs(images)
        results["per_image"].append(per_image)
        results["running"].append(running)
        results["labels"].append(labels)
        results["recon_l1"].append((recon - images).abs().mean(dim=(1, 2, 3)))
        results["recon_l2"].append((recon - images).pow(2).mean(dim=(1, 2, 3)))
    return {key: torch.cat(values).double().numpy() for key, values in results.items()}


def grey(image: torch.Tensor) -> torch.Tensor:
    """anomalib's 3-channel grey images as the one channel both networks see (our model averages too)."""
    return image.mean(dim=1, keepdim=True)


def eval_batches(loader: Iterable[Any]) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """``(grey images, labels)`` of a validation or test loader."""
    for batch in loader:
        yield grey(batch.image), batch.gt_label


def training_images(dataset: Any, keys: Sequence[int], chunk: int = 16) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Training items ``keys`` (rendered again from their seeds, as training saw them) in batches, labelled 0."""
    for start in range(0, len(keys), chunk):
        images = torch.stack([dataset[key].image for key in keys[start : start + chunk]])
        yield grey(images), torch.zeros(len(images))


def statistics_keys(setting: Setting, epoch: int, queued: int) -> dict[str, list[int]]:
    """Training-set keys of the score statistics after ``epoch`` (0-based).

    ``first_images``: the first ``stats_images`` of the dataset (the authors'); ``recent``: the ``recent_images``
    of the epoch before the last ``queued`` (the images whose features the memory queue still holds: ours).
    """
    end = (epoch + 1) * setting.train_size - queued
    return {
        "first_images": list(range(setting.stats_images)),
        "recent": list(range(max(end - setting.recent_images, epoch * setting.train_size), end)),
    }


def auroc(labels: np.ndarray, logits: np.ndarray, mean: float, std: float) -> float:
    """Image AUROC of the standardised negative logit ``(-logit - mean) / std`` (mean/std of negative logits)."""
    return float(roc_auc_score(labels, (-logits - mean) / std))


def epoch_record(outputs: Outputs, datamodule: Any, setting: Setting, epoch: int, queued: int) -> dict[str, Any]:
    """Everything measured after one epoch: AUROC per split, scoring and statistics; reconstruction error."""
    splits = {
        "val": score_images(outputs, eval_batches(datamodule.val_dataloader())),
        "test": score_images(outputs, eval_batches(datamodule.test_dataloader())),
    }
    statistics = {}
    for name, keys in statistics_keys(setting, epoch, queued).items():
        scored = score_images(outputs, training_images(datamodule.train_data, keys))
        statistics[name] = {mode: (float(-scored[mode].mean()), float(scored[mode].std())) for mode in SCORINGS}
    record: dict[str, Any] = {"epoch": epoch + 1, "statistics": statistics}
    for split, scored in splits.items():
        record[split] = {
            "auroc": {
                f"{mode}/{name}": auroc(scored["labels"], scored[mode], *statistics[name][mode])
                for mode in SCORINGS
                for name in STATISTICS
            },
            "recon_l1": float(scored["recon_l1"].mean()),
            # the reconstruction errors as image scores
            "recon_auroc": {name: float(roc_auc_score(scored["labels"], scored[name])) for name in RECONSTRUCTION},
        }
    record["test"]["labels"] = splits["test"]["labels"].astype(int).tolist()
    record["test"]["logits"] = {mode: splits["test"][mode].tolist() for mode in SCORINGS}
    return record


def restored_random_state(function: Callable[[], Any]) -> Any:
    """Call ``function`` and give torch's random state back, so that a measurement cannot change training."""
    state = torch.get_rng_state()
    try:
        return function()
    finally:
        torch.set_rng_state(state)


def progress(side: str, record: dict[str, Any]) -> None:
    """One line per epoch in the log."""
    test = record["test"]
    print(
        f"[{side}] epoch {record['epoch']}: train {record['train_seconds']:.0f} s, measure "
        f"{record['measure_seconds']:.0f} s, test AUROC per_image {test['auroc']['per_image/first_images']:.3f} "
        f"running {test['auroc']['running/first_images']:.3f}, val AUROC per_image "
        f"{record['val']['auroc']['per_image/first_images']:.3f}, recon_l1 {test['recon_l1']:.4f}, "
        f"AUROC of recon_l1 {test['recon_auroc']['recon_l1']:.3f}, of recon_l2 {test['recon_auroc']['recon_l2']:.3f}"
        + (f", authors' printed AUC {record['authors_auc']:.2f}" if "authors_auc" in record else ""),
        flush=True,
    )


# ------------------------------------------------------------------------------------------------ the two sides


def prepared_datamodule(setting: Setting, seed: int, data_root: Path | None) -> tuple[Any, Any, dict]:
    """Our model, the datamodule (set up for fitting) and the trainer arguments of the recipe at ``setting``."""
    model, datamodule, trainer_args = load_recipe(
        RECIPE, data_root, seed, data_overrides=setting.data_overrides(), **setting.model_overrides()
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    return model, datamodule, trainer_args


def authors_printed_auc(
    code: types.SimpleNamespace,
    generator: nn.Module,
    discriminator: nn.Module,
    first_images: torch.Tensor,
    record: dict[str, Any],
) -> tuple[float, float, float]:
    """Mean/std by the authors' ``GanAlert.collect`` over ``first_images`` and their ``alert`` AUC of the test set.

    ``collect`` runs the generator in eval mode and the discriminator in training mode on one image at a time (as
    ``main.py`` leaves it); the AUC is in percent, as their log prints it.
    """
    settings = types.SimpleNamespace(
        early_stop=len(first_images) - 1,
        device="cpu",
        train_dataset=torch.utils.data.TensorDataset(first_images, torch.zeros(len(first_images))),
    )
    alert = code.alert.GanAlert(
        discriminator=copy.deepcopy(discriminator).train(),
        args=None,
        CONFIG=settings,
        generator=copy.deepcopy(generator),
    )
    with torch.no_grad():
        mean, std = alert.collect(alert.train_loader)
    test = record["test"]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # their precision_score warns at thresholds that predict one class
        printed = alert.alert(test["logits"]["per_image"], test["labels"], mean, std, print_info=False)
    return float(mean), float(std), float(printed["auc"])


def run_authors(
    repository: Path,
    setting: Setting,
    epochs: int,
    seed: int,
    data_root: Path | None,
    on_epoch: Callable[[list[dict[str, Any]]], None] | None = None,
) -> dict[str, Any]:
    """Train the authors' SQUID on our DigitAnatomy for ``epochs`` epochs, measuring after each.

    ``on_epoch`` is called with the records so far after every epoch (to keep them if the run is stopped).
    """
    _, datamodule, _ = prepared_datamodule(setting, seed, data_root)
    config = setting.authors_setting()
    code, generator, discriminator, _ = build_models("Squid", repository, config, torch.device("cpu"))
    torch.manual_seed(seed)
    step = authors_training_step(code, "Squid", generator, discriminator, config)
    generator_opt, _ = step.optimisers
    lr = generator_opt.param_groups[0]["lr"]
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(generator_opt, T_max=300, eta_min=lr * 0.01)
    queued = config["num_slots"] * config["n_critic"]
    first = torch.cat([images for images, _ in training_images(datamodule.train_data, range(setting.stats_images))])
    records = []
    for epoch in range(epochs):
        start = time.perf_counter()
        generator.train()
        for index, batch in enumerate(datamodule.train_dataloader()):
            step(grey(batch.image), index)
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()

        record = restored_random_state(
            lambda epoch=epoch: epoch_record(
                authors_outputs(generator, discriminator), datamodule, setting, epoch, queued
            )
        )
        mean, std, printed = authors_printed_auc(code, generator, discriminator, first, record)
        record |= {"authors_statistics": (mean, std), "authors_auc": printed}
        scheduler.step()  # main.py steps the generator's schedule after every epoch's validation
        record |= {"train_seconds": train_seconds, "measure_seconds": time.perf_counter() - start}
        progress("authors", record)
        records.append(record)
        if on_epoch is not None:
            on_epoch(records)
    return {"side": "authors", "source": config["source"], "epochs": records}


class EpochProbe(Callback):
    """After every training epoch (after validation, before the schedule steps), measure :func:`epoch_record`."""

    def __init__(
        self, datamodule: Any, setting: Setting, on_epoch: Callable[[list[dict[str, Any]]], None] | None = None
    ) -> None:
        super().__init__()
        self.datamodule = datamodule
        self.setting = setting
        self.on_epoch = on_epoch
        self.records: list[dict[str, Any]] = []
        self._start = self._validation_start = self._validation_seconds = 0.0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start the epoch's clock."""
        del trainer, pl_module
        self._start = time.perf_counter()
        self._validation_seconds = 0.0

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start the validation clock (anomalib's validation is not training time)."""
        del trainer, pl_module
        self._validation_start = time.perf_counter()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Stop the validation clock."""
        del trainer, pl_module
        self._validation_seconds += time.perf_counter() - self._validation_start

    @torch.no_grad()
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Score validation, test and statistics images with the epoch's weights, in eval mode."""
        train_seconds = time.perf_counter() - self._start - self._validation_seconds
        start = time.perf_counter()
        queued = pl_module._queued_images()
        pl_module.model.eval()
        record = restored_random_state(
            lambda: epoch_record(our_outputs(pl_module), self.datamodule, self.setting, trainer.current_epoch, queued)
        )
        pl_module.model.train()
        model = pl_module.model
        record["model_statistics"] = (float(model.score_mean[0]), float(model.score_std[0]))
        logged = trainer.callback_metrics.get("image_AUROC")
        record["anomalib_val_auroc"] = None if logged is None else float(logged)
        record |= {"train_seconds": train_seconds, "measure_seconds": time.perf_counter() - start}
        progress("ours", record)
        self.records.append(record)
        if self.on_epoch is not None:
            self.on_epoch(self.records)


def run_ours(
    setting: Setting,
    epochs: int,
    seed: int,
    data_root: Path | None,
    work_dir: Path,
    on_epoch: Callable[[list[dict[str, Any]]], None] | None = None,
) -> dict[str, Any]:
    """Train the recipe through anomalib's Engine for ``epochs`` epochs, measuring after each; then test.

    ``on_epoch`` is called with the records so far after every epoch (to keep them if the run is stopped).
    """
    model, datamodule, trainer_args = prepared_datamodule(setting, seed, data_root)
    probe = EpochProbe(datamodule, setting, on_epoch)
    trainer_args |= {"max_epochs": epochs, "callbacks": [*trainer_args.get("callbacks", []), probe]}
    engine = Engine(**trainer_args, logger=False, default_root_dir=work_dir, enable_progress_bar=False)
    engine.fit(model, datamodule=datamodule)
    (test_metrics,) = engine.test(model, datamodule=datamodule, verbose=False)
    post = model.post_processor
    return {
        "side": "ours",
        "source": str(RECIPE.relative_to(REPO)),
        "epochs": probe.records,
        "anomalib_test": {key: float(value) for key, value in test_metrics.items()},
        # the kept epoch's score statistics and the post-processor's normalisation of its scores (validation's)
        "anomalib_normalisation": {
            "statistics": (float(model.model.score_mean[0]), float(model.model.score_std[0])),
            "image_min": float(post.image_min),
            "image_max": float(post.image_max),
            "image_threshold": float(post.image_threshold),
        },
        "scheduler_t_max": model.scheduler_t_max,
    }


# ------------------------------------------------------------------------------------------------ the report


def best_epoch(values: Sequence[float]) -> int:
    """Index of the best value (ours: ``ModelCheckpoint(mode="max")``; the first of equal ones)."""
    return int(np.argmax(values))


def authors_epoch(values: Sequence[float], tolerance: float = AUTHORS_TOLERANCE) -> int:
    """Index of the epoch SQUID's ``main.py`` keeps: the last one within ``tolerance`` of the best so far."""
    best, kept = -1.0, 0
    for index, value in enumerate(values):
        if value > best - tolerance:
            best, kept = max(best, value), index
    return kept


def anomalib_kept_auroc(result: dict[str, Any]) -> tuple[int, float]:
    """Our kept epoch (index) and the test AUROC of its scores as anomalib's post-processor normalises them.

    The kept epoch is the best logged validation ``image_AUROC`` (``ModelCheckpoint``); the post-processor maps a
    score to ``(score - threshold) / (max - min) + 0.5`` with the validation threshold, minimum and maximum, and
    clamps it to ``[0, 1]``: test scores outside the validation range tie at 0 or 1, which can lower the AUROC.
    """
    records, normalisation = result["epochs"], result["anomalib_normalisation"]
    kept = best_epoch([record["anomalib_val_auroc"] for record in records])
    mean, std = normalisation["statistics"]
    test = records[kept]["test"]
    scores = (-np.asarray(test["logits"]["per_image"]) - mean) / std
    spread = normalisation["image_max"] - normalisation["image_min"]
    normalised = np.clip((scores - normalisation["image_threshold"]) / spread + 0.5, 0.0, 1.0)
    return kept, float(roc_auc_score(test["labels"], normalised))


def _value(number: float | None) -> str:
    return "—" if number is None else f"{number:.3f}"


def parity_table(authors: dict[str, Any], ours: dict[str, Any]) -> str:
    """Per epoch, both sides: the paper's test AUROC, ``recon_l1`` and its AUROC as a score; the issue's reference."""
    lines = [
        "| epoch | test AUROC: authors | ours | recon_l1: authors | ours | AUROC of recon_l1: authors | ours | "
        "train s: authors | ours | issue's reference (authors) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for theirs, mine in zip(authors["epochs"], ours["epochs"], strict=False):
        reference = ISSUE_REFERENCE.get(theirs["epoch"])
        cells = [_value(record["test"]["auroc"]["per_image/first_images"]) for record in (theirs, mine)]
        cells += [f"{record['test']['recon_l1']:.4f}" for record in (theirs, mine)]
        cells += [_value(record["test"]["recon_auroc"]["recon_l1"]) for record in (theirs, mine)]
        cells += [f"{record['train_seconds']:.0f}" for record in (theirs, mine)]
        cells.append(f"{reference[0]:.2f} / {reference[1]:.2f}" if reference else "—")
        lines.append(f"| {theirs['epoch']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def switches_table(results: Sequence[dict[str, Any]]) -> str:
    """Per side and epoch: test AUROC of each scoring x statistics, validation AUROC of each scoring."""
    combos = [f"{mode}/{name}" for mode in SCORINGS for name in STATISTICS]
    lines = [
        "| side | epoch | "
        + " | ".join(f"test `{combo}`" for combo in combos)
        + " | val `per_image` | val `running` |",
        "|" + "---|" * (4 + len(combos)),
    ]
    for result in results:
        for record in result["epochs"]:
            test, val = record["test"]["auroc"], record["val"]["auroc"]
            cells = [_value(test[combo]) for combo in combos]
            cells += [_value(val["per_image/first_images"]), _value(val["running/first_images"])]
            lines.append(f"| {result['side']} | {record['epoch']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def selection_table(results: Sequence[dict[str, Any]]) -> str:
    """Per side and scoring: test AUROC of the last epoch, of the best validation epoch and of the authors' rule."""
    lines = [
        "| side | scoring | last epoch: test AUROC | best val epoch (ours): epoch, test AUROC | "
        "authors' rule (last within 0.5 points): epoch, test AUROC |",
        "|---|---|---|---|---|",
    ]
    for result in results:
        records = result["epochs"]
        for mode in SCORINGS:
            key = f"{mode}/first_images"
            val = [record["val"]["auroc"][key] for record in records]
            test = [record["test"]["auroc"][key] for record in records]
            best, theirs = best_epoch(val), authors_epoch(val)
            lines.append(
                f"| {result['side']} | `{mode}` | {test[-1]:.3f} | {records[best]['epoch']}, {test[best]:.3f} | "
                f"{records[theirs]['epoch']}, {test[theirs]:.3f} |"
            )
    return "\n".join(lines)


def report(results: Sequence[dict[str, Any]]) -> str:
    """The Markdown tables of the JSON results of one or both sides (``authors`` and ``ours``)."""
    by_side = {result["side"]: result for result in results}
    parts = list(dict.fromkeys(result["header"] for result in results if "header" in result))
    if set(by_side) == set(SIDES):
        parts.append(parity_table(by_side["authors"], by_side["ours"]))
    parts += [switches_table(results), selection_table(results)]
    if "ours" in by_side and "anomalib_test" in by_side["ours"]:
        metrics = by_side["ours"]["anomalib_test"]
        kept, clamped = anomalib_kept_auroc(by_side["ours"])
        parts.append(
            f"ours, anomalib's test metrics of the kept epoch ({kept + 1}): "
            + ", ".join(f"{key} {value:.3f}" for key, value in metrics.items())
            + f"; its test AUROC after the post-processor's clamped normalisation, from the logits: {clamped:.3f}"
        )
    return "\n\n".join(parts)


# ------------------------------------------------------------------------------------------------ command line


def cpu_model() -> str:
    """The CPU's model name (``lscpu``'s), or the platform's architecture."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def header() -> str:
    """The machine header of this command, now."""
    return machine_header(shlex.join(["python", *sys.argv])) + f", CPU {cpu_model()}"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", choices=[*SIDES, "both"], help="which code to train (both: one after the other)")
    parser.add_argument("--squid", type=Path, help="checkout of github.com/tiangexiang/SQUID (--side authors/both)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--tiny", action="store_true", help="48 px, a few images: a quick check of the script")
    parser.add_argument("--data-root", type=Path, default=None, help="default: the recipe's root")
    parser.add_argument("--work-dir", type=Path, default=Path("results") / "benchmarks" / "parity_digit_anatomy")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--report", type=Path, nargs="+", help="print the tables of these JSON results and stop")
    options = parser.parse_args(argv)
    if options.report:
        return options
    if options.side is None:
        parser.error("give --side authors, ours or both (or --report JSON...)")
    if options.side in {"authors", "both"} and (
        options.squid is None or not (options.squid / "models" / "squid.py").is_file()
    ):
        parser.error(
            f"--side {options.side} needs --squid, a checkout of SQUID (no models/squid.py in {options.squid})"
        )
    if options.epochs < 1 or options.threads < 1:
        parser.error("--epochs and --threads must be >= 1")
    return options


def main(argv: Sequence[str] | None = None) -> None:
    """Run one or both sides (or print the report of earlier runs)."""
    options = parse_args(argv)
    if options.report:
        print(report([json.loads(path.read_text()) for path in options.report]))
        return
    torch.set_num_threads(options.threads)
    setting = TINY if options.tiny else Setting()
    sides = SIDES if options.side == "both" else (options.side,)
    extra = {"setting": dataclasses.asdict(setting), "seed": options.seed}
    results = []
    for side in sides:
        path = None
        if options.json:
            path = options.json if len(sides) == 1 else options.json.with_name(f"{options.json.stem}_{side}.json")

        def keep(records: list[dict[str, Any]], side: str = side, path: Path | None = path) -> None:
            if path is not None:  # the epochs so far, in case the run is stopped
                partial = {"side": side, "epochs": records, "complete": False, "header": header()}
                path.write_text(json.dumps(partial | extra, indent=1))

        start = time.perf_counter()
        if side == "authors":
            result = run_authors(
                options.squid.resolve(), setting, options.epochs, options.seed, options.data_root, keep
            )
        else:
            result = run_ours(setting, options.epochs, options.seed, options.data_root, options.work_dir / side, keep)
        result |= extra | {"header": header(), "complete": True, "wall_seconds": time.perf_counter() - start}
        results.append(result)
        if path is not None:
            path.write_text(json.dumps(result, indent=1))
    print(report(results), flush=True)


if __name__ == "__main__":
    main()
