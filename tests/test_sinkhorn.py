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
  _assert_padding_rows_take_no_mass(log_p, mode=mode)


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


def _ill_conditioned(n=600, k=8, seed=11):
  """A confident network whose clusters' sizes (1 : 3) the uniform prior must even out, at SeLaVi's λ:
  the mass moves through few borderline rows, so plain Sinkhorn is slow (as in the SeLa demo's late
  label updates)."""
  rng = np.random.default_rng(seed)
  sizes = np.linspace(1.0, 3.0, k)
  truth = rng.choice(k, n, p=sizes / sizes.sum())
  logits = rng.standard_normal((n, k)) + 5.0 * np.eye(k)[truth]
  log_p = np.asarray(jax.nn.log_softmax(jnp.asarray(logits, jnp.float32)))
  return log_p, np.full(k, 1.0 / k, np.float32)


@pytest.mark.parametrize('mode', MODES)
def test_overrelaxed_plan_equals_plain_and_float64_reference(mode):
  log_p = _log_p(400, 7, seed=12)
  r = np.linspace(1.0, 2.0, 7).astype(np.float32)
  r /= r.sum()
  expected = reference_plan(log_p, 20.0, r=r)
  # 3e-6 is near float32's floor for the rows' violation (a few 1e-7 of the unit mass), which the
  # over-relaxed error counts and plain Sinkhorn's does not.
  kwargs = dict(col_marginal=r, mode=mode, tol=3e-6, num_iters=5000, return_plan=True, chunk_size=16)
  plain = sk.sinkhorn(log_p, 20.0, **kwargs)
  relaxed = sk.sinkhorn(log_p, 20.0, overrelaxation=1.9, **kwargs)
  plan = np.asarray(relaxed.plan, np.float64)
  assert float(relaxed.error) <= 3e-6
  # The error bounds both marginals of the returned plan (its rows are not refitted).
  assert np.abs(plan.sum(0) - r).sum() + np.abs(plan.sum(1) - 1 / 400).sum() <= 4e-6
  np.testing.assert_allclose(plan, expected, atol=1e-5)
  np.testing.assert_allclose(plan, np.asarray(plain.plan), atol=1e-5)
  np.testing.assert_array_equal(np.asarray(relaxed.labels), expected.argmax(1))


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('tol,num_iters', [(1e-6, 500), (None, 3)])
def test_plain_sinkhorn_is_unchanged_bit_for_bit(mode, tol, num_iters):
  """ω = 1 (and SwAV's and GOCA's 3 fixed iterations) give exactly what the solver gave before
  over-relaxation existed: these values are that version's output."""
  log_p = _log_p(96, 5, seed=7)
  r = np.array([0.1, 0.15, 0.2, 0.25, 0.3], np.float32)
  result = sk.sinkhorn(log_p, 20.0, col_marginal=r, mode=mode, tol=tol, num_iters=num_iters,
                       chunk_size=4, overrelaxation=1.0)
  expected = {  # On the tests' 8 devices, compiled as conftest compiles.
      ('scaling', 1e-6): (3.131479024887085e-05, [-15.309236526489258, -7.587202548980713,
                                                  -5.410100936889648, 14.969141006469727,
                                                  16.227617263793945], 240),
      ('scaling', None): (0.3608357906341553, [0.9861228466033936, 4.219698905944824,
                                               3.3816628456115723, 3.6848344802856445,
                                               4.366583824157715], 191),
      ('log', 1e-6): (3.1381845474243164e-05, [-15.309215545654297, -7.5871663093566895,
                                               -5.4100775718688965, 14.969182014465332,
                                               16.227664947509766], 240),
      ('log', None): (0.3608357310295105, [0.9861228466033936, 4.219698905944824,
                                           3.3816633224487305, 3.684835433959961,
                                           4.366583824157715], 191),
  }[mode, tol]
  assert int(result.iterations) == num_iters
  assert float(result.error) == expected[0]
  np.testing.assert_array_equal(np.asarray(result.log_alpha), np.float32(expected[1]))
  assert int(np.asarray(result.labels).sum()) == expected[2]


@pytest.mark.parametrize('mode', MODES)
def test_overrelaxation_needs_far_fewer_iterations_on_an_ill_conditioned_problem(mode):
  log_p, r = _ill_conditioned()
  count = lambda omega: int(sk.sinkhorn(log_p, 20.0, col_marginal=r, mode=mode, tol=1e-3,
                                        num_iters=20000, overrelaxation=omega).iterations)
  plain, relaxed = count(1.0), count(1.9)
  assert plain > 500 and relaxed < plain / 4, (plain, relaxed)


@pytest.mark.parametrize('mode', MODES)
def test_overrelaxed_on_eight_devices_equals_one_device(mode):
  log_p, r = _ill_conditioned(n=1000, k=13, seed=2)
  kwargs = dict(col_marginal=r, mode=mode, tol=1e-6, num_iters=5000, chunk_size=32, overrelaxation=1.9)
  on_one = sk.sinkhorn(log_p, 20.0, mesh=sharding.make_mesh(jax.devices()[:1]), **kwargs)
  eight = sharding.make_mesh()
  on_eight = sk.sinkhorn(sharding.to_global(log_p, eight), 20.0, mesh=eight, **kwargs)
  assert len(on_eight.labels.sharding.device_set) == 8
  np.testing.assert_array_equal(np.asarray(on_one.labels), np.asarray(on_eight.labels))
  # Potentials are defined up to a constant (f + a, g - a), which over-relaxed steps move.
  centred = lambda g: np.asarray(g) - np.mean(g)
  np.testing.assert_allclose(centred(on_one.log_alpha), centred(on_eight.log_alpha), atol=1e-3)
  # Near float32's floor the last few iterations depend on the order of the sums.
  assert abs(int(on_one.iterations) - int(on_eight.iterations)) <= 0.05 * int(on_one.iterations)


@pytest.mark.parametrize('mode', MODES)
def test_overrelaxation_with_a_warm_start(mode):
  log_p, r = _ill_conditioned(n=1000, k=11, seed=4)
  kwargs = dict(col_marginal=r, mode=mode, tol=1e-4, num_iters=20000, overrelaxation=1.9)
  first = sk.sinkhorn(log_p, 20.0, **kwargs)
  nudged = log_p + 0.01 * np.random.default_rng(5).standard_normal(log_p.shape).astype(np.float32)
  cold = sk.sinkhorn(nudged, 20.0, **kwargs)
  warm = sk.sinkhorn(nudged, 20.0, init_log_alpha=first.log_alpha, **kwargs)
  plain = sk.sinkhorn(nudged, 20.0, **{**kwargs, 'overrelaxation': 1.0})
  assert float(warm.error) <= 1e-4 and int(warm.iterations) < 0.7 * int(cold.iterations)
  assert (np.asarray(warm.labels) == np.asarray(plain.labels)).mean() > 0.999


@pytest.mark.parametrize('mode', MODES)
def test_masked_rows_take_no_mass_when_overrelaxed(mode):
  log_p, r = _ill_conditioned(n=300, k=7, seed=4)
  _assert_padding_rows_take_no_mass(log_p, col_marginal=r, mode=mode, overrelaxation=1.9)


def test_relaxation_bound_is_where_the_lyapunov_decrease_stays_a_share_of_sinkhorns():
  """h(ω, t) >= η h(1, t), η = ω (2 - ω) / 2, for every log ratio t up to the bound and not above."""
  h = lambda w, t: w * t - np.expm1((w - 1) * t) + np.expm1(-t)
  for omega in (1.5, 1.9):
    bound, eta = sk._relaxation_bound(omega), omega * (2 - omega) / 2
    t = np.r_[np.linspace(-30, bound, 2001), bound + np.geomspace(1e-6, 30, 200)]
    keeps = h(omega, t) >= eta * h(1.0, t) - 1e-12
    np.testing.assert_array_equal(keeps, t <= bound)
  assert 0.17 < sk._relaxation_bound(1.9) < 0.18


def test_overrelaxation_out_of_range_is_refused():
  with pytest.raises(ValueError, match='overrelaxation=2.0'):
    sk.sinkhorn(_log_p(16, 3), 20.0, overrelaxation=2.0)


def _assert_padding_rows_take_no_mass(log_p, **kwargs):
  """20 masked copies of row 0 appended to `log_p`: the real rows get the plan and labels they get
  alone (the padding of a sharded pass), the masked rows nothing."""
  n = log_p.shape[0]
  padded = np.concatenate([log_p, np.repeat(log_p[:1], 20, axis=0)])
  mask = np.r_[np.ones(n), np.zeros(20)]
  kwargs = dict(tol=1e-6, num_iters=5000, chunk_size=16, return_plan=True, **kwargs)
  alone = sk.sinkhorn(log_p, 20.0, **kwargs)
  masked = sk.sinkhorn(padded, 20.0, row_mask=mask, **kwargs)
  np.testing.assert_array_equal(np.asarray(masked.labels)[:n], np.asarray(alone.labels))
  np.testing.assert_allclose(np.asarray(masked.plan)[:n], np.asarray(alone.plan), atol=1e-7)
  assert np.asarray(masked.plan)[n:].sum() == 0
