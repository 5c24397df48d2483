"""`--mode=train`: trains from the latest checkpoint in the workdir (or from scratch) to the configured
end, evaluating with the method's own evaluation on the way and at the end (`eval.json`, `eval.md`). Each
start writes `run.json` into the workdir (`setup.describe`): the run then opens from its workdir alone."""

from __future__ import annotations

import sys

import jax
import ml_collections
from absl import logging
from clu import metric_writers

from avssl import loop, preemption
from avssl.modes import evaluate as evaluate_mode
from avssl.modes.setup import describe, setup
from avssl.train_state import TrainState


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains from the latest checkpoint in `workdir` (or from scratch) to the configured end.

  A SIGTERM (a preemption notice) saves the current step and raises `preemption.Preempted`; the same
  command resumes (also when the notice interrupted the final evaluation: the checkpoint of the last
  step is saved by then, and the rerun only evaluates).
  """
  with preemption.watch():
    return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  run = setup(config, workdir)
  describe(run, sys.argv)
  writer = make_writer(workdir)
  start = int(run.state.step)
  logging.info('Training %s from step %d to %d (%d steps per epoch) on %d devices in %d processes',
               config.method, start, run.total_steps, run.steps_per_epoch, jax.device_count(),
               jax.process_count())
  try:
    state = loop.train(run, writer, lambda s, step: evaluate_and_write(run, s, writer, step))
    try:
      evaluate_and_write(run, state, writer, run.total_steps)
    except preemption.Preempted as e:
      raise preemption.Preempted(run.total_steps) from e
  finally:
    run.checkpointer.close()
    writer.close()
  return state


def make_writer(workdir: str) -> metric_writers.MetricWriter:
  """Logs on every process; TensorBoard events in `workdir` on process 0 only. The workdir reaches
  TensorFlow's summary writer as given, so a URL (`gs://...`, `ram://...`) is written there (clu's
  default writer turns it into an etils path first, which knows `gs://` but not every scheme)."""
  writers: list[metric_writers.MetricWriter] = [metric_writers.LoggingWriter()]
  if jax.process_index() == 0:
    writers.append(metric_writers.SummaryWriter(workdir))
  return metric_writers.AsyncMultiWriter(writers)


def evaluate_and_write(run: loop.Run, state: TrainState, writer: metric_writers.MetricWriter,
                        step: int) -> dict[str, float]:
  """The method's evaluation during and at the end of training: logged, and written to `eval.json`
  (and the method's table to `eval.md`)."""
  results = run.method.evaluate(state, run.data.eval_batches())
  if not results:
    return results
  writer.write_scalars(step, results)
  table = run.method.report(results)
  evaluate_mode.write_method_results(run.workdir, step, results, table)
  if table:
    logging.info('Evaluation at step %d:\n%s', step, table)
  return results
