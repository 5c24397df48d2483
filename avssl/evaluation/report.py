"""One Markdown table from the `eval.json` of several runs, shaped like SeLaVi's Table 2.

    python -m avssl.evaluation.report SeLaVi=runs/demo/selavi SeLa=runs/demo/sela

Each run contributes a row per view it evaluated ('video + audio', 'video', 'audio', 'self-labels'),
named `<run name>: <view>`; values are mean ± std over heads.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from avssl.evaluation import metrics


VIEWS = ('video + audio', 'video', 'audio', 'self-labels')


def rows_of(name: str, results: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
  """`eval.json`'s flat `view/metric/stat` keys → `{'<name>: <view>': {metric: {mean, std}}}`, in
  the order of `VIEWS` (then any other view)."""
  views: dict[str, dict[str, dict[str, float]]] = {}
  for key, value in results.items():
    parts = key.rsplit('/', 2)
    if len(parts) == 3 and parts[2] in ('mean', 'std'):
      view, metric, stat = parts
      views.setdefault(view, {}).setdefault(metric, {})[stat] = value
  order = sorted(views, key=lambda v: (VIEWS.index(v) if v in VIEWS else len(VIEWS), v))
  return {f'{name}: {view}' if name else view: views[view] for view in order}


def table(runs: list[tuple[str, str]]) -> str:
  """The table of `(name, workdir)` runs, in the order given."""
  rows: dict[str, Any] = {}
  for name, workdir in runs:
    path = os.path.join(workdir, 'eval.json')
    if not os.path.exists(path):
      raise FileNotFoundError(f'{path} not found: train (or --mode=eval) {workdir} first')
    with open(path) as f:
      rows.update(rows_of(name, json.load(f)))
  return metrics.markdown_table(rows)


def main(argv: list[str]) -> None:
  if not argv or any('=' not in a for a in argv):
    raise SystemExit('usage: python -m avssl.evaluation.report NAME=WORKDIR [NAME=WORKDIR ...]')
  print(table([tuple(a.split('=', 1)) for a in argv]))


if __name__ == '__main__':
  main(sys.argv[1:])
