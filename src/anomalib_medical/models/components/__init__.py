"""Building blocks shared by several models (memories, in-painting, discriminator, patch grids, U-Net)."""

from .unet import ConvNormGELU, UNet, UNetStage

__all__ = ["ConvNormGELU", "UNet", "UNetStage"]
