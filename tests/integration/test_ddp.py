"""Squid and SimSID under DDP: 2 CPU processes (gloo, fork) end with identical memories and parameters."""

import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import assert_succeeded, run_command

pytestmark = pytest.mark.slow

SLOTS = 40
SCRIPT = f"""
import sys
from pathlib import Path

import torch
from anomalib.engine import Engine
from lightning.pytorch import Callback
from lightning.pytorch.strategies import DDPStrategy

from anomalib_medical.data import DigitAnatomy
from anomalib_medical.models import SimSID, Squid


class SaveState(Callback):
    def on_train_end(self, trainer, pl_module):
        model = pl_module.model
        state = {{
            "parameters": {{name: value.detach().clone() for name, value in model.named_parameters()}},
            "buffers": {{name: value.detach().clone() for name, value in model.named_buffers()}},
        }}
        torch.save(state, Path(sys.argv[1]) / f"rank{{trainer.global_rank}}.pt")


if __name__ == "__main__":
    root, model_class = Path(sys.argv[1]), {{"Squid": Squid, "SimSID": SimSID}}[sys.argv[2]]
    torch.manual_seed(0)
    datamodule = DigitAnatomy(
        root=root / "digits", cell_size=8, samples_per_type=4, train_size=32, train_batch_size=8, eval_batch_size=10
    )
    model = model_class(
        image_size=24, patches_per_side=3, levels=2, base_channels=4, skip_ops=["concat", "none"], merge_levels=1,
        memory_slots={SLOTS}, top_k=2, decoder_memory=["position", "none"], decoder_memory_slots=5, num_heads=2,
        n_critic=1, visualizer=False,
    )
    strategy = DDPStrategy(start_method="fork", find_unused_parameters=True, process_group_backend="gloo")
    engine = Engine(
        accelerator="cpu", devices=2, strategy=strategy, max_epochs=1, logger=False,
        default_root_dir=root / "results", enable_progress_bar=False, callbacks=[SaveState()],
    )
    engine.fit(model, datamodule=datamodule)
"""


@pytest.mark.parametrize("model_name", ["Squid", "SimSID"])
def test_two_process_ddp_keeps_memories_and_parameters_identical(tmp_path: Path, model_name: str) -> None:
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    assert_succeeded(run_command([sys.executable, script, tmp_path, model_name], timeout=900))
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")

    buffers0, buffers1 = rank0["buffers"], rank1["buffers"]
    assert buffers0.keys() == buffers1.keys()
    if model_name == "Squid":
        # every rank enqueued the features of both ranks: 2 ranks x 2 batches x 8 images = 32 queries
        assert int(buffers0["generator.inpainting.memory.pointer"]) == 32 % SLOTS
    else:  # SimSID's memory matrix is a parameter, kept identical by DDP's gradient averaging
        assert "generator.inpainting.memory.slots" in rank0["parameters"]
    # batch-norm running statistics are per rank (DDP broadcasts rank 0's before each forward); all other state
    # (queues, pointers, score statistics) must agree
    model_state = [name for name in buffers0 if not name.rsplit(".", 1)[-1].startswith(("running_", "num_batches"))]
    assert {"score_mean", "score_std"} <= set(model_state)
    for name in model_state:
        torch.testing.assert_close(buffers0[name], buffers1[name], rtol=0, atol=0, msg=name)
    assert not torch.equal(buffers0["score_mean"], torch.zeros_like(buffers0["score_mean"]))

    assert rank0["parameters"].keys() == rank1["parameters"].keys()
    for name, value in rank0["parameters"].items():
        torch.testing.assert_close(value, rank1["parameters"][name], rtol=0, atol=0, msg=name)
