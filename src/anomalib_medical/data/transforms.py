"""Intensity transforms for grey-level radiographs (torchvision v2 style).

Channel convention (DESIGN section 3): the datamodules yield 3-channel float images in [0, 1] - a grey radiograph
is replicated into three identical channels (anomalib's ``read_image`` converts to RGB) - because anomalib's
validators, collate functions and export probe expect 3 channels. Models that work on one channel reduce the
input to one channel *inside their torch model's* ``forward`` (a mean over the channels, which returns the grey
image exactly for replicated channels), so the exported graph accepts the 3-channel images anomalib sends at
deployment. The transforms below therefore work on any number of channels, each channel on its own.

- :class:`HistogramEqualisation` / :func:`equalise_histogram`: histogram equalisation of float images, per image
  and per channel, matching ``skimage.exposure.equalize_hist`` (Baugh et al. 2023 and Mueller et al. 2023
  equalise radiograph histograms before training).
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import Transform


def equalise_histogram(image: torch.Tensor, nbins: int = 256, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Histogram-equalise each channel of each image of a float tensor.

    Same definition as ``skimage.exposure.equalize_hist`` for float images: ``nbins`` equal-width bins between
    the minimum and maximum of the (masked) pixels, the normalised cumulative histogram evaluated at every pixel
    by linear interpolation between bin centres (values below the first / above the last centre take the first
    / last value). A constant channel is binned over ``[v - 0.5, v + 0.5]`` as :func:`numpy.histogram` does.
    The output lies in ``(0, 1]`` whatever the input range.

    Args:
        image: Float tensor ``(..., H, W)``, e.g. ``(C, H, W)`` or ``(B, C, H, W)``; every ``(H, W)`` plane is
            equalised on its own.
        nbins: Number of histogram bins.
        mask: Optional boolean tensor broadcastable to ``image`` (e.g. ``(H, W)`` or ``(B, 1, H, W)``): only
            pixels where it is true build the histogram; all pixels are mapped.

    Returns:
        The equalised tensor, same shape, dtype and device as ``image``.

    Raises:
        TypeError: If ``image`` is not a floating-point tensor.
        ValueError: If ``image`` has fewer than 2 dimensions, ``nbins < 1``, or the mask selects no pixel of a
            plane.

    """
    if not image.is_floating_point():
        msg = f"equalise_histogram expects a floating-point tensor, got {image.dtype}."
        raise TypeError(msg)
    if image.ndim < 2:
        msg = f"equalise_histogram expects a tensor (..., H, W), got shape {tuple(image.shape)}."
        raise ValueError(msg)
    if nbins < 1:
        msg = f"nbins must be at least 1, got {nbins}."
        raise ValueError(msg)
    shape = image.shape
    work_dtype = torch.float64 if image.dtype == torch.float64 else torch.float32
    planes = image.reshape(-1, shape[-2] * shape[-1]).to(work_dtype)
    if mask is None:
        selected = torch.ones_like(planes, dtype=torch.bool)
    else:
        selected = torch.broadcast_to(mask.to(device=image.device, dtype=torch.bool), shape).reshape(planes.shape)
        if not torch.compiler.is_compiling() and not bool(selected.any(dim=1).all()):
            msg = "equalise_histogram: the mask selects no pixel in at least one image plane."
            raise ValueError(msg)
    low = planes.masked_fill(~selected, torch.inf).amin(dim=1, keepdim=True)
    high = planes.masked_fill(~selected, -torch.inf).amax(dim=1, keepdim=True)
    constant = high == low
    low = torch.where(constant, low - 0.5, low)
    high = torch.where(constant, high + 0.5, high)
    position = (planes - low) * (nbins / (high - low))  # bin coordinate: bin k spans [k, k + 1)
    bins = position.floor().clamp(0, nbins - 1).long()
    counts = torch.zeros(planes.shape[0], nbins, dtype=work_dtype, device=image.device)
    counts.scatter_add_(1, bins, selected.to(work_dtype))
    cdf = counts.cumsum(dim=1)
    cdf = cdf / cdf[:, -1:]
    centred = position - 0.5  # bin centre k sits at centred == k
    left = centred.floor().clamp(0, nbins - 1)
    weight = (centred - left).clamp(0, 1)
    right = (left + 1).clamp(max=nbins - 1)
    out = cdf.gather(1, left.long()) * (1 - weight) + cdf.gather(1, right.long()) * weight
    return out.reshape(shape).to(image.dtype)


def _is_plain_tensor(inpt: Any) -> bool:
    """Whether ``inpt`` is a tensor that is not a torchvision TVTensor (treated as an image by v2 transforms)."""
    return isinstance(inpt, torch.Tensor) and not isinstance(inpt, tv_tensors.TVTensor)


class HistogramEqualisation(Transform):
    """Histogram equalisation for grey-level radiographs, per image and per channel (torchvision v2 transform).

    Works on float tensors in any range (typically [0, 1]) shaped ``(C, H, W)`` or ``(B, C, H, W)``, on any
    device; the result is in ``(0, 1]``. Matches ``skimage.exposure.equalize_hist`` with the same ``nbins`` (see
    :func:`equalise_histogram`). Images (``tv_tensors.Image``, ``tv_tensors.Video`` and plain tensors) are
    transformed; ``tv_tensors.Mask`` and other TVTensors pass through untouched.

    The computation is pure torch (``masked_fill``, ``scatter_add``, ``cumsum``, ``gather``) on static shapes, so
    it runs on batches inside a model's pre-processor and exports with ``torch.onnx.export(dynamo=True)`` at
    opset 18 (ONNX ``ScatterElements`` with ``reduction="add"`` needs opset >= 16) to ONNX and OpenVINO (checked
    in ``tests/unit/test_transforms.py``). The check that a mask selects pixels in every plane is skipped while
    tracing.

    Args:
        nbins: Number of histogram bins.
        mask: Optional boolean tensor broadcastable to the images (e.g. ``(H, W)``): only its pixels build the
            histogram (e.g. to ignore a black border); all pixels are mapped.

    Example:
        >>> import torch
        >>> image = torch.rand(3, 64, 64) ** 3
        >>> out = HistogramEqualisation(nbins=256)(image)
        >>> out.shape
        torch.Size([3, 64, 64])

    """

    _transformed_types = (tv_tensors.Image, tv_tensors.Video, _is_plain_tensor)

    def __init__(self, nbins: int = 256, mask: torch.Tensor | None = None) -> None:
        super().__init__()
        if nbins < 1:
            msg = f"nbins must be at least 1, got {nbins}."
            raise ValueError(msg)
        self.nbins = nbins
        self.register_buffer("mask", mask.to(torch.bool) if mask is not None else None, persistent=False)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """Equalise one image, video or plain tensor."""
        if isinstance(inpt, tv_tensors.TVTensor):
            return tv_tensors.wrap(equalise_histogram(inpt.as_subclass(torch.Tensor), self.nbins, self.mask), like=inpt)
        return equalise_histogram(inpt, self.nbins, self.mask)
