"""SyntheticTaskLocaliser: torch model, schedule, synthetic validation, ensemble, and a short training."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from anomalib.callbacks import ModelCheckpoint
from anomalib.data import Folder, ImageBatch, InferenceBatch
from anomalib.engine import Engine
from lightning.pytorch import Callback, Trainer, seed_everything
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score

from anomalib_medical.data import DigitAnatomy, HistogramEqualisation
from anomalib_medical.data.transforms import equalise_histogram
from anomalib_medical.models import SyntheticTaskLocaliser, SyntheticTaskLocaliserEnsemble
from anomalib_medical.models.synthetic_task_localiser import FourierCoordinateEncoding, SyntheticTaskLocaliserModel
from anomalib_medical.models.synthetic_task_localiser.cross_validation import hold_out_data_fold, main
from anomalib_medical.models.synthetic_task_localiser.lightning_model import (
    SYNTHETIC_PIXEL_AP,
    warmup_exponential_decay,
)
from anomalib_medical.models.synthetic_task_localiser.tasks import task_split

TINY = {"depth": 2, "base_channels": 4, "max_channels": 8}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Two OpenMP threads on a shared, loaded machine are many times slower than one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def grey_batch(size: int = 4, shape: tuple[int, int] = (16, 16), seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    grey = torch.rand(size, 1, *shape, generator=generator)
    return grey.expand(-1, 3, -1, -1).contiguous()


def save_checkpoint(model: SyntheticTaskLocaliser, path: Path) -> Path:
    trainer = Trainer(logger=False, enable_checkpointing=False, max_epochs=0)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)
    return path


@pytest.mark.parametrize("aggregation", ["mean", "max"])
def test_eval_forward_returns_clipped_map_and_aggregated_score(aggregation: str) -> None:
    model = SyntheticTaskLocaliserModel(**TINY, score_aggregation=aggregation).eval()
    with torch.no_grad():
        output = model(grey_batch(shape=(16, 20)))
    assert isinstance(output, InferenceBatch)
    assert output.anomaly_map.shape == (4, 1, 16, 20)
    assert 0 <= output.anomaly_map.min() <= output.anomaly_map.max() <= 1
    flat = output.anomaly_map.flatten(1)
    expected = flat.mean(1) if aggregation == "mean" else flat.amax(1)
    torch.testing.assert_close(output.pred_score, expected)


def test_training_forward_returns_the_raw_map_of_the_grey_image_in_task_space() -> None:
    model = SyntheticTaskLocaliserModel(**TINY).train()
    images = grey_batch()
    grey = model.to_task_space(images)
    torch.testing.assert_close(grey, images[:, :1] * 2 - 1)
    torch.testing.assert_close(model(images), model.localise(grey))
    with pytest.raises(ValueError, match="score_aggregation"):
        SyntheticTaskLocaliserModel(**TINY, score_aggregation="median")


def test_positional_encoding_channels_are_fixed_coordinates_and_fourier_features() -> None:
    encoding = FourierCoordinateEncoding(num_features=5, scale=3.0)
    values = encoding(torch.zeros(2, 1, 7, 9))
    assert encoding.num_channels == 12
    assert values.shape == (2, 12, 7, 9)
    torch.testing.assert_close(values[0, 0, :, 0], torch.linspace(-1, 1, 7))
    torch.testing.assert_close(values[0, 1, 0, :], torch.linspace(-1, 1, 9))
    torch.testing.assert_close(values[:, 2:7] ** 2 + values[:, 7:] ** 2, torch.ones(2, 5, 7, 9))
    torch.testing.assert_close(FourierCoordinateEncoding(5, 3.0)(torch.zeros(1, 1, 7, 9)), values[:1])
    assert not torch.equal(FourierCoordinateEncoding(5, 3.0, seed=1).frequencies, encoding.frequencies)
    with_encoding = SyntheticTaskLocaliserModel(**TINY, positional_encoding=True)
    without = SyntheticTaskLocaliserModel(**TINY, positional_encoding=False)
    assert with_encoding.unet.encoder[0][0][0].in_channels == 1 + with_encoding.encoding.num_channels
    assert without.unet.encoder[0][0][0].in_channels == 1


def test_positional_encoding_in_3d_has_one_coordinate_channel_per_axis_and_the_authors_frequencies() -> None:
    encoding = FourierCoordinateEncoding(num_features=4, scale=2.0, spatial_dims=3)
    values = encoding(torch.zeros(2, 1, 5, 6, 7))
    assert encoding.num_channels == 3 + 8
    assert values.shape == (2, 11, 5, 6, 7)
    for axis, size in enumerate((5, 6, 7)):
        line = values[0, axis].movedim(axis, 0).reshape(size, -1)
        torch.testing.assert_close(line, torch.linspace(-1, 1, size)[:, None].expand(-1, line.shape[1]))
    # Authors' draw: NumPy default_rng(seed).standard_normal((features, dims)) * scale; phases over u in [0, 1)
    frequencies = np.random.default_rng(42).standard_normal((4, 3)) * 2.0
    np.testing.assert_allclose(encoding.frequencies.numpy(), frequencies, rtol=1e-6)
    unit = np.stack(np.meshgrid(*[np.arange(n) / n for n in (5, 6, 7)], indexing="ij"))
    phases = 2 * np.pi * np.einsum("fd,dijk->fijk", frequencies, unit)
    np.testing.assert_allclose(values[0, 3:7].numpy(), np.sin(phases), atol=1e-5)
    np.testing.assert_allclose(values[0, 7:].numpy(), np.cos(phases), atol=1e-5)
    default = SyntheticTaskLocaliserModel(**TINY, spatial_dims=3)
    assert default.encoding.num_channels == 3 + 64  # the authors' brain MRI setting: 3 coordinates + 64 features
    with pytest.raises(ValueError, match=r"spatial_dims=3 expects \(N, C, D, H, W\)"):
        encoding(torch.zeros(1, 1, 5, 6))
    with pytest.raises(ValueError, match=r"spatial_dims=2 expects \(N, C, H, W\) inputs, got shape \(1, 1, 5, 6, 7\)"):
        FourierCoordinateEncoding()(torch.zeros(1, 1, 5, 6, 7))


def test_volume_model_maps_scores_equalisation_and_gradients() -> None:
    torch.manual_seed(0)
    model = SyntheticTaskLocaliserModel(**TINY, spatial_dims=3, histogram_equalisation=True)
    volumes = torch.rand(2, 1, 6, 8, 5).expand(-1, 3, -1, -1, -1) ** 2
    grey = model.to_task_space(volumes)
    assert grey.shape == (2, 1, 6, 8, 5)
    # one histogram per volume (all its voxels as one plane), not one per slice
    raw = volumes[:, :1]
    per_volume = equalise_histogram(raw.reshape(2, 1, 1, -1)).reshape(raw.shape)
    torch.testing.assert_close(grey, per_volume * 2 - 1)
    assert not torch.allclose(grey, equalise_histogram(raw) * 2 - 1, atol=1e-3)
    model.train()
    model(volumes).square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        output = model(volumes)
    assert output.anomaly_map.shape == (2, 1, 6, 8, 5)
    torch.testing.assert_close(output.pred_score, output.anomaly_map.flatten(1).mean(1))
    with pytest.raises(ValueError, match="spatial_dims=3"):
        model(volumes[:, :, 0])
    with pytest.raises(ValueError, match="spatial_dims=2"):
        SyntheticTaskLocaliserModel(**TINY)(volumes)


def test_lightning_module_builds_a_3d_model_and_trains_a_step_on_volumes() -> None:
    torch.manual_seed(0)
    model = SyntheticTaskLocaliser(
        **TINY,
        spatial_dims=3,
        train_tasks=["intra_dataset_blending", "sink_deformation"],
        validation_tasks=[],
        seed=0,
        push_distance=(0.5, 1.5),
        visualizer=False,
    )
    assert model.model.spatial_dims == 3
    assert model.model.unet.head.weight.ndim == 5
    pytorch_init = SyntheticTaskLocaliser(**TINY, initialisation="pytorch", validation_tasks=[]).model.unet
    assert pytorch_init.encoder[0][0][0].bias.abs().sum() > 0  # He initialisation zeroes the biases
    assert not model.model.unet.encoder[0][0][0].bias.any()
    model.on_fit_start()
    volumes = torch.rand(2, 1, 10, 12, 10).expand(-1, 3, -1, -1, -1)
    # anomalib's ImageBatch refuses 5-D images: a volume batch type is a later step (issue 16 item 1)
    loss = model.training_step(SimpleNamespace(image=volumes))["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.model.parameters())
    with pytest.raises(ValueError, match="image_size must be None for spatial_dims=3"):
        SyntheticTaskLocaliser(**TINY, spatial_dims=3, image_size=(8, 8))
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        SyntheticTaskLocaliser(**TINY, spatial_dims=4)


def test_learning_rate_schedule_warms_up_decays_and_floors() -> None:
    factors = [warmup_exponential_decay(step, 10, 0.9, 0.05) for step in range(60)]
    assert factors[0] == pytest.approx(0.01)
    assert factors[10] == pytest.approx(1.0)
    assert all(a < b for a, b in itertools.pairwise(factors[:11]))
    assert factors[11] == pytest.approx(0.9)
    assert all(a >= b for a, b in itertools.pairwise(factors[10:]))
    assert factors[-1] == pytest.approx(0.05)
    model = SyntheticTaskLocaliser(**TINY, learning_rate=0.1, warmup_steps=4, decay_rate=0.5, min_lr_factor=0.2)
    configuration = model.configure_optimizers()
    optimizer, scheduler = configuration["optimizer"], configuration["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.AdamW)
    assert configuration["lr_scheduler"]["interval"] == "step"
    rates = []
    for _ in range(8):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    np.testing.assert_allclose(rates, [0.1 * warmup_exponential_decay(s, 4, 0.5, 0.2) for s in range(8)])


def test_training_step_is_deterministic_under_a_seed_and_learns() -> None:
    batch = ImageBatch(image=grey_batch(size=4, shape=(24, 24)), gt_label=torch.zeros(4, dtype=torch.long))
    losses = []
    for _ in range(2):
        torch.manual_seed(0)
        model = SyntheticTaskLocaliser(**TINY, seed=3, image_size=(24, 24))
        model.on_fit_start()
        losses.append(model.training_step(batch)["loss"])
    torch.testing.assert_close(losses[0], losses[1])
    assert losses[1].requires_grad
    losses[1].backward()
    assert all(p.grad is not None for p in model.model.parameters())


def test_synthetic_validation_uses_normal_images_and_repeats_its_corruptions() -> None:
    torch.manual_seed(0)
    model = SyntheticTaskLocaliser(**TINY, validation_tasks=["smooth_intensity_change", "sink_deformation"]).eval()
    images = grey_batch(size=6, shape=(24, 24))
    batch = ImageBatch(image=images, gt_label=torch.tensor([0, 0, 1, 1, 0, 1]), gt_mask=torch.zeros(6, 24, 24))
    scores = []
    for _ in range(2):
        model.on_validation_epoch_start()
        with torch.no_grad():
            output = model.validation_step(batch)
        scores.append(model.synthetic_ap.compute())
        assert model.synthetic_mse.total == 2 * 3 * 24 * 24  # three normal images, clean + corrupted
    assert output.anomaly_map.shape[-2:] == (24, 24)
    assert output.pred_score.shape == (6,)
    assert 0 < scores[0] <= 1
    torch.testing.assert_close(scores[0], scores[1])
    model.on_validation_epoch_start()
    with torch.no_grad():
        model.validation_step(ImageBatch(image=images[:2], gt_label=torch.ones(2, dtype=torch.long)))
    assert not model.synthetic_ap.update_called


def test_task_split_and_pre_processor_options() -> None:
    model = SyntheticTaskLocaliser(**TINY, train_tasks=["sink_deformation"], validation_tasks=[], image_size=(40, 30))
    assert len(model.train_generator.tasks) == 1
    assert model.validation_generator is None
    assert model.input_size == (40, 30)
    images = grey_batch(size=2) ** 3
    torch.testing.assert_close(model.model.to_task_space(images), images[:, :1] * 2 - 1)
    equalised = SyntheticTaskLocaliser(**TINY, histogram_equalisation=True).model.to_task_space(images)
    torch.testing.assert_close(equalised, HistogramEqualisation()(images[:, :1]) * 2 - 1)
    with pytest.raises(ValueError, match="training task"):
        SyntheticTaskLocaliser(**TINY, train_tasks=[])
    with pytest.raises(ValueError, match="unknown task"):
        SyntheticTaskLocaliser(**TINY, validation_tasks=["rotation"])


def test_ensemble_averages_its_members_and_loads_from_checkpoints(tmp_path: Path) -> None:
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        members.append(SyntheticTaskLocaliser(**TINY, image_size=(16, 16)))
    paths = [save_checkpoint(member, tmp_path / f"fold_{i}.ckpt") for i, member in enumerate(members)]
    ensemble = SyntheticTaskLocaliserEnsemble.from_checkpoints(paths).eval()
    assert ensemble.hparams["num_members"] == 3
    assert ensemble.input_size == (16, 16)
    images = grey_batch(size=2)
    with torch.no_grad():
        output = ensemble.model(images)
        raw = torch.stack([m.model.localise(m.model.to_task_space(images)) for m in members]).mean(0)
    torch.testing.assert_close(output.anomaly_map, raw.clamp(0, 1))
    torch.testing.assert_close(output.pred_score, raw.clamp(0, 1).mean(dim=(1, 2, 3)))

    trainer = Trainer(logger=False, enable_checkpointing=False, max_epochs=0)
    trainer.strategy.connect(ensemble)
    trainer.save_checkpoint(tmp_path / "ensemble.ckpt")
    reloaded = SyntheticTaskLocaliserEnsemble.load_from_checkpoint(tmp_path / "ensemble.ckpt").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded.model(images).anomaly_map, output.anomaly_map)

    torch.manual_seed(0)
    other = save_checkpoint(SyntheticTaskLocaliser(depth=3, base_channels=4, max_channels=8), tmp_path / "o.ckpt")
    with pytest.raises(ValueError, match="architectures"):
        SyntheticTaskLocaliserEnsemble.from_checkpoints([paths[0], other])


def test_ensemble_fit_only_validates_and_train_tests_it(tmp_path: Path) -> None:
    """anomalib's zero-shot contract: ``fit`` sets the thresholds without a training step, ``train`` also tests."""
    torch.manual_seed(0)
    member = SyntheticTaskLocaliser(**TINY, image_size=(24, 24))
    ensemble = SyntheticTaskLocaliserEnsemble.from_checkpoints(
        [save_checkpoint(member, tmp_path / "fold.ckpt")], visualizer=False
    )
    before = {name: value.clone() for name, value in ensemble.model.state_dict().items()}
    datamodule = DigitAnatomy(
        root=tmp_path / "digits", cell_size=8, samples_per_type=2, train_size=8, train_batch_size=4, eval_batch_size=8
    )
    engine = Engine(logger=False, default_root_dir=tmp_path / "results", enable_progress_bar=False, max_epochs=1)
    metrics = engine.train(ensemble, datamodule=datamodule)[0]
    assert engine.trainer.global_step == 0
    for name, value in ensemble.model.state_dict().items():
        torch.testing.assert_close(value, before[name], msg=name)
    assert torch.isfinite(ensemble.post_processor.image_threshold)
    assert {"image_AUROC", "pixel_AUROC"} <= set(metrics)
    # the ranking metrics are those of the model's raw outputs, not of the post-processor's clamped ones
    ensemble.model.eval()
    with torch.no_grad():
        batches = [(ensemble.model(b.image), b) for b in datamodule.test_dataloader()]
    maps = torch.cat([output.anomaly_map.flatten() for output, _ in batches]).numpy()
    masks = torch.cat([b.gt_mask.flatten() for _, b in batches]).numpy()
    scores = torch.cat([output.pred_score for output, _ in batches]).numpy()
    labels = torch.cat([b.gt_label for _, b in batches]).numpy()
    assert metrics["pixel_AveragePrecision"] == pytest.approx(average_precision_score(masks, maps), abs=1e-6)
    assert metrics["image_AUROC"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)


class _SyntheticAPHistory(Callback):
    """Record the synthetic validation pixel AP after every epoch (logged by the module at validation end)."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_epoch_end(self, trainer: Trainer, pl_module: SyntheticTaskLocaliser) -> None:
        del pl_module
        self.values.append(float(trainer.callback_metrics[SYNTHETIC_PIXEL_AP]))


@pytest.mark.slow
def test_short_training_improves_synthetic_ap_and_restores_the_best_epoch(tmp_path: Path) -> None:
    """120 optimiser steps on 24 px DigitAnatomy; the model is selected on held-out synthetic tasks.

    A bound with a wide measured margin instead of a seed-dependent test AUROC. With PyTorch's initialisation, over
    seeds 0-4 (one thread) and 0, 2 (two threads) the best synthetic pixel AP was 7.1-11.5 times the first epoch's
    (0.52-0.68 against 0.06-0.08). The authors' He initialisation learns this tiny budget too slowly for a margin
    (1.5-2.6 times over seeds 0-3), so the test uses ``initialisation="pytorch"``; the real test-set pixel AUROC at
    this budget is too close to chance to bound.
    """
    seed_everything(0)
    datamodule = DigitAnatomy(
        root=tmp_path / "data",
        cell_size=8,
        samples_per_type=10,
        train_size=16 * 20,
        train_batch_size=16,
        eval_batch_size=50,
    )
    model = SyntheticTaskLocaliser(
        depth=3,
        base_channels=8,
        max_channels=64,
        positional_encoding=False,
        image_size=(24, 24),
        push_distance=(0.5, 2.0),
        initialisation="pytorch",
        learning_rate=1e-2,
        warmup_steps=20,
        decay_rate=0.999,
        visualizer=False,
    )
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "checkpoints", monitor=SYNTHETIC_PIXEL_AP, mode="max")
    history = _SyntheticAPHistory()
    engine = Engine(
        max_epochs=6,
        default_root_dir=tmp_path / "results",
        callbacks=[checkpoint, history],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    engine.fit(model, datamodule=datamodule)
    assert len(history.values) == 6
    assert float(checkpoint.best_model_score) == pytest.approx(max(history.values))
    assert max(history.values) > 1.5 * history.values[0], history.values
    best = torch.load(checkpoint.best_model_path, weights_only=False)["state_dict"]
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, best[name], msg=f"{name} was not restored from the best checkpoint")
    metrics = engine.test(model, datamodule=datamodule, verbose=False)[0]
    assert {"pixel_AUROC", "image_AUROC"} <= set(metrics)


def test_data_fold_moves_training_images_into_validation(tmp_path: Path) -> None:
    for folder, count in [("good", 12), ("bad", 4)]:
        (tmp_path / folder).mkdir()
        for i in range(count):
            Image.fromarray(np.full((8, 8), 10 * i, dtype=np.uint8)).save(tmp_path / folder / f"{i:02d}.png")

    def folder_datamodule() -> Folder:
        return Folder(name="toy", root=tmp_path, normal_dir="good", abnormal_dir="bad", num_workers=0, seed=0)

    reference = folder_datamodule()
    reference.setup()
    train_paths = set(reference.train_data.samples.image_path)
    for held_out_parts, expected_train in [([3, 4], 6), ([1, 2, 3, 4], 8)]:  # T = 3, and T = 1 (roles swap)
        datamodule = folder_datamodule()
        assert hold_out_data_fold(datamodule, held_out_parts)
        kept = set(datamodule.train_data.samples.image_path)
        added = set(datamodule.val_data.samples.image_path) - set(reference.val_data.samples.image_path)
        assert len(kept) == expected_train
        assert kept | added == train_paths
        assert not kept & added
        assert (datamodule.val_data.samples.label_index.loc[lambda s: s.index >= len(reference.val_data)] == 0).all()
    generated = DigitAnatomy(root=tmp_path / "digits", cell_size=4, samples_per_type=1, train_size=4)
    assert not hold_out_data_fold(generated, [4])


@pytest.mark.slow
def test_cross_validation_command_trains_the_folds_and_their_ensemble(tmp_path: Path) -> None:
    recipe = Path(__file__).resolve().parents[2] / "configs" / "synthetic_task_localiser_digit_anatomy.yaml"
    output = tmp_path / "cv"
    overrides = [
        "--trainer.max_epochs=1",
        f"--data.init_args.root={tmp_path / 'digits'}",
        "--data.init_args.cell_size=8",
        "--data.init_args.train_size=16",
        "--data.init_args.samples_per_type=3",
        "--model.init_args.image_size=[24,24]",
        "--model.init_args.depth=2",
        "--model.init_args.base_channels=4",
    ]
    main(
        [
            "--config",
            str(recipe),
            "--num_train_tasks",
            "3",
            "--folds",
            "0",
            "9",
            "--output",
            str(output),
            "--",
            *overrides,
        ]
    )
    report = json.loads((output / "cross_validation.json").read_text())
    assert [fold["train_tasks"] for fold in report["folds"]] == [task_split(3, 0)[0], task_split(3, 9)[0]]
    for fold in report["folds"]:
        assert Path(fold["checkpoint"]).is_file()
        assert fold[SYNTHETIC_PIXEL_AP] is not None
        assert 0 <= fold["test"]["pixel_AUROC"] <= 1
    assert report["ensemble"]["members"] == 2
    assert set(report["ensemble"]["test"]) == {
        "image_AUROC",
        "image_AUPR",
        "image_AveragePrecision",
        "pixel_AUROC",
        "pixel_AUPR",
        "pixel_AveragePrecision",
        "pixel_ChunkedAveragePrecision",
    }
    reloaded = SyntheticTaskLocaliserEnsemble.load_from_checkpoint(report["ensemble"]["checkpoint"], num_members=2)
    assert len(reloaded.model.members) == 2
    assert torch.isfinite(reloaded.post_processor.image_threshold)
