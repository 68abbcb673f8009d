"""The localiser's U-Net and positional encoding against Baugh et al.'s ``Generic_UNet`` and ``CombinedEnc``.

    OMP_NUM_THREADS=1 python benchmarks/localiser_network_vs_authors.py /path/to/many-tasks-make-light-work

Builds the authors' network with the arguments of their experiment configs (``experiments/exp_*_train.py``: 2-D
depth 7 for VinDr-CXR, 3-D depth 5 for HCP), copies its weights into ours (parameter shapes must agree, in order),
and prints the parameter counts and the largest output difference on a random input; then compares our
:class:`FourierCoordinateEncoding` with their ``CombinedEnc(dims, 32, 12)``. Their repository is imported from the
given path (it is not a dependency); it needs only NumPy and torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from anomalib_medical.models.components.unet import UNet
from anomalib_medical.models.synthetic_task_localiser import FourierCoordinateEncoding


def authors_unet(generic_unet: type, spatial_dims: int, depth: int, in_channels: int) -> nn.Module:
    """``Generic_UNet`` as in the authors' experiment configs."""
    return generic_unet(
        input_channels=in_channels,
        base_num_features=32,
        num_pool=depth - 1,
        num_conv_per_stage=2,
        feat_map_mul_on_downscale=2,
        conv_op=getattr(nn, f"Conv{spatial_dims}d"),
        final_nonlin=nn.Identity(),
        norm_op=getattr(nn, f"InstanceNorm{spatial_dims}d"),
        norm_op_kwargs={"eps": 1e-5, "affine": True},
        dropout_op=getattr(nn, f"Dropout{spatial_dims}d"),
        dropout_op_kwargs={"p": 0, "inplace": True},
        nonlin=nn.GELU,
        nonlin_kwargs={},
        deep_supervision=False,
        convolutional_pooling=True,
        convolutional_upsampling=False,
    )


def compare_networks(generic_unet: type) -> None:
    """Print parameter counts and the output difference with copied weights."""
    for spatial_dims, depth, shape in [(2, 7, (128, 128)), (3, 5, (16, 32, 16))]:
        in_channels = 1 + spatial_dims + 64
        theirs = authors_unet(generic_unet, spatial_dims, depth, in_channels).eval()
        ours = UNet(in_channels, 1, depth=depth, spatial_dims=spatial_dims).eval()
        state = theirs.state_dict()
        # their encoder, decoder, then the last (only used) of their per-level heads
        used = [(k, v) for k, v in state.items() if k.startswith("conv_blocks_context")]
        used += [(k, v) for k, v in state.items() if k.startswith("conv_blocks_localization")]
        used += [(k, v) for k, v in state.items() if k.startswith(f"seg_outputs.{depth - 2}.")]
        own = list(ours.state_dict())
        shapes_agree = [tuple(v.shape) for _, v in used] == [tuple(ours.state_dict()[k].shape) for k in own]
        if not shapes_agree:
            print(f"{spatial_dims}-D depth {depth}: parameter shapes differ")
            continue
        ours.load_state_dict({key: value for key, (_, value) in zip(own, used, strict=True)})
        inputs = torch.randn(2, in_channels, *shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            difference = (theirs(inputs) - ours(inputs)).abs().max().item()
        unused = sum(v.numel() for k, v in state.items() if k.startswith("seg_outputs")) - used[-1][1].numel()
        count = sum(p.numel() for p in ours.parameters())
        print(
            f"{spatial_dims}-D depth {depth}, input {shape}: parameters ours {count:,}"
            f", theirs {sum(v.numel() for v in state.values()):,} ({unused} in unused heads); "
            f"max |output difference| {difference:.1e}"
        )


def compare_encodings(combined_encoding: type) -> None:
    """Print the largest difference between the encodings."""
    for shape in [(256, 256), (80, 112, 80)]:
        theirs = combined_encoding(len(shape), 32, 12)(shape)
        encoding = FourierCoordinateEncoding(32, 12.0, spatial_dims=len(shape))
        ours = encoding(torch.zeros(1, 1, *shape))[0].numpy()
        print(f"encoding {shape}: {theirs.shape[0]} channels; max |difference| {np.abs(theirs - ours).max():.1e}")


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("authors_code", type=Path, help="checkout of matt-baugh/many-tasks-make-light-work")
    args = parser.parse_args()
    sys.path.insert(0, str(args.authors_code))
    from multitask_method.models.generic_UNet import Generic_UNet
    from multitask_method.pos_encoding import CombinedEnc

    torch.set_num_threads(1)
    compare_networks(Generic_UNet)
    compare_encodings(CombinedEnc)


if __name__ == "__main__":
    main()
