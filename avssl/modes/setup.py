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
from avssl.loop import Run
from avssl.methods.base import RunContext
from avssl.train_state import TrainState


def setup(config: ml_collections.ConfigDict, workdir: str) -> Run:
  """Builds mesh, data, method, optimiser and state; restores the latest checkpoint in `workdir`."""
  jax.config.update('jax_threefry_partitionable', True)
  mesh = sharding.make_mesh()
  sharding.check_global_batch(config.batch_size, mesh)
  data = datasets.build(config.data, batch_size=config.batch_size,
                        process_index=jax.process_index(), process_count=jax.process_count(),
                        seed=config.seed)
  steps_per_epoch = data.steps_per_epoch
  total_steps = config_lib.steps(config, 'total', steps_per_epoch)
  if total_steps is None:
    raise ValueError('config sets neither total_steps nor total_epochs; set one of them')
  method = methods.build(config, RunContext(mesh, data, steps_per_epoch, total_steps))
  lr = optim.learning_rate(config.schedule, steps_per_epoch, total_steps)
  tx = optim.optimizer(config.optimizer, lr)
  example = jax.tree.map(lambda x: x[:1], next(data.train_batches(0)))
  state, state_sharding = train_state.create(
      lambda rng: method.init_variables(rng, example),
      lambda: method.init_method_state(data.num_train), tx, jax.random.PRNGKey(config.seed), mesh)
  checkpointer = checkpointing.Checkpointer(workdir, config_lib.steps(
      config, 'checkpoint_every', steps_per_epoch, default=total_steps), config.keep_checkpoints,
      directory=config.get('checkpoint_dir', ''))
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
        lambda path, x, saved=saved: take(path, x, saved.get(jax.tree_util.keystr(path))),
        getattr(state, collection))
  if not copied:
    raise ValueError(f'init_from={workdir}: no parameter of its checkpoint matches this model')
  logging.info('Initialised %d arrays from %s; %d kept their initialisation: %s', len(copied),
               workdir, len(kept), ', '.join(kept) or 'none')
  return state.replace(**updates)


def _flat(tree: Any) -> dict[str, Any]:
  return {jax.tree_util.keystr(path): x for path, x in jax.tree_util.tree_leaves_with_path(tree)}
