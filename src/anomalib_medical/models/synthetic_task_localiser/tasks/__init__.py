"""Synthetic tasks of Baugh et al. (2023), a registry by name, and the task/fold split of their cross-validation.

The registry's order is the paper's task order (ids 0-4), which fixes the folds: fold ``k`` of a ``T``-task
split trains on the ``k``-th combination of ``T`` task names (``itertools.combinations`` order) and validates on
the others.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

from .base import Source, SyntheticTask, TaskOutput
from .blending import (
    InterDatasetBlendingTask,
    IntraDatasetBlendingTask,
    PoissonBlendingTask,
    SourceIntensity,
    extract_source_patch,
)
from .deformation import RadialDeformationTask, SinkDeformationTask, SourceDeformationTask
from .foreground import FOREGROUND_RULES, ForegroundRule, nonzero_foreground
from .generator import SyntheticAnomalyGenerator, SyntheticSample
from .intensity import SmoothIntensityChangeTask
from .poisson import dst_poisson_solve, guidance_divergence, poisson_blend
from .shapes import TargetShape, place_shape, sample_target_shape

TASKS: dict[str, type[SyntheticTask]] = {
    "intra_dataset_blending": IntraDatasetBlendingTask,
    "inter_dataset_blending": InterDatasetBlendingTask,
    "sink_deformation": SinkDeformationTask,
    "source_deformation": SourceDeformationTask,
    "smooth_intensity_change": SmoothIntensityChangeTask,
}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)


def build_task(
    name: str,
    intensity_scale: float = 0.2,
    push_distance: tuple[float, float] = (0.5, 10.0),
    source_images: str | Path | None = None,
    source_intensity: SourceIntensity = "equalise",
    probabilistic_blending: bool = False,
    **shape_options: float,
) -> SyntheticTask:
    """Instantiate a task by name with its own option and the shared target-mask options.

    Args:
        name: One of :data:`TASK_NAMES`.
        intensity_scale: Scale of the smooth intensity change.
        push_distance: Push-distance range (pixels) of the deformations.
        source_images: External image folder of inter-dataset blending (``None``: scikit-image photographs).
        source_intensity: Normalisation of the external sources (``"equalise"`` or ``"zscore"``).
        probabilistic_blending: Both blending tasks as Müller et al.'s P-PII.
        **shape_options: Options of :class:`SyntheticTask` (``min_size``, ``max_size``, ``max_anomalies``, ...).

    """
    if name not in TASKS:
        msg = f"unknown task {name!r}; choose from {TASK_NAMES}"
        raise ValueError(msg)
    own = {
        "intra_dataset_blending": {"probabilistic": probabilistic_blending},
        "inter_dataset_blending": {
            "source_images": source_images,
            "source_intensity": source_intensity,
            "probabilistic": probabilistic_blending,
        },
        "sink_deformation": {"push_distance": push_distance},
        "source_deformation": {"push_distance": push_distance},
        "smooth_intensity_change": {"scale": intensity_scale},
    }.get(name, {})
    return TASKS[name](**own, **shape_options)


def num_folds(num_train_tasks: int) -> int:
    """Count the ``T``-task training combinations (``5 choose T``)."""
    return math.comb(len(TASK_NAMES), num_train_tasks)


def task_split(num_train_tasks: int, fold: int) -> tuple[list[str], list[str]]:
    """Training and validation task names of ``fold`` for ``num_train_tasks`` training tasks (authors' order)."""
    combinations = list(itertools.combinations(TASK_NAMES, num_train_tasks))
    if not 0 < num_train_tasks < len(TASK_NAMES) or not 0 <= fold < len(combinations):
        msg = f"need 0 < num_train_tasks < {len(TASK_NAMES)} and 0 <= fold < {len(combinations)}"
        raise ValueError(msg)
    train = list(combinations[fold])
    return train, [name for name in TASK_NAMES if name not in train]


__all__ = [
    "FOREGROUND_RULES",
    "TASKS",
    "TASK_NAMES",
    "ForegroundRule",
    "InterDatasetBlendingTask",
    "IntraDatasetBlendingTask",
    "PoissonBlendingTask",
    "RadialDeformationTask",
    "SinkDeformationTask",
    "SmoothIntensityChangeTask",
    "Source",
    "SourceDeformationTask",
    "SourceIntensity",
    "SyntheticAnomalyGenerator",
    "SyntheticSample",
    "SyntheticTask",
    "TargetShape",
    "TaskOutput",
    "build_task",
    "dst_poisson_solve",
    "extract_source_patch",
    "guidance_divergence",
    "nonzero_foreground",
    "num_folds",
    "place_shape",
    "poisson_blend",
    "sample_target_shape",
    "task_split",
]
