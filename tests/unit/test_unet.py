"""U-Net component: shapes in 2-D and 3-D, depth, channel cap, the authors' layout and initialisation, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from anomalib_medical.models.components.unet import UNet


@pytest.mark.parametrize(
    ("depth", "size"), [(1, (8, 8)), (3, (16, 16)), (4, (20, 27)), (2, (6, 8, 5)), (3, (8, 9, 12))]
)
def test_output_keeps_the_input_resolution(depth: int, size: tuple[int, ...]) -> None:
    net = UNet(in_channels=3, out_channels=2, depth=depth, base_channels=4, spatial_dims=len(size))
    assert net(torch.rand(2, 3, *size)).shape == (2, 2, *size)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_depth_sets_the_number_of_downsamplings_and_channels_are_capped(spatial_dims: int) -> None:
    conv, norm = getattr(nn, f"Conv{spatial_dims}d"), getattr(nn, f"InstanceNorm{spatial_dims}d")
    net = UNet(in_channels=1, out_channels=1, depth=5, base_channels=4, max_channels=16, spatial_dims=spatial_dims)
    strides = [m.stride[0] for m in net.encoder.modules() if isinstance(m, conv)]
    assert strides.count(2) == 4
    widths = [m.out_channels for m in net.encoder.modules() if isinstance(m, conv)]
    assert max(widths) == 16
    assert len(net.decoder) == 4
    assert any(isinstance(m, norm) and m.affine for m in net.modules())
    assert any(isinstance(m, nn.GELU) for m in net.modules())
    other = nn.Conv3d if spatial_dims == 2 else nn.Conv2d
    assert not any(isinstance(m, other) for m in net.modules())


def test_default_channel_cap_is_nnunets_per_dimension() -> None:
    for spatial_dims, cap in [(2, 512), (3, 320)]:
        net = UNet(1, 1, depth=3, base_channels=160, spatial_dims=spatial_dims)
        assert max(m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d | nn.Conv3d)) == cap


def convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def test_generic_unet_layout_head_without_bias_and_he_initialisation() -> None:
    """The bottleneck and decoder stages end on the next skip's channels; no head bias; He-normal weights."""
    torch.manual_seed(0)
    net = UNet(in_channels=2, out_channels=1, depth=3, base_channels=64, max_channels=512)
    assert [(c.in_channels, c.out_channels) for c in convs(net.encoder[2])] == [(128, 256), (256, 128)]
    assert [(c.in_channels, c.out_channels) for c in convs(net.decoder[0])] == [(256, 128), (128, 64)]
    assert [(c.in_channels, c.out_channels) for c in convs(net.decoder[1])] == [(128, 64), (64, 64)]
    assert net.head.bias is None
    assert all(c.bias is not None and not c.bias.any() for c in convs(net.encoder) + convs(net.decoder))
    # Kaiming normal with negative slope 0.01: std = sqrt(2 / (1 + 0.01^2) / fan_in)
    weight = net.decoder[0][0][0].weight
    expected = (2 / (1 + 1e-4) / (weight.shape[1] * 9)) ** 0.5
    assert weight.std().item() == pytest.approx(expected, rel=0.02)
    # the option: PyTorch's default, Kaiming uniform with a = sqrt(5), std = 1 / sqrt(3 fan_in)
    pytorch = UNet(in_channels=2, out_channels=1, depth=3, base_channels=64, initialisation="pytorch")
    weight = pytorch.decoder[0][0][0].weight
    assert weight.std().item() == pytest.approx((1 / (3 * weight.shape[1] * 9)) ** 0.5, rel=0.02)
    assert pytorch.decoder[0][0][0].bias.abs().sum() > 0


@pytest.mark.parametrize(("spatial_dims", "size"), [(2, (16, 16)), (3, (8, 8, 8))])
def test_every_parameter_receives_a_gradient(spatial_dims: int, size: tuple[int, ...]) -> None:
    net = UNet(in_channels=2, out_channels=1, depth=3, base_channels=4, spatial_dims=spatial_dims)
    net(torch.rand(2, 2, *size)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_invalid_arguments_and_input_rank_are_rejected() -> None:
    with pytest.raises(ValueError, match="depth"):
        UNet(1, 1, depth=0)
    with pytest.raises(ValueError, match="initialisation must be 'he' or 'pytorch'"):
        UNet(1, 1, initialisation="xavier")
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        UNet(1, 1, spatial_dims=1)
    with pytest.raises(ValueError, match=r"spatial_dims=2 expects \(N, C, H, W\).*\(1, 1, 4, 4, 4\)"):
        UNet(1, 1, depth=2, base_channels=2)(torch.rand(1, 1, 4, 4, 4))
    with pytest.raises(ValueError, match=r"spatial_dims=3 expects \(N, C, D, H, W\)"):
        UNet(1, 1, depth=2, base_channels=2, spatial_dims=3)(torch.rand(1, 1, 4, 4))
