"""Training and inference speed of the authors' SQUID / SimSID code and ours, side by side at their settings.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/authors_side_by_side.py --squid /path/to/SQUID --config digit \
        --device cpu --threads 1 --warmup 3 --steps 6 --batches 10
    python benchmarks/authors_side_by_side.py --squid /path/to/SQUID --simsid /path/to/SimSID --config zhang \
        --device cuda
    python benchmarks/authors_side_by_side.py --squid /path/to/SQUID --precision bf16-mixed   # ours in bf16
    python benchmarks/authors_side_by_side.py --squid /path/to/SQUID --device cuda --compile   # ours compiled
    python benchmarks/authors_side_by_side.py --squid /path/to/SQUID --openvino   # and ours exported to OpenVINO

``--squid`` / ``--simsid`` are checkouts of github.com/tiangexiang/SQUID and github.com/MrGiovanni/SimSID; SimSID
has no DigitAnatomy configuration, so it is measured with ``--config zhang`` only. The authors' networks are built
at the full size of their configuration files (``--config digit``: SQUID ``configs/digit_best.py``, 96 px;
``zhang``: SQUID ``configs/zhang_best.py`` and SimSID ``configs/zhang_dev.py``, 128 px; batch 16, 32 base
channels) with the builders of ``reference/make_authors_fixtures.py``, and converted into our ``Squid`` /
``SimSID`` by :func:`~anomalib_medical.models.components.authors_checkpoint.load_authors_checkpoint` with the
matching preset, so both sides hold the same weights and configuration. In one process, on the same device and
threads, steps of the two sides alternate (so that a change of the machine's load hits both):

- training: the authors' ``gan_train`` step sequence with their modules and optimisers (SQUID runs the generator
  in its discriminator step and again in its generator step; SimSID once) against our ``training_step``
  (outside a Trainer, after our ``setup("fit")``); images/s over ``--steps`` steps after ``--warmup``;
- inference: the authors' scoring (generator in eval mode, discriminator in training mode on one image per
  batch) against our torch model's eval forward (``discriminator_scoring="per_image"``, score and anomaly map;
  channels-last on the CPU, as our Lightning module runs it); median milliseconds per image at batch 1 and 16 over
  ``--batches`` batches after 2 warm-up batches. ``--openvino`` adds the same rows for our model exported as
  anomalib exports it (ONNX, OpenVINO IR) and run by OpenVINO on the CPU with ``--threads`` threads;
- work: the floating-point operations of convolutions and matrix products (``torch.utils.flop_counter``) of one
  training step (averaged over an ``n_critic`` cycle, forward and backward) and of the inference of one image,
  counted on each side in an untimed extra call. Its ratio is the speed-up that doing less work gives when both
  sides run their operations at the same speed; a speed-up beyond it needs faster kernels (channels-last
  convolutions, fused Adam, fewer copies) or lower precision.

``--compile`` compiles our side with ``torch.compile`` (``nn.Module.compile``: the generator and the discriminator for
training, the whole eval model for inference); the compilation runs in the warm-up steps and batches, untimed.
``--precision bf16-mixed`` runs our side under ``torch.autocast`` with bfloat16 (what Lightning's
``precision="bf16-mixed"`` does to the training and predict steps); the authors' code has no mixed precision and
stays in float32. The speed-up column is ours / theirs (images/s) or theirs / ours (milliseconds, GFLOP). Nothing of
the authors' code is in this repository; their modules are imported from the checkout.
"""

import argparse
import contextlib
import copy
import functools
import io
import shlex
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent / "reference"))
from make_authors_fixtures import LR, _build_simsid, _build_squid, _load_authors
from squid_digit_anatomy import machine_header

from anomalib_medical.models.components.authors_checkpoint import load_authors_checkpoint

BATCH = 16
SQUID_WEIGHTS_DIGIT = {"t_w": 0.01, "recon_w": 1.0, "dist_w": 0.001, "g_w": 0.005, "d_w": 0.005}
SQUID_WEIGHTS_ZHANG = SQUID_WEIGHTS_DIGIT | {"recon_w": 10.0}
#: ``--config`` -> family -> the authors' configuration at full size (keys of ``make_authors_fixtures.CONFIGS``)
#: and the preset of our converter.
SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "digit": {
        "Squid": {
            "source": "SQUID configs/digit_best.py",
            "preset": "squid_digit_best",
            "image_size": 96,
            "features_root": 32,
            "num_patch": 3,
            "level": 3,
            "initial_combine": 1,
            "num_slots": 200,
            "mem_num_slots": 200,
            "mask_ratio": 0.95,
            "ops": ["concat", "concat", "none"],
            "decoder_memory": [None, ("MemoryMatrixBlockV3", 256), ("MemoryMatrixBlockV3", 64)],
            "weights": SQUID_WEIGHTS_DIGIT,
            "n_critic": 1,
        },
    },
    "zhang": {
        "Squid": {
            "source": "SQUID configs/zhang_best.py",
            "preset": "squid_zhang_best",
            "image_size": 128,
            "features_root": 32,
            "num_patch": 2,
            "level": 4,
            "initial_combine": 2,
            "num_slots": 200,
            "mem_num_slots": 200,
            "mask_ratio": 0.95,
            "ops": ["concat", "concat", "none", "none"],
            "decoder_memory": [None, None, ("MemoryMatrixBlock", 64), ("MemoryMatrixBlock", 16)],
            "weights": SQUID_WEIGHTS_ZHANG,
            "n_critic": 2,
        },
        "SimSID": {
            "source": "SimSID configs/zhang_dev.py",
            "preset": "simsid_zhang_dev",
            "image_size": 128,
            "features_root": 32,
            "num_patch": 2,
            "level": 4,
            "initial_combine": 2,
            "num_slots": 200,
            "mem_num_slots": 200,
            "mask_ratio": 1.0,
            "ops": ["concat", "concat", "none", "none"],
            "decoder_memory": ["V1", "V1", "none", "none"],
            "use_memory_queue": True,
            "use_inpaint": True,
            "weights": SQUID_WEIGHTS_ZHANG,
            "n_critic": 2,
        },
    },
}


def synchronise(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA timings)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], Any], device: torch.device) -> float:
    """Wall seconds of ``run()``, device work included."""
    synchronise(device)
    start = time.perf_counter()
    run()
    synchronise(device)
    return time.perf_counter() - start


def alternate(
    runs: Sequence[Callable[[int], Any]], warmup: int, repeats: int, device: torch.device
) -> list[list[float]]:
    """Call each run with the same step index in turn, ``warmup + repeats`` times; the timed seconds of each."""
    seconds: list[list[float]] = [[] for _ in runs]
    for step in range(warmup + repeats):
        for run, record in zip(runs, seconds, strict=True):
            elapsed = timed(functools.partial(run, step), device)
            if step >= warmup:
                record.append(elapsed)
    return seconds


def build_models(
    family: str, repository: Path, setting: dict[str, Any], device: torch.device
) -> tuple[types.SimpleNamespace, nn.Module, nn.Module, Any]:
    """The authors' generator and discriminator at ``setting``, and our module converted from their weights."""
    cuda = torch.Tensor.cuda, nn.Module.cuda
    code = _load_authors(repository)  # turns .cuda() into a no-op: on a GPU their modules must call the real one
    if device.type == "cuda":
        torch.Tensor.cuda, nn.Module.cuda = cuda
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):  # their constructors print their settings
        generator, discriminator = (_build_squid if family == "Squid" else _build_simsid)(code, setting)
    for module in generator.modules():  # the builder sets 1 (deterministic fixtures); the configuration's ratio
        if hasattr(module, "mask_ratio"):
            module.mask_ratio = setting["mask_ratio"]
    ours = load_authors_checkpoint(generator.state_dict(), discriminator.state_dict(), preset=setting["preset"])
    return code, generator.to(device), discriminator.to(device), ours.to(device)


def authors_training_step(
    code: types.SimpleNamespace, family: str, generator: nn.Module, discriminator: nn.Module, setting: dict[str, Any]
) -> Callable[[torch.Tensor, int], None]:
    """One step of the authors' ``gan_train`` (their optimisers, losses, ``.item()`` logging and queue update).

    The returned step holds the optimisers as ``step.optimisers`` (generator, discriminator), for a schedule.
    """
    generator_opt = torch.optim.Adam(generator.parameters(), lr=LR, eps=1e-7, betas=(0.5, 0.999), weight_decay=1e-5)
    discriminator_opt = torch.optim.Adam(discriminator.parameters(), betas=(0.5, 0.999), lr=LR)
    bce, mse, weights = nn.BCEWithLogitsLoss(), nn.MSELoss(), setting["weights"]
    extra = {} if family == "Squid" else {"fadein_weights": [0.0, 0.0, 1.0, 1.0]}
    queues = [module for module in generator.modules() if isinstance(module, code.memory.MemoryQueue)]
    generator.train()
    discriminator.train()

    def step(image: torch.Tensor, index: int) -> None:
        discriminator_opt.zero_grad()
        out = generator(image, **extra)  # with gradients, as theirs
        real, fake = discriminator(image), discriminator(out["recon"].detach())
        d_loss = weights["d_w"] * (bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake)))
        d_loss.backward()
        discriminator_opt.step()
        d_loss.item()
        if index % setting["n_critic"]:
            return
        if family == "Squid":  # SQUID's generator step runs the generator again
            generator_opt.zero_grad()
            out = generator(image, **extra)
        fake = discriminator(out["recon"])
        terms = [
            weights["recon_w"] * mse(out["recon"], image),
            weights["g_w"] * bce(fake, torch.ones_like(fake)),
            weights["t_w"] * mse(out["teacher_recon"], image),
            weights["dist_w"] * out["dist_loss"],
        ]
        loss = sum(terms)
        for term in [*terms, loss]:
            term.item()
        generator_opt.zero_grad()
        loss.backward()
        generator_opt.step()
        for queue in queues:
            queue.update()

    step.optimisers = (generator_opt, discriminator_opt)
    return step


def our_training_step(module: Any, device: torch.device) -> Callable[[torch.Tensor, int], None]:
    """Our ``training_step`` outside a Trainer: the module's optimisers, ``setup("fit")``, no score statistics."""
    generator_opt, discriminator_opt = module.configure_optimizers()[0]
    module.optimizers = lambda: (generator_opt, discriminator_opt)
    module.manual_backward = lambda loss: loss.backward()
    module.log_dict = lambda *args, **kwargs: None
    module._gather = lambda tensor: tensor
    module._trainer = types.SimpleNamespace(
        num_training_batches=sys.maxsize,  # never the epoch's last batch: score statistics are not timed
        strategy=types.SimpleNamespace(root_device=device),
    )
    module.setup("fit")  # what a fit does first (channels-last on the CPU)
    module.model.train()
    return lambda image, index: module.training_step(types.SimpleNamespace(image=image), index)


def authors_scoring(generator: nn.Module, discriminator: nn.Module, family: str) -> Callable[[torch.Tensor], Any]:
    """The authors' anomaly scoring: generator in eval mode, discriminator in training mode, one image a batch."""
    generator, discriminator = copy.deepcopy(generator).eval(), copy.deepcopy(discriminator).train()
    extra = {} if family == "Squid" else {"fadein_weights": [0.0, 0.0, 1.0, 1.0]}

    @torch.no_grad()
    def score(images: torch.Tensor) -> torch.Tensor:
        recon = generator(images, **extra)["recon"]
        return torch.cat([discriminator(image[None]) for image in recon])

    return score


def our_scoring(module: Any, device: torch.device, compile_model: bool = False) -> Callable[[torch.Tensor], Any]:
    """Our torch model's eval forward (score and anomaly map), compiled with ``torch.compile`` if asked.

    On the CPU in channels-last memory format, as the Lightning module's ``setup`` puts it for every stage.
    """
    model = copy.deepcopy(module.model).eval()
    if device.type == "cpu":
        model.to(memory_format=torch.channels_last)
    if compile_model:
        model.compile()
    return torch.no_grad()(model)


def our_openvino_scoring(module: Any, threads: int, precision: str, directory: Path) -> Callable[[torch.Tensor], Any]:
    """Our model exported as anomalib exports it (ONNX, then OpenVINO IR), compiled for the CPU.

    The raw graph (no post-processor: score and anomaly map, as the torch side); the exported input is anomalib's
    3-channel image, so the grey images are repeated over 3 channels. OpenVINO runs ``threads`` inference threads,
    in float32 (``precision="32"``) or bfloat16.
    """
    import openvino as ov

    raw = copy.deepcopy(module).eval()
    raw.post_processor = None
    path = raw.to_openvino(directory, onnx_kwargs={"opset_version": 18})
    config = {
        "INFERENCE_NUM_THREADS": threads,
        "INFERENCE_PRECISION_HINT": "f32" if precision == "32" else "bf16",
        "PERFORMANCE_HINT": "LATENCY",
    }
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    return lambda images: compiled(images.expand(-1, 3, -1, -1).numpy())


def count_gflop(run: Callable[[], Any]) -> float:
    """Floating-point operations (``10**9``) of one call: convolutions and matrix products, forward and backward."""
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops() / 1e9


def compile_for_training(module: Any) -> None:
    """Compile the two networks our ``training_step`` calls (in place: the state-dict keys stay the same)."""
    module.model.generator.compile()
    module.model.discriminator.compile()


def in_bfloat16(run: Callable[..., Any], device: torch.device) -> Callable[..., Any]:
    """``run`` under bfloat16 autocast on ``device``, as Lightning's ``precision="bf16-mixed"`` runs a step."""

    @functools.wraps(run)
    def autocast_run(*args: Any) -> Any:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return run(*args)

    return autocast_run


def measure(
    family: str, repository: Path, setting: dict[str, Any], options: argparse.Namespace
) -> list[tuple[str, float, float, str]]:
    """Rows ``(measure, theirs, ours, unit)`` of one family."""
    device = torch.device(options.device)
    code, generator, discriminator, ours = build_models(family, repository, setting, device)
    size = setting["image_size"]
    images = torch.rand(BATCH, 1, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    theirs_images = images * 2 - 1 if family == "SimSID" else images  # SimSID's configuration normalises to [-1, 1]
    precision = functools.partial(in_bfloat16, device=device) if options.precision == "bf16-mixed" else None
    score_theirs = authors_scoring(generator, discriminator, family)
    eager = our_scoring(ours, device)
    score_ours = our_scoring(ours, device, compile_model=True) if options.compile else eager
    if precision:
        score_ours = precision(score_ours)
    runs = {"torch": score_ours}
    if options.openvino:
        with tempfile.TemporaryDirectory() as directory:
            runs["OpenVINO"] = our_openvino_scoring(ours, options.threads, options.precision, Path(directory))
    rows = [
        (
            f"{family} inference work, batch {BATCH}",
            count_gflop(lambda: score_theirs(theirs_images)) / BATCH,
            count_gflop(lambda: eager(images)) / BATCH,  # eager: compiled, the same work
            "GFLOP/image",
        )
    ]
    for runtime, score_ours in runs.items():
        for batch in (1, BATCH):
            seconds = alternate(
                [lambda _, b=batch: score_theirs(theirs_images[:b]), lambda _, b=batch, r=score_ours: r(images[:b])],
                warmup=2,
                repeats=options.batches,
                device=device,
            )
            theirs_ms, ours_ms = (1000 * statistics.median(record) / batch for record in seconds)
            label = "" if runtime == "torch" else f", ours in {runtime}"
            rows.append((f"{family} inference, batch {batch}{label}", theirs_ms, ours_ms, "ms/image"))
    step_theirs = authors_training_step(code, family, generator, discriminator, setting)
    step_ours = our_training_step(ours, device)
    cycle = range(setting["n_critic"])  # one discriminator step per batch, a generator step every n_critic
    work = [
        sum(count_gflop(functools.partial(step, image, index)) for index in cycle) / len(cycle)
        for step, image in ((step_theirs, theirs_images), (step_ours, images))
    ]
    if options.compile:
        compile_for_training(ours)
    if precision:
        step_ours = precision(step_ours)
    seconds = alternate(
        [lambda index: step_theirs(theirs_images, index), lambda index: step_ours(images, index)],
        warmup=options.warmup,
        repeats=options.steps,
        device=device,
    )
    theirs_rate, ours_rate = (BATCH * len(record) / sum(record) for record in seconds)
    rows[:0] = [
        (f"{family} training, batch {BATCH}", theirs_rate, ours_rate, "images/s"),
        (f"{family} training work, batch {BATCH}", *work, "GFLOP/step"),
    ]
    return rows


def format_table(rows: Sequence[tuple[str, float, float, str]]) -> str:
    """Markdown table with the speed-up of ours over theirs (higher is better for ours)."""
    lines = ["| measure | authors | ours | unit | speed-up (ours vs theirs) |", "|---|---|---|---|---|"]
    for name, theirs, ours, unit in rows:
        speedup = ours / theirs if unit == "images/s" else theirs / ours
        lines.append(f"| {name} | {theirs:.3g} | {ours:.3g} | {unit} | {speedup:.2f}x |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--steps`` must cover whole ``n_critic`` cycles of the configuration."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--squid", type=Path, help="checkout of github.com/tiangexiang/SQUID")
    parser.add_argument("--simsid", type=Path, help="checkout of github.com/MrGiovanni/SimSID (--config zhang)")
    parser.add_argument("--config", choices=sorted(SETTINGS), default="digit", help="the authors' configuration")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument(
        "--precision", choices=["32", "bf16-mixed"], default="32", help="ours: float32, or bfloat16 autocast"
    )
    parser.add_argument("--compile", action="store_true", help="ours: compiled with torch.compile")
    parser.add_argument(
        "--openvino", action="store_true", help="also time ours exported to OpenVINO, on the CPU (--device cpu)"
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps first")
    parser.add_argument("--steps", type=int, default=6, help="timed training steps")
    parser.add_argument("--batches", type=int, default=10, help="timed inference batches per batch size")
    options = parser.parse_args(argv)
    repositories = {"Squid": options.squid, "SimSID": options.simsid}
    families = [family for family in SETTINGS[options.config] if repositories[family] is not None]
    if not families:
        parser.error(f"--config {options.config} needs --{' or --'.join(SETTINGS[options.config]).lower()}")
    for family in families:
        if not (repositories[family] / "models" / "squid.py").is_file():
            parser.error(f"--{family.lower()} {repositories[family]} is not a checkout (no models/squid.py)")
        n_critic = SETTINGS[options.config][family]["n_critic"]
        if options.steps < 1 or options.steps % n_critic:
            parser.error(f"--steps {options.steps} must be a positive multiple of n_critic={n_critic} ({family})")
        if options.compile and options.warmup < n_critic:
            parser.error(f"--compile needs --warmup >= n_critic={n_critic} ({family}): compiling stays untimed")
    if options.threads < 1 or options.warmup < 0 or options.batches < 1:
        parser.error("--threads and --batches must be >= 1, --warmup >= 0")
    if options.openvino and options.device != "cpu":
        parser.error("--openvino times the CPU deployment of the export: use --device cpu")
    if options.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    options.families = families
    options.repositories = repositories
    return options


def main(argv: Sequence[str] | None = None) -> None:
    """Measure every family whose checkout is given and print the table."""
    options = parse_args(argv)
    torch.set_num_threads(options.threads)
    rows = []
    for family in options.families:
        setting = SETTINGS[options.config][family]
        rows += measure(family, options.repositories[family].resolve(), setting, options)
        print(f"{family}: {setting['source']}, {setting['image_size']} px, preset {setting['preset']}", flush=True)
    command = shlex.join(["python", *sys.argv])
    compiled = ", torch.compile" if options.compile else ""
    print(machine_header(command) + f"  \ndevice: {options.device}, our precision: {options.precision}{compiled}")
    if options.device == "cuda":
        print(f"GPU: {torch.cuda.get_device_name()}")
    print(format_table(rows))


if __name__ == "__main__":
    main()
