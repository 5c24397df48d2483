"""The one ordered pass over a dataset: forward every global batch, gather once, drop padding, sort.

Evaluation, label export and the suite's feature extraction all need the same thing: a jitted function
of each (globally sharded) batch, its outputs for every real row on the host, in dataset-index order.
`ordered_pass` is that loop, written once; it is abandoned (`preemption.Preempted`) when a preemption
notice arrives. The outputs stay on the devices until the pass ends and come to the host in one
gather: a gather per batch would make the host wait for each batch's result before it sends the next.

Every pass over a dataset (these, and the label updates' passes that keep their rows on the devices)
says how it goes through a `PassProgress`: a line on process 0 at most every `PROGRESS_SECONDS` and
one at its end (clips done of the total, clips/s overall and per device, the pass's ETA). A label
update is ~200 whole-dataset passes of a SeLaVi run and was silent for minutes at a time. What each
pass took (`PassStats`) goes to every `recorded()` block it ends in, so the training loop can time a
label update without knowing which passes the method makes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from avssl import preemption, progress, sharding
from avssl.data import datasets
from avssl.types import Batch

#: The most seconds between two progress lines of one pass.
PROGRESS_SECONDS = 30.0


@dataclasses.dataclass(frozen=True)
class PassStats:
  """What one pass took: `clips` (real clips, all processes) in `seconds` of wall time, from the
  pass's start (its first read and compilation included) to its outputs being ready, on `devices`."""
  name: str
  clips: int
  seconds: float
  devices: int

  @property
  def clips_per_sec(self) -> float:
    return self.clips / max(self.seconds, 1e-9)

  @property
  def clips_per_sec_per_device(self) -> float:
    return self.clips_per_sec / self.devices


_recordings: list[list[PassStats]] = []


@contextlib.contextmanager
def recorded() -> Iterator[list[PassStats]]:
  """The `PassStats` of every pass that ends inside the block, in order (a SeLaVi label update makes
  one per head group, XDC's one), as a list that fills while the block runs. Blocks may nest."""
  stats: list[PassStats] = []
  _recordings.append(stats)
  try:
    yield stats
  finally:
    _recordings.remove(stats)


class PassProgress:
  """One pass's progress line and `PassStats`: call `update` after dispatching each batch and
  `finish` once the pass's outputs exist."""

  def __init__(self, name: str, batches: Iterable[Any], mesh: jax.sharding.Mesh):
    """`name` heads the pass's lines; the total comes from `batches` when they are a
    `datasets.PassBatches` (every `DataSource`'s passes are), else the lines give no ETA."""
    self.name, self.devices = name, mesh.devices.size
    self.total = batches.clips if isinstance(batches, datasets.PassBatches) else None
    self.rows = 0
    self.start = self._last_line = time.monotonic()

  @property
  def clips(self) -> int:
    """Clips passed over so far: the global batches' rows, padding included until the total caps
    them (padding fills only each process's last batch)."""
    return self.rows if self.total is None else min(self.rows, self.total)

  def update(self, rows: int, pending: Any) -> None:
    """After a global batch of `rows` is dispatched, `pending` its outputs: waited for before a line,
    so that the line counts work done, not work queued on the devices."""
    self.rows += rows
    if jax.process_index() or time.monotonic() - self._last_line < PROGRESS_SECONDS:
      return
    jax.block_until_ready(pending)
    self._last_line = time.monotonic()
    seconds = self._last_line - self.start
    rate = self.clips / seconds
    if self.total is None:
      logging.info('%s: %d clips, %.1f clips/s (%.2f clips/s/device)', self.name, self.clips, rate,
                   rate / self.devices)
    else:
      logging.info('%s: %d/%d clips, %.1f clips/s (%.2f clips/s/device), ETA %s', self.name,
                   self.clips, self.total, rate, rate / self.devices,
                   progress.duration((self.total - self.clips) / rate))

  def finish(self, pending: Any = None) -> PassStats:
    """The pass's stats, once `pending` (its outputs, unless already on the host) is ready; logged on
    process 0 and added to every `recorded()` block."""
    jax.block_until_ready(pending)
    stats = PassStats(self.name, self.clips, time.monotonic() - self.start, self.devices)
    for recording in _recordings:
      recording.append(stats)
    if jax.process_index() == 0:
      logging.info('%s: %d clips in %s, %.1f clips/s (%.2f clips/s/device)', self.name, stats.clips,
                   progress.duration(stats.seconds), stats.clips_per_sec,
                   stats.clips_per_sec_per_device)
    return stats


def ordered_pass(fn: Callable[[Batch], dict[str, jax.Array]], batches: Iterator[Batch],
                 mesh: jax.sharding.Mesh, keys: Iterable[str] | None = None, *,
                 name: str = 'pass') -> dict[str, np.ndarray]:
  """`fn`'s outputs for every real row of `batches`, on the host, sorted by dataset index.

  Args:
    fn: a (jitted) function of one global batch to `{name: [R, ...]}` arrays whose first axis is the
      batch's rows. If it returns `index` and `mask` (`[R]`, e.g. one row per view of a clip), those
      are used; otherwise the batch's own.
    batches: host-local batches, each with `index` and `mask` (0 for padding), as `DataSource`s give.
    mesh: the mesh the batches are sharded over (`sharding.to_global`).
    keys: the batch entries to put on the devices (all by default); `index` and `mask` always go.
    name: what the pass's progress lines call it.

  Returns:
    `{name: [N, ...]}` for every output of `fn` and `index`, rows with `mask > 0` only, in the order of
    `index` (stable, so rows of one clip keep their order).
  """
  tracker = PassProgress(name, batches, mesh)
  chunks = []
  for batch in batches:
    preemption.check()
    if keys is not None:
      batch = {k: batch[k] for k in (*keys, 'index', 'mask')}
    batch = sharding.to_global(batch, mesh)
    result = dict(fn(batch))
    result.setdefault('index', batch['index'])
    result.setdefault('mask', batch['mask'])
    chunks.append(result)
    tracker.update(batch['mask'].shape[0], result)
  if not chunks:
    raise ValueError('no batches to pass over')
  joined = multihost_utils.process_allgather(_join_fn(mesh)(chunks), tiled=True)
  tracker.finish()
  joined = {k: np.asarray(v) for k, v in joined.items()}
  keep = joined.pop('mask') > 0
  order = np.argsort(joined['index'][keep], kind='stable')
  return {k: v[keep][order] for k, v in joined.items()}


@functools.lru_cache(maxsize=None)
def _join_fn(mesh: jax.sharding.Mesh):
  """The pass's `[R, ...]` outputs, batch by batch, → one `[R · batches, ...]` array per name, row r of
  batch b at r · batches + b: each device keeps the rows it holds (nothing moves before the gather),
  and a clip's rows stay in their order."""
  rows = NamedSharding(mesh, P(sharding.DATA_AXIS))

  @jax.jit
  def join(chunks: list[dict[str, jax.Array]]) -> dict[str, jax.Array]:
    def one(*xs):
      stacked = jnp.stack(xs, axis=1)
      return jax.lax.with_sharding_constraint(stacked.reshape((-1,) + stacked.shape[2:]), rows)
    return jax.tree.map(one, *chunks)
  return join
