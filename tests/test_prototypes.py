"""GOCA's separated prototypes (Eq. 11): the simplex when N <= Phi + 1, the known optimum for 10 in 5-D,
far below random vectors, unit rows, and the same prototypes from the same seed."""

import numpy as np
import pytest

from avssl.clustering import prototypes


@pytest.mark.parametrize('num,dim', [(4, 3), (6, 5)])
def test_reaches_the_simplex_when_n_is_at_most_dim_plus_one(num, dim):
  simplex = -1.0 / (num - 1)  # The optimum: all pairs at this cosine.
  w, max_cos = prototypes.separated_prototypes(num, dim, steps=1500, linear_decay=True, seed=0)
  assert max_cos == pytest.approx(simplex, abs=1e-3)
  np.testing.assert_allclose(np.asarray(w) @ np.asarray(w).T, np.where(np.eye(num), 1.0, simplex),
                             atol=5e-3)
  _, constant_lr = prototypes.separated_prototypes(num, dim, steps=1500, seed=0)
  assert simplex <= constant_lr < simplex + 0.06  # The release's constant step circles nearby.


def test_ten_in_five_dims_reach_the_cross_polytope_and_beat_random():
  # Rankin: N >= Phi + 2 unit vectors always have a pair at cosine >= 0; +-e_i attain it.
  _, random_cos = prototypes.separated_prototypes(10, 5, steps=0, seed=0)
  w, max_cos = prototypes.separated_prototypes(10, 5, steps=1500, linear_decay=True, seed=0)
  assert random_cos > 0.5
  assert -1e-6 <= max_cos < 0.01
  _, constant_lr = prototypes.separated_prototypes(10, 5, steps=1500, seed=0)
  assert constant_lr < 0.1


def test_unit_rows_and_deterministic_from_the_seed():
  w, max_cos = prototypes.separated_prototypes(30, 8, steps=300, seed=5)
  again, _ = prototypes.separated_prototypes(30, 8, steps=300, seed=5)
  other, _ = prototypes.separated_prototypes(30, 8, steps=300, seed=6)
  assert w.shape == (30, 8)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(w), axis=1), 1.0, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(w), np.asarray(again))
  assert not np.allclose(np.asarray(w), np.asarray(other))
  gram = np.asarray(w) @ np.asarray(w).T
  assert max_cos == pytest.approx(np.max(gram - 2 * np.eye(30)), abs=1e-6)
  nearest = np.max(gram - 2 * np.eye(30), axis=1)  # Eq. 11's loss: mean cosine to the nearest other.
  assert float(prototypes.separation_loss(w)) == pytest.approx(nearest.mean(), abs=1e-6)
  assert max_cos < prototypes.separated_prototypes(30, 8, steps=0, seed=5)[1] - 0.2


def test_rejects_degenerate_sizes():
  with pytest.raises(ValueError, match='at least 2 prototypes'):
    prototypes.separated_prototypes(1, 3)
