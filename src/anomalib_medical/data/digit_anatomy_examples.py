"""Write example DigitAnatomy images and masks to a folder, to look at the data set.

    python -m anomalib_medical.data.digit_anatomy_examples --out DIR

writes ``normal.png`` and one image per anomaly type (novel, missing, disorder, flipped), each next to
its mask (``<type>_mask.png``), drawn from the test split's digit instances.
"""

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from anomalib.data.utils import Split
from PIL import Image as PILImage

from anomalib_medical.data.digit_anatomy import (
    DIGIT_SOURCES,
    EVAL_TYPES,
    DigitAnatomyGenerator,
    generate_eval_sample,
    split_digit_pools,
)


def write_examples(
    out: str | Path,
    cell_size: int = 32,
    seed: int = 0,
    digit_source: str = "sklearn",
    mnist_root: str | Path | None = None,
    download: bool = False,
) -> list[Path]:
    """Write a test-split example of each image type (``<type>.png``) and its mask (``<type>_mask.png``) to ``out``.

    Returns:
        The paths written.

    """
    pools = split_digit_pools(digit_source, mnist_root, download, seed)
    generator = DigitAnatomyGenerator(pools[Split.TEST], cell_size)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for anomaly_type in EVAL_TYPES:
        sample = generate_eval_sample(generator, Split.TEST, anomaly_type, 0, seed)
        mask = generator.cell_mask(sample.cells).astype(np.uint8) * 255
        for name, array in ((anomaly_type, generator.render(sample.layout)), (f"{anomaly_type}_mask", mask)):
            path = out / f"{name}.png"
            partial = path.with_name(f".{path.name}.partial")
            PILImage.fromarray(array).save(partial, format="PNG")
            os.replace(partial, path)
            written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: write example DigitAnatomy images and masks to a folder and list them."""
    parser = argparse.ArgumentParser(
        prog="python -m anomalib_medical.data.digit_anatomy_examples",
        description="Write a normal DigitAnatomy image and one of each anomaly type, each with its mask, as PNGs.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (created if needed)")
    parser.add_argument("--cell-size", type=int, default=32, help="cell side in pixels (image: 3x); default 32")
    parser.add_argument("--seed", type=int, default=0, help="seed; default 0")
    parser.add_argument("--digit-source", choices=DIGIT_SOURCES, default="sklearn", help="default sklearn")
    parser.add_argument("--mnist-root", type=Path, default=None, help="folder holding MNIST/raw (for mnist)")
    parser.add_argument("--download", action="store_true", help="let torchvision download MNIST")
    args = parser.parse_args(argv)
    for path in write_examples(args.out, args.cell_size, args.seed, args.digit_source, args.mnist_root, args.download):
        print(path)


if __name__ == "__main__":
    main()
