"""Synthetic-task localiser: self-supervised anomaly localisation from multiple synthetic tasks.

Baugh et al., "Many tasks make light work: Learning to localise medical anomalies from multiple synthetic tasks",
MICCAI 2023 (https://arxiv.org/abs/2307.00899); authors' code: https://github.com/matt-baugh/many-tasks-make-light-work
(MIT). Histogram equalisation of the inputs as an option: Mueller et al., "Confidence-Aware and Self-supervised
Image Anomaly Localisation", UNSURE 2023.

Training corrupts each normal image of the batch with one of the *training tasks* and regresses the
flipped-Gaussian label map with a U-Net (MSE). Validation keeps anomalib's contract (predictions on the
datamodule's validation split feed the post-processor's thresholds and normalisation) and, in the same step,
corrupts the split's *normal* images with the held-out *validation tasks*: the pixel average precision over
these corrupted images and their uncorrupted originals is logged as ``synthetic_pixel_AP``, with the MSE as
``synthetic_val_loss``. The corruptions are re-drawn from ``validation_seed`` at every validation epoch, so the
numbers are comparable across epochs. Monitor ``synthetic_pixel_AP`` (mode ``max``) with Lightning's
``ModelCheckpoint``/``EarlyStopping`` to choose the training length without any real anomaly; when the trainer's
checkpoint callback monitors it, the best checkpoint's weights (and thresholds) are restored at the end of
``fit``, so ``anomalib train`` tests the selected model. Use ``anomalib.callbacks.ModelCheckpoint``: anomalib's
engine adds its own checkpoint callback unless one of that class is given.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from anomalib import LearningType
from anomalib.data import Batch
from anomalib.deploy.export import ExportType
from anomalib.metrics import Evaluator
from anomalib.models.components import AnomalibModule
from anomalib.models.components.base.export_mixin.utils import create_export_root, get_onnx_dynamo_flag
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch.nn import functional as F
from torchmetrics import MeanSquaredError
from torchmetrics.classification import BinaryAveragePrecision
from torchvision.transforms.v2 import Compose, Resize

from anomalib_medical.data.utils.volume import VolumeDataModule
from anomalib_medical.export import ModelInfoExportMixin
from anomalib_medical.metrics import raw_metrics, volume_metrics
from anomalib_medical.models.components.lightning_checks import CheckedModuleMixin
from anomalib_medical.models.components.unet import Initialisation, check_spatial_dims
from anomalib_medical.models.components.validation import check_number
from anomalib_medical.post_processing import RawMapPostProcessor
from anomalib_medical.visualization import RadiographVisualizerDefault

from .tasks import TASK_NAMES, ForegroundRule, SourceIntensity, SyntheticAnomalyGenerator, build_task
from .tasks.blending import InterDatasetBlendingTask
from .torch_model import InputRange, ScoreAggregation, SyntheticTaskLocaliserModel

logger = logging.getLogger(__name__)

__all__ = [
    "SYNTHETIC_PIXEL_AP",
    "SyntheticTaskLocaliser",
    "VolumeExportMixin",
    "export_volume",
    "warmup_exponential_decay",
]

#: Name of the logged model-selection metric.
SYNTHETIC_PIXEL_AP = "synthetic_pixel_AP"

#: Example volume side of the ONNX export when every spatial axis is dynamic (anomalib's 2-D example is 32 x 32).
EXPORT_EXAMPLE_SIDE = 32


def warmup_exponential_decay(step: int, warmup_steps: int, decay_rate: float, min_factor: float) -> float:
    """Learning-rate factor of the authors' schedule: linear warm-up from 1 %, exponential decay, then constant."""
    if step < warmup_steps:
        return 0.01 + 0.99 * step / warmup_steps
    return max(decay_rate ** (step - warmup_steps), min_factor)


def export_volume(
    model: AnomalibModule,
    export_root: Path | str,
    model_file_name: str = "model",
    input_size: tuple[int, ...] | None = None,
    **kwargs: Any,
) -> Path:
    """ONNX export of a volume model, as anomalib's ``to_onnx`` but with inputs ``(N, 1, D, H, W)``.

    anomalib's exporter probes with a ``(1, 3, H, W)`` image. Here the input is one-channel volumes; the batch
    axis is dynamic, and so are ``D``, ``H`` and ``W`` unless ``input_size`` fixes them. ``kwargs`` go to
    ``torch.onnx.export`` as in anomalib (e.g. ``opset_version``); outputs are the model's non-``None`` fields.

    Raises:
        ValueError: If ``input_size`` is not three sides, or ``dynamo=False`` is asked (anomalib's rule).

    """
    get_onnx_dynamo_flag(kwargs)
    if input_size is not None and len(input_size) != 3:
        msg = f"input_size of a volume model must be (D, H, W), got {tuple(input_size)}"
        raise ValueError(msg)
    sides = tuple(input_size) if input_size is not None else (EXPORT_EXAMPLE_SIDE,) * 3
    example = torch.zeros(2, 1, *sides, device=model.device)
    output_names = [name for name, value in model.eval()(example)._asdict().items() if value is not None]
    input_names = kwargs.pop("input_names", ["input"])
    batch = torch.export.Dim("batch_size")
    axes: dict[int, Any] = {0: batch}
    if input_size is None:
        axes |= {axis: torch.export.Dim.DYNAMIC for axis in (2, 3, 4)}
    path = create_export_root(export_root, ExportType.ONNX) / f"{model_file_name}.onnx"
    torch.onnx.export(
        model=model,
        args=(example,),
        f=str(path),
        opset_version=kwargs.pop("opset_version", 14),
        input_names=input_names,
        output_names=output_names,
        dynamo=True,
        dynamic_shapes=(axes,),
        **kwargs,
    )
    return path


class VolumeExportMixin:
    """``to_onnx`` of an ``AnomalibModule`` whose ``model.spatial_dims`` may be 3: volumes via :func:`export_volume`.

    ``Engine.export`` and ``to_openvino`` call ``to_onnx``, so both export volume models too.
    """

    model: torch.nn.Module

    def to_onnx(
        self,
        export_root: Path | str,
        model_file_name: str = "model",
        input_size: tuple[int, ...] | None = None,
        **kwargs: Any,
    ) -> Path:
        """Export to ONNX as anomalib does; a volume model takes ``(N, 1, D, H, W)`` (:func:`export_volume`)."""
        if self.model.spatial_dims == 2:
            return super().to_onnx(export_root, model_file_name, input_size, **kwargs)  # type: ignore[misc]
        return export_volume(self, export_root, model_file_name, input_size, **kwargs)  # type: ignore[arg-type]


class SyntheticTaskLocaliser(
    ModelInfoExportMixin, VolumeExportMixin, CheckedModuleMixin, RadiographVisualizerDefault, AnomalibModule
):
    """Localise anomalies by regressing labels of synthetic anomalies, validated on held-out synthetic tasks.

    Args:
        train_tasks: Names of the training tasks (see :data:`.tasks.TASK_NAMES`).
        validation_tasks: Names of the held-out validation tasks; empty disables the synthetic validation.
        sigma: Standard deviation of the flipped-Gaussian labelling function (task space [-1, 1]).
        intensity_scale: Scale of the smooth intensity change task (task space).
        push_distance: Push-distance range in pixels of the deformation tasks (authors: 0.5 to 10 at 256x256).
        source_images: Folder of external images for inter-dataset blending (``None``: scikit-image photographs;
            3-D targets need a folder of ``.npy`` volumes).
        source_intensity: External sources brought into task space by ``"equalise"`` (256-bin histogram
            equalisation to [-1, 1], the authors' ImageNet) or ``"zscore"`` (within the foreground, their volumes).
        probabilistic_blending: Both blending tasks as Mueller et al.'s P-PII (up-scaled source gradients, several
            raters' masks, labels ``min(1, 10 |change|)``); meant with ``histogram_equalisation``.
        foreground_threshold: Foreground of an image for the 50 % overlap rule, as a fraction of its intensity
            range; ``None`` treats the whole image as foreground (as the authors do for chest X-rays).
        foreground_rule: ``"threshold"`` (``foreground_threshold``) or ``"nonzero"``: ``binary_fill_holes(x != 0)``
            per image, the authors' brain-MRI rule for z-scored volumes with a zero background.
        min_size: Smallest target-mask axis as a fraction of the image.
        max_size: Largest target-mask extent as a fraction of the image.
        depth: U-Net depth (authors: 7 at 256x256, 5 for 80x112x80 brain volumes).
        base_channels: Channels of the first U-Net stage.
        max_channels: U-Net channel cap (``None``: nnU-Net's 512 in 2-D, 320 in 3-D, as the authors).
        positional_encoding: Add coordinate and random-Fourier-feature input channels.
        initialisation: U-Net weights: ``"he"`` (nnU-Net's, the authors') or ``"pytorch"`` (PyTorch's default,
            which trained faster in short CPU runs; see the README).
        score_aggregation: Image score from the pixel map: ``"mean"`` (authors) or ``"max"``.
        learning_rate: Peak AdamW learning rate (authors: 5e-3 for radiographs, 1e-3 for brain volumes).
        weight_decay: AdamW weight decay (authors: 0).
        warmup_steps: Optimiser steps of linear warm-up from 1 % of the peak (authors: 100).
        decay_rate: Per-step exponential decay after warm-up (authors: 0.9997122, a factor e per ~3,470 steps).
        min_lr_factor: Floor of the decay as a fraction of the peak (authors: 1/20).
        histogram_equalisation: Equalise each input image's histogram (in the torch model, so in the exported
            graph; Mueller et al., 2023).
        image_size: Resize target of the default pre-processor (``None``: 256x256 in 2-D; in 3-D the default
            pre-processor does not resize, so ``image_size`` must stay ``None``).
        spatial_dims: 2 for images ``(N, C, H, W)``, 3 for volumes ``(N, C, D, H, W)`` (network, positional
            encoding, equalisation, scoring, default pre-processor, evaluator and export). A 2-D model given a
            :class:`~anomalib_medical.data.utils.volume.VolumeDataModule` becomes 3-D when the trainer sets it up
            (see :meth:`setup`).
        input_range: ``"unit"`` (inputs in [0, 1], mapped to [-1, 1]: anomalib's images) or ``"task"`` (inputs
            already in task space: volumes z-scored within the brain); ``None``: by ``spatial_dims``.
        seed: Seed of the training tasks' random generator (``None``: ``torch.initial_seed()`` at fit start, so
            ``seed_everything`` makes training reproducible).
        validation_seed: Seed of the validation corruptions, re-used at every validation epoch.
        pre_processor: Pre-processor, or ``True`` for the default (resize to ``image_size``).
        post_processor: Post-processor or flag (default: :class:`.RawMapPostProcessor`, keeping the raw maps).
        evaluator: Evaluator or flag (default: image/pixel AUROC, AUPR, AP and F1, on the raw maps; for volumes
            :func:`~anomalib_medical.metrics.volume_metrics`: voxel and slice-wise ones too).
        visualizer: Visualizer or flag.

    Raises:
        ValueError: If a numeric argument is out of its range (the message names it and the range).

    """

    def __init__(
        self,
        train_tasks: Sequence[str] = TASK_NAMES[:4],
        validation_tasks: Sequence[str] = TASK_NAMES[4:],
        sigma: float = 0.2,
        intensity_scale: float = 0.2,
        push_distance: tuple[float, float] = (0.5, 10.0),
        source_images: str | Path | None = None,
        source_intensity: SourceIntensity = "equalise",
        probabilistic_blending: bool = False,
        foreground_threshold: float | None = None,
        foreground_rule: ForegroundRule = "threshold",
        min_size: float = 0.06,
        max_size: float = 0.8,
        depth: int = 7,
        base_channels: int = 32,
        max_channels: int | None = None,
        positional_encoding: bool = True,
        initialisation: Initialisation = "he",
        score_aggregation: ScoreAggregation = "mean",
        learning_rate: float = 5e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 100,
        decay_rate: float = 0.9997122182804811,
        min_lr_factor: float = 0.05,
        histogram_equalisation: bool = False,
        image_size: tuple[int, int] | None = None,
        spatial_dims: int = 2,
        input_range: InputRange | None = None,
        seed: int | None = None,
        validation_seed: int = 0,
        pre_processor: PreProcessor | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        check_number("sigma", sigma, 0, low_open=True)
        check_number("intensity_scale", intensity_scale, 0, low_open=True)
        for distance in push_distance:
            check_number("push_distance", distance, 0)
        if push_distance[0] > push_distance[1]:
            msg = f"push_distance must be a range (low, high) with low <= high, got {tuple(push_distance)}"
            raise ValueError(msg)
        check_number("foreground_threshold", foreground_threshold, 0, 1, high_open=True, optional=True)
        check_number("min_size", min_size, 0, 1, low_open=True)
        check_number("max_size", max_size, min_size, 1)
        check_number("learning_rate", learning_rate, 0, low_open=True)
        check_number("weight_decay", weight_decay, 0)
        check_number("warmup_steps", warmup_steps, 0, integer=True)
        check_number("decay_rate", decay_rate, 0, 1, low_open=True)
        check_number("min_lr_factor", min_lr_factor, 0, 1)
        spatial_dims = check_spatial_dims(spatial_dims)
        if image_size is not None:
            if spatial_dims == 3:
                msg = "image_size must be None for spatial_dims=3: the default pre-processor does not resize volumes"
                raise ValueError(msg)
            for side in image_size:
                check_number("image_size", side, 1, integer=True)
        check_number("seed", seed, 0, integer=True, optional=True)
        check_number("validation_seed", validation_seed, 0, integer=True)
        self._default_components = {"pre_processor": pre_processor is True, "evaluator": evaluator is True}
        if pre_processor is True:
            pre_processor = self.configure_pre_processor(image_size) if spatial_dims == 2 else PreProcessor()
        if evaluator is True and spatial_dims == 3:
            evaluator = Evaluator(test_metrics=volume_metrics())
        super().__init__(
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        if not train_tasks:
            msg = "at least one training task is needed"
            raise ValueError(msg)
        overlap = set(train_tasks) & set(validation_tasks)
        if overlap:
            logger.warning("Tasks %s are used for both training and validation.", sorted(overlap))
        task_options = {
            "intensity_scale": intensity_scale,
            "push_distance": tuple(push_distance),
            "source_images": source_images,
            "source_intensity": source_intensity,
            "probabilistic_blending": probabilistic_blending,
            "min_size": min_size,
            "max_size": max_size,
        }
        self.train_generator = SyntheticAnomalyGenerator(
            [build_task(name, **task_options) for name in train_tasks],
            sigma,
            foreground_threshold,
            foreground_rule,
        )
        validation = [build_task(name, **task_options) for name in validation_tasks]
        self.validation_generator = (
            SyntheticAnomalyGenerator(validation, sigma, foreground_threshold, foreground_rule) if validation else None
        )
        self._network = {
            "depth": depth,
            "base_channels": base_channels,
            "max_channels": max_channels,
            "positional_encoding": positional_encoding,
            "score_aggregation": score_aggregation,
            "histogram_equalisation": histogram_equalisation,
            "initialisation": initialisation,
            "input_range": input_range,
        }
        self.model = SyntheticTaskLocaliserModel(**self._network, spatial_dims=spatial_dims)
        self.synthetic_ap = BinaryAveragePrecision(thresholds=torch.linspace(0, 1, 1001))
        self.synthetic_mse = MeanSquaredError()
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        self.decay_rate = decay_rate
        self.min_lr_factor = min_lr_factor
        self.seed = seed
        self.validation_seed = validation_seed
        self._train_rng = np.random.default_rng(seed)
        self._validation_rng = np.random.default_rng(validation_seed)

    @classmethod
    def configure_pre_processor(cls, image_size: tuple[int, int] | None = None) -> PreProcessor:
        """Resize (default 256x256); no ImageNet normalisation (the torch model maps grey [0, 1] to [-1, 1])."""
        return PreProcessor(transform=Compose([Resize(image_size or (256, 256), antialias=True)]))

    @staticmethod
    def configure_post_processor() -> PostProcessor:
        """One-class post-processor (F1-adaptive thresholds) that keeps the raw maps (:class:`RawMapPostProcessor`)."""
        return RawMapPostProcessor()

    @staticmethod
    def configure_evaluator() -> Evaluator:
        """Image- and pixel-level AUROC, AUPR, the paper's average precision and F1 on the test split.

        The ranking metrics are computed on the raw scores and maps, not on anomalib's normalised ones, whose
        clamp ties every value beyond the validation range (:func:`anomalib_medical.metrics.raw_metrics`).
        ``image_/pixel_AveragePrecision`` (whole set) and ``pixel_ChunkedAveragePrecision`` (chunks of 20 images,
        10 orderings) are Baugh et al.'s metrics.
        """
        return Evaluator(test_metrics=raw_metrics())

    def setup(self, stage: str) -> None:
        """Become a volume model (3-D) when the trainer's datamodule serves volumes and this model is 2-D.

        The U-Net and encoding are rebuilt for ``spatial_dims=3`` (before the optimiser is configured and before a
        checkpoint is restored), the default pre-processor stops resizing, the default evaluator reports the
        volume metrics, and the saved hyper-parameters say ``spatial_dims: 3`` (so the checkpoint reloads as 3-D).

        Raises:
            ValueError: If ``image_size`` was set (volumes are not resized), or a volume model is to be fitted with
                ``inter_dataset_blending`` but no ``source_images`` folder of volumes.

        """
        datamodule = getattr(self.trainer, "datamodule", None)
        if isinstance(datamodule, VolumeDataModule) and self.model.spatial_dims == 2:
            self._become_volumetric(datamodule)
        if stage == "fit" and self.model.spatial_dims == 3:
            generators = [self.train_generator, self.validation_generator]
            tasks = [task for generator in generators if generator is not None for task in generator.tasks]
            if any(isinstance(task, InterDatasetBlendingTask) and task.folder is None for task in tasks):
                msg = (
                    "inter_dataset_blending on volumes needs --model.source_images: a folder of .npy volumes from "
                    "another data set (the authors blend MOOD abdominal CTs into brains); the default photographs "
                    "are 2-D. Pass one, or leave the task out of train_tasks / validation_tasks."
                )
                raise ValueError(msg)

    def _become_volumetric(self, datamodule: VolumeDataModule) -> None:
        """Rebuild the network, the default pre-processor and evaluator for volumes (see :meth:`setup`)."""
        if self.hparams.get("image_size") is not None:
            msg = (
                f"{datamodule.name} serves volumes but image_size={self.hparams['image_size']} is set: volumes are not "
                "resized: leave image_size unset"
            )
            raise ValueError(msg)
        logger.info("%s serves volumes: building the 3-D localiser (spatial_dims=3).", datamodule.name)
        self.model = SyntheticTaskLocaliserModel(**self._network, spatial_dims=3)
        self.hparams["spatial_dims"] = 3
        if self._default_components["pre_processor"] and self.pre_processor is not None:
            self.pre_processor.transform = self.pre_processor.export_transform = None
        if self._default_components["evaluator"] and self.evaluator is not None:
            self.evaluator.test_metrics = torch.nn.ModuleList(volume_metrics())
            if self.evaluator.compute_on_cpu:
                self.evaluator.metrics_to_cpu(self.evaluator.test_metrics)

    def on_fit_start(self) -> None:
        """Seed the training tasks' generator."""
        self._train_rng = np.random.default_rng(self.seed if self.seed is not None else torch.initial_seed())

    def training_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Corrupt the batch with the training tasks and regress the labels (MSE)."""
        del args, kwargs
        corrupted, labels = self.train_generator(self.model.to_task_space(batch.image), self._train_rng)
        loss = F.mse_loss(self.model.localise(corrupted), labels)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(labels))
        return {"loss": loss}

    def on_validation_epoch_start(self) -> None:
        """Re-draw the same validation corruptions at every epoch."""
        self._validation_rng = np.random.default_rng(self.validation_seed)
        self.synthetic_ap.reset()
        self.synthetic_mse.reset()

    def validation_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Predict the validation batch; score the validation tasks on its normal images.

        Raises:
            ValueError: If a score is not finite (see :meth:`check_finite_scores`).

        """
        del args, kwargs
        predictions = self.model(batch.image)
        batch = batch.update(**predictions._asdict())
        self.check_finite_scores(batch)  # before the synthetic tasks, which need finite images
        if self.validation_generator is not None:
            normal = batch.image if batch.gt_label is None else batch.image[batch.gt_label == 0]
            if len(normal):
                self._validate_on_synthetic_anomalies(normal)
        return batch

    def _validate_on_synthetic_anomalies(self, images: torch.Tensor) -> None:
        grey = self.model.to_task_space(images)
        corrupted, labels = self.validation_generator(grey, self._validation_rng)
        inputs, targets = torch.cat([grey, corrupted]), torch.cat([torch.zeros_like(labels), labels])
        prediction = self.model.localise(inputs)
        self.synthetic_mse.update(prediction, targets)
        self.synthetic_ap.update(prediction.clamp(0, 1).flatten(), (targets > 0).flatten().long())

    def on_validation_epoch_end(self) -> None:
        """Log ``synthetic_pixel_AP`` and ``synthetic_val_loss`` when normal validation images were seen."""
        if not self.synthetic_ap.update_called:
            return
        self.log(SYNTHETIC_PIXEL_AP, self.synthetic_ap.compute(), prog_bar=True)
        self.log("synthetic_val_loss", self.synthetic_mse.compute())

    def on_fit_end(self) -> None:
        """Restore the best checkpoint of a ``ModelCheckpoint`` that monitors ``synthetic_pixel_AP``, if any."""
        for callback in self.trainer.checkpoint_callbacks:
            best = getattr(callback, "best_model_path", "")
            if getattr(callback, "monitor", None) == SYNTHETIC_PIXEL_AP and best and Path(best).is_file():
                logger.info("Restoring the weights selected on %s from %s", SYNTHETIC_PIXEL_AP, best)
                self.load_state_dict(self.trainer.strategy.load_checkpoint(best)["state_dict"])
                return

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW with linear warm-up, exponential decay and a constant floor, stepped per optimiser step."""
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        schedule = functools.partial(
            warmup_exponential_decay,
            warmup_steps=self.warmup_steps,
            decay_rate=self.decay_rate,
            min_factor=self.min_lr_factor,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """Sanity validation would log ``synthetic_pixel_AP`` of the untrained model: skip it."""
        return {"num_sanity_val_steps": 0}

    @property
    def learning_type(self) -> LearningType:
        """One-class: trained on normal images (with synthetic anomalies) only."""
        return LearningType.ONE_CLASS
