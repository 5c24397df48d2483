"""Helpers shared by every file in `configs/`.

A config file is `configs/<method>_<dataset>.py` with `get_config(arg=None)`. The text after the colon
in `--config=configs/x.py:tiny,batch_size=16` reaches `get_config` as `arg`; `parse_arg` turns it into
typed values, so every config parses its arguments the same way and rejects unknown ones by name.

Durations are declared in pairs, `<name>_steps` and `<name>_epochs`, of which at most one is set
(big_vision's convention); `steps()` converts either into steps once the dataset size is known, so the
training loop only ever sees steps.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from collections.abc import Iterable, Iterator
from typing import Any, overload

import ml_collections

from avssl.errors import UserError


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses `"tiny,batch_size=16"` against `defaults`, keeping each default's type.

  A bare word sets a boolean to True. An unknown name or an unparsable value raises ValueError naming it.
  """
  parsed = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, sep, value = item.partition('=')
    key = key.strip()
    if key not in defaults:
      raise ValueError(f'config argument {key!r} is not known; known arguments: {sorted(defaults)}')
    default = defaults[key]
    if not sep:
      if not isinstance(default, bool):
        raise ValueError(f'config argument {key!r} needs a value ({key}=...)')
      parsed[key] = True
    else:
      parsed[key] = _cast(key, value.strip(), default)
  return parsed


def _cast(key: str, value: str, default: Any) -> Any:
  if isinstance(default, bool):
    if value.lower() not in ('true', 'false', '1', '0'):
      raise ValueError(f'config argument {key!r} must be true or false, got {value!r}')
    return value.lower() in ('true', '1')
  try:
    return type(default)(value) if default is not None else value
  except ValueError as e:
    raise ValueError(f'config argument {key!r}: cannot read {value!r} as {type(default).__name__}') from e


def optional(field_type: type) -> ml_collections.FieldReference:
  """An unset (None) config field that command-line overrides can still set to `field_type`."""
  return ml_collections.FieldReference(None, field_type=field_type)


@overload
def steps(config: ml_collections.ConfigDict, name: str, steps_per_epoch: int,
          default: int) -> int: ...


@overload
def steps(config: ml_collections.ConfigDict, name: str, steps_per_epoch: int,
          default: None = None) -> int | None: ...


def steps(config: ml_collections.ConfigDict, name: str, steps_per_epoch: int,
          default: int | None = None) -> int | None:
  """Resolves the duration `name` from `<name>_steps` or `<name>_epochs` into a step count."""
  n_steps = config.get(f'{name}_steps')
  n_epochs = config.get(f'{name}_epochs')
  if n_steps is not None and n_epochs is not None:
    raise ValueError(f'config sets both {name}_steps and {name}_epochs; set only one')
  if n_steps is not None:
    return int(n_steps)
  if n_epochs is not None:
    return int(round(float(n_epochs) * steps_per_epoch))
  return default


# Durations that must be positive when set (the others, `warmup`, `init`, ..., may be 0).
POSITIVE_DURATIONS = ('total', 'checkpoint_every', 'log_every', 'eval_every')
# Smallest usable values: K >= 2 clusters (one cluster labels every video alike: NMI 0), at least
# one head, one example per batch, one kept checkpoint.
AT_LEAST = {'batch_size': 1, 'keep_checkpoints': 1, 'selavi.num_clusters': 2, 'selavi.num_heads': 1,
            'selavi.num_groups': 1, 'selavi.num_label_updates': 1, 'xdc.num_clusters': 2,
            'iicl.num_clusters': 2, 'goca.num_prototypes': 2}


def validate(config: ml_collections.ConfigDict) -> None:
  """Refuses, naming the key, a config the run could only misuse: a duration that is not positive
  (zero steps would "train" nothing and evaluate the initialisation; `total_steps=-5` would save a
  checkpoint named -5), both units of one duration, and the values of `AT_LEAST` below their minimum."""
  if config.get('total_steps') is None and config.get('total_epochs') is None:
    raise UserError('config sets neither total_steps nor total_epochs; set one of them '
                    '(--config.total_steps=N or --config.total_epochs=E)')
  for key, value in _leaves(config):
    name, _, unit = key.rpartition('_')
    if unit not in ('steps', 'epochs') or value is None:
      continue
    other = f'{name}_{"epochs" if unit == "steps" else "steps"}'
    if _get(config, other) is not None:
      raise UserError(f'config sets both {name}_steps and {name}_epochs; set only one '
                      f'(on the command line, --config.{key}=... alone clears the other)')
    floor = 'positive' if name in POSITIVE_DURATIONS else 'non-negative'
    for v in value if isinstance(value, (tuple, list)) else (value,):  # `decay_epochs` lists points.
      if not isinstance(v, (int, float)) or v < 0 or (floor == 'positive' and v == 0):
        raise UserError(f'config.{key}={value!r}: must be a {floor} number of {unit}')
  for key, least in AT_LEAST.items():
    value = _get(config, key)
    if value is not None and value < least:
      raise UserError(f'config.{key}={value!r}: must be at least {least}')


def prefer_given_units(config: ml_collections.ConfigDict, keys: Iterable[str]) -> None:
  """A duration overridden (`keys`, e.g. from `--config.total_epochs=2`) in one unit clears the
  config's value in the other, so a `:tiny` run (in steps) can be switched to epochs and back."""
  given = set(keys)
  for key in given:
    name, _, unit = key.rpartition('_')
    if unit in ('steps', 'epochs'):
      other = f'{name}_{"epochs" if unit == "steps" else "steps"}'
      if other not in given and _get(config, other) is not None:
        _set(config, other, None)


def _leaves(config: ml_collections.ConfigDict, prefix: str = '') -> Iterator[tuple[str, Any]]:
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaves(value, f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}', value


def _get(config: ml_collections.ConfigDict, key: str) -> Any:
  """The value at the dotted `key`, or None when there is no such key."""
  for part in key.split('.'):
    if not isinstance(config, ml_collections.ConfigDict) or part not in config:
      return None
    config = config[part]
  return config


def _set(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
  *parents, last = key.split('.')
  for part in parents:
    config = config[part]
  config[last] = value


def distributed_config() -> ml_collections.ConfigDict:
  """How `avssl.main` joins a multi-process run (`avssl/distributed.py`): by default when a
  coordinator is given here or in `JAX_COORDINATOR_ADDRESS`, or on a multi-host Cloud TPU; `auto`
  lets JAX detect any cluster it knows (SLURM, Open MPI); `enabled=False` keeps one process always."""
  return ml_collections.ConfigDict(dict(
      coordinator_address='', num_processes=1, process_id=0, auto=False, enabled=True,
      cpu_collectives='gloo'))


def make_importable(path: str) -> None:
  """Lets the config file at `path` import its siblings (`from configs import common`) from any
  working directory: when its folder is a package, that folder's parent goes first on `sys.path`."""
  folder = pathlib.Path(path).expanduser().resolve().parent
  root = str(folder.parent)
  if (folder / '__init__.py').is_file() and root not in sys.path:
    sys.path.insert(0, root)


def load(spec: str) -> ml_collections.ConfigDict:
  """Loads `path/to/config.py[:args]` as `--config` would, for notebooks and tests."""
  path, _, arg = spec.partition(':')
  make_importable(path)
  module_spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
  if module_spec is None or module_spec.loader is None or not pathlib.Path(path).is_file():
    raise FileNotFoundError(f'no config file at {path}')
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)
