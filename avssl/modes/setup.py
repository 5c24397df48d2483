"""What every run mode starts from: the `Run` a config and a workdir describe, restored from the
workdir's latest checkpoint (or initialised from another run's weights)."""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from avssl import checkpointing, config_lib, methods, optim, sharding, train_state
from avssl.data import datasets
from avssl.errors import UserError
from avssl.loop import Run
from avssl.methods.base import RunContext
from avssl.train_state import TrainState


def setup(config: ml_collections.ConfigDict, workdir: str, *, trained_for: str = '',
          abstract: bool = False) -> Run:
  """Builds mesh, data, method, optimiser and state; restores the latest checkpoint in `workdir`.

  `trained_for` names a mode that uses trained weights (`--mode=label`): without a checkpoint it is
  refused before anything is built, unless `config.allow_untrained` asks for the random initialisation.
  With `abstract`, the state is only its shapes, dtypes and shardings (`train_state.create`) and no
  checkpoint is read: enough to lower the step, check a config and cost it, at no compile of the init.
  """
  config_lib.validate(config)
  if trained_for:
    _require_checkpoint(config, workdir, trained_for)
  jax.config.update('jax_threefry_partitionable', True)
  mesh = sharding.make_mesh()
  sharding.check_global_batch(config.batch_size, mesh)
  data = datasets.build(config.data, batch_size=config.batch_size,
                        process_index=jax.process_index(), process_count=jax.process_count(),
                        seed=config.seed)
  steps_per_epoch = data.steps_per_epoch
  total_steps = config_lib.steps(config, 'total', steps_per_epoch, default=0)
  if total_steps <= 0:
    raise UserError(f'config.total_epochs={config.total_epochs} is {total_steps} steps at '
                    f'{steps_per_epoch} steps per epoch; train for at least one step')
  method = methods.build(config, RunContext(mesh, data, steps_per_epoch, total_steps))
  lr = optim.learning_rate(config.schedule, steps_per_epoch, total_steps)
  tx = optim.optimizer(config.optimizer, lr)
  example = jax.tree.map(lambda x: x[:1], next(data.train_batches(0)))
  state, state_sharding = train_state.create(
      lambda rng: method.init_variables(rng, example),
      lambda: method.init_method_state(data.num_train), tx, jax.random.PRNGKey(config.seed), mesh,
      abstract=abstract)
  checkpointer = checkpointing.Checkpointer(workdir, config_lib.steps(
      config, 'checkpoint_every', steps_per_epoch, default=total_steps), config.keep_checkpoints,
      directory=config.get('checkpoint_dir', ''))
  if not abstract:
    state = _restore(config, state, state_sharding, checkpointer)
  return Run(config, workdir, mesh, data, method, tx, lr, state, state_sharding, checkpointer,
             steps_per_epoch, total_steps)


def _restore(config: ml_collections.ConfigDict, state: TrainState, state_sharding: Any,
             checkpointer: checkpointing.Checkpointer) -> TrainState:
  """The workdir's latest checkpoint, else the weights of `config.init_from`, else `state`."""
  if checkpointer.latest_step() is not None:
    state = checkpointer.restore(state, state_sharding)
    logging.info('Resuming from the checkpoint of step %d in %s', int(state.step),
                 checkpointer.directory)
  elif config.get('init_from'):
    state = initialise_from(state, config.init_from, bool(config.get('allow_untrained')))
  return state


def _require_checkpoint(config: ml_collections.ConfigDict, workdir: str, mode: str) -> None:
  """Refuses `mode` without a checkpoint (it would write results of the random initialisation as if
  trained), unless `config.allow_untrained`."""
  directory = checkpointing.checkpoint_dir(workdir, config.get('checkpoint_dir', ''))
  if checkpointing.has_checkpoint(directory):
    return
  if not config.get('allow_untrained'):
    raise UserError(f'no checkpoint in {directory}: {mode} needs a trained model; train first '
                    '(--mode=train with this --workdir), or set --config.allow_untrained=true to use '
                    'the random initialisation')
  logging.warning('No checkpoint in %s: %s uses the random initialisation (allow_untrained)',
                  directory, mode)


def initialise_from(state: TrainState, workdir: str, allow_untrained: bool = False) -> TrainState:
  """Copies the weights of another run's latest checkpoint into `state` where names and shapes match.

  This is SeLaVi's unsupervised finetuning (§4): Kinetics-Sound and AVE start from the VGG-Sound
  model. Encoders match; heads with another number of clusters do not and keep their initialisation.
  Optimiser state, step and method state always start fresh. A run without a checkpoint is refused
  (a typo would otherwise start from scratch unnoticed) unless `allow_untrained`.
  """
  if not checkpointing.has_checkpoint(checkpointing.checkpoint_dir(workdir)):
    if not allow_untrained:
      raise UserError(f'init_from={workdir}: no checkpoint in {checkpointing.checkpoint_dir(workdir)};'
                      ' train that run first or fix the path, or set --config.allow_untrained=true '
                      'to start from the random initialisation')
    logging.warning('init_from=%s has no checkpoint: starting from the random initialisation '
                    '(allow_untrained)', workdir)
    return state
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
        lambda path, x, saved=saved: take(path, x, saved.get(jax.tree_util.keystr(path))),
        getattr(state, collection))
  if not copied:
    raise ValueError(f'init_from={workdir}: no parameter of its checkpoint matches this model')
  logging.info('Initialised %d arrays from %s; %d kept their initialisation: %s', len(copied),
               workdir, len(kept), ', '.join(kept) or 'none')
  return state.replace(**updates)


def _flat(tree: Any) -> dict[str, Any]:
  return {jax.tree_util.keystr(path): x for path, x in jax.tree_util.tree_leaves_with_path(tree)}
