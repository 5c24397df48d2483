"""The one training loop every method uses.

The loop owns the data feeding, the jitted step, checkpoints, logging and the non-finite-loss guard;
the method (`avssl/methods/`) owns the model, the loss, its own state and its scheduled updates. The
loop knows methods only through `avssl.methods.base`; the run modes (`avssl/modes/`) build a `Run`
and call `train`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import jax
import ml_collections
import numpy as np
import optax
from absl import logging
from etils import epy

with epy.lazy_imports():  # clu's writers import TensorFlow; the step runs without it.
  from clu import metric_writers, periodic_actions

from avssl import checkpointing, config_lib, files, preemption, sharding
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
  example: dict[str, jax.ShapeDtypeStruct]  # One example's shapes: the model's init needs no data.


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

  Step s is: the preemption check, the train step, the metrics every `log_every` steps (fetched one
  step late, checked for NaN/Inf), `evaluate(state, s + 1)` every `eval_every` steps (not the last,
  which the caller evaluates), the method's `scheduled_update` for step s + 1 (its scalars logged),
  and the checkpoint of step s + 1 when on the interval or, with `config.checkpoint_after_update`,
  right after an update that read the dataset. A checkpoint therefore always holds the update of its
  own step (`TrainState.updated_at`), and a resume never redoes it.

  A preemption notice (`avssl.preemption`) before a step or during a pass saves the state of that
  step (before the interrupted update, which the resume redoes exactly), waits until the save is
  durable and raises `preemption.Preempted`.
  """
  config, state = run.config, run.state
  start = int(state.step)
  clock = _Clock(run, start)
  report = periodic_actions.ReportProgress(num_train_steps=run.total_steps, writer=writer)
  train_step = make_train_step(run)
  log_every = config_lib.steps(config, 'log_every', run.steps_per_epoch, default=1)
  eval_every = config_lib.steps(config, 'eval_every', run.steps_per_epoch)
  after_update = config.get('checkpoint_after_update', False)
  history: list[dict[str, float]] = []
  pending: tuple[int, dict[str, jax.Array]] | None = None

  def flush() -> None:
    nonlocal pending
    if pending is not None:
      history.append(_check_finite(*pending, run.checkpointer))
      pending = None

  def save(state: TrainState, step: int) -> None:
    flush()
    if run.checkpointer.maybe_save(state, step, final=True):
      clock.saved(step)

  def stop(state: TrainState, step: int) -> NoReturn:
    save(state, step)
    run.checkpointer.wait()
    logging.warning('preempted at step %d; rerun the same command to resume', step)
    raise preemption.Preempted(step)

  def update(state: TrainState, step: int, *, done: bool = False) -> tuple[TrainState, bool]:
    """The scheduled update before `step`; on a notice during its pass, the state before it is
    saved (the resume redoes the update)."""
    try:
      return _scheduled_update(run, state, step, writer, done=done)
    except preemption.Preempted:
      stop(state, step)

  state, passed = update(state, start, done=int(state.updated_at) == start)
  if passed and after_update:
    save(state, start)
  batches: Iterator = run.data.train_batches(start)
  for step in range(start, run.total_steps):
    if preemption.at_step(step):
      stop(state, step)
    state, metrics = train_step(state, sharding.to_global(next(batches), run.mesh))
    flush()
    pending = (step, metrics)
    done = step + 1
    report(done)
    if done % log_every == 0 or done == run.total_steps:
      flush()
      writer.write_scalars(done, {**_mean(history), **clock.scalars(done)})
      history = []
    if eval_every and done % eval_every == 0 and done != run.total_steps:
      try:
        evaluate(state, done)
      except preemption.Preempted:
        stop(state, done)
    passed = False
    if done != run.total_steps:
      state, passed = update(state, done)
    if done % run.checkpointer.every_steps == 0 or (passed and after_update):
      save(state, done)
  save(state, run.total_steps)
  return state


def _scheduled_update(run: Run, state: TrainState, step: int, writer: metric_writers.MetricWriter,
                      *, done: bool = False) -> tuple[TrainState, bool]:
  """The method's update before `step` (unless the state holds it already: `done`); the new state
  and whether the update read the dataset (a label update)."""
  if done:
    return state, False
  update = run.method.scheduled_update(state, step)
  if update is None:
    return state, False
  if update.scalars:
    writer.write_scalars(step, update.scalars)
  marker = jax.device_put(np.int32(step), run.state_sharding.updated_at)
  return update.state.replace(updated_at=marker), update.data_pass


class _Clock:
  """Training time across restarts (`progress.json` in the workdir, written with each checkpoint), so
  the logged uptime and throughput describe the whole run, not the last process."""

  def __init__(self, run: Run, start: int):
    self._path = files.join(run.workdir, 'progress.json')
    self._main = jax.process_index() == 0
    self._before = 0.0
    if start and files.exists(self._path):
      with files.open(self._path) as f:
        saved = json.load(f)
      self._before = float(saved.get('uptime_s', 0.0))
      logging.info('%.2f h of training before this process (%s)', self._before / 3600, self._path)
    self._since = time.monotonic()
    self._start = start

  def uptime(self) -> float:
    return self._before + time.monotonic() - self._since

  def scalars(self, step: int) -> dict[str, float]:
    elapsed = time.monotonic() - self._since
    rate = (step - self._start) / elapsed if elapsed > 0 else 0.0
    return {'uptime_hours': self.uptime() / 3600, 'steps_per_second': rate}

  def saved(self, step: int) -> None:
    if self._main:
      with files.atomic_open(self._path) as f:
        json.dump({'step': step, 'uptime_s': self.uptime()}, f)


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
