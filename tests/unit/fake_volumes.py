"""Tiny generated volume trees (anomalib's Folder layout) for the volume tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIDE = 16


def brain_like(rng: np.random.Generator, shape: tuple[int, int, int] = (SIDE,) * 3) -> np.ndarray:
    """A textured ball with a zero background (a brain's layout: z-scoring within the non-zero voxels applies)."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, side) for side in shape], indexing="ij"))
    ball = np.sqrt((grid**2).sum(0)) < 0.85
    texture = 1 + 0.3 * np.sin(5 * grid[0] + rng.uniform(0, 6)) + 0.05 * rng.standard_normal(shape)
    return np.where(ball, texture, 0).astype(np.float32)


def write_volume_tree(
    root: Path, normal: int = 10, abnormal: int = 6, seed: int = 0, shape: tuple[int, int, int] = (SIDE,) * 3
) -> Path:
    """Write ``normal/``, ``abnormal/`` and ``masks/`` (``<name>_mask.npy``): abnormal volumes hold a bright cube."""
    rng = np.random.default_rng(seed)
    for folder in ("normal", "abnormal", "masks"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for index in range(normal):
        np.save(root / "normal" / f"n{index:02d}.npy", brain_like(rng, shape))
    for index in range(abnormal):
        volume = brain_like(rng, shape)
        mask = np.zeros(shape, dtype=np.uint8)
        corner = rng.integers(4, min(shape) - 8, 3)
        mask[tuple(slice(c, c + 4) for c in corner)] = 1
        volume[mask > 0] += 2.0
        np.save(root / "abnormal" / f"a{index:02d}.npy", volume)
        np.save(root / "masks" / f"a{index:02d}_mask.npy", mask)
    return root
