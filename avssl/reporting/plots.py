"""A run's training plots, drawn at `--mode=label` from what the run logged.

Four figures tell whether self-labelling worked: the loss curves (with the label updates marked); the
self-labels' NMI and ARI against the ground truth after each label update, when the records have labels;
the cluster sizes against the prior the transport was asked to follow (SeLaVi's Gaussian draws); and the
agreement between heads over time (mean pairwise NMI, SeLaVi §4.1), which says whether the decorrelated
heads found different clusterings. The scalars come from the run's TensorBoard event files (the loop
logs each label update's `label_update/*` summary), the sizes from `labels.csv` and the prior from the
checkpoint. Each figure is written as `<workdir>/plots/<name>.png` and as a TensorBoard image
`plots/<name>`; a figure whose data the run did not log is left out, and the log says why.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf
from absl import logging
from clu import metric_writers
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from avssl import files
from avssl.reporting import browser

Scalars = dict[str, dict[int, float]]
SIZE = (6.4, 4.0)
DPI = 100


def read_scalars(workdir: str) -> Scalars:
  """Every scalar in the event files of `workdir` as `{tag: {step: value}}`. A step logged twice (a run
  resumed from an earlier checkpoint) keeps its later value; a file cut short by a crash is read up to
  its last whole record."""
  scalars: Scalars = {}
  for path in files.glob(files.join(workdir, 'events.out.tfevents.*')):
    try:
      for record in tf.data.TFRecordDataset(path):
        event = tf.compat.v1.Event.FromString(record.numpy())
        for value in event.summary.value:
          if value.HasField('simple_value'):
            scalars.setdefault(value.tag, {})[event.step] = value.simple_value
          elif value.metadata.plugin_data.plugin_name == 'scalars':
            scalars.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    except tf.errors.DataLossError:
      logging.warning('%s ends in a partial record; read up to it', path)
  return scalars


def write(workdir: str, labels: browser.Labels, prior: np.ndarray | None, step: int) -> list[str]:
  """Draws the figures whose data exists; writes them to `<workdir>/plots/` and, at `step`, to
  TensorBoard. Returns the PNG paths."""
  scalars = read_scalars(workdir)
  figures: dict[str, Callable[[], Figure | None]] = {
      'loss': lambda: loss_figure(scalars),
      'label_quality': lambda: quality_figure(scalars),
      'cluster_sizes': lambda: sizes_figure(labels, prior),
      'head_agreement': lambda: agreement_figure(scalars),
  }
  files.makedirs(files.join(workdir, 'plots'))
  paths, images = [], {}
  for name, draw in figures.items():
    figure = draw()
    if figure is None:
      logging.info('Plot %s left out: the run logged none of its data', name)
      continue
    paths.append(files.join(workdir, 'plots', f'{name}.png'))
    images[f'plots/{name}'] = _save(figure, paths[-1])
  writer = metric_writers.SummaryWriter(workdir)
  writer.write_images(step, images)
  writer.close()
  logging.info('Wrote %d plots to %s', len(paths), files.join(workdir, 'plots'))
  return paths


def _save(figure: Figure, path: str) -> np.ndarray:
  """Writes the PNG (atomically) and returns the same pixels `[H, W, 3]` for TensorBoard."""
  canvas = FigureCanvasAgg(figure)
  canvas.draw()
  with files.atomic_open(path, 'wb') as f:
    figure.savefig(f, format='png', dpi=DPI)
  return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _figure(title: str, xlabel: str, ylabel: str):
  figure = Figure(figsize=SIZE, dpi=DPI, layout='constrained')
  axes = figure.add_subplot()
  axes.set(title=title, xlabel=xlabel, ylabel=ylabel)
  axes.grid(alpha=0.3)
  return figure, axes


def _series(scalars: Scalars, tag: str) -> tuple[np.ndarray, np.ndarray]:
  steps = sorted(scalars.get(tag, {}))
  return np.array(steps), np.array([scalars[tag][s] for s in steps])


def _update_steps(scalars: Scalars) -> list[int]:
  return sorted({s for tag, values in scalars.items() if tag.startswith('label_update/') for s in values})


def loss_figure(scalars: Scalars) -> Figure | None:
  """The training loss and its parts (`loss_<modality>`), label updates as dotted lines."""
  tags = [t for t in sorted(scalars) if t == 'loss' or t.startswith('loss_')]
  if not tags:
    return None
  figure, axes = _figure('Training loss', 'step', 'cross-entropy')
  for step in _update_steps(scalars):
    axes.axvline(step, color='0.8', linestyle=':', linewidth=1)
  for tag in tags:
    axes.plot(*_series(scalars, tag), label=tag, linewidth=2 if tag == 'loss' else 1)
  axes.legend()
  return figure


def _band(axes, scalars: Scalars, prefix: str, label: str) -> bool:
  """Plots `<prefix>/mean` ± `<prefix>/std` (over heads) against the step; False if not logged."""
  steps, mean = _series(scalars, f'{prefix}/mean')
  if not steps.size:
    return False
  _, std = _series(scalars, f'{prefix}/std')
  line, = axes.plot(steps, mean, marker='o', markersize=3, label=label)
  if std.size == mean.size:
    axes.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
  return True


def quality_figure(scalars: Scalars) -> Figure | None:
  """The self-labels' NMI and ARI against the ground truth after each label update (mean ± std over
  heads)."""
  figure, axes = _figure('Self-labels against the ground truth', 'step of the label update',
                         'score (mean ± std over heads)')
  drawn = [_band(axes, scalars, f'label_update/{name}', name.upper()) for name in ('nmi', 'ari')]
  if not any(drawn):
    return None
  axes.set_ylim(min(0.0, axes.get_ylim()[0]), 1.0)
  axes.legend()
  return figure


def agreement_figure(scalars: Scalars) -> Figure | None:
  """How alike the heads' self-labels are after each label update: mean pairwise NMI ± std."""
  figure, axes = _figure('Agreement between heads', 'step of the label update', 'pairwise NMI')
  if not _band(axes, scalars, 'label_update/head_agreement', 'mean over pairs of heads'):
    return None
  axes.set_ylim(0.0, 1.0)
  axes.legend()
  return figure


def sizes_figure(labels: browser.Labels, prior: np.ndarray | None) -> Figure | None:
  """Cluster sizes sorted from largest, per head, for the self-labels (what the transport assigned)
  and for the model's own predictions, against the prior's sorted target sizes where there is one."""
  groups = _size_groups(labels)
  if not groups:
    return None
  figure, axes = _figure('Cluster sizes', 'cluster rank (largest first)', 'videos')
  num_clusters = max([int(c.max()) + 1 for columns in groups.values() for c in columns]
                     + ([np.shape(prior)[1]] if prior is not None else []))
  if prior is not None:
    for h, target in enumerate(np.asarray(prior)):
      axes.plot(np.sort(target)[::-1], color='black', linestyle='--', linewidth=1,
                label='prior' if h == 0 else None)
  for (name, columns), color in zip(groups.items(), ('tab:blue', 'tab:orange')):
    for h, clusters in enumerate(columns):
      sizes = np.sort(np.bincount(clusters, minlength=num_clusters))[::-1]
      axes.plot(sizes, color=color, linewidth=1, alpha=0.8, label=name if h == 0 else None)
  axes.legend()
  return figure


def _size_groups(labels: browser.Labels) -> dict[str, list[np.ndarray]]:
  """The clusterings whose sizes are drawn: every self-label head, and every head of the first view."""
  views: dict[str, list[np.ndarray]] = {}
  for name, clusters in labels.clusterings.items():
    views.setdefault(name.rsplit('/', 1)[0], []).append(clusters)
  first = next(iter(views), None)
  return {v: views[v] for v in ('self-labels', first) if v in views}
