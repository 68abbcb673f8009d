"""In-painting block (SQUID, Xiang et al., CVPR 2023, Sec. 3.3).

Every patch feature is replaced by a feature in-painted from memory: the patch's own feature and its
8 neighbours are looked up in a space-aware :class:`MemoryQueue`, a transformer layer lets the patch
attend to its neighbours' retrieved features, a binary position code is appended, and a masked
shortcut mixes in the original feature during training.
"""

import math

import torch
from torch import nn

from .memory import MaskedShortcut, MemoryQueue
from .patches import grid_neighbours


def binary_position_code(num_positions: int) -> torch.Tensor:
    """Binary code of each position index, most significant bit first.

    Args:
        num_positions: Number of positions ``P``.

    Returns:
        Float tensor of shape ``(P, floor(log2(P)) + 1)`` with entries in ``{0, 1}``.

    """
    bits = int(math.log2(num_positions)) + 1
    exponents = torch.arange(bits - 1, -1, -1)
    return ((torch.arange(num_positions)[:, None] >> exponents) & 1).float()


class NeighbourAttention(nn.Module):
    """Transformer layer in-painting a patch from its neighbours (SQUID Eq. 3).

    ``out = ReLU(LN(MHA(query, neighbours)) + centre)`` followed by
    ``out = ReLU(LN(FF(out)) + out)``.

    Args:
        dim: Feature dimension.
        num_heads: Attention heads.
        dropout: Dropout in the feed-forward network.

    """

    def __init__(self, dim: int, num_heads: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.feed_forward = nn.Sequential(
            nn.Linear(dim, dim // 4),
            nn.Dropout(dropout),
            nn.ReLU(),
            nn.Linear(dim // 4, dim),
            nn.Dropout(dropout),
        )
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, query: torch.Tensor, centre: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        """Attend from ``query`` ``(N, D)`` to ``neighbours`` ``(N, K, D)``; residual on ``centre`` ``(N, D)``."""
        attended, _ = self.attention(query[:, None], neighbours, neighbours, need_weights=False)
        out = torch.relu(self.norm1(attended[:, 0]) + centre)
        return torch.relu(self.norm2(self.feed_forward(out)) + out)


class InpaintingBlock(nn.Module):
    """SQUID in-painting block on a grid of patch feature maps.

    Args:
        channels: Channels ``C`` of each patch feature map (``C`` divisible by 4).
        feature_size: ``(h, w)`` of each patch feature map.
        grid: Patches per side (``P = grid**2`` positions).
        num_slots: Memory queue length per position.
        top_k: Gumbel shrinkage parameter of the queue.
        num_heads: Attention heads.
        mask_ratio: Masked-shortcut ratio (probability of keeping the in-painted feature).
        dropout: Feed-forward dropout.
        neighbour_attention: In-paint each patch from its neighbours' retrieved features with the
            transformer layer (SQUID; SimSID's ``use_inpaint``). Without it the block replaces each patch
            feature by its own memory read-out (SimSID's ZhangLab setting) and builds no transformer.

    The memory dimension is ``C // 4 * h * w`` (the authors' ``memory_channel``).

    """

    def __init__(
        self,
        channels: int,
        feature_size: tuple[int, int],
        grid: int,
        num_slots: int = 200,
        top_k: int | None = 5,
        num_heads: int = 8,
        mask_ratio: float = 0.95,
        dropout: float = 0.0,
        neighbour_attention: bool = True,
    ) -> None:
        super().__init__()
        self.grid = grid
        reduced = channels // 4
        self.memory_dim = reduced * feature_size[0] * feature_size[1]
        self.reduce = nn.Sequential(
            nn.Conv2d(channels, reduced, 1, bias=False),
            nn.BatchNorm2d(reduced),
            nn.ReLU(),
        )
        if neighbour_attention and self.memory_dim % num_heads:
            msg = (
                f"num_heads must divide the in-painting feature dimension {self.memory_dim} (bottleneck channels // 4 "
                f"x patch feature height x width = {reduced} x {feature_size[0]} x {feature_size[1]}), got {num_heads}"
            )
            raise ValueError(msg)
        self.memory = MemoryQueue(grid * grid, num_slots, self.memory_dim, top_k)
        self.transformer = NeighbourAttention(self.memory_dim, num_heads, dropout) if neighbour_attention else None
        self.register_buffer("position_code", binary_position_code(grid * grid), persistent=False)
        self.position_code: torch.Tensor
        self.expand = nn.Sequential(
            nn.Conv2d(reduced + self.position_code.shape[1], channels, 1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
        )
        self.shortcut = MaskedShortcut(mask_ratio)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """In-paint patch feature maps.

        Args:
            features: Tensor of shape ``(B * grid**2, C, h, w)``.

        Returns:
            The in-painted features (same shape) and the queries ``(B, grid**2, memory_dim)``; the caller
            enqueues the queries after the optimiser step (training only).

        """
        num, _, height, width = features.shape
        positions = self.grid * self.grid
        reduced = self.reduce(features)
        query = reduced.reshape(-1, positions, self.memory_dim)
        retrieved = self.memory(query)
        if self.transformer is None:
            inpainted = retrieved.reshape(num, -1, height, width)
        else:
            neighbours = grid_neighbours(retrieved, self.grid).flatten(0, 1)
            inpainted = self.transformer(query.flatten(0, 1), retrieved.flatten(0, 1), neighbours)
            inpainted = inpainted.reshape(num, -1, height, width)
        code = self.position_code.repeat(num // positions, 1)[:, :, None, None].expand(-1, -1, height, width)
        out = self.expand(torch.cat([inpainted, code.to(inpainted.dtype)], dim=1))
        return self.shortcut(out, features), query
