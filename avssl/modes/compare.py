r"""Several runs side by side, as one Markdown table: the single command that compares workdirs.

    python -m avssl.modes.compare SeLaVi=runs/demo/selavi SeLa=runs/demo/sela
    python -m avssl.modes.compare --layout=xdc --metric=nmi SDC=runs/demo/sdc XDC=runs/demo/xdc
    python -m avssl.modes.compare --layout=goca SView=runs/sview Avg=runs/avg Sep=runs/sep GOCA=runs/goca

Layouts:
- `clustering` (default): each run's `eval.json` (its method evaluation) as SeLaVi's Table 2, a row
  `<run name>: <view>` per view evaluated ('video + audio', 'video', 'audio', 'self-labels'); values
  are mean ± std over heads.
- `xdc`: XDC's per-iteration clustering quality (Table 1 of the XDC paper), a column per run.
- `goca`: GOCA's Table 1 (retrieval R@k per stream and both averaged) and Table 6 (k-means cluster
  quality), from each run's `eval/retrieval.json` and `eval/kmeans.json` (`--mode=eval`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from avssl import files
from avssl.evaluation import metrics, tables
from avssl.methods import goca, xdc

LAYOUTS = ('clustering', 'xdc', 'goca')


def read_json(workdir: str, name: str) -> dict[str, Any]:
  """`workdir/name`, or an error saying which mode writes it."""
  path = files.join(workdir, name)
  if not files.exists(path):
    raise SystemExit(f'{path} not found: train{" (or --mode=eval)" if name == "eval.json" else ""}'
                     f'{"" if name == "eval.json" else " and run --mode=eval on"} {workdir} first')
  with files.open(path) as f:
    return json.load(f)


def clustering_table(runs: dict[str, dict[str, Any]]) -> str:
  """SeLaVi's Table 2 layout of `{run name: eval.json}`, in the order given."""
  rows: dict[str, Any] = {}
  for name, results in runs.items():
    rows.update(tables.rows_of(name, results))
  return metrics.markdown_table(rows)


def table(layout: str, runs: dict[str, str], metric: str = 'nmi') -> str:
  """The `layout` table of `{run name: workdir}`."""
  if layout == 'clustering':
    return clustering_table({name: read_json(w, 'eval.json') for name, w in runs.items()})
  if layout == 'xdc':
    if metric not in xdc.QUALITY:
      raise SystemExit(f'--metric={metric!r}: use one of {", ".join(xdc.QUALITY)}')
    return xdc.comparison_table({name: read_json(w, 'eval.json') for name, w in runs.items()}, metric)
  return goca.comparison_tables({
      name: {e: read_json(w, files.join('eval', f'{e}.json')) for e in ('retrieval', 'kmeans')}
      for name, w in runs.items()})


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(prog='python -m avssl.modes.compare',
                                   description=__doc__.split('\n')[0])
  parser.add_argument('--layout', choices=LAYOUTS, default='clustering')
  parser.add_argument('--metric', default='nmi', help='the xdc layout\'s metric')
  parser.add_argument('runs', nargs='+', metavar='NAME=WORKDIR')
  args = parser.parse_args(argv)
  runs = dict(arg.partition('=')[::2] for arg in args.runs)
  if not all(runs.values()) or len(runs) != len(args.runs):
    parser.error('each run is NAME=WORKDIR, with distinct names')
  print(table(args.layout, runs, args.metric))


if __name__ == '__main__':
  main(sys.argv[1:])
