"""Our Squid and SimSID compute what the authors' code computes (fixtures of ``benchmarks/reference``).

Each fixture holds numbers the authors' SQUID or SimSID code produced at a small configuration
(``make_authors_fixtures.py``): eval outputs, their anomaly score, and the losses, parameters and memory queue after
3 steps of their training loop, all from weights :func:`fixture_state` generates. Here those weights go through
:func:`load_authors_checkpoint` into our model, and our eval forward and our ``training_step`` must reproduce the
numbers: eval outputs within 1e-5 (our float32 model against their float64 run), losses and parameters after 3
steps within 1e-4 relative (both in float64, where Adam's first, sign-like updates are not changed by rounding).

Two accidents of the authors' code are reproduced explicitly rather than changed in ours: SQUID's training loop runs
the generator twice per generator step (once in its discriminator step), which moves the generator's batch-norm
running statistics twice; SimSID adds ``1e-8`` to the standard deviation of its score statistics.
"""

import importlib.util
import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from anomalib_medical.models.components.authors_checkpoint import load_authors_checkpoint

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "authors"
NAMES = ("squid_zhang", "squid_digit", "simsid_queue", "simsid_matrix")

_spec = importlib.util.spec_from_file_location(
    "make_authors_fixtures", REPO / "benchmarks/reference/make_authors_fixtures.py"
)
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)


def _fixture(name: str) -> tuple[dict, np.lib.npyio.NpzFile]:
    data = np.load(FIXTURES / f"{name}.npz")
    return json.loads(str(data["meta"])), data


def _model(meta: dict, **arguments):
    """Our Lightning model holding the fixture's initial weights, converted from the authors' state dicts."""
    return load_authors_checkpoint(
        reference.fixture_state(meta["generator_shapes"]),
        reference.fixture_state(meta["discriminator_shapes"]),
        family=meta["config"]["family"],
        **meta["config"]["ours"],
        **arguments,
    )


def _close(actual: torch.Tensor, expected: np.ndarray, atol: float) -> float:
    error = (actual.detach().double() - torch.from_numpy(np.asarray(expected)).double()).abs().max().item()
    assert error <= atol, f"max abs error {error:.3g} > {atol}"
    return error


@pytest.mark.parametrize("name", NAMES)
def test_eval_outputs_match_the_authors(name):
    meta, data = _fixture(name)
    module = _model(meta)
    model = module.model.eval()
    images = reference.unit_images(data["input"])[0]
    with torch.no_grad():
        output = model.generator(images)
        _close(output.reconstruction, data["eval/reconstruction"], 1e-5)
        _close(output.teacher_reconstruction, data["eval/teacher_reconstruction"], 1e-5)
        _close(model.discriminator(output.reconstruction, per_image=True), data["eval/logits_per_image"], 1e-5)
        _close(model.discriminator(output.reconstruction), data["eval/logits_running"], 1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_anomaly_score_with_the_papers_protocol_matches_the_authors(name):
    """Per-image discriminator scoring and the first ``early_stop + 1`` training images' statistics (float64)."""
    meta, data = _fixture(name)
    module = _model(meta, discriminator_scoring="per_image").double()
    model = module.model.eval()
    images = reference.unit_images(data["input"]).double()
    with torch.no_grad():
        raw, _ = model.raw_scores(images.flatten(0, 1)[: meta["config"]["early_stop"] + 1])
        model.set_score_statistics(raw)
        _close(-model.score_mean[0], data["eval/stats_mean"], 1e-9)
        if meta["config"]["family"] == "SimSID":
            model.score_std += 1e-8  # SimSID's alert.py divides by std + 1e-8
        score = torch.sigmoid(model(images[0]).pred_score)  # theirs is 1 - sigmoid((logit - mean) / std)
    _close(score, data["eval/score"], 1e-5)


def _train_three_steps(module, batches: torch.Tensor, family: str) -> list[dict[str, float]]:
    """Our ``training_step`` on the fixture's batches, outside a Trainer (optimisers from the module)."""
    generator_opt, discriminator_opt = module.configure_optimizers()[0]
    module.optimizers = lambda: (generator_opt, discriminator_opt)
    module.manual_backward = lambda loss: loss.backward()
    module.log_dict = lambda *args, **kwargs: None
    module._trainer = types.SimpleNamespace(num_training_batches=len(batches) + 1)  # no score statistics here
    module._gather = lambda tensor: tensor
    module.model.train()
    losses = []
    for step, image in enumerate(batches):
        if family == "Squid" and step % module.n_critic == 0:
            with torch.no_grad():  # SQUID's extra generator forward: batch-norm statistics only
                module.model.generator(image)
        logs = module.training_step(types.SimpleNamespace(image=image), step)
        losses.append({name.removeprefix("generator_").removesuffix("_loss"): float(v) for name, v in logs.items()})
    return losses


@pytest.mark.parametrize("name", NAMES)
def test_three_training_steps_match_the_authors(name):
    meta, data = _fixture(name)
    family = meta["config"]["family"]
    module = _model(meta).double()
    before = {key: value.clone() for key, value in module.model.state_dict().items()}
    losses = _train_three_steps(module, reference.unit_images(data["input"]).double(), family)

    for ours, theirs in zip(losses, meta["losses"], strict=True):
        assert set(ours) == set(theirs)
        for term, value in theirs.items():
            assert ours[term] == pytest.approx(value, rel=1e-4), term
    compared = 0
    for key, value in module.model.state_dict().items():
        if key == "generator.inpainting.memory.pointer":
            continue
        index = reference.fingerprint_index(key, value.numel())
        expected = torch.from_numpy(data[f"after/{key}"]).double()
        actual = value.flatten()[index].double()
        assert torch.all((actual - expected).abs() <= 1e-4 * expected.abs() + 1e-12), key
        if value.is_floating_point():
            update = (value - before[key]).norm().item()
            assert update == pytest.approx(float(data[f"update/{key}"]), rel=1e-4, abs=1e-9), key
        compared += 1
    assert compared == len(module.model.state_dict()) - ("queue" in data)
    if "queue" in data:
        memory = module.model.generator.inpainting.memory
        torch.testing.assert_close(memory.slots, torch.from_numpy(data["queue"]), rtol=1e-6, atol=1e-9)
        assert int(memory.pointer) == int(data["queue_pointer"])
