"""Datamodules for radiograph and brain MRI anomaly detection (``anomalib.data.AnomalibDataModule`` subclasses)."""

from anomalib_medical.data.brain_phantom import BrainPhantom
from anomalib_medical.data.brats import BraTS
from anomalib_medical.data.chest_xray import ChestXray, ChestXrayDataset
from anomalib_medical.data.chexpert import CheXpert
from anomalib_medical.data.covidx import COVIDx
from anomalib_medical.data.digit_anatomy import (
    DigitAnatomy,
    DigitAnatomyDataset,
    DigitAnatomyGenerator,
    DigitAnatomyTrainDataset,
)
from anomalib_medical.data.hcp import HCP
from anomalib_medical.data.isles import ISLES
from anomalib_medical.data.ixi import IXI
from anomalib_medical.data.radiograph_folder import RadiographFolder, RadiographFolderDataset
from anomalib_medical.data.rsna_pneumonia import RSNAPneumonia
from anomalib_medical.data.transforms import HistogramEqualisation
from anomalib_medical.data.utils.dataset import FullDepthDataset, RadiographPredictDataset
from anomalib_medical.data.utils.reader import read_image_tensor
from anomalib_medical.data.vindr_cxr import VinDrCXR
from anomalib_medical.data.volume_folder import VolumeFolder

__all__: list[str] = [
    "HCP",
    "ISLES",
    "IXI",
    "BraTS",
    "BrainPhantom",
    "COVIDx",
    "CheXpert",
    "ChestXray",
    "ChestXrayDataset",
    "DigitAnatomy",
    "DigitAnatomyDataset",
    "DigitAnatomyGenerator",
    "DigitAnatomyTrainDataset",
    "FullDepthDataset",
    "HistogramEqualisation",
    "RSNAPneumonia",
    "RadiographFolder",
    "RadiographFolderDataset",
    "RadiographPredictDataset",
    "VinDrCXR",
    "VolumeFolder",
    "read_image_tensor",
]
