"""Memories, Gumbel shrinkage, masked shortcut and patch-grid helpers."""

import pytest
import torch

from anomalib_medical.models.components import (
    DecoderMemoryBlock,
    FeatureBank,
    MaskedShortcut,
    MemoryMatrix,
    MemoryQueue,
    SpaceAwareMemory,
    grid_neighbours,
    gumbel_shrinkage,
    image_to_patches,
    patches_to_image,
    read_memory,
)


def test_gumbel_shrinkage_keeps_exactly_top_k_and_renormalises():
    torch.manual_seed(0)
    logits = torch.randn(6, 4, 20)
    weights = gumbel_shrinkage(logits, top_k=5)
    dense = logits.softmax(-1)
    assert ((weights > 0).sum(-1) == 5).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(6, 4))
    top = dense.topk(5, dim=-1)
    kept = weights.gather(-1, top.indices)
    torch.testing.assert_close(kept, top.values / top.values.sum(-1, keepdim=True))


def test_gumbel_shrinkage_gradient_is_straight_through():
    torch.manual_seed(0)
    logits = torch.randn(3, 10, requires_grad=True)
    probe = torch.randn(3, 10)
    (gumbel_shrinkage(logits, top_k=2) * probe).sum().backward()
    dense_logits = logits.detach().clone().requires_grad_()
    (dense_logits.softmax(-1) * probe).sum().backward()
    torch.testing.assert_close(logits.grad, dense_logits.grad)
    assert logits.grad.abs().sum() > 0


def test_gumbel_shrinkage_without_k_is_softmax():
    logits = torch.randn(2, 7)
    torch.testing.assert_close(gumbel_shrinkage(logits, None), logits.softmax(-1))
    torch.testing.assert_close(gumbel_shrinkage(logits, 7), logits.softmax(-1))


def test_read_memory_is_space_aware():
    slots = torch.zeros(2, 3, 4)
    slots[0] = 1.0
    slots[1] = -1.0
    out = read_memory(torch.randn(5, 2, 4), slots, top_k=2)
    assert out.shape == (5, 2, 4)
    torch.testing.assert_close(out[:, 0], torch.ones(5, 4))
    torch.testing.assert_close(out[:, 1], -torch.ones(5, 4))


def test_memory_matrix_shapes_and_gradients():
    memory = MemoryMatrix(num_positions=4, num_slots=8, dim=6, top_k=3)
    query = torch.randn(2, 4, 6, requires_grad=True)
    out = memory(query)
    assert out.shape == (2, 4, 6)
    out.square().sum().backward()
    assert memory.slots.grad is not None and memory.slots.grad.abs().sum() > 0
    assert query.grad is not None and query.grad.abs().sum() > 0


def test_read_memory_matches_the_per_position_formula_and_its_gradients():
    torch.manual_seed(0)
    query = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)
    slots = torch.randn(4, 8, 6, dtype=torch.float64, requires_grad=True)
    batched = read_memory(query, slots, top_k=3)
    # q S^T, shrinkage over the slots, weights S, position by position
    looped = torch.stack([gumbel_shrinkage(query[:, p] @ slots[p].T, 3) @ slots[p] for p in range(4)], dim=1)
    torch.testing.assert_close(batched, looped)
    with torch.no_grad():  # the product order of inference
        torch.testing.assert_close(read_memory(query, slots, top_k=3), looped.detach())
    probe = torch.randn_like(batched)
    gradients = [torch.autograd.grad((out * probe).sum(), (query, slots)) for out in (batched, looped)]
    for ours, reference in zip(*gradients, strict=True):
        torch.testing.assert_close(ours, reference)


def test_memory_queue_read_gives_no_gradient_to_the_queue_but_to_the_query():
    queue = MemoryQueue(num_positions=3, num_slots=5, dim=4, top_k=2)
    query = torch.randn(2, 3, 4, requires_grad=True)
    queue(query).sum().backward()
    assert not queue.slots.requires_grad
    assert query.grad is not None and query.grad.abs().sum() > 0


def test_memory_queue_fifo_wraps_around():
    queue = MemoryQueue(num_positions=2, num_slots=5, dim=1, top_k=None).train()
    for step in range(4):  # 4 writes of 2 rows = 8 rows into 5 slots: wraps once
        rows = torch.arange(2 * step, 2 * step + 2, dtype=torch.float)[:, None, None].expand(2, 2, 1)
        rows = rows + torch.tensor([0.0, 100.0])[None, :, None]  # position 1 offset by 100
        queue.update(rows)
    assert int(queue.pointer) == 8 % 5
    expected = torch.tensor([5.0, 6.0, 7.0, 3.0, 4.0])  # slots 0-2 overwritten by rows 5-7
    torch.testing.assert_close(queue.slots[0, :, 0], expected)
    torch.testing.assert_close(queue.slots[1, :, 0], expected + 100)


def test_memory_queue_update_longer_than_queue_keeps_last_rows():
    queue = MemoryQueue(num_positions=1, num_slots=3, dim=1).train()
    queue.update(torch.arange(2.0)[:, None, None])
    queue.update(torch.arange(10.0, 17.0)[:, None, None])  # 7 rows into 3 slots, pointer at 2
    assert int(queue.pointer) == (2 + 7) % 3
    # sequential writes would leave rows 14, 15, 16 at slots (2 + 4) % 3, (2 + 5) % 3, (2 + 6) % 3
    torch.testing.assert_close(queue.slots[0, :, 0], torch.tensor([14.0, 15.0, 16.0]))


def test_memory_queue_refuses_updates_in_eval_mode():
    queue = MemoryQueue(num_positions=1, num_slots=3, dim=2).eval()
    before = queue.slots.clone()
    with pytest.raises(RuntimeError, match="training mode"):
        queue.update(torch.ones(1, 1, 2))
    torch.testing.assert_close(queue.slots, before)


def test_memory_queue_state_is_in_state_dict():
    queue = MemoryQueue(num_positions=2, num_slots=3, dim=2).train()
    queue.update(torch.ones(2, 2, 2))
    clone = MemoryQueue(num_positions=2, num_slots=3, dim=2)
    clone.load_state_dict(queue.state_dict())
    torch.testing.assert_close(clone.slots, queue.slots)
    assert int(clone.pointer) == 2


def test_masked_shortcut_mixes_only_in_training():
    torch.manual_seed(0)
    shortcut = MaskedShortcut(ratio=0.5)
    processed, original = torch.ones(4, 3, 8, 8), torch.zeros(4, 3, 8, 8)
    mixed = shortcut.train()(processed, original)
    assert 0 < mixed.mean() < 1
    # the mask is shared across channels
    torch.testing.assert_close(mixed[:, :1].expand_as(mixed), mixed)
    torch.testing.assert_close(shortcut.eval()(processed, original), processed)


@pytest.mark.parametrize(("mode", "positions"), [("position", 4), ("window", 4)])
def test_decoder_memory_block_shapes_and_gradients(mode, positions):
    block = DecoderMemoryBlock(channels=3, feature_size=(4, 6), grid=2, mode=mode, num_slots=7, top_k=2)
    assert block.memory.slots.shape[0] == positions
    features = torch.randn(2 * 4, 3, 4, 6, requires_grad=True)
    out = block.eval()(features)
    assert out.shape == features.shape
    out.sum().backward()
    assert block.memory.slots.grad.abs().sum() > 0
    assert features.grad.abs().sum() > 0


def test_decoder_memory_block_reads_the_bank_of_each_patch_position():
    block = DecoderMemoryBlock(channels=1, feature_size=(2, 2), grid=2, mode="position", num_slots=2, top_k=1).eval()
    with torch.no_grad():
        block.memory.slots.copy_(torch.arange(4.0)[:, None, None].expand(4, 2, 4))
    out = block(torch.randn(2 * 4, 1, 2, 2))
    torch.testing.assert_close(out.reshape(2, 4, 4), torch.arange(4.0)[None, :, None].expand(2, 4, 4))


@pytest.mark.parametrize("mode", ["position", "window"])
def test_decoder_memory_block_keeps_the_input_layout(mode):
    block = DecoderMemoryBlock(channels=3, feature_size=(4, 6), grid=2, mode=mode, num_slots=7, top_k=2).eval()
    features = torch.randn(2 * 4, 3, 4, 6)
    with torch.no_grad():
        default, channels_last = block(features), block(features.contiguous(memory_format=torch.channels_last))
    assert default.is_contiguous()
    assert channels_last.is_contiguous(memory_format=torch.channels_last) and not channels_last.is_contiguous()
    assert torch.equal(channels_last, default)


def test_patches_round_trip_and_order():
    image = torch.arange(2 * 1 * 6 * 6, dtype=torch.float).reshape(2, 1, 6, 6)
    patches = image_to_patches(image, grid=3)
    assert patches.shape == (18, 1, 2, 2)
    torch.testing.assert_close(patches[1 * 9 + 5], image[1, :, 2:4, 4:6])  # image 1, row 1, col 2
    torch.testing.assert_close(patches_to_image(patches, grid=3), image)


def test_patches_keep_a_channels_last_layout_and_its_values():
    image = torch.randn(2, 3, 6, 6)
    channels_last = image.contiguous(memory_format=torch.channels_last)
    patches = image_to_patches(channels_last, grid=3)
    assert patches.is_contiguous(memory_format=torch.channels_last) and not patches.is_contiguous()
    assert torch.equal(patches, image_to_patches(image, grid=3))
    merged = patches_to_image(patches, grid=3)
    assert merged.is_contiguous(memory_format=torch.channels_last) and not merged.is_contiguous()
    assert torch.equal(merged, image)
    assert image_to_patches(image, grid=3).is_contiguous()  # the default layout stays the default


def test_grid_neighbours_zero_padded():
    features = torch.arange(1.0, 10.0).reshape(1, 9, 1)  # 3x3 grid holding 1..9
    neighbours = grid_neighbours(features, grid=3)[0, :, :, 0]
    torch.testing.assert_close(neighbours[4], torch.tensor([1.0, 2, 3, 4, 6, 7, 8, 9]))
    torch.testing.assert_close(neighbours[0], torch.tensor([0.0, 0, 0, 0, 2, 0, 4, 5]))


def test_memory_queue_nearest_distance_is_per_position_cosine():
    queue = MemoryQueue(num_positions=2, num_slots=2, dim=2)
    with torch.no_grad():
        queue.slots.copy_(torch.tensor([[[1.0, 0.0], [0.0, 2.0]], [[-1.0, 0.0], [-1.0, 0.0]]]))
    query = torch.tensor([[[3.0, 0.0], [3.0, 0.0]], [[1.0, 1.0], [0.0, 1.0]]])
    distance = queue.nearest_distance(query)
    expected = torch.tensor([[0.0, 2.0], [1 - 2**-0.5, 1.0]])
    torch.testing.assert_close(distance, expected)


def test_feature_bank_keeps_the_last_images_or_repeats_fewer():
    bank = FeatureBank(num_positions=2, num_slots=3, dim=4)
    assert "slots" in bank.state_dict()
    features = torch.randn(5, 2, 4)
    bank.fill(features)
    unit = features / features.norm(dim=-1, keepdim=True)  # stored unit-length
    torch.testing.assert_close(bank.slots, unit[2:].transpose(0, 1))
    bank.fill(features[:2])  # fewer images than slots: repeated, so every slot holds a real feature
    torch.testing.assert_close(bank.slots, unit[[0, 1, 0]].transpose(0, 1))
    torch.testing.assert_close(bank.nearest_distance(3 * features[:2]), torch.zeros(2, 2), atol=1e-6, rtol=0)
    # the cosine distance of SpaceAwareMemory, without normalising the bank at each call
    query = torch.randn(4, 2, 4)
    torch.testing.assert_close(bank.nearest_distance(query), SpaceAwareMemory.nearest_distance(bank, query))
    with pytest.raises(ValueError, match="at least one image"):
        bank.fill(features[:0])
