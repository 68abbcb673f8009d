"""HistogramEqualisation against skimage.exposure.equalize_hist, TVTensor handling, errors and export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.exposure import equalize_hist
from torchvision import tv_tensors
from torchvision.transforms.v2 import Compose, Resize

from anomalib_medical.data import HistogramEqualisation
from anomalib_medical.data.transforms import equalise_histogram


def reference(image: torch.Tensor, nbins: int, mask: np.ndarray | None = None) -> np.ndarray:
    """skimage, plane by plane."""
    planes = image.reshape(-1, *image.shape[-2:]).double().numpy()
    out = [equalize_hist(plane, nbins=nbins, mask=mask) for plane in planes]
    return np.stack(out).reshape(image.shape)


def radiograph_like(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Skewed intensities with a different distribution per plane."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.rand(shape, generator=generator)
    exponents = torch.linspace(0.5, 4.0, int(np.prod(shape[:-2])) or 1).reshape(*shape[:-2], 1, 1)
    return base**exponents


@pytest.mark.parametrize("nbins", [256, 64, 7])
@pytest.mark.parametrize("shape", [(3, 33, 47), (2, 3, 20, 24), (1, 16, 16)])
def test_matches_skimage(shape: tuple[int, ...], nbins: int) -> None:
    image = radiograph_like(shape)
    out = HistogramEqualisation(nbins=nbins)(image)
    expected = reference(image, nbins)
    difference = np.abs(out.numpy() - expected)
    assert out.shape == image.shape
    assert out.dtype == image.dtype
    assert difference.max() <= 1.0 / nbins
    assert difference.mean() < 1e-4


def test_channels_and_images_are_equalised_independently() -> None:
    image = radiograph_like((2, 3, 12, 12))
    batch_out = equalise_histogram(image)
    for b in range(2):
        for c in range(3):
            torch.testing.assert_close(batch_out[b, c], equalise_histogram(image[b, c]))
    grey = radiograph_like((1, 12, 12)).expand(3, -1, -1)  # grey replicated into three channels stays identical
    grey_out = equalise_histogram(grey)
    torch.testing.assert_close(grey_out[0], grey_out[2])


def test_mask_restricts_the_histogram() -> None:
    image = radiograph_like((2, 3, 30, 30), seed=1)
    mask = torch.zeros(30, 30, dtype=torch.bool)
    mask[5:25, 3:20] = True
    out = HistogramEqualisation(nbins=128, mask=mask)(image)
    expected = reference(image, 128, mask.numpy())
    assert np.abs(out.numpy() - expected).max() <= 1.0 / 128
    assert not torch.allclose(out, equalise_histogram(image, 128))


def test_output_is_monotonic_in_the_input_and_spreads_the_range() -> None:
    image = radiograph_like((1, 40, 40)) * 0.2 + 0.4  # narrow, skewed range
    out = equalise_histogram(image)
    order = torch.argsort(image.flatten())
    assert bool((out.flatten()[order].diff() >= -1e-6).all())
    assert float(out.max()) == pytest.approx(1.0)
    assert float(out.min()) < 0.05
    assert float(out.mean()) == pytest.approx(0.5, abs=0.05)


def test_constant_image_matches_skimage() -> None:
    image = torch.full((1, 6, 6), 0.3)
    torch.testing.assert_close(equalise_histogram(image), torch.from_numpy(reference(image, 256)).float())


def test_image_type_is_kept_and_masks_pass_untouched() -> None:
    image = tv_tensors.Image(radiograph_like((3, 16, 16)))
    mask = tv_tensors.Mask(torch.randint(0, 2, (16, 16), dtype=torch.uint8))
    out_image, out_mask = HistogramEqualisation()(image, mask)
    assert isinstance(out_image, tv_tensors.Image)
    assert isinstance(out_mask, tv_tensors.Mask)
    assert torch.equal(out_mask, mask)
    torch.testing.assert_close(out_image.as_subclass(torch.Tensor), equalise_histogram(image.as_subclass(torch.Tensor)))
    composed = Compose([HistogramEqualisation(), Resize((8, 8))])(image, mask)
    assert composed[0].shape == (3, 8, 8)
    assert composed[1].shape == (8, 8)


def test_bad_input_is_rejected() -> None:
    with pytest.raises(TypeError, match="floating-point"):
        equalise_histogram(torch.zeros(3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="shape"):
        equalise_histogram(torch.zeros(5))
    with pytest.raises(ValueError, match="nbins"):
        HistogramEqualisation(nbins=0)
    with pytest.raises(ValueError, match="selects no pixel"):
        equalise_histogram(torch.rand(2, 4, 4), mask=torch.zeros(4, 4, dtype=torch.bool))


def test_exports_to_onnx_and_openvino(tmp_path: Path) -> None:
    import openvino as ov

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            mask = torch.ones(24, 24, dtype=torch.bool).tril()
            self.equalise = HistogramEqualisation(nbins=64, mask=mask)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return self.equalise(image)

    model = Wrapper().eval()
    path = tmp_path / "equalise.onnx"
    torch.onnx.export(
        model,
        (torch.rand(2, 3, 24, 24),),
        str(path),
        dynamo=True,
        opset_version=18,
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        verbose=False,
    )
    compiled = ov.Core().compile_model(str(path), "CPU")
    image = radiograph_like((3, 3, 24, 24), seed=5)
    result = compiled([image.numpy()])[0]
    np.testing.assert_allclose(result, model(image).numpy(), atol=1e-5)
