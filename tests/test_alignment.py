"""Modality alignment (SeLaVi Eq. 7): the sharded K x K cost against float64, the exact solver against
brute force and the release's greedy search, and the permuted audio head matching the video head."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import softmax

from avssl import sharding
from avssl.clustering import alignment
from avssl.models.heads import MultiHead


def random_probs(rng, n, k, temperature=1.0):
  return softmax(rng.standard_normal((n, k)) / temperature, axis=1).astype(np.float32)


def l1_cost64(p_v, p_a):
  p_v, p_a = np.asarray(p_v, np.float64), np.asarray(p_a, np.float64)
  return np.abs(p_v[:, :, None] - p_a[:, None, :]).sum(axis=0)


def test_sharded_chunked_cost_equals_float64_reference():
  rng = np.random.default_rng(0)
  p_v, p_a = random_probs(rng, 1003, 6), random_probs(rng, 1003, 6)  # 1003: padded over 8 devices.
  ref = l1_cost64(p_v, p_a)
  eight = alignment.cost_matrix(p_v, p_a, mesh=sharding.make_mesh(), block_elements=16 * 36)
  one = alignment.cost_matrix(p_v, p_a)
  assert eight.shape == (6, 6)
  np.testing.assert_allclose(np.asarray(eight), ref, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(one), ref, rtol=1e-5)


@pytest.mark.parametrize('k', [2, 3, 4, 5, 6, 7])
def test_exact_solver_is_brute_force_optimum_and_beats_greedy(k):
  rng = np.random.default_rng(k)
  for _ in range(3):
    p_v, p_a = random_probs(rng, 64, k, 0.3), random_probs(rng, 64, k, 0.3)
    cost = l1_cost64(p_v, p_a)
    perms = np.array(list(itertools.permutations(range(k))))
    brute = cost[np.arange(k), perms].sum(axis=1).min()
    exact = alignment.exact_permutation(cost)
    greedy = alignment.greedy_permutation(cost, seed=k)
    assert alignment.permutation_cost(cost, exact) == pytest.approx(brute, rel=1e-12)
    assert alignment.permutation_cost(cost, exact) <= alignment.permutation_cost(cost, greedy) + 1e-9
    assert alignment.permutation_cost(cost, greedy) <= alignment.permutation_cost(cost, np.arange(k))


def test_greedy_search_can_miss_the_optimum_the_exact_solver_finds():
  rng = np.random.default_rng(1)
  cost = rng.uniform(size=(40, 40))
  exact = alignment.permutation_cost(cost, alignment.exact_permutation(cost))
  greedy = alignment.permutation_cost(cost, alignment.greedy_permutation(cost, seed=0))
  assert exact < greedy < alignment.permutation_cost(cost, np.arange(40))


def test_align_reports_costs_of_eq_7():
  rng = np.random.default_rng(2)
  p_v = random_probs(rng, 300, 5, 0.5)
  sigma = rng.permutation(5)
  p_a = p_v[:, sigma]  # Audio column j is video column sigma[j].
  result = alignment.align(p_v, p_a, mesh=sharding.make_mesh())
  np.testing.assert_array_equal(p_a[:, result.perm], p_v)  # perm[k]: the audio cluster of video k.
  assert result.cost == pytest.approx(0.0, abs=1e-3)
  assert result.identity_cost == pytest.approx(np.abs(p_v - p_a).sum(), rel=1e-4)
  greedy = alignment.align(p_v, p_a, method='greedy', seed=1)
  assert greedy.cost >= result.cost


def test_permuted_single_head_makes_audio_softmax_match_video():
  rng = np.random.default_rng(3)
  hidden, k = 16, 6
  feats = rng.standard_normal((500, hidden)).astype(np.float32)
  video = {'kernel': rng.standard_normal((hidden, k)).astype(np.float32),
           'bias': rng.standard_normal(k).astype(np.float32)}
  sigma = rng.permutation(k)
  noise = 0.02 * rng.standard_normal((hidden, k)).astype(np.float32)
  audio = {'kernel': video['kernel'][:, sigma] + noise, 'bias': video['bias'][sigma]}

  def probs(p):
    return np.asarray(jax.nn.softmax(feats @ np.asarray(p['kernel']) + np.asarray(p['bias'])))

  p_v, p_a = probs(video), probs(audio)
  result = alignment.align(p_v, p_a)
  aligned = alignment.permute_head(audio, result.perm)
  assert np.abs(probs(aligned) - p_v).sum() == pytest.approx(result.cost, rel=1e-4)
  assert result.cost < 0.1 * result.identity_cost
  np.testing.assert_allclose(probs(aligned), p_v, atol=0.1)
  np.testing.assert_allclose(np.asarray(aligned['kernel']), video['kernel'], atol=0.2)
  np.testing.assert_array_equal(sigma[result.perm], np.arange(k))  # perm is sigma's inverse.


def test_permuted_stacked_multihead_changes_only_that_head():
  num_heads, k, hidden = 3, 5, 8
  model = MultiHead(num_heads=num_heads, num_clusters=k, hidden=hidden)
  x = jax.random.normal(jax.random.PRNGKey(0), (200, 12))
  variables = model.init(jax.random.PRNGKey(1), x, train=False)
  out = variables['params']['heads']['out']
  assert out['kernel'].shape == (num_heads, hidden, k) and out['bias'].shape == (num_heads, k)
  sigma = np.array([3, 0, 4, 1, 2])
  shuffled = alignment.permute_head(out, sigma, head=1)  # Audio = video with head 1 scrambled.

  def apply(out_params):
    params = {**variables['params'], 'heads': {**variables['params']['heads'], 'out': out_params}}
    return jax.nn.softmax(model.apply({**variables, 'params': params}, x, train=False), axis=-1)

  p_v, p_a = apply(out), apply(shuffled)
  np.testing.assert_allclose(p_a[1][:, np.argsort(sigma)], p_v[1], rtol=1e-5)
  np.testing.assert_array_equal(p_a[0], p_v[0])
  np.testing.assert_array_equal(p_a[2], p_v[2])
  result = alignment.align(p_v[1], p_a[1])
  restored = alignment.permute_head(shuffled, result.perm, head=1)
  np.testing.assert_allclose(apply(restored), p_v, atol=1e-6)
  np.testing.assert_array_equal(restored['kernel'], out['kernel'])
  np.testing.assert_array_equal(restored['bias'], out['bias'])


def test_permute_head_rejects_what_is_not_a_permutation():
  dense = {'kernel': jnp.zeros((4, 3)), 'bias': jnp.zeros(3)}
  with pytest.raises(ValueError, match='permutation of range\\(3\\)'):
    alignment.permute_head(dense, np.array([0, 0, 1]))
  with pytest.raises(ValueError, match='needs head=None'):
    alignment.permute_head(dense, np.arange(3), head=0)
  with pytest.raises(ValueError, match='needs head=an index'):
    alignment.permute_head({'kernel': jnp.zeros((2, 4, 3))}, np.arange(3))
