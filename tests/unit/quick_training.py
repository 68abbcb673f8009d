"""A short, cheap training of Squid or SimSID on 24 px DigitAnatomy and the two properties its tests bound.

Seeded GAN training is not reproducible across CPUs and thread counts, so the tests do not bound an overall
AUROC (0.57-0.76 over seeds at this budget: too close to chance). They bound two properties whose measured
distribution (over seeds, at 1 and 2 threads: in the tests' docstrings) leaves a wide margin: the reconstruction
error of normal test images relative to the untrained model's, and the ranking of "missing"-cell images.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from anomalib.engine import Engine
from anomalib.models import AnomalibModule
from sklearn.metrics import roc_auc_score

from anomalib_medical.data import DigitAnatomy

QUICK = {
    "image_size": 24,
    "patches_per_side": 3,
    "levels": 2,
    "base_channels": 16,
    "skip_ops": ("none", "none"),
    "merge_levels": 1,
    "memory_slots": 10,
    "top_k": 3,
    "decoder_memory": ("none", "none"),
    "num_heads": 2,
    "score_type": "residual_image",
    "n_critic": 1,
    "lr": 1e-3,
    "discriminator_lr": 1e-3,
    "visualizer": False,
}
"""Model arguments shared by both models' quick trainings (2 epochs of 20 steps of 16 images)."""


def reconstruction_error(model: AnomalibModule, images: torch.Tensor) -> float:
    """Mean absolute student reconstruction error of images (eval mode), in the generator's output range."""
    model.model.eval()
    with torch.no_grad():
        output = model.model.generator(images.mean(dim=1, keepdim=True), teacher=False)
    model.model.train()
    return (output.image - output.reconstruction).abs().mean().item()


def train_briefly(build: Callable[[], AnomalibModule], root: Path) -> tuple[float, float]:
    """Build a model under seed 0 and train it 40 steps on 24 px DigitAnatomy.

    Returns:
        The reconstruction error of the normal test images after training divided by the untrained model's,
        and the image AUROC of "missing"-cell test images against normal ones.

    """
    torch.manual_seed(0)
    model = build()
    datamodule = DigitAnatomy(
        root=root / "digits", cell_size=8, samples_per_type=20, train_size=320, train_batch_size=16, eval_batch_size=50
    )
    datamodule.prepare_data()
    datamodule.setup()
    types = np.array(datamodule.test_data.anomaly_types)
    normal = torch.stack([datamodule.test_data[int(i)].image for i in np.flatnonzero(types == "normal")])
    untrained = reconstruction_error(model, normal)
    engine = Engine(
        max_epochs=2,
        logger=False,
        default_root_dir=root / "results",
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    engine.fit(model, datamodule=datamodule)
    ratio = reconstruction_error(model, normal) / untrained
    predictions = engine.predict(model, dataloaders=datamodule.test_dataloader())
    scores = np.concatenate([batch.pred_score.numpy() for batch in predictions])
    chosen = (types == "normal") | (types == "missing")
    return ratio, float(roc_auc_score(types[chosen] == "missing", scores[chosen]))
