"""Cluster-balanced sampling of the training stream (DeepCluster's, which XDC adapts).

DeepCluster (Caron et al., ECCV 2018, §3.3) trains on "images sampled based on a uniform distribution
over the classes, or pseudo-labels": an epoch draws the same number of images from every non-empty
cluster, with replacement where a cluster is smaller than that. Two pieces make such an epoch from the
record shards, which are read in sequence and never by index:

- `balanced_weights`: each clip's expected number of draws per epoch, w_i (mean 1), such that every
  labelling's non-empty clusters get N / K' draws each. For one labelling that is w_i = N / (K' n_c)
  (c the clip's cluster); for two (XDC's video and audio clusterings, each the target of one encoder)
  a product w_i = a[y_i] · b[z_i] balances both at once, found by iterative proportional fitting
  (Deming & Stephan, 1940), the same row and column scaling as Sinkhorn's.
- `draws`: how many times each clip comes in one epoch: systematic resampling (Kitagawa, 1996) over a
  seeded permutation of the clips. Clip i comes ⌊w_i⌋ or ⌈w_i⌉ times with mean exactly w_i, and the
  draws of an epoch add up to exactly the number of clips, so an epoch keeps its length and a
  resumed run finds each step at the same place. The draws are a pure function of (weights, seed,
  epoch): every run, and every resume, draws the same epochs.

Per cluster, a count is N / K' in expectation, with a spread below that of independent draws, not
exactly N / K' as in DeepCluster's sampler.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from absl import logging

#: Folded into the seed of the draws' generator, so it repeats no other stream of the same seed.
_DRAWS_STREAM = 0xB5


def balanced_weights(labellings: Sequence[np.ndarray], *, iterations: int = 100,
                     tolerance: float = 1e-6) -> np.ndarray:
  """`[N]` float64 expected draws per epoch (mean 1) under which each labelling's non-empty clusters
  all get N / K' draws.

  Iterative proportional fitting: each labelling in turn rescales the weights of its clusters to the
  target mass. One labelling is done after one pass (w_i = N / (K' n_c)); with several, the passes
  repeat until every cluster's mass is within `tolerance` of its target (relative), at most
  `iterations` times. Where the labellings admit no such weights (a cluster of one labelling lying
  inside too small a cluster of another), the last labelling is exact and the others as close as the
  passes got, which is logged.
  """
  labellings = [np.asarray(y, np.int64) for y in labellings]
  n = labellings[0].shape[0] if labellings else 0
  if not n or any(y.shape != (n,) for y in labellings):
    raise ValueError(f'balanced_weights needs one or more labellings of the same N > 0 clips, got '
                     f'shapes {[y.shape for y in labellings]}')
  targets = [n / np.count_nonzero(np.bincount(y)) for y in labellings]
  w = np.ones(n, np.float64)
  error = np.inf
  for _ in range(iterations):
    error = _worst_error(w, labellings, targets)
    if error <= tolerance:
      break
    for y, target in zip(labellings, targets):
      mass = np.bincount(y, weights=w)
      w *= target / mass[y]
  else:
    error = _worst_error(w, labellings, targets)
  if error > 0.01:
    logging.warning('Balanced sampling: after %d passes a cluster still gets %.1f%% more or fewer '
                    'draws than N / K (the clusterings admit no exactly balanced weights)',
                    iterations, 100 * error)
  return w


def _worst_error(w: np.ndarray, labellings: list[np.ndarray], targets: list[float]) -> float:
  """The largest relative gap between a non-empty cluster's mass and its target."""
  worst = 0.0
  for y, target in zip(labellings, targets):
    mass = np.bincount(y, weights=w)
    used = np.bincount(y) > 0
    worst = max(worst, float(np.max(np.abs(mass[used] - target)) / target))
  return worst


def draws(weights: np.ndarray, rows: np.ndarray, seed: int, epoch: int) -> np.ndarray:
  """How many times each of `rows` (dataset indices) is drawn in `epoch`, `[len(rows)]` int64 adding
  up to exactly `len(rows)`.

  The rows' `weights` are scaled to sum to `len(rows)` (one process's share of the epoch, whatever its
  clusters' shares), laid end to end in a seeded order, and cut by a comb of unit spacing with one
  seeded offset: row i is hit ⌊w_i⌋ or ⌈w_i⌉ times, w_i times on average over the offset (systematic
  resampling). The seeded order keeps neighbouring dataset indices from being drawn together.
  """
  w = np.asarray(weights, np.float64)[rows]
  if not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
    raise ValueError('sampling weights must be finite, non-negative and not all zero; got '
                     f'min {w.min()}, max {w.max()} over {len(w)} rows')
  rng = np.random.default_rng([seed, _DRAWS_STREAM, epoch])
  order = rng.permutation(len(w))
  edges = np.cumsum(w[order])
  edges *= len(w) / edges[-1]
  edges[-1] = len(w)  # Exactly: the comb then hits len(rows) times in all.
  hits = np.floor(edges + rng.random())
  counts = np.empty(len(w), np.int64)
  counts[order] = np.diff(hits, prepend=0.0).astype(np.int64)
  return counts


def draw_table(weights: np.ndarray, rows: np.ndarray, seed: int, epoch: int) -> np.ndarray:
  """`draws` as a `[len(weights)]` table by dataset index (0 for the indices not in `rows`)."""
  table = np.zeros(len(weights), np.int64)
  table[rows] = draws(weights, rows, seed, epoch)
  return table
