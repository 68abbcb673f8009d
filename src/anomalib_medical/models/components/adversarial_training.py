"""Lightning-side training of an :class:`InpaintingDetector` (SQUID and SimSID share it).

Manual optimisation with two optimisers (SQUID Sec. 3.5, SimSID Sec. 3.5; the authors' ``gan_train``):
the discriminator is updated at every batch, the generator every ``n_critic`` batches; after a
generator step a memory *queue* enqueues the batch's in-painting queries, gathered over all processes
under DDP so that every rank holds the same queue (a memory *matrix* is a parameter: DDP averages its
gradient like any other). At the last batch of every training epoch the raw scores of
``score_stats_images`` recent training images are recomputed in eval mode and their mean/std stored in the
model's buffers (gathered over processes), so that test-time scores are standardised against normal
images (the papers' anomaly score A). With a queue, those images are taken from before the images whose
features the queue still holds: an image's distance to a queue holding its own feature is about zero, so
the memory-distance statistics would come out far too small and that component would swamp a sum of
components. With ``feature_residual="bank"`` the feature bank is filled first, with the eval-mode bottleneck
features of the last ``feature_bank_images`` training images, and the statistics images are taken from before
those, for the same reason. Training that stops before the end of an epoch (``max_steps``, ``max_time``, a
callback's stop) gets its statistics from the images seen so far, before the validation that follows (its
thresholds must see standardised scores) and at the latest at the end of the epoch (before the epoch's
checkpoint), with a warning when they are fewer than ``score_stats_images``. A fit that ends with the statistics
never computed warns.

``score_statistics="first_images"`` takes the authors' statistics instead (their ``GanAlert.collect``): the first
``score_stats_images`` images of the training dataset in dataset order, each as the training loader delivers it
(the dataset's augmentations applied, then the model's pre-processor), scored in eval mode at the end of every
training epoch (the authors: ``early_stop + 1`` images, 201 for chest X-rays, 101 for DigitAnatomy). Under DDP
rank 0's statistics are broadcast to every process.

:class:`AdversarialInpaintingMixin` is mixed into an ``AnomalibModule`` subclass *before* it
(``class Model(AdversarialInpaintingMixin, AnomalibModule)``), so the model stays a direct subclass
of ``AnomalibModule`` (what ``anomalib.models.get_model`` looks for).
"""

import warnings
from collections.abc import Sequence
from typing import Any, Literal

import openvino as ov
import torch
from anomalib import LearningType
from anomalib.data import AnomalibDataModule, Batch
from anomalib.metrics import AUROC, Evaluator
from anomalib.models.components import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import optim
from torchvision.transforms.v2 import Resize

from .detector import RECONSTRUCTION_FIELDS, InpaintingDetector
from .lightning_checks import CheckedModuleMixin
from .losses import DiscriminatorLoss, InpaintingGeneratorLoss
from .memory import MemoryQueue
from .quantisation import quantise_int8
from .validation import check_number

ScoreStatistics = Literal["recent", "first_images"]


def as_size(size: int | Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` from an int (square) or a pair."""
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


class AdversarialInpaintingMixin(CheckedModuleMixin):
    """Optimisers, GAN training step, score statistics and anomalib contract of Squid and SimSID.

    The host class sets ``self.model`` (an :class:`InpaintingDetector`) and calls
    :meth:`configure_adversarial_training` in its ``__init__``. Checkpoint and score checks come from
    :class:`~.lightning_checks.CheckedModuleMixin`.
    """

    model: InpaintingDetector

    def configure_adversarial_training(
        self,
        reconstruction_weight: float,
        teacher_weight: float,
        distillation_weight: float,
        adversarial_weight: float,
        discriminator_weight: float,
        n_critic: int,
        lr: float,
        discriminator_lr: float,
        weight_decay: float,
        scheduler_t_max: int,
        min_lr_ratio: float,
        score_stats_images: int,
        score_statistics: ScoreStatistics = "recent",
    ) -> None:
        """Set the losses and optimisation hyper-parameters (arguments documented by the host model).

        Raises:
            ValueError: If an argument is out of its range (weights >= 0, learning rates > 0, ...).

        """
        for name, value in {
            "reconstruction_weight": reconstruction_weight,
            "teacher_weight": teacher_weight,
            "distillation_weight": distillation_weight,
            "adversarial_weight": adversarial_weight,
            "discriminator_weight": discriminator_weight,
            "weight_decay": weight_decay,
        }.items():
            check_number(name, value, 0)
        check_number("lr", lr, 0, low_open=True)
        check_number("discriminator_lr", discriminator_lr, 0, low_open=True)
        check_number("n_critic", n_critic, 1, integer=True)
        check_number("scheduler_t_max", scheduler_t_max, 1, integer=True)
        check_number("min_lr_ratio", min_lr_ratio, 0, 1)
        check_number("score_stats_images", score_stats_images, 2, integer=True)  # a standard deviation needs 2
        if score_statistics not in {"recent", "first_images"}:
            msg = f"Unknown score_statistics {score_statistics!r}; expected 'recent' or 'first_images'."
            raise ValueError(msg)
        if score_statistics == "first_images" and self.model.feature_bank is not None:
            msg = (
                "feature_residual='bank' fills its bank with recent training images, which "
                "score_statistics='first_images' does not keep: use score_statistics='recent'."
            )
            raise ValueError(msg)
        self.generator_loss = InpaintingGeneratorLoss(
            reconstruction_weight, teacher_weight, distillation_weight, adversarial_weight
        )
        self.discriminator_loss = DiscriminatorLoss(discriminator_weight)
        self.n_critic = n_critic
        self.lr = lr
        self.discriminator_lr = discriminator_lr
        self.weight_decay = weight_decay
        self.scheduler_t_max = scheduler_t_max
        self.min_lr_ratio = min_lr_ratio
        self.score_stats_images = score_stats_images
        self.score_statistics = score_statistics
        self.automatic_optimization = False
        self._recent_images: list[torch.Tensor] = []
        self._statistics_stale = False  # trained on images the score statistics have not seen

    @classmethod
    def configure_pre_processor(cls, image_size: tuple[int, int] | None = None) -> PreProcessor:
        """Resize to the model's input size (no intensity normalisation: the model takes [0, 1])."""
        return PreProcessor(transform=Resize(image_size or (128, 128), antialias=True))

    @staticmethod
    def configure_post_processor() -> PostProcessor:
        """Post-processor with independent image and pixel thresholds.

        The image score (standardised discriminator/residual score) and the anomaly map (squared
        residual) live on different scales, so a missing pixel threshold (data without masks) must not
        fall back to the image threshold.
        """
        return PostProcessor(enable_threshold_matching=False)

    @staticmethod
    def configure_evaluator() -> Evaluator:
        """Test metrics of anomalib, plus the validation image AUROC (logged as ``image_AUROC`` every validation).

        The papers keep the epoch with the best validation AUROC: ``ModelCheckpoint(monitor="image_AUROC")`` needs
        a validation metric, which anomalib's default evaluator does not compute.
        """
        test_metrics = list(AnomalibModule.configure_evaluator().test_metrics)
        return Evaluator(
            val_metrics=[AUROC(fields=["pred_score", "gt_label"], prefix="image_")], test_metrics=test_metrics
        )

    def configure_optimizers(self) -> tuple[list[optim.Optimizer], list[optim.lr_scheduler.LRScheduler]]:
        """Adam for generator and discriminator (authors' betas/eps), cosine schedule for the generator.

        On CPU and CUDA the optimisers use PyTorch's fused Adam (one kernel for all parameters, the same update
        up to rounding): at the authors' DigitAnatomy size (52.9 M parameters) the per-parameter loop of the
        default implementation took 0.5 s of a 5.3 s CPU training step, the fused one 0.05 s.
        """
        fused = {"fused": True} if self._fused_adam_supported() else {}
        generator = optim.Adam(
            self.model.generator.parameters(),
            lr=self.lr,
            betas=(0.5, 0.999),
            eps=1e-7,
            weight_decay=self.weight_decay,
            **fused,
        )
        discriminator = optim.Adam(
            self.model.discriminator.parameters(), lr=self.discriminator_lr, betas=(0.5, 0.999), **fused
        )
        scheduler = optim.lr_scheduler.CosineAnnealingLR(
            generator, T_max=self.scheduler_t_max, eta_min=self.lr * self.min_lr_ratio
        )
        return [generator, discriminator], [scheduler]

    def _fused_adam_supported(self) -> bool:
        """Whether every parameter is a floating-point tensor on a CPU or CUDA device (fused Adam's devices)."""
        return all(
            parameter.device.type in {"cpu", "cuda"} and parameter.is_floating_point()
            for parameter in self.model.parameters()
        )

    @staticmethod
    def _post_training_quantization_ov(model: ov.Model, datamodule: AnomalibDataModule | None = None) -> ov.Model:
        """INT8_PTQ export hook of anomalib: score-head smoothing kept in FP32 (see :mod:`.quantisation`)."""
        return quantise_int8(model, datamodule)

    def _gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate ``tensor`` from all processes along dim 0 (identity on a single process)."""
        gathered = self.all_gather(tensor)
        return gathered.flatten(0, 1) if gathered.dim() > tensor.dim() else gathered

    def training_step(self, batch: Batch, batch_idx: int) -> STEP_OUTPUT:
        """One discriminator step, and every ``n_critic`` batches a generator step (and a queue update)."""
        generator_opt, discriminator_opt = self.optimizers()
        train_generator = batch_idx % self.n_critic == 0

        with torch.set_grad_enabled(train_generator):
            output = self.model(batch.image)

        discriminator = self.model.discriminator
        d_loss = self.discriminator_loss(discriminator(output.image), discriminator(output.reconstruction.detach()))
        discriminator_opt.zero_grad()
        self.manual_backward(d_loss)
        discriminator_opt.step()
        logs = {"discriminator_loss": d_loss.detach()}

        if train_generator:
            terms = self.generator_loss(output, discriminator(output.reconstruction))
            generator_opt.zero_grad()
            self.manual_backward(terms["loss"])
            generator_opt.step()
            memory = self.model.generator.inpainting.memory
            if isinstance(memory, MemoryQueue):
                memory.update(self._gather(output.memory_queries.detach()))
            logs |= {f"generator_{name}": value.detach() for name, value in terms.items()}

        self.log_dict(logs, on_epoch=True, prog_bar=True, batch_size=len(batch.image))
        self._remember(self.model.reduce_channels(batch.image).detach())
        if batch_idx + 1 >= self.trainer.num_training_batches:
            self._update_score_statistics()
        return logs

    def _queued_images(self) -> int:
        """How many of the most recent training images may still have their features in the memory queue."""
        memory = self.model.generator.inpainting.memory
        return memory.num_slots * self.n_critic if isinstance(memory, MemoryQueue) else 0

    def _bank_images(self) -> int:
        """How many of the most recent training images the feature bank takes its features from (0 without one)."""
        bank = self.model.feature_bank
        return bank.num_slots if bank is not None else 0

    def _remember(self, images: torch.Tensor) -> None:
        """Keep enough recent training images (``[0, 1]``) for the score statistics, queue and feature bank."""
        self._statistics_stale = True
        if self.score_statistics == "first_images":
            return
        self._recent_images.append(images)
        keep = self.score_stats_images + max(self._queued_images(), self._bank_images())
        while sum(len(chunk) for chunk in self._recent_images[1:]) >= keep:
            self._recent_images.pop(0)

    @torch.no_grad()
    def _update_score_statistics(self, context: str = "") -> None:
        """Recompute score mean/std on recent normal training images, in eval mode, on all processes.

        The images are the ``score_stats_images`` most recent ones whose features have left the memory
        queue; too few images seen fall back to queued images, and fewer than ``score_stats_images`` warn.
        With a feature bank, the bank is first filled with the eval-mode features of the most recent
        ``feature_bank_images`` images, and the statistics are taken from images before those.

        Args:
            context: Why they are computed now, when not at the last batch of an epoch (starts a warning).

        """
        self._statistics_stale = False
        if self.score_statistics == "first_images":
            self._set_first_images_statistics()
            return
        images = torch.cat(self._recent_images)
        queued, banked = self._queued_images(), self._bank_images()
        problems = []
        if banked:
            self._fill_feature_bank(images[-banked:])
        held = max(queued, banked)  # the newest images, whose features the queue or the bank holds
        if held and len(images) > held:
            images = images[:-held]
        elif held and queued >= banked:
            problems.append(
                f"the {len(images)} training images seen are not longer than the memory queue ({queued} images): "
                "the score statistics are computed on images whose features the queue holds, so the "
                "memory-distance component is under-estimated. Use more training images per epoch or fewer "
                "memory slots."
            )
        elif held:
            problems.append(
                f"the {len(images)} training images seen are not more than the feature bank holds "
                f"(feature_bank_images={banked}): the score statistics are computed on images whose features the "
                "bank holds, so the feature residual is under-estimated. Use more training images per epoch or a "
                "smaller feature_bank_images."
            )
        images = images[-self.score_stats_images :]
        if len(images) < self.score_stats_images:
            problems.append(
                f"the score statistics are computed on {len(images)} training images, fewer than "
                f"score_stats_images={self.score_stats_images}."
            )
        if problems:
            message = " Also, ".join(problems)
            warnings.warn(f"{context}: {message}" if context else message[0].upper() + message[1:], stacklevel=2)
        self.model.set_score_statistics(self._gather(self._eval_raw_scores(images)))

    def _fill_feature_bank(self, images: torch.Tensor) -> None:
        """Fill the feature bank with the eval-mode bottleneck features of ``images``, gathered over all processes."""
        training = self.model.training
        self.model.eval()
        features = torch.cat([self.model.generator.bottleneck_features(chunk) for chunk in images.split(64)])
        self.model.train(training)
        self.model.feature_bank.fill(self._gather(features))

    def _eval_raw_scores(self, images: torch.Tensor) -> torch.Tensor:
        """Raw score components ``(N, 3)`` of channel-reduced images, the torch model in eval mode."""
        training = self.model.training
        self.model.eval()
        raw = torch.cat([self.model.raw_scores(chunk)[0] for chunk in images.split(32)])
        self.model.train(training)
        return raw

    def first_training_images(self) -> torch.Tensor:
        """Return the first ``score_stats_images`` training images in dataset order, as training sees them.

        Each is read from the training dataloader's dataset (its augmentations applied), put through the
        pre-processor's transform and reduced to the network's channels.

        Raises:
            ValueError: If the training dataloader has no indexable dataset or it holds fewer images.

        """
        dataset = getattr(self.trainer.train_dataloader, "dataset", None)
        if dataset is None or not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            msg = "score_statistics='first_images' needs a training DataLoader over an indexable dataset."
            raise ValueError(msg)
        if len(dataset) < self.score_stats_images:
            msg = (
                f"score_statistics='first_images' needs score_stats_images={self.score_stats_images} training "
                f"images, but the training dataset holds {len(dataset)}: lower score_stats_images."
            )
            raise ValueError(msg)
        transform = getattr(self.pre_processor, "transform", None)
        images = []
        for index in range(self.score_stats_images):
            image = dataset[index].image[None].to(self.device)
            images.append(transform(image) if transform is not None else image)
        return self.model.reduce_channels(torch.cat(images))

    @torch.no_grad()
    def _set_first_images_statistics(self) -> None:
        """Score statistics of :meth:`first_training_images` in eval mode, rank 0's on every process."""
        raw = self._eval_raw_scores(self.first_training_images())
        self.model.set_score_statistics(self.trainer.strategy.broadcast(raw, src=0))

    def setup(self, stage: str) -> None:
        """On CPU, fit, validate, test and predict in channels-last memory format (oneDNN's faster convolutions).

        Measured on the Squid CPU recipe with 2 threads: training took 242 s instead of 392 s; SQUID's DigitAnatomy
        inference at batch 16 on one thread, 55 instead of 62 ms per image. Only strides change, not values; it is
        done here, before a DDP wrapper is built around the weights, and :meth:`teardown` restores the default
        format, so checkpoints and exports see ordinary weights. The images kept for the score statistics are those
        of this fit only.
        """
        super().setup(stage)
        if stage == "fit":
            self._recent_images.clear()
            self._statistics_stale = False
        if self.trainer.strategy.root_device.type == "cpu":
            self.model.to(memory_format=torch.channels_last)

    def teardown(self, stage: str) -> None:
        """Return the weights to the default (contiguous) memory format at the end of every stage."""
        super().teardown(stage)
        self.model.to(memory_format=torch.contiguous_format)

    def on_train_start(self) -> None:
        """Train the torch model in training mode even if it was put in eval mode before ``fit``.

        Lightning keeps the modes modules have when ``fit`` starts, and in eval mode the torch model returns
        scores instead of the generator outputs the training step needs.
        """
        self.model.train()

    def on_validation_start(self) -> None:
        """Compute the score statistics of a training stopped mid-epoch before validation scores are used."""
        if self._statistics_stale:
            self._update_score_statistics("Validation started before the end of the training epoch")

    def on_train_epoch_end(self) -> None:
        """Compute the statistics of an epoch that ended early; step the generator's learning-rate schedule.

        Runs before the epoch's checkpoint is saved (Lightning calls checkpoint callbacks after the module).
        """
        if self._statistics_stale:
            self._update_score_statistics("The training epoch ended before its last batch")
        self.lr_schedulers().step()

    def on_fit_end(self) -> None:
        """Warn if the score statistics were never set."""
        if bool((self.model.score_mean == 0).all() and (self.model.score_std == 1).all()):
            warnings.warn(
                "The fit ended without a training batch, so the score statistics were never computed (mean 0, "
                "std 1): the scores are not standardised against normal images. Train for at least one batch.",
                stacklevel=2,
            )

    def validation_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Score a validation batch (used by the post-processor for thresholds and normalisation).

        Raises:
            ValueError: If a score is not finite (see :meth:`check_finite_scores`).

        """
        del args, kwargs
        predictions = self.model(batch.image)
        batch = batch.update(**predictions._asdict())
        self.check_finite_scores(batch)
        return batch

    def test_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Score a test batch; add the reconstructions when the visualiser or a test metric reads them."""
        metrics = self.evaluator.test_metrics if self.evaluator is not None else []
        if self.visualizer is not None or any(set(m.fields) & set(RECONSTRUCTION_FIELDS) for m in metrics):
            return self._predict_with_reconstructions(batch)
        return super().test_step(batch, *args, **kwargs)

    def predict_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Score a batch; add the reconstructions when there is a visualiser to draw them."""
        if self.visualizer is not None:
            return self._predict_with_reconstructions(batch)
        return super().predict_step(batch, *args, **kwargs)

    def _predict_with_reconstructions(self, batch: Batch) -> Batch:
        """``batch`` with the predictions and the ``reconstruction`` / ``teacher_reconstruction`` fields.

        One generator pass gives both (``[0, 1]``, ``(B, C, H, W)``). The fields are extra attributes, as
        :class:`~anomalib_medical.post_processing.RawMapPostProcessor`'s ``raw_*`` fields: anomalib's batch
        dataclasses have no such fields, and the exported ``forward`` does not compute them.
        """
        predictions, student, teacher = self.model.predict_with_reconstructions(batch.image)
        batch = batch.update(**predictions._asdict())
        batch.reconstruction, batch.teacher_reconstruction = student, teacher
        return batch

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """Manual optimisation forbids gradient clipping; no sanity validation before the first epoch."""
        return {"gradient_clip_val": 0, "num_sanity_val_steps": 0}

    @property
    def learning_type(self) -> LearningType:
        """Trained on (presumed) normal images only."""
        return LearningType.ONE_CLASS
