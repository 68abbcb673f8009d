"""In-painting block, discriminator and encoder/decoder blocks."""

import pytest
import torch

from anomalib_medical.models.components import (
    ConvEncoder,
    ImageDiscriminator,
    InpaintingBlock,
    NeighbourAttention,
    ResidualDoubleConv,
    TimmEncoder,
    UpBlock,
    binary_position_code,
)


def _block(**kwargs) -> InpaintingBlock:
    defaults = {"channels": 16, "feature_size": (2, 2), "grid": 3, "num_slots": 6, "top_k": 2, "num_heads": 2}
    return InpaintingBlock(**(defaults | kwargs))


def test_binary_position_code():
    code = binary_position_code(9)
    assert code.shape == (9, 4)
    torch.testing.assert_close(code[5], torch.tensor([0.0, 1.0, 0.0, 1.0]))
    torch.testing.assert_close(code[8], torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert binary_position_code(4).shape == (4, 3)


def test_inpainting_block_shapes_and_gradients():
    torch.manual_seed(0)
    block = _block().train()
    features = torch.randn(2 * 9, 16, 2, 2, requires_grad=True)
    out, queries = block(features)
    assert out.shape == features.shape
    assert queries.shape == (2, 9, block.memory_dim)
    assert block.memory_dim == 16 // 4 * 2 * 2
    out.square().mean().backward()
    assert features.grad.abs().sum() > 0
    for name, parameter in block.named_parameters():
        assert parameter.grad is not None, name


def test_inpainting_block_forward_never_writes_the_queue():
    block = _block()
    before = {name: buffer.clone() for name, buffer in block.memory.named_buffers()}
    for mode in (block.train, block.eval):
        mode()
        block(torch.randn(9, 16, 2, 2))
    for name, buffer in block.memory.named_buffers():
        torch.testing.assert_close(buffer, before[name])


def test_inpainting_masked_shortcut_only_in_training():
    torch.manual_seed(0)
    block = _block(mask_ratio=0.5)
    features = torch.randn(9, 16, 2, 2)
    block.eval()
    first, _ = block(features)
    second, _ = block(features)
    torch.testing.assert_close(first, second)
    block.train()
    mixed, _ = block(features)
    # with ratio 0.5 some locations carry the input feature itself
    carried = (mixed == features).all(dim=1)
    assert carried.any() and not carried.all()


def test_inpainted_feature_comes_from_memory_not_from_the_patch():
    # One identical slot in every queue: retrieval ignores the query and the interior patch's 8
    # neighbours carry the same value, so its in-painted feature cannot depend on its own input.
    torch.manual_seed(0)
    block = _block(num_slots=1, top_k=None).eval()
    with torch.no_grad():
        block.memory.slots.copy_(block.memory.slots[:1].expand_as(block.memory.slots))
    features = torch.randn(9, 16, 2, 2)
    out_a, _ = block(features)
    out_b, _ = block(features * 3.0 + 1.0)
    torch.testing.assert_close(out_a[4], out_b[4])
    # a corner patch attends over zero padding and memory values: its weights follow its query
    assert not torch.allclose(out_a[0], out_b[0])


def test_without_neighbour_attention_each_patch_is_its_own_memory_read_out():
    torch.manual_seed(0)
    block = _block(neighbour_attention=False).eval()
    assert block.transformer is None
    assert not any(name.startswith("transformer") for name, _ in block.named_parameters())
    features = torch.randn(9, 16, 2, 2)
    with torch.no_grad():
        out, queries = block(features)
        retrieved = block.memory(queries).reshape(9, 4, 2, 2)
        code = block.position_code[:, :, None, None].expand(-1, -1, 2, 2)
        expected = block.expand(torch.cat([retrieved, code], dim=1))
    torch.testing.assert_close(out, expected)
    # changing one patch changes that patch's output only: no information flows between neighbours
    changed = features.clone()
    changed[4] = torch.randn(16, 2, 2)
    with torch.no_grad():
        out_changed, _ = block(changed)
    unchanged = [index for index in range(9) if index != 4]
    torch.testing.assert_close(out_changed[unchanged], out[unchanged])
    assert not torch.allclose(out_changed[4], out[4])


def test_neighbour_attention_shapes():
    layer = NeighbourAttention(dim=8, num_heads=2)
    out = layer(torch.randn(5, 8), torch.randn(5, 8), torch.randn(5, 8, 8))
    assert out.shape == (5, 8)
    assert (out >= 0).all()


def test_image_discriminator_shapes_and_gradients():
    disc = ImageDiscriminator(image_size=(96, 64), in_channels=1)
    image = torch.rand(3, 1, 96, 64, requires_grad=True)
    logits = disc(image)
    assert logits.shape == (3,)
    logits.sum().backward()
    assert image.grad.abs().sum() > 0


def test_conv_encoder_and_up_block():
    encoder = ConvEncoder(in_channels=1, base_channels=4, levels=3)
    features = encoder(torch.rand(2, 1, 16, 16))
    assert [f.shape[1] for f in features] == encoder.channels == [4, 8, 16, 32]
    assert [f.shape[-1] for f in features] == [16, 8, 4, 2]
    up = UpBlock(32 + 16, 16, op="concat")
    assert up(features[3], features[2]).shape == features[2].shape
    assert UpBlock(32, 16, op="none")(features[3], features[2]).shape == features[2].shape
    assert ResidualDoubleConv(4, 6, stride=2)(features[0]).shape == (2, 6, 8, 8)
    with pytest.raises(ValueError, match="skip op"):
        UpBlock(4, 4, op="multiply")


def test_timm_encoder_interface():
    encoder = TimmEncoder("resnet18", in_channels=1, levels=2)
    features = encoder(torch.rand(1, 1, 32, 32))
    assert len(features) == 3
    assert [f.shape[1] for f in features] == encoder.channels


def test_discriminator_names_a_training_batch_of_one_with_a_1x1_last_map():
    discriminator = ImageDiscriminator(image_size=(24, 24), channels=(4, 8, 8, 8, 8)).train()
    assert discriminator.output_size == (1, 1)
    with pytest.raises(ValueError, match=r"training batch of one image .* last map is 1 x 1"):
        discriminator(torch.rand(1, 1, 24, 24))
    assert discriminator(torch.rand(2, 1, 24, 24)).shape == (2,)
    assert discriminator.eval()(torch.rand(1, 1, 24, 24)).shape == (1,)  # running statistics: fine
