"""INT8 quantisation helpers: which convolutions stay in FP32, and the missing-datamodule error."""

import openvino as ov
import pytest
import torch
from torch import nn

from anomalib_medical.models.components.quantisation import quantise_int8, single_channel_convolutions


class _Head(nn.Module):
    """A 3 -> 1 channel convolution (quantised) followed by a 1 -> 1 smoothing filter (kept in FP32)."""

    def __init__(self) -> None:
        super().__init__()
        self.project = nn.Conv2d(3, 1, 3, padding=1)
        self.smooth = nn.Conv2d(1, 1, 5, padding=2, bias=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.smooth(self.project(image)).amax(dim=(1, 2, 3))


def _openvino_model() -> ov.Model:
    return ov.convert_model(_Head().eval(), example_input=torch.rand(2, 3, 16, 16))


def test_only_single_channel_convolutions_are_kept_in_fp32() -> None:
    model = _openvino_model()
    convolutions = [op for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    assert len(convolutions) == 2
    kept = single_channel_convolutions(model)
    assert len(kept) == 1
    (smoothing,) = (op for op in convolutions if op.get_friendly_name() in kept)
    assert tuple(smoothing.input(1).get_partial_shape().to_shape()) == (1, 1, 5, 5)


def test_quantisation_without_a_datamodule_says_what_is_missing() -> None:
    with pytest.raises(ValueError, match="datamodule"):
        quantise_int8(_openvino_model(), None)
