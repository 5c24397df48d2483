"""The one training loop every method uses.

The loop owns the data feeding, the jitted step, checkpoints, logging and the non-finite-loss guard;
the method (`avssl/methods/`) owns the model, the loss, its own state and its scheduled updates. The
loop knows methods only through `avssl.methods.base`; the run modes (`avssl/modes/`) build a `Run`
and call `train`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
from clu import metric_writers, periodic_actions

from avssl import checkpointing, config_lib, sharding
from avssl.data import datasets
from avssl.methods.base import Method
from avssl.train_state import TrainState


class NonFiniteLossError(FloatingPointError):
  """The loss or the gradient became NaN or Inf; the run stops without saving the bad state."""


@dataclasses.dataclass
class Run:
  """Everything one run needs, built from the config by `setup`."""
  config: ml_collections.ConfigDict
  workdir: str
  mesh: jax.sharding.Mesh
  data: datasets.DataSource
  method: Method
  tx: optax.GradientTransformation
  learning_rate: optax.Schedule
  state: TrainState
  state_sharding: Any
  checkpointer: checkpointing.Checkpointer
  steps_per_epoch: int
  total_steps: int


def make_train_step(run: Run) -> Callable[[TrainState, Any], tuple[TrainState, dict[str, jax.Array]]]:
  """The method's loss wrapped into one jitted, donated, explicitly sharded state transition."""
  method, tx, lr = run.method, run.tx, run.learning_rate

  def step(state: TrainState, batch) -> tuple[TrainState, dict[str, jax.Array]]:
    (loss, out), grads = jax.value_and_grad(method.loss, has_aux=True)(
        state.params, state, batch, state.step_rng())
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                              batch_stats=out.batch_stats, opt_state=opt_state,
                              method_state=out.method_state)
    metrics = {'loss': loss, 'grad_norm': optax.global_norm(grads),
               'learning_rate': lr(state.step), **out.metrics}
    return new_state, metrics

  return jax.jit(step, in_shardings=(run.state_sharding, sharding.batch_sharded(run.mesh)),
                 out_shardings=(run.state_sharding, sharding.replicated(run.mesh)),
                 donate_argnums=0)


def train(run: Run, writer: metric_writers.MetricWriter,
          evaluate: Callable[[TrainState, int], Any]) -> TrainState:
  """Runs `run` from its state's step to `run.total_steps`; returns the final state (saved).

  Before each step the method's `scheduled_update` may change the state (its scalars are logged); every `log_every` steps the metrics
  are fetched, checked for NaN/Inf and logged; checkpoints follow `run.checkpointer`; every
  `eval_every` steps (not the last, which the caller evaluates) `evaluate(state, step)` runs.
  """
  config, state = run.config, run.state
  start = int(state.step)
  report = periodic_actions.ReportProgress(num_train_steps=run.total_steps, writer=writer)
  train_step = make_train_step(run)
  log_every = config_lib.steps(config, 'log_every', run.steps_per_epoch, default=1)
  eval_every = config_lib.steps(config, 'eval_every', run.steps_per_epoch)
  batches: Iterator = run.data.train_batches(start)
  history, pending = [], None
  for step in range(start, run.total_steps):
    update = run.method.scheduled_update(state, step)
    if update is not None:
      state = update.state
      if update.scalars:
        writer.write_scalars(step, update.scalars)
    state, metrics = train_step(state, sharding.to_global(next(batches), run.mesh))
    if pending is not None:
      history.append(_check_finite(*pending, run.checkpointer))
    pending = (step, metrics)
    done = step + 1
    report(done)
    if done % log_every == 0 or done == run.total_steps or done % run.checkpointer.every_steps == 0:
      history.append(_check_finite(*pending, run.checkpointer))
      pending = None
      if done % log_every == 0 or done == run.total_steps:
        writer.write_scalars(done, _mean(history))
        history = []
      run.checkpointer.maybe_save(state, done)
    if eval_every and done % eval_every == 0 and done != run.total_steps:
      evaluate(state, done)
  run.checkpointer.maybe_save(state, run.total_steps, final=True)
  return state


def _check_finite(step: int, metrics: dict[str, jax.Array],
                  checkpointer: checkpointing.Checkpointer) -> dict[str, float]:
  """Fetches one step's metrics; stops the run if its loss or gradient norm is not finite."""
  values = {k: float(v) for k, v in jax.device_get(metrics).items()}
  bad = {k: values[k] for k in ('loss', 'grad_norm') if not np.isfinite(values[k])}
  if bad:
    checkpointer.wait()
    latest = checkpointer.latest_step()
    kept = (f'the last good checkpoint (step {latest}) is kept and a rerun resumes from it'
            if latest is not None else 'no checkpoint had been written yet')
    raise NonFiniteLossError(
        f'{", ".join(f"{k} is {v}" for k, v in bad.items())} at step {step}: stopping; {kept}. '
        'Lower the learning rate or check the input data for NaN/Inf before resuming.')
  return values


def _mean(history: list[dict[str, float]]) -> dict[str, float]:
  return {k: float(np.mean([h[k] for h in history])) for k in history[0]}
