"""What every run mode starts from: the `Run` a config and a workdir describe, restored from the
workdir's latest checkpoint (or initialised from another run's weights); and the same run rebuilt from its
workdir alone (`load_run`, from the `run.json` that training writes there)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

import avssl
from avssl import checkpointing, config_lib, files, methods, optim, sharding, train_state
from avssl.data import datasets, on_device
from avssl.errors import UserError
from avssl.loop import Run
from avssl.methods.base import RunContext
from avssl.train_state import TrainState
from avssl.types import Batch

RUN_FILE = 'run.json'  # What a run's workdir says about it (`describe`).


def setup(config: ml_collections.ConfigDict, workdir: str, *, trained_for: str = '',
          abstract: bool = False, data: datasets.DataSource | None = None,
          example: dict[str, jax.ShapeDtypeStruct] | None = None) -> Run:
  """Builds mesh, data, method, optimiser and state; restores the latest checkpoint in `workdir`.

  `trained_for` names a mode that uses trained weights (`--mode=label`): without a checkpoint it is
  refused before anything is built, unless `config.allow_untrained` asks for the random initialisation.
  With `abstract`, the state is only its shapes, dtypes and shardings (`train_state.create`) and no
  checkpoint is read: enough to lower the step, check a config and cost it, at no compile of the init.
  `data` and `example` (the shapes of one example, as `example_spec` gives them) stand in for the
  config's data source and its first batch, so that a config is costed where its records are not
  (`benchmarks/step_cost.py`); both default to the config's own data.
  """
  config_lib.validate(config)
  if trained_for:
    _require_checkpoint(config, workdir, trained_for)
  use_compilation_cache(config.get('compilation_cache_dir', ''))
  mesh = _mesh(config)
  if data is None:
    data = _data(config)
  if example is None:
    example = data.example_spec() or example_spec(next(data.train_batches(0)))
  return _assemble(config, workdir, mesh, data, example, abstract=abstract)


def use_compilation_cache(directory: str) -> None:
  """Points JAX's persistent compilation cache at `directory` (`config.compilation_cache_dir`; ''
  leaves it as it is) before anything is compiled, so that reruns and resumes load the compiled
  steps."""
  if directory:
    jax.config.update('jax_compilation_cache_dir', files.local_or_url(directory))


def _data(config: ml_collections.ConfigDict) -> datasets.DataSource:
  return datasets.build(config.data, batch_size=config.batch_size,
                        process_index=jax.process_index(), process_count=jax.process_count(),
                        seed=config.seed)


def _mesh(config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
  jax.config.update('jax_threefry_partitionable', True)
  mesh = sharding.make_mesh()
  sharding.check_global_batch(config.batch_size, mesh)
  return mesh


def example_spec(batch: Batch) -> dict[str, jax.ShapeDtypeStruct]:
  """The shapes and dtypes of one example of `batch` (a batch of 1): all a model's init needs."""
  return {k: jax.ShapeDtypeStruct((1, *np.shape(v)[1:]), np.asarray(v).dtype)
          for k, v in batch.items()}


def _assemble(config: ml_collections.ConfigDict, workdir: str, mesh: jax.sharding.Mesh,
              data: datasets.DataSource, example: dict[str, jax.ShapeDtypeStruct], *,
              abstract: bool = False) -> Run:
  """Method, optimiser, state (initialised from `example`'s shapes) and checkpointer of a run."""
  steps_per_epoch = data.steps_per_epoch
  total_steps = config_lib.steps(config, 'total', steps_per_epoch, default=0)
  if total_steps <= 0:
    raise UserError(f'config.total_epochs={config.total_epochs} is {total_steps} steps at '
                    f'{steps_per_epoch} steps per epoch; train for at least one step')
  method = methods.build(config, RunContext(mesh, data, steps_per_epoch, total_steps))
  lr = optim.learning_rate(config.schedule, steps_per_epoch, total_steps)
  tx = optim.optimizer(config.optimizer, lr)

  def zeros() -> Batch:
    """Traced inside the init: no batch is decoded or allocated on the host. The model sees what the
    step gives it, float32 inputs also where the data sends uint8 (`on_device.normalize`)."""
    return on_device.normalize({k: jnp.zeros(s.shape, s.dtype) for k, s in example.items()},
                               config.data)

  def create(abstract: bool) -> tuple[TrainState, Any]:
    return train_state.create(
        lambda rng: method.init_variables(rng, zeros()),
        lambda: method.init_method_state(data.num_train), tx, jax.random.PRNGKey(config.seed), mesh,
        abstract=abstract)

  checkpointer = checkpointing.Checkpointer(workdir, config_lib.steps(
      config, 'checkpoint_every', steps_per_epoch, default=total_steps), config.keep_checkpoints,
      directory=config.get('checkpoint_dir', ''))
  resuming = not abstract and checkpointer.latest_step() is not None
  # A restore needs only the state's shapes and shardings: resuming compiles no init.
  state, state_sharding = create(abstract or resuming)
  if resuming:  # A checkpoint from before the method kept an array: that one from the init.
    state = checkpointer.restore(state, state_sharding, initial=lambda: create(False)[0])
    logging.info('Resuming from the checkpoint of step %d in %s', int(state.step),
                 checkpointer.directory)
  elif not abstract and config.get('init_from'):
    state = initialise_from(state, config.init_from, bool(config.get('allow_untrained')))
  return Run(config, workdir, mesh, data, method, tx, lr, state, state_sharding, checkpointer,
             steps_per_epoch, total_steps, example)


def describe(run: Run, argv: Sequence[str]) -> None:
  """Writes `<workdir>/run.json` (process 0): the command, the resolved config, the shapes of one
  example and the data's counts, so that `load_run` rebuilds the run from its workdir alone."""
  if jax.process_index() != 0:
    return
  flag = next((a.partition('=')[2] for a in argv if a.startswith('--config=')), '')
  info = dict(
      argv=list(argv), config_flag=flag, config=json.loads(run.config.to_json_best_effort()),
      example={k: [list(s.shape), s.dtype.name] for k, s in run.example.items()},
      data=dict(num_train=run.data.num_train, num_eval=run.data.num_eval,
                steps_per_epoch=run.steps_per_epoch, classes=list(run.data.classes)),
      versions=dict(avssl=avssl.__version__, jax=jax.__version__), devices=jax.device_count(),
      platform=jax.devices()[0].platform)
  files.makedirs(run.workdir)
  with files.atomic_open(files.join(run.workdir, RUN_FILE)) as f:
    json.dump(info, f, indent=1)


def load_run(workdir: str, records: str | None = None) -> Run:
  """The run of `workdir` rebuilt from the workdir alone: config, model and latest checkpoint.

  The config is the resolved one the run trained with and the state is initialised from the recorded
  shapes of one example, so the training records are not opened: `run.data` knows their counts and
  classes and refuses passes over them. Give `records` (the run's records, or a copy elsewhere) to read
  them (the browser's media, `--mode=label`'s passes); new videos are labelled from their own records
  (`evaluation.features.records`). A workdir without `run.json` (a run started before it existed)
  needs its config: `setup(config_lib.load(...), workdir)`.
  """
  workdir = files.local_or_url(workdir)
  path = files.join(workdir, RUN_FILE)
  if not files.exists(path):
    raise UserError(f'{path} does not exist: {workdir} is not a run directory, or its run started '
                    'before runs described themselves; build it with setup(config, workdir)')
  with files.open(path) as f:
    info = json.load(f)
  config = ml_collections.ConfigDict(_tuples(info['config']))
  _require_checkpoint(config, workdir, 'load_run')
  if records is not None:
    config.data.dir = records
    data = _data(config)
  else:
    data = datasets.Described(**info['data'], records=config.data.get('dir', ''))
  use_compilation_cache(config.get('compilation_cache_dir', ''))
  example = {k: jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype))
             for k, (shape, dtype) in info['example'].items()}
  return _assemble(config, workdir, _mesh(config), data, example)


def _tuples(value: Any) -> Any:
  """JSON's lists back to the tuples configs hold (every sequence in a config is a tuple)."""
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  return value


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
