"""Image <-> patch-grid reshaping and patch-grid neighbourhoods.

Patches are ordered row-major inside each image and image-major across the batch: patch ``p`` of
image ``b`` sits at index ``b * grid**2 + p`` with ``p = row * grid + col``. All functions are pure
reshapes/slices, so they trace and export without data-dependent control flow. The two reshaping functions keep a
channels-last input channels-last (the layout of CPU training, see ``AdversarialInpaintingMixin.setup``): the
rearrangement is then one copy in that layout, not a copy to the default layout followed by another back for the
next convolution.
"""

import torch
from torch.nn import functional as F

# (row, col) offsets of the 8 neighbours of a patch, row-major, centre excluded.
NEIGHBOUR_OFFSETS: tuple[tuple[int, int], ...] = tuple(
    (dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)
)


def _is_channels_last(tensor: torch.Tensor) -> bool:
    """Whether a 4-D tensor is laid out channels-last and not also in the default layout (e.g. one channel)."""
    return tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous()


def layout_like(tensor: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``tensor`` laid out channels-last if ``reference`` is (a copy), else ``tensor`` as it is.

    For a block whose arithmetic leaves the default layout (a reshape to vectors and back): its output then goes
    on in the layout of its input, and the convolutions after it stay on oneDNN's channels-last kernels.
    """
    return tensor.contiguous(memory_format=torch.channels_last) if _is_channels_last(reference) else tensor


def image_to_patches(image: torch.Tensor, grid: int) -> torch.Tensor:
    """Cut images into a ``grid x grid`` set of non-overlapping patches.

    Args:
        image: Tensor of shape ``(B, C, H, W)`` with ``H`` and ``W`` divisible by ``grid``.
        grid: Number of patches per side.

    Returns:
        Tensor of shape ``(B * grid**2, C, H // grid, W // grid)``.

    """
    batch, channels, height, width = image.shape
    patch_h, patch_w = height // grid, width // grid
    if _is_channels_last(image):
        patches = image.permute(0, 2, 3, 1).reshape(batch, grid, patch_h, grid, patch_w, channels)
        patches = patches.permute(0, 1, 3, 2, 4, 5).reshape(batch * grid * grid, patch_h, patch_w, channels)
        return patches.permute(0, 3, 1, 2)
    patches = image.reshape(batch, channels, grid, patch_h, grid, patch_w)
    return patches.permute(0, 2, 4, 1, 3, 5).reshape(batch * grid * grid, channels, patch_h, patch_w)


def patches_to_image(patches: torch.Tensor, grid: int) -> torch.Tensor:
    """Inverse of :func:`image_to_patches`.

    Args:
        patches: Tensor of shape ``(B * grid**2, C, h, w)``.
        grid: Number of patches per side.

    Returns:
        Tensor of shape ``(B, C, grid * h, grid * w)``.

    """
    _, channels, patch_h, patch_w = patches.shape
    if _is_channels_last(patches):
        image = patches.permute(0, 2, 3, 1).reshape(-1, grid, grid, patch_h, patch_w, channels)
        image = image.permute(0, 1, 3, 2, 4, 5).reshape(-1, grid * patch_h, grid * patch_w, channels)
        return image.permute(0, 3, 1, 2)
    image = patches.reshape(-1, grid, grid, channels, patch_h, patch_w)
    return image.permute(0, 3, 1, 4, 2, 5).reshape(-1, channels, grid * patch_h, grid * patch_w)


def grid_neighbours(features: torch.Tensor, grid: int) -> torch.Tensor:
    """Gather the 8 neighbours of every position of a patch grid, zero-padded at the border.

    Args:
        features: Tensor of shape ``(B, grid**2, D)``, one vector per patch position.
        grid: Number of patches per side.

    Returns:
        Tensor of shape ``(B, grid**2, 8, D)``; neighbours in :data:`NEIGHBOUR_OFFSETS` order, zeros
        where a neighbour falls outside the grid.

    """
    batch, _, dim = features.shape
    padded = F.pad(features.reshape(batch, grid, grid, dim), (0, 0, 1, 1, 1, 1))
    shifted = [padded[:, 1 + dr : 1 + dr + grid, 1 + dc : 1 + dc + grid] for dr, dc in NEIGHBOUR_OFFSETS]
    return torch.stack(shifted, dim=3).reshape(batch, grid * grid, len(NEIGHBOUR_OFFSETS), dim)
