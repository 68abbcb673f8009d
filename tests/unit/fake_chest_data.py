"""Tiny generated trees in the providers' layouts (CheXpert, VinDr-CXR, RSNA Pneumonia) and tiny DICOM files."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from anomalib_medical.data.chexpert import CHEXPERT_COLUMNS, CHEXPERT_FINDINGS

Box = tuple[float, float, float, float]


def gradient(height: int, width: int, low: int = 0, high: int = 4095) -> np.ndarray:
    """A horizontal ramp from ``low`` (left) to ``high`` (right) as ``uint16``."""
    row = np.linspace(low, high, width).round().astype(np.uint16)
    return np.repeat(row[None, :], height, axis=0)


def write_dicom(
    path: Path,
    pixels: np.ndarray | None,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    window: tuple[float, float] | None = None,
    voi_function: str | None = None,
    rescale: tuple[float, float] | None = None,
    transfer_syntax: UID = ExplicitVRLittleEndian,
) -> Path:
    """Write a single-frame greyscale DICOM (``pixels=None`` writes one without pixel data)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.PatientID = path.stem
    ds.PhotometricInterpretation = photometric
    ds.SamplesPerPixel = 1
    if pixels is not None:
        allocated = 8 if bits_stored <= 8 else 16
        ds.Rows, ds.Columns = pixels.shape
        ds.BitsAllocated = allocated
        ds.BitsStored = bits_stored
        ds.HighBit = bits_stored - 1
        ds.PixelRepresentation = 0
        ds.PixelData = pixels.astype(np.uint8 if allocated == 8 else np.uint16).tobytes()
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_function is not None:
        ds.VOILUTFunction = voi_function
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if transfer_syntax != ExplicitVRLittleEndian:
        ds.compress(transfer_syntax)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_xray(path: Path, size: tuple[int, int] = (30, 40), seed: int = 0) -> Path:
    """Write a small random 12-bit DICOM radiograph (``size`` = rows, columns) with a window."""
    pixels = np.random.default_rng(seed).integers(0, 4096, size=size, dtype=np.uint16)
    return write_dicom(path, pixels, window=(2048, 4096))


# --------------------------------------------------------------------------------------------------- CheXpert


def chexpert_row(
    patient: int,
    study: int = 1,
    view: int = 1,
    frontal: bool = True,
    ap_pa: str | None = "PA",
    no_finding: float | None = None,
    **findings: float,
) -> dict[str, object]:
    """One row of a CheXpert label file; ``findings`` use the column names with spaces as underscores."""
    kind = "frontal" if frontal else "lateral"
    row: dict[str, object] = dict.fromkeys(CHEXPERT_COLUMNS)
    row.update(
        {
            "Path": f"CheXpert-v1.0-small/{{split}}/patient{patient:05d}/study{study}/view{view}_{kind}.jpg",
            "Sex": "Female",
            "Age": 60,
            "Frontal/Lateral": "Frontal" if frontal else "Lateral",
            "AP/PA": ap_pa if frontal else None,
            "No Finding": no_finding,
        }
    )
    for name, value in findings.items():
        column = name.replace("_", " ")
        assert column in CHEXPERT_FINDINGS, column
        row[column] = value
    return row


def write_chexpert(root: Path, train: Sequence[dict[str, object]], valid: Sequence[dict[str, object]]) -> Path:
    """Write ``train.csv``, ``valid.csv`` and a 20 x 16 JPEG for each row under ``root``."""
    for split, rows in (("train", train), ("valid", valid)):
        table = pd.DataFrame([{**row, "Path": str(row["Path"]).format(split=split)} for row in rows])
        table = table.reindex(columns=list(CHEXPERT_COLUMNS))
        root.mkdir(parents=True, exist_ok=True)
        table.to_csv(root / f"{split}.csv", index=False)
        for index, relative in enumerate(table["Path"]):
            image = root / Path(*Path(relative).parts[1:])
            image.parent.mkdir(parents=True, exist_ok=True)
            pixels = np.random.default_rng(index).integers(0, 256, size=(20, 16), dtype=np.uint8)
            Image.fromarray(pixels).save(image)
    return root


def chexpert_tree(root: Path, normal: int, abnormal: int, valid_normal: int = 2, valid_abnormal: int = 2) -> Path:
    """A CheXpert tree with ``normal`` + ``abnormal`` frontal PA images (one patient each) and a few extras.

    Extras in ``train.csv``: one lateral normal, one AP normal, one uncertain-only image, one Support-Devices-only
    image, and one image that is positive and uncertain. ``valid.csv`` has ``valid_normal`` + ``valid_abnormal``
    frontal PA images and a lateral one.
    """
    patient = iter(range(1, 100_000))
    train = [chexpert_row(next(patient), no_finding=1, Support_Devices=1 if i % 2 else None) for i in range(normal)]
    train += [chexpert_row(next(patient), Cardiomegaly=1, Edema=0) for _ in range(abnormal)]
    train += [
        chexpert_row(next(patient), frontal=False, no_finding=1),
        chexpert_row(next(patient), ap_pa="AP", no_finding=1),
        chexpert_row(next(patient), Pneumonia=-1, Edema=0),
        chexpert_row(next(patient), Support_Devices=1),
        chexpert_row(next(patient), Fracture=1, Atelectasis=-1),
    ]
    valid = [chexpert_row(next(patient), no_finding=1) for _ in range(valid_normal)]
    valid += [chexpert_row(next(patient), Pleural_Effusion=1) for _ in range(valid_abnormal)]
    valid += [chexpert_row(next(patient), frontal=False, Pleural_Effusion=1)]
    return write_chexpert(root, train, valid)


# ------------------------------------------------------------------------------------------------- VinDr-CXR


def write_vindr(
    root: Path,
    normal: Iterable[str],
    abnormal: dict[str, list[Box]],
    label_format: str = "physionet",
    test_normal: Iterable[str] = (),
    test_abnormal: dict[str, list[Box]] | None = None,
    size: tuple[int, int] = (30, 40),
    suffix: str = ".dicom",
    global_only: Iterable[str] = (),
) -> Path:
    """Write a VinDr-CXR tree: DICOMs (``size`` = rows, columns) and labels in either format.

    Each training image is read by three radiologists (``R1``-``R3``); every box is drawn by ``R1`` and one box
    per abnormal image is also drawn, shifted, by ``R2``, so masks are unions over readers. ``global_only``
    images are abnormal through a global label only (no box).
    """
    normal, test_normal, global_only = list(normal), list(test_normal), list(global_only)
    test_abnormal = test_abnormal or {}
    for folder, ids in (("train", [*normal, *abnormal, *global_only]), ("test", [*test_normal, *test_abnormal])):
        for index, image_id in enumerate(ids):
            write_xray(root / folder / f"{image_id}{suffix}", size, seed=index)
    findings = ["Aortic enlargement", "Cardiomegaly", "Nodule/Mass", "Pleural effusion", "Other diseases"]
    if label_format == "competition":
        # Global labels are not among the competition's classes: global-only images are all "No finding" there.
        rows = [(i, "No finding", 14, f"R{r}", None, None, None, None) for i in normal + global_only for r in (1, 2, 3)]
        for image_id, boxes in abnormal.items():
            rows += [(image_id, "Cardiomegaly", 3, "R1", *box) for box in boxes]
            x0, y0, x1, y1 = boxes[0]
            rows += [(image_id, "Cardiomegaly", 3, "R2", x0 + 1, y0 + 1, x1 + 1, y1 + 1)]
            rows += [(image_id, "No finding", 14, "R3", None, None, None, None)]
        columns = ["image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max"]
        pd.DataFrame(rows, columns=columns).to_csv(root / "train.csv", index=False)
        return root
    annotations = root / "annotations"
    annotations.mkdir(parents=True, exist_ok=True)
    for split, normal_ids, abnormal_boxes, extra in (
        ("train", normal, abnormal, global_only),
        ("test", test_normal, test_abnormal, []),
    ):
        readers = ("R1", "R2", "R3") if split == "train" else (None,)
        labels, boxes_rows = [], []
        for image_id in [*normal_ids, *abnormal_boxes, *extra]:
            for reader in readers:
                is_normal = image_id in normal_ids or (reader == "R3" and image_id not in extra)
                row = {"image_id": image_id, **({"rad_ID": reader} if reader else {})}
                row.update(dict.fromkeys(findings, 0))
                if not is_normal:
                    row["Other diseases" if image_id in extra else "Cardiomegaly"] = 1
                row["No finding"] = int(is_normal)
                labels.append(row)
                if is_normal or image_id in extra:
                    name = "No finding" if is_normal else "Other diseases"
                    boxes_rows.append((image_id, reader, name, None, None, None, None))
            for number, box in enumerate(abnormal_boxes.get(image_id, [])):
                boxes_rows.append((image_id, "R1", "Cardiomegaly", *box))
                if number == 0 and split == "train":
                    x0, y0, x1, y1 = box
                    boxes_rows.append((image_id, "R2", "Cardiomegaly", x0 + 1, y0 + 1, x1 + 1, y1 + 1))
        pd.DataFrame(labels).to_csv(annotations / f"image_labels_{split}.csv", index=False)
        columns = ["image_id", "rad_id", "class_name", "x_min", "y_min", "x_max", "y_max"]
        pd.DataFrame(boxes_rows, columns=columns).to_csv(annotations / f"annotations_{split}.csv", index=False)
    return root


# ------------------------------------------------------------------------------------------------------ RSNA


def write_rsna(
    root: Path,
    normal: Iterable[str],
    opacity: dict[str, list[Box]],
    other: Iterable[str] = (),
    size: tuple[int, int] = (30, 40),
) -> Path:
    """Write an RSNA Pneumonia tree (8-bit DICOMs, ``size`` = rows, columns) with the two stage-2 CSV files."""
    normal, other = list(normal), list(other)
    labels, classes = [], []
    for patient in [*normal, *other]:
        labels.append((patient, None, None, None, None, 0))
        classes.append((patient, "Normal" if patient in normal else "No Lung Opacity / Not Normal"))
    for patient, boxes in opacity.items():
        for x0, y0, x1, y1 in boxes:
            labels.append((patient, x0, y0, x1 - x0, y1 - y0, 1))
            classes.append((patient, "Lung Opacity"))
    root.mkdir(parents=True, exist_ok=True)
    columns = ["patientId", "x", "y", "width", "height", "Target"]
    pd.DataFrame(labels, columns=columns).to_csv(root / "stage_2_train_labels.csv", index=False)
    pd.DataFrame(classes, columns=["patientId", "class"]).to_csv(root / "stage_2_detailed_class_info.csv", index=False)
    for index, patient in enumerate([*normal, *other, *opacity]):
        pixels = np.random.default_rng(index).integers(0, 256, size=size, dtype=np.uint16)
        write_dicom(root / "stage_2_train_images" / f"{patient}.dcm", pixels, bits_stored=8)
    return root


# ------------------------------------------------------------------------------------------------ training


def fit_and_test(datamodule: object, root: Path) -> dict[str, float]:
    """Train and test anomalib's PaDiM (random ResNet-18 weights: no download) on ``datamodule``; return metrics."""
    from anomalib.engine import Engine
    from anomalib.models import Padim

    model = Padim(
        backbone="resnet18",
        layers=["layer1", "layer2"],
        pre_trained=False,
        pre_processor=Padim.configure_pre_processor(image_size=(32, 32)),
        visualizer=False,
    )
    engine = Engine(
        default_root_dir=root,
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    engine.fit(model=model, datamodule=datamodule)
    (results,) = engine.test(model=model, datamodule=datamodule, verbose=False)
    return results


def check_config(name: str, cls: type) -> None:
    """Check that ``configs/data/<name>`` parses into ``cls`` and lists exactly its arguments and defaults."""
    import inspect

    import yaml
    from anomalib.data import AnomalibDataModule

    path = Path(__file__).resolve().parents[2] / "configs" / "data" / name
    datamodule = AnomalibDataModule.from_config(path)
    assert type(datamodule) is cls
    config = yaml.safe_load(path.read_text())
    assert config["class_path"] == f"anomalib_medical.data.{cls.__name__}"
    defaults = {key: value.default for key, value in inspect.signature(cls).parameters.items()}
    assert config["init_args"] == defaults
