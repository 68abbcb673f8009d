"""Converting checkpoints of the authors' SQUID/SimSID code: presets, anomalib checkpoints, the command, errors.

The authors' state dicts here are the equivalence fixtures' (keys and shapes their code wrote, deterministic
values), so no checkout of their code is needed; that the converted models compute what theirs compute is
``test_authors_equivalence.py``.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from anomalib.engine import Engine

from anomalib_medical.data import DigitAnatomy
from anomalib_medical.models import SimSID, Squid
from anomalib_medical.models.components.authors_checkpoint import (
    AUTHORS_PRESETS,
    load_authors_checkpoint,
    main,
    save_anomalib_checkpoint,
)

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "make_authors_fixtures", REPO / "benchmarks" / "reference" / "make_authors_fixtures.py"
)
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)


def _authors_state(name: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    meta = json.loads(str(np.load(REPO / "tests" / "fixtures" / "authors" / f"{name}.npz")["meta"]))
    return reference.fixture_state(meta["generator_shapes"]), reference.fixture_state(meta["discriminator_shapes"])


def test_squid_preset_gives_an_anomalib_checkpoint_that_test_loads(tmp_path):
    generator, discriminator = _authors_state("squid_digit")
    module = load_authors_checkpoint(generator, discriminator, preset="squid_digit_best", visualizer=False)
    assert isinstance(module, Squid)
    hparams = dict(module.hparams)
    # derived from the shapes
    assert hparams["image_size"] == 48
    assert hparams["patches_per_side"] == 3
    assert hparams["levels"] == 3
    assert hparams["base_channels"] == 4
    assert list(hparams["decoder_memory"]) == ["position", "position", "none"]
    assert list(hparams["skip_ops"]) == ["concat", "concat", "none"]
    # from the preset: the authors' configs/digit_best.py and the papers' protocol
    assert hparams["merge_levels"] == 1
    assert hparams["top_k"] == 4  # shrink_thres = 5 keeps 4 weights
    assert hparams["discriminator_scoring"] == "per_image"
    assert hparams["score_statistics"] == "first_images"
    assert hparams["score_stats_images"] == 101
    torch.testing.assert_close(
        module.model.discriminator.classifier.weight, discriminator["regressor.weight"], rtol=0, atol=0
    )
    queue = torch.stack([generator[f"inpaint_block.memory.{p}.memMatrix"] for p in range(9)])
    torch.testing.assert_close(module.model.generator.inpainting.memory.slots, queue, rtol=0, atol=0)
    assert int(module.model.generator.inpainting.memory.pointer) == 0

    path = save_anomalib_checkpoint(module, tmp_path / "squid.ckpt")
    restored = Squid.load_from_checkpoint(path, visualizer=False)
    for key, value in module.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[key], value, rtol=0, atol=0, equal_nan=True, msg=key)

    datamodule = DigitAnatomy(
        root=tmp_path / "digits", cell_size=16, samples_per_type=2, train_size=8, train_batch_size=4, eval_batch_size=8
    )
    engine = Engine(logger=False, default_root_dir=tmp_path / "results", accelerator="cpu", devices=1)
    fresh = Squid(**{key: value for key, value in hparams.items() if not key.startswith("_")})
    results = engine.test(fresh, datamodule=datamodule, ckpt_path=path, verbose=False)
    assert 0.0 <= results[0]["image_AUROC"] <= 1.0
    for key, value in module.model.state_dict().items():
        torch.testing.assert_close(fresh.model.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_command_converts_simsid_files(tmp_path, capsys):
    generator, discriminator = _authors_state("simsid_queue")
    torch.save(generator, tmp_path / "model.pth")
    torch.save({f"module.{key}": value for key, value in discriminator.items()}, tmp_path / "discriminator.pth")
    output = tmp_path / "out" / "simsid.ckpt"
    main(
        [
            "--generator",
            str(tmp_path / "model.pth"),
            "--discriminator",
            str(tmp_path / "discriminator.pth"),
            "--preset",
            "simsid_zhang_dev",
            "--set",
            "score_stats_images=11",
            "--output",
            str(output),
        ]
    )
    assert "Wrote SimSID checkpoint" in capsys.readouterr().out
    restored = SimSID.load_from_checkpoint(output, visualizer=False)
    assert restored.hparams["memory_type"] == "queue"
    assert restored.hparams["neighbour_attention"] is True
    assert restored.hparams["score_stats_images"] == 11
    assert list(restored.hparams["discriminator_channels"]) == [16, 32, 64, 128, 256]
    torch.testing.assert_close(
        restored.model.discriminator.features[0].weight, discriminator["conv_model.0.weight"], rtol=0, atol=0
    )


def test_simsid_matrix_without_neighbour_attention_drops_the_unused_transformer():
    generator, discriminator = _authors_state("simsid_matrix")
    assert any(key.startswith("inpaint_block.attention.") for key in generator)  # built, never called
    module = load_authors_checkpoint(
        generator, discriminator, preset="simsid_zhang_dev", memory_type="matrix", neighbour_attention=False
    )
    assert module.model.generator.inpainting.transformer is None
    slots = module.model.generator.inpainting.memory.slots
    assert isinstance(slots, torch.nn.Parameter)
    torch.testing.assert_close(slots[1], generator["inpaint_block.memory.1.memMatrix"], rtol=0, atol=0)


def test_bad_checkpoints_and_arguments_are_named(tmp_path):
    generator, discriminator = _authors_state("squid_zhang")
    with pytest.raises(ValueError, match=r"no counterpart in our Squid: extra_block\.weight"):
        load_authors_checkpoint(generator | {"extra_block.weight": torch.zeros(1)}, discriminator, family="Squid")
    incomplete = {key: value for key, value in generator.items() if not key.startswith("teacher_out.")}
    with pytest.raises(ValueError, match=r"missing from the checkpoint: generator\.teacher\.out_conv\.weight"):
        load_authors_checkpoint(incomplete, discriminator, family="Squid")
    with pytest.raises(ValueError, match="of another shape"):
        load_authors_checkpoint(generator, discriminator, family="Squid", memory_slots=7)
    with pytest.raises(ValueError, match="Unknown preset 'squid_zhang'"):
        load_authors_checkpoint(generator, discriminator, preset="squid_zhang")
    with pytest.raises(ValueError, match="is a Squid configuration"):
        load_authors_checkpoint(generator, discriminator, preset="squid_zhang_best", family="SimSID")
    with pytest.raises(ValueError, match="Name the authors' configuration"):
        load_authors_checkpoint(generator, discriminator)
    with pytest.raises(FileNotFoundError, match=r"model\.pth does not exist"):
        load_authors_checkpoint(tmp_path / "model.pth", discriminator, family="Squid")
    torch.save({"epoch": 3}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"other\.pth is not a state dict"):
        load_authors_checkpoint(tmp_path / "other.pth", discriminator, family="Squid")
    assert {family for family, _ in AUTHORS_PRESETS.values()} == {"Squid", "SimSID"}


PRESET_RECIPES = {
    "squid_zhang_best": "squid_chest_xray.yaml",
    "squid_chexpert_best": "squid_chexpert.yaml",
    "squid_digit_best": "squid_digit_anatomy_paper.yaml",
    "simsid_zhang_dev": "simsid_chest_xray_paper.yaml",
    "simsid_chexpert_best": "simsid_chexpert.yaml",
    "simsid_covidx_dev": "simsid_covidx.yaml",
}


@pytest.mark.parametrize("preset", sorted(PRESET_RECIPES))
def test_each_preset_agrees_with_its_recipe(preset):
    """`anomalib test --config <recipe> --ckpt_path <converted>` needs the preset's arguments to be the recipe's."""
    assert set(PRESET_RECIPES) == set(AUTHORS_PRESETS)
    family, arguments = AUTHORS_PRESETS[preset]
    recipe = yaml.safe_load((REPO / "configs" / PRESET_RECIPES[preset]).read_text())
    assert recipe["model"]["class_path"] == f"anomalib_medical.models.{family}"
    written = recipe["model"]["init_args"]
    differing = {key: (value, written.get(key)) for key, value in arguments.items() if written.get(key) != value}
    assert not differing, f"{preset} vs configs/{PRESET_RECIPES[preset]} (preset, recipe): {differing}"
