"""SeLaVi's modality alignment (§3.3 and Appendix A.3, Eq. 7; the release:
`docs/papers_and_releases.md`).

The audio and video heads start from random weights, so their cluster numbering is arbitrary. Before
training, SeLaVi permutes the outputs of one head of the audio network so that its softmax P_a agrees
best with the video softmax P_v on the data:

    min over permutations pi of  C(pi) = sum_n sum_k |P_v[n, k] - P_a[n, pi(k)]|      (Eq. 7, 1-norm)

The objective is separable: C(pi) = sum_k C[k, pi(k)] with the K x K cost
C[k, l] = sum_n |P_v[n, k] - P_a[n, l]|. So it is a linear assignment problem, solved exactly once C is
known (`exact_permutation`, scipy's `linear_sum_assignment`). The release's greedy random pair-swap
search (`greedy_permutation`) is kept for comparison; here it works on the precomputed C, so each
proposal costs O(1) instead of O(N).

Convention, used by every function here: `perm[k]` is the audio cluster matched with video cluster k.
`permute_head` reorders the audio head's outputs so that new output k is old output `perm[k]`, i.e.
audio cluster perm[k] becomes cluster k, and afterwards the audio softmax column k tracks video column k.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from avssl import sharding
from avssl.clustering.kmeans import pad_rows, row_blocks
from avssl.sharding import DATA_AXIS


@dataclasses.dataclass(frozen=True)
class Alignment:
  """The permutation found and what it achieves.

  Attributes:
    perm: `[K]` int, `perm[k]` = the audio cluster matched with video cluster k.
    cost: C(perm), the L1 disagreement of Eq. 7 after alignment.
    identity_cost: C(identity), the disagreement before.
  """
  perm: np.ndarray
  cost: float
  identity_cost: float


@functools.partial(jax.jit, static_argnames=('mesh', 'block'))
def _l1_cost(p_v: jax.Array, p_a: jax.Array, *, mesh: Mesh, block: int) -> jax.Array:
  k = p_v.shape[1]

  def local(p_v, p_a):
    def one_block(total, rows):
      v, a = rows
      return total + jnp.sum(jnp.abs(v[:, :, None] - a[:, None, :]), axis=0), None

    zero = lax.pcast(jnp.zeros((k, k), jnp.float32), DATA_AXIS, to='varying')
    total, _ = lax.scan(one_block, zero, (p_v.reshape(-1, block, k), p_a.reshape(-1, block, k)))
    return lax.psum(total, DATA_AXIS)

  return jax.shard_map(local, mesh=mesh, in_specs=(P(DATA_AXIS), P(DATA_AXIS)),
                       out_specs=P())(p_v, p_a)


def cost_matrix(p_v: np.ndarray | jax.Array, p_a: np.ndarray | jax.Array, *, mesh: Mesh | None = None,
                block_elements: int = 1 << 22) -> jax.Array:
  """C[k, l] = sum_n |P_v[n, k] - P_a[n, l]|, the K x K cost of matching video k with audio l.

  The rows (examples) stay sharded over the mesh's `data` axis; each device walks its rows in blocks of
  about `block_elements / K^2` rows, so memory is O(block_elements) whatever N is, and only the K x K
  partial sums cross devices. Rows are zero-padded to divide over the devices; a zero row adds
  |0 - 0| = 0, so padding needs no mask.

  Args:
    p_v: `[N, K]` video cluster probabilities (softmax of one head).
    p_a: `[N, K]` audio cluster probabilities of the same examples, same head.
    mesh: mesh with a `data` axis; None uses the first device.
    block_elements: the size of the block's `[rows, K, K]` difference tensor.

  Returns:
    `[K, K]` float32, replicated.
  """
  if p_v.ndim != 2 or p_v.shape != p_a.shape:
    raise ValueError(f'P_v {p_v.shape} and P_a {p_a.shape} must both be [N, K] of the same shape')
  mesh = mesh or sharding.make_mesh(jax.devices()[:1])
  n, k = p_v.shape
  blocks, block = row_blocks(n, mesh.devices.size, max(1, block_elements // (k * k)))
  rows = mesh.devices.size * blocks * block
  return _l1_cost(pad_rows(p_v, rows, mesh), pad_rows(p_a, rows, mesh), mesh=mesh, block=block)


def permutation_cost(cost: np.ndarray | jax.Array, perm: np.ndarray) -> float:
  """C(perm) = sum_k cost[k, perm[k]]."""
  cost = np.asarray(cost, np.float64)
  return float(cost[np.arange(len(perm)), perm].sum())


def exact_permutation(cost: np.ndarray | jax.Array) -> np.ndarray:
  """The permutation minimising sum_k cost[k, perm[k]], exactly (Jonker-Volgenant, O(K^3))."""
  _, perm = scipy.optimize.linear_sum_assignment(np.asarray(cost, np.float64))
  return perm


def greedy_permutation(cost: np.ndarray | jax.Array, *, restarts: int = 2, steps: int = 50_000,
                       patience: int = 1000, seed: int = 0) -> np.ndarray:
  """The release's greedy search (`docs/papers_and_releases.md`, SeLaVi), on the precomputed cost.

  Each restart starts from the identity and proposes random pairs i != j, swapping perm[i] and perm[j]
  when that lowers the cost, i.e. when delta = C[i, perm i] + C[j, perm j] - C[i, perm j] - C[j, perm i]
  is positive; it stops after `steps` proposals or `patience` non-improving proposals in a row. The
  cheapest restart is returned (never worse than the identity). It finds a local optimum only; kept to
  compare with `exact_permutation`.
  """
  cost = np.asarray(cost, np.float64)
  k = cost.shape[0]
  rng = np.random.default_rng(seed)
  best = np.arange(k)
  if k < 2:
    return best
  for _ in range(restarts):
    perm = np.arange(k)
    first = rng.integers(0, k, steps)
    second = (first + rng.integers(1, k, steps)) % k  # Uniform over the other k - 1 clusters.
    stale = 0
    for i, j in zip(first.tolist(), second.tolist()):
      pi, pj = perm[i], perm[j]
      if cost[i, pi] + cost[j, pj] - cost[i, pj] - cost[j, pi] > 0:
        perm[i], perm[j] = pj, pi
        stale = 0
      else:
        stale += 1
        if stale >= patience:
          break
    if permutation_cost(cost, perm) < permutation_cost(cost, best):
      best = perm
  return best


def align(p_v: np.ndarray | jax.Array, p_a: np.ndarray | jax.Array, *,
          method: Literal['exact', 'greedy'] = 'exact', mesh: Mesh | None = None, seed: int = 0,
          **greedy_options: Any) -> Alignment:
  """The permutation of one head's audio clusters that best matches the video clusters (Eq. 7).

  Args:
    p_v: `[N, K]` video softmax of one head on the dataset (or a sample of it).
    p_a: `[N, K]` audio softmax of the same head on the same examples.
    method: 'exact' (linear assignment, the global optimum) or 'greedy' (the release's pair swaps).
    mesh: mesh over which the rows are sharded; None uses the first device.
    seed: seed of the greedy search.
    **greedy_options: `restarts`, `steps`, `patience` of `greedy_permutation`.

  Returns:
    An `Alignment`; pass its `perm` to `permute_head` for the audio head.
  """
  cost = np.asarray(cost_matrix(p_v, p_a, mesh=mesh), np.float64)
  if method == 'exact':
    perm = exact_permutation(cost)
  elif method == 'greedy':
    perm = greedy_permutation(cost, seed=seed, **greedy_options)
  else:
    raise ValueError(f"method={method!r}; use 'exact' or 'greedy'")
  return Alignment(perm, permutation_cost(cost, perm), permutation_cost(cost, np.arange(len(perm))))


def permute_head(dense: Mapping[str, Any], perm: np.ndarray, head: int | None = None) -> dict[str, Any]:
  """Reorders the outputs of a head's last dense layer: new output k = old output `perm[k]`.

  This is how SeLaVi applies the alignment (the release permutes the rows of the audio head's last
  PyTorch Linear; Flax stores the transpose). With `perm` from `align`, audio cluster perm[k] becomes
  cluster k, so the audio softmax column k then tracks video column k. Softmax commutes with permuting
  the logits, so nothing else in the head changes.

  Args:
    dense: the layer's params, `{'kernel': [hidden, K], 'bias': [K]}`, or stacked over heads as in
      `models.heads.MultiHead`: `{'kernel': [H, hidden, K], 'bias': [H, K]}`. The bias may be absent.
    perm: `[K]` permutation of range(K).
    head: which head of a stacked kernel to permute (the others are returned unchanged); None for a
      single head.

  Returns:
    A new params dict; the input is not modified.
  """
  kernel = jnp.asarray(dense['kernel'])
  k = kernel.shape[-1]
  perm = np.asarray(perm)
  if perm.shape != (k,) or not np.array_equal(np.sort(perm), np.arange(k)):
    raise ValueError(f'perm must be a permutation of range({k}); got {perm}')
  stacked = kernel.ndim == 3
  if stacked != (head is not None):
    raise ValueError(f'a kernel of shape {kernel.shape} needs head='
                     f'{"an index" if stacked else "None"}; got head={head}')
  out = dict(dense)
  if stacked:
    out['kernel'] = kernel.at[head].set(kernel[head][:, perm])
    if 'bias' in dense:
      bias = jnp.asarray(dense['bias'])
      out['bias'] = bias.at[head].set(bias[head][perm])
  else:
    out['kernel'] = kernel[:, perm]
    if 'bias' in dense:
      out['bias'] = jnp.asarray(dense['bias'])[perm]
  return out
