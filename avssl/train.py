"""The one training loop every method uses.

The loop owns the mesh, the data feeding, the optimiser, the jitted step, checkpoints, logging and the
non-finite-loss guard; the method (`avssl/methods/`) owns the model, the loss, its own state and its label
updates. `setup` builds everything a run needs from the config, so a missing or unknown key fails before
the first step; `train_and_evaluate`, `evaluate` and `label` are the three modes of `avssl.main`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Iterator

import jax
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import metric_writers, periodic_actions

from avssl import checkpointing, config_lib, methods, optim, sharding, train_state
from avssl.data import datasets
from avssl.evaluation import browser, plots, suite
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


def setup(config: ml_collections.ConfigDict, workdir: str) -> Run:
  """Builds mesh, data, method, optimiser and state; restores the latest checkpoint in `workdir`."""
  jax.config.update('jax_threefry_partitionable', True)
  mesh = sharding.make_mesh()
  sharding.check_global_batch(config.batch_size, mesh)
  data = datasets.build(config.data, batch_size=config.batch_size,
                        process_index=jax.process_index(), process_count=jax.process_count(),
                        seed=config.seed)
  method = methods.build(config)
  steps_per_epoch = data.steps_per_epoch
  method.mesh, method.steps_per_epoch = mesh, steps_per_epoch
  total_steps = config_lib.steps(config, 'total', steps_per_epoch)
  if total_steps is None:
    raise ValueError('config sets neither total_steps nor total_epochs; set one of them')
  lr = optim.learning_rate(config.schedule, steps_per_epoch, total_steps)
  tx = optim.optimizer(config.optimizer, lr)
  example = jax.tree.map(lambda x: x[:1], next(data.train_batches(0)))
  state, state_sharding = train_state.create(
      lambda rng: method.init_variables(rng, example),
      lambda: method.init_method_state(data.num_train), tx, jax.random.PRNGKey(config.seed), mesh)
  checkpointer = checkpointing.Checkpointer(workdir, config_lib.steps(
      config, 'checkpoint_every', steps_per_epoch, default=total_steps), config.keep_checkpoints)
  if checkpointer.latest_step() is not None:
    logging.info('Resuming from the checkpoint of step %d in %s', checkpointer.latest_step(), workdir)
    state = checkpointer.restore(state, state_sharding)
  elif config.get('init_from'):
    state = initialise_from(state, config.init_from)
  return Run(config, workdir, mesh, data, method, tx, lr, state, state_sharding, checkpointer,
             steps_per_epoch, total_steps)


def initialise_from(state: TrainState, workdir: str) -> TrainState:
  """Copies the weights of another run's latest checkpoint into `state` where names and shapes match.

  This is SeLaVi's unsupervised finetuning (§4): Kinetics-Sound and AVE start from the VGG-Sound
  model. Encoders match; heads with another number of clusters do not and keep their initialisation.
  Optimiser state, step and method state always start fresh.
  """
  source = checkpointing.Checkpointer(workdir, every_steps=1, keep=1)
  try:
    raw = source.restore_raw()
  finally:
    source.close()
  copied, kept = [], []

  def take(path, current, saved):
    name = jax.tree_util.keystr(path)
    if saved is not None and np.shape(saved) == current.shape:
      copied.append(name)
      return jax.device_put(np.asarray(saved, current.dtype), current.sharding)
    kept.append(name)
    return current

  updates = {}
  for collection in ('params', 'batch_stats'):
    saved = _flat(raw[collection])  # A raw restore gives the saved TrainState as a dict.
    updates[collection] = jax.tree_util.tree_map_with_path(
        lambda path, x: take(path, x, saved.get(jax.tree_util.keystr(path))),
        getattr(state, collection))
  if not copied:
    raise ValueError(f'init_from={workdir}: no parameter of its checkpoint matches this model')
  logging.info('Initialised %d arrays from %s; %d kept their initialisation: %s', len(copied),
               workdir, len(kept), ', '.join(kept) or 'none')
  return state.replace(**updates)


def _flat(tree: Any) -> dict[str, Any]:
  return {jax.tree_util.keystr(path): x for path, x in jax.tree_util.tree_leaves_with_path(tree)}


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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains from the latest checkpoint in `workdir` (or from scratch) to the configured end."""
  run = setup(config, workdir)
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  start = int(run.state.step)
  logging.info('Training %s from step %d to %d (%d steps per epoch) on %d devices in %d processes',
               config.method, start, run.total_steps, run.steps_per_epoch, jax.device_count(),
               jax.process_count())
  report = periodic_actions.ReportProgress(num_train_steps=run.total_steps, writer=writer)
  try:
    state = _loop(run, start, writer, report)
    run.checkpointer.maybe_save(state, run.total_steps, final=True)
    _evaluate_and_write(run, state, writer, run.total_steps)
  finally:
    run.checkpointer.close()
    writer.close()
  return state


def _loop(run: Run, start: int, writer: metric_writers.MetricWriter,
          report: periodic_actions.ReportProgress) -> TrainState:
  config, state = run.config, run.state
  train_step = make_train_step(run)
  label_steps = set(run.method.label_update_steps(run.total_steps, run.steps_per_epoch))
  log_every = config_lib.steps(config, 'log_every', run.steps_per_epoch, default=1)
  eval_every = config_lib.steps(config, 'eval_every', run.steps_per_epoch)
  batches: Iterator = run.data.train_batches(start)
  history, pending = [], None
  for step in range(start, run.total_steps):
    if step and step % run.steps_per_epoch == 0:
      state = run.method.epoch_end(state, run.data, run.mesh)
    if step in label_steps:
      state = run.method.label_update(state, run.data, run.mesh)
      summary = run.method.label_update_summary(state, run.data)
      if summary:
        writer.write_scalars(step, summary)
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
      _evaluate_and_write(run, state, writer, done)
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


def _evaluate_and_write(run: Run, state: TrainState, writer: metric_writers.MetricWriter,
                        step: int) -> dict[str, float]:
  """The method's evaluation during and at the end of training: logged, and written to `eval.json`
  (and the method's table to `eval.md`)."""
  results = run.method.evaluate(state, run.data.eval_batches(), run.mesh)
  if not results:
    return results
  writer.write_scalars(step, results)
  table = run.method.report(results)
  suite.write_method_results(run.workdir, step, results, table)
  if table:
    logging.info('Evaluation at step %d:\n%s', step, table)
  return results


def evaluate(config: ml_collections.ConfigDict, workdir: str,
             config_name: str = '') -> dict[str, Any]:
  """`--mode=eval`: the evaluations `config.evaluation.run` lists, of the latest checkpoint in
  `workdir`; tables and JSON under `workdir/eval/` (see `avssl/evaluation/suite.py`)."""
  suite.check(tuple(config.evaluation.run))
  run = setup(config, workdir)
  try:
    if run.checkpointer.latest_step() is None:
      raise FileNotFoundError(f'no checkpoint in {os.path.join(workdir, "checkpoints")}: train first')
    context = suite.Context(config, run.method, run.state, run.data, run.mesh, workdir,
                            int(run.state.step), config_name)
    return suite.run(context, tuple(config.evaluation.run))
  finally:
    run.checkpointer.close()


def label(config: ml_collections.ConfigDict, workdir: str) -> None:
  """`--mode=label`: `write_labels` of the latest checkpoint in `workdir`."""
  run = setup(config, workdir)
  try:
    write_labels(run)
  finally:
    run.checkpointer.close()


def write_labels(run: Run) -> str:
  """The method's cluster labels of `run.state` (`labels.csv`, see the method's `export_labels`), and
  beside them the cluster browser (`browser/index.html`, see `avssl/evaluation/browser.py`) and the
  run's training plots (`plots/*.png`, also as TensorBoard images). Returns the labels' path."""
  export = getattr(run.method, 'export_labels', None)
  if export is None:
    raise ValueError(f'method {run.config.method!r} produces no cluster labels; --mode=label needs a '
                     'clustering method such as selavi')
  path = export(run.state, run.data, run.mesh, run.workdir)
  if jax.process_index() == 0:
    labels = browser.read_labels(path)
    browser.write(labels, run.config.label.get('dir') or run.config.data.dir,
                  os.path.join(run.workdir, 'browser'),
                  title=os.path.basename(os.path.abspath(run.workdir)))
    plots.write(run.workdir, labels, run.method.cluster_prior(run.state), int(run.state.step))
  return path
