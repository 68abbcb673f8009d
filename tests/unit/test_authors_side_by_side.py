"""Argument checks and the table of ``benchmarks/authors_side_by_side.py`` (no authors' checkout needed)."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
_spec = importlib.util.spec_from_file_location("authors_side_by_side", REPO / "benchmarks/authors_side_by_side.py")
side_by_side = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(side_by_side)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "squid.py").write_text("")
    return tmp_path


def test_options_pick_the_families_whose_checkout_is_given(checkout):
    options = side_by_side.parse_args(["--squid", str(checkout), "--config", "zhang", "--steps", "4"])
    assert options.families == ["Squid"]
    assert options.steps == 4
    both = side_by_side.parse_args(["--squid", str(checkout), "--simsid", str(checkout), "--config", "zhang"])
    assert both.families == ["Squid", "SimSID"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--config", "digit"], "needs --squid"),
        (["--simsid", "{checkout}", "--config", "digit"], "needs --squid"),  # SimSID has no DigitAnatomy config
        (["--squid", "{checkout}/missing"], "is not a checkout"),
        (["--squid", "{checkout}", "--config", "zhang", "--steps", "3"], "multiple of n_critic=2"),
        (["--squid", "{checkout}", "--threads", "0"], "--threads"),
    ],
)
def test_bad_options_are_named(checkout, capsys, arguments, message):
    with pytest.raises(SystemExit):
        side_by_side.parse_args([argument.format(checkout=checkout) for argument in arguments])
    assert message in capsys.readouterr().err


def test_table_gives_the_speed_up_of_ours_in_both_units():
    table = side_by_side.format_table(
        [("training", 2.0, 3.0, "images/s"), ("inference, batch 1", 200.0, 100.0, "ms/image")]
    ).splitlines()
    assert table[0].startswith("| measure | authors | ours |")
    assert table[2] == "| training | 2 | 3 | images/s | 1.50x |"
    assert table[3] == "| inference, batch 1 | 200 | 100 | ms/image | 2.00x |"


def test_bf16_mixed_runs_ours_under_bfloat16_autocast(checkout):
    assert side_by_side.parse_args(["--squid", str(checkout)]).precision == "32"
    assert side_by_side.parse_args(["--squid", str(checkout), "--precision", "bf16-mixed"]).precision == "bf16-mixed"
    layer = torch.nn.Linear(3, 2)
    run = side_by_side.in_bfloat16(lambda x: layer(x), torch.device("cpu"))
    assert run(torch.ones(1, 3)).dtype == torch.bfloat16
    assert layer(torch.ones(1, 3)).dtype == torch.float32  # autocast ends with the call


def test_compile_compiles_ours_in_place_and_keeps_its_warm_up_untimed(checkout, capsys):
    assert not side_by_side.parse_args(["--squid", str(checkout)]).compile
    assert side_by_side.parse_args(["--squid", str(checkout), "--compile", "--warmup", "1"]).compile
    with pytest.raises(SystemExit):
        side_by_side.parse_args(["--squid", str(checkout), "--config", "zhang", "--compile", "--warmup", "1"])
    assert "--compile needs --warmup >= n_critic=2" in capsys.readouterr().err
    module = torch.nn.Module()
    module.model = torch.nn.Module()
    module.model.generator, module.model.discriminator = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
    keys = set(module.state_dict())
    side_by_side.compile_for_training(module)
    assert module.model.generator._compiled_call_impl is not None
    assert module.model.discriminator._compiled_call_impl is not None
    assert set(module.state_dict()) == keys
    scoring = side_by_side.our_scoring(module, torch.device("cpu"), compile_model=True)
    assert scoring.__wrapped__._compiled_call_impl is not None
    assert not scoring.__wrapped__.training


def test_our_cpu_scoring_runs_channels_last_as_the_lightning_module():
    module = torch.nn.Module()
    module.model = torch.nn.Conv2d(4, 4, 3)
    scoring = side_by_side.our_scoring(module, torch.device("cpu"))
    weight = scoring.__wrapped__.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    assert module.model.weight.is_contiguous()  # a copy: the module is left as it is


def test_work_counts_convolutions_and_products_forward_and_backward():
    layer = torch.nn.Linear(8, 4, bias=False)
    image = torch.ones(3, 8)
    assert side_by_side.count_gflop(lambda: layer(image)) * 1e9 == 2 * 3 * 8 * 4
    # backward: the weight's gradient (the input needs none), one more product of the same size
    assert side_by_side.count_gflop(lambda: layer(image).sum().backward()) * 1e9 == 2 * (2 * 3 * 8 * 4)


def test_openvino_rows_need_the_cpu(checkout, capsys):
    assert side_by_side.parse_args(["--squid", str(checkout), "--openvino"]).openvino
    with pytest.raises(SystemExit):
        side_by_side.parse_args(["--squid", str(checkout), "--openvino", "--device", "cuda"])
    assert "--openvino times the CPU deployment" in capsys.readouterr().err


def test_openvino_scoring_runs_our_export_on_grey_images(tmp_path):
    from anomalib_medical.models import Squid

    torch.manual_seed(0)
    module = Squid(
        image_size=24, patches_per_side=3, levels=2, base_channels=4, skip_ops=("concat", "none"), merge_levels=1,
        memory_slots=6, top_k=2, decoder_memory=("position", "none"), decoder_memory_slots=5, num_heads=2,
        visualizer=False,
    )  # fmt: skip
    images = torch.rand(2, 1, 24, 24)
    outputs = side_by_side.our_openvino_scoring(module, threads=1, precision="32", directory=tmp_path)(images)
    with torch.no_grad():
        expected = module.model.eval()(images)
    scores = next(value for key, value in outputs.items() if "pred_score" in key.names)
    torch.testing.assert_close(torch.from_numpy(scores), expected.pred_score, rtol=1e-3, atol=1e-4)
