"""The DST Poisson solver against a direct sparse solve of the same system, in 2-D and 3-D."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.sparse import lil_matrix
from scipy.sparse.linalg import spsolve

from anomalib_medical.models.synthetic_task_localiser.tasks.poisson import (
    dst_poisson_solve,
    guidance_divergence,
    poisson_blend,
)


def direct_solve(divergence: np.ndarray, boundary: np.ndarray) -> np.ndarray:
    """Assemble the (2D+1)-point Laplacian with Dirichlet faces pixel by pixel and solve it with SuperLU."""
    interior = [tuple(p) for p in itertools.product(*[range(1, n - 1) for n in boundary.shape])]
    index = {p: i for i, p in enumerate(interior)}
    matrix = lil_matrix((len(interior), len(interior)))
    rhs = np.array([divergence[tuple(c - 1 for c in p)] for p in interior], dtype=float)
    for p, row in index.items():
        matrix[row, row] = -2 * boundary.ndim
        for axis, step in itertools.product(range(boundary.ndim), (-1, 1)):
            q = tuple(c + step if a == axis else c for a, c in enumerate(p))
            if q in index:
                matrix[row, index[q]] = 1
            else:
                rhs[row] -= boundary[q]
    solution = np.array(boundary, dtype=float)
    values = spsolve(matrix.tocsr(), rhs)
    for p, row in index.items():
        solution[p] = values[row]
    return solution


@pytest.mark.parametrize("shape", [(9, 12), (6, 7, 8)])
def test_dst_solver_matches_direct_sparse_solve(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    boundary = rng.normal(size=shape)
    divergence = rng.normal(size=tuple(n - 2 for n in shape))
    expected = direct_solve(divergence, boundary)
    result = dst_poisson_solve(divergence, boundary)
    np.testing.assert_allclose(result, expected, atol=1e-9)


@pytest.mark.parametrize("shape", [(9, 12), (6, 7, 8)])
def test_blend_matches_direct_solve_of_the_guided_system(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(1)
    target, source = rng.random(shape), rng.random(shape)
    mask = rng.random(shape) < 0.5
    expected = direct_solve(guidance_divergence(target, source, mask, mix_gradients=True), target)
    result = poisson_blend(target, source, mask, (0,) * len(shape), mix_gradients=True)
    np.testing.assert_allclose(result, expected, atol=1e-9)


@pytest.mark.parametrize("shape", [(10, 11), (6, 7, 8)])
def test_source_with_the_target_s_faces_is_reproduced_exactly(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(2)
    target = rng.random(shape)
    source = target.copy()
    inner = (slice(1, -1),) * len(shape)
    source[inner] = rng.random(tuple(n - 2 for n in shape))
    mask = np.zeros(shape, dtype=bool)
    mask[inner] = True
    result = poisson_blend(target, source, mask, (0,) * len(shape), mix_gradients=False)
    np.testing.assert_allclose(result, source, atol=1e-10)


def test_only_gradients_of_the_source_matter() -> None:
    rng = np.random.default_rng(3)
    target = rng.random((20, 20))
    patch = target[4:14, 5:17] + 0.7  # same gradients as the target, shifted intensity
    mask = rng.random(patch.shape) < 0.6
    result = poisson_blend(target, patch, mask, (4, 5), mix_gradients=False)
    np.testing.assert_allclose(result, target, atol=1e-10)


def test_changes_stay_inside_the_box_and_off_its_faces() -> None:
    rng = np.random.default_rng(4)
    target = rng.random((24, 30))
    patch = rng.random((8, 9)) * 5
    mask = np.ones(patch.shape, dtype=bool)
    result = poisson_blend(target, patch, mask, (10, 12))
    changed = ~np.isclose(result, target, atol=0, rtol=0)
    assert changed[11:17, 13:20].any()
    changed[11:17, 13:20] = False
    assert not changed.any()


def test_empty_mask_leaves_the_target_unchanged() -> None:
    rng = np.random.default_rng(5)
    target = rng.random((6, 7, 8))
    result = poisson_blend(target, rng.random((4, 5, 6)), np.zeros((4, 5, 6), dtype=bool), (1, 1, 1))
    np.testing.assert_allclose(result, target, atol=1e-10)


def test_mismatched_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="do not match"):
        poisson_blend(np.zeros((8, 8)), np.zeros((4, 4)), np.zeros((4, 5), dtype=bool), (0, 0))
    with pytest.raises(ValueError, match="does not fit"):
        poisson_blend(np.zeros((8, 8)), np.zeros((4, 4)), np.zeros((4, 4), dtype=bool), (6, 0))
    with pytest.raises(ValueError, match="interior"):
        dst_poisson_solve(np.zeros((3, 3)), np.zeros((6, 6)))
