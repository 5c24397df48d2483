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
from typing import Any, overload

import ml_collections


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


def distributed_config() -> ml_collections.ConfigDict:
  """How `avssl.main` joins a multi-process run (see its docstring); empty means one process."""
  return ml_collections.ConfigDict(dict(
      coordinator_address='', num_processes=1, process_id=0, auto=False, cpu_collectives='gloo'))


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
