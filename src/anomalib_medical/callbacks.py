"""Lightning callbacks for the papers' protocols: the epoch selected on the validation image AUROC is the one tested.

Squid's and SimSID's evaluator logs ``image_AUROC`` after every validation, so that
``ModelCheckpoint(monitor="image_AUROC")`` can select on it. :class:`RestoreBestCheckpoint` makes ``anomalib train``
(fit, then test on the model in memory) test the epoch that a ``ModelCheckpoint`` selected, as the SQUID and SimSID
authors keep their best epoch. Without it, Lightning tests the weights of the last epoch when it is given the model,
and the best checkpoint is only used by a later ``anomalib test --ckpt_path <best checkpoint>``.
"""

import logging
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

logger = logging.getLogger(__name__)


class RestoreBestCheckpoint(Callback):
    """At the end of ``fit``, load the best checkpoint of the trainer's monitoring ``ModelCheckpoint``.

    Everything in the checkpoint's state dict is restored: weights, memory queues, score statistics and the
    post-processor's thresholds and normalisation, all as they were at the selected epoch's validation.

    Args:
        monitor: Metric of the ``ModelCheckpoint`` to follow (e.g. ``image_AUROC``); ``None``: the first
            ``ModelCheckpoint`` that monitors any metric.

    Raises:
        ValueError: At the end of ``fit``, when no ``ModelCheckpoint`` monitors ``monitor``.

    Example:
        In a recipe (``trainer.callbacks``), after anomalib's ``ModelCheckpoint`` with ``monitor: image_AUROC``::

            - class_path: anomalib_medical.callbacks.RestoreBestCheckpoint
              init_args: {monitor: image_AUROC}

    """

    def __init__(self, monitor: str | None = None) -> None:
        super().__init__()
        self.monitor = monitor

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Load the selected checkpoint's state dict into ``pl_module`` (a no-op when nothing was saved yet)."""
        checkpoints = [
            callback
            for callback in trainer.callbacks
            if isinstance(callback, ModelCheckpoint)
            and callback.monitor is not None
            and (self.monitor is None or callback.monitor == self.monitor)
        ]
        if not checkpoints:
            msg = f"RestoreBestCheckpoint(monitor={self.monitor!r}): no ModelCheckpoint monitors that metric; add "
            msg += "anomalib.callbacks.ModelCheckpoint with `monitor` to trainer.callbacks."
            raise ValueError(msg)
        best = checkpoints[0].best_model_path
        if not best or not Path(best).is_file():
            logger.warning("RestoreBestCheckpoint: no checkpoint was saved; the last weights are kept.")
            return
        logger.info("Restoring the epoch selected on %s: %s", checkpoints[0].monitor, best)
        pl_module.load_state_dict(trainer.strategy.load_checkpoint(best)["state_dict"])
