"""What a long run tells its user while it trains: throughput, where the time goes, when it will end.

clu's `ReportProgress` estimates the end from the training steps alone, but a SeLaVi run on VGG-Sound
spends a large part of its time in ~200 label updates, each a full pass over the dataset, so its ETA
was wrong by hours. `Progress` times the sections of the loop (data, step, label update, evaluation,
checkpoint), reports throughput as clips/s and clips/s/device, and budgets the remaining dataset passes
into the ETA from the method's schedule (`Method.data_pass_steps`) and the passes' measured duration.
`Profiler` traces a few steps into the workdir on process 0 (`config.profile_start_step`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence

import jax
from absl import logging

from avssl import files

SECTIONS = ('data', 'step', 'label_update', 'evaluation', 'checkpoint')


class Progress:
  """Section timers and throughput of one training process, reported at log steps."""

  def __init__(self, *, start_step: int, total_steps: int, global_batch: int,
               pass_steps: Sequence[int] = ()):
    self._total, self._batch = total_steps, global_batch
    self._pass_steps = sorted(pass_steps)
    self._devices = jax.device_count()
    self._seconds = dict.fromkeys(SECTIONS, 0.0)  # Since the last report.
    self._train_seconds = 0.0  # data + step time of every step this process ran.
    self._train_steps = 0
    self._pass_seconds: list[float] = []
    self._since_report = time.monotonic()
    self._steps_at_report = start_step

  @contextlib.contextmanager
  def timed(self, section: str) -> Iterator[None]:
    """Adds the block's wall time to `section`."""
    start = time.monotonic()
    try:
      yield
    finally:
      elapsed = time.monotonic() - start
      self._seconds[section] += elapsed
      if section in ('data', 'step'):
        self._train_seconds += elapsed

  def stepped(self) -> None:
    self._train_steps += 1

  def passed(self, seconds: float) -> None:
    """One dataset pass (a label update) took `seconds`."""
    self._pass_seconds.append(seconds)

  def remaining_passes(self, step: int) -> int:
    """Scheduled dataset passes before steps `step`..total-1."""
    return sum(1 for s in self._pass_steps if step <= s < self._total)

  def eta_seconds(self, step: int) -> float:
    """Seconds to the end: the remaining steps at this process's training rate, plus the remaining
    dataset passes at the mean duration of those measured (none measured yet: not counted)."""
    per_step = self._train_seconds / self._train_steps if self._train_steps else 0.0
    per_pass = sum(self._pass_seconds) / len(self._pass_seconds) if self._pass_seconds else 0.0
    return (self._total - step) * per_step + self.remaining_passes(step) * per_pass

  def report(self, step: int) -> dict[str, float]:
    """Scalars for the steps since the last report, and a progress line on process 0."""
    now = time.monotonic()
    wall = max(now - self._since_report, 1e-9)
    steps = step - self._steps_at_report
    clips = steps * self._batch / wall
    scalars = {'steps_per_second': steps / wall, 'clips_per_second': clips,
               'clips_per_second_per_device': clips / self._devices,
               'eta_hours': self.eta_seconds(step) / 3600,
               **{f'time_share/{k}': v / wall for k, v in self._seconds.items()}}
    if jax.process_index() == 0:
      shares = ', '.join(f'{k} {v / wall:.0%}' for k, v in self._seconds.items() if v)
      passes = self.remaining_passes(step)
      logging.info('step %d/%d: %.2f steps/s, %.1f clips/s (%.1f per device); time: %s; ETA %s%s',
                   step, self._total, steps / wall, clips, clips / self._devices, shares,
                   duration(self.eta_seconds(step)),
                   f' with {passes} dataset passes to go' if passes else '')
    self._seconds = dict.fromkeys(SECTIONS, 0.0)
    self._since_report, self._steps_at_report = now, step
    return scalars


class Profiler:
  """Traces steps `start` .. `start + num_steps - 1` into `<workdir>/profile` on process 0 (for
  TensorBoard's profile plugin or Perfetto); `start < 0` traces nothing."""

  def __init__(self, workdir: str, start: int, num_steps: int):
    self._dir = files.join(workdir, 'profile')
    self._start, self._stop = start, start + max(num_steps, 1)
    self._active = False
    self._enabled = start >= 0 and jax.process_index() == 0

  def before(self, step: int) -> None:
    if self._enabled and step == self._start:
      logging.info('Profiling steps %d-%d into %s', self._start, self._stop - 1, self._dir)
      jax.profiler.start_trace(self._dir)
      self._active = True

  def after(self, done: int, metrics: dict[str, jax.Array]) -> None:
    """`done` steps are dispatched; the trace stops once the last traced step has run."""
    if self._active and done >= self._stop:
      jax.block_until_ready(metrics)
      jax.profiler.stop_trace()
      self._active = False

  def close(self) -> None:
    if self._active:
      jax.profiler.stop_trace()
      self._active = False


def duration(seconds: float) -> str:
  """`1.5 h`, `12.0 min` or `40 s`: how the run's and its passes' progress lines write a time."""
  if seconds >= 3600:
    return f'{seconds / 3600:.1f} h'
  return f'{seconds / 60:.1f} min' if seconds >= 60 else f'{seconds:.0f} s'
