"""Held-out splits carved from a training split: whole groups (a performer, a source film, a source
recording) on one side, so that near-duplicate clips never straddle train and validation.

Used by `avssl.data_prep.make_records --val_fraction` (a "val" split written into the records) and by
the linear probe's weight-decay selection (`avssl/evaluation/probe.py`).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence

import numpy as np

# UCF-101 names a video `v_{Class}_g{group}_c{clip}`; a group's clips share performer and scene, and the
# official splits keep every group number on one side, across all classes.
UCF101_GROUP = r'_g(\d+)_'
# HMDB-51 names a clip `{source}_{class}_{tags}_{n}` (id `{class}/{name}`); the official splits keep the
# clips of one source film on one side, so the group is the source, found left of the class name.
HMDB51_GROUP = r'^([^/]+)/(?P<group>.+)_\1_'
# ESC-50 names a clip `{fold}-{source}-{take}-{class}`; the clips cut from one Freesound recording share
# a fold, so the group is the source.
ESC50_GROUP = r'^\d+-([^-]+)-'


def group_of(video_id: str, pattern: str = UCF101_GROUP) -> str:
  """The group of `video_id`: the pattern's group named `group` if it has one, else its first group.

  A video the pattern does not match is an error, not a group of its own: a wrong pattern would
  otherwise put every video in its own group and let performers leak into the validation split.
  """
  match = re.search(pattern, video_id)
  if match is None:
    raise ValueError(f'video_id {video_id!r} does not match the group pattern {pattern!r}')
  if 'group' in match.re.groupindex:
    return match.group('group')
  return match.group(1) if match.re.groups else match.group(0)


def split_train_val(labels: Sequence[int] | np.ndarray,
                    groups: Sequence[Hashable] | np.ndarray | None = None, *, fraction: float,
                    seed: int = 0) -> np.ndarray:
  """`[N]` bool, True for the videos of a validation split of about `fraction` of them.

  Whole groups go to one side (without `groups`, each video is its own group). Groups are visited once
  in an order drawn from `seed`, and one joins the split when it fills more of the classes' remaining
  quota (`fraction` of each class) than it overshoots, so each class gets about its share where the
  groups allow it: with one video per group a class of n gets fraction · n rounded (halves down). A
  group never takes a class's last training video. The same labels, groups and seed give the same
  split.
  """
  if not 0 <= fraction < 1:
    raise ValueError(f'fraction must be in [0, 1), got {fraction}')
  labels = np.asarray(labels)
  if groups is None:
    group_ids = np.arange(len(labels))
  else:
    if len(groups) != len(labels):
      raise ValueError(f'{len(groups)} groups for {len(labels)} videos')
    group_ids = np.unique(np.asarray(groups), return_inverse=True)[1].reshape(-1)
  class_ids = np.unique(labels, return_inverse=True)[1].reshape(-1)
  num_classes = int(class_ids.max(initial=-1)) + 1
  totals = np.bincount(class_ids, minlength=num_classes)
  quota = fraction * totals
  pairs, counts = np.unique(group_ids * num_classes + class_ids, return_counts=True)
  pair_groups, pair_classes = np.divmod(pairs, num_classes)
  starts = np.searchsorted(pair_groups, np.arange(group_ids.max(initial=-1) + 2))
  taken = np.zeros(num_classes, np.int64)
  chosen = np.zeros(len(starts) - 1, bool)
  for g in np.random.default_rng(seed).permutation(len(chosen)):
    classes, count = pair_classes[starts[g]:starts[g + 1]], counts[starts[g]:starts[g + 1]]
    filled = np.minimum(count, np.maximum(quota[classes] - taken[classes], 0.0))
    if 2 * filled.sum() > count.sum() and np.all(taken[classes] + count < totals[classes]):
      taken[classes] += count
      chosen[g] = True
  return chosen[group_ids]
