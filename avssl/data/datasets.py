"""Dataset registry and the host-side batching every dataset shares.

The loop sees a `DataSource`: host-local numpy batches for training (resumable at any step), for
evaluation, and for a full ordered pass over the training set (the label updates). Each process yields
only its own slice of every global batch, in process order, which `sharding.to_global` assembles.

Random-access datasets (synthetic data, in-memory arrays) get those three iterators from
`IndexedSource`: the training order is a fixed permutation per epoch derived from the seed, so the batch
at step `s` is a pure function of `(seed, s)`. That makes a resumed run see exactly the data an
uninterrupted run sees, and one process with 8 devices see the same global batches as two with 4.

A training stream may be resampled (`weights`: each example's expected draws per epoch, XDC's
cluster-balanced sampling): an epoch then holds each example as many times as `sampling.draws` says,
a pure function of (weights, seed, epoch), and keeps its length, so a step is still found by its number.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import ml_collections
import numpy as np

from avssl.data import sampling
from avssl.errors import UserError
from avssl.types import Batch

_BUILDERS: dict[str, Callable[..., DataSource]] = {}


def register(name: str) -> Callable:
  """Decorator: makes a `DataSource` factory `f(config, *, batch_size, process_index, process_count,
  seed)` available as `config.data.name = name`."""
  def wrap(factory):
    _BUILDERS[name] = factory
    return factory
  return wrap


def build(config: ml_collections.ConfigDict, *, batch_size: int, process_index: int,
          process_count: int, seed: int) -> DataSource:
  """The data source named by `config.name`, feeding this process's share of `batch_size`."""
  if config.name not in _BUILDERS:
    _import_builtin()
  if config.name not in _BUILDERS:
    raise ValueError(f'config.data.name={config.name!r} is not one of {sorted(_BUILDERS)}')
  return _BUILDERS[config.name](config, batch_size=batch_size, process_index=process_index,
                                process_count=process_count, seed=seed)


def _import_builtin() -> None:
  """Imports the built-in data sources, whose modules register them."""
  for module in ('pipeline', 'synthetic'):
    importlib.import_module(f'avssl.data.{module}')


class PassBatches(Iterator[Batch]):
  """One ordered pass's host-local batches, and the clips it holds on all processes together: known
  from the counts before anything is read, it gives the pass's progress line its total and ETA."""

  def __init__(self, batches: Iterator[Batch], clips: int):
    self._batches, self.clips = batches, clips

  def __next__(self) -> Batch:
    return next(self._batches)


class DataSource(abc.ABC):
  """Host-local batches of one dataset for one process.

  Attributes (every source sets the first three; the rest have defaults):
    num_train: videos of the training split.
    num_eval: videos of the evaluation split.
    steps_per_epoch: full global batches per epoch of the training split (drop_last).
    classes: the class names of the records' manifest (empty where the data has none).
  """
  num_train: int
  num_eval: int
  steps_per_epoch: int
  classes: list[str] = []

  def video_table(self, split: str | None = None) -> list[dict[str, str]] | None:
    """The videos of `split` in dataset-index order (`index`, `video_id`, `source`, `label_index`,
    `label_name`, ...), or None where the data are not videos (synthetic sources)."""
    del split
    return None

  def example_spec(self) -> dict[str, Any] | None:
    """One training example's shapes and dtypes (`jax.ShapeDtypeStruct`s, a batch of 1) where the
    source can tell them without decoding anything; None, and the caller reads a batch."""
    return None

  @abc.abstractmethod
  def train_batches(self, start_step: int, weights: np.ndarray | None = None) -> Iterator[Batch]:
    """Training batches from global step `start_step` on, endlessly.

    `weights` (`[num_train]`, mean 1; None: every example once per epoch) resamples every epoch from
    `start_step` on: example i comes ⌊w_i⌋ or ⌈w_i⌉ times, w_i on average (`sampling.draws`), and an
    epoch keeps its length, so the stream from step s is the same whether built at step s or earlier.
    """

  @abc.abstractmethod
  def eval_batches(self) -> PassBatches:
    """One pass over the evaluation split; padded to full batches, padding marked by `mask == 0`."""

  @abc.abstractmethod
  def dataset_batches(self, augment: bool = False, pass_seed: int = 0) -> PassBatches:
    """One ordered pass over the training split (for label updates), padded and masked likewise.

    With `augment`, clips are sampled and augmented as in training (SeLaVi labels the data as the
    network sees it in training), seeded by `pass_seed`; without, as in evaluation.
    """


class Described(DataSource):
  """A run's data known only by what its workdir's `run.json` records (counts and classes): enough to
  rebuild the run's method and state (`avssl.load_run`) where its records are elsewhere or gone. Any
  pass over the data is refused with what to do instead."""

  def __init__(self, *, num_train: int, num_eval: int, steps_per_epoch: int, classes: list[str],
               records: str):
    self.num_train, self.num_eval, self.steps_per_epoch = num_train, num_eval, steps_per_epoch
    self.classes, self._records = list(classes), records

  def _refuse(self) -> NoReturn:
    raise UserError(f'this run was loaded without its training records ({self._records}): pass '
                    'load_run(workdir, records=DIR) to read them; new videos are labelled from their '
                    'own records folder')

  def train_batches(self, start_step: int, weights: np.ndarray | None = None) -> Iterator[Batch]:
    self._refuse()

  def eval_batches(self) -> PassBatches:
    self._refuse()

  def dataset_batches(self, augment: bool = False, pass_seed: int = 0) -> PassBatches:
    self._refuse()


class IndexedSource(DataSource):
  """A `DataSource` over any dataset whose examples can be fetched by index."""

  def __init__(self, fetch: Callable[[str, np.ndarray], Batch], num_train: int, num_eval: int, *,
               batch_size: int, process_index: int, process_count: int, seed: int):
    if batch_size % process_count:
      raise ValueError(f'batch_size={batch_size} does not divide over {process_count} processes')
    if num_train < batch_size:
      raise ValueError(f'the training split has {num_train} examples, fewer than one batch '
                       f'(batch_size={batch_size}); lower --config.batch_size')
    self._fetch = fetch
    self.num_train, self.num_eval = num_train, num_eval
    self.batch_size, self.local_batch = batch_size, batch_size // process_count
    self.process_index, self.seed = process_index, seed
    self.steps_per_epoch = num_train // batch_size  # drop_last, as the references' samplers

  def _local(self, global_indices: np.ndarray) -> np.ndarray:
    start = self.process_index * self.local_batch
    return global_indices[start:start + self.local_batch]

  def train_batches(self, start_step: int, weights: np.ndarray | None = None) -> Iterator[Batch]:
    epoch, first = divmod(start_step, self.steps_per_epoch)
    while True:
      order = self._epoch_order(epoch, weights)
      for offset in range(first, self.steps_per_epoch):
        indices = self._local(order[offset * self.batch_size:(offset + 1) * self.batch_size])
        batch = self._fetch('train', indices)
        batch['index'] = indices.astype(np.int32)
        yield batch
      epoch, first = epoch + 1, 0

  def _epoch_order(self, epoch: int, weights: np.ndarray | None) -> np.ndarray:
    """The examples of `epoch` in training order: a seeded permutation of the examples, or of their
    `weights`' draws (copies of an example spread over the whole epoch, as DeepCluster's sampler)."""
    rng = np.random.default_rng([self.seed, epoch])
    if weights is None:
      return rng.permutation(self.num_train)
    rows = np.arange(self.num_train)
    check_weights(weights, self.num_train)
    return rng.permutation(np.repeat(rows, sampling.draws(weights, rows, self.seed, epoch)))

  def _ordered(self, split: str, n: int) -> PassBatches:
    return PassBatches(self._ordered_batches(split, n), n)

  def _ordered_batches(self, split: str, n: int) -> Iterator[Batch]:
    for start in range(0, n, self.batch_size):
      global_indices = np.arange(start, start + self.batch_size)
      indices = self._local(global_indices)
      mask = indices < n
      batch = self._fetch(split, np.where(mask, indices, 0))
      batch['index'] = np.where(mask, indices, -1).astype(np.int32)
      batch['mask'] = mask.astype(np.float32)
      yield batch

  def eval_batches(self) -> PassBatches:
    return self._ordered('eval', self.num_eval)

  def dataset_batches(self, augment: bool = False, pass_seed: int = 0) -> PassBatches:
    del augment, pass_seed  # Examples are generated, not augmented.
    return self._ordered('train', self.num_train)


def stack(examples: list[dict[str, Any]]) -> Batch:
  """List of per-example dicts -> dict of stacked arrays."""
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def check_weights(weights: np.ndarray, num_train: int) -> None:
  """Refuses sampling weights that are not one per training example."""
  if np.shape(weights) != (num_train,):
    raise ValueError(f'sampling weights of shape {np.shape(weights)} for a training split of '
                     f'{num_train} examples: the method must give one weight per example')
