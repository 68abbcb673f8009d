"""Building blocks shared by several models (memories, in-painting, discriminator, patch grids)."""

from .conv_blocks import ConvEncoder, ResidualDoubleConv, TimmEncoder, UpBlock
from .discriminator import ImageDiscriminator
from .inpainting import InpaintingBlock, NeighbourAttention, binary_position_code
from .memory import (
    DecoderMemoryBlock,
    FeatureBank,
    MaskedShortcut,
    MemoryMatrix,
    MemoryQueue,
    SpaceAwareMemory,
    gumbel_shrinkage,
    read_memory,
)
from .patches import grid_neighbours, image_to_patches, patches_to_image
from .unet import ConvNormGELU, UNet, UNetStage

__all__ = [
    "ConvEncoder",
    "ConvNormGELU",
    "DecoderMemoryBlock",
    "FeatureBank",
    "ImageDiscriminator",
    "InpaintingBlock",
    "MaskedShortcut",
    "MemoryMatrix",
    "MemoryQueue",
    "NeighbourAttention",
    "ResidualDoubleConv",
    "SpaceAwareMemory",
    "TimmEncoder",
    "UNet",
    "UNetStage",
    "UpBlock",
    "binary_position_code",
    "grid_neighbours",
    "gumbel_shrinkage",
    "image_to_patches",
    "patches_to_image",
    "read_memory",
]
