"""Image discriminator of SQUID/SimSID (the authors' ``SimpleDiscriminator``).

The authors score test images with the discriminator in training mode, one image per batch (their
``alert.py`` never calls ``discriminator.eval()``), so its batch norms normalise every image by its own
statistics. ``per_image=True`` computes exactly that (batch norm of a batch of one is instance norm with the
batch norm's affine parameters) for any batch size, and reads or writes no running statistic.
"""

from collections.abc import Sequence

import torch
from torch import nn

from .validation import check_number


class ImageDiscriminator(nn.Module):
    """Strided-convolution discriminator returning one real/fake logit per image.

    Each stage is a 5x5 convolution with stride 2 (halving the size, rounding up), batch norm (except
    on the first stage) and LeakyReLU(0.2); a linear layer maps the flattened last map to a logit.

    Args:
        image_size: ``(H, W)`` of the input images.
        in_channels: Input channels.
        channels: Output channels of the stages.

    """

    def __init__(
        self,
        image_size: tuple[int, int],
        in_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64, 128, 128),
    ) -> None:
        super().__init__()
        for stage_channels in channels:
            check_number("discriminator_channels", stage_channels, 1, integer=True)
        layers: list[nn.Module] = []
        height, width = image_size
        for index, out_channels in enumerate(channels):
            layers.append(nn.Conv2d(in_channels, out_channels, 5, stride=2, padding=2))
            if index > 0:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.LeakyReLU(0.2))
            in_channels = out_channels
            height, width = (height + 1) // 2, (width + 1) // 2
        self.features = nn.Sequential(*layers)
        self.output_size = (height, width)
        self.classifier = nn.Linear(in_channels * height * width, 1)

    def forward(self, image: torch.Tensor, per_image: bool = False) -> torch.Tensor:
        """Return logits of shape ``(B,)`` for images ``(B, C, H, W)``.

        Args:
            image: Images in the generator's output range.
            per_image: Normalise each image by its own batch-norm statistics (the authors' train-mode scoring of
                one image per batch) instead of the batch norms' usual behaviour; no buffer is read or written.

        """
        if not per_image:
            if self.training and len(image) == 1 and self.output_size == (1, 1) and len(self.features) > 2:
                msg = (
                    f"A training batch of one image reaches the discriminator's last batch norm as one value per "
                    f"channel (its last map is 1 x 1 for images of {tuple(image.shape[-2:])}), which batch norm "
                    "cannot normalise. Train with batches of at least 2 images (e.g. a training-set size that does "
                    "not leave a last batch of one) or with larger images."
                )
                raise ValueError(msg)
            return self.classifier(self.features(image).flatten(1))[:, 0]
        x = image
        for layer in self.features:
            if isinstance(layer, nn.BatchNorm2d):
                mean = x.mean(dim=(2, 3), keepdim=True)
                var = (x - mean).pow(2).mean(dim=(2, 3), keepdim=True)  # biased, as batch norm normalises
                x = (x - mean) * torch.rsqrt(var + layer.eps) * layer.weight[:, None, None] + layer.bias[:, None, None]
            else:
                x = layer(x)
        return self.classifier(x.flatten(1))[:, 0]
