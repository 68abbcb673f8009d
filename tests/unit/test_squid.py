"""Squid: torch model, losses, Lightning module, training/eval invariants and checkpoints."""

import copy
import warnings
from types import SimpleNamespace

import pytest
import torch
from anomalib import LearningType
from anomalib.data import InferenceBatch
from anomalib.engine import Engine
from lightning.pytorch import Callback
from torch.nn import functional as F

from anomalib_medical.models import SimSID, Squid
from anomalib_medical.models.components.detector import SCORE_WEIGHTS
from anomalib_medical.models.components.generator import GeneratorOutput
from anomalib_medical.models.squid import SquidModel
from tests.unit.quick_training import QUICK, train_briefly

TINY = {
    "image_size": 24,
    "patches_per_side": 3,
    "levels": 2,
    "base_channels": 4,
    "skip_ops": ("concat", "none"),
    "merge_levels": 1,
    "memory_slots": 6,
    "top_k": 2,
    "decoder_memory": ("position", "none"),
    "decoder_memory_slots": 5,
    "num_heads": 2,
}


def _tiny_model(**kwargs) -> SquidModel:
    config = TINY | kwargs
    config["image_size"] = (config["image_size"], config["image_size"])
    config["grid"] = config.pop("patches_per_side")  # the torch model's name of the Lightning module's argument
    return SquidModel(**config)


def _engine(tmp_path, **kwargs) -> Engine:
    defaults = {
        "max_epochs": 1,
        "logger": False,
        "default_root_dir": tmp_path / "results",
        "enable_progress_bar": False,
        "accelerator": "cpu",
        "devices": 1,
    }
    return Engine(**(defaults | kwargs))


def test_training_forward_shapes():
    model = _tiny_model().train()
    out = model(torch.rand(2, 3, 24, 24))
    assert isinstance(out, GeneratorOutput)
    assert out.image.shape == out.reconstruction.shape == out.teacher_reconstruction.shape == (2, 1, 24, 24)
    assert out.memory_queries.shape == (2, 9, model.generator.inpainting.memory_dim)
    assert len(out.student_features) == len(out.teacher_features) == 2
    for student, teacher in zip(out.student_features, out.teacher_features, strict=True):
        assert student.shape == teacher.shape
    assert out.reconstruction.min() >= 0 and out.reconstruction.max() <= 1


def test_eval_forward_returns_inference_batch():
    model = _tiny_model().eval()
    with torch.no_grad():
        out = model(torch.rand(3, 3, 24, 24))
    assert isinstance(out, InferenceBatch)
    assert out.pred_score.shape == (3,)
    assert out.anomaly_map.shape == (3, 1, 24, 24)


def test_grey_reduction_inside_forward():
    model = _tiny_model().eval()
    grey = torch.rand(2, 1, 24, 24)
    with torch.no_grad():
        from_rgb = model(grey.expand(-1, 3, -1, -1))
        from_grey = model(grey)
    torch.testing.assert_close(from_rgb.pred_score, from_grey.pred_score)
    torch.testing.assert_close(from_rgb.anomaly_map, from_grey.anomaly_map)


def test_generator_and_discriminator_losses_reach_all_parameters():
    lightning = Squid(**TINY, evaluator=False, visualizer=False)
    model = lightning.model.train()
    out = model(torch.rand(4, 3, 24, 24))
    terms = lightning.generator_loss(out, model.discriminator(out.reconstruction))
    assert set(terms) == {"reconstruction", "teacher", "distillation", "adversarial", "loss"}
    terms["loss"].backward()
    for name, parameter in model.generator.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    model.zero_grad()
    d_loss = lightning.discriminator_loss(
        model.discriminator(out.image), model.discriminator(out.reconstruction.detach())
    )
    d_loss.backward()
    assert all(parameter.grad is None for parameter in model.generator.parameters())
    for name, parameter in model.discriminator.named_parameters():
        assert parameter.grad is not None, name


@pytest.mark.parametrize("model_class", [Squid, SimSID])
def test_teacher_does_not_train_the_encoder(model_class):
    lightning = model_class(**TINY, evaluator=False, visualizer=False)
    model = lightning.model.train()
    out = model(torch.rand(2, 3, 24, 24))
    torch.nn.functional.mse_loss(out.teacher_reconstruction, out.image).backward()
    assert all(parameter.grad is None for parameter in model.generator.encoder.parameters())
    assert any(parameter.grad is not None for parameter in model.generator.teacher.parameters())


@pytest.mark.parametrize("model_class", [Squid, SimSID])
def test_teacher_trains_the_encoder_when_asked(model_class):
    lightning = model_class(**TINY, teacher_trains_encoder=True, evaluator=False, visualizer=False)
    model = lightning.model.train()
    out = model(torch.rand(2, 3, 24, 24))
    torch.nn.functional.mse_loss(out.teacher_reconstruction, out.image).backward()
    encoder = list(model.generator.encoder.parameters())
    assert all(parameter.grad is not None for parameter in encoder)
    assert any(parameter.grad.abs().sum() > 0 for parameter in encoder)
    # the student path and the in-painting block get nothing from the teacher's loss
    assert all(parameter.grad is None for parameter in model.generator.student.parameters())
    assert lightning.hparams["teacher_trains_encoder"] is True


def test_eval_forward_is_deterministic_and_writes_no_buffer():
    model = _tiny_model().eval()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    image = torch.rand(2, 3, 24, 24)
    with torch.no_grad():
        first, second = model(image), model(image)
    torch.testing.assert_close(first.pred_score, second.pred_score)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, before[name], msg=name)


def test_masked_shortcut_is_random_only_in_training():
    torch.manual_seed(0)
    model = _tiny_model(mask_ratio=0.5).train()
    image = torch.rand(2, 3, 24, 24)
    with torch.no_grad():
        assert not torch.allclose(model(image).reconstruction, model(image).reconstruction)


@pytest.mark.parametrize("score_type", sorted(SCORE_WEIGHTS))
def test_score_type_selects_standardised_components(score_type):
    model = _tiny_model(score_type=score_type).eval()
    model.score_mean.copy_(torch.tensor([0.5, 0.1, 0.2]))
    model.score_std.copy_(torch.tensor([2.0, 0.5, 0.25]))
    image = torch.rand(3, 3, 24, 24)
    with torch.no_grad():
        raw, _ = model.raw_scores(model.reduce_channels(image))
        pred_score = model(image).pred_score
    expected = ((raw - model.score_mean) / model.score_std) @ torch.tensor(SCORE_WEIGHTS[score_type])
    torch.testing.assert_close(pred_score, expected)


def test_discriminator_component_is_negative_logit():
    model = _tiny_model().eval()
    image = torch.rand(2, 1, 24, 24)
    with torch.no_grad():
        raw, _ = model.raw_scores(image, components=["discriminator"])
        logits = model.discriminator(model.generator(image, teacher=False).reconstruction)
    torch.testing.assert_close(raw[:, 0], -logits)
    assert (raw[:, 1:] == 0).all()


def test_set_score_statistics():
    model = _tiny_model()
    raw = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 5.0]])
    model.set_score_statistics(raw)
    torch.testing.assert_close(model.score_mean, torch.tensor([2.0, 2.0, 4.0]))
    torch.testing.assert_close(model.score_std[[0, 2]], torch.tensor([1.0, 1.0]))
    assert model.score_std[1] > 0  # constant component: clamped, no division by zero


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image_size": 25}, "divisible"),
        ({"decoder_memory": ("position", "position")}, "merged"),
        ({"skip_ops": ("concat",)}, "one entry per level"),
        ({"score_type": "best"}, "score_type"),
        ({"feature_residual": "bank", "feature_bank_images": 0}, "feature_bank_images"),
        ({"feature_residual": "queue"}, "feature_residual"),
    ],
)
def test_invalid_configurations(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _tiny_model(**kwargs)


def test_window_decoder_memory_and_timm_backbone_build():
    model = _tiny_model(
        image_size=32,
        patches_per_side=2,
        merge_levels=0,
        decoder_memory=("window", "window"),
        skip_ops=("concat", "concat"),
    ).train()
    assert model(torch.rand(2, 1, 32, 32)).reconstruction.shape == (2, 1, 32, 32)
    timm_model = _tiny_model(
        image_size=64, patches_per_side=2, backbone="resnet18", decoder_memory=("none", "none"), num_heads=4
    )
    assert timm_model.train()(torch.rand(2, 1, 64, 64)).reconstruction.shape == (2, 1, 64, 64)


def test_lightning_module_contract():
    model = Squid(**TINY)
    assert model.learning_type == LearningType.ONE_CLASS
    assert "max_epochs" not in model.trainer_arguments
    assert model.trainer_arguments["num_sanity_val_steps"] == 0
    assert model.automatic_optimization is False
    assert tuple(model.input_size) == (24, 24)
    assert model.post_processor.enable_threshold_matching is False
    generator_opt, discriminator_opt = model.configure_optimizers()[0]
    generator_params = {id(p) for group in generator_opt.param_groups for p in group["params"]}
    discriminator_params = {id(p) for group in discriminator_opt.param_groups for p in group["params"]}
    assert generator_params == {id(p) for p in model.model.generator.parameters()}
    assert discriminator_params == {id(p) for p in model.model.discriminator.parameters()}


def test_cpu_optimisers_are_fused_and_update_as_the_loop_does():
    torch.manual_seed(0)
    model = Squid(**TINY)
    fused, _ = model.configure_optimizers()[0]
    assert fused.defaults["fused"] is True
    reference, initial = copy.deepcopy(model), copy.deepcopy(model)
    loop = torch.optim.Adam(reference.model.generator.parameters(), **(fused.defaults | {"fused": None}))
    for parameter, twin in zip(model.model.generator.parameters(), reference.model.generator.parameters(), strict=True):
        parameter.grad = torch.randn_like(parameter)
        twin.grad = parameter.grad.clone()
    for _ in range(3):
        fused.step()
        loop.step()
    for parameter, twin in zip(model.model.generator.parameters(), reference.model.generator.parameters(), strict=True):
        torch.testing.assert_close(parameter, twin, rtol=1e-5, atol=1e-6)
    moved = [
        not torch.equal(p, q)
        for p, q in zip(model.parameters(), initial.parameters(), strict=True)
        if p.grad is not None
    ]
    assert moved and all(moved)
    # a device fused Adam does not support falls back to the per-parameter loop
    assert model.to("meta").configure_optimizers()[0][0].defaults["fused"] is None


def test_bf16_mixed_precision_trains_and_predicts(tiny_digits, tmp_path):
    """Lightning's ``precision="bf16-mixed"`` (autocast around the manual-optimisation step) trains the fp32 weights."""
    torch.manual_seed(0)
    model = Squid(**TINY, visualizer=False)
    before = copy.deepcopy(model.model.generator.state_dict())
    engine = _engine(tmp_path, precision="bf16-mixed", enable_model_summary=False)
    engine.fit(model, datamodule=tiny_digits)
    losses = {name: value for name, value in engine.trainer.callback_metrics.items() if name.endswith("loss")}
    assert {"generator_loss", "discriminator_loss"} <= set(losses)
    assert all(torch.isfinite(value) for value in losses.values()), losses
    after = model.model.generator.state_dict()
    assert all(value.dtype == before[name].dtype for name, value in after.items())
    assert any(not torch.equal(value, before[name]) for name, value in after.items() if value.is_floating_point())
    predictions = engine.predict(model, dataloaders=tiny_digits.test_dataloader())
    assert all(
        torch.isfinite(batch.pred_score).all() and torch.isfinite(batch.anomaly_map).all() for batch in predictions
    )


def test_training_updates_queue_and_statistics_only_in_training_step(tiny_digits, tmp_path):
    model = Squid(**TINY, n_critic=2, visualizer=False)
    queue = model.model.generator.inpainting.memory
    initial_slots = queue.slots.clone()
    engine = _engine(tmp_path)  # logger=False, as in a quick CLI run
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine.fit(model, datamodule=tiny_digits)
    assert {"generator_loss", "discriminator_loss"} <= set(engine.trainer.callback_metrics)
    assert not [w for w in caught if "no logger configured" in str(w.message)]
    # 32 images in batches of 8; the generator (and the queue) steps at batches 0 and 2: 16 images
    assert int(queue.pointer) == 16 % queue.num_slots
    assert not torch.allclose(queue.slots, initial_slots)
    assert not torch.allclose(model.model.score_mean, torch.zeros(3))
    assert not torch.allclose(model.model.score_std, torch.ones(3))

    state = {name: value.clone() for name, value in model.state_dict().items()}
    engine.test(model, datamodule=tiny_digits, verbose=False)
    engine.predict(model, datamodule=tiny_digits)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, state[name], msg=name)


def test_checkpoint_round_trip_gives_identical_scores(tiny_digits, tmp_path):
    model = Squid(**TINY, score_type="combined", visualizer=False)
    engine = _engine(tmp_path)
    engine.fit(model, datamodule=tiny_digits)
    path = tmp_path / "squid.ckpt"
    engine.trainer.save_checkpoint(path)
    restored = Squid.load_from_checkpoint(path, visualizer=False)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[name], value, msg=name)
    image = torch.rand(4, 3, 30, 30)
    model.eval()
    restored.eval()
    with torch.no_grad():
        expected, actual = model(image), restored(image)
    torch.testing.assert_close(actual.pred_score, expected.pred_score)
    torch.testing.assert_close(actual.anomaly_map, expected.anomaly_map)
    torch.testing.assert_close(actual.pred_label, expected.pred_label)


def _spy_on_score_statistics(model: Squid) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Record every remembered training batch and the images the score statistics are computed on."""
    remembered, scored = [], []
    remember, update = model._remember, model._update_score_statistics

    def remember_spy(images: torch.Tensor) -> None:
        remembered.append(images.clone())
        remember(images)

    def update_spy() -> None:
        raw_scores = model.model.raw_scores
        model.model.raw_scores = lambda chunk, *args: (scored.append(chunk.clone()), raw_scores(chunk, *args))[1]
        try:
            update()
        finally:
            del model.model.raw_scores

    model._remember, model._update_score_statistics = remember_spy, update_spy
    return remembered, scored


def test_score_statistics_skip_images_still_in_the_queue(tiny_digits, tmp_path):
    """The memory distance of an image whose feature sits in the queue is ~0: such images must not set the stats."""
    model = Squid(**TINY, n_critic=2, score_stats_images=10, visualizer=False)
    remembered, scored = _spy_on_score_statistics(model)
    _engine(tmp_path).fit(model, datamodule=tiny_digits)
    queued = TINY["memory_slots"] * 2  # 6 slots, filled every second batch: the last 12 images may be queued
    seen = torch.cat(remembered)
    assert len(seen) == 32
    torch.testing.assert_close(torch.cat(scored), seen[:-queued][-10:], rtol=0, atol=0)


def test_score_statistics_warn_when_the_epoch_is_shorter_than_the_queue(tiny_digits, tmp_path):
    model = Squid(**TINY | {"memory_slots": 40}, n_critic=1, score_stats_images=10, visualizer=False)
    remembered, scored = _spy_on_score_statistics(model)
    with pytest.warns(UserWarning, match="not longer than the memory queue"):
        _engine(tmp_path).fit(model, datamodule=tiny_digits)
    torch.testing.assert_close(torch.cat(scored), torch.cat(remembered)[-10:], rtol=0, atol=0)


def test_feature_bank_holds_eval_features_of_the_last_images_and_statistics_skip_them(tiny_digits, tmp_path):
    """The bank takes the last ``feature_bank_images`` images; the statistics come from images before them."""
    model = Squid(
        **TINY,
        n_critic=2,
        feature_residual="bank",
        feature_bank_images=16,
        score_type="residual_feature",
        anomaly_map_type="feature",
        score_stats_images=10,
        visualizer=False,
    )
    remembered, scored = _spy_on_score_statistics(model)
    engine = _engine(tmp_path)
    engine.fit(model, datamodule=tiny_digits)
    seen = torch.cat(remembered)
    assert len(seen) == 32
    # the queue may hold the last 12 images, the bank the last 16: the statistics skip the longer of the two
    torch.testing.assert_close(torch.cat(scored), seen[:-16][-10:], rtol=0, atol=0)
    detector = model.model.eval()
    with torch.no_grad():
        bank_features = detector.generator.bottleneck_features(seen[-16:])
        torch.testing.assert_close(detector.feature_bank.slots, F.normalize(bank_features, dim=-1).transpose(0, 1))
        # the feature residual is each patch's distance to the bank, not to the queue
        raw, anomaly_map = detector.raw_scores(seen[:4])
        distance = detector.feature_bank.nearest_distance(detector.generator.bottleneck_features(seen[:4]))
    torch.testing.assert_close(raw[:, 2], distance.amax(dim=1))
    torch.testing.assert_close(anomaly_map[:, 0, ::8, ::8].reshape(4, 9), distance)
    # a bank image is its own nearest neighbour
    assert float(detector.feature_bank.nearest_distance(bank_features).max()) < 1e-5

    path = tmp_path / "bank.ckpt"
    engine.trainer.save_checkpoint(path)
    restored = Squid.load_from_checkpoint(path, visualizer=False)
    torch.testing.assert_close(restored.model.feature_bank.slots, detector.feature_bank.slots)


def test_feature_bank_warns_when_the_epoch_is_not_longer_than_the_bank(tiny_digits, tmp_path):
    model = Squid(**TINY, feature_residual="bank", feature_bank_images=40, score_stats_images=10, visualizer=False)
    with pytest.warns(UserWarning, match="not more than the feature bank holds"):
        _engine(tmp_path).fit(model, datamodule=tiny_digits)


def test_feature_bank_needs_recent_statistics():
    with pytest.raises(ValueError, match="score_statistics='recent'"):
        Squid(**TINY, feature_residual="bank", score_statistics="first_images", visualizer=False)


class _ConvFormatProbe(Callback):
    """Records whether the model's 4-D convolution weights are channels-last at every training and test batch."""

    def __init__(self) -> None:
        self.channels_last: dict[str, list[bool]] = {"train": [], "test": []}

    def _record(self, stage: str, pl_module) -> None:
        weights = [p for p in pl_module.model.parameters() if p.dim() == 4]
        self.channels_last[stage].append(all(w.is_contiguous(memory_format=torch.channels_last) for w in weights))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._record("train", pl_module)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._record("test", pl_module)


def _assert_default_format(model: Squid) -> None:
    """Conv weights in the default format (1x1 or one-input-channel weights are both: the negative check skips them)."""
    weights = [p for p in model.model.parameters() if p.dim() == 4]
    assert all(w.is_contiguous() for w in weights)
    assert not any(w.is_contiguous(memory_format=torch.channels_last) for w in weights if min(w.shape[1:]) > 1)


def test_cpu_fit_and_test_run_channels_last_and_end_contiguous(tiny_digits, tmp_path):
    model = Squid(**TINY, visualizer=False)
    probe = _ConvFormatProbe()
    engine = _engine(tmp_path, callbacks=[probe])
    engine.fit(model, datamodule=tiny_digits)
    _assert_default_format(model)  # back to the default format after each stage, for checkpoints and export
    image = torch.rand(2, 1, 24, 24, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.model.eval()(image)
    engine.test(model, datamodule=tiny_digits)
    _assert_default_format(model)
    assert probe.channels_last["train"] and all(probe.channels_last["train"])
    assert probe.channels_last["test"] and all(probe.channels_last["test"])
    with torch.no_grad():  # the layout changes strides, not what the model computes
        actual = model.model.eval()(image)
    torch.testing.assert_close(actual.pred_score, expected.pred_score)
    torch.testing.assert_close(actual.anomaly_map, expected.anomaly_map)


@pytest.mark.slow
def test_short_training_learns_to_reconstruct_and_flags_missing_cells(tmp_path):
    """40 steps on 24 px DigitAnatomy; bounds outside the measured spread (see ``tests/unit/quick_training.py``).

    The teacher trains the encoder, as in the CPU recipe: without it, seed 4 collapsed at one thread (ratio 0.81,
    "missing" AUROC 0.25) and seed 11 reached only 0.79. With it, measured on 2026-12-05 over seeds 0-11 at 1 and 2
    threads (24 runs, AMD machine): reconstruction error ratio 0.32-0.78, "missing" AUROC 0.75-1.0.
    """
    ratio, missing_auroc = train_briefly(
        lambda: Squid(**QUICK, reconstruction_weight=1.0, scheduler_t_max=2, teacher_trains_encoder=True), tmp_path
    )
    assert ratio < 0.9
    assert missing_auroc > 0.6


def test_feature_anomaly_map_is_the_patch_level_memory_distance():
    model = _tiny_model(anomaly_map_type="feature", score_type="residual_feature").eval()
    image = torch.rand(2, 1, 24, 24)
    with torch.no_grad():
        raw, anomaly_map = model.raw_scores(image)
        queries = model.generator(image, teacher=False).memory_queries
        distance = model.generator.inpainting.memory.nearest_distance(queries)
    # each 8x8 patch of the map holds its position's distance
    torch.testing.assert_close(anomaly_map[:, 0, ::8, ::8].reshape(2, 9), distance)
    torch.testing.assert_close(raw[:, 2], distance.amax(dim=1))


def test_per_image_discriminator_scoring_is_the_authors_train_mode_one_image_at_a_time():
    """The papers' score: batch-norm statistics of each image alone, no buffer written, any batch size."""
    model = _tiny_model(image_size=48, discriminator_scoring="per_image").eval()
    images = torch.rand(3, 1, 48, 48)
    state = {name: value.clone() for name, value in model.state_dict().items()}
    with torch.no_grad():
        batch = model(images).pred_score
        singles = torch.cat([model(image[None]).pred_score for image in images])
        reconstruction = model.generator(images, teacher=False).reconstruction
        authors = copy.deepcopy(model.discriminator).train()  # what the authors' alert.py does
        train_mode = torch.cat([-authors(image[None]) for image in reconstruction])
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, state[name], rtol=0, atol=0, msg=name)
    torch.testing.assert_close(batch, singles)
    torch.testing.assert_close(batch, train_mode)
    running = _tiny_model(image_size=48).eval()
    running.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert not torch.allclose(running(images).pred_score, batch)


def test_per_image_scoring_needs_a_discriminator_map_larger_than_one_pixel():
    with pytest.raises(ValueError, match="last map is 1 x 1"):
        _tiny_model(discriminator_scoring="per_image")  # 24 px: the fifth stage is 1 x 1
    with pytest.raises(ValueError, match="discriminator_scoring"):
        _tiny_model(discriminator_scoring="train")


class _RecordingDataset(torch.utils.data.Dataset):
    """Training images that record the order they are read in and differ at every read (an augmentation)."""

    def __init__(self, size: int = 10) -> None:
        self.images = torch.rand(size, 3, 20, 20)
        self.reads: list[int] = []

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> SimpleNamespace:
        self.reads.append(index)
        return SimpleNamespace(image=self.images[index] + 0.01 * len(self.reads))


def test_first_images_statistics_are_the_first_training_images_as_training_sees_them():
    """score_statistics='first_images': dataset order, augmented, pre-processed, scored in eval mode."""
    model = Squid(**TINY, score_statistics="first_images", score_stats_images=4, visualizer=False)
    dataset = _RecordingDataset()
    model._trainer = SimpleNamespace(
        train_dataloader=torch.utils.data.DataLoader(dataset, shuffle=True),
        strategy=SimpleNamespace(broadcast=lambda tensor, src=0: tensor),
    )
    model.model.train()
    model._update_score_statistics()
    assert dataset.reads == [0, 1, 2, 3]
    augmented = torch.stack([dataset.images[i] + 0.01 * (i + 1) for i in range(4)])
    expected = model.model.reduce_channels(model.pre_processor.transform(augmented))
    again = model.first_training_images()  # read again: a new augmentation of the same images
    assert dataset.reads[4:] == [0, 1, 2, 3]
    augmented_again = torch.stack([dataset.images[i] + 0.01 * (i + 5) for i in range(4)])
    torch.testing.assert_close(again, model.model.reduce_channels(model.pre_processor.transform(augmented_again)))
    model.model.eval()
    with torch.no_grad():
        raw, _ = model.model.raw_scores(expected)
    torch.testing.assert_close(model.model.score_mean, raw.mean(dim=0))
    torch.testing.assert_close(model.model.score_std, raw.std(dim=0, correction=0).clamp_min(1e-8))
    assert model.model.training is False  # restored to the mode it was in (eval here)
    model._trainer.train_dataloader = torch.utils.data.DataLoader(_RecordingDataset(size=3))
    with pytest.raises(ValueError, match="holds 3"):
        model.first_training_images()
    with pytest.raises(ValueError, match="score_statistics"):
        Squid(**TINY, score_statistics="last")


def test_first_images_statistics_in_a_fit(tiny_digits, tmp_path):
    model = Squid(**TINY, score_statistics="first_images", score_stats_images=5, visualizer=False)
    _engine(tmp_path).fit(model, datamodule=tiny_digits)
    images = torch.stack([tiny_digits.train_data[index].image for index in range(5)])
    model.eval()
    with torch.no_grad():
        raw, _ = model.model.raw_scores(model.model.reduce_channels(model.pre_processor.transform(images)))
    torch.testing.assert_close(model.model.score_mean, raw.mean(dim=0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.model.score_std, raw.std(dim=0, correction=0), rtol=1e-4, atol=1e-5)
