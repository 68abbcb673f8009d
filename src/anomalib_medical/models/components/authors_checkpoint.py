"""Load checkpoints written by the authors' SQUID and SimSID code into our models.

The authors' training scripts save two plain state dicts: the generator (``model.pth``, their ``AE``) and the
discriminator (``discriminator.pth``, their ``SimpleDiscriminator``). :func:`load_authors_checkpoint` maps their
keys onto :class:`~anomalib_medical.models.Squid` / :class:`~anomalib_medical.models.SimSID`, with the memory
queue or memory matrix of every patch position stacked into our space-aware memories, and builds the model with
the matching configuration:

- derived from the tensors' shapes: ``in_channels``, ``base_channels``, ``levels``, ``patches_per_side``,
  ``image_size``, ``memory_slots``, ``decoder_memory`` (window or position layout per decoder step),
  ``decoder_memory_slots``, ``skip_ops`` (concatenation or not) and ``discriminator_channels``;
- taken from a named preset (:data:`AUTHORS_PRESETS`, one per released configuration file) or from keyword
  arguments: everything the shapes do not show (``merge_levels``, ``top_k``, mask ratios, memory type of SimSID,
  neighbour attention, output activation, loss weights, schedule, the papers' scoring protocol).

Their ``shrink_thres=k`` keeps ``k - 1`` memory weights (the k-th largest is shrunk to zero as well), so the
presets set ``top_k = shrink_thres - 1``. Keys the authors' modules hold but never use in ``forward`` (SimSID's
``inpaint_block.conv``; the transformer of an in-painting block with ``use_inpaint = False``) are dropped; any
other key we do not know, and any of ours the checkpoint lacks, is an error that names them. The queue's write
pointer is not in their state dict (a plain tensor attribute), so a converted queue starts writing at slot 0, as
theirs does after loading. Score statistics are not in their checkpoints either (they recompute them from training
images at every evaluation): the converted model has mean 0 / std 1, so its scores are the raw negative
discriminator logits until it is fitted (a monotone change: AUROC and the validation thresholds are unaffected).

:func:`save_anomalib_checkpoint` writes the model as an anomalib checkpoint (``anomalib test --ckpt_path``,
``Engine.test``, ``Engine.export``, ``load_from_checkpoint``); the ``anomalib-medical-convert`` command does both.
"""

import argparse
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning
import torch
import yaml

Family = Literal["Squid", "SimSID"]

_LOSSES = {
    "reconstruction_weight": 10.0,
    "teacher_weight": 0.01,
    "distillation_weight": 0.001,
    "adversarial_weight": 0.005,
    "discriminator_weight": 0.005,
}
_PAPER_PROTOCOL = {"discriminator_scoring": "per_image", "score_statistics": "first_images"}

#: Our constructor arguments for each configuration file the authors released (model class, arguments).
AUTHORS_PRESETS: dict[str, tuple[Family, dict[str, Any]]] = {
    "squid_zhang_best": (
        "Squid",
        {"merge_levels": 2, "top_k": 4, "mask_ratio": 0.95, "n_critic": 2, "min_lr_ratio": 0.1}
        | _LOSSES
        | {"score_stats_images": 201}
        | _PAPER_PROTOCOL,
    ),
    "squid_chexpert_best": (
        "Squid",
        {"merge_levels": 2, "top_k": 4, "mask_ratio": 0.95, "n_critic": 2, "min_lr_ratio": 0.5}
        | _LOSSES
        | {"score_stats_images": 201}
        | _PAPER_PROTOCOL,
    ),
    "squid_digit_best": (
        "Squid",
        {"merge_levels": 1, "top_k": 4, "mask_ratio": 0.95, "n_critic": 1, "min_lr_ratio": 0.01}
        | _LOSSES
        | {"reconstruction_weight": 1.0, "score_stats_images": 101}
        | _PAPER_PROTOCOL,
    ),
    "simsid_zhang_dev": (
        "SimSID",
        {
            "merge_levels": 2,
            "top_k": 4,
            "memory_type": "queue",
            "neighbour_attention": True,
            "mask_ratio": 1.0,
            "decoder_mask_ratio": 1.0,
            "activation": "tanh",
            "n_critic": 2,
            "min_lr_ratio": 0.1,
        }
        | _LOSSES
        | {"score_stats_images": 201}
        | _PAPER_PROTOCOL,
    ),
    "simsid_chexpert_best": (
        "SimSID",
        {
            "merge_levels": 2,
            "top_k": 4,
            "memory_type": "matrix",
            "neighbour_attention": True,
            "mask_ratio": 0.9,
            "decoder_mask_ratio": 1.0,
            "activation": "tanh",
            "n_critic": 2,
            "min_lr_ratio": 0.5,
        }
        | _LOSSES
        | {"score_stats_images": 201}
        | _PAPER_PROTOCOL,
    ),
    "simsid_covidx_dev": (
        "SimSID",
        {
            "merge_levels": 2,
            "top_k": 4,
            "memory_type": "matrix",
            "neighbour_attention": True,
            "mask_ratio": 1.0,
            "decoder_mask_ratio": 1.0,
            "activation": "tanh",
            "n_critic": 2,
            "min_lr_ratio": 0.1,
        }
        | _LOSSES
        | {"score_stats_images": 201}
        | _PAPER_PROTOCOL,
    ),
}

# Authors' key prefix -> ours (the generator's modules; the memories are handled separately).
_GENERATOR_PREFIXES: tuple[tuple[str, str], ...] = (
    (r"in_conv\.conv\.", "generator.encoder.stem."),
    (r"down_blocks\.(\d+)\.mpconv\.", r"generator.encoder.stages.\1."),
    (r"up_blocks\.(\d+)\.", r"generator.student.ups.\1."),
    (r"teacher_ups\.(\d+)\.", r"generator.teacher.ups.\1."),
    (r"out_conv\.conv\.", "generator.student.out_conv."),
    (r"teacher_out\.conv\.", "generator.teacher.out_conv."),
    (r"inpaint_block\.bottleneck_conv1\.", "generator.inpainting.reduce."),
    (r"inpaint_block\.bottleneck_conv2\.", "generator.inpainting.expand."),
    (r"inpaint_block\.attention\.", "generator.inpainting.transformer.attention."),
    (r"inpaint_block\.attn_norm1\.", "generator.inpainting.transformer.norm1."),
    (r"inpaint_block\.attn_norm2\.", "generator.inpainting.transformer.norm2."),
    (r"inpaint_block\.ff\.", "generator.inpainting.transformer.feed_forward."),
)
_TRANSFORMER = re.compile(r"inpaint_block\.(attention|attn_norm1|attn_norm2|ff)\.")
_INPAINT_MEMORY = re.compile(r"inpaint_block\.memory\.(\d+)\.memMatrix$")
_DECODER_MEMORY = re.compile(r"memory_blocks\.(\d+)\.memory\.(\d+)\.memMatrix$")
_UNUSED = re.compile(r"inpaint_block\.conv\.(weight|bias)$")  # SimSID builds it, forward never calls it
_DOWN = re.compile(r"down_blocks\.(\d+)\.mpconv\.conv1\.0\.weight$")
# Our state-dict entries an authors' checkpoint cannot hold (defaults are right for a converted model).
_OURS_ONLY = re.compile(r"(generator\.inpainting\.memory\.pointer|score_mean|score_std|blur\.kernel)$")


def _read_state(source: str | Path | Mapping[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """Read a state dict from a file or a mapping, without DataParallel prefixes."""
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            msg = f"The authors' {name} checkpoint {path} does not exist."
            raise FileNotFoundError(msg)
        state = torch.load(path, map_location="cpu", weights_only=True)
    else:
        state = source
    if not isinstance(state, Mapping) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        msg = f"The authors' {name} checkpoint {source if isinstance(source, str | Path) else ''} is not a state dict."
        raise ValueError(msg.replace("  ", " "))
    state = dict(state)
    if state and all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return state


def _positions(state: Mapping[str, torch.Tensor], pattern: re.Pattern, block: str | None = None) -> list[torch.Tensor]:
    """Return the per-position memory tensors matching ``pattern`` (of one decoder ``block``), in position order."""
    found = {}
    for key, value in state.items():
        match = pattern.match(key)
        if match and (block is None or match.group(1) == block):
            found[int(match.group(match.lastindex))] = value
    if sorted(found) != list(range(len(found))):
        msg = f"Memory positions {sorted(found)} of {pattern.pattern} are not numbered 0..{len(found) - 1}."
        raise ValueError(msg)
    return [found[index] for index in range(len(found))]


def derive_arguments(
    generator: Mapping[str, torch.Tensor],
    discriminator: Mapping[str, torch.Tensor],
    family: Family,
) -> dict[str, Any]:
    """Return the constructor arguments of our model that the shapes of the authors' state dicts determine.

    Raises:
        ValueError: If a shape does not fit any configuration our model can express.

    """
    levels = sum(1 for key in generator if _DOWN.match(key))
    stem = generator["in_conv.conv.conv1.0.weight"]
    base_channels, in_channels = int(stem.shape[0]), int(stem.shape[1])
    channels = [base_channels * 2 ** min(level, 4) for level in range(levels + 1)]
    queues = _positions(generator, _INPAINT_MEMORY)
    grid = math.isqrt(len(queues))
    if grid * grid != len(queues):
        msg = f"The in-painting memory has {len(queues)} positions, not a square patch grid."
        raise ValueError(msg)
    memory_slots, memory_dim = (int(size) for size in queues[0].shape)
    bottleneck_area = memory_dim // (channels[levels] // 4)
    side = math.isqrt(bottleneck_area)
    if side * side != bottleneck_area:
        msg = f"In-painting memory dimension {memory_dim} does not give a square bottleneck ({channels[levels]} ch)."
        raise ValueError(msg)
    patch = side * 2**levels
    image_size = patch * grid
    skip_ops = []
    for step in range(levels):
        in_features = int(generator[f"up_blocks.{step}.conv.conv1.0.weight"].shape[1])
        skip_ops.append("concat" if in_features == channels[levels - step] + channels[levels - 1 - step] else "none")
    blocks = {match.group(1) for key in generator if (match := _DECODER_MEMORY.match(key))}
    decoder_memory = ["none"] * levels
    decoder_memory_slots = None
    for block in blocks:
        banks = _positions(generator, _DECODER_MEMORY, block)
        # SQUID lists its decoder memories finest level first, SimSID in decoding order.
        step = levels - 1 - int(block) if family == "Squid" else int(block)
        level = levels - 1 - step
        area = channels[level] * (patch // 2**level) ** 2
        slots, dim = (int(size) for size in banks[0].shape)
        if dim == area and len(banks) == grid * grid:
            decoder_memory[step] = "position"
        elif dim * 4 == area and len(banks) == 4:
            decoder_memory[step] = "window"
        else:
            msg = (
                f"Decoder memory memory_blocks.{block} ({len(banks)} banks of dimension {dim}) is neither one bank per "
                f"patch ({grid * grid} x {area}) nor 2 x 2 windows (4 x {area // 4})."
            )
            raise ValueError(msg)
        decoder_memory_slots = slots
    convs = [value for key, value in discriminator.items() if key.startswith("conv_model.") and value.dim() == 4]
    arguments: dict[str, Any] = {
        "image_size": image_size,
        "in_channels": in_channels,
        "patches_per_side": grid,
        "levels": levels,
        "base_channels": base_channels,
        "skip_ops": skip_ops,
        "memory_slots": memory_slots,
        "decoder_memory": decoder_memory,
        "discriminator_channels": [int(conv.shape[0]) for conv in convs],
    }
    if decoder_memory_slots is not None:
        arguments["decoder_memory_slots"] = decoder_memory_slots
    return arguments


def convert_state_dict(
    generator: Mapping[str, torch.Tensor],
    discriminator: Mapping[str, torch.Tensor],
    family: Family,
    arguments: Mapping[str, Any],
) -> dict[str, torch.Tensor]:
    """Map the authors' generator and discriminator state dicts onto the keys of our torch model.

    Args:
        generator: The authors' ``AE`` state dict.
        discriminator: The authors' ``SimpleDiscriminator`` state dict.
        family: ``"Squid"`` or ``"SimSID"`` (whose code wrote them).
        arguments: Our constructor arguments (``levels``, ``base_channels``, ``decoder_memory``,
            ``neighbour_attention``; see :func:`derive_arguments`).

    Raises:
        ValueError: Naming every key of the authors' state dicts that has no counterpart in ours.

    """
    levels = arguments["levels"]
    neighbour_attention = arguments.get("neighbour_attention", True)
    ours: dict[str, torch.Tensor] = {}
    unknown = []
    decoder_blocks = set()
    for key, value in generator.items():
        if _INPAINT_MEMORY.match(key) or _UNUSED.match(key) or (not neighbour_attention and _TRANSFORMER.match(key)):
            continue
        if match := _DECODER_MEMORY.match(key):
            decoder_blocks.add(match.group(1))
            continue
        for pattern, replacement in _GENERATOR_PREFIXES:
            if re.match(pattern, key):
                ours[re.sub(pattern, replacement, key, count=1)] = value
                break
        else:
            unknown.append(key)
    ours["generator.inpainting.memory.slots"] = torch.stack(_positions(generator, _INPAINT_MEMORY))
    for block in decoder_blocks:
        banks = torch.stack(_positions(generator, _DECODER_MEMORY, block))
        step = levels - 1 - int(block) if family == "Squid" else int(block)
        if family == "Squid" and arguments["decoder_memory"][step] == "window":
            # SQUID's window block flattens each window channel-last (row, column, channel); ours channel-first.
            channels = arguments["base_channels"] * 2 ** min(levels - 1 - step, 4)
            side = math.isqrt(banks.shape[-1] // channels)
            banks = banks.reshape(*banks.shape[:2], side, side, channels).permute(0, 1, 4, 2, 3).flatten(2)
        ours[f"generator.student.memories.{step}.memory.slots"] = banks
    for key, value in discriminator.items():
        if key.startswith("conv_model."):
            ours["discriminator.features." + key.removeprefix("conv_model.")] = value
        elif key.startswith("regressor."):
            ours["discriminator.classifier." + key.removeprefix("regressor.")] = value
        else:
            unknown.append(f"{key} (discriminator)")
    if unknown:
        msg = f"Keys of the authors' checkpoint with no counterpart in our {family}: {', '.join(unknown)}."
        raise ValueError(msg)
    return ours


def load_authors_checkpoint(
    generator: str | Path | Mapping[str, torch.Tensor],
    discriminator: str | Path | Mapping[str, torch.Tensor],
    preset: str | None = None,
    family: Family | None = None,
    **arguments: Any,
) -> Any:
    """Build our ``Squid`` or ``SimSID`` holding the weights of a checkpoint written by the authors' code.

    Args:
        generator: The authors' generator state dict (``model.pth``) or a path to it.
        discriminator: The authors' discriminator state dict (``discriminator.pth``) or a path to it.
        preset: Name of the authors' configuration the checkpoint was trained with (:data:`AUTHORS_PRESETS`,
            e.g. ``"squid_zhang_best"``); it gives the model class and what the shapes do not show.
        family: ``"Squid"`` or ``"SimSID"`` when no preset is named.
        **arguments: Constructor arguments of our model; they override the preset and the derived values.

    Returns:
        The Lightning model (``Squid`` or ``SimSID``), its torch model holding the converted weights.

    Raises:
        ValueError: If the preset or family is unknown, a key of the checkpoint has no counterpart in our model,
            a key of our model is missing from the checkpoint, or a shape differs (all named).

    """
    from anomalib_medical.models import SimSID, Squid

    if preset is not None:
        if preset not in AUTHORS_PRESETS:
            msg = f"Unknown preset {preset!r}; expected one of {sorted(AUTHORS_PRESETS)}."
            raise ValueError(msg)
        preset_family, preset_arguments = AUTHORS_PRESETS[preset]
        if family is not None and family != preset_family:
            msg = f"Preset {preset!r} is a {preset_family} configuration, but family={family!r} was given."
            raise ValueError(msg)
        family = preset_family
    else:
        preset_arguments = {}
    if family not in {"Squid", "SimSID"}:
        msg = f"Name the authors' configuration (preset) or the model family ('Squid' or 'SimSID'), got {family!r}."
        raise ValueError(msg)
    generator_state = _read_state(generator, "generator")
    discriminator_state = _read_state(discriminator, "discriminator")
    build = derive_arguments(generator_state, discriminator_state, family) | preset_arguments | arguments
    if family == "Squid":
        build.pop("discriminator_channels")  # SQUID's discriminator always has (16, 32, 64, 128, 128)
    module = (Squid if family == "Squid" else SimSID)(**build)
    state = convert_state_dict(generator_state, discriminator_state, family, build)
    own = module.model.state_dict()
    missing = [key for key in own if key not in state and not _OURS_ONLY.search(key)]
    unexpected = [key for key in state if key not in own]
    reshaped = [
        f"{key}: {tuple(state[key].shape)} in the checkpoint, {tuple(own[key].shape)} in the model"
        for key in state
        if key in own and state[key].shape != own[key].shape
    ]
    problems = [
        f"{label}: {', '.join(items)}"
        for label, items in (
            ("missing from the checkpoint", missing),
            ("not in the model", unexpected),
            ("of another shape", reshaped),
        )
        if items
    ]
    if problems:
        msg = (
            f"The authors' checkpoint does not fit {family}({', '.join(f'{k}={v!r}' for k, v in build.items())}). "
            f"Keys {'; '.join(problems)}. Name the configuration it was trained with (preset=...) or pass the "
            "differing arguments."
        )
        raise ValueError(msg)
    floating = [value.dtype for value in state.values() if value.is_floating_point()]
    module.to(floating[0])  # the checkpoint's precision (the authors' are float32)
    module.model.load_state_dict(state, strict=False)
    return module


def save_anomalib_checkpoint(module: Any, path: str | Path) -> Path:
    """Write a Lightning model as the checkpoint anomalib's ``test``/``export``/``load_from_checkpoint`` read.

    The checkpoint holds the state dict, the constructor arguments as plain data and the entries our and
    anomalib's ``on_save_checkpoint`` add (the model class, the pre/post-processor configuration).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint: dict[str, Any] = {
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": lightning.__version__,
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
    }
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path


def _value(text: str) -> tuple[str, Any]:
    name, separator, value = text.partition("=")
    if not separator or not name:
        msg = f"--set expects NAME=VALUE, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return name, yaml.safe_load(value)


def main(argv: Sequence[str] | None = None) -> None:
    """``anomalib-medical-convert``: an authors' SQUID/SimSID checkpoint to an anomalib checkpoint."""
    parser = argparse.ArgumentParser(
        prog="anomalib-medical-convert",
        description="Convert a checkpoint of the authors' SQUID or SimSID code (model.pth + discriminator.pth) "
        "into an anomalib checkpoint of anomalib-medical's Squid or SimSID.",
    )
    parser.add_argument("--generator", required=True, type=Path, help="the authors' model.pth (generator)")
    parser.add_argument("--discriminator", required=True, type=Path, help="the authors' discriminator.pth")
    parser.add_argument("--preset", choices=sorted(AUTHORS_PRESETS), help="the authors' configuration file")
    parser.add_argument("--family", choices=["Squid", "SimSID"], help="model class when no preset is named")
    parser.add_argument(
        "--set",
        dest="arguments",
        action="append",
        type=_value,
        default=[],
        metavar="NAME=VALUE",
        help="a constructor argument of our model (YAML value), overriding preset and derived ones; repeatable",
    )
    parser.add_argument("--output", required=True, type=Path, help="the anomalib checkpoint to write (.ckpt)")
    options = parser.parse_args(argv)
    module = load_authors_checkpoint(
        options.generator, options.discriminator, options.preset, options.family, **dict(options.arguments)
    )
    path = save_anomalib_checkpoint(module, options.output)
    print(f"Wrote {type(module).__name__} checkpoint {path}")


if __name__ == "__main__":
    main()
