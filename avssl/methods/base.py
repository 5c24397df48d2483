"""What a method supplies to the one training loop in `avssl/loop.py`.

A method owns its model, its loss, its own state (self-labels, priors, queues) and its scheduled
updates; the loop owns everything else (mesh, data feeding, optimiser, jit, checkpoints, logging,
guards). Nothing method-specific lives in the loop, and nothing generic is copied into a method.

The core interface is `Method`, fifteen members (`docs/extending.md` walks through a new method):

- built from the run: `__init__(config, context)`, `context` (the run's `RunContext`: mesh, data,
  steps per epoch, total steps);
- the model: `inputs`, `build_model()`, `model` (built on first use), `init_variables(rng, batch)`;
- the state and the step: `init_method_state(num_examples)`, `loss(params, state, batch, rng)`;
- the schedule: `scheduled_update(state, step)`, the one hook for label updates and the like, and
  `data_pass_steps()`, the steps whose update reads the dataset where known (the run's ETA);
- the training stream: `sampling_weights(state)`, each example's expected draws per epoch (XDC's
  cluster-balanced sampling), or None for every example once;
- its own evaluation: `evaluate(state, batches)`, `report(results)`, `report_title`/`report_notes`.

What only some methods can do is a `typing.Protocol` below, checked with `isinstance` by the run
modes that need it: `HasEncoders` (the evaluation suite), `Clusters` (`--mode=label`), `SelfLabels`
and `ClusterPrior` (extra columns and plots of `--mode=label`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from avssl.data import datasets
from avssl.train_state import TrainState
from avssl.types import Batch, Encoder, PyTree  # pylint: disable=unused-import  (re-exported)


@dataclasses.dataclass(frozen=True)
class RunContext:
  """What a run gives its method at construction (built by `avssl/modes/setup.py`).

  Attributes:
    mesh: the run's device mesh (for passes over the data and collectives over the global batch).
    data: the run's data (`dataset_batches` for label updates, `video_table` for ground truth).
    steps_per_epoch: full global batches per epoch of the training split.
    total_steps: the step the run ends at.
  """
  mesh: jax.sharding.Mesh
  data: datasets.DataSource
  steps_per_epoch: int
  total_steps: int


class StepOutput(NamedTuple):
  """What a method's loss returns next to the scalar loss (the `aux` of `value_and_grad`)."""
  batch_stats: PyTree
  metrics: dict[str, jax.Array]
  method_state: PyTree


class Update(NamedTuple):
  """What `Method.scheduled_update` returns when it changed something before a step.

  Attributes:
    state: the updated train state.
    scalars: logged by the loop at that step (e.g. SeLaVi's `label_update/*`); may be empty.
    data_pass: True when the update read the dataset (a label update), False for a cheap one (a head
      restart, bookkeeping).
  """
  state: TrainState
  scalars: dict[str, float]
  data_pass: bool


class Method:
  """Base class: override `build_model` and `loss`; the rest has sensible defaults."""

  #: Names of the batch entries the method reads (checked against the data at start).
  inputs: tuple[str, ...] = ()
  #: The title and protocol notes of `report`'s table in `eval/tables.md`.
  report_title: str = 'Clustering of the evaluation split (SeLaVi Table 2 layout)'
  report_notes: dict[str, str] = {
      'heads': 'mean ± std over heads (the best head is in eval.json, best_head_optimistic)'}

  def __init__(self, config: ml_collections.ConfigDict, context: RunContext | None = None):
    """Stores the config and the run's context (None for a method built on its own, e.g. in a test
    that calls its parts directly). The model is built on first use (`model`), so a subclass may set
    its attributes before or after calling this."""
    self.config = config
    self._context = context

  @property
  def context(self) -> RunContext:
    """The run's `RunContext`; an error for a method built without one that needs it."""
    if self._context is None:
      raise RuntimeError(f'{type(self).__name__} was built without a RunContext, and this call needs '
                         'the run\'s data or mesh: build it with methods.build(config, context)')
    return self._context

  def build_model(self) -> nn.Module:
    raise NotImplementedError(f'{type(self).__name__} must define build_model()')

  @functools.cached_property
  def model(self) -> nn.Module:
    """`build_model()`, built once on first use."""
    return self.build_model()

  def init_variables(self, rng: jax.Array, batch: Batch) -> dict[str, PyTree]:
    """Flax variables for one example batch (shapes only matter)."""
    return self.model.init({'params': rng, 'dropout': rng}, **{k: batch[k] for k in self.inputs},
                           train=False)

  def init_method_state(self, num_examples: int) -> PyTree:
    """The method's own arrays kept in the train state and checkpoint; none by default."""
    del num_examples
    return {}

  def loss(self, params: PyTree, state: TrainState, batch: Batch,
           rng: jax.Array) -> tuple[jax.Array, StepOutput]:
    """The scalar training loss of one global batch, and its `StepOutput`. Pure; traced under jit."""
    raise NotImplementedError(f'{type(self).__name__} must define loss()')

  def scheduled_update(self, state: TrainState, step: int) -> Update | None:
    """Called by the loop before every training step `step` (the state is at that step); returns an
    `Update`, or None when nothing is due (the default).

    The one hook for whatever a method changes outside the gradient step: SeLaVi's label updates on
    its schedule, XDC's end-of-epoch plateau check and k-means iterations, IICL's head restart at the
    stage switch. A method reads the data and mesh from `self.context` and precomputes its schedule
    from `context.total_steps` / `context.steps_per_epoch`. The call comes at the top of the step, where
    a run resumed from that step's checkpoint starts too, so a decision made from `state` (and the
    data) alone is the same in a resumed run as in an uninterrupted one.
    """
    del state, step
    return None

  def data_pass_steps(self) -> Sequence[int]:
    """The steps before which `scheduled_update` reads the dataset, where the method can tell in
    advance (SeLaVi's label-update schedule); the loop budgets them into the run's ETA. Default: none
    known."""
    return ()

  def sampling_weights(self, state: TrainState) -> np.ndarray | None:
    """Each training example's expected number of draws per epoch (`[num_examples]`, mean 1), by
    which the loop resamples the training stream from `state` on (`DataSource.train_batches`); None,
    the default: every example once per epoch.

    A function of `state` alone (a resumed run must draw as an uninterrupted one), and changed only by
    an update that reads the dataset (`Update.data_pass`): the loop asks again only after those.
    """
    del state
    return None

  def evaluate(self, state: TrainState, batches: Iterator[Batch]) -> dict[str, float]:
    """Metrics on the evaluation `batches` (padded, `mask == 0` on padding); none by default."""
    del state, batches
    return {}

  def report(self, results: dict[str, float]) -> str | None:
    """`evaluate`'s results as a Markdown table for `eval.md`, or None."""
    del results
    return None


@runtime_checkable
class HasEncoders(Protocol):
  """A method whose model has one encoder per modality the evaluation suite can run on its own."""

  def encoders(self, state: TrainState) -> dict[str, Encoder]:
    """Modality (`video`, `audio`, `flow`) -> the trained encoder of `state`."""


@runtime_checkable
class Clusters(Protocol):
  """A method that assigns clips to clusters (what `--mode=label` writes)."""

  def cluster_probs(self, state: TrainState, batch: Batch) -> dict[str, jax.Array]:
    """View name -> cluster probabilities `[heads, B, K]` of the global `batch` (eval mode, views of
    a clip averaged). Pure; traced under jit."""


@runtime_checkable
class SelfLabels(Protocol):
  """A method that keeps per-video labels of the training split in its state."""

  def self_labels(self, state: TrainState) -> dict[str, np.ndarray]:
    """Name -> `[N, heads]` labels of the N training videos in dataset-index order (on the host);
    empty when there are none yet."""


@runtime_checkable
class ClusterPrior(Protocol):
  """A method whose self-labels follow target cluster sizes."""

  def cluster_prior(self, state: TrainState) -> np.ndarray:
    """Each head's target cluster sizes `[heads, K]`."""
