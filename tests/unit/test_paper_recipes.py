"""Every recipe in configs/ parses through anomalib's CLI; the authors'-settings recipes carry the papers' protocol.

The protocol: the authors' discriminator scoring and score statistics, their training augmentation on chest X-rays,
and the epoch with the best validation image AUROC kept and tested (checked on a tiny run).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from anomalib.callbacks import ModelCheckpoint
from anomalib.engine import Engine
from lightning.pytorch import Callback, seed_everything
from torchvision.transforms import v2

from anomalib_medical.callbacks import RestoreBestCheckpoint
from anomalib_medical.data import CheXpert, DigitAnatomy
from anomalib_medical.models import Squid
from tests.conftest import parse_recipe
from tests.unit.fake_chest_data import chexpert_tree

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RECIPES = sorted(CONFIGS.glob("*.yaml"))

# recipe -> (score_stats_images, augmented): the authors' alert.py `early_stop` + 1; RandomAffine on chest X-rays.
PAPER_RECIPES = {
    "squid_chest_xray.yaml": (201, True),
    "squid_chexpert.yaml": (201, True),
    "squid_digit_anatomy_paper.yaml": (101, False),
    "simsid_chest_xray.yaml": (201, True),
    "simsid_chest_xray_paper.yaml": (201, True),
    "simsid_chexpert.yaml": (201, True),
    "simsid_covidx.yaml": (201, True),
    "simsid_digit_anatomy_paper.yaml": (101, False),
}


def test_the_paper_recipes_exist():
    assert set(PAPER_RECIPES) <= {recipe.name for recipe in RECIPES}


@pytest.mark.parametrize("name", sorted(PAPER_RECIPES))
def test_paper_recipe_uses_the_authors_protocol(name):
    stats_images, augmented = PAPER_RECIPES[name]
    cli = parse_recipe(CONFIGS / name)
    model, datamodule = cli.model, cli.datamodule
    assert model.model.score_type == "discriminator"
    assert model.hparams.discriminator_scoring == "per_image"
    assert model.hparams.score_statistics == "first_images"
    assert model.hparams.score_stats_images == stats_images
    assert model.hparams.top_k == 4  # the authors' shrink_thres 5 reads 4 slots
    assert [metric.name for metric in model.evaluator.val_metrics] == ["image_AUROC"]
    affine = datamodule.train_augmentations
    if augmented:
        assert isinstance(affine, v2.RandomAffine)
        assert affine.degrees == [0.0, 0.0]
        assert list(affine.translate) == [0.05, 0.05]
        assert list(affine.scale) == [0.95, 1.05]
    else:
        assert affine is None
    assert datamodule.val_augmentations is None
    assert datamodule.test_augmentations is None
    callbacks = cli.engine._cache.args["callbacks"]  # the trainer is built at fit time
    checkpoints = [callback for callback in callbacks if isinstance(callback, ModelCheckpoint)]
    assert [(c.monitor, c.mode) for c in checkpoints] == [("image_AUROC", "max")]
    assert [c.monitor for c in callbacks if isinstance(c, RestoreBestCheckpoint)] == ["image_AUROC"]
    assert cli.config.train.trainer.check_val_every_n_epoch == 1


@pytest.mark.parametrize("name", ["squid_digit_anatomy_paper.yaml", "simsid_digit_anatomy_paper.yaml"])
def test_digit_paper_recipes_default_to_sklearn_digits_and_take_a_local_mnist(name, tmp_path):
    assert parse_recipe(CONFIGS / name).datamodule.digit_source == "sklearn"
    assert "NOT the authors' MNIST" in (CONFIGS / name).read_text()
    cli = parse_recipe(CONFIGS / name, "--data.digit_source", "mnist", "--data.mnist_root", str(tmp_path))
    assert cli.datamodule.digit_source == "mnist"
    assert Path(cli.datamodule.mnist_root) == tmp_path


def test_the_training_augmentation_reaches_the_training_batches(tmp_path):
    root = chexpert_tree(tmp_path / "CheXpert-v1.0-small", normal=6, abnormal=2)
    recipe = parse_recipe(CONFIGS / "squid_chexpert.yaml", "--data.root", str(root)).datamodule
    settings = {"train_normal": 4, "test_normal": 1, "test_abnormal": 1, "image_size": 64, "num_workers": 0}
    settings |= {"train_batch_size": 4, "eval_batch_size": 4}
    augmented = CheXpert(root, train_augmentations=recipe.train_augmentations, **settings)
    plain = CheXpert(root, **settings)
    for datamodule in (augmented, plain):
        datamodule.setup()
    torch.manual_seed(0)
    images = {name: next(iter(dm.train_dataloader())) for name, dm in (("augmented", augmented), ("plain", plain))}
    by_path = {
        name: dict(zip(batch.image_path, batch.image, strict=True)) for name, batch in images.items()
    }  # the loaders shuffle: compare image by image
    assert by_path["augmented"].keys() == by_path["plain"].keys()
    changed = [not torch.equal(by_path["augmented"][p], by_path["plain"][p]) for p in by_path["plain"]]
    assert all(changed)
    val = (next(iter(dm.val_dataloader())).image for dm in (augmented, plain))
    assert torch.equal(*val)  # validation images are not augmented


class _RecordValidation(Callback):
    """Records the validation image AUROC of every epoch."""

    def __init__(self) -> None:
        self.scores: list[float] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        del pl_module
        self.scores.append(float(trainer.callback_metrics["image_AUROC"]))


def test_the_best_validation_epoch_is_restored_and_tested(tmp_path):
    seed_everything(0)
    tiny = {"image_size": 24, "patches_per_side": 3, "levels": 2, "base_channels": 4, "skip_ops": ("concat", "none")}
    tiny |= {"merge_levels": 1, "memory_slots": 6, "top_k": 2, "decoder_memory": ("position", "none")}
    tiny |= {"decoder_memory_slots": 5, "num_heads": 2, "lr": 0.01, "score_stats_images": 5}
    model = Squid(**tiny, score_statistics="first_images", visualizer=False)
    digits = DigitAnatomy(
        root=tmp_path / "digits", cell_size=8, samples_per_type=4, train_size=32, train_batch_size=8, eval_batch_size=10
    )
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "checkpoints", monitor="image_AUROC", mode="max", save_top_k=-1, filename="{epoch}"
    )
    record = _RecordValidation()
    engine = Engine(
        max_epochs=3,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path / "results",
        callbacks=[checkpoint, RestoreBestCheckpoint(monitor="image_AUROC"), record],
    )
    (tested,) = engine.train(model, datamodule=digits)
    assert len(record.scores) == 3  # the monitored key exists after every validation
    best_epoch = max(range(3), key=lambda epoch: (record.scores[epoch], -epoch))
    assert Path(checkpoint.best_model_path).name == f"epoch={best_epoch}.ckpt"
    best = torch.load(checkpoint.best_model_path, weights_only=True)["state_dict"]
    for key, value in model.state_dict().items():
        assert torch.equal(value.cpu(), best[key].cpu()), key  # the tested model is the selected epoch
    last = torch.load(tmp_path / "checkpoints" / "epoch=2.ckpt", weights_only=True)["state_dict"]
    differs = any(not torch.equal(value, last[key]) for key, value in best.items())
    assert differs == (best_epoch != 2)
    (again,) = engine.test(model, datamodule=digits, ckpt_path=checkpoint.best_model_path, verbose=False)
    assert again["image_AUROC"] == pytest.approx(tested["image_AUROC"])


def test_restoring_without_a_monitoring_checkpoint_is_an_error():
    trainer = SimpleNamespace(callbacks=[ModelCheckpoint()])
    with pytest.raises(ValueError, match=r"no ModelCheckpoint monitors that metric"):
        RestoreBestCheckpoint(monitor="image_AUROC").on_fit_end(trainer, None)
