"""A thin wrapper over orbax's `CheckpointManager` for the whole `TrainState`.

Everything needed to continue exactly is one pytree (params, BN statistics, optimiser state, step, RNG,
and the method's state such as SeLaVi's self-label table), so one `StandardSave` writes it. Orbax writes
each step into a temporary folder and renames it when complete, so a crash mid-save never leaves a
half-written checkpoint that a restart would pick up; saves run in the background and `close()` waits.
"""

from __future__ import annotations

from typing import Any

import jax
import orbax.checkpoint as ocp

from avssl import files
from avssl.train_state import TrainState


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
    self._manager = ocp.CheckpointManager(
        files.local_or_url(directory or files.join(workdir, 'checkpoints')), options=options)

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
    return self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def restore(self, target: TrainState, state_sharding: Any, step: int | None = None) -> TrainState:
    """Restores `step` (default: the latest) directly into `state_sharding`, without a host copy."""
    step = self.latest_step() if step is None else step
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), target, state_sharding)
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def restore_raw(self, step: int | None = None) -> Any:
    """The checkpoint of `step` (default: the latest) as saved, as host arrays, with no target.

    For initialising a different run from this one's weights (SeLaVi's unsupervised finetuning).
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'no checkpoint in {self._manager.directory}')
    return self._manager.restore(step, args=ocp.args.StandardRestore())

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
