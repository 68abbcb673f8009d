"""Ensemble of synthetic-task localisers: the mean of the fold models' maps, as one exportable ``AnomalibModule``.

Baugh et al. (2023, Sec. 2.4) train one model per cross-validation fold (each on its own training tasks and
data fold) and average their predictions. :class:`SyntheticTaskLocaliserEnsemble` holds the fold models in one
torch module, so anomalib tests it, thresholds it and exports it (ONNX/OpenVINO) as a single model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from anomalib import LearningType
from anomalib.data import Batch, InferenceBatch
from anomalib.metrics import Evaluator
from anomalib.models.components import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import nn

from anomalib_medical.export import ModelInfoExportMixin
from anomalib_medical.metrics import volume_metrics
from anomalib_medical.visualization import RadiographVisualizerDefault

from .lightning_model import SyntheticTaskLocaliser, VolumeExportMixin
from .torch_model import InputRange, ScoreAggregation, SyntheticTaskLocaliserModel

__all__ = ["SyntheticTaskLocaliserEnsemble", "SyntheticTaskLocaliserEnsembleModel"]

#: Hyper-parameters of :class:`SyntheticTaskLocaliser` that fix the torch model's architecture.
ARCHITECTURE_KEYS = (
    "depth",
    "base_channels",
    "max_channels",
    "positional_encoding",
    "score_aggregation",
    "histogram_equalisation",
    "spatial_dims",
    "input_range",
)


class SyntheticTaskLocaliserEnsembleModel(nn.Module):
    """Mean of the raw maps of several :class:`SyntheticTaskLocaliserModel`, clipped to [0, 1] in eval mode.

    Args:
        members: The fold models; the first one's input conversion (``to_task_space``) serves all.
        score_aggregation: Image score from the mean map: ``"mean"`` or ``"max"``.

    """

    def __init__(
        self, members: Sequence[SyntheticTaskLocaliserModel], score_aggregation: ScoreAggregation = "mean"
    ) -> None:
        super().__init__()
        if not members:
            msg = "an ensemble needs at least one member"
            raise ValueError(msg)
        self.members = nn.ModuleList(members)
        self.score_aggregation = score_aggregation

    @property
    def spatial_dims(self) -> int:
        """2 for images, 3 for volumes (the members')."""
        return self.members[0].spatial_dims

    def forward(self, images: torch.Tensor) -> torch.Tensor | InferenceBatch:
        """Mean raw map in training mode; in eval mode the clipped mean map and the image score."""
        grey = self.members[0].to_task_space(images)
        prediction = torch.stack([member.localise(grey) for member in self.members]).mean(dim=0)
        if self.training:
            return prediction
        anomaly_map = prediction.clamp(0, 1)
        flat = anomaly_map.flatten(1)
        score = flat.mean(dim=1) if self.score_aggregation == "mean" else flat.amax(dim=1)
        return InferenceBatch(pred_score=score, anomaly_map=anomaly_map)


class SyntheticTaskLocaliserEnsemble(
    ModelInfoExportMixin, VolumeExportMixin, RadiographVisualizerDefault, AnomalibModule
):
    """Ensemble of trained synthetic-task localisers (mean of their maps); assembled, never trained.

    Build it with :meth:`from_checkpoints`; its own checkpoint (saved after ``Engine.validate``, which computes
    the thresholds) reloads with ``load_from_checkpoint`` or ``anomalib test/export --ckpt_path``. Its learning
    type is zero-shot, so ``Engine.fit`` / ``anomalib train`` only validate it (see :attr:`learning_type`).

    Args:
        num_members: Number of fold models.
        depth: U-Net depth of every member.
        base_channels: Channels of the members' first U-Net stage.
        max_channels: Channel cap of the members' U-Nets (``None``: 512 in 2-D, 320 in 3-D).
        positional_encoding: Whether the members use positional-encoding channels.
        score_aggregation: Image score from the mean map.
        histogram_equalisation: Whether the members equalise their inputs' histograms.
        image_size: Resize target of the default pre-processor (``None``: 256x256 in 2-D; no resizing in 3-D).
        spatial_dims: 2 for images, 3 for volumes (exported with inputs ``(N, 1, D, H, W)``).
        input_range: The members' input range (``None``: by ``spatial_dims``; see
            :class:`SyntheticTaskLocaliserModel`).
        pre_processor: Pre-processor or flag (use the members' one).
        post_processor: Post-processor or flag.
        evaluator: Evaluator or flag (default: the members', on the raw maps; voxel and slice metrics in 3-D).
        visualizer: Visualizer or flag.

    """

    def __init__(
        self,
        num_members: int = 5,
        depth: int = 7,
        base_channels: int = 32,
        max_channels: int | None = None,
        positional_encoding: bool = True,
        score_aggregation: ScoreAggregation = "mean",
        histogram_equalisation: bool = False,
        image_size: tuple[int, int] | None = None,
        spatial_dims: int = 2,
        input_range: InputRange | None = None,
        pre_processor: PreProcessor | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
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
        members = [
            SyntheticTaskLocaliserModel(
                depth,
                base_channels,
                max_channels,
                positional_encoding,
                score_aggregation=score_aggregation,
                histogram_equalisation=histogram_equalisation,
                spatial_dims=spatial_dims,
                input_range=input_range,
            )
            for _ in range(num_members)
        ]
        self.model = SyntheticTaskLocaliserEnsembleModel(members, score_aggregation)

    @classmethod
    def configure_pre_processor(cls, image_size: tuple[int, int] | None = None) -> PreProcessor:
        """Use the members' default pre-processor (:meth:`SyntheticTaskLocaliser.configure_pre_processor`)."""
        return SyntheticTaskLocaliser.configure_pre_processor(image_size)

    def configure_post_processor(self) -> PostProcessor:
        """Use the members' post-processor (F1-adaptive thresholds from validation; keeps the raw maps)."""
        return SyntheticTaskLocaliser.configure_post_processor()

    @staticmethod
    def configure_evaluator() -> Evaluator:
        """Use the members' default evaluator (:meth:`SyntheticTaskLocaliser.configure_evaluator`)."""
        return SyntheticTaskLocaliser.configure_evaluator()

    @classmethod
    def from_checkpoints(cls, checkpoints: Sequence[str | Path], **kwargs: Any) -> SyntheticTaskLocaliserEnsemble:
        """Assemble the ensemble of trained :class:`SyntheticTaskLocaliser` checkpoints (same architecture).

        The first member's pre-processor is used. ``kwargs`` go to the constructor (e.g. ``evaluator``).
        """
        members = [SyntheticTaskLocaliser.load_from_checkpoint(path, map_location="cpu") for path in checkpoints]
        # checkpoints written before input_range existed lack it (None: by spatial_dims, their behaviour)
        architectures = {tuple(member.hparams.get(key) for key in ARCHITECTURE_KEYS) for member in members}
        if len(architectures) != 1:
            msg = f"the checkpoints have different architectures {sorted(architectures)}; expected one"
            raise ValueError(msg)
        architecture = dict(zip(ARCHITECTURE_KEYS, architectures.pop(), strict=True))
        kwargs.setdefault("pre_processor", members[0].pre_processor)
        ensemble = cls(num_members=len(members), **architecture, **kwargs)
        for target, member in zip(ensemble.model.members, members, strict=True):
            target.load_state_dict(member.model.state_dict())
        return ensemble

    def validation_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Predict the validation batch (feeds the post-processor's thresholds and normalisation)."""
        del args, kwargs
        return batch.update(**self.model(batch.image)._asdict())

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """No method-specific trainer arguments."""
        return {}

    @property
    def learning_type(self) -> LearningType:
        """Zero-shot in anomalib's sense: it is assembled from trained members, never trained itself.

        anomalib's ``Engine.fit`` / ``train`` (and ``anomalib train --model SyntheticTaskLocaliserEnsemble``)
        then only validate, which sets the thresholds and normalisation, as for ``WinClip``. Train the members
        with the cross-validation command, which assembles the ensemble.
        """
        return LearningType.ZERO_SHOT
