"""The one ordered pass over a dataset: forward every global batch, gather, drop padding, sort.

Evaluation, label export and the suite's feature extraction all need the same thing: a jitted function
of each (globally sharded) batch, its outputs for every real row on the host, in dataset-index order.
`ordered_pass` is that loop, written once; it is abandoned (`preemption.Preempted`) when a preemption
notice arrives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils

from avssl import preemption, sharding
from avssl.types import Batch


def ordered_pass(fn: Callable[[Batch], dict[str, jax.Array]], batches: Iterator[Batch],
                 mesh: jax.sharding.Mesh, keys: Iterable[str] | None = None
                 ) -> dict[str, np.ndarray]:
  """`fn`'s outputs for every real row of `batches`, on the host, sorted by dataset index.

  Args:
    fn: a (jitted) function of one global batch to `{name: [R, ...]}` arrays whose first axis is the
      batch's rows. If it returns `index` and `mask` (`[R]`, e.g. one row per view of a clip), those
      are used; otherwise the batch's own.
    batches: host-local batches, each with `index` and `mask` (0 for padding), as `DataSource`s give.
    mesh: the mesh the batches are sharded over (`sharding.to_global`).
    keys: the batch entries to put on the devices (all by default); `index` and `mask` always go.

  Returns:
    `{name: [N, ...]}` for every output of `fn` and `index`, rows with `mask > 0` only, in the order of
    `index` (stable, so rows of one clip keep their order).
  """
  out: dict[str, list[np.ndarray]] = {}
  for batch in batches:
    preemption.check()
    if keys is not None:
      batch = {k: batch[k] for k in (*keys, 'index', 'mask')}
    batch = sharding.to_global(batch, mesh)
    result = dict(fn(batch))
    result.setdefault('index', batch['index'])
    result.setdefault('mask', batch['mask'])
    for key, value in multihost_utils.process_allgather(result, tiled=True).items():
      out.setdefault(key, []).append(np.asarray(value))
  if not out:
    raise ValueError('no batches to pass over')
  joined = {k: np.concatenate(v) for k, v in out.items()}
  keep = joined.pop('mask') > 0
  order = np.argsort(joined['index'][keep], kind='stable')
  return {k: v[keep][order] for k, v in joined.items()}
