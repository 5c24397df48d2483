"""Clusters ranked by purity against the ground truth (XDC §5, Table 6): `clusters.md` and
`clusters.csv`, written by `--mode=label` beside `labels.csv` when the videos have labels."""

from __future__ import annotations

import csv
import os
from typing import Any

import numpy as np

from avssl import files


def rank_clusters(truth: np.ndarray, clusters: np.ndarray, class_names: dict[int, str],
                  top: int = 3) -> list[dict[str, Any]]:
  """Clusters ranked by purity w.r.t. the ground truth (XDC §5): per cluster with labelled clips, its
  size, labelled count, purity (share of its majority class) and `top` most frequent classes."""
  known = truth >= 0
  rows: list[dict[str, Any]] = []
  for cluster in np.unique(clusters):
    members = clusters == cluster
    classes, counts = np.unique(truth[members & known], return_counts=True)
    if not len(classes):
      continue
    order = np.argsort(-counts, kind='stable')
    labelled = int(counts.sum())
    rows.append({'cluster': int(cluster), 'size': int(members.sum()), 'labelled': labelled,
                 'purity': float(counts[order[0]] / labelled),
                 'classes': [(class_names.get(int(classes[i]), str(classes[i])),
                              float(counts[i] / labelled)) for i in order[:top]]})
  rows.sort(key=lambda r: (-r['purity'], -r['size'], r['cluster']))
  return rows


def write_cluster_ranking(ranked: dict[str, list[dict[str, Any]]], workdir: str) -> None:
  """`clusters.md` (a table per clustering) and `clusters.csv` (one row per cluster) in `workdir`."""
  lines = []
  for name, rows in ranked.items():
    lines += [f'## {name}: clusters ranked by purity', '',
              '| Rank | Cluster | Size | Purity | Classes |', '|---:|---:|---:|---:|:---|']
    for rank, r in enumerate(rows, start=1):
      classes = ', '.join(f'{c} ({100 * p:.0f}%)' for c, p in r['classes'])
      lines.append(f"| {rank} | {r['cluster']} | {r['size']} | {100 * r['purity']:.1f} | {classes} |")
    lines.append('')
  with files.atomic_open(os.path.join(workdir, 'clusters.md')) as f:
    f.write('\n'.join(lines))
  with files.atomic_open(os.path.join(workdir, 'clusters.csv'), newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['clustering', 'rank', 'cluster', 'size', 'labelled', 'purity', 'majority_class'])
    for name, rows in ranked.items():
      for rank, r in enumerate(rows, start=1):
        writer.writerow([name, rank, r['cluster'], r['size'], r['labelled'], f"{r['purity']:.4f}",
                         r['classes'][0][0]])
