"""Markdown tables laid out like the papers' tables, each under a header naming what produced it.

Every table the evaluation suite writes says which config and checkpoint step it measured and which
protocol switches were in force (views, pooling, centring, k-means runs), because the papers' numbers
differ mostly in exactly those. Layouts:

- clustering (SeLaVi Tables 2, 3 and 5; GOCA Table 6 and IICL Table II by choosing the metrics): one
  row per method or view, one column per metric, mean ± std where there are several heads or runs;
- retrieval (SeLaVi Table 4, GOCA Table 1): one row per method or modality, R@k columns;
- cross-modal retrieval (IICL Table III): mAP video→audio and audio→video;
- robustness (SeLaVi Fig. 2, as a table): one row per down-sampling factor, NMI per view;
- linear probe: top-1 accuracy per dataset, mean ± std over folds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from avssl.evaluation import metrics

#: GOCA Table 6 and IICL Table II: majority-mapped accuracy, NMI and the two readings of "F".
CLUSTER_QUALITY = ('purity', 'nmi', 'macro_f1', 'fmi')
#: SeLaVi Tables 2, 3 and 5.
SELAVI = ('nmi', 'ari', 'accuracy', 'entropy', 'max_purity')


def header(title: str, meta: Mapping[str, Any]) -> str:
  """`### title` and one line per item of `meta` (config, step, protocol switches)."""
  lines = [f'### {title}', '']
  lines += [f'- {key}: {_text(value)}' for key, value in meta.items()]
  return '\n'.join(lines) + '\n'


def _text(value: Any) -> str:
  if isinstance(value, (list, tuple)):
    return ', '.join(str(v) for v in value)
  return str(value)


def _percent(value: Any) -> str:
  if isinstance(value, Mapping):
    return f"{100 * value['mean']:.1f} ± {100 * value['std']:.1f}"
  return f'{100 * value:.1f}'


def _grid(first: str, columns: Sequence[str], rows: Mapping[str, Sequence[str]]) -> str:
  lines = [f'| {first} | ' + ' | '.join(columns) + ' |', '|:---|' + '---:|' * len(columns)]
  lines += [f'| {name} | ' + ' | '.join(cells) + ' |' for name, cells in rows.items()]
  return '\n'.join(lines)


def clustering(rows: Mapping[str, Mapping[str, Any]], columns: Sequence[str] = SELAVI) -> str:
  """Rows of `metrics.cluster_metrics` / `per_head` / `baselines.kmeans_quality` outputs."""
  return metrics.markdown_table(rows, columns)


def retrieval(rows: Mapping[str, Mapping[str, float]], ks: Sequence[int]) -> str:
  """Rows of `{'R@k': value}`, in percent."""
  return _grid('Method', [f'R@{k}' for k in ks],
               {name: [_percent(row[f'R@{k}']) for k in ks] for name, row in rows.items()})


def cross_modal(rows: Mapping[str, Mapping[str, float]]) -> str:
  """Rows of `{'video→audio': mAP, 'audio→video': mAP}`, in percent."""
  directions = ('video→audio', 'audio→video')
  return _grid('Method', [f'mAP {d}' for d in directions],
               {name: [_percent(row[d]) for d in directions] for name, row in rows.items()})


def robustness(curve: Mapping[str, Any]) -> str:
  """`robustness.curve`'s output: a row per factor, NMI (%) per view and baseline."""
  views = [k for k in curve if k not in ('factors', 'protocol')]
  rows = {f'{factor}×': [_percent(curve[v][i]) for v in views]
          for i, factor in enumerate(curve['factors'])}
  return _grid('Down-sampling', [f'NMI {v}' for v in views], rows)


def probe(rows: Mapping[str, Mapping[str, Any]]) -> str:
  """Rows of `{'accuracy': value or {mean, std}, 'clip_accuracy': ...}` (video and clip level)."""
  return _grid('Encoder / dataset', ['Top-1 (video)', 'Top-1 (clip)'],
               {name: [_percent(row['accuracy']), _percent(row['clip_accuracy'])]
                for name, row in rows.items()})


VIEWS = ('video + audio', 'video', 'audio', 'self-labels')
#: The statistics a clustering result carries per metric: over heads (SeLaVi) or runs (k-means).
STATS = ('mean', 'std')


def clustering_key(view: str, metric: str, stat: str) -> str:
  """The flat result key (`eval.json`) of one clustering statistic, e.g. `video + audio/nmi/mean`:
  written by the methods' `evaluate`, read by `rows_of`, the k-means and robustness evaluations."""
  return f'{view}/{metric}/{stat}'


def split_clustering_key(key: str) -> tuple[str, str, str] | None:
  """`(view, metric, stat)` of a `clustering_key` whose stat is one of `STATS`, else None."""
  parts = key.rsplit('/', 2)
  if len(parts) == 3 and parts[2] in STATS:
    return parts[0], parts[1], parts[2]
  return None


def rows_of(name: str, results: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
  """`eval.json`'s flat `clustering_key`s → `{'<name>: <view>': {metric: {mean, std}}}`, in
  the order of `VIEWS` (then any other view)."""
  views: dict[str, dict[str, dict[str, float]]] = {}
  for key, value in results.items():
    parts = split_clustering_key(key)
    if parts is not None:
      view, metric, stat = parts
      views.setdefault(view, {}).setdefault(metric, {})[stat] = value
  order = sorted(views, key=lambda v: (VIEWS.index(v) if v in VIEWS else len(VIEWS), v))
  return {f'{name}: {view}' if name else view: views[view] for view in order}
