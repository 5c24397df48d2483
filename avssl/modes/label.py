"""`--mode=label`: the cluster labels of the latest checkpoint (`labels.csv`), the cluster browser
beside them, the clusters ranked by purity and the run's training plots.

`labels.csv` has one column scheme for every method that implements `methods.base.Clusters` (see
README.md, "labels.csv"): `video_id, source, label`, then for each view `v` of the method's
`cluster_probs` and each head `h` (from 0) `{v}/head{h}` (the argmax cluster) and
`{v}/head{h}/confidence` (its probability, 4 decimals); then, when the labelled videos are the training
split and the method keeps labels in its state (`SelfLabels`), each of those as `{name}/head{h}`
without a confidence (`self-labels/head{h}` for SeLaVi).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from avssl import files, passes
from avssl.data import datasets, on_device
from avssl.evaluation import factors, features
from avssl.loop import Run
from avssl.methods import base
from avssl.modes.setup import setup
from avssl.reporting import browser, plots, ranking
from avssl.train_state import TrainState


def label(config: ml_collections.ConfigDict, workdir: str) -> None:
  """`--mode=label`: `write_labels` of the latest checkpoint in `workdir` (refused without one)."""
  run = setup(config, workdir, trained_for='--mode=label')
  try:
    write_labels(run)
  finally:
    run.checkpointer.close()


def write_labels(run: Run) -> str:
  """`labels.csv` of `run.state` (see the module docstring) and beside it the cluster browser
  (`browser/index.html`, see `avssl/reporting/browser.py`), with ground truth the clusters ranked by
  purity (`clusters.md`, `clusters.csv`) and the run's training plots (`plots/*.png`, also as
  TensorBoard images). Returns the labels' path."""
  method, config = run.method, run.config
  _require_clusters(run)
  source, split = _label_source(run)
  videos = source.video_table(split)
  if videos is None:
    raise ValueError(f'--mode=label writes video ids from records; config.data.name='
                     f'{config.data.name!r} has none')
  save_probs = bool(config.label.get('save_probs'))
  out = predict(run, source.dataset_batches(augment=False), probs=save_probs)
  views = [name[:-len('/label')] for name in out if name.endswith('/label')]
  index = out['index']
  extra = {}
  if source is run.data and isinstance(method, base.SelfLabels):
    extra = {name: table[index] for name, table in method.self_labels(run.state).items()}
  path = files.join(run.workdir, config.label.file)
  if jax.process_index() != 0:
    return path
  header = ['video_id', 'source', 'label']
  columns = []
  for v in views:
    for h in range(out[f'{v}/label'].shape[1]):
      header += [f'{v}/head{h}', f'{v}/head{h}/confidence']
      columns += [(out[f'{v}/label'][:, h], '{:d}'), (out[f'{v}/confidence'][:, h], '{:.4f}')]
  for name, table in extra.items():
    for h in range(table.shape[1]):
      header.append(f'{name}/head{h}')
      columns.append((table[:, h], '{:d}'))
  with files.atomic_open(path, newline='') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    for row, i in enumerate(index):
      video = videos[i]
      writer.writerow([video['video_id'], video['source'], video['label_name']]
                      + [fmt.format(values[row].item()) for values, fmt in columns])
  logging.info('Wrote the labels of %d videos to %s', len(index), path)
  for view in views if save_probs else ():
    name = f'{os.path.splitext(path)[0]}_{view.replace(" + ", "_")}_probs.npy'
    with files.atomic_open(name, 'wb') as f:
      np.save(f, out[f'{view}/probs'])  # [N, heads, K], rows in the order of labels.csv.

  labels = browser.read_labels(path)
  if (labels.truth >= 0).any():
    class_names = dict(enumerate(labels.classes))
    ranking.write_cluster_ranking(
        {name: ranking.rank_clusters(labels.truth, clusters, class_names)
         for name, clusters in labels.clusterings.items()}, run.workdir)
  records_dir = config.label.get('dir') or config.data.dir
  browser.write(labels, records_dir, files.join(run.workdir, 'browser'),
                title=os.path.basename(run.workdir.rstrip('/')),
                factors=read_factors(config, labels.video_ids, records_dir))
  prior = method.cluster_prior(run.state) if isinstance(method, base.ClusterPrior) else None
  plots.write(run.workdir, labels, prior, int(run.state.step))
  return path


def read_factors(config: ml_collections.ConfigDict, video_ids: list[str],
                 records_dir: str) -> factors.Aligned | None:
  """The factors table `config.evaluation.factors.file` for `video_ids` (None without one), for the
  browser to name the factor that best explains each cluster (`avssl/evaluation/factors.py`)."""
  settings = config.evaluation.get('factors')  # A run of an earlier version has no such key.
  if not settings or not settings.file:
    return None
  table = factors.read(settings.file, bins=settings.bins, max_categories=settings.max_categories)
  return factors.align(table, video_ids, factors.record_ids(records_dir))


def predict(run: Run, batches: Iterator[datasets.Batch], *, probs: bool = False
            ) -> dict[str, np.ndarray]:
  """Each view's cluster `{view}/label` and its probability `{view}/confidence` (`[N, heads]`, and
  with `probs` the distributions `{view}/probs`, `[N, heads, K]`) of every clip of `batches`, with
  their `index` and class `label`, on the host in dataset-index order. `batches` may be any
  records' (new videos)."""
  _require_clusters(run)
  return cluster_predictions(run.method, run.state, run.config.data, run.mesh, batches, probs=probs)


def cluster_predictions(method: base.Method, state: TrainState, data: ml_collections.ConfigDict,
                        mesh: jax.sharding.Mesh, batches: Iterator[datasets.Batch], *,
                        probs: bool = False) -> dict[str, np.ndarray]:
  """`predict` for a `method` that implements `base.Clusters` (`data`: the run's data config, for
  the on-device normalisation), outside a `Run` (`--mode=eval`'s nuisance report)."""
  if not isinstance(method, base.Clusters):
    raise TypeError(f'{type(method).__name__} implements no methods.base.Clusters')

  @jax.jit
  def forward(state, batch):
    out = {'label': batch['label']}
    batch = on_device.normalize(batch, data)
    for view, p in method.cluster_probs(state, batch).items():
      p = jnp.swapaxes(p, 0, 1)  # [B, heads, K]
      out[f'{view}/label'] = jnp.argmax(p, axis=-1)
      out[f'{view}/confidence'] = jnp.max(p, axis=-1)
      if probs:
        out[f'{view}/probs'] = p
    return out

  return passes.ordered_pass(lambda batch: forward(state, batch), batches, mesh,
                             keys=(*method.inputs, 'label'), name='labels')


def _require_clusters(run: Run) -> base.Clusters:
  if not isinstance(run.method, base.Clusters):
    raise SystemExit(f'--mode=label: method {run.config.method!r} does not cluster (it implements no '
                     'methods.base.Clusters), so there are no cluster labels to write; use a '
                     'clustering method such as selavi, xdc or iicl')
  return run.method


def _label_source(run: Run) -> tuple[datasets.DataSource, str]:
  """The training data, or the record set `config.label.dir` (videos never seen in training)."""
  config = run.config
  if not config.label.get('dir'):
    return run.data, config.data.get('train_split', 'train')
  source = features.records(config, batch_size=config.batch_size, dir=config.label.dir,
                            train_split=config.label.split)
  return source, config.label.split
