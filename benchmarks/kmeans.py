"""Lloyd k-means speed: avssl's jitted, row-sharded k-means against scikit-learn and faiss-cpu.

    python benchmarks/kmeans.py                # 100,000 x 512 float32 -> 256 clusters, 20 iterations
    python benchmarks/kmeans.py --devices 2    # also row-sharded over 2 simulated CPU devices
    python benchmarks/kmeans.py --n 20000      # smaller, for a quick look

All three start from the same initial centroids (k rows drawn from the data) and run exactly `--iters`
Lloyd iterations (tol=0). Each method's final centroids are scored with the same float64 inertia, so
the comparison is at equal work and checked at equal quality. faiss-cpu is optional (not a project
dependency): `pip install faiss-cpu` to include it. Our first call (0 iterations, which compiles the
same executables) is timed and reported on its own, outside the timed runs. `--repeats` interleaves
the methods and reports each one's fastest run, which matters on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import time

_ARGS = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
_ARGS.add_argument('--n', type=int, default=100_000, help='rows')
_ARGS.add_argument('--d', type=int, default=512, help='feature dimension')
_ARGS.add_argument('--k', type=int, default=256, help='clusters')
_ARGS.add_argument('--iters', type=int, default=20, help='Lloyd iterations')
_ARGS.add_argument('--devices', type=int, default=1,
                   help='simulated CPU devices to shard the rows over (sets XLA_FLAGS before jax loads)')
_ARGS.add_argument('--repeats', type=int, default=1, help='timed runs per method, interleaved')
_ARGS.add_argument('--seed', type=int, default=0)
FLAGS = _ARGS.parse_args()
if FLAGS.devices > 1:
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             f' --xla_force_host_platform_device_count={FLAGS.devices}').strip()

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import numpy as np
from sklearn.cluster import KMeans

import machine
from avssl import sharding
from avssl.clustering import kmeans as kmeans_lib
# pylint: enable=g-import-not-at-top,wrong-import-position


def _data(n: int, d: int, seed: int) -> np.ndarray:
  """Standard normal rows: with no cluster structure Lloyd still moves points after 20 iterations, so
  every method does all `--iters` (on separated blobs avssl and scikit-learn stop early, once no label
  changes, while faiss always runs them all: unequal work)."""
  return np.random.default_rng(seed).standard_normal((n, d), np.float32)


def _inertia(x: np.ndarray, centroids: np.ndarray, chunk: int = 8192) -> float:
  """Float64 sum of squared distances to the nearest centroid: one referee for every method."""
  c = np.asarray(centroids, np.float64)
  c_sq = np.sum(c * c, axis=1)
  total = 0.0
  for start in range(0, len(x), chunk):
    xb = x[start:start + chunk].astype(np.float64)
    d = np.sum(xb * xb, axis=1)[:, None] - 2 * xb @ c.T + c_sq
    total += float(np.maximum(d.min(axis=1), 0).sum())
  return total


def _timed(fn):
  start = time.perf_counter()
  out = fn()
  return time.perf_counter() - start, out


def main() -> None:
  n, d, k, iters = FLAGS.n, FLAGS.d, FLAGS.k, FLAGS.iters
  print(f'host: {machine.cpu()}; {machine.jax_devices()}')
  print(f'data: {n} x {d} float32 standard normal -> {k} clusters, {iters} Lloyd iterations, tol=0, '
        f'same initial centroids')
  x = _data(n, d, FLAGS.seed)
  init = x[np.random.default_rng(FLAGS.seed + 1).choice(n, k, replace=False)]

  methods = {}
  meshes = {'avssl (1 device)': sharding.make_mesh(jax.devices()[:1])}
  if jax.device_count() > 1:
    meshes[f'avssl ({jax.device_count()} devices, row-sharded)'] = sharding.make_mesh()
  for name, mesh in meshes.items():
    def ours(mesh=mesh):
      result = kmeans_lib.kmeans(x, k, init=init, iters=iters, tol=0.0, mesh=mesh)
      return np.asarray(result.centroids), result.inertia, result.iterations
    def compile_and_assign(mesh=mesh):
      return kmeans_lib.kmeans(x, k, init=init, iters=0, tol=0.0, mesh=mesh).inertia
    first, _ = _timed(compile_and_assign)
    print(f'{name}: first call, jit compilation + one assignment pass: {first:.2f} s')
    methods[name] = ours

  def sklearn():
    model = KMeans(k, init=init, n_init=1, algorithm='lloyd', max_iter=iters, tol=0.0).fit(x)
    return model.cluster_centers_, float(model.inertia_), model.n_iter_
  methods['scikit-learn'] = sklearn

  try:
    import faiss  # pylint: disable=g-import-not-at-top
  except ImportError:
    print('faiss not installed')
  else:
    def faiss_kmeans():
      # max_points_per_centroid=n: faiss would otherwise train on a subsample of 256 points per cluster.
      model = faiss.Kmeans(d, k, niter=iters, max_points_per_centroid=n, seed=FLAGS.seed)
      model.train(x, init_centroids=init)
      return model.centroids, float(model.obj[-1]), len(model.obj)
    methods['faiss-cpu'] = faiss_kmeans

  times = {name: [] for name in methods}
  outputs = {}
  for _ in range(FLAGS.repeats):
    for name, fn in methods.items():
      seconds, outputs[name] = _timed(fn)
      times[name].append(seconds)

  print(f'{"method":<36} {"wall s":>7} {"iters":>6} {"own inertia":>14} {"inertia (f64)":>14}')
  scored = {}
  for name, (centroids, own, done) in outputs.items():
    scored[name] = _inertia(x, centroids)
    print(f'{name:<36} {min(times[name]):>7.2f} {done:>6} {own:>14.6g} {scored[name]:>14.6g}')
  base = min(times['scikit-learn'])
  for name in meshes:
    print(f'{name} / scikit-learn: time x{min(times[name]) / base:.2f}, '
          f'inertia x{scored[name] / scored["scikit-learn"]:.5f}')


if __name__ == '__main__':
  main()
