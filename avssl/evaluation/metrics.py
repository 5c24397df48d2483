"""Clustering metrics against ground-truth classes (SeLaVi §4 "Evaluation", Tables 2, 3 and 5).

SeLaVi reports NMI, ARI, accuracy after Hungarian matching, and two per-cluster quality measures, the
mean entropy ⟨H⟩ and the mean maximal purity ⟨p_max⟩ (§4, defined in its Appendix A.4). The released
`clustering_metrics.py` (`docs/papers_and_releases.md`, SeLaVi) fixes the details these functions
follow:

- NMI and aNMI use the arithmetic mean of the two entropies as normaliser (sklearn,
  `average_method='arithmetic'`).
- ⟨H⟩ and ⟨p_max⟩ are *unweighted* means over the non-empty clusters: every cluster counts once, whatever
  its size, so a few large impure clusters cannot hide behind many small pure ones (or the reverse).
  ⟨H⟩ uses the natural log. `weighted=True` gives the size-weighted variants instead: weighted ⟨H⟩ is the
  conditional entropy H(class | cluster) and weighted ⟨p_max⟩ equals `purity`.
- The release picks the head with the best NMI against the ground truth. That uses the labels it is
  evaluated on, so `per_head` reports it under `best_head_optimistic`, beside the honest mean over heads
  and head 0.

`purity` (GOCA and IICL's "Acc") maps every cluster to its majority class, so it never penalises
over-clustering; `accuracy` allows one cluster per class, so with more clusters than classes the
unmatched clusters count as errors.

Labels are non-negative integers; cluster and class ids need not be contiguous. A ground-truth label of
`UNKNOWN` (-1) marks a sample without annotation: it is left out of every metric, and `cluster_metrics`
and `per_head` report how many were left out under 'num_unknown' (and how many were scored under
'num_labelled'). All functions run on the host in numpy; the contingency matrix costs O(C·K) memory for
C classes and K clusters.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.optimize
import scipy.special
from sklearn import metrics as sk_metrics

UNKNOWN = -1

METRICS = ('nmi', 'anmi', 'ari', 'accuracy', 'purity', 'macro_f1', 'fmi', 'entropy', 'max_purity')

_TITLES = {'nmi': 'NMI', 'anmi': 'aNMI', 'ari': 'ARI', 'accuracy': 'Acc.', 'purity': 'Purity',
           'macro_f1': 'Macro-F1', 'fmi': 'FMI', 'entropy': '⟨H⟩', 'max_purity': '⟨p_max⟩'}


def _as_labels(labels: Any, name: str, *, ndim: int = 1, allow_unknown: bool = False) -> np.ndarray:
  """`labels` as an int64 array, or a ValueError naming `name`.

  Whole-valued float arrays are accepted, since labels often pass through float containers.
  """
  array = np.asarray(labels)
  if array.ndim != ndim:
    raise ValueError(f'{name} must be {ndim}-D, got shape {array.shape}')
  if array.size == 0:
    raise ValueError(f'{name} is empty')
  if np.issubdtype(array.dtype, np.floating):
    if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
      raise ValueError(f'{name} must hold integer labels, got non-integer values')
  elif not np.issubdtype(array.dtype, np.integer):
    raise ValueError(f'{name} must hold integer labels, got dtype {array.dtype}')
  array = array.astype(np.int64)
  lowest = UNKNOWN if allow_unknown else 0
  if array.min() < lowest:
    allowed = f'>= 0 or {UNKNOWN} (unknown)' if allow_unknown else '>= 0'
    raise ValueError(f'{name} must be {allowed}, got {array.min()}')
  return array


def _check_lengths(labels_true: np.ndarray, pred_name: str, pred_length: int) -> None:
  if len(labels_true) != pred_length:
    raise ValueError(f'labels_true has {len(labels_true)} samples but {pred_name} has {pred_length}')


def _labelled(labels_true: Any, labels_pred: Any) -> tuple[np.ndarray, np.ndarray, int]:
  """Validated `(labels_true, labels_pred, num_unknown)` with the unknown-label samples removed."""
  true = _as_labels(labels_true, 'labels_true', allow_unknown=True)
  pred = _as_labels(labels_pred, 'labels_pred')
  _check_lengths(true, 'labels_pred', len(pred))
  known = _known(true)
  return true[known], pred[known], int(len(true) - known.sum())


def _known(true: np.ndarray) -> np.ndarray:
  """The mask of annotated samples; a ValueError if there are none, as no metric is defined then."""
  known = true != UNKNOWN
  if not known.any():
    raise ValueError(f'labels_true has no known labels: all {len(true)} are {UNKNOWN}')
  return known


def _contingency(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
  """`[C, K]` counts of (class, cluster) pairs over the classes and clusters present, in id order."""
  classes, true_index = np.unique(true, return_inverse=True)
  clusters, pred_index = np.unique(pred, return_inverse=True)
  num_clusters = len(clusters)
  flat = np.bincount(true_index * num_clusters + pred_index, minlength=len(classes) * num_clusters)
  return flat.reshape(len(classes), num_clusters)


def _matching(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The one-to-one class/cluster matching with the most samples on the diagonal (Kuhn-Munkres, §4).

  Rectangular when K != C: min(C, K) pairs are matched and the rest stay unmatched.
  """
  return scipy.optimize.linear_sum_assignment(counts, maximize=True)


def _accuracy(counts: np.ndarray) -> float:
  rows, cols = _matching(counts)
  return float(counts[rows, cols].sum() / counts.sum())


def _purity(counts: np.ndarray) -> float:
  return float(counts.max(axis=0).sum() / counts.sum())


def _macro_f1(counts: np.ndarray) -> float:
  """Mean F1 over the classes present, each predicted by its matched cluster (none if unmatched)."""
  rows, cols = _matching(counts)
  true_positives = np.zeros(counts.shape[0])
  predicted = np.zeros(counts.shape[0])
  true_positives[rows] = counts[rows, cols]
  predicted[rows] = counts[:, cols].sum(axis=0)
  return float(np.mean(2 * true_positives / (counts.sum(axis=1) + predicted)))


def _cluster_mean(values: np.ndarray, counts: np.ndarray, weighted: bool) -> float:
  sizes = counts.sum(axis=0)
  return float(np.average(values, weights=sizes if weighted else None))


def _mean_entropy(counts: np.ndarray, base: float, weighted: bool) -> float:
  if base <= 0 or base == 1:
    raise ValueError(f'base must be positive and not 1, got {base}')
  fractions = counts / counts.sum(axis=0)
  entropies = scipy.special.entr(fractions).sum(axis=0) / math.log(base)
  return _cluster_mean(entropies, counts, weighted)


def _mean_max_purity(counts: np.ndarray, weighted: bool) -> float:
  return _cluster_mean(counts.max(axis=0) / counts.sum(axis=0), counts, weighted)


def confusion_matrix(labels_true: Any, labels_pred: Any) -> np.ndarray:
  """`[C, K]` counts: entry (c, k) = samples of the c-th class in the k-th cluster.

  Rows are the classes present in `labels_true` and columns the non-empty clusters, both in increasing
  id order, so sparse ids (e.g. 309 classes numbered up to 1000) cost no memory. Built with one
  `bincount` over combined indices: the release's K x K double loop is O(K²·N).
  """
  return _contingency(*_labelled(labels_true, labels_pred)[:2])


def nmi(labels_true: Any, labels_pred: Any) -> float:
  """Normalized mutual information, arithmetic normalisation as in the release."""
  true, pred, _ = _labelled(labels_true, labels_pred)
  return float(sk_metrics.normalized_mutual_info_score(true, pred, average_method='arithmetic'))


def adjusted_nmi(labels_true: Any, labels_pred: Any) -> float:
  """Adjusted (for chance) mutual information, arithmetic normalisation: the release's "aNMI"."""
  true, pred, _ = _labelled(labels_true, labels_pred)
  return float(sk_metrics.adjusted_mutual_info_score(true, pred, average_method='arithmetic'))


def ari(labels_true: Any, labels_pred: Any) -> float:
  """Adjusted Rand index."""
  true, pred, _ = _labelled(labels_true, labels_pred)
  return float(sk_metrics.adjusted_rand_score(true, pred))


def fowlkes_mallows(labels_true: Any, labels_pred: Any) -> float:
  """Fowlkes-Mallows index: geometric mean of pairwise precision and recall."""
  true, pred, _ = _labelled(labels_true, labels_pred)
  return float(sk_metrics.fowlkes_mallows_score(true, pred))


def accuracy(labels_true: Any, labels_pred: Any) -> float:
  """Accuracy after the one-to-one Hungarian matching of clusters to classes (§4 "Evaluation").

  K may differ from the number of classes: samples in clusters left unmatched count as errors.
  """
  return _accuracy(confusion_matrix(labels_true, labels_pred))


def purity(labels_true: Any, labels_pred: Any) -> float:
  """Fraction of samples in their cluster's majority class (many clusters may share a class)."""
  return _purity(confusion_matrix(labels_true, labels_pred))


def macro_f1(labels_true: Any, labels_pred: Any) -> float:
  """Macro-averaged F1 over the classes present, after the Hungarian matching of `accuracy`.

  A class left without a cluster (K < C) scores 0; samples of unmatched clusters are false negatives
  of their class.
  """
  return _macro_f1(confusion_matrix(labels_true, labels_pred))


def mean_entropy(labels_true: Any, labels_pred: Any, *, base: float = math.e,
                 weighted: bool = False) -> float:
  """⟨H⟩ (§4 "Evaluation"): mean over non-empty clusters of the entropy of their class distribution.

  Unweighted and in nats by default, as the release computes it (see the module docstring); `base=2`
  gives bits, as the release's cluster browser shows. `weighted` weights clusters by size, which is
  H(class | cluster).
  """
  return _mean_entropy(confusion_matrix(labels_true, labels_pred), base, weighted)


def mean_max_purity(labels_true: Any, labels_pred: Any, *, weighted: bool = False) -> float:
  """⟨p_max⟩ (§4 "Evaluation"): mean over non-empty clusters of the largest class fraction in each.

  Unweighted by default, as in the release; `weighted` gives the size-weighted mean, which is `purity`.
  """
  return _mean_max_purity(confusion_matrix(labels_true, labels_pred), weighted)


def _scores(true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
  """Every metric of `METRICS` on already validated labels, from one contingency matrix."""
  counts = _contingency(true, pred)
  return {
      'nmi': float(sk_metrics.normalized_mutual_info_score(true, pred, average_method='arithmetic')),
      'anmi': float(sk_metrics.adjusted_mutual_info_score(true, pred, average_method='arithmetic')),
      'ari': float(sk_metrics.adjusted_rand_score(true, pred)),
      'accuracy': _accuracy(counts),
      'purity': _purity(counts),
      'macro_f1': _macro_f1(counts),
      'fmi': float(sk_metrics.fowlkes_mallows_score(true, pred)),
      'entropy': _mean_entropy(counts, math.e, weighted=False),
      'max_purity': _mean_max_purity(counts, weighted=False),
  }


def cluster_metrics(labels_true: Any, labels_pred: Any) -> dict[str, float]:
  """All of `METRICS` for one clustering, plus 'num_labelled' and 'num_unknown' sample counts.

  Samples whose `labels_true` is `UNKNOWN` are left out of every metric; 'num_unknown' says how many.
  """
  true, pred, num_unknown = _labelled(labels_true, labels_pred)
  return {**_scores(true, pred), 'num_labelled': len(true), 'num_unknown': num_unknown}


def per_head(labels_true: Any, labels_per_head: Any) -> dict[str, Any]:
  """`METRICS` for every head of a multi-head clustering (§3.3), with their summaries.

  Args:
    labels_true: `[N]` class ids, `UNKNOWN` (-1) where unannotated.
    labels_per_head: `[N, H]` cluster ids, one column per head.

  Returns:
    For each name in `METRICS`, a dict with 'per_head' (list of H values), 'mean' and 'std' over heads
    (population std, ddof=0), 'head0', and 'best_head_optimistic': the value on the head with the best
    NMI against the ground truth, as the release's `--use_all_heads` reports. That choice looks at the
    labels being evaluated, so it overstates what an unsupervised user would get. Also
    'best_head_optimistic_index', 'num_heads', 'num_labelled' and 'num_unknown'.
  """
  true = _as_labels(labels_true, 'labels_true', allow_unknown=True)
  heads = _as_labels(labels_per_head, 'labels_per_head', ndim=2)
  _check_lengths(true, 'labels_per_head', heads.shape[0])
  known = _known(true)
  scores = [_scores(true[known], heads[known, h]) for h in range(heads.shape[1])]
  best = int(np.argmax([s['nmi'] for s in scores]))
  result: dict[str, Any] = {}
  for name in METRICS:
    values = np.array([s[name] for s in scores])
    result[name] = {'per_head': values.tolist(), 'mean': float(values.mean()),
                    'std': float(values.std()), 'head0': float(values[0]),
                    'best_head_optimistic': float(values[best])}
  result.update(best_head_optimistic_index=best, num_heads=heads.shape[1],
                num_labelled=int(known.sum()), num_unknown=int(len(true) - known.sum()))
  return result


def pairwise_nmi(labels_per_head: Any) -> tuple[float, float]:
  """Mean and std (ddof=0) of the NMI between all pairs of heads (§4.1: SeLaVi reports 77.8 ± 4 %).

  Low values mean the heads found different clusterings; needs no ground truth.
  """
  heads = _as_labels(labels_per_head, 'labels_per_head', ndim=2)
  if heads.shape[1] < 2:
    raise ValueError(f'labels_per_head needs at least 2 heads, got {heads.shape[1]}')
  values = np.array([
      sk_metrics.normalized_mutual_info_score(heads[:, a], heads[:, b], average_method='arithmetic')
      for a, b in itertools.combinations(range(heads.shape[1]), 2)])
  return float(values.mean()), float(values.std())


def _format(name: str, value: float) -> str:
  """⟨H⟩ in nats with two decimals; every other metric as a percentage with one, as in Table 2."""
  return f'{value:.2f}' if name == 'entropy' else f'{100 * value:.1f}'


def markdown_table(rows: Mapping[str, Mapping[str, Any]],
                   metrics: Sequence[str] = ('nmi', 'ari', 'accuracy', 'entropy', 'max_purity')) -> str:
  """A Markdown table shaped like SeLaVi's Table 2: one row per method, one column per metric.

  Args:
    rows: method name (e.g. 'video + audio', 'SeLa (frames only)') -> the output of `cluster_metrics`
      (shown as values) or of `per_head` (shown as mean ± std over heads).
    metrics: names from `METRICS`, in column order.

  Returns:
    The table's lines joined by newlines, without a trailing newline.
  """
  unknown = [name for name in metrics if name not in _TITLES]
  if unknown:
    raise ValueError(f'metrics {unknown} are not among {list(METRICS)}')
  lines = ['| Method | ' + ' | '.join(_TITLES[name] for name in metrics) + ' |',
           '|:---|' + '---:|' * len(metrics)]
  for method, row in rows.items():
    cells = []
    for name in metrics:
      if name not in row:
        raise ValueError(f'row {method!r} has no {name!r}')
      value = row[name]
      if isinstance(value, Mapping):
        cells.append(f"{_format(name, value['mean'])} ± {_format(name, value['std'])}")
      else:
        cells.append(_format(name, value))
    lines.append(f'| {method} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)
