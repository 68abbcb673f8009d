"""Space-aware memories with Gumbel shrinkage (SQUID, Xiang et al., CVPR 2023, Sec. 3.2-3.3).

A *space-aware* memory keeps one bank of slots per position (patch position, or sub-window of a
patch): a query at position ``p`` only reads bank ``p``. Two kinds share the read operation:

- :class:`MemoryQueue`: slots are a first-in-first-out queue of detached encoder features of training
  images (registered buffers, written only by an explicit :meth:`MemoryQueue.update`).
- :class:`MemoryMatrix`: slots are learned parameters.

:class:`FeatureBank` (ours) holds eval-mode encoder features of recent training images in the same layout; it
is never read by attention, only searched for each patch's nearest normal feature when scoring.

Reading is dot-product attention over the slots followed by Gumbel shrinkage: keep the top-k
weights, hard-shrink the rest to zero, renormalise, and pass gradients straight through.
All positions are read and written in single batched tensor ops.
"""

import math
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from .patches import layout_like

DecoderMemoryMode = Literal["none", "position", "window"]


def gumbel_shrinkage(logits: torch.Tensor, top_k: int | None, dim: int = -1) -> torch.Tensor:
    """Softmax attention weights with Gumbel shrinkage (SQUID Sec. 3.2, "Gumbel shrinkage").

    The forward value keeps the ``top_k`` largest softmax weights along ``dim``, sets the others to
    zero and renormalises them to sum to one; the backward pass uses the gradient of the dense softmax
    (straight-through estimator).

    Args:
        logits: Attention logits.
        top_k: Number of weights kept per query; ``None`` (or ``>=`` the number of slots) keeps all.
        dim: Dimension holding the slots.

    Returns:
        Attention weights with the shape of ``logits``.

    """
    weights = logits.softmax(dim)
    if top_k is None or top_k >= logits.shape[dim]:
        return weights
    kth_largest = weights.topk(top_k, dim=dim).values.narrow(dim, top_k - 1, 1)
    shrunk = torch.where(weights >= kth_largest, weights, torch.zeros_like(weights))
    shrunk = shrunk / shrunk.sum(dim, keepdim=True)
    return weights + (shrunk - weights).detach()


def read_memory(query: torch.Tensor, slots: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """Retrieve a convex combination of memory slots per position.

    The products are batched over positions with the slots as the left factor, ``(P, M, D) @ (P, D, N)``, so
    that both gradients of ``slots`` come out ``(P, M, D)``-contiguous; with the query on the left the first
    one is a transposed view, and adding the two walks it with strided reads (SQUID's DigitAnatomy decoder
    memory on CPU, 29.5 M slots: 0.47 s for that addition; the block's forward and backward 0.44 s -> 0.31 s).
    Without gradients the query is the left factor, ``(P, N, D) @ (P, D, M)``: for a few queries the faster
    product (the same memory, one test image on one CPU thread: 23 -> 16 ms).

    Args:
        query: Tensor of shape ``(N, P, D)``: ``N`` queries at each of ``P`` positions.
        slots: Tensor of shape ``(P, M, D)``: ``M`` slots per position.
        top_k: Gumbel shrinkage parameter, see :func:`gumbel_shrinkage`.

    Returns:
        Tensor of shape ``(N, P, D)``.

    """
    query = query.transpose(0, 1)  # (P, N, D)
    if not torch.is_grad_enabled():
        weights = gumbel_shrinkage(torch.bmm(query, slots.transpose(1, 2)), top_k, dim=2)  # (P, N, M)
        return torch.bmm(weights, slots).transpose(0, 1)
    weights = gumbel_shrinkage(torch.bmm(slots, query.transpose(1, 2)), top_k, dim=1)  # (P, M, N)
    return torch.bmm(weights.transpose(1, 2), slots).transpose(0, 1)


def _uniform_slots(num_positions: int, num_slots: int, dim: int) -> torch.Tensor:
    bound = 1.0 / math.sqrt(dim)
    return torch.empty(num_positions, num_slots, dim).uniform_(-bound, bound)


class SpaceAwareMemory(nn.Module):
    """Base of the space-aware memories: ``slots`` of shape ``(positions, num_slots, dim)``.

    Args:
        top_k: Gumbel shrinkage parameter (the authors' ``shrink_thres``).

    """

    slots: torch.Tensor

    def __init__(self, top_k: int | None = 5) -> None:
        super().__init__()
        self.top_k = top_k

    def forward(self, query: torch.Tensor) -> torch.Tensor:
        """Read the memory with queries of shape ``(N, P, D)``; see :func:`read_memory`."""
        return read_memory(query, self.slots, self.top_k)

    def nearest_distance(self, query: torch.Tensor) -> torch.Tensor:
        """Cosine distance of each query ``(N, P, D)`` to the nearest slot of its position.

        Returns:
            Tensor of shape ``(N, P)`` in ``[0, 2]``: 0 when the query points like a stored slot.

        """
        similarity = torch.einsum("npd,pmd->npm", F.normalize(query, dim=-1), F.normalize(self.slots, dim=-1))
        return 1.0 - similarity.amax(dim=-1)


class MemoryMatrix(SpaceAwareMemory):
    """Space-aware learned memory: ``num_positions`` banks of ``num_slots`` learned vectors.

    Args:
        num_positions: Number of independent banks (one per position).
        num_slots: Slots per bank.
        dim: Slot dimension.
        top_k: Gumbel shrinkage parameter (the authors' ``shrink_thres``).

    """

    def __init__(self, num_positions: int, num_slots: int, dim: int, top_k: int | None = 5) -> None:
        super().__init__(top_k)
        self.slots = nn.Parameter(_uniform_slots(num_positions, num_slots, dim))


class MemoryQueue(SpaceAwareMemory):
    """Space-aware memory queue: ``num_positions`` FIFO queues of detached features (SQUID Sec. 3.2).

    The queue contents and the write pointer are registered buffers (saved in checkpoints, baked into
    exports); reading gives no gradient to them. :meth:`update` is the only writer and refuses to run
    in eval mode.

    Args:
        num_positions: Number of queues (one per patch position).
        num_slots: Queue length.
        dim: Feature dimension.
        top_k: Gumbel shrinkage parameter.

    """

    def __init__(self, num_positions: int, num_slots: int, dim: int, top_k: int | None = 5) -> None:
        super().__init__(top_k)
        self.register_buffer("slots", _uniform_slots(num_positions, num_slots, dim))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.pointer: torch.Tensor

    @property
    def num_slots(self) -> int:
        """Queue length."""
        return self.slots.shape[1]

    @torch.no_grad()
    def update(self, features: torch.Tensor) -> None:
        """Enqueue features first-in-first-out, overwriting the oldest slots.

        Args:
            features: Tensor of shape ``(N, P, D)``, written in order; if ``N`` exceeds the queue
                length only the last ``num_slots`` rows survive, as with sequential writes.

        Raises:
            RuntimeError: If called in eval mode.

        """
        if not self.training:
            msg = "MemoryQueue.update must only be called in training mode."
            raise RuntimeError(msg)
        num_new = features.shape[0]
        kept = min(num_new, self.num_slots)
        offsets = torch.arange(num_new - kept, num_new, device=self.pointer.device)
        index = (self.pointer + offsets) % self.num_slots
        self.slots.index_copy_(1, index, features[num_new - kept :].detach().transpose(0, 1).to(self.slots.dtype))
        self.pointer.copy_((self.pointer + num_new) % self.num_slots)


class FeatureBank(SpaceAwareMemory):
    """Eval-mode encoder features of ``num_slots`` recent training images, per patch position (ours, for scoring).

    The memory queue holds the 1 x 1-reduced in-painting queries of the last images, written in training mode
    while the encoder was still changing. The bank holds the eval-mode bottleneck features (before that
    reduction) of more images, computed with the weights of the end of an epoch, so that
    :meth:`nearest_distance` measures a patch against the normal variation the trained encoder sees (PatchCore's
    memory bank, kept per position). The features are stored unit-length, so that a search does not normalise the
    whole bank again at every call. A registered buffer: saved in checkpoints and baked into exports; :meth:`fill`
    is its only writer.

    Args:
        num_positions: Number of positions (patches).
        num_slots: Images whose features the bank holds.
        dim: Feature dimension.

    """

    def __init__(self, num_positions: int, num_slots: int, dim: int) -> None:
        super().__init__(top_k=None)
        self.register_buffer("slots", torch.zeros(num_positions, num_slots, dim))

    @property
    def num_slots(self) -> int:
        """Images the bank holds."""
        return self.slots.shape[1]

    def nearest_distance(self, query: torch.Tensor) -> torch.Tensor:
        """Cosine distance ``(N, P)`` of each query ``(N, P, D)`` to the nearest stored feature of its position."""
        similarity = torch.einsum("npd,pmd->npm", F.normalize(query, dim=-1), self.slots)
        return 1.0 - similarity.amax(dim=-1)

    @torch.no_grad()
    def fill(self, features: torch.Tensor) -> None:
        """Replace the bank by ``features`` ``(N, P, D)``, stored unit-length.

        With more than ``num_slots`` images only the last ``num_slots`` are kept; with fewer, they are repeated
        to fill every slot (a repeated feature does not change a nearest distance).

        Raises:
            ValueError: If ``features`` holds no image.

        """
        if not len(features):
            msg = "FeatureBank.fill needs the features of at least one image."
            raise ValueError(msg)
        index = torch.arange(self.num_slots, device=features.device) % len(features)
        kept = features[-self.num_slots :] if len(features) >= self.num_slots else features[index]
        self.slots.copy_(F.normalize(kept, dim=-1).transpose(0, 1).to(self.slots.dtype))


class MaskedShortcut(nn.Module):
    """Masked shortcut (SQUID Sec. 3.3): randomly mix processed and shortcut features in training.

    In training each spatial location takes the processed feature with probability ``ratio`` and the
    shortcut feature otherwise (a Bernoulli mask shared across channels); in eval mode the processed
    feature is returned unchanged.

    Args:
        ratio: Probability of keeping the processed feature.

    """

    def __init__(self, ratio: float = 0.95) -> None:
        super().__init__()
        self.ratio = ratio

    def forward(self, processed: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        """Mix ``(N, C, H, W)`` tensors."""
        if not self.training or self.ratio >= 1.0:
            return processed
        size = (processed.shape[0], 1, *processed.shape[2:])
        mask = torch.bernoulli(torch.full(size, self.ratio, device=processed.device, dtype=processed.dtype))
        return mask * processed + (1.0 - mask) * shortcut


class DecoderMemoryBlock(nn.Module):
    """Hierarchical decoder memory: a space-aware :class:`MemoryMatrix` on patch feature maps.

    Two layouts of the authors' code are supported:

    - ``"position"``: one bank per patch position; each patch's whole feature map is one slot query
      (``MemoryMatrixBlockV3``, the authors' DigitAnatomy setting).
    - ``"window"``: each patch's feature map is cut into 2 x 2 windows, one bank per window position
      shared by all patches (``MemoryMatrixBlock``, the authors' chest X-ray setting).

    The retrieved map replaces the input through a :class:`MaskedShortcut`, in the input's memory layout
    (channels-last in CPU training and inference: the next up-block's convolutions stay on their fast kernels;
    SQUID's DigitAnatomy inference at batch 16 on one CPU thread, 62 -> 55 ms per image).

    Args:
        channels: Channels of the feature map.
        feature_size: ``(h, w)`` of one patch's feature map.
        grid: Patches per side.
        mode: ``"position"`` or ``"window"``.
        num_slots: Slots per bank.
        top_k: Gumbel shrinkage parameter.
        mask_ratio: Masked-shortcut ratio.

    """

    def __init__(
        self,
        channels: int,
        feature_size: tuple[int, int],
        grid: int,
        mode: DecoderMemoryMode,
        num_slots: int = 200,
        top_k: int | None = 5,
        mask_ratio: float = 0.95,
    ) -> None:
        super().__init__()
        if mode not in {"position", "window"}:
            msg = f"Unknown decoder memory mode {mode!r}; expected 'position' or 'window'."
            raise ValueError(msg)
        self.windows = 1 if mode == "position" else 2
        height, width = feature_size
        if height % self.windows or width % self.windows:
            msg = f"Feature size {feature_size} is not divisible into {self.windows}x{self.windows} windows."
            raise ValueError(msg)
        num_positions = grid * grid if mode == "position" else self.windows**2
        dim = channels * (height // self.windows) * (width // self.windows)
        self.memory = MemoryMatrix(num_positions, num_slots, dim, top_k)
        self.shortcut = MaskedShortcut(mask_ratio)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Replace patch feature maps ``(B * grid**2, C, h, w)`` by their memory retrievals."""
        num, channels, height, width = features.shape
        win = self.windows
        query = features.reshape(num, channels, win, height // win, win, width // win).permute(0, 2, 4, 1, 3, 5)
        num_positions = self.memory.slots.shape[0]
        retrieved = self.memory(query.reshape(-1, num_positions, self.memory.slots.shape[-1]))
        retrieved = retrieved.reshape(num, win, win, channels, height // win, width // win).permute(0, 3, 1, 4, 2, 5)
        return layout_like(self.shortcut(retrieved.reshape(num, channels, height, width), features), features)
