"""What a method supplies to the one training loop in `avssl/train.py`.

A method owns its model, its loss, its own state (self-labels, priors, queues) and its periodic label
update; the loop owns everything else (mesh, data feeding, optimiser, jit, checkpoints, logging, guards).
Nothing method-specific lives in the loop, and nothing generic is copied into a method.
"""

from __future__ import annotations

from typing import Any, Iterator, NamedTuple

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from avssl.data import datasets
from avssl.train_state import TrainState

PyTree = Any
Batch = dict[str, jax.Array]


class StepOutput(NamedTuple):
  """What a method's loss returns next to the scalar loss (the `aux` of `value_and_grad`)."""
  batch_stats: PyTree
  metrics: dict[str, jax.Array]
  method_state: PyTree


class Method:
  """Base class: override `build_model` and `loss`; the rest has sensible defaults."""

  #: Names of the batch entries the method reads (checked against the data at start).
  inputs: tuple[str, ...] = ()
  #: The loop's device mesh and steps per epoch, set by `train.setup` before the first step: for a loss
  #: that runs collectives over the mesh itself (GOCA's Sinkhorn over the global batch) or switches
  #: behaviour at a configured epoch. None outside a run (a method built on its own).
  mesh: jax.sharding.Mesh | None = None
  steps_per_epoch: int | None = None
  #: The title and protocol notes of `report`'s table in `eval/tables.md`.
  report_title: str = 'Clustering of the evaluation split (SeLaVi Table 2 layout)'
  report_notes: dict[str, str] = {
      'heads': 'mean ± std over heads (the best head is in eval.json, best_head_optimistic)'}

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.model = self.build_model()

  def build_model(self) -> nn.Module:
    raise NotImplementedError(f'{type(self).__name__} must define build_model()')

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

  def label_update_steps(self, total_steps: int, steps_per_epoch: int) -> list[int]:
    """Steps (before which) the loop calls `label_update`; none by default."""
    del total_steps, steps_per_epoch
    return []

  def label_update(self, state: TrainState, data: datasets.DataSource,
                   mesh: jax.sharding.Mesh) -> TrainState:
    """Recomputes the method's targets over the whole dataset (SeLaVi: Sinkhorn; XDC: k-means).

    `data` gives the passes the method needs (`data.dataset_batches(augment=..., pass_seed=...)`,
    `data.train_batches(step)`), so each method decides how it sees the data.
    """
    del data, mesh
    return state

  def label_update_summary(self, state: TrainState, data: datasets.DataSource) -> dict[str, float]:
    """Scalars the loop logs after each `label_update`, so a run's record shows how its labels evolved
    (the plots of `--mode=label` draw them); none by default."""
    del state, data
    return {}

  def cluster_prior(self, state: TrainState) -> np.ndarray | None:
    """Each head's target cluster sizes `[heads, K]`, for methods whose labels follow a prior (drawn
    against the actual sizes at `--mode=label`); None by default."""
    del state
    return None

  def epoch_end(self, state: TrainState, data: datasets.DataSource,
                mesh: jax.sharding.Mesh) -> TrainState:
    """Called by the loop after every full epoch but the last, before the next step (and before a
    `label_update` scheduled for that step); returns `state` unchanged by default.

    For decisions that depend on how training goes rather than on a fixed schedule: XDC starts a new
    deep-clustering iteration (its `label_update`) when a held-out loss it sums in its method state
    stops improving. The call comes at the top of the step that starts the epoch, where a run resumed
    from that step's checkpoint starts too, so a decision made from `state` (and the data) alone is
    the same in a resumed run as in an uninterrupted one.
    """
    del data, mesh
    return state

  def report(self, results: dict[str, float]) -> str | None:
    """`evaluate`'s results as a Markdown table for `eval.md`, or None."""
    del results
    return None

  def evaluate(self, state: TrainState, batches: Iterator[dict[str, np.ndarray]],
               mesh: jax.sharding.Mesh) -> dict[str, float]:
    """Metrics on the evaluation data; none by default."""
    del state, batches, mesh
    return {}
