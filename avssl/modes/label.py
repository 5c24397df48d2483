"""`--mode=label`: the cluster labels of the latest checkpoint (`labels.csv`), the cluster browser
beside them and the run's training plots."""

from __future__ import annotations

import os

import jax
import ml_collections

from avssl.loop import Run
from avssl.modes.setup import setup
from avssl.reporting import browser, plots


def label(config: ml_collections.ConfigDict, workdir: str) -> None:
  """`--mode=label`: `write_labels` of the latest checkpoint in `workdir`."""
  run = setup(config, workdir)
  try:
    write_labels(run)
  finally:
    run.checkpointer.close()


def write_labels(run: Run) -> str:
  """The method's cluster labels of `run.state` (`labels.csv`, see the method's `export_labels`), and
  beside them the cluster browser (`browser/index.html`, see `avssl/evaluation/browser.py`) and the
  run's training plots (`plots/*.png`, also as TensorBoard images). Returns the labels' path."""
  export = getattr(run.method, 'export_labels', None)
  if export is None:
    raise ValueError(f'method {run.config.method!r} produces no cluster labels; --mode=label needs a '
                     'clustering method such as selavi')
  path = export(run.state, run.data, run.mesh, run.workdir)
  if jax.process_index() == 0:
    labels = browser.read_labels(path)
    browser.write(labels, run.config.label.get('dir') or run.config.data.dir,
                  os.path.join(run.workdir, 'browser'),
                  title=os.path.basename(os.path.abspath(run.workdir)))
    plots.write(run.workdir, labels, run.method.cluster_prior(run.state), int(run.state.step))
  return path
