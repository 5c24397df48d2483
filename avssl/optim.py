"""Optimisers and learning-rate schedules from `config.optimizer` and `config.schedule`.

The schedules the four papers use:
  - `warmup_constant`: SeLaVi's release (`GradualWarmupScheduler`, `docs/papers_and_releases.md`):
    linear from `base_lr` to `base_lr * multiplier` over the warm-up, then constant to the end (no
    decay).
  - `warmup_cosine`: linear from 0 to `base_lr * multiplier`, then cosine to `end_lr_fraction` of it.
  - `step`: warm-up as `warmup_constant`, then multiply by `decay_rate` at each boundary.
  - `constant`.

Per-parameter-group learning rates (`config.optimizer.lr_multipliers`): a mapping from a top-level
parameter name (the model's submodule, e.g. `video`, `audio`, `finetune_head`) to a factor; that
subtree's updates are multiplied by it after the optimiser, which for every optimiser here is the same
as running it with `lr × factor` for that group (PyTorch's param groups with their own `lr`, as the
SeLaVi finetuning's head 0.0025 / backbone 0.00025). A factor of 0 freezes the group exactly: its
updates are zeros whatever the gradient, momentum or weight decay. Unlisted names keep factor 1.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import optax

from avssl import config_lib

from avssl.types import PyTree


def learning_rate(config: ml_collections.ConfigDict, steps_per_epoch: int,
                  total_steps: int) -> optax.Schedule:
  """The learning-rate schedule named by `config.name`, with durations in steps or epochs."""
  base = float(config.base_lr)
  peak = base * float(config.get('multiplier', 1.0))
  warmup = config_lib.steps(config, 'warmup', steps_per_epoch, default=0)
  name = config.name
  if name == 'constant':
    return optax.constant_schedule(base)
  if name == 'warmup_constant':
    return _warmup_then(base, peak, warmup, optax.constant_schedule(peak))
  if name == 'warmup_cosine':
    cosine = optax.cosine_decay_schedule(peak, max(total_steps - warmup, 1),
                                         alpha=float(config.end_lr_fraction))
    return _warmup_then(0.0, peak, warmup, cosine)
  if name == 'step':
    boundaries = [round(e * steps_per_epoch) - warmup for e in config.decay_epochs]
    decay = optax.piecewise_constant_schedule(
        peak, {b: float(config.decay_rate) for b in boundaries if b > 0})
    return _warmup_then(base, peak, warmup, decay)
  raise ValueError(f'config.schedule.name={name!r} is not one of '
                   "'constant', 'warmup_constant', 'warmup_cosine', 'step'")


def _warmup_then(start: float, peak: float, warmup: int, after: optax.Schedule) -> optax.Schedule:
  if warmup <= 0:
    return after
  return optax.join_schedules([optax.linear_schedule(start, peak, warmup), after], [warmup])


def optimizer(config: ml_collections.ConfigDict, lr: optax.Schedule) -> optax.GradientTransformation:
  """SGD (momentum), Adam, AdamW or LARS with weight decay, from `config.name`.

  For SGD and Adam the weight decay is added to the gradient (PyTorch's coupled `weight_decay`, as the
  reference implementations use) and applies to every parameter, BN and biases included, as there.
  `config.lr_multipliers` (see the module docstring) scales each named parameter group's updates.
  """
  tx = _base_optimizer(config, lr)
  multipliers = dict(config.get('lr_multipliers') or {})
  if multipliers:
    tx = optax.chain(tx, scale_by_lr_multipliers(multipliers))
  return tx


def _base_optimizer(config: ml_collections.ConfigDict,
                    lr: optax.Schedule) -> optax.GradientTransformation:
  name = config.name
  wd = float(config.weight_decay)
  if name == 'sgd':
    return optax.chain(optax.add_decayed_weights(wd),
                       optax.sgd(lr, momentum=float(config.momentum) or None,
                                 nesterov=bool(config.nesterov)))
  if name == 'adam':
    return optax.chain(optax.add_decayed_weights(wd),
                       optax.adam(lr, b1=float(config.b1), b2=float(config.b2), eps=float(config.eps)))
  if name == 'adamw':
    return optax.adamw(lr, b1=float(config.b1), b2=float(config.b2), eps=float(config.eps),
                       weight_decay=wd)
  if name == 'lars':
    return optax.lars(lr, weight_decay=wd, momentum=float(config.momentum),
                      trust_coefficient=float(config.trust_coefficient))
  raise ValueError(f"config.optimizer.name={name!r} is not one of 'sgd', 'adam', 'adamw', 'lars'")


def scale_by_lr_multipliers(multipliers: Mapping[str, float]) -> optax.GradientTransformation:
  """Multiplies the updates of each top-level parameter subtree `name` by `multipliers[name]`.

  Chained after an optimiser whose update is linear in its learning rate (all of `optimizer`'s), this
  gives that group the learning rate `lr × factor`, weight decay included (PyTorch param groups). A
  factor of 0 gives exact zeros, so the group's weights stay bit-identical. Stateless. A name that is
  not a top-level parameter fails at `init`, so a misspelt group cannot silently train at factor 1.
  """
  multipliers = {str(k): float(v) for k, v in multipliers.items()}

  def check(params):
    if not isinstance(params, Mapping):
      raise ValueError('lr_multipliers needs the parameters as a mapping of named groups, got '
                       f'{type(params).__name__}')
    unknown = sorted(set(multipliers) - set(params))
    if unknown:
      raise ValueError(f'config.optimizer.lr_multipliers names {unknown}, which are not top-level '
                       f'parameters of this model (it has {sorted(params)})')

  def init(params):
    check(params)
    return optax.EmptyState()

  def update(updates, state, params=None):
    del params
    check(updates)
    scaled = {}
    for name, tree in updates.items():
      factor = multipliers.get(name, 1.0)
      if factor == 0.0:
        scaled[name] = jax.tree.map(jnp.zeros_like, tree)
      elif factor == 1.0:
        scaled[name] = tree
      else:
        scaled[name] = jax.tree.map(lambda u, f=factor: u * jnp.asarray(f, u.dtype), tree)
    return (scaled if type(updates) is dict else type(updates)(scaled)), state

  return optax.GradientTransformation(init, update)


def default_optimizer_config(**overrides) -> ml_collections.ConfigDict:
  """Every optimiser key, so any of them can be overridden from the command line of any config."""
  config = ml_collections.ConfigDict(dict(
      name='sgd', momentum=0.9, nesterov=False, weight_decay=0.0,
      b1=0.9, b2=0.999, eps=1e-8, trust_coefficient=0.001, lr_multipliers={}))
  config.update(overrides)
  return config


def default_schedule_config(**overrides) -> ml_collections.ConfigDict:
  """Every schedule key; durations as `<name>_steps` or `<name>_epochs` (at most one set)."""
  config = ml_collections.ConfigDict(dict(
      name='constant', base_lr=0.1, multiplier=1.0,
      warmup_steps=config_lib.optional(int), warmup_epochs=config_lib.optional(float),
      end_lr_fraction=0.0, decay_epochs=(), decay_rate=0.1))
  config.update(overrides)
  return config


def reinitialised_state(config: ml_collections.ConfigDict, opt_state: optax.OptState, params: PyTree,
                        names: Collection[str]) -> optax.OptState:
  """`opt_state` with the entries of the top-level parameter groups `names` back at the optimiser's
  initial values (zero moments), the others kept.

  For parameters a method re-initialises during a run (XDC's heads each iteration, IICL's cluster
  heads at the switch to co-training): stale moments from before would steer their first updates. Counters shared by all
  parameters (Adam's step count, hence its bias correction) are kept.
  """
  initial = optimizer(config, optax.constant_schedule(0.0)).init(params)
  initial = {jax.tree_util.keystr(path): x for path, x in jax.tree_util.tree_leaves_with_path(initial)}

  def reset(path, x):
    if any(isinstance(k, jax.tree_util.DictKey) and k.key in names for k in path):
      return initial[jax.tree_util.keystr(path)]
    return x

  return jax.tree_util.tree_map_with_path(reset, opt_state)
