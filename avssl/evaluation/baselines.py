"""Post-hoc k-means baselines: cluster an encoder's features, score the clusters against ground truth.

SeLaVi §4 "Baselines" (Table 5) runs k-means on the global-average-pooled features of pretrained
encoders, with k equal to the number of clusters of its own method (which equals the number of classes
in all its datasets). GOCA and IICL judge cluster quality the same way but average over **50** k-means
runs with different seeds and report mean ± std (GOCA §4.3, Table 6; IICL's Table II does not say);
`runs` chooses.

Each video's feature is the mean over its views; by default it is then L2-normalised (GOCA, IICL) —
`normalize=False` clusters the raw pooled features as SeLaVi's Faiss call did. The joint audio-visual
feature is the concatenation of the separately normalised per-modality features (XDC's CDC), so neither
modality dominates by scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from avssl.clustering import kmeans as kmeans_lib
from avssl.evaluation import metrics


def video_features(views: Sequence[np.ndarray], normalize: bool = True,
                   joint: str = 'concat') -> np.ndarray:
  """`[N, D]` per-video features from one or more modalities' `[N, V, D]` view features: views
  averaged, each modality normalised (when `normalize`), modalities concatenated (`joint='concat'`)
  or averaged (`'average'`, GOCA's "+": both streams' features have one size)."""
  parts = [v.mean(axis=1) for v in views]
  if normalize:
    parts = [np.asarray(kmeans_lib.l2_normalize(p)) for p in parts]
  if joint == 'average':
    return np.mean(parts, axis=0)
  if joint != 'concat':
    raise ValueError(f"joint={joint!r}; use 'concat' or 'average'")
  return np.concatenate(parts, axis=-1)


def kmeans_quality(x: np.ndarray, labels: np.ndarray, k: int, *, runs: int = 50, iters: int = 50,
                   seed: int = 0, mesh: jax.sharding.Mesh | None = None) -> dict[str, Any]:
  """`metrics.METRICS` of `runs` k-means clusterings of `x [N, D]` (k-means++ from seeds
  seed, seed+1, ...), each as {'mean', 'std', 'runs'} over the runs; plus the count of videos."""
  if not (labels >= 0).any():
    raise ValueError('no video has a ground-truth label; k-means quality needs labels')
  return {**quality(kmeans_runs(x, k, runs=runs, iters=iters, seed=seed, mesh=mesh), labels), 'k': k}


def kmeans_runs(x: np.ndarray, k: int, *, runs: int = 50, iters: int = 50, seed: int = 0,
                mesh: jax.sharding.Mesh | None = None) -> np.ndarray:
  """The `[N, runs]` cluster of each video in each of `runs` k-means clusterings of `x [N, D]`
  (k-means++ from seeds seed, seed+1, ...): scored by `quality`, and kept for the nuisance report
  (`factors`)."""
  if runs < 1:
    raise ValueError(f'runs={runs}: at least one k-means run is needed')
  return np.stack([np.asarray(jax.device_get(
      kmeans_lib.kmeans(x, k, iters=iters, seed=seed + r, mesh=mesh).labels)) for r in range(runs)],
      axis=1)


def quality(assignments: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
  """`metrics.METRICS` of each run's clustering (`[N, runs]`) against `labels` (-1 unknown), as
  {'mean', 'std', 'runs'} over the runs; plus the count of videos and the number of runs."""
  known = labels >= 0
  if not known.any():
    raise ValueError('no video has a ground-truth label; k-means quality needs labels')
  scores = [metrics.cluster_metrics(labels, assignments[:, r]) for r in range(assignments.shape[1])]
  out: dict[str, Any] = {}
  for name in metrics.METRICS:
    values = np.array([s[name] for s in scores])
    out[name] = {'mean': float(values.mean()), 'std': float(values.std()), 'runs': values.tolist()}
  out.update(num_videos=int(known.sum()), num_runs=len(scores))
  return out
