"""Squid/SimSID reconstructions on test batches: the visualiser's extra panels and the reconstruction metrics."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from anomalib.data import ImageBatch
from anomalib.metrics import Evaluator
from PIL import Image

from anomalib_medical.metrics import (
    ReconstructionMSE,
    ReconstructionPSNR,
    ReconstructionSSIM,
    reconstruction_metrics,
)
from anomalib_medical.models import SimSID, Squid
from anomalib_medical.visualization import RadiographVisualizer
from tests.unit.test_squid import TINY


def test_reconstruction_metrics_hand_computed():
    image = torch.zeros(2, 3, 16, 16)
    image[1] = 1.0  # grey input: image 0 black, image 1 white
    reconstruction = torch.full((2, 1, 16, 16), 0.5)
    reconstruction[1] = 0.9  # squared errors: 0.25 and 0.01
    batch = SimpleNamespace(reconstruction=reconstruction, image=image)
    mse, psnr, ssim = ReconstructionMSE(), ReconstructionPSNR(), ReconstructionSSIM()
    for metric in (mse, psnr, ssim):
        metric.update(batch)
    assert mse.compute().item() == pytest.approx((0.25 + 0.01) / 2)
    assert psnr.compute().item() == pytest.approx((10 * torch.log10(torch.tensor([4.0, 100.0]))).mean().item(), 1e-5)
    # Constant images: no variance, SSIM is the luminance term (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1), C1 = 0.01^2
    c1 = 1e-4
    luminance = [c1 / (0.25 + c1), (1.8 + c1) / (0.81 + 1.0 + c1)]
    assert ssim.compute().item() == pytest.approx(sum(luminance) / 2, abs=1e-3)  # float32 windows


def test_ssim_of_a_perfect_reconstruction_is_one_and_shapes_must_match():
    image = torch.rand(2, 1, 16, 16)
    ssim = ReconstructionSSIM()
    ssim.update(SimpleNamespace(reconstruction=image, image=image.repeat(1, 3, 1, 1)))
    assert ssim.compute().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="does not match the image"):
        ReconstructionMSE().update(SimpleNamespace(reconstruction=torch.rand(2, 1, 8, 8), image=image))


def test_teacher_metrics_are_named_and_skip_a_model_without_teacher():
    metrics = reconstruction_metrics(teacher=True)
    assert [metric.name for metric in metrics] == [
        "ReconstructionMSE",
        "ReconstructionPSNR",
        "ReconstructionSSIM",
        "teacher_ReconstructionMSE",
        "teacher_ReconstructionPSNR",
        "teacher_ReconstructionSSIM",
    ]
    batch = SimpleNamespace(reconstruction=torch.rand(1, 1, 16, 16), image=torch.rand(1, 1, 16, 16))
    batch.teacher_reconstruction = None
    for metric in metrics:
        metric.update(batch)
    assert [metric.update_count for metric in metrics] == [1, 1, 1, 0, 0, 0]


@pytest.mark.parametrize("model_class", [Squid, SimSID])
def test_test_step_adds_reconstructions_only_when_read(model_class):
    model = model_class(**TINY, evaluator=False, visualizer=False).eval()
    image = torch.rand(2, 3, 24, 24)
    with torch.no_grad():
        plain = model.test_step(ImageBatch(image=image), 0)
        assert getattr(plain, "reconstruction", None) is None
        model.evaluator = Evaluator(test_metrics=reconstruction_metrics())
        batch = model.test_step(ImageBatch(image=image), 0)
        output = model.model.generator(model.model.reduce_channels(image), teacher=True)
        student, teacher = (model.model.generator.to_unit_range(x) for x in output[1:3])
    assert batch.reconstruction.shape == batch.teacher_reconstruction.shape == (2, 1, 24, 24)
    assert torch.equal(batch.reconstruction, student)
    assert torch.equal(batch.teacher_reconstruction, teacher)
    # one generator pass gives both; the scores and maps are those of the exported forward
    assert torch.equal(batch.pred_score, plain.pred_score)
    assert torch.equal(batch.anomaly_map, plain.anomaly_map)


def _visualise_one_image(model: Squid, out_dir: Path, reconstructions: bool = True) -> Path:
    """Run the model's visualiser on one random test image saved to ``out_dir``; return the picture it wrote."""
    out_dir.mkdir()
    model.visualizer.output_dir = out_dir
    batch = ImageBatch(image=torch.rand(1, 3, 24, 24), image_path=[str(out_dir / "missing.png")])
    with torch.no_grad():
        batch = model.test_step(batch, 0)
    if not reconstructions:
        batch.reconstruction = batch.teacher_reconstruction = None
    trainer = SimpleNamespace(default_root_dir=out_dir, datamodule=None)
    model.visualizer.on_test_batch_end(trainer, model, batch, batch, 0)
    (written,) = out_dir.rglob("*.png")
    return written


def test_visualiser_draws_the_reconstruction_panels(tmp_path):
    model = Squid(**TINY, evaluator=False).eval()
    assert isinstance(model.visualizer, RadiographVisualizer)
    widths = {}
    for name in ("plain", "with_reconstructions"):
        written = _visualise_one_image(model, tmp_path / name, reconstructions=name == "with_reconstructions")
        widths[name] = Image.open(written).width
    panel = model.visualizer.field_size[0]
    assert widths["with_reconstructions"] == widths["plain"] + 2 * panel  # student and teacher panels


def _zlib_level_of_png(path) -> int:
    """FLEVEL of the zlib stream in a PNG's first IDAT chunk: 0 fastest, 1 fast, 2 default, 3 maximum."""
    data = path.read_bytes()
    start = data.index(b"IDAT") + 4
    return data[start + 1] >> 6


def test_visualiser_saves_pngs_with_fast_compression(tmp_path):
    written = _visualise_one_image(Squid(**TINY, evaluator=False).eval(), tmp_path / "pictures")
    assert _zlib_level_of_png(written) == 0
    default = tmp_path / "default.png"
    Image.open(written).save(default)  # Pillow's default level, as anomalib's visualiser saves
    assert _zlib_level_of_png(default) == 2
