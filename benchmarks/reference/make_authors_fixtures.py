"""Write the equivalence fixtures of ``tests/unit/test_authors_equivalence.py`` by running the authors' code.

Usage (CPU, about a minute)::

    python benchmarks/reference/make_authors_fixtures.py --squid /path/to/SQUID --simsid /path/to/SimSID \
        --out tests/fixtures/authors

``--squid`` / ``--simsid`` are checkouts of github.com/tiangexiang/SQUID and github.com/MrGiovanni/SimSID. Their
models are built at small sizes through their own constructors (``models.squid.AE``, ``SimpleDiscriminator``,
SimSID's config objects) on the CPU (their ``.cuda()`` calls are turned into no-ops), and for each configuration
of :data:`CONFIGS` one ``<name>.npz`` is written holding:

- ``meta``: JSON with the configuration, the authors' state-dict keys and shapes, our constructor arguments and the
  authors' losses of every training step;
- ``input``: the fixed training batches ``(steps, B, 1, H, W)``, 8-bit (:func:`unit_images` maps them to
  ``[0, 1]``; the authors' models see ``2x - 1`` where their configuration normalises to ``[-1, 1]``);
- ``eval/*``: eval-mode outputs on the first batch: reconstruction and teacher reconstruction (output range), the
  discriminator's logits of the reconstruction in the authors' scoring mode (train mode, one image per batch) and
  in eval mode, and the authors' anomaly score ``1 - sigmoid((logit - mean) / std)`` with mean/std from their
  ``GanAlert.collect`` over the first ``early_stop + 1`` images of the training set in dataset order;
- ``after/*``, ``update/*``: after 3 steps of the authors' training loop, per tensor of our model
  (keys in our naming, via :func:`~anomalib_medical.models.components.authors_checkpoint.load_authors_checkpoint`):
  the values at :func:`fingerprint_index`, and the L2 norm of the update (after minus before);
- ``queue`` / ``queue_pointer``: the in-painting memory queue after the 3 steps (queue configurations).

Initial weights are not stored: :func:`fixture_state` generates them from the keys, shapes and a seed (the tests
call it too), and they are loaded strictly into the authors' modules. Training is deterministic: mask ratios 1,
dropout 0. Everything runs in float64: in float32 the rounding of gradients near zero (and of the mathematically
zero gradients of convolution biases that a batch norm follows) changes the sign of about 1 % of Adam's first
updates, which are about ``lr * sign(gradient)``, so float32 runs of the same computation differ by ``2 * lr``
there. The training loop is the authors' ``gan_train`` step sequence, run with their modules, optimisers and queue
``update()``: SQUID runs the generator once in its discriminator step and again for its generator step (their
``train_discriminator`` calls ``model(img)``), SimSID once per batch (and passes ``fadein_weights=[0, 0, 1, 1]``).
Nothing of the authors' code is copied into this repository; only numbers it produced are.
"""

import argparse
import copy
import json
import math
import sys
import types
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

SEED = 20240
STEPS = 3
BATCH = 4
SAMPLED = 64  # values kept per tensor larger than this

#: name -> authors' repository, their constructor settings, our constructor arguments.
CONFIGS: dict[str, dict[str, Any]] = {
    "squid_zhang": {
        "family": "Squid",
        "image_size": 64,
        "features_root": 4,
        "num_patch": 2,
        "level": 4,
        "initial_combine": 2,
        "num_slots": 6,
        "mem_num_slots": 10,
        "ops": ["concat", "concat", "none", "none"],
        # SQUID lists decoder memories finest level first; multipliers give the window slot size at 64 px
        "decoder_memory": [None, None, ("MemoryMatrixBlock", 16), ("MemoryMatrixBlock", 4)],
        "weights": {"t_w": 0.01, "recon_w": 10.0, "dist_w": 0.001, "g_w": 0.005, "d_w": 0.005},
        "n_critic": 2,
        "early_stop": 5,
        "ours": {"merge_levels": 2, "top_k": 4, "mask_ratio": 1.0, "n_critic": 2},
    },
    "squid_digit": {
        "family": "Squid",
        "image_size": 48,
        "features_root": 4,
        "num_patch": 3,
        "level": 3,
        "initial_combine": 1,
        "num_slots": 6,
        "mem_num_slots": 10,
        "ops": ["concat", "concat", "none"],
        "decoder_memory": [None, ("MemoryMatrixBlockV3", 64), ("MemoryMatrixBlockV3", 16)],
        "weights": {"t_w": 0.01, "recon_w": 1.0, "dist_w": 0.001, "g_w": 0.005, "d_w": 0.005},
        "n_critic": 1,
        "early_stop": 5,
        "ours": {"merge_levels": 1, "top_k": 4, "mask_ratio": 1.0, "n_critic": 1, "reconstruction_weight": 1.0},
    },
    "simsid_queue": {
        "family": "SimSID",
        "image_size": 64,
        "features_root": 4,
        "num_patch": 2,
        "level": 4,
        "initial_combine": 2,
        "num_slots": 6,
        "mem_num_slots": 10,
        "ops": ["concat", "concat", "none", "none"],
        "decoder_memory": ["V1", "V1", "none", "none"],
        "use_memory_queue": True,
        "use_inpaint": True,
        "weights": {"t_w": 0.01, "recon_w": 10.0, "dist_w": 0.001, "g_w": 0.005, "d_w": 0.005},
        "n_critic": 2,
        "early_stop": 5,
        "ours": {
            "merge_levels": 2,
            "top_k": 4,
            "memory_type": "queue",
            "neighbour_attention": True,
            "mask_ratio": 1.0,
            "decoder_mask_ratio": 1.0,
            "activation": "tanh",
            "n_critic": 2,
        },
    },
    "simsid_matrix": {
        "family": "SimSID",
        "image_size": 64,
        "features_root": 4,
        "num_patch": 2,
        "level": 4,
        "initial_combine": 2,
        "num_slots": 10,
        "mem_num_slots": 10,
        "ops": ["concat", "concat", "none", "none"],
        "decoder_memory": ["V1", "V1", "none", "none"],
        "use_memory_queue": False,
        "use_inpaint": False,
        "weights": {"t_w": 0.01, "recon_w": 10.0, "dist_w": 0.001, "g_w": 0.005, "d_w": 0.005},
        "n_critic": 2,
        "early_stop": 5,
        "ours": {
            "merge_levels": 2,
            "top_k": 4,
            "memory_type": "matrix",
            "neighbour_attention": False,
            "mask_ratio": 1.0,
            "decoder_mask_ratio": 1.0,
            "activation": "tanh",
            "n_critic": 2,
        },
    },
}
LR = 1e-4  # generator and discriminator (both papers)


def fixture_state(shapes: Mapping[str, Sequence[int]], seed: int = SEED) -> dict[str, torch.Tensor]:
    """Deterministic weights for the authors' state-dict keys (numpy's PCG64, the same on every machine).

    Running statistics: mean ~ N(0, 0.1), variance in [0.5, 1.5); 1-D weights 1 + N(0, 0.1) and biases N(0, 0.1);
    other tensors (convolutions, linear layers, memories) U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as torch initialises.
    """
    state = {}
    for key, shape in shapes.items():
        shape = tuple(shape)
        rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros(shape, dtype=torch.long)
            continue
        if key.endswith("running_var"):
            value = 0.5 + rng.random(shape)
        elif key.endswith("running_mean"):
            value = 0.1 * rng.standard_normal(shape)
        elif len(shape) == 1 and key.endswith("weight"):
            value = 1.0 + 0.1 * rng.standard_normal(shape)
        elif len(shape) == 1:
            value = 0.1 * rng.standard_normal(shape)
        else:
            bound = 1.0 / math.sqrt(math.prod(shape[1:]))
            value = rng.uniform(-bound, bound, shape)
        state[key] = torch.from_numpy(value.astype(np.float32))
    return state


def fixture_inputs(config: Mapping[str, Any], seed: int = SEED) -> np.ndarray:
    """Training batches ``(STEPS, BATCH, 1, H, W)`` of 8-bit images: smooth random fields plus noise."""
    size = config["image_size"]
    rng = np.random.default_rng([seed, zlib.crc32(b"input"), size])
    coarse = torch.from_numpy(rng.random((STEPS * BATCH, 1, size // 8, size // 8)).astype(np.float32))
    fine = torch.from_numpy(rng.random((STEPS * BATCH, 1, size, size)).astype(np.float32))
    smooth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    image = (0.8 * smooth + 0.2 * fine).reshape(STEPS, BATCH, 1, size, size)
    return (image * 255).round().to(torch.uint8).numpy()


def unit_images(images: np.ndarray) -> torch.Tensor:
    """8-bit fixture images as float ``[0, 1]``, the same values for the authors' models and ours."""
    return torch.from_numpy(images).float() / 255.0


def fingerprint_index(key: str, numel: int, seed: int = SEED) -> np.ndarray:
    """Flat indices of the values of tensor ``key`` kept in the fixture (all of a small tensor)."""
    if numel <= SAMPLED:
        return np.arange(numel)
    rng = np.random.default_rng([seed, zlib.crc32(key.encode()), 1])
    return np.sort(rng.choice(numel, SAMPLED, replace=False))


def _load_authors(repository: Path) -> types.SimpleNamespace:
    """Import the authors' ``models`` package (and ``alert``) of one checkout, CPU only."""
    for name in list(sys.modules):
        if name in {"models", "alert", "tools"} or name.startswith("models."):
            del sys.modules[name]
    sys.path[:] = [path for path in sys.path if Path(path).name not in {"SQUID", "SimSID"}]
    sys.path.insert(0, str(repository))
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    nn.Module.cuda = lambda self, *args, **kwargs: self
    import alert
    import models.discriminator
    import models.memory
    import models.squid

    return types.SimpleNamespace(squid=models.squid, memory=models.memory, disc=models.discriminator, alert=alert)


def _build_squid(code: types.SimpleNamespace, config: Mapping[str, Any]) -> tuple[nn.Module, nn.Module]:
    root = config["features_root"]
    filters = [root * 2**i for i in range(5)] + [root * 16]
    # Released SQUID calls MemoryMatrixBlockV3(num_slots, slot_dim, num_memory=, shrink_thres=), but the class takes
    # an unused in_channels first (a TypeError for configs/digit_best.py): a subclass passes what it reads.
    original = code.memory.MemoryMatrixBlockV3

    class PositionMemory(original):
        def __init__(self, num_slots: int, slot_dim: int, **kwargs: Any) -> None:
            original.__init__(self, None, num_slots, slot_dim, **kwargs)

    code.memory.PositionMemoryFixture = PositionMemory
    bottleneck = config["image_size"] // config["num_patch"] // 2 ** config["level"]
    decoder_memory = [
        None
        if spec is None
        else {
            "type": "PositionMemoryFixture" if spec[0] == "MemoryMatrixBlockV3" else spec[0],
            "multiplier": spec[1],
            "num_memory": config["num_patch"] ** 2,
        }
        for spec in config["decoder_memory"]
    ]
    model = code.squid.AE(
        1,
        root,
        5,  # shrink_thres
        num_slots=config["num_slots"],
        num_patch=config["num_patch"],
        level=config["level"],
        ratio=1.0,
        initial_combine=config["initial_combine"],
        drop=0.0,
        dist=True,
        memory_channel=filters[config["level"]] // 4 * bottleneck**2,
        mem_num_slots=config["mem_num_slots"],
        ops=list(config["ops"]),
        decoder_memory=decoder_memory,
    )
    for module in model.modules():  # SQUID's decoder memories keep their 0.95 default; 1 for determinism
        if hasattr(module, "mask_ratio"):
            module.mask_ratio = 1.0
    discriminator = code.disc.SimpleDiscriminator(size=_discriminator_size(config["image_size"]))
    return model, discriminator


def _build_simsid(code: types.SimpleNamespace, config: Mapping[str, Any]) -> tuple[nn.Module, nn.Module]:
    root = config["features_root"]
    bottleneck = config["image_size"] // config["num_patch"] // 2 ** config["level"]
    inpaint = types.SimpleNamespace(
        use_memory_queue=config["use_memory_queue"],
        use_inpaint=config["use_inpaint"],
        num_slots=config["num_slots"],
        memory_channel=root * 2 ** config["level"] // 4 * bottleneck**2,
        shrink_thres=5,
        drop=0.0,
        mask_ratio=1.0,
    )
    memory = types.SimpleNamespace(
        memory_layer_type="default", num_memory=4, num_slots=config["mem_num_slots"], shrink_thres=5, mask_ratio=1.0
    )
    settings = types.SimpleNamespace(
        num_in_ch=1,
        initial_combine=config["initial_combine"],
        level=config["level"],
        num_patch=config["num_patch"],
        ops=list(config["ops"]),
        img_size=config["image_size"],
        decoder_memory=list(config["decoder_memory"]),
        normalize_tanh=True,
        dist=True,
        teacher_stop_gradient=True,
        use_memory_inpaint_block=True,
        analyze_memory=False,
        inpaint_config=inpaint,
        memory_config=memory,
    )
    model = code.squid.AE(settings, root, level=config["level"])
    discriminator = code.disc.SimpleDiscriminator(1, size=_discriminator_size(config["image_size"]), num_layers=4)
    return model, discriminator


def _discriminator_size(image_size: int) -> int:
    size = image_size
    for _ in range(5):
        size = (size + 1) // 2
    return size


def _authors_scores(
    code: types.SimpleNamespace,
    family: str,
    model: nn.Module,
    discriminator: nn.Module,
    images: torch.Tensor,
    train_images: torch.Tensor,
    early_stop: int,
) -> dict[str, np.ndarray]:
    """Eval outputs of the authors' model on ``images`` and their anomaly score (statistics of ``train_images``)."""
    model, discriminator = copy.deepcopy(model), copy.deepcopy(discriminator)
    model.eval()
    with torch.no_grad():
        out = model(images)
        running = copy.deepcopy(discriminator).eval()(out["recon"])[:, 0]
        discriminator.train()  # the authors never put it in eval mode
        per_image = torch.cat([discriminator(recon[None]) for recon in out["recon"]])[:, 0]
        settings = types.SimpleNamespace(
            early_stop=early_stop,
            device="cpu",
            train_dataset=torch.utils.data.TensorDataset(train_images, torch.zeros(len(train_images))),
        )
        alert = code.alert.GanAlert(discriminator=discriminator, args=None, CONFIG=settings, generator=model)
        if family == "Squid":
            mean, std = alert.collect(alert.train_loader)
        else:
            recon_scores, _ = alert.collect(alert.train_loader)
            mean, std = np.mean(recon_scores), np.std(recon_scores) + 1e-8
        score = 1.0 - 1.0 / (1.0 + np.exp(-(per_image.numpy() - mean) / std))
    return {
        "eval/reconstruction": out["recon"].float().numpy(),
        "eval/teacher_reconstruction": out["teacher_recon"].float().numpy(),
        "eval/logits_per_image": per_image.numpy(),
        "eval/logits_running": running.numpy(),
        "eval/score": np.asarray(score),
        "eval/stats_mean": np.float64(mean),
        "eval/stats_std": np.float64(std),
    }


def _train(
    code: types.SimpleNamespace,
    family: str,
    model: nn.Module,
    discriminator: nn.Module,
    batches: torch.Tensor,
    config: Mapping[str, Any],
) -> list[dict[str, float]]:
    """Three steps of the authors' ``gan_train`` with their optimisers; the losses of every step."""
    weights = config["weights"]
    generator_opt = torch.optim.Adam(model.parameters(), lr=LR, eps=1e-7, betas=(0.5, 0.999), weight_decay=1e-5)
    discriminator_opt = torch.optim.Adam(discriminator.parameters(), betas=(0.5, 0.999), lr=LR)
    bce, mse = nn.BCEWithLogitsLoss(), nn.MSELoss()
    forward = (lambda x: model(x)) if family == "Squid" else (lambda x: model(x, fadein_weights=[0.0, 0.0, 1.0, 1.0]))
    model.train()
    discriminator.train()
    losses = []
    for step, image in enumerate(batches):
        discriminator_opt.zero_grad()
        out = forward(image)
        real, fake = discriminator(image), discriminator(out["recon"].detach())
        d_loss = weights["d_w"] * (bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake)))
        d_loss.backward()
        discriminator_opt.step()
        logs = {"discriminator": d_loss.item()}
        if step % config["n_critic"] == 0:
            if family == "Squid":  # SQUID's generator step runs the generator again
                generator_opt.zero_grad()
                out = forward(image)
            fake = discriminator(out["recon"])
            terms = {
                "reconstruction": weights["recon_w"] * mse(out["recon"], image),
                "adversarial": weights["g_w"] * bce(fake, torch.ones_like(fake)),
                "teacher": weights["t_w"] * mse(out["teacher_recon"], image),
                "distillation": weights["dist_w"] * out["dist_loss"],
            }
            loss = sum(terms.values())
            generator_opt.zero_grad()
            loss.backward()
            generator_opt.step()
            for module in model.modules():
                if isinstance(module, code.memory.MemoryQueue):
                    module.update()
            logs |= {name: value.item() for name, value in terms.items()} | {"loss": loss.item()}
        losses.append(logs)
    return losses


def make_fixture(name: str, repository: Path, out: Path) -> Path:
    """Run one configuration of :data:`CONFIGS` through the authors' code and write ``<out>/<name>.npz``."""
    from anomalib_medical.models.components.authors_checkpoint import load_authors_checkpoint

    config = CONFIGS[name]
    family = config["family"]
    code = _load_authors(repository)
    torch.manual_seed(SEED)
    model, discriminator = (_build_squid if family == "Squid" else _build_simsid)(code, config)
    generator_shapes = {key: list(value.shape) for key, value in model.state_dict().items()}
    discriminator_shapes = {key: list(value.shape) for key, value in discriminator.state_dict().items()}
    model.load_state_dict(fixture_state(generator_shapes))
    discriminator.load_state_dict(fixture_state(discriminator_shapes))
    model.double()  # float64: Adam's normalised first steps would amplify float32 rounding of tiny gradients
    discriminator.double()
    before = load_authors_checkpoint(model.state_dict(), discriminator.state_dict(), family=family, **config["ours"])
    before_state = {key: value.clone() for key, value in before.model.state_dict().items()}

    inputs = fixture_inputs(config)
    batches = unit_images(inputs).double()
    if family == "SimSID":  # their configurations normalise to [-1, 1]
        batches = batches * 2.0 - 1.0
    arrays = _authors_scores(
        code, family, model, discriminator, batches[0], batches.flatten(0, 1), config["early_stop"]
    )
    losses = _train(code, family, model, discriminator, batches, config)

    after = load_authors_checkpoint(model.state_dict(), discriminator.state_dict(), family=family, **config["ours"])
    for key, value in after.model.state_dict().items():
        index = fingerprint_index(key, value.numel())
        arrays[f"after/{key}"] = value.flatten()[index].numpy()
        if value.is_floating_point():
            arrays[f"update/{key}"] = np.float64((value - before_state[key]).norm().item())
    queues = [module for module in model.modules() if isinstance(module, code.memory.MemoryQueue)]
    if queues:
        arrays["queue"] = after.model.generator.inpainting.memory.slots.numpy()
        arrays["queue_pointer"] = np.int64(int(queues[0].ptr))
    meta = {
        "name": name,
        "config": config,
        "seed": SEED,
        "generator_shapes": generator_shapes,
        "discriminator_shapes": discriminator_shapes,
        "losses": losses,
        "lr": LR,
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.npz"
    np.savez_compressed(path, meta=np.array(json.dumps(meta)), input=inputs, **arrays)
    return path


def main() -> None:
    """Write the fixtures of every configuration whose repository is given."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--squid", type=Path, help="checkout of github.com/tiangexiang/SQUID")
    parser.add_argument("--simsid", type=Path, help="checkout of github.com/MrGiovanni/SimSID")
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/authors"))
    options = parser.parse_args()
    torch.set_num_threads(1)
    for name, config in CONFIGS.items():
        repository = options.squid if config["family"] == "Squid" else options.simsid
        if repository is None:
            continue
        path = make_fixture(name, repository.resolve(), options.out)
        print(f"{path}: {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
