"""Argument ranges, checkpoints of other models or files, eval mode before fit, input sizes, NaN scores, statistics."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.data import ImageBatch
from anomalib.engine import Engine
from lightning.pytorch import Callback, Trainer

from anomalib_medical.models import SimSID, Squid, SyntheticTaskLocaliser
from anomalib_medical.models.components.lightning_checks import CHECKPOINT_CLASS_KEY
from anomalib_medical.models.components.validation import check_number
from anomalib_medical.models.simsid import SimSIDModel
from anomalib_medical.models.squid import SquidModel
from anomalib_medical.models.synthetic_task_localiser import SyntheticTaskLocaliserModel
from anomalib_medical.models.synthetic_task_localiser.tasks import SyntheticAnomalyGenerator, build_task
from tests.unit.test_squid import TINY as SQUID_TINY
from tests.unit.test_synthetic_task_localiser import one_thread  # noqa: F401 (autouse fixture)

TINY = SQUID_TINY | {"visualizer": False}
TINY_SIMSID = TINY | {"discriminator_channels": (4, 8, 16)}
TINY_LOCALISER = {"depth": 2, "base_channels": 4, "max_channels": 8, "visualizer": False}


def _engine(tmp_path: Path, **kwargs) -> Engine:
    defaults = {
        "max_epochs": 1,
        "logger": False,
        "default_root_dir": tmp_path / "results",
        "enable_progress_bar": False,
        "accelerator": "cpu",
        "devices": 1,
    }
    return Engine(**(defaults | kwargs))


def _save_untrained(model, path: Path) -> Path:
    trainer = Trainer(logger=False, enable_checkpointing=False, max_epochs=0)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)
    return path


def _default_statistics(model: Squid) -> bool:
    return bool((model.model.score_mean == 0).all() and (model.model.score_std == 1).all())


# ------------------------------------------------------------------------------------------ argument ranges


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        (0, {"low": 1, "integer": True}, "n must be an integer >= 1, got 0"),
        (1.5, {"low": 1, "integer": True}, "n must be an integer >= 1, got 1.5"),
        (True, {"low": 0, "integer": True}, "n must be an integer >= 0, got True"),
        (1.5, {"low": 0, "high": 1}, "n must be a number in [0, 1], got 1.5"),
        (1.0, {"low": 0, "high": 1, "high_open": True}, "n must be a number in [0, 1), got 1.0"),
        (0.0, {"low": 0, "low_open": True}, "n must be a number > 0, got 0.0"),
        (math.nan, {"low": 0}, "n must be a number >= 0, got nan"),
        (math.inf, {}, "n must be a finite number, got inf"),
        ("2", {"low": 1, "integer": True, "optional": True}, "n must be None or an integer >= 1, got '2'"),
    ],
)
def test_check_number_names_argument_range_and_value(value, kwargs, message):
    with pytest.raises(ValueError) as error:
        check_number("n", value, **kwargs)
    assert str(error.value) == message


def test_check_number_accepts_values_in_range():
    check_number("n", 1, 1, integer=True)
    check_number("n", None, 1, integer=True, optional=True)
    check_number("n", 1, 0, 1)  # an integer is a number
    check_number("n", 0.5, 0, 1, low_open=True, high_open=True)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_critic": 0}, r"^n_critic must be an integer >= 1, got 0$"),
        ({"n_critic": 1.5}, r"^n_critic must be an integer >= 1, got 1.5$"),
        ({"memory_slots": 0}, r"^memory_slots must be an integer >= 1, got 0$"),
        ({"patches_per_side": 0}, r"^patches_per_side must be an integer >= 1, got 0$"),
        ({"num_heads": 3}, r"^num_heads must divide the in-painting feature dimension 16 .*got 3$"),
        ({"num_heads": 0}, r"^num_heads must be an integer >= 1, got 0$"),
        ({"mask_ratio": 1.5}, r"^mask_ratio must be a number in \[0, 1\], got 1.5$"),
        ({"score_stats_images": 0}, r"^score_stats_images must be an integer >= 2, got 0$"),
        ({"image_size": 0}, r"^image_size must be an integer >= 1, got 0$"),
        ({"levels": 0}, r"^levels must be an integer >= 1, got 0$"),
        ({"merge_levels": 3}, r"^merge_levels must be an integer in \[0, 2\], got 3$"),
        ({"top_k": 0}, r"^top_k must be None or an integer >= 1, got 0$"),
        ({"decoder_memory_slots": 0}, r"^decoder_memory_slots must be an integer >= 1, got 0$"),
        ({"dropout": 1.0}, r"^dropout must be a number in \[0, 1\), got 1.0$"),
        ({"map_sigma": -1.0}, r"^map_sigma must be a number >= 0, got -1.0$"),
        ({"lr": 0.0}, r"^lr must be a number > 0, got 0.0$"),
        ({"discriminator_lr": -1e-4}, r"^discriminator_lr must be a number > 0, got -0.0001$"),
        ({"reconstruction_weight": math.nan}, r"^reconstruction_weight must be a number >= 0, got nan$"),
        ({"weight_decay": -1.0}, r"^weight_decay must be a number >= 0, got -1.0$"),
        ({"scheduler_t_max": 0}, r"^scheduler_t_max must be an integer >= 1, got 0$"),
        ({"min_lr_ratio": 2.0}, r"^min_lr_ratio must be a number in \[0, 1\], got 2.0$"),
        ({"base_channels": 1, "levels": 1, "skip_ops": ("none",), "decoder_memory": ("none",)}, "at least 4"),
    ],
)
def test_squid_rejects_out_of_range_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Squid(**TINY | kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"memory_slots": 0}, r"^memory_slots must be an integer >= 1, got 0$"),
        ({"decoder_mask_ratio": -0.1}, r"^decoder_mask_ratio must be a number in \[0, 1\], got -0.1$"),
        ({"discriminator_channels": (4, 0)}, r"^discriminator_channels must be an integer >= 1, got 0$"),
        ({"in_channels": 0}, r"^in_channels must be an integer >= 1, got 0$"),
    ],
)
def test_simsid_rejects_out_of_range_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SimSID(**TINY_SIMSID | kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sigma": 0.0}, r"^sigma must be a number > 0, got 0.0$"),
        ({"intensity_scale": -0.2}, r"^intensity_scale must be a number > 0, got -0.2$"),
        ({"push_distance": (5.0, 1.0)}, r"^push_distance must be a range \(low, high\) with low <= high"),
        ({"push_distance": (-1.0, 1.0)}, r"^push_distance must be a number >= 0, got -1.0$"),
        ({"foreground_threshold": 1.0}, r"^foreground_threshold must be None or a number in \[0, 1\), got 1.0$"),
        ({"min_size": 0.0}, r"^min_size must be a number in \(0, 1\], got 0.0$"),
        ({"max_size": 0.01}, r"^max_size must be a number in \[0.06, 1\], got 0.01$"),
        ({"learning_rate": -1.0}, r"^learning_rate must be a number > 0, got -1.0$"),
        ({"warmup_steps": -1}, r"^warmup_steps must be an integer >= 0, got -1$"),
        ({"decay_rate": 0.0}, r"^decay_rate must be a number in \(0, 1\], got 0.0$"),
        ({"min_lr_factor": 1.5}, r"^min_lr_factor must be a number in \[0, 1\], got 1.5$"),
        ({"image_size": (0, 24)}, r"^image_size must be an integer >= 1, got 0$"),
        ({"seed": -1}, r"^seed must be None or an integer >= 0, got -1$"),
        ({"depth": 0}, r"^depth must be an integer >= 1, got 0$"),
        ({"max_channels": 0}, r"^max_channels must be an integer >= 1, got 0$"),
    ],
)
def test_localiser_rejects_out_of_range_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SyntheticTaskLocaliser(**TINY_LOCALISER | kwargs)


def test_localiser_torch_model_rejects_out_of_range_fourier_arguments():
    with pytest.raises(ValueError, match=r"^fourier_scale must be a number > 0, got 0.0$"):
        SyntheticTaskLocaliserModel(depth=2, fourier_scale=0.0)


# -------------------------------------------------------------------------------------- eval mode, input size


def test_training_works_after_eval_before_fit(tiny_digits, tmp_path):
    model = Squid(**TINY).eval()
    _engine(tmp_path, max_steps=2).fit(model, datamodule=tiny_digits)
    assert not _default_statistics(model)
    assert model.model.training  # validation's mode restore hands training mode back


@pytest.mark.parametrize("model_class", [SquidModel, SimSIDModel])
def test_input_of_another_size_names_both_sizes(model_class):
    config = TINY_SIMSID if model_class is SimSIDModel else TINY
    lightning_only = {"visualizer", "patches_per_side", "image_size"}
    config = {key: value for key, value in config.items() if key not in lightning_only}
    model = model_class(**config, grid=TINY["patches_per_side"], image_size=(24, 24)).eval()  # the torch model's name
    with torch.no_grad(), pytest.raises(ValueError, match=r"size \(30, 30\).*image_size \(24, 24\)"):
        model(torch.rand(1, 3, 30, 30))


# ------------------------------------------------------------------------------------------------ checkpoints


def test_checkpoint_records_the_model_class(tmp_path):
    checkpoint = torch.load(_save_untrained(Squid(**TINY), tmp_path / "squid.ckpt"), weights_only=True)
    assert checkpoint[CHECKPOINT_CLASS_KEY] == "anomalib_medical.models.squid.lightning_model.Squid"


def test_checkpoint_of_another_model_names_its_class_and_arguments(tmp_path):
    path = _save_untrained(Squid(**TINY), tmp_path / "squid.ckpt")
    with pytest.raises(ValueError) as error:
        SimSID.load_from_checkpoint(path)
    message = str(error.value)
    assert "written by Squid (anomalib_medical.models.squid.lightning_model.Squid)" in message
    assert "--model Squid" in message
    assert "memory_type=absent in the checkpoint, 'matrix' here" in message
    assert "--config" in message
    assert len(message) < 2000  # a few keys, not the hundreds of torch's message
    assert error.value.__cause__ is None and error.value.__suppress_context__


def test_anomalib_test_with_other_arguments_names_them(tiny_digits, tmp_path):
    """``anomalib test --ckpt_path`` without the training config: Lightning's restore path of the Trainer."""
    path = _save_untrained(Squid(**TINY), tmp_path / "squid.ckpt")
    with pytest.raises(ValueError) as error:
        _engine(tmp_path).test(Squid(**TINY | {"image_size": 48}), datamodule=tiny_digits, ckpt_path=path)
    message = str(error.value)
    assert "does not fit this Squid model" in message
    assert "written by anomalib_medical.models.squid.lightning_model.Squid" in message
    assert "Constructor arguments that differ: image_size=24 in the checkpoint, 48 here." in message
    assert "keys of another shape (e.g. " in message
    assert len(message) < 2000


def test_localiser_checkpoint_of_another_depth_names_it(tmp_path):
    path = _save_untrained(SyntheticTaskLocaliser(**TINY_LOCALISER | {"depth": 3}), tmp_path / "stl.ckpt")
    model = SyntheticTaskLocaliser(**TINY_LOCALISER)
    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu")
    with pytest.raises(ValueError, match=r"depth=3 in the checkpoint, 2 here.*unexpected keys \(e\.g\. model\.unet"):
        trainer.test(model, dataloaders=[], ckpt_path=path)


def test_squid_checkpoint_in_the_localiser_names_squid(tmp_path):
    path = _save_untrained(Squid(**TINY), tmp_path / "squid.ckpt")
    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu")
    with pytest.raises(ValueError, match=r"written by Squid .*--model Squid"):
        trainer.test(SyntheticTaskLocaliser(**TINY_LOCALISER), dataloaders=[], ckpt_path=path)


def _broken_files(tmp_path: Path) -> dict[str, Path]:
    valid = _save_untrained(Squid(**TINY), tmp_path / "valid.ckpt")
    empty, truncated, text = tmp_path / "empty.ckpt", tmp_path / "truncated.ckpt", tmp_path / "config.yaml"
    empty.write_bytes(b"")
    truncated.write_bytes(valid.read_bytes()[:20000])
    text.write_text("model:\n  class_path: Squid\n")
    return {"is empty (0 bytes)": empty, "is truncated or damaged": truncated, "is not a PyTorch checkpoint": text}


def test_load_from_checkpoint_names_an_unreadable_file(tmp_path):
    for problem, path in _broken_files(tmp_path).items():
        with pytest.raises(ValueError, match=rf"^The (checkpoint )?file {re.escape(str(path))} {re.escape(problem)}"):
            Squid.load_from_checkpoint(path)


def test_trainer_ckpt_path_error_gets_a_note_naming_the_file(tmp_path):
    """Lightning reads ``ckpt_path`` before any model hook: its own error keeps, with a note naming the file."""
    for problem, path in _broken_files(tmp_path).items():
        trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu")
        with pytest.raises(Exception) as error:  # torch's error type depends on the damage
            trainer.test(Squid(**TINY), dataloaders=[], ckpt_path=path)
        notes = getattr(error.value, "__notes__", [])
        assert any(str(path) in note and problem in note for note in notes), notes


# ------------------------------------------------------------------------------------------------- NaN scores


def _batch(paths: list[str], size: int = 24) -> ImageBatch:
    images = torch.rand(len(paths), 3, size, size, generator=torch.Generator().manual_seed(0))
    return ImageBatch(image=images, image_path=paths)


@pytest.mark.parametrize(
    ("model_class", "config"), [(Squid, TINY), (SimSID, TINY_SIMSID), (SyntheticTaskLocaliser, TINY_LOCALISER)]
)
def test_nan_pixel_is_refused_naming_the_image(model_class, config):
    model = model_class(**config)
    model.model.eval()
    batch = _batch(["a.png", "b.png", "c.png"])
    batch.image[1, :, 5, 7] = math.nan
    for step in (model.validation_step, model.test_step, model.predict_step):
        with torch.no_grad(), pytest.raises(ValueError) as error:
            step(batch.update(pred_score=None, anomaly_map=None), 0)
        message = str(error.value)
        assert "Non-finite anomaly scores for 1 of 3 images: b.png." in message
        assert "non-finite pixels in b.png" in message
        assert "weights" not in message


def test_nan_weights_are_refused_in_anomalib_test(tiny_digits, tmp_path):
    model = Squid(**TINY)
    with torch.no_grad():
        model.model.discriminator.classifier.weight.fill_(math.nan)
    with pytest.raises(ValueError, match=r"Non-finite anomaly scores for 10 of 10 images: .*\.png.*non-finite weights"):
        _engine(tmp_path).test(model, datamodule=tiny_digits, verbose=False)


# ------------------------------------------------------------------------------------------- score statistics


def test_statistics_set_when_max_steps_stops_mid_epoch(tiny_digits, tmp_path):
    """2 optimiser steps (one batch of 8 images, discriminator and generator) of a 4-batch epoch."""
    model = Squid(**TINY, score_stats_images=10)
    engine = _engine(tmp_path, max_steps=2)
    with pytest.warns(UserWarning, match=r"ended before its last batch.*fewer than score_stats_images=10"):
        engine.fit(model, datamodule=tiny_digits)
    assert not _default_statistics(model)
    saved = torch.load(engine.trainer.checkpoint_callback.best_model_path, weights_only=False)["state_dict"]
    torch.testing.assert_close(saved["model.score_mean"], model.model.score_mean)
    torch.testing.assert_close(saved["model.score_std"], model.model.score_std)


class _StopAfterFirstBatch(Callback):
    """Ask to stop as ``max_time`` does (``trainer.should_stop``) and record the statistics validation scores with."""

    def __init__(self) -> None:
        self.validation_std: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        trainer.should_stop = True

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.validation_std.append(pl_module.model.score_std.clone())
        assert not pl_module.model.training


def test_statistics_set_before_validation_of_a_stopped_epoch(tiny_digits, tmp_path):
    model = Squid(**TINY, score_stats_images=10)
    probe = _StopAfterFirstBatch()
    with pytest.warns(UserWarning, match="Validation started before the end of the training epoch"):
        _engine(tmp_path, callbacks=[probe]).fit(model, datamodule=tiny_digits)
    assert probe.validation_std
    assert not any(torch.equal(std, torch.ones(3)) for std in probe.validation_std)


def test_fit_without_a_training_batch_warns(tiny_digits, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _engine(tmp_path, limit_train_batches=0).fit(Squid(**TINY), datamodule=tiny_digits)
    assert any("score statistics were never computed" in str(warning.message) for warning in caught)


def test_synthetic_tasks_refuse_nan_images_instead_of_crashing():
    """scikit-image's reconstruction in the labelling crashed the process (heap corruption) on a NaN pixel."""
    generator = SyntheticAnomalyGenerator([build_task("smooth_intensity_change")])
    images = torch.zeros(3, 1, 16, 16)
    images[1, 0, 4, 4] = math.nan
    with pytest.raises(ValueError, match=r"^Images \[1\] of the batch hold NaN or infinite pixels"):
        generator(images, np.random.default_rng(0))
