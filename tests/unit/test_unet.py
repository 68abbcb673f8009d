"""U-Net component: shapes, depth, channel cap, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from anomalib_medical.models.components.unet import UNet


@pytest.mark.parametrize(("depth", "size"), [(1, (8, 8)), (3, (16, 16)), (4, (20, 27))])
def test_output_keeps_the_input_resolution(depth: int, size: tuple[int, int]) -> None:
    net = UNet(in_channels=3, out_channels=2, depth=depth, base_channels=4)
    assert net(torch.rand(2, 3, *size)).shape == (2, 2, *size)


def test_depth_sets_the_number_of_downsamplings_and_channels_are_capped() -> None:
    net = UNet(in_channels=1, out_channels=1, depth=5, base_channels=4, max_channels=16)
    strides = [m.stride[0] for m in net.encoder.modules() if isinstance(m, nn.Conv2d)]
    assert strides.count(2) == 4
    widths = [m.out_channels for m in net.encoder.modules() if isinstance(m, nn.Conv2d)]
    assert max(widths) == 16
    assert len(net.decoder) == 4
    assert any(isinstance(m, nn.InstanceNorm2d) and m.affine for m in net.modules())
    assert any(isinstance(m, nn.GELU) for m in net.modules())


def test_every_parameter_receives_a_gradient() -> None:
    net = UNet(in_channels=2, out_channels=1, depth=3, base_channels=4)
    net(torch.rand(2, 2, 16, 16)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_invalid_depth_is_rejected() -> None:
    with pytest.raises(ValueError, match="depth"):
        UNet(1, 1, depth=0)
