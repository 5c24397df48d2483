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
"""

from __future__ import annotations

import dataclasses
import functools
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
  scaling, for warm starts), iterations run, final marginal error, and the plan `[N, K]` if asked."""
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
             init_log_alpha: jax.Array | None = None, row_mask: jax.Array | None = None) -> Result:
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
  """
  if mode not in ('scaling', 'log'):
    raise ValueError(f"mode={mode!r} is not 'scaling' or 'log'")
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
                  bool(return_plan))
  limits = (jnp.int32(num_iters), jnp.float32(-1.0 if tol is None else tol))
  mask = jnp.ones((n,), jnp.float32) if row_mask is None else jnp.asarray(row_mask, jnp.float32)
  labels, log_alpha, iters, err, plan = solve(jnp.asarray(log_p, jnp.float32), r, log_alpha0, warm,
                                              limits, mask)
  return Result(labels[:n], log_alpha, iters, err, plan[:n] if return_plan else None)


@functools.lru_cache(maxsize=None)
def _solver(mesh: Mesh, mode: str, n: int, padded: int, lam: float, chunk: int, return_plan: bool):
  """One jitted, sharded solver per static configuration (iteration limits are traced)."""
  axis = sharding.DATA_AXIS
  rows = P(axis)
  local = functools.partial(_solve_local, mode=mode, lam=lam, chunk=chunk, axis=axis,
                            return_plan=return_plan)
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


def _solve_local(log_p, c, r, log_alpha0, warm, limits, *, mode, lam, chunk, axis, return_plan):
  """The solver on one device's rows; column quantities are reduced over `axis`."""
  num_iters, tol = limits
  scaled = lam * log_p
  # Iteration 1's column update: from uniform rows (as SeLaVi's release and SwAV), or a warm start.
  g0 = jax.lax.cond(warm, lambda: log_alpha0,
                    lambda: _column_potential(scaled, jnp.log(c), jnp.log(r), axis))
  if mode == 'log':
    g, f, iters, err = _log_domain(scaled, c, r, g0, num_iters, tol, axis)
    plan_of = lambda: jnp.exp(scaled + g + f[:, None])
  else:
    kernel, g_kernel, alpha, beta, iters, err = _stabilised_scaling(
        scaled, c, r, g0, num_iters, tol, chunk, axis)
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


def _stabilised_scaling(scaled, c, r, g0, num_iters, tol, chunk, axis):
  """Multiplicative updates on a fixed float32 kernel, absorbing scalings into g when they grow.

  The plan is diag(β) M diag(α) with M = exp(λ log P + g_kernel - rowmax): rows are fitted exactly by
  each β, columns by each α. A column starved at λ = 100 has column sum 0 in float32 and would need an
  infinite α: instead, the column potential is recomputed in the log domain from the current rows,
  absorbed into a rebuilt kernel, and α reset to 1. The inner loop never carries or copies the kernel;
  the outer loop only runs again after an absorption.
  """
  log_r = jnp.log(r)
  alpha_one = jnp.ones_like(r)

  def running(it, err):
    return (it < num_iters) & (err > tol)

  def safe(alpha, s):
    return jnp.all(s > 1.0 / _SAFE ** 2) & jnp.all(alpha < _SAFE) & jnp.all(alpha > 1.0 / _SAFE)

  def scale(kernel, alpha, beta, s, it, err):
    def body(state):
      _, _, s, it, _ = state
      alpha = r / s
      beta, s = _fused_pass(kernel, alpha, c, chunk, axis)
      return alpha, beta, s, it + 1, jnp.sum(jnp.abs(alpha * s - r))

    def cond(state):
      _, _, s, it, err = state
      return running(it, err) & safe(r / s, s)

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
