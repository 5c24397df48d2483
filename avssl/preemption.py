"""Preemption notices: a SIGTERM is the ~30 s warning of Cloud TPU pods and spot VMs before the kill.

On one process, `watch()` turns SIGTERM into a flag. Under `jax.distributed`, JAX's preemption
service has already installed its own handler and propagates a notice on any host to all of them;
`multihost_utils.reached_preemption_sync_point(step)` then answers True on every process at the same
step, so all save the same checkpoint. The training loop asks `at_step(step)` before every step;
passes over the data (label updates, evaluations) ask `check()` per batch and are abandoned with
`Preempted` on one process (under `jax.distributed` a pass in progress completes, because the sync
protocol agrees on training steps only, and the loop stops at the next step).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import jax
from absl import logging
from jax.experimental import multihost_utils

_notice = threading.Event()


class Preempted(Exception):
  """A preemption notice stopped the run: raised inside a data pass (`step` None: nothing saved yet)
  and by the loop once the state of `step` is saved; `main` exits 0 on it."""

  def __init__(self, step: int | None = None):
    super().__init__(f'preempted at step {step}; rerun the same command to resume'
                     if step is not None else 'a preemption notice stopped a pass over the data')
    self.step = step


def _multiprocess() -> bool:
  return jax.process_count() > 1


@contextlib.contextmanager
def watch() -> Iterator[None]:
  """While inside, a SIGTERM sets the notice instead of ending the process (one process only:
  under `jax.distributed` JAX's preemption service owns the signal). The previous handler is put
  back on exit, so a second SIGTERM after the run ends the process as usual."""
  if _multiprocess() or threading.current_thread() is not threading.main_thread():
    yield
    return
  _notice.clear()
  previous = signal.signal(signal.SIGTERM, _on_sigterm)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)
    _notice.clear()


def _on_sigterm(signum, frame) -> None:
  del signum, frame
  if not _notice.is_set():
    logging.warning('SIGTERM: a preemption notice; saving at the next step boundary')
  _notice.set()


def at_step(step: int) -> bool:
  """Whether to save and stop before running `step`; called by every process at every step."""
  if _multiprocess():
    return multihost_utils.reached_preemption_sync_point(step)
  return _notice.is_set()


def check() -> None:
  """Raises `Preempted` inside a data pass when a notice has arrived (one process; see above).

  The pass's partial result is dropped; the loop saves the state as it was before the pass, and the
  resume redoes the pass exactly.
  """
  if not _multiprocess() and _notice.is_set():
    raise Preempted()
