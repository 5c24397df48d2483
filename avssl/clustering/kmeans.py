"""k-means for XDC's pseudo-labels (XDC §3.1-3.2, DeepCluster's loop) and post-hoc baselines.

Why it is built this way:

- **Data stays where it is.** The N x D features stay row-sharded over the mesh's `data` axis. Lloyd's
  loop runs as one jitted `lax.while_loop` inside `shard_map`: each device assigns its own rows and sums
  them per cluster; only the K x D centroid sums, the K counts and a few scalars cross devices (`psum`).
  No N x D array is ever gathered to one device.
- **Assignment is a matmul.** Distances use ||x||^2 - 2 x.c + ||c||^2, so nearly all the time is one
  float32 matmul per block of rows (`precision=HIGHEST`, so GPUs do not drop to TF32). The nearest
  centroid is found in two plain reductions (the row minimum, then the first column that reaches it),
  which XLA vectorises; with `argmin` instead, a CPU assignment pass took about twice as long.
- **Blocks of rows.** Each device walks its rows in blocks of at most `chunk_size` (`lax.map`), so the
  N x K distance matrix never exists: memory is O(chunk_size x K) per device, and on CPU a block's
  distances stay in cache. The per-cluster sums are then one scatter-add of all the device's rows by
  label (scattering inside the loop made XLA copy every block first, about 10% slower on CPU).
- **Padding.** N need not divide over the devices: rows are padded with zeros up to
  devices x blocks x block rows. Padded rows are recognised by their global row index (>= N) and never
  count: not in sums, counts or inertia, never chosen to re-seed a cluster, and dropped from `labels`.
- **Empty clusters** are re-seeded the way scikit-learn's Lloyd does it, so results stay comparable: each
  empty cluster takes one of the points farthest from their own centroid (the farthest point for the
  first empty cluster, the next farthest for the second, ...), and that point is removed from the sum of
  the cluster it leaves. A point that is the only member of its cluster is never taken, since that would
  empty another cluster. Candidates are found without a gather of the data: each device proposes its K
  farthest rows, and only those K x D candidates cross devices (a psum of zero-padded slots, so every
  device holds the same copy), and only in an iteration that has an empty cluster. If a cluster is
  still empty after the last iteration, iterations continue (at most K more) until none is, so no
  empty cluster survives unless the data has fewer than K distinct points.
- **Centring.** For the Euclidean metric the data is centred first (as scikit-learn does), which keeps
  the matmul form accurate for features far from the origin; the mean is added back to the centroids.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from avssl import sharding
from avssl.sharding import DATA_AXIS

Metric = Literal['euclidean', 'cosine']
_HIGHEST = lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class KMeansResult:
  """The restart with the lowest inertia.

  Attributes:
    centroids: `[k, d]` float32, replicated. In the space k-means ran in: the input space for the
      Euclidean metric, unit vectors for cosine, the whitened PCA space when `pca_dim` was set.
    labels: `[n]` int32, the nearest centroid of each row (row-sharded when no padding was needed).
    inertia: sum over rows of the squared Euclidean distance to the assigned centroid; for cosine, where
      rows and centroids are unit vectors, that is the sum of 2 - 2 cos.
    iterations: Lloyd updates that restart made (more than `iters` only when empty clusters needed
      repair after the last one).
  """
  centroids: jax.Array
  labels: jax.Array
  inertia: float
  iterations: int


def row_blocks(n: int, devices: int, chunk_size: int) -> tuple[int, int]:
  """`(blocks, block)`: each device holds `blocks` blocks of `block` rows, together at least `n` rows.

  The block is a multiple of 8 and at most `chunk_size` rounded up to 8, chosen to pad as little as
  possible (100,000 rows on one device in chunks of 4096 become 25 blocks of 4000, no padding).
  """
  per_device = -(-n // devices)
  blocks = max(1, -(-per_device // chunk_size))
  block = -(-per_device // blocks)
  return blocks, -(-block // 8) * 8


@functools.partial(jax.jit, static_argnames=('rows', 'out_sharding'))
def _pad_to(x: jax.Array, rows: int, out_sharding: NamedSharding | None) -> jax.Array:
  x = x.astype(jnp.float32)
  x = jnp.pad(x, [(0, rows - x.shape[0])] + [(0, 0)] * (x.ndim - 1))
  return x if out_sharding is None else lax.with_sharding_constraint(x, out_sharding)


def pad_rows(x: np.ndarray | jax.Array, rows: int, mesh: Mesh) -> jax.Array:
  """`x` as float32 with zero rows appended up to `rows`, row-sharded over the mesh's `data` axis.

  A numpy array must hold all rows (single process). A `jax.Array` already on the mesh is padded on its
  devices, without gathering it; one on other devices is padded there and then moved. The result is
  always a new array, never `x` itself, so callers may donate it.
  """
  target = sharding.batch_sharded(mesh)
  if isinstance(x, jax.Array):
    on_mesh = x.sharding.device_set == set(mesh.devices.flat)
    padded = jax.device_put(_pad_to(x, rows, target if on_mesh else None), target)
    return jnp.copy(padded) if padded is x else padded  # In case jit forwards an unchanged input.
  x = np.asarray(x, np.float32)
  if rows > x.shape[0]:
    x = np.concatenate([x, np.zeros((rows - x.shape[0],) + x.shape[1:], np.float32)])
  return jax.device_put(x, target)


def _valid(x: jax.Array, n: jax.Array) -> jax.Array:
  return (jnp.arange(x.shape[0]) < n)[:, None]


@jax.jit
def _mean(x: jax.Array, n: jax.Array) -> jax.Array:
  return jnp.sum(x, axis=0) / n  # Padded rows are zero.


def _center(x: jax.Array, mean: jax.Array, n: jax.Array) -> jax.Array:
  return jnp.where(_valid(x, n), x - mean, 0.0)


@functools.partial(jax.jit, donate_argnums=0)
def _center_in_place(x: jax.Array, mean: jax.Array, n: jax.Array) -> jax.Array:
  """`_center` reusing `x`'s memory; only for arrays this module made (`pad_rows` copies)."""
  return _center(x, mean, n)


@jax.jit
def _mean_variance(x: jax.Array, n: jax.Array) -> jax.Array:
  """The mean over features of each feature's variance (scikit-learn's scale for `tol`)."""
  centered = _center(x, _mean(x, n), n)
  return jnp.sum(centered * centered) / (n * x.shape[1])


@jax.jit
def _covariance(x: jax.Array, mean: jax.Array, n: jax.Array) -> jax.Array:
  centered = _center(x, mean, n)
  return jnp.dot(centered.T, centered, precision=_HIGHEST) / n


def l2_normalize(x: jax.Array) -> jax.Array:
  """Unit rows along the last axis; an all-zero (padding) row stays zero."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@jax.jit
def _project(x: jax.Array, mean: jax.Array, projection: jax.Array, n: jax.Array) -> jax.Array:
  y = jnp.dot(x - mean, projection, precision=_HIGHEST)
  return jnp.where(_valid(x, n), l2_normalize(y), 0.0)


@jax.jit
def _normalize_rows(x: jax.Array) -> jax.Array:
  return l2_normalize(x)  # Zero (padded) rows stay zero.


def _pca_whiten_padded(x: jax.Array, n: int, dim: int) -> jax.Array:
  """PCA to `dim`, whitening, L2 normalisation of the rows of a padded, row-sharded `x`."""
  if not 0 < dim <= min(n, x.shape[1]):
    raise ValueError(f'pca_dim={dim} must be in [1, min(n, d)] = [1, {min(n, x.shape[1])}]')
  n_ = jnp.int32(n)
  mean = _mean(x, n_)
  covariance = np.asarray(_covariance(x, mean, n_), np.float64)
  eigenvalues, eigenvectors = np.linalg.eigh(covariance)
  top = np.argsort(eigenvalues)[::-1][:dim]
  # The small floor only guards rank-deficient features against a division by zero.
  scale = 1.0 / np.sqrt(np.maximum(eigenvalues[top], 0.0) + 1e-6 * max(eigenvalues.max(), 1e-30))
  projection = jnp.asarray(eigenvectors[:, top] * scale, jnp.float32)
  return _project(x, mean, projection, n_)


def pca_whiten(x: np.ndarray | jax.Array, dim: int, *, mesh: Mesh | None = None) -> jax.Array:
  """DeepCluster's preprocessing before k-means: PCA to `dim`, whitening, L2 normalisation of rows.

  DeepCluster (which XDC builds on, XDC §3.1; `docs/papers_and_releases.md`) centres the features,
  projects them on the top `dim` principal directions, divides each by the square root of its
  eigenvalue and L2-normalises the rows. Only the D x D covariance crosses devices; its
  eigendecomposition runs on the host in float64.

  Args:
    x: `[n, d]` features (numpy, or a `jax.Array` already on `mesh`).
    dim: output dimension, at most `min(n, d)`.
    mesh: mesh with a `data` axis to shard the rows over; None uses the first device.

  Returns:
    `[n, dim]` float32 with unit-norm rows.
  """
  mesh = mesh or sharding.make_mesh(jax.devices()[:1])
  n = x.shape[0]
  blocks, block = row_blocks(n, mesh.devices.size, n)
  padded = _pca_whiten_padded(pad_rows(x, mesh.devices.size * blocks * block, mesh), n, dim)
  return padded if padded.shape[0] == n else padded[:n]


@functools.partial(jax.jit, static_argnames=('k', 'trials'))
def _kmeans_plus_plus(sample: jax.Array, key: jax.Array, *, k: int, trials: int) -> jax.Array:
  """Greedy k-means++ (Arthur & Vassilvitskii, 2007) with scikit-learn's `2 + log k` trials per step.

  Each new centroid is drawn from the sample with probability proportional to the squared distance to
  the closest centroid so far; of `trials` such draws, the one that lowers the sample's potential most
  is kept.
  """
  size = sample.shape[0]
  sample_sq = jnp.sum(sample * sample, axis=1)

  def sq_dist(points):
    cross = jnp.dot(sample, points.T, precision=_HIGHEST)
    return jnp.maximum(sample_sq[:, None] - 2 * cross + jnp.sum(points * points, axis=1), 0.0)

  key, first_key = jax.random.split(key)
  first = jax.random.randint(first_key, (), 0, size)
  centroids = jnp.zeros((k, sample.shape[1]), sample.dtype).at[0].set(sample[first])
  closest = sq_dist(sample[first][None])[:, 0]

  def add(i, state):
    centroids, closest, key = state
    key, draw_key = jax.random.split(key)
    total = jnp.sum(closest)
    p = jnp.where(total > 0, closest / jnp.where(total > 0, total, 1.0), 1.0 / size)
    candidates = jax.random.choice(draw_key, size, (trials,), p=p)
    closest_if = jnp.minimum(closest[:, None], sq_dist(sample[candidates]))
    best = jnp.argmin(jnp.sum(closest_if, axis=0))
    return centroids.at[i].set(sample[candidates[best]]), closest_if[:, best], key

  centroids, _, _ = lax.fori_loop(1, k, add, (centroids, closest, key))
  return centroids


@jax.jit
def _take_rows(x: jax.Array, rows: jax.Array) -> jax.Array:
  return x[rows]


def _init_centroids(x: jax.Array, n: int, k: int, key: jax.Array, sample_size: int) -> jax.Array:
  """k-means++ on a uniform sample of the real rows; only the sample is gathered."""
  sample_key, init_key = jax.random.split(key)
  rows = jax.random.choice(sample_key, n, (min(n, sample_size),), replace=False)
  sample = _take_rows(x, rows)
  return _kmeans_plus_plus(sample, init_key, k=k, trials=2 + int(math.log(k)))


class _Stats(NamedTuple):
  """One assignment pass: global sums, counts, inertia; this device's labels and distances."""
  sums: jax.Array
  counts: jax.Array
  inertia: jax.Array
  labels: jax.Array
  dist: jax.Array


@functools.partial(jax.jit, static_argnames=('mesh', 'block', 'cosine'))
def _lloyd(x: jax.Array, centroids: jax.Array, n: jax.Array, iters: jax.Array, tol: jax.Array, *,
           mesh: Mesh, block: int, cosine: bool):
  """Lloyd's iterations from `centroids` on padded, row-sharded `x` (see the module docstring)."""
  k = centroids.shape[0]

  def local(x, c0, n, iters, tol):
    rows, dim = x.shape
    valid = lax.axis_index(DATA_AXIS) * rows + jnp.arange(rows) < n
    x_sq = jnp.sum(x * x, axis=1)
    blocks = (x.reshape(-1, block, dim), x_sq.reshape(-1, block))
    cluster_ids = jnp.arange(k, dtype=jnp.int32)

    def assign(c):
      c_sq = jnp.sum(c * c, axis=1)

      def one_block(rows):
        xb, xb_sq = rows
        d = c_sq - 2 * jnp.dot(xb, c.T, precision=_HIGHEST)
        nearest = jnp.min(d, axis=1)
        labels = jnp.min(jnp.where(d == nearest[:, None], cluster_ids, k), axis=1)
        return labels, jnp.maximum(nearest + xb_sq, 0.0)

      labels, dist = lax.map(one_block, blocks)
      labels, dist = labels.reshape(-1), jnp.where(valid, dist.reshape(-1), -jnp.inf)
      target = jnp.where(valid, labels, k)  # Index k is dropped: padded rows add nothing.
      sums = jnp.zeros((k, dim), x.dtype).at[target].add(x, mode='drop')
      counts = jnp.zeros((k,), jnp.int32).at[target].add(1, mode='drop')
      inertia = jnp.sum(jnp.where(valid, dist, 0.0))
      sums, counts, inertia = lax.psum((sums, counts, inertia), DATA_AXIS)
      return _Stats(sums, counts, inertia, labels, dist)

    def means(c, sums, counts):
      return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1)[:, None].astype(x.dtype), c)

    def gather(tree):
      """All devices' `[m, ...]` arrays concatenated, as a psum so the result is the same everywhere."""
      def one(v):
        slots = jnp.zeros((mesh.shape[DATA_AXIS],) + v.shape, v.dtype)
        return lax.psum(slots.at[lax.axis_index(DATA_AXIS)].set(v), DATA_AXIS).reshape(
            (-1,) + v.shape[1:])
      return jax.tree.map(one, tree)

    def reseed(c, s):
      empty = s.counts == 0
      movable = jnp.where(s.counts[s.labels] > 1, s.dist, -jnp.inf)
      far_dist, far_rows = lax.top_k(movable, min(k, rows))
      cand_dist, cand_x, cand_label = gather((far_dist, x[far_rows], s.labels[far_rows]))
      ranked_dist, ranked = lax.top_k(cand_dist, k)
      slot = jnp.maximum(jnp.cumsum(empty) - 1, 0)
      take = empty & (ranked_dist[slot] > -jnp.inf)
      picked = ranked[slot]
      source = jnp.where(take, cand_label[picked], k)
      sums = s.sums.at[source].add(-cand_x[picked], mode='drop')
      counts = s.counts.at[source].add(-1, mode='drop')
      return jnp.where(take[:, None], cand_x[picked], means(c, sums, counts))

    def update(c, s):
      new = lax.cond(jnp.any(s.counts == 0), reseed, lambda c, s: means(c, s.sums, s.counts), c, s)
      return l2_normalize(new) if cosine else new

    def keep_going(state):
      _, s, it, shift = state
      running = (it < iters) & (shift > tol)
      repairing = jnp.any(s.counts == 0) & (it < iters + k)
      return running | repairing

    def step(state):
      c, s, it, _ = state
      new = update(c, s)
      shift = jnp.sum((new - c) ** 2)
      # Nothing moved (no label changed): assigning again would reproduce `s` exactly.
      s = lax.cond(shift > 0, assign, lambda _: s, new)
      return new, s, it + 1, shift

    state = (c0, assign(c0), jnp.zeros((), jnp.int32), jnp.asarray(jnp.inf, x.dtype))
    c, s, it, _ = lax.while_loop(keep_going, step, state)
    return c, s.labels, s.inertia, it

  return jax.shard_map(local, mesh=mesh, in_specs=(P(DATA_AXIS), P(), P(), P(), P()),
                       out_specs=(P(), P(DATA_AXIS), P(), P()))(x, centroids, n, iters, tol)


def kmeans(x: np.ndarray | jax.Array, k: int, *, iters: int = 20, n_init: int = 1,
           init: Literal['k-means++'] | np.ndarray | jax.Array = 'k-means++',
           metric: Metric = 'euclidean', pca_dim: int | None = None, seed: int | jax.Array = 0,
           mesh: Mesh | None = None, tol: float = 1e-4, chunk_size: int = 4096,
           init_sample_size: int | None = None) -> KMeansResult:
  """Lloyd's k-means, row-sharded over `mesh`, best of `n_init` restarts.

  Args:
    x: `[n, d]` features: numpy (all rows, one process) or a `jax.Array`, ideally already row-sharded
      over `mesh` (it is then never gathered).
    k: number of clusters, at most `n`.
    iters: maximum number of Lloyd updates per restart (scikit-learn's `max_iter`).
    n_init: restarts from different k-means++ draws; the lowest inertia wins. 1 for explicit `init`.
    init: 'k-means++' (greedy, on a sample, deterministic from `seed`), or a `[k, d']` array of initial
      centroids in the space k-means runs in (after PCA-whitening if `pca_dim` is set; they are
      normalised for cosine).
    metric: 'euclidean', or 'cosine' (spherical k-means: rows and centroids L2-normalised, so the
      nearest centroid by Euclidean distance is the one with the largest cosine).
    pca_dim: if set, DeepCluster's preprocessing first (`pca_whiten`): PCA to this dimension,
      whitening, L2 normalisation.
    seed: integer seed or PRNG key for k-means++; restart r uses `fold_in(key, r)`.
    mesh: mesh whose `data` axis the rows are split over; None runs on the first device.
    tol: stop a restart once the squared centroid shift summed over clusters is at most `tol` times the
      mean feature variance (scikit-learn's rule); 0 stops only when nothing moves.
    chunk_size: rows per device per block; memory is O(chunk_size x k) besides the data.
    init_sample_size: rows k-means++ sees; default `min(n, max(10000, 40 k))`.

  Returns:
    A `KMeansResult` of the best restart.
  """
  if x.ndim != 2:
    raise ValueError(f'x must be [n, d]; got shape {x.shape}')
  n = x.shape[0]
  if not 1 <= k <= n:
    raise ValueError(f'k={k} clusters need 1 <= k <= n={n} rows')
  if metric not in ('euclidean', 'cosine'):
    raise ValueError(f"metric={metric!r}; use 'euclidean' or 'cosine'")
  explicit = not isinstance(init, str)
  if not explicit and init != 'k-means++':
    raise ValueError(f"init={init!r}; use 'k-means++' or an array of initial centroids")
  if n_init < 1:
    raise ValueError(f'n_init={n_init}; need at least one run')
  if explicit and n_init != 1:
    raise ValueError(f'n_init={n_init} restarts from one explicit init would repeat one run; use 1')
  dim = x.shape[1] if pca_dim is None else pca_dim
  if explicit and np.shape(init) != (k, dim):
    raise ValueError(f'init has shape {np.shape(init)}; expected ({k}, {dim})')
  mesh = mesh or sharding.make_mesh(jax.devices()[:1])
  blocks, block = row_blocks(n, mesh.devices.size, chunk_size)
  n_ = jnp.int32(n)
  data = pad_rows(x, mesh.devices.size * blocks * block, mesh)
  offset = None
  if pca_dim is not None:
    data = _pca_whiten_padded(data, n, pca_dim)
  elif metric == 'cosine':
    data = _normalize_rows(data)
  if metric == 'euclidean':
    offset = _mean(data, n_)
    data = _center_in_place(data, offset, n_)
  abs_tol = jnp.float32(tol) * _mean_variance(data, n_) if tol > 0 else jnp.float32(0.0)
  if explicit:
    start = jnp.asarray(init, jnp.float32)
    if offset is not None:
      start = start - offset
    elif metric == 'cosine':
      start = l2_normalize(start)
  key = jax.random.PRNGKey(seed) if isinstance(seed, int) else seed
  sample_size = init_sample_size or max(10_000, 40 * k)
  best = None
  for restart in range(n_init):
    if not explicit:
      start = _init_centroids(data, n, k, jax.random.fold_in(key, restart), sample_size)
    centroids, labels, inertia, its = _lloyd(data, start, n_, jnp.int32(iters), abs_tol, mesh=mesh,
                                             block=block, cosine=metric == 'cosine')
    if best is None or float(inertia) < best.inertia:
      best = KMeansResult(centroids, labels, float(inertia), int(its))
  assert best is not None  # n_init >= 1 runs.
  centroids = best.centroids + offset if offset is not None else best.centroids
  labels = best.labels if best.labels.shape[0] == n else best.labels[:n]
  return dataclasses.replace(best, centroids=centroids, labels=labels)
