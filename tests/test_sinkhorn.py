"""Sinkhorn-Knopp against float64 references written from the papers' formulas (SeLaVi §3.1-3.2 Eq. 2-6,
SwAV's batch algorithm, GOCA Eq. 6-10), in both modes, sharded over 8 devices and on one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp, softmax

from avssl import sharding
from avssl.clustering import sinkhorn as sk

MODES = ['scaling', 'log']


def reference_plan(log_p, lam, r=None, iters=20000):
  """Eq. 3's solution Q = diag(β) P^λ diag(α) with Q1 = r, Qᵀ1 = c = 1/N, in float64 log space."""
  scaled = lam * np.asarray(log_p, np.float64)
  n, k = scaled.shape
  log_r = np.log(np.full(k, 1.0 / k) if r is None else np.asarray(r, np.float64))
  f, g = np.full(n, -np.log(n)), np.zeros(k)
  for _ in range(iters):
    g = log_r - logsumexp(scaled + f[:, None], axis=0)
    f_new = -np.log(n) - logsumexp(scaled + g, axis=1)
    if np.abs(f_new - f).max() < 1e-12:
      f = f_new
      break
    f = f_new
  return np.exp(scaled + f[:, None] + g)


def _log_p(n, k, seed=0, spread=2.0):
  logits = np.random.default_rng(seed).standard_normal((n, k)) * spread
  return np.array(jax.nn.log_softmax(jnp.asarray(logits, jnp.float32)))


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('lam', [20.0, 100.0])
def test_plan_marginals_and_labels_match_float64_reference(mode, lam):
  log_p = _log_p(400, 7)
  log_p[:, 3] -= 30.0  # a starved cluster: exp underflows to 0 even in float64 at λ = 100
  expected = reference_plan(log_p, lam)
  result = sk.sinkhorn(log_p, lam, mode=mode, tol=1e-7, num_iters=20000, return_plan=True,
                       chunk_size=16)
  plan = np.asarray(result.plan, np.float64)
  assert np.isfinite(plan).all() and float(result.error) <= 1e-5
  assert np.abs(plan - expected).max() <= 1e-5  # Q as in Eq. 2, total mass 1
  # Per-sample distributions: float32 potentials of size λ|log p| bound the precision at λ = 100.
  np.testing.assert_allclose(plan * 400, expected * 400, atol=1e-4 if lam == 20 else 1e-3)
  np.testing.assert_allclose(plan.sum(0), 1 / 7, atol=1e-6)
  np.testing.assert_allclose(plan.sum(1), 1 / 400, rtol=1e-4 if lam == 20 else 1e-3)
  np.testing.assert_array_equal(np.asarray(result.labels), expected.argmax(1))


@pytest.mark.parametrize('mode', MODES)
def test_large_lambda_on_raw_logits_where_plain_exp_overflows(mode):
  logits = (np.random.default_rng(1).standard_normal((256, 5)) * 5).astype(np.float32)
  with np.errstate(over='ignore', invalid='ignore'):
    naive = np.exp(100.0 * logits)
    naive = naive / naive.sum(0) / naive.sum(1, keepdims=True)
  assert not np.isfinite(naive).all()  # a plain float32 implementation breaks here
  expected = reference_plan(logits, 100.0)
  result = sk.sinkhorn(logits, 100.0, mode=mode, tol=1e-4, num_iters=3000, chunk_size=8)
  assert float(result.error) <= 1e-3  # float32 potentials near 1500 have a 1e-4 resolution
  np.testing.assert_array_equal(np.asarray(result.labels), expected.argmax(1))


@pytest.mark.parametrize('mode', MODES)
def test_rows_sharded_over_eight_devices_equal_one_device(mode):
  log_p = _log_p(1000, 13, seed=2)
  one = sharding.make_mesh(jax.devices()[:1])
  eight = sharding.make_mesh()
  kwargs = dict(mode=mode, tol=1e-6, num_iters=5000, chunk_size=32)
  on_one = sk.sinkhorn(log_p, 20.0, mesh=one, **kwargs)
  sharded_input = sharding.to_global(log_p, eight)
  on_eight = sk.sinkhorn(sharded_input, 20.0, mesh=eight, **kwargs)
  assert len(on_eight.labels.sharding.device_set) == 8
  np.testing.assert_array_equal(np.asarray(on_one.labels), np.asarray(on_eight.labels))
  np.testing.assert_allclose(on_one.log_alpha, on_eight.log_alpha, atol=1e-3)


@pytest.mark.parametrize('mode', MODES)
def test_masked_rows_take_no_mass(mode):
  """A dataset pass padded with masked duplicate rows solves the problem of the real rows alone."""
  log_p = _log_p(300, 7, seed=4)
  padded = np.concatenate([log_p, np.repeat(log_p[:1], 20, axis=0)])
  mask = np.r_[np.ones(300), np.zeros(20)]
  kwargs = dict(mode=mode, tol=1e-6, num_iters=5000, chunk_size=16, return_plan=True)
  alone = sk.sinkhorn(log_p, 20.0, **kwargs)
  masked = sk.sinkhorn(padded, 20.0, row_mask=mask, **kwargs)
  np.testing.assert_array_equal(np.asarray(masked.labels)[:300], np.asarray(alone.labels))
  np.testing.assert_allclose(np.asarray(masked.plan)[:300], np.asarray(alone.plan), atol=1e-7)
  assert np.asarray(masked.plan)[300:].sum() == 0


def test_both_modes_give_the_same_labels_at_selavi_lambda():
  log_p = _log_p(2000, 31, seed=3)
  labels = [np.asarray(sk.sinkhorn(log_p, 20.0, mode=m, tol=1e-5, num_iters=5000).labels)
            for m in MODES]
  np.testing.assert_array_equal(labels[0], labels[1])


def test_warm_start_needs_fewer_iterations_for_the_same_labels():
  log_p = _log_p(1000, 11, seed=4)
  cold = sk.sinkhorn(log_p, 20.0, tol=1e-6, num_iters=5000)
  nudged = log_p + 0.01 * np.random.default_rng(5).standard_normal(log_p.shape).astype(np.float32)
  again = sk.sinkhorn(nudged, 20.0, tol=1e-6, num_iters=5000)
  warm = sk.sinkhorn(nudged, 20.0, tol=1e-6, num_iters=5000, init_log_alpha=cold.log_alpha)
  assert int(warm.iterations) < 0.7 * int(again.iterations)
  assert (np.asarray(warm.labels) == np.asarray(again.labels)).mean() > 0.999


def test_sort_trick_orders_the_prior_by_current_cluster_mass():
  n, k = 3000, 6
  logits = np.random.default_rng(6).standard_normal((n, k))
  logits[:, 2] += 1.5  # cluster 2 is currently the largest, cluster 4 the smallest
  logits[:, 4] -= 1.5
  log_p = np.asarray(jax.nn.log_softmax(jnp.asarray(logits, jnp.float32)))
  mass = softmax(logits, axis=1).sum(0)
  prior = np.array([1, 2, 4, 8, 16, 32], np.float32)

  r = np.asarray(sk.sorted_marginal(prior, mass, order='paper'))
  assert r.argmax() == 2 and r.argmin() == 4
  np.testing.assert_allclose(np.sort(r), prior / prior.sum(), rtol=1e-6)
  reciprocal = np.asarray(sk.sorted_marginal(prior, mass, order='reciprocal'))
  assert reciprocal.argmax() == 4 and reciprocal.argmin() == 2

  labels = np.asarray(sk.sinkhorn(log_p, 20.0, col_marginal=r, tol=1e-6, num_iters=5000).labels)
  sizes = np.bincount(labels, minlength=k) / n
  np.testing.assert_allclose(sizes, r, atol=0.02)


def test_gaussian_prior_is_one_draw_per_head_around_n_over_k():
  prior = sk.gaussian_prior(jax.random.PRNGKey(0), num_heads=10, num_clusters=309,
                            num_examples=170_752)
  assert prior.shape == (10, 309)
  np.testing.assert_allclose(prior.mean(), 170_752 / 309, rtol=0.01)
  np.testing.assert_allclose((prior / (170_752 / 309)).std(), 0.1, rtol=0.1)
  assert not np.allclose(prior[0], prior[1])
  np.testing.assert_array_equal(prior, sk.gaussian_prior(jax.random.PRNGKey(0), 10, 309, 170_752))


def numpy_swav(scores, eps, iters):
  """SwAV's `distributed_sinkhorn` (Caron et al. 2020), written out in float64."""
  q = np.exp(np.asarray(scores, np.float64) / eps).T
  q /= q.sum()
  k, b = q.shape
  for _ in range(iters):
    q /= q.sum(axis=1, keepdims=True)
    q /= k
    q /= q.sum(axis=0, keepdims=True)
    q /= b
  return (q * b).T


def swav_codes(scores, eps, num_iters=3, mode='scaling'):
  """SwAV's codes the way GOCA asks for them (`GOCA._plan`): `num_iters` iterations on exp(S/ε) with
  uniform marginals, the plan scaled so that each row sums to 1."""
  result = sk.sinkhorn(np.asarray(scores, np.float32) / eps, 1.0, tol=None, num_iters=num_iters,
                       return_plan=True, mode=mode)
  return result.plan * scores.shape[0]


@pytest.mark.parametrize('mode', MODES)
def test_swav_batch_codes_equal_swav_algorithm(mode):
  z = np.random.default_rng(8).standard_normal((64, 16))
  protos = np.random.default_rng(9).standard_normal((16, 10))
  scores = (z / np.linalg.norm(z, axis=1, keepdims=True)) @ (protos / np.linalg.norm(protos, axis=0))
  codes = swav_codes(scores, eps=0.05, num_iters=3, mode=mode)
  np.testing.assert_allclose(codes, numpy_swav(scores, 0.05, 3), atol=1e-5)
  np.testing.assert_allclose(np.asarray(codes).sum(1), 1.0, rtol=1e-5)


def test_guided_prior_pulls_labels_towards_the_other_modality():
  rng = np.random.default_rng(10)
  n, k = 512, 8
  truth = rng.integers(0, k, n)
  scores = 0.3 * rng.standard_normal((n, k)) + 0.15 * np.eye(k)[truth]
  other = swav_codes(np.eye(k)[truth] + 0.3 * rng.standard_normal((n, k)), eps=0.1)
  agree = lambda logits: (np.asarray(sk.sinkhorn(logits, 1.0, tol=None, num_iters=3).labels)
                          == np.asarray(other).argmax(1)).mean()
  unguided = agree(scores / 0.05)
  guided = agree(sk.guided_logits(scores, other, eps1=0.05, eps2=0.05))
  code_sign = agree(sk.guided_logits(scores, other, eps1=0.05, eps2=0.05, sign=-1.0))
  assert guided > unguided + 0.2
  assert code_sign < unguided
