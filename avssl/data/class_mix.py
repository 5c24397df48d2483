"""How well a split's shards mix its classes, from the manifest and `{split}.csv` alone.

Training reads a few shards at once through a bounded shuffle buffer (`config.data.cycle_length`,
`shuffle_buffer`), so a batch holds the classes of the shards it comes from. `make_records` orders
each split by a hash of the video ids before cutting it into shards, which makes every shard a random
sample of the split, and the batches then hold as many classes as random draws of the split would.
Records written before it did were cut in id order, and class-foldered ids (`class/file`: `folder`,
UCF-101, HMDB-51) start with the class: each shard holds a few classes, and so does every batch, where
per-batch equipartition (SwAV, GOCA), synchronised BatchNorm and SGD all expect a random draw. Those
records still train; `warn_if_class_sorted` says so once, and how to rewrite them.
"""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Sequence

import numpy as np
from absl import logging

from avssl import files

#: Shards holding fewer than this fraction of the classes that random shards of their sizes would
#: hold look sorted by class. Random shards hold about what they are expected to (within a class or
#: two); sorted ones a few percent of it (UCF-101 in shards of 256: 3.6 classes of the 92 expected).
SORTED_FRACTION = 0.5


def expected_classes(class_counts: Sequence[int], n: int) -> float:
  """The mean number of distinct classes among `n` videos drawn at random, without replacement (as
  an epoch draws a batch), from a split holding `class_counts[c]` videos of class c:
  Σ_c 1 − C(N − N_c, n) / C(N, n), the hypergeometric chance that a draw holds class c."""
  total = sum(class_counts)
  if not 0 <= n <= total:
    raise ValueError(f'cannot draw {n} videos from a split of {total}')

  def log_choose(a: int, b: int) -> float:
    return math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)

  missing = [math.exp(log_choose(total - c, n) - log_choose(total, n)) if total - c >= n else 0.0
             for c in class_counts]
  return sum(1.0 - m for m in missing)


def shard_classes(labels: np.ndarray,
                  shards: Sequence[tuple[int, int]]) -> tuple[float, float]:
  """(distinct classes per shard, what random shards of the same sizes would hold), both averaged
  over the shards: `labels[i]` is the class of the video of dataset index i (negative: unknown, left
  out), `shards` each shard's (offset, count) in the manifest."""
  known = labels[labels >= 0]
  class_counts = np.unique(known, return_counts=True)[1].tolist()
  by_size: dict[int, float] = {}  # A split's shards share one or two sizes.
  observed, expected = [], []
  for offset, count in shards:
    shard = labels[offset:offset + count]
    shard = shard[shard >= 0]
    if shard.size:
      if shard.size not in by_size:
        by_size[shard.size] = expected_classes(class_counts, shard.size)
      observed.append(len(np.unique(shard)))
      expected.append(by_size[shard.size])
  if not observed:
    return 0.0, 0.0
  return float(np.mean(observed)), float(np.mean(expected))


def looks_class_sorted(observed: float, expected: float) -> bool:
  """Whether shards holding `observed` classes on average, where random ones would hold `expected`,
  are sorted by class (`SORTED_FRACTION`)."""
  return observed < SORTED_FRACTION * expected


@functools.lru_cache(maxsize=None)
def warn_if_class_sorted(directory: str, split: str, shards: tuple[tuple[int, int], ...]) -> bool:
  """Logs a warning when the shards (offset, count) of `split` in the records folder `directory` look
  sorted by class, judged from the labels of `{split}.csv`; returns whether they do. Cached, so a
  process warns once per folder and split however many times it opens them (resumes, evaluations)."""
  path = files.join(directory, f'{split}.csv')
  if not files.exists(path):  # Nothing to judge from: no warning.
    return False
  with files.open(path) as f:
    rows = list(csv.DictReader(f))
  labels = np.full(len(rows), -1, np.int64)
  for row in rows:
    labels[int(row['index'])] = int(row['label_index'])
  observed, expected = shard_classes(labels, shards)
  if not looks_class_sorted(observed, expected):
    return False
  logging.warning(
      '%s: the %r shards look sorted by class: %.1f classes per shard where random shards would hold '
      '%.1f, so every training batch holds a few classes. They were cut in video_id order by an '
      'earlier make_records; run the same make_records command into a fresh --output_dir, which '
      'orders each split by a hash of the ids, and point config.data.dir at it.',
      directory, split, observed, expected)
  return True
