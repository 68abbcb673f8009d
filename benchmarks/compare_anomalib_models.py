"""Our models against anomalib's built-in models on DigitAnatomy, at equal wall-clock training budgets.

Every model trains under Lightning's ``Trainer(max_time=budget)`` on the same DigitAnatomy data (48 px images,
``cell_size`` 16; each model resizes to its own input size in its pre-processor) and is scored on the same test
set. Our models run their CPU recipes (``configs/<model>_digit_anatomy.yaml``: model, trainer settings and
training-set size; the data's image size, test set and seed are the comparison's); anomalib's models run their
defaults at ``--builtin-size`` pixels with their own default pre-processing. No weights can be downloaded on
our machine: the backbones are built with random weights unless ``--pretrained`` is given (then anomalib's
default, ImageNet weights, is used: what a user with network access should run). DRAEM gets an empty texture
folder (Perlin-noise anomalies instead of DTD textures) unless ``--dtd-dir`` names a DTD copy.

    OMP_NUM_THREADS=1 python benchmarks/compare_anomalib_models.py --budget 120
    python benchmarks/compare_anomalib_models.py --models Squid Padim --budget 30 --pretrained

Writes ``results.csv`` (one row a model) and the plots ``auroc.png``, ``anomaly_types.png``, ``roc_curves.png``
and ``example_maps.png`` into ``--out``. Image and per-type AUROC and ROC curves use each model's raw image
scores (before anomalib's normalisation, which clamps scores outside the validation range); pixel AUROC uses the
raw maps resized to the 48 px masks; image F1 uses the post-processed labels (thresholds from the validation
split, as ``anomalib test`` does).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import logging
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import timm
import torch
import torch.nn.functional as F
import torchvision
import yaml
from anomalib import models as anomalib_models
from anomalib.engine import Engine
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from sklearn.metrics import f1_score, roc_auc_score, roc_curve

from anomalib_medical.data import DigitAnatomy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from squid_digit_anatomy import load_recipe, machine_header

REPO = Path(__file__).resolve().parents[1]
ANOMALY_TYPES = ("novel", "missing", "disorder", "flipped")
OURS = {
    "Squid": REPO / "configs" / "squid_digit_anatomy.yaml",
    "SimSID": REPO / "configs" / "simsid_digit_anatomy.yaml",
    "SyntheticTaskLocaliser": REPO / "configs" / "synthetic_task_localiser_digit_anatomy.yaml",
}
# anomalib's models that train offline on a CPU (random backbone weights). Draem runs too (``--models Draem``,
# Perlin-noise anomalies without DTD) but is left out of the default: at 64 px one forward pass of 16 images took
# 15 s on one thread here, so validating and testing 1,000 images alone would take 16 min. Not run here:
# EfficientAd (downloads its teacher weights and Imagenette), Csflow and Uflow (ImageNet backbones only), Dsr
# (downloads its VQ weights), WinClip / VlmAd / the foundation models (downloaded weights, no training).
BUILTIN = ("Padim", "Patchcore", "Stfpm", "ReverseDistillation", "Fastflow", "Ganomaly", "Dfm", "Cfa", "Cflow")
DEFAULT_MODELS = (*OURS, *BUILTIN)
# anomalib's models validate once, after training, like our Squid and SimSID recipes: the whole budget trains
VALIDATE_AT_THE_END = {"check_val_every_n_epoch": 10**6}
COLUMNS = (
    "model",
    "family",
    "backbone_weights",
    "input_size",
    "image_AUROC",
    "pixel_AUROC",
    "image_F1",
    *(f"AUROC_{kind}" for kind in ANOMALY_TYPES),
    "train_seconds",
    "test_seconds",
    "epochs",
    "budget_seconds",
    "settings",
    "error",
)

logger = logging.getLogger(__name__)


@dataclass
class Entry:
    """One model of the comparison, ready to train."""

    name: str
    family: str
    model: LightningModule
    datamodule: DigitAnatomy
    trainer_args: dict[str, Any]
    backbone_weights: str


@dataclass
class Outcome:
    """What a trained model gave on the test set."""

    row: dict[str, Any]
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    maps: torch.Tensor | None = None  # post-processed maps of the example images at the masks' size (if any)


class Recorder(Callback):
    """Counts training batches, notes when validation ran, and keeps each predicted batch's raw scores and maps.

    A trainer callback runs before the callbacks a model configures (anomalib's post-processor among them), so
    ``on_predict_batch_end`` sees the model's own scores, before normalisation.
    """

    def __init__(self) -> None:
        self.train_batches = 0
        self.validated_after: int | None = None  # training batches done at the last validation
        self.scores: list[torch.Tensor] = []
        self.maps: list[torch.Tensor] = []

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        """Count one training batch."""
        del args, kwargs
        self.train_batches += 1

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Note how many training batches the thresholds and normalisation have seen."""
        del pl_module
        if not trainer.sanity_checking:
            self.validated_after = self.train_batches

    def on_predict_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, *args: Any) -> None:
        """Keep the raw image scores and anomaly maps of a predicted batch."""
        del trainer, pl_module, args
        self.scores.append(outputs.pred_score.detach().float().reshape(-1).clone())
        if outputs.anomaly_map is not None:  # image-level models (GANomaly) have none
            self.maps.append(outputs.anomaly_map.detach().float().clone())


@contextlib.contextmanager
def random_backbone_weights() -> Iterator[None]:
    """Build backbones with random weights, also where a model has no ``pre_trained`` argument.

    STFPM's teacher (timm) and CFA's backbone (torchvision) always ask for ImageNet weights, which cannot be
    downloaded here; inside this context both libraries build the same networks without weights.
    """
    create_model = timm.create_model

    def create_without_weights(*args: Any, **kwargs: Any) -> torch.nn.Module:
        return create_model(*args, **kwargs | {"pretrained": False})

    with (
        mock.patch.object(timm, "create_model", create_without_weights),
        mock.patch.object(torchvision.models, "get_model_weights", lambda name: SimpleNamespace(DEFAULT=None)),
    ):
        yield


def digit_anatomy(data_args: dict[str, Any], **recipe_args: Any) -> DigitAnatomy:
    """The comparison's DigitAnatomy: the recipe's training settings, the comparison's images and test set."""
    return DigitAnatomy(**recipe_args | data_args)


def our_entry(name: str, data_args: dict[str, Any], seed: int, **model_overrides: Any) -> Entry:
    """One of our models with its CPU recipe (model and trainer settings, training-set size and batch size)."""
    path = OURS[name]
    model, _, trainer_args = load_recipe(path, seed=seed, **model_overrides)
    recipe_data = yaml.safe_load(path.read_text())["data"]["init_args"]
    training = {key: recipe_data[key] for key in ("train_size", "train_batch_size") if key in recipe_data}
    return Entry(name, "ours", model, digit_anatomy(data_args, **training), trainer_args, "n/a (no backbone)")


def builtin_entry(
    name: str, data_args: dict[str, Any], image_size: int, pretrained: bool, dtd_dir: Path, seed: int, **kwargs: Any
) -> Entry:
    """One of anomalib's models with its defaults, its own pre-processing at ``image_size`` and no visualizer."""
    model_class = getattr(anomalib_models, name)
    parameters = inspect.signature(model_class).parameters
    arguments = {"pre_processor": model_class.configure_pre_processor(image_size=(image_size, image_size))}
    arguments["visualizer"] = False
    if "pre_trained" in parameters:
        arguments["pre_trained"] = pretrained
    if "dtd_dir" in parameters:
        arguments["dtd_dir"] = dtd_dir
    has_backbone = "backbone" in parameters or name == "Stfpm"
    weights = ("ImageNet" if pretrained else "random (no download here)") if has_backbone else "n/a (no backbone)"
    seed_everything(seed, verbose=False)
    with contextlib.nullcontext() if pretrained else random_backbone_weights():
        model = model_class(**arguments | kwargs)
    return Entry(name, "anomalib", model, digit_anatomy(data_args), dict(VALIDATE_AT_THE_END), weights)


def native_masks_and_types(datamodule: DigitAnatomy) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Ground-truth masks (at the data's size), labels and anomaly types of the test set, in loader order."""
    masks, labels = [], []
    for batch in datamodule.test_dataloader():
        masks.append(batch.gt_mask.reshape(len(batch.gt_label), *batch.gt_mask.shape[-2:]).bool())
        labels.append(batch.gt_label.int())
    types = np.array(datamodule.test_data.anomaly_types)
    return torch.cat(masks), torch.cat(labels).numpy(), types


def example_indices(types: np.ndarray) -> list[int]:
    """The first test image of each kind (normal, then each anomaly type), the same for every model."""
    return [int(np.flatnonzero(types == kind)[0]) for kind in ("normal", *ANOMALY_TYPES)]


def train_and_score(
    entry: Entry, budget: float, work_dir: Path, masks: torch.Tensor, types: np.ndarray, examples: Sequence[int]
) -> Outcome:
    """Train ``entry`` for at most ``budget`` seconds (Lightning's ``max_time``), predict the test set, score it.

    Lightning validates at a ``max_time`` stop only in an epoch it validates anyway; when the last validation
    came before the last training batch, the model is validated once more, so that its thresholds and
    normalisation belong to the final weights (counted in ``train_seconds``).
    """
    recorder = Recorder()
    callbacks = [recorder, *entry.trainer_args.get("callbacks", [])]
    fixed = {
        "callbacks": callbacks,
        "max_time": {"seconds": budget},
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_progress_bar": False,
        "default_root_dir": work_dir / entry.name,
    }
    engine = Engine(**{"max_epochs": 1000} | entry.trainer_args | fixed)
    start = time.perf_counter()
    engine.fit(entry.model, datamodule=entry.datamodule)
    if recorder.validated_after != recorder.train_batches:
        engine.validate(entry.model, datamodule=entry.datamodule, verbose=False)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    predictions = engine.predict(entry.model, dataloaders=entry.datamodule.test_dataloader())
    test_seconds = time.perf_counter() - start

    labels = np.concatenate([batch.gt_label.int().numpy() for batch in predictions])
    scores = torch.cat(recorder.scores).numpy()
    pixel_auroc, maps = float("nan"), None
    if recorder.maps:
        pixel_auroc = roc_auc_score(masks.numpy().ravel(), resized(recorder.maps, masks.shape[-2:]).numpy().ravel())
        maps = resized([batch.anomaly_map for batch in predictions], masks.shape[-2:])[list(examples)]
    predicted = np.concatenate([batch.pred_label.int().numpy().reshape(-1) for batch in predictions])
    if not np.isfinite(scores).all():
        msg = f"{entry.name}: {np.sum(~np.isfinite(scores))} test scores are not finite"
        raise ValueError(msg)
    row = {
        "model": entry.name,
        "family": entry.family,
        "backbone_weights": entry.backbone_weights,
        "input_size": "x".join(map(str, entry.model.input_size or masks.shape[-2:])),
        "image_AUROC": roc_auc_score(labels, scores),
        "pixel_AUROC": pixel_auroc,
        "image_F1": f1_score(labels, predicted),
        **{f"AUROC_{kind}": roc_auc_score(labels[kinds], scores[kinds]) for kind, kinds in _type_subsets(types)},
        "train_seconds": train_seconds,
        "test_seconds": test_seconds,
        "epochs": recorder.train_batches / len(entry.datamodule.train_dataloader()),
        "budget_seconds": budget,
        "error": "",
    }
    return Outcome(row, labels, scores, maps)


def resized(maps: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
    """Batches of anomaly maps (``(N, H, W)`` or ``(N, 1, H, W)``) as one ``(N, height, width)`` tensor at ``size``."""
    stacked = torch.cat([batch.reshape(-1, 1, *batch.shape[-2:]).float() for batch in maps])
    return F.interpolate(stacked, size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def _type_subsets(types: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """Each anomaly type with the test images that are normal or of that type."""
    for kind in ANOMALY_TYPES:
        yield kind, (types == "normal") | (types == kind)


def plot_auroc(table: pd.DataFrame, path: Path) -> None:
    """Bars of image and pixel AUROC per model, best image AUROC first; our models' names in bold."""
    figure, axes = plt.subplots(figsize=(9, 3.6))
    positions = np.arange(len(table))
    axes.bar(positions - 0.2, table["image_AUROC"], 0.4, label="image AUROC")
    axes.bar(positions + 0.2, table["pixel_AUROC"], 0.4, label="pixel AUROC")
    _label_models(axes, table)
    axes.set_ylim(0, 1)
    axes.axhline(0.5, color="grey", lw=0.8, ls=":")
    axes.legend(loc="lower left", fontsize=8)
    axes.set_title(f"DigitAnatomy test set, {table['budget_seconds'].iloc[0]:.0f} s training budget per model")
    _save(figure, path)


def plot_anomaly_types(table: pd.DataFrame, path: Path) -> None:
    """Bars of image AUROC per anomaly type (each against the normal test images) per model."""
    figure, axes = plt.subplots(figsize=(9, 3.6))
    positions = np.arange(len(table))
    width = 0.8 / len(ANOMALY_TYPES)
    for offset, kind in enumerate(ANOMALY_TYPES):
        axes.bar(positions + (offset - 1.5) * width, table[f"AUROC_{kind}"], width, label=kind)
    _label_models(axes, table)
    axes.set_ylim(0, 1)
    axes.axhline(0.5, color="grey", lw=0.8, ls=":")
    axes.legend(loc="lower left", fontsize=8, ncol=4)
    axes.set_title("Image AUROC per anomaly type (normal vs that type)")
    _save(figure, path)


def plot_roc_curves(outcomes: Sequence[Outcome], path: Path) -> None:
    """Image-level ROC curves, one a model (solid for ours)."""
    figure, axes = plt.subplots(figsize=(5, 5))
    colours = plt.get_cmap("tab20")
    for index, outcome in enumerate(outcomes):
        fpr, tpr, _ = roc_curve(outcome.labels, outcome.scores)
        style = "-" if outcome.row["family"] == "ours" else "--"
        name, value = outcome.row["model"], outcome.row["image_AUROC"]
        axes.plot(fpr, tpr, style, color=colours(index % 20), lw=1.2, label=f"{name} ({value:.3f})")
    axes.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    axes.set(xlabel="false positive rate", ylabel="true positive rate", title="Image-level ROC, DigitAnatomy test")
    axes.legend(fontsize=6.5, loc="lower right")
    _save(figure, path)


def plot_example_maps(
    outcomes: Sequence[Outcome], images: torch.Tensor, masks: torch.Tensor, kinds: Sequence[str], path: Path
) -> None:
    """Grid: the example test images with their masks (first row), then each model's anomaly maps.

    Maps are anomalib's post-processed ones (0.5 at the pixel threshold chosen on the validation split).
    """
    rows, columns = len(outcomes) + 1, len(kinds)
    margin = 1.3  # inches for the model names
    width = 1.1 * columns + margin
    figure, axes = plt.subplots(rows, columns, figsize=(width, 1.1 * rows + 0.3), squeeze=False)
    for column, kind in enumerate(kinds):
        axes[0, column].imshow(images[column].permute(1, 2, 0).numpy(), vmin=0, vmax=1)
        axes[0, column].contour(masks[column].numpy(), levels=[0.5], colors="red", linewidths=0.8)
        axes[0, column].set_title(kind, fontsize=8)
        for row, outcome in enumerate(outcomes, start=1):
            if outcome.maps is None:
                axes[row, column].text(0.5, 0.5, "no map", ha="center", va="center", fontsize=6)
            else:
                axes[row, column].imshow(outcome.maps[column].numpy(), cmap="jet", vmin=0, vmax=1)
    axes[0, 0].set_ylabel("input", fontsize=7, rotation=0, ha="right", va="center")
    for row, outcome in enumerate(outcomes, start=1):
        axes[row, 0].set_ylabel(outcome.row["model"], fontsize=7, rotation=0, ha="right", va="center")
    for axis in axes.ravel():
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle("anomaly maps (post-processed: 0.5 = pixel threshold)", fontsize=8)
    figure.subplots_adjust(left=margin / width, right=0.98, top=1 - 0.45 / (1.1 * rows + 0.3), wspace=0.05, hspace=0.08)
    _save(figure, path, dpi=80, tight=False)


def _label_models(axes: plt.Axes, table: pd.DataFrame) -> None:
    axes.set_xticks(np.arange(len(table)))
    axes.set_xticklabels(table["model"], rotation=35, ha="right", fontsize=8)
    for label, family in zip(axes.get_xticklabels(), table["family"], strict=True):
        label.set_fontweight("bold" if family == "ours" else "normal")


def _save(figure: plt.Figure, path: Path, dpi: int = 100, tight: bool = True) -> None:
    if tight:
        figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    plt.close(figure)


def compare(
    models: Sequence[str],
    budget: float,
    out: Path,
    work_dir: Path,
    data_args: dict[str, Any],
    builtin_size: int = 64,
    pretrained: bool = False,
    dtd_dir: Path | None = None,
    seed: int = 0,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> pd.DataFrame:
    """Train and score ``models`` one after the other; write ``results.csv`` and the plots into ``out``.

    ``overrides`` maps a model name to constructor arguments (e.g. smaller networks in tests). A model that
    fails keeps its row, with the error and no metrics; the others go on.
    """
    unknown = [name for name in models if name not in OURS and not hasattr(anomalib_models, name)]
    if not models:
        msg = "no models to compare"
        raise ValueError(msg)
    if unknown:
        msg = f"unknown model(s) {unknown}: ours are {list(OURS)}, anomalib's are in anomalib.models"
        raise ValueError(msg)
    out.mkdir(parents=True, exist_ok=True)
    reference = digit_anatomy(data_args)
    reference.prepare_data()
    reference.setup()
    masks, _, types = native_masks_and_types(reference)
    examples = example_indices(types)
    outcomes = []
    with tempfile.TemporaryDirectory() as empty:
        for name in models:
            logger.info("training %s for at most %s s", name, budget)
            try:
                if name in OURS:
                    entry = our_entry(name, data_args, seed, **(overrides or {}).get(name, {}))
                else:
                    texture_dir = dtd_dir or Path(empty)
                    arguments = (overrides or {}).get(name, {})
                    entry = builtin_entry(name, data_args, builtin_size, pretrained, texture_dir, seed, **arguments)
                outcome = train_and_score(entry, budget, work_dir, masks, types, examples)
                changed = (overrides or {}).get(name, {})
                outcome.row["settings"] = " ".join(f"{key}={value}" for key, value in changed.items())
            except Exception as error:  # one failing model must not lose the others' results
                logger.error("%s failed:\n%s", name, traceback.format_exc())
                outcome = Outcome({"model": name, "error": f"{type(error).__name__}: {error}"[:300]})
            logger.info("%s", {key: value for key, value in outcome.row.items() if value != ""})
            outcomes.append(outcome)
            table = write_outputs(outcomes, reference, masks, examples, out)  # after each model: a partial run counts
    return table


def write_outputs(
    outcomes: Sequence[Outcome], reference: DigitAnatomy, masks: torch.Tensor, examples: Sequence[int], out: Path
) -> pd.DataFrame:
    """Write ``results.csv`` (one row an outcome) and the plots of the models that did not fail."""
    table = pd.DataFrame([outcome.row for outcome in outcomes], columns=list(COLUMNS))
    table.to_csv(out / "results.csv", index=False, float_format="%.4f")
    done = sorted((o for o in outcomes if not o.row.get("error")), key=lambda o: -o.row["image_AUROC"])
    if done:
        ranked = pd.DataFrame([outcome.row for outcome in done])
        plot_auroc(ranked, out / "auroc.png")
        plot_anomaly_types(ranked, out / "anomaly_types.png")
        plot_roc_curves(done, out / "roc_curves.png")
        images = torch.stack([reference.test_data[index].image for index in examples])
        kinds = [reference.test_data.anomaly_types[index] for index in examples]
        plot_example_maps(done, images, masks[examples], kinds, out / "example_maps.png")
    return table


def markdown_table(table: pd.DataFrame) -> str:
    """The results as a Markdown table, best image AUROC first."""
    shown = table.sort_values("image_AUROC", ascending=False, na_position="last")
    header = [
        "model",
        "weights",
        "input",
        "image AUROC",
        "pixel AUROC",
        "image F1",
        *ANOMALY_TYPES,
        "train s",
        "epochs",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in shown.itertuples(index=False):
        name = f"**{row.model}**" if row.family == "ours" else row.model
        if isinstance(row.error, str) and row.error:
            lines.append(f"| {name} | failed: {row.error} |" + " |" * (len(header) - 2))
            continue
        numbers = [row.image_AUROC, row.pixel_AUROC, row.image_F1, *(getattr(row, f"AUROC_{k}") for k in ANOMALY_TYPES)]
        cells = [
            name,
            row.backbone_weights,
            row.input_size,
            *(f"{value:.3f}" if np.isfinite(value) else "n/a" for value in numbers),
        ]
        lines.append("| " + " | ".join([*cells, f"{row.train_seconds:.0f}", f"{row.epochs:.2f}"]) + " |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="ours and/or anomalib's names")
    parser.add_argument("--budget", type=float, default=120.0, help="training seconds per model (max_time)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "compare")
    parser.add_argument("--work-dir", type=Path, default=Path("results") / "compare", help="checkpoints")
    parser.add_argument("--data-root", type=Path, default=Path("datasets") / "DigitAnatomy")
    parser.add_argument("--cell-size", type=int, default=16, help="DigitAnatomy cell size (images 3x)")
    parser.add_argument("--samples-per-type", type=int, default=100, help="validation/test images per kind")
    parser.add_argument("--builtin-size", type=int, default=64, help="input size of anomalib's models")
    parser.add_argument("--pretrained", action="store_true", help="ImageNet backbone weights (needs a download)")
    parser.add_argument("--dtd-dir", type=Path, default=None, help="DTD textures for DRAEM (default: none)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="MODEL.ARGUMENT=VALUE",
        help="a constructor argument of one model, e.g. Patchcore.coreset_sampling_ratio=0.01 (YAML value)",
    )
    args = parser.parse_args(argv)
    args.overrides = {}
    for item in args.set:
        target, _, value = item.partition("=")
        model, _, argument = target.partition(".")
        if not (model and argument and value):
            parser.error(f"--set {item!r}: expected MODEL.ARGUMENT=VALUE, e.g. Patchcore.coreset_sampling_ratio=0.01")
        args.overrides.setdefault(model, {})[argument] = yaml.safe_load(value)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison, print the Markdown table; exit status 1 when a model failed."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    data_args = {
        "root": args.data_root,
        "cell_size": args.cell_size,
        "samples_per_type": args.samples_per_type,
        "eval_batch_size": 50,
        "seed": args.seed,
    }
    table = compare(
        args.models,
        args.budget,
        args.out,
        args.work_dir,
        data_args,
        args.builtin_size,
        args.pretrained,
        args.dtd_dir,
        args.seed,
        args.overrides,
    )
    print(machine_header("python " + " ".join(sys.argv)))
    print(markdown_table(table))
    return int(table["error"].fillna("").astype(bool).any())


if __name__ == "__main__":
    sys.exit(main())
