"""A thin wrapper over orbax's `CheckpointManager` for the whole `TrainState`.

Everything needed to continue exactly is one pytree (params, BN statistics, optimiser state, step, RNG,
and the method's state such as SeLaVi's self-label table), so one `StandardSave` writes it. Orbax writes
each step into a temporary folder and renames it when complete, so a crash mid-save never leaves a
half-written checkpoint that a restart would pick up; saves run in the background and `close()` waits.

A checkpoint holds two items: `state`, and `checksums`, the CRC-32 of every array's bytes (a small
JSON). A restore verifies them, so bit rot is caught instead of trained on. When the newest step cannot
be read (a truncated or missing chunk, a missing `manifest.ocdbt` or `_METADATA`, the empty folder an
interrupted copy leaves, a checksum that differs), one warning names it and why, and the next older
step is tried. Once an older step has been read, each damaged newer one is renamed aside to
`<step>.damaged` (nothing is deleted): orbax finds steps by folder name, so it would otherwise stay the
newest, every start would fall back again, and the retrained step could never be saved under its number.
Nothing is renamed when no step can be read: then the cause is more likely the config than the files.

A method that keeps a new array in its state (SeLaVi's Sinkhorn potentials, say) still resumes the runs
written before it: given the state a new run starts with, a restore takes each `method_state` entry
the checkpoint lacks from it, and says so.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from avssl import files
from avssl.errors import UserError
from avssl.train_state import TrainState

DAMAGED = '.damaged'  # The suffix of a step folder set aside (see the module docstring).


class ChecksumError(ValueError):
  """A restored array's bytes differ from those saved."""


def checkpoint_dir(workdir: str, directory: str = '') -> str:
  """Where a run's checkpoints are: `directory`, or by default `<workdir>/checkpoints`; a URL
  unchanged, a local path made absolute (orbax requires it)."""
  return files.local_or_url(directory or files.join(workdir, 'checkpoints'))


def has_checkpoint(directory: str) -> bool:
  """Whether `directory` holds a step folder (orbax names them by the step; unfinished saves carry
  a suffix), without creating the folder as opening a manager would."""
  return files.isdir(directory) and any(name.isdigit() for name in files.listdir(directory))


def checksums(tree: Any) -> dict[str, int]:
  """The CRC-32 of every leaf's bytes, by path (`params/conv/kernel`): a restore into a target and a
  raw restore (nested dicts) name the same leaf the same way."""
  return {_path_name(path): zlib.crc32(_host_bytes(x))
          for path, x in jax.tree_util.tree_leaves_with_path(tree)}


def _path_name(path: tuple[Any, ...]) -> str:
  return '/'.join(str(getattr(k, 'name', getattr(k, 'key', getattr(k, 'idx', k)))) for k in path)


def _host_bytes(x: Any) -> memoryview:
  """The bytes of the whole array `x`: one replica, or gathered when it is sharded over processes."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    x = (x.addressable_shards[0].data if x.is_fully_replicated
         else multihost_utils.process_allgather(x, tiled=True))
  return np.ascontiguousarray(np.asarray(x)).reshape(-1).view(np.uint8).data


def _reason(error: Exception) -> str:
  """The first line of an error, short enough for a one-line warning (orbax's run to pages)."""
  first = next((line for line in str(error).splitlines() if line.strip()), '')
  text = f'{type(error).__name__}: {first.strip()}'
  return text if len(text) <= 200 else text[:197] + '...'


class _Manager(ocp.CheckpointManager):
  """Orbax's manager without its own preemption polling: `save` would ask JAX's preemption sync
  manager about the checkpoint's step, which moves the counter `avssl.preemption` numbers its checks
  with, and a notice arriving after that would wait for a step no process reaches. The loop handles
  preemption itself (`avssl/loop.py`)."""

  def reached_preemption(self, step: int) -> bool:
    del step
    return False


class Checkpointer:
  """Saves every `every_steps` steps and at the end, keeps the newest `keep` (None: all),
  restores the latest.

  Checkpoints go to `directory`, or by default to `<workdir>/checkpoints`; a URL (`gs://...`)
  reaches orbax unchanged, a local path made absolute (orbax requires it).
  """

  def __init__(self, workdir: str, every_steps: int, keep: int | None, directory: str = ''):
    self.every_steps = max(int(every_steps), 1)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=True)
    # Handlers named up front, so that a step's metadata (which keys it holds) can be read before it.
    handlers = {'state': ocp.StandardCheckpointHandler(), 'checksums': ocp.JsonCheckpointHandler()}
    self._manager = _Manager(checkpoint_dir(workdir, directory), options=options,
                             item_handlers=handlers)

  @property
  def directory(self) -> str:
    """Where the checkpoints are (for messages that tell the user where to look)."""
    return str(self._manager.directory)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def maybe_save(self, state: TrainState, step: int, *, final: bool = False) -> bool:
    """Saves when `step` is on the save interval, or unconditionally when `final`."""
    if not final and step % self.every_steps:
      return False
    if step in self._manager.all_steps():
      return False
    return self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), checksums=ocp.args.JsonSave(checksums(state))), force=True)

  def restore(self, target: TrainState, state_sharding: Any, step: int | None = None, *,
              initial: Callable[[], TrainState] | None = None) -> TrainState:
    """Restores `step` directly into `state_sharding`, without a host copy; by default the newest
    step that can be read (see the module docstring). With `initial`, the state a new run starts
    with, each `method_state` entry that the checkpoint lacks is taken from `initial()`."""
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), target, state_sharding)
    read = lambda s: self._read_into(s, abstract, initial)
    return read(step) if step is not None else self._newest_readable(read)

  def restore_raw(self, step: int | None = None) -> Any:
    """The checkpoint of `step` (default: the newest that can be read) as saved, as host arrays, with
    no target.

    For initialising a different run from this one's weights (SeLaVi's unsupervised finetuning).
    """
    if step is not None:
      return self._read(step, None)
    return self._newest_readable(lambda s: self._read(s, None))

  def _read_into(self, step: int, abstract: TrainState,
                 initial: Callable[[], TrainState] | None) -> TrainState:
    """`_read` into `abstract`, the method-state entries that step lacks taken from `initial()`."""
    missing = self._missing_method_state(step, abstract) if initial is not None else []
    if not missing or initial is None:
      return self._read(step, abstract)
    kept = {k: v for k, v in abstract.method_state.items() if k not in missing}
    state = self._read(step, abstract.replace(method_state=kept))
    logging.warning('Checkpoint %d has no %s in its method state (it was written before the method '
                    'kept it): starting from the initial value', step, ', '.join(missing))
    fresh = initial().method_state
    return state.replace(method_state={**state.method_state, **{k: fresh[k] for k in missing}})

  def _missing_method_state(self, step: int, abstract: TrainState) -> list[str]:
    """The keys of `abstract`'s method state (a dict) that step `step` does not hold."""
    if not isinstance(abstract.method_state, dict) or not abstract.method_state:
      return []
    saved = self._manager.item_metadata(step)['state']
    held = saved['method_state'] if 'method_state' in saved.keys() else None
    return sorted(set(abstract.method_state) - set(held or ()))

  def _read(self, step: int, abstract: Any) -> Any:
    """The state saved as `step`, its checksums verified; raises when it cannot be read or differs."""
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), checksums=ocp.args.JsonRestore()))
    saved, found = restored.checksums, checksums(restored.state)
    bad = sorted(k for k in saved.keys() | found.keys() if saved.get(k) != found.get(k))
    if bad:
      raise ChecksumError(f'the checksums of {len(bad)} of {len(saved)} arrays differ from those '
                          f'saved ({", ".join(bad[:3])}{", ..." if len(bad) > 3 else ""})')
    return restored.state

  def _newest_readable(self, read: Callable[[int], Any]) -> Any:
    """`read` of the newest step that can be read; the damaged newer ones are set aside."""
    steps = sorted(self._manager.all_steps(), reverse=True)
    if not steps:
      raise UserError(f'no checkpoint in {self.directory}: train first (--mode=train)')
    damaged: list[tuple[int, str]] = []
    first_error: Exception | None = None
    for step in steps:
      try:
        state = read(step)
      except Exception as e:  # pylint: disable=broad-except  # Orbax and TensorStore raise many types.
        damaged.append((step, _reason(e)))
        first_error = first_error or e
        continue
      self._set_aside(damaged, step)
      return state
    raise UserError(
        f'no checkpoint in {self.directory} can be read ('
        + '; '.join(f'step {s}: {r}' for s, r in damaged)
        + '): copy intact ones back, or check that the config is the one that wrote them') from first_error

  def _set_aside(self, damaged: list[tuple[int, str]], used: int) -> None:
    """Renames each damaged step folder to `<step>.damaged` (the module docstring says why), with
    one warning line each naming it and why it cannot be read."""
    for step, reason in damaged:
      path = files.join(self.directory, str(step))
      aside, n = path + DAMAGED, 0
      while files.exists(aside):
        n += 1
        aside = f'{path}{DAMAGED}.{n}'
      logging.warning('Checkpoint %s cannot be read (%s); set aside as %s, using step %d instead',
                      path, reason, aside, used)
      if jax.process_index() == 0:
        files.rename(path, aside)
    if damaged:
      if jax.process_count() > 1:
        multihost_utils.sync_global_devices('avssl checkpoints set aside')
      self._manager.reload()

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
