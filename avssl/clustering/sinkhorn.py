"""Sinkhorn-Knopp for self-labelling: entropic optimal transport of N samples onto K clusters.

SeLaVi §3.1 (Eq. 2-3): the labels Q solve  min_{Q in U(r, c)} <Q, -log P> + (1/λ) KL(Q || r cᵀ), whose
solution is Q = diag(β) P^λ diag(α) for scalings found by alternately fitting the cluster marginal r and
the sample marginal c. The input here is `log_p` `[N, K]` (or `[heads, N, K]`): SeLaVi's Eq. 6 average
of log-softmax outputs over modalities and augmentations (`methods/selavi.py`), or any logits, e.g. the
scores S/ε of SwAV/GOCA with λ = 1 (`methods/goca.py`).

Two modes give the same labels:
  - `'scaling'` (default): stabilised scaling (Schmitzer 2019). The kernel is built once in float32 with
    every row's maximum at 1, and iterations are multiplicative updates of α (K) and β (N) - no exp per
    element per iteration. One iteration is one pass over the kernel: rows are visited in cache-sized
    chunks, each chunk's β is updated and its contribution to the column sums accumulated while it is in
    cache. When a scaling leaves float32's safe range (a starved cluster at λ = 100, say), it is
    absorbed into log potentials with one log-domain update and the kernel is rebuilt, so nothing
    overflows or divides by zero.
  - `'log'`: log-domain potentials updated by log-sum-exp, an exp per element per half-iteration; the
    choice on accelerators, where exp is cheap.

Rows are sharded over the mesh's `data` axis and the solver runs inside `shard_map`: the row updates are
local; only K-vectors (column sums, or column max and sums of exponentials) cross devices.

Convergence is the L1 violation of the cluster marginal after the sample update, Σ_k |Σ_n Q_nk - r_k|,
which each iteration gets for free; iterations stop at `tol` or `num_iters`.

Over-relaxation (`overrelaxation=ω` > 1; Thibault, Chizat, Dossal & Papadakis, "Overrelaxed
Sinkhorn-Knopp algorithm for regularized optimal transport", Algorithms 2021) extrapolates each
potential update, u <- (1 - ω) u + ω u_sinkhorn in the log domain (scalings raised to ω), and converges
to the same plan. Plain Sinkhorn converges linearly at a rate ρ that tends to 1 as λ grows and clusters
become hard to tell apart; over-relaxing with ω near 2 / (1 + sqrt(1 - ρ)) turns that rate into about
ω - 1 (their local analysis, as for SOR): on the SeLa demo's label updates, a third of the
iterations, and the tolerance reached where plain Sinkhorn stops at its cap (`docs/papers_and_releases.md`,
"Sinkhorn iterations"). A fixed ω > 1 may diverge
far from the solution, so each coordinate is over-relaxed only where that provably helps: their
Lyapunov function, KL(Q* | Q), equals the dual gap, and a half-step that moves coordinate i by t_i =
log(target_i / current marginal_i) lowers it by w_i h(ω_i, t_i) with h(ω, t) = ω t - e^((ω-1) t) + e^-t
(w = c or r), which is largest at ω = 1 and, for t near 0, ω (2 - ω) times h(1, t). A coordinate takes
ω where h(ω, t) >= η h(1, t), η = ω (2 - ω) / 2, i.e. where t <= `_relaxation_bound(ω)`, and the plain
step elsewhere. Every half-step then lowers the gap by at least η times what Sinkhorn's own step would,
KL(w | marginal), so these KLs are summable and the marginals converge, from any start (their
Lyapunov argument, with the exact decrease in place of their bound on it); near the solution every
coordinate is over-relaxed. The test costs a comparison per row and column; the plan's rows are then
not exactly fitted either, so the error is the L1 violation of both marginals. ω = 1 is the plain
algorithm, the same operations as without it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

from avssl import sharding

# Scalings outside [1/_SAFE, _SAFE], or column sums below 1/_SAFE**2, trigger an absorption into the
# log potentials; float32 spans about 1e-38..3e38, so products of two scalings stay finite.
_SAFE = 1e15
# Rows per chunk of the fused pass on CPU: 128 x K float32 rows stay in L1/L2 between the chunk's two
# products.
CPU_CHUNK = 128


@dataclasses.dataclass(frozen=True)
class Result:
  """Hard labels `[N]` (argmax of the plan), the log column potential `[K]` (the cluster-side
  scaling, for warm starts), iterations run, final marginal error (of the cluster marginal; of both
  marginals when over-relaxed), and the plan `[N, K]` if asked."""
  labels: jax.Array
  log_alpha: jax.Array
  iterations: jax.Array
  error: jax.Array
  plan: jax.Array | None = None


def gaussian_prior(key: jax.Array, num_heads: int, num_clusters: int, num_examples: int,
                   sd: float = 0.1) -> jax.Array:
  """SeLaVi's Gaussian cluster-size prior, N/K (1 + sd ε), one draw per head `[heads, K]`.

  Drawn once and kept (checkpointed) for the whole run, as in the release
  (`docs/papers_and_releases.md`).
  """
  noise = jax.random.normal(key, (num_heads, num_clusters), jnp.float32)
  return (1.0 + sd * noise) * (num_examples / num_clusters)


def sorted_marginal(prior: jax.Array, mass: jax.Array, order: str = 'paper') -> jax.Array:
  """The cluster marginal r from prior masses, permuted by SeLaVi's sort trick (§3.2, Eq. 4-5).

  The optimal permutation sorts the prior the way the clusters' current masses are sorted: with
  `order='paper'` the largest prior mass goes to the currently largest cluster. `order='reciprocal'`
  is the released code (commit 4756164): the same assignment followed by r = 1/prior, which gives the
  currently *smallest* cluster the largest mass.
  """
  if order not in ('paper', 'reciprocal'):
    raise ValueError(f"order={order!r} is not 'paper' or 'reciprocal'")
  ranks = jnp.argsort(jnp.argsort(mass))
  r = jnp.sort(jnp.asarray(prior, jnp.float32))[ranks]
  if order == 'reciprocal':
    r = 1.0 / r
  return r / jnp.sum(r)


def guided_logits(scores: jax.Array, other_codes: jax.Array, eps1: float,
                  eps2: float | jax.Array, sign: float = 1.0) -> jax.Array:
  """GOCA's guided kernel (Eq. 6-10) as logits for `sinkhorn(..., lam=1)`.

  K = exp((-C + λ₂ log D') / (λ₁ + λ₂)) with cost C = -S and D' the other modality's codes: the closed
  form of min <Q, C> - λ₁ H(Q) + λ₂ KL(Q || D'). `sign=-1` is the released code's sign (which raises
  the clusters the other modality rules out). D' is clamped at 1e-12 so log D' stays finite.
  """
  return (scores + sign * eps2 * jnp.log(jnp.clip(other_codes, 1e-12))) / (eps1 + eps2)


def sinkhorn(log_p: jax.Array, lam: float, *, col_marginal: jax.Array | None = None,
             mode: str = 'scaling', num_iters: int = 1000, tol: float | None = 1e-3,
             mesh: Mesh | None = None, chunk_size: int | None = None, return_plan: bool = False,
             init_log_alpha: jax.Array | None = None, row_mask: jax.Array | None = None,
             overrelaxation: float = 1.0) -> Result:
  """Solves SeLaVi's Eq. 3 for `log_p` `[N, K]`; see the module docstring.

  Args:
    log_p: log-probabilities (or logits) `[N, K]`; rows may be sharded over `mesh`'s `data` axis.
    lam: λ, the inverse entropic regularisation (SeLaVi: 20; SwAV/GOCA: 1, with scores already / ε).
    col_marginal: the cluster marginal r `[K]`, summing to 1; uniform (1/K) by default. The sample
      marginal is uniform, 1/N.
    mode: 'scaling' or 'log'.
    num_iters: the most iterations; with `tol=None` exactly this many (SwAV: 3).
    tol: stop when the cluster-marginal L1 violation is at most this.
    mesh: the device mesh; default: all devices.
    chunk_size: rows per chunk of the fused pass ('scaling'); rows are padded to a multiple of
      `chunk_size` times the number of devices. None: `CPU_CHUNK` rows on CPU, where a chunk that
      stays in cache between its two products pays; on accelerators every local row in one chunk, since
      a sequential loop over small chunks is latency-bound there (on an H200 at VGG-Sound scale,
      128-row chunks ran an iteration in 8.6 ms against 0.14 ms for two passes at memory bandwidth).
    return_plan: also return the plan Q `[N, K]` (rows summing to 1/N).
    init_log_alpha: a warm start for the column potential, e.g. the previous label update's.
    row_mask: `[N]`, 1 for real rows and 0 for padding (the masked tail of a dataset pass); masked rows
      get no mass (c_n = 0, the others share 1), so they change nothing; their labels are meaningless.
    overrelaxation: ω in [1, 2); 1 is plain Sinkhorn-Knopp (SeLaVi's release, SwAV), above 1 the
      safeguarded over-relaxation of the module docstring.
  """
  if mode not in ('scaling', 'log'):
    raise ValueError(f"mode={mode!r} is not 'scaling' or 'log'")
  if not 1.0 <= overrelaxation < 2.0:
    raise ValueError(f'overrelaxation={overrelaxation!r} is outside [1, 2): 1 is plain Sinkhorn, '
                     'values towards 2 extrapolate more')
  mesh = sharding.make_mesh() if mesh is None else mesh
  n, k = log_p.shape
  devices = mesh.devices.size
  if chunk_size is None:
    chunk_size = CPU_CHUNK if mesh.devices.flat[0].platform == 'cpu' else -(-n // devices)
  block = devices * (chunk_size if mode == 'scaling' else 1)
  padded = -(-n // block) * block
  r = jnp.full((k,), 1.0 / k, jnp.float32) if col_marginal is None else jnp.asarray(
      col_marginal, jnp.float32)
  warm = jnp.bool_(init_log_alpha is not None)
  log_alpha0 = jnp.zeros((k,), jnp.float32) if init_log_alpha is None else jnp.asarray(
      init_log_alpha, jnp.float32)
  solve = _solver(mesh, mode, n, padded, float(lam), int(min(chunk_size, padded // devices)),
                  bool(return_plan), _relaxation(float(overrelaxation)))
  limits = (jnp.int32(num_iters), jnp.float32(-1.0 if tol is None else tol))
  mask = jnp.ones((n,), jnp.float32) if row_mask is None else jnp.asarray(row_mask, jnp.float32)
  labels, log_alpha, iters, err, plan = solve(jnp.asarray(log_p, jnp.float32), r, log_alpha0, warm,
                                              limits, mask)
  return Result(labels[:n], log_alpha, iters, err, plan[:n] if return_plan else None)


@dataclasses.dataclass(frozen=True)
class _Relax:
  """Over-relaxation ω and the largest log ratio t at which a coordinate takes it."""
  omega: float
  bound: float


def _relaxation_bound(omega: float) -> float:
  """The t* > 0 with h(ω, t) >= η h(1, t) exactly for t <= t* (module docstring), by bisection.

  With d(t) = h(ω, t) - η h(1, t): d(0) = d'(0) = 0 and d''(0) = ω (2 - ω) - η > 0; for t < 0 the
  e^-t terms, (1 - η) e^-t, keep d positive, and for t > 0 e^((ω-1) t) makes it negative from t* on.
  """
  eta = omega * (2.0 - omega) / 2.0
  h = lambda w, t: w * t - math.expm1((w - 1.0) * t) + math.expm1(-t)
  d = lambda t: h(omega, t) - eta * h(1.0, t)
  lo, hi = 1e-6, 1.0
  while d(hi) >= 0:
    lo, hi = hi, 2 * hi
  for _ in range(100):
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if d(mid) >= 0 else (lo, mid)
  return lo


def _relaxation(omega: float) -> _Relax | None:
  return None if omega == 1.0 else _Relax(omega, _relaxation_bound(omega))


def _relaxed_log(current, target, relax):
  """current + ω (target - current) where the log step t = target - current passes the Lyapunov test
  (t <= t*), else the plain step to target (also where either is -inf: masked rows)."""
  t = target - current
  return jnp.where(t <= relax.bound, current + relax.omega * t, target)


def _relaxed_scale(current, target, relax):
  """The same in scalings: current · (target / current)^ω, or target."""
  x = target / current
  return jnp.where(x <= math.exp(relax.bound), current * x ** relax.omega, target)


@functools.lru_cache(maxsize=None)
def _solver(mesh: Mesh, mode: str, n: int, padded: int, lam: float, chunk: int, return_plan: bool,
            relax: _Relax | None):
  """One jitted, sharded solver per static configuration (iteration limits are traced)."""
  axis = sharding.DATA_AXIS
  rows = P(axis)
  local = functools.partial(_solve_local, mode=mode, lam=lam, chunk=chunk, axis=axis,
                            return_plan=return_plan, relax=relax)
  sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(axis, None), rows, P(), P(), P(), P()),
                          out_specs=(rows, P(), P(), P(), P(axis, None)), check_vma=False)

  @jax.jit
  def solve(log_p, r, log_alpha0, warm, limits, mask):
    pad = padded - n
    if pad:  # no copy of the input when its rows already split evenly
      log_p = jnp.pad(log_p, ((0, pad), (0, 0)))
    c = jnp.pad(mask / jnp.sum(mask), (0, pad))
    log_p = jax.lax.with_sharding_constraint(log_p, sharding.batch_sharded(mesh))
    return sharded(log_p, c, r, log_alpha0, warm, limits)

  return solve


def _solve_local(log_p, c, r, log_alpha0, warm, limits, *, mode, lam, chunk, axis, return_plan,
                 relax):
  """The solver on one device's rows; column quantities are reduced over `axis`."""
  num_iters, tol = limits
  scaled = lam * log_p
  # Iteration 1's column update: from uniform rows (as SeLaVi's release and SwAV), or a warm start.
  g0 = jax.lax.cond(warm, lambda: log_alpha0,
                    lambda: _column_potential(scaled, jnp.log(c), jnp.log(r), axis))
  if mode == 'log':
    solve = _log_domain if relax is None else functools.partial(_log_domain_relaxed, relax=relax)
    g, f, iters, err = solve(scaled, c, r, g0, num_iters, tol, axis)
    plan_of = lambda: jnp.exp(scaled + g + f[:, None])
  else:
    kernel, g_kernel, alpha, beta, iters, err = _stabilised_scaling(
        scaled, c, r, g0, num_iters, tol, chunk, axis, relax)
    g = g_kernel + jnp.log(alpha)
    plan_of = lambda: kernel * beta[:, None] * alpha
  labels = jnp.argmax(scaled + g, axis=-1).astype(jnp.int32)
  plan = plan_of() if return_plan else jnp.zeros((0, r.shape[0]), jnp.float32)
  return labels, g, iters, err, plan


def _column_potential(scaled, f, log_r, axis):
  """g = log r - log Σ_n exp(λ log P + f) over all devices' rows (pmax-stabilised, then psum)."""
  z = scaled + f[:, None]
  m = jax.lax.pmax(jnp.max(z, axis=0), axis)
  m = jnp.where(jnp.isfinite(m), m, 0.0)
  total = jax.lax.psum(jnp.sum(jnp.exp(z - m), axis=0), axis)
  return log_r - (m + jnp.log(total))


def _log_domain(scaled, c, r, g, num_iters, tol, axis):
  """Alternating log-sum-exp updates of the column potential g and the row potential f."""
  log_c, log_r = jnp.log(c), jnp.log(r)
  row_potential = lambda g: log_c - jax.nn.logsumexp(scaled + g, axis=1)

  def body(state):
    g, f, it, _ = state
    new_g = _column_potential(scaled, f, log_r, axis)
    err = jnp.sum(jnp.abs(r * jnp.exp(g - new_g) - r))  # the column violation of (g, f)
    return new_g, row_potential(new_g), it + 1, err

  def cond(state):
    _, _, it, err = state
    return (it < num_iters) & (err > tol)

  state = (g, row_potential(g), jnp.int32(1), jnp.float32(jnp.inf))
  g, f, it, _ = jax.lax.while_loop(cond, body, state)
  err = jnp.sum(jnp.abs(r * jnp.exp(g - _column_potential(scaled, f, log_r, axis)) - r))
  return g, f, it, err


def _log_domain_relaxed(scaled, c, r, g, num_iters, tol, axis, relax):
  """`_log_domain` with over-relaxed updates; the error adds the rows' violation, which the relaxed
  row update leaves: row n of (g, f) sums to c_n exp(f_n - f_sinkhorn_n)."""
  log_c, log_r = jnp.log(c), jnp.log(r)
  row_potential = lambda g: log_c - jax.nn.logsumexp(scaled + g, axis=1)
  column_error = lambda g, new_g: jnp.sum(jnp.abs(r * jnp.exp(g - new_g) - r))

  def body(state):
    g, f, it, _, row_err = state
    new_g = _column_potential(scaled, f, log_r, axis)
    err = column_error(g, new_g) + row_err  # the violation of (g, f)
    g = _relaxed_log(g, new_g, relax)
    f_sinkhorn = row_potential(g)
    f = _relaxed_log(f, f_sinkhorn, relax)
    row_sums = jnp.where(c > 0, c * jnp.exp(f - f_sinkhorn), 0.0)
    return g, f, it + 1, err, jax.lax.psum(jnp.sum(jnp.abs(row_sums - c)), axis)

  def cond(state):
    _, _, it, err, _ = state
    return (it < num_iters) & (err > tol)

  state = (g, row_potential(g), jnp.int32(1), jnp.float32(jnp.inf), jnp.float32(0.0))
  g, f, it, _, row_err = jax.lax.while_loop(cond, body, state)
  return g, f, it, column_error(g, _column_potential(scaled, f, log_r, axis)) + row_err


def _build_kernel(scaled, g):
  """Row-stabilised kernel exp(λ log P + g - rowmax): every row's largest entry is exactly 1."""
  z = scaled + g
  return jnp.exp(z - jnp.max(z, axis=1, keepdims=True))


def _fused_pass(kernel, alpha, c, chunk, axis):
  """β = c / (M α) and the column sums s = Mᵀ β, in one pass over M, chunk by chunk."""
  n, k = kernel.shape
  chunks = (kernel.reshape(n // chunk, chunk, k), c.reshape(n // chunk, chunk))

  def body(s, xs):
    m, c_chunk = xs
    t = m @ alpha
    beta = jnp.where(c_chunk > 0, c_chunk / t, 0.0)
    return s + beta @ m, beta

  s, beta = jax.lax.scan(body, jnp.zeros((k,), jnp.float32), chunks)
  return beta.reshape(n), jax.lax.psum(s, axis)


def _fused_pass_relaxed(kernel, alpha, beta, c, chunk, axis, relax):
  """`_fused_pass` with β over-relaxed from its previous value; also returns the L1 violation of the
  rows, Σ_n |β_n (M α)_n - c_n|, which the relaxed β leaves."""
  n, k = kernel.shape
  chunks = (kernel.reshape(n // chunk, chunk, k), c.reshape(n // chunk, chunk),
            beta.reshape(n // chunk, chunk))

  def body(sums, xs):
    s, row_err = sums
    m, c_chunk, beta_chunk = xs
    t = m @ alpha
    real = c_chunk > 0
    beta = jnp.where(real, _relaxed_scale(beta_chunk, jnp.where(real, c_chunk / t, 1.0), relax), 0.0)
    return (s + beta @ m, row_err + jnp.sum(jnp.abs(beta * t - c_chunk))), beta

  (s, row_err), beta = jax.lax.scan(body, (jnp.zeros((k,), jnp.float32), jnp.float32(0.0)), chunks)
  return beta.reshape(n), jax.lax.psum(s, axis), jax.lax.psum(row_err, axis)


def _stabilised_scaling(scaled, c, r, g0, num_iters, tol, chunk, axis, relax=None):
  """Multiplicative updates on a fixed float32 kernel, absorbing scalings into g when they grow.

  The plan is diag(β) M diag(α) with M = exp(λ log P + g_kernel - rowmax): rows are fitted exactly by
  each β, columns by each α. A column starved at λ = 100 has column sum 0 in float32 and would need an
  infinite α: instead, the column potential is recomputed in the log domain from the current rows,
  absorbed into a rebuilt kernel, and α reset to 1. The inner loop never carries or copies the kernel;
  the outer loop only runs again after an absorption. With `relax`, α and β are over-relaxed and the
  error adds the rows' violation; absorptions take plain steps.
  """
  log_r = jnp.log(r)
  alpha_one = jnp.ones_like(r)

  def running(it, err):
    return (it < num_iters) & (err > tol)

  def safe(alpha, s):
    return jnp.all(s > 1.0 / _SAFE ** 2) & jnp.all(alpha < _SAFE) & jnp.all(alpha > 1.0 / _SAFE)

  def column_update(alpha, s):
    return r / s if relax is None else _relaxed_scale(alpha, r / s, relax)

  def row_update(kernel, alpha, beta):
    """β, the column sums Mᵀβ and the marginal error of the plan (α, β)."""
    if relax is None:
      beta, s = _fused_pass(kernel, alpha, c, chunk, axis)
      return beta, s, jnp.sum(jnp.abs(alpha * s - r))
    beta, s, row_err = _fused_pass_relaxed(kernel, alpha, beta, c, chunk, axis, relax)
    return beta, s, jnp.sum(jnp.abs(alpha * s - r)) + row_err

  def scale(kernel, alpha, beta, s, it, err):
    def body(state):
      alpha, beta, s, it, _ = state
      alpha = column_update(alpha, s)
      beta, s, err = row_update(kernel, alpha, beta)
      return alpha, beta, s, it + 1, err

    def cond(state):
      alpha, _, s, it, err = state
      return running(it, err) & safe(column_update(alpha, s), s)

    return jax.lax.while_loop(cond, body, (alpha, beta, s, it, err))

  def absorb(g_kernel, beta, it):
    f = jnp.log(beta) - jnp.max(scaled + g_kernel, axis=1)  # the current plan's row potential
    g = _column_potential(scaled, f, log_r, axis)
    kernel = _build_kernel(scaled, g)
    beta, s = _fused_pass(kernel, alpha_one, c, chunk, axis)
    return kernel, g, alpha_one, beta, s, it + 1, jnp.sum(jnp.abs(s - r))

  def outer_body(state):
    """Entered only when the scalings left the safe range: absorb, then scale again."""
    kernel, g_kernel, alpha, beta, s, it, err = absorb(state[1], state[3], state[5])
    return (kernel, g_kernel, *scale(kernel, alpha, beta, s, it, err))

  kernel = _build_kernel(scaled, g0)
  beta, s = _fused_pass(kernel, alpha_one, c, chunk, axis)
  scalings = scale(kernel, alpha_one, beta, s, jnp.int32(1), jnp.sum(jnp.abs(s - r)))
  kernel, g_kernel, alpha, beta, _, it, err = jax.lax.while_loop(
      lambda state: running(state[-2], state[-1]), outer_body, (kernel, g0, *scalings))
  return kernel, g_kernel, alpha, beta, it, err


def sinkhorn_heads(log_p: jax.Array, lam: float, *, col_marginals: jax.Array | None = None,
                   init_log_alphas: jax.Array | None = None, **kwargs: Any) -> Result:
  """`sinkhorn` for each head of `[heads, N, K]`, one head at a time, so that the extra memory is one
  head's kernel whatever the number of heads. Results are stacked on a leading heads axis."""
  results = []
  for h in range(log_p.shape[0]):
    result = sinkhorn(
        log_p[h], lam, col_marginal=None if col_marginals is None else col_marginals[h],
        init_log_alpha=None if init_log_alphas is None else init_log_alphas[h], **kwargs)
    jax.block_until_ready(result.labels)  # one head's buffers alive at a time
    results.append(result)
  stack = lambda name: jnp.stack([getattr(r, name) for r in results])
  plans = [r.plan for r in results if r.plan is not None]  # All heads or none (one return_plan).
  return Result(stack('labels'), stack('log_alpha'), stack('iterations'), stack('error'),
                jnp.stack(plans) if plans else None)
