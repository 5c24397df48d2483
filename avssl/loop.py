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
  from clu import metric_writers

from avssl import checkpointing, config_lib, files, passes, preemption, progress, sharding
from avssl.data import datasets, on_device
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
    batch = on_device.normalize(batch, run.config.data)  # uint8 video and flow: here, on the device.
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

  Step s is: the preemption check, the train step on a batch already on the devices (a
  `config.prefetch_batches`-deep device prefetch), `evaluate(state, s + 1)` every `eval_every` steps
  (not the last, which the caller evaluates), the method's `scheduled_update` for step s + 1 (its
  scalars logged, a dataset pass timed as `label_update/seconds` and `.../clips_per_sec`), and the
  checkpoint of step s + 1 when on the interval or, with `config.checkpoint_after_update`, right after
  an update that read the dataset. A checkpoint therefore always holds the update of its own step
  (`TrainState.updated_at`), and a resume never redoes it.

  The training stream is resampled by the method's `sampling_weights` (XDC's balanced sampling) and
  built again from step s + 1 after an update that read the dataset, where they may change: the
  stream from any step is a function of the state there, so a resumed run reads what an uninterrupted
  one reads.

  The steps' metrics stay on the devices until a log step, a checkpoint, an evaluation or a dataset
  pass, where they are fetched at once and checked for NaN/Inf: the host never waits on a step in
  between, and no non-finite state is ever saved or used (`NonFiniteLossError` names the first bad
  step and the steps checked with it; the last good checkpoint stays).

  A preemption notice (`avssl.preemption`) before a step or during a pass saves the state of that
  step (before the interrupted update, which the resume redoes exactly), waits until the save is
  durable and raises `preemption.Preempted`.
  """
  config, state = run.config, run.state
  start = int(state.step)
  clock = _Clock(run, start)
  pass_steps = frozenset(run.method.data_pass_steps())
  progress_ = progress.Progress(start_step=start, total_steps=run.total_steps,
                                global_batch=config.batch_size, pass_steps=sorted(pass_steps))
  profiler = progress.Profiler(run.workdir, config.get('profile_start_step', -1),
                               config.get('profile_num_steps', 5))
  train_step = make_train_step(run)
  log_every = config_lib.steps(config, 'log_every', run.steps_per_epoch, default=1)
  eval_every = config_lib.steps(config, 'eval_every', run.steps_per_epoch)
  after_update = config.get('checkpoint_after_update', False)
  history: list[dict[str, float]] = []
  pending: list[tuple[int, dict[str, jax.Array]]] = []

  def flush() -> None:
    """Fetches and checks the pending steps' metrics: where the host waits for the devices, so
    its time is the steps' ('step')."""
    with progress_.timed('step'):
      history.extend(_check_finite(pending, run.checkpointer))
    pending.clear()

  def save(state: TrainState, step: int) -> None:
    flush()
    with progress_.timed('checkpoint'):
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
    if step in pass_steps:
      flush()  # A dataset pass is never spent on a non-finite state.
    try:
      with progress_.timed('label_update'):
        return _scheduled_update(run, state, step, writer, progress_, done=done)
    except preemption.Preempted:
      stop(state, step)

  def stream(weights: np.ndarray | None, step: int) -> Iterator[Any]:
    """The training batches from `step` on, resampled by the method's `weights`."""
    batches = run.data.train_batches(step, weights)
    return sharding.prefetch_to_mesh(batches, run.mesh, config.get('prefetch_batches', 2))

  state, passed = update(state, start, done=int(state.updated_at) == start)
  if passed and after_update:
    save(state, start)
  weights = run.method.sampling_weights(state)
  batches = stream(weights, start)
  try:
    for step in range(start, run.total_steps):
      if preemption.at_step(step):
        stop(state, step)
      profiler.before(step)
      with progress_.timed('data'):
        batch = next(batches)
      with progress_.timed('step'):
        state, metrics = train_step(state, batch)
      progress_.stepped()
      pending.append((step, metrics))
      done = step + 1
      profiler.after(done, metrics)
      if done % log_every == 0 or done == run.total_steps:
        flush()
        writer.write_scalars(done, {**_mean(history), **clock.scalars(),
                                    **progress_.report(done)})
        history = []
      if eval_every and done % eval_every == 0 and done != run.total_steps:
        flush()
        try:
          with progress_.timed('evaluation'):
            evaluate(state, done)
        except preemption.Preempted:
          stop(state, done)
      passed = False
      if done != run.total_steps:
        state, passed = update(state, done)
        new_weights = run.method.sampling_weights(state) if passed else weights
        if new_weights is not weights:  # New pseudo-labels, new draws from here on.
          weights, batches = new_weights, stream(new_weights, done)
      if done % run.checkpointer.every_steps == 0 or (passed and after_update):
        save(state, done)
  finally:
    profiler.close()
  save(state, run.total_steps)
  return state


def _scheduled_update(run: Run, state: TrainState, step: int, writer: metric_writers.MetricWriter,
                      progress_: progress.Progress, *, done: bool = False
                      ) -> tuple[TrainState, bool]:
  """The method's update before `step` (unless the state holds it already: `done`); the new state
  and whether the update read the dataset (a label update, timed: its seconds and clips/s are
  logged with its own scalars)."""
  if done:
    return state, False
  started = time.monotonic()
  with passes.recorded() as read:
    update = run.method.scheduled_update(state, step)
  if update is None:
    return state, False
  scalars = dict(update.scalars)
  if update.data_pass:
    jax.block_until_ready(update.state)
    seconds = time.monotonic() - started
    progress_.passed(seconds)
    # Every clip its passes read (SeLaVi reads the dataset once per head group).
    clips = sum(p.clips for p in read) / seconds
    scalars.update({'label_update/seconds': seconds, 'label_update/clips_per_sec': clips,
                    'label_update/clips_per_sec_per_device': clips / jax.device_count()})
  if scalars:
    writer.write_scalars(step, scalars)
  marker = jax.device_put(np.int32(step), run.state_sharding.updated_at)
  return update.state.replace(updated_at=marker), update.data_pass


class _Clock:
  """Training time across restarts (`progress.json` in the workdir, written with each checkpoint), so
  the logged uptime describes the whole run, not the last process."""

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

  def uptime(self) -> float:
    return self._before + time.monotonic() - self._since

  def scalars(self) -> dict[str, float]:
    return {'uptime_hours': self.uptime() / 3600}

  def saved(self, step: int) -> None:
    if self._main:
      with files.atomic_open(self._path) as f:
        json.dump({'step': step, 'uptime_s': self.uptime()}, f)


def _check_finite(pending: list[tuple[int, dict[str, jax.Array]]],
                  checkpointer: checkpointing.Checkpointer) -> list[dict[str, float]]:
  """Fetches the metrics of the steps in `pending` at once; stops the run at the first step whose
  loss or gradient norm is not finite, naming it and the steps checked with it."""
  fetched = jax.device_get([metrics for _, metrics in pending])
  values = [{k: float(v) for k, v in m.items()} for m in fetched]
  for (step, _), step_values in zip(pending, values):
    bad = {k: step_values[k] for k in ('loss', 'grad_norm') if not np.isfinite(step_values[k])}
    if not bad:
      continue
    checkpointer.wait()
    latest = checkpointer.latest_step()
    kept = (f'the last good checkpoint (step {latest}) is kept and a rerun resumes from it'
            if latest is not None else 'no checkpoint had been written yet')
    checked = f'steps {pending[0][0]}-{pending[-1][0]}' if len(pending) > 1 else 'that step alone'
    raise NonFiniteLossError(
        f'{", ".join(f"{k} is {v}" for k, v in bad.items())} at step {step}: stopping ({checked} '
        f'checked together, as metrics are fetched at log steps); {kept}. Lower the learning rate or '
        'check the input data for NaN/Inf before resuming.')
  return values


def _mean(history: list[dict[str, float]]) -> dict[str, float]:
  return {k: float(np.mean([h[k] for h in history])) for k in history[0]}
