"""N-dimensional Poisson image editing solved with a discrete sine transform (Baugh et al. 2023, Sec. 2.1).

Poisson image editing (Pérez et al., 2003) replaces the intensities inside a region by the function whose
gradient best matches a guidance field, with the target image as a Dirichlet boundary condition. On a
box-shaped domain with the standard ``2D + 1``-point Laplacian, the system is diagonalised by the type-I
discrete sine transform, so one forward and one inverse DST solve it exactly, in any number of dimensions.
The domain is the bounding box of the blending mask; pixels of the box outside the mask follow the target's
own gradients, so the blend can alter them slightly (the paper notes this).
"""

from __future__ import annotations

import numpy as np
from scipy import fft


def _interior(ndim: int) -> tuple[slice, ...]:
    return (slice(1, -1),) * ndim


def laplacian(values: np.ndarray) -> np.ndarray:
    """Discrete Laplacian (sum over axes of ``f[p + e] + f[p - e] - 2 f[p]``) at the interior pixels."""
    inner = _interior(values.ndim)
    result = np.zeros(tuple(size - 2 for size in values.shape), dtype=np.float64)
    for axis in range(values.ndim):
        forward = list(inner)
        backward = list(inner)
        forward[axis] = slice(2, None)
        backward[axis] = slice(None, -2)
        result += values[tuple(forward)] + values[tuple(backward)] - 2 * values[inner]
    return result


def dst_poisson_solve(divergence: np.ndarray, boundary: np.ndarray) -> np.ndarray:
    """Solve ``laplacian(f) = divergence`` on the interior of a box with ``f = boundary`` on its faces.

    Args:
        divergence: Right-hand side at the interior pixels, shape ``boundary.shape - 2`` along every axis.
        boundary: Array of the box's shape; only its outermost pixels (the faces) are read.

    Returns:
        The solution on the whole box (faces equal to ``boundary``).

    """
    interior_shape = tuple(size - 2 for size in boundary.shape)
    if divergence.shape != interior_shape:
        msg = f"divergence has shape {divergence.shape}, expected the box interior {interior_shape}"
        raise ValueError(msg)
    result = np.array(boundary, dtype=np.float64)
    if min(interior_shape) <= 0:
        return result
    inner = _interior(boundary.ndim)
    faces = result.copy()
    faces[inner] = 0.0
    # Known face values move to the right-hand side; the remaining operator has zero Dirichlet boundaries.
    rhs = divergence - laplacian(faces)
    # Eigenvalues of the 1-D Dirichlet Laplacian for DST-I mode k: 2 cos(pi k / (n + 1)) - 2, summed over axes.
    eigenvalues = np.zeros(interior_shape)
    for axis, size in enumerate(interior_shape):
        modes = 2 * np.cos(np.pi * np.arange(1, size + 1) / (size + 1)) - 2
        eigenvalues = eigenvalues + modes.reshape([-1 if i == axis else 1 for i in range(len(interior_shape))])
    result[inner] = fft.idstn(fft.dstn(rhs, type=1) / eigenvalues, type=1)
    return result


def guidance_divergence(target: np.ndarray, source: np.ndarray, mask: np.ndarray, mix_gradients: bool) -> np.ndarray:
    """Divergence, at the interior pixels, of the guidance field for blending ``source`` into ``target``.

    The field lives on the edges between neighbouring pixels: an edge touching the mask takes the source's
    difference (or, with ``mix_gradients``, whichever of source and target differences is larger in magnitude),
    every other edge the target's.
    """
    inner = _interior(target.ndim)
    divergence = np.zeros(tuple(size - 2 for size in target.shape), dtype=np.float64)
    for axis in range(target.ndim):
        target_diff = np.diff(target, axis=axis)
        source_diff = np.diff(source, axis=axis)
        if mix_gradients:
            source_diff = np.where(np.abs(target_diff) >= np.abs(source_diff), target_diff, source_diff)
        head = [slice(None)] * target.ndim
        tail = [slice(None)] * target.ndim
        head[axis] = slice(None, -1)
        tail[axis] = slice(1, None)
        on_mask = mask[tuple(head)] | mask[tuple(tail)]
        field = np.where(on_mask, source_diff, target_diff)
        # field[i] is the edge (i, i + 1); the divergence at interior pixel p is field[p] - field[p - 1].
        outgoing = list(inner)
        incoming = list(inner)
        outgoing[axis] = slice(1, None)
        incoming[axis] = slice(None, -1)
        divergence += field[tuple(outgoing)] - field[tuple(incoming)]
    return divergence


def poisson_blend(
    target: np.ndarray,
    source: np.ndarray,
    mask: np.ndarray,
    corner: tuple[int, ...] | np.ndarray,
    mix_gradients: bool = True,
) -> np.ndarray:
    """Blend ``source`` into ``target`` over ``mask`` by Poisson image editing, solved over the mask's box.

    Args:
        target: Image to blend into (any number of dimensions, single channel).
        source: Patch to blend, same number of dimensions; its shape is the blending box.
        mask: Boolean mask of ``source``'s shape selecting the region whose gradients come from ``source``.
        corner: Index of the box's lowest corner in ``target``.
        mix_gradients: Keep the stronger of the target and source gradients on each edge (the authors' choice).

    Returns:
        A blended copy of ``target``; only pixels inside the box (excluding its faces) can change.

    """
    if source.shape != mask.shape or source.ndim != target.ndim:
        msg = f"source {source.shape}, mask {mask.shape} and target {target.shape} do not match"
        raise ValueError(msg)
    box = tuple(slice(int(c), int(c) + size) for c, size in zip(corner, source.shape, strict=True))
    target_box = np.asarray(target[box], dtype=np.float64)
    if target_box.shape != source.shape:
        msg = f"the box at {tuple(corner)} of size {source.shape} does not fit in the target {target.shape}"
        raise ValueError(msg)
    result = np.array(target, dtype=np.float64)
    result[box] = blend_box(target_box, source, mask, mix_gradients)
    return result


def blend_box(target: np.ndarray, source: np.ndarray, mask: np.ndarray, mix_gradients: bool = True) -> np.ndarray:
    """Poisson-blend ``source`` into ``target`` over ``mask``, all three of the box's shape; the box's faces stay."""
    divergence = guidance_divergence(target, np.asarray(source, dtype=np.float64), mask, mix_gradients)
    return dst_poisson_solve(divergence, target)
