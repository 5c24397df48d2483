"""The nuisance report: how much of each clustering per-video factors other than the classes explain.

A clustering can score well and still group the wrong thing: clips by camera, recording day or
uploader rather than by event. Given a table of such factors per video, every clustering is scored
against every factor with the NMI it gets against the classes (arithmetic normalisation, SeLaVi §4
"Evaluation"; `metrics.nmi`), and each cluster gets the factor value that best explains it.

The table is a CSV with a header (a local path or a URL): a `video_id` column naming videos as the
records do (their `{split}.csv`; for `make_records --dataset=folder` the path under the root without
extension, `train/c03_v1_a2/000123`), then any number of factor columns. Cells are text with the
surrounding spaces removed; an empty cell is unknown for that factor: the video is left out of that
factor's scores and counted. Each column becomes categories:

- a column whose known cells all read as finite numbers, or all as ISO dates (`2024-05-01`,
  `2024-05-01T10:30`), with more than `max_categories` (20) distinct values is cut into `bins` (10)
  quantile bins of its values over the whole table. The edges are values of the column, so a bin is
  named in the table's own notation, `[3.5, 7)` (the last one closed); repeated values can leave
  fewer bins;
- every other column is categorical: each distinct text is a value (`1` and `1.0` are two).

Aligning the table with the scored videos drops nothing silently: rows whose id no split of the
records has (`unknown`), rows of the records' other splits (`elsewhere`) and scored videos without a
row (`missing`) are counted, and the first few ids named, in the report and the log.

Per cluster (`majority`), a factor explains it as far as its majority value v is over-represented:
with p the share of the cluster's members (those known for the factor) that have v, and q the share
of v among all scored videos known for the factor, the chance-corrected purity κ = (p − q) / (1 − q)
is about 0 for a random subset of the videos and 1 for a cluster entirely of v. Raw purity p would
favour factors with few or dominant values (any cluster is at least half one value of a balanced
binary factor); κ puts a camera, a day and the class on one scale. The classes are measured the same
way, so a cluster whose best factor has a higher κ than its class is one to look at.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from absl import logging

from avssl import files
from avssl.data import pipeline
from avssl.errors import UserError
from avssl.evaluation import metrics

ID_COLUMN = 'video_id'
#: How many ids of each kind (unknown, missing) the report names.
EXAMPLES = 5
#: The column of the classes in the report's table, before the factors.
CLASSES = 'classes'


@dataclasses.dataclass(frozen=True)
class Factor:
  """One column as categories: `codes` index `values` (-1: unknown), one per row or video."""
  name: str
  values: tuple[str, ...]
  codes: np.ndarray
  binned: bool

  def describe(self) -> str:
    kind = f'{len(self.values)} quantile bins' if self.binned else f'{len(self.values)} values'
    return f'{kind}, known for {int((self.codes >= 0).sum())} of {len(self.codes)} videos'


@dataclasses.dataclass(frozen=True)
class Table:
  """A factors CSV as read: its ids and each factor's codes, row by row."""
  path: str
  video_ids: tuple[str, ...]
  factors: tuple[Factor, ...]


@dataclasses.dataclass(frozen=True)
class Aligned:
  """The factors of the scored videos (codes in their order) and what did not match."""
  path: str
  factors: tuple[Factor, ...]
  missing: tuple[str, ...]  # Scored videos without a row, in their order.
  unknown: tuple[str, ...]  # Rows in no split of the records, in the table's order.
  elsewhere: int  # Rows of videos the records have in other splits.

  def notes(self) -> dict[str, Any]:
    """What the report's header and JSON say about the table."""
    return {'factors table': self.path,
            'factors': '; '.join(f'{f.name}: {f.describe()}' for f in self.factors),
            'videos without a row': _count_and_examples(self.missing),
            'rows in no split of the records': _count_and_examples(self.unknown),
            'rows of other splits': self.elsewhere}


def _count_and_examples(ids: Sequence[str]) -> str:
  shown = ', '.join(ids[:EXAMPLES]) + (', ...' if len(ids) > EXAMPLES else '')
  return f'{len(ids)} ({shown})' if ids else '0'


def read(path: str, *, bins: int = 10, max_categories: int = 20) -> Table:
  """The factors table at `path` (see the module docstring), each column made categories."""
  if bins < 2 or max_categories < 1:
    raise UserError(f'config.evaluation.factors: bins={bins}, max_categories={max_categories}; '
                    'bins must be at least 2 and max_categories at least 1')
  if not files.exists(path):
    raise UserError(f'{path}: no such factors table (config.evaluation.factors.file); give a CSV '
                    f'whose header starts with {ID_COLUMN}, or clear the key')
  with files.open(path, encoding='utf-8-sig', newline='') as f:
    rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
  if not rows:
    raise UserError(f'{path}: the factors table is empty; it needs a header {ID_COLUMN},<factor>,...')
  header = [name.strip() for name in rows[0]]
  if ID_COLUMN not in header:
    raise UserError(f'{path}: no {ID_COLUMN} column (the header is {header}); the first column must '
                    f'be {ID_COLUMN}, naming videos as the records\' <split>.csv do')
  names = [name for name in header if name != ID_COLUMN]
  repeated = sorted({n for n in header if header.count(n) > 1})
  if not names or repeated or '' in names:
    raise UserError(f'{path}: the header {header} needs one or more factor columns after '
                    f'{ID_COLUMN}, each with a distinct, non-empty name')
  at = {name: i for i, name in enumerate(header)}
  seen: dict[str, int] = {}
  for line, row in enumerate(rows[1:], start=2):
    if len(row) != len(header):
      raise UserError(f'{path}, line {line}: {len(row)} cells, the header has {len(header)}')
    video_id = row[at[ID_COLUMN]].strip()
    if not video_id or video_id in seen:
      what = f'repeats {video_id!r} of line {seen[video_id]}' if video_id else f'has no {ID_COLUMN}'
      raise UserError(f'{path}, line {line} {what}; give each video one row')
    seen[video_id] = line
  columns = {name: [row[at[name]].strip() for row in rows[1:]] for name in names}
  return Table(path, tuple(seen), tuple(discretise(name, cells, bins=bins,
                                                   max_categories=max_categories)
                                        for name, cells in columns.items()))


def discretise(name: str, cells: Sequence[str], *, bins: int = 10,
               max_categories: int = 20) -> Factor:
  """The categories of one column (see the module docstring); '' is unknown."""
  known = [c for c in cells if c]
  distinct = sorted(set(known))
  positions = _ordinals(distinct)
  if positions is None or len(distinct) <= max_categories:
    lookup = {value: i for i, value in enumerate(distinct)}
    return Factor(name, tuple(distinct), np.array([lookup.get(c, -1) for c in cells], np.int64),
                  binned=False)
  order = {value: positions[i] for i, value in enumerate(distinct)}
  values = np.sort([order[c] for c in known])
  # The i/bins quantiles as values of the column (the inverted CDF, in integers: no rounding).
  ranks = [0] + [-(-i * len(values) // bins) - 1 for i in range(1, bins)] + [len(values) - 1]
  edges = np.unique(values[ranks])
  text = {order[value]: value for value in distinct}
  labels = tuple(f'[{text[lo]}, {text[hi]}{"]" if i == len(edges) - 2 else ")"}'
                 for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])))
  inner = edges[1:-1]
  codes = np.array([int(np.searchsorted(inner, order[c], side='right')) if c else -1
                    for c in cells], np.int64)
  return Factor(name, labels, codes, binned=True)


def _ordinals(distinct: Sequence[str]) -> list[float] | None:
  """Each text as a number (finite), or all as dates (seconds since 1970, naive ones read as UTC);
  None if the column is neither."""
  try:
    numbers = [float(v) for v in distinct]
    if all(math.isfinite(x) for x in numbers):
      return numbers
  except ValueError:
    pass
  try:
    moments = [datetime.datetime.fromisoformat(v) for v in distinct]
  except ValueError:
    return None
  utc = datetime.timezone.utc
  return [(m if m.tzinfo else m.replace(tzinfo=utc)).timestamp() for m in moments]


def record_ids(directory: str) -> set[str]:
  """The video ids of every split of a records folder (its `{split}.csv`)."""
  ids: set[str] = set()
  for split in pipeline.read_manifest(directory)['splits']:
    with files.open(files.join(directory, f'{split}.csv'), newline='') as f:
      ids.update(row['video_id'] for row in csv.DictReader(f))
  return ids


def align(table: Table, video_ids: Sequence[str], in_records: set[str]) -> Aligned:
  """`table`'s factors for the scored `video_ids` (-1 where a video has no row); `in_records` holds
  the ids of every split of the records, so that a row of another split is not called unknown.
  Logs what did not match."""
  row_of = {video_id: i for i, video_id in enumerate(table.video_ids)}
  rows = np.array([row_of.get(v, -1) for v in video_ids], np.int64)
  scored = set(video_ids)
  others = [v for v in table.video_ids if v not in scored]
  unknown = tuple(v for v in others if v not in in_records)
  missing = tuple(v for v, r in zip(video_ids, rows) if r < 0)
  factors = tuple(dataclasses.replace(f, codes=np.where(rows >= 0, f.codes[np.maximum(rows, 0)], -1))
                  for f in table.factors)
  aligned = Aligned(table.path, factors, missing, unknown, len(others) - len(unknown))
  if missing:
    logging.warning('Factors table %s: %d of the %d scored videos have no row (%s); they are '
                    'unknown for every factor', table.path, len(missing), len(video_ids),
                    _count_and_examples(missing))
  if unknown:
    logging.warning('Factors table %s: %d rows name videos in no split of the records (%s); check '
                    'that the ids are written as the records\' <split>.csv writes them',
                    table.path, len(unknown), _count_and_examples(unknown))
  return aligned


def nmi(codes: np.ndarray, clusters: np.ndarray) -> float | None:
  """NMI of `clusters` against factor (or class) `codes` over the videos known for it (None if no
  video is)."""
  return metrics.nmi(codes, clusters) if (codes >= 0).any() else None


def nmi_rows(clusterings: Mapping[str, np.ndarray], truth: np.ndarray | None,
             aligned: Aligned) -> dict[str, dict[str, Any]]:
  """Per clustering (`[N]` labels, or `[N, R]` for R runs of a randomised one such as k-means, shown
  as mean ± std): {column: {'mean', 'std', 'runs'} or None} for the classes (`truth`, -1 unknown)
  and each factor, and 'best': the column with the highest mean NMI."""
  targets = {CLASSES: truth, **{f.name: f.codes for f in aligned.factors}}
  rows = {}
  for name, labels in clusterings.items():
    runs = labels.reshape(len(labels), -1)
    row: dict[str, Any] = {}
    for column, codes in targets.items():
      scores = [] if codes is None else [nmi(codes, runs[:, r]) for r in range(runs.shape[1])]
      values = [s for s in scores if s is not None]
      row[column] = ({'mean': float(np.mean(values)), 'std': float(np.std(values)), 'runs': values}
                     if values else None)
    scored = {c: v['mean'] for c, v in row.items() if v is not None}
    row['best'] = max(scored, key=scored.__getitem__) if scored else None
    rows[name] = row
  return rows


def markdown(rows: Mapping[str, Mapping[str, Any]], factor_names: Sequence[str]) -> str:
  """`nmi_rows` as a table: NMI in %, the row's best column in bold and named last."""
  columns = [CLASSES, *factor_names]
  lines = [f'| Clustering | NMI {CLASSES} | ' + ' | '.join(f'NMI {n}' for n in factor_names)
           + ' | best explained by |', '|:---|' + '---:|' * len(columns) + ':---|']
  for name, row in rows.items():
    cells = []
    for column in columns:
      value = row[column]
      text = '–' if value is None else f"{100 * value['mean']:.1f}" + (
          f" ± {100 * value['std']:.1f}" if len(value['runs']) > 1 else '')
      cells.append(f'**{text}**' if column == row['best'] else text)
    lines.append(f'| {name} | ' + ' | '.join(cells) + f" | {row['best'] or '–'} |")
  return '\n'.join(lines)


@dataclasses.dataclass(frozen=True)
class Majority:
  """Per cluster (in `np.unique` order of the cluster ids): the majority value's code (-1 where no
  member is known), its share p among the known members, its share q among all known videos, the
  chance-corrected purity κ = (p − q) / (1 − q) (NaN where undefined: no known member, or q = 1),
  and how many members are known."""
  value: np.ndarray
  share: np.ndarray
  base: np.ndarray
  kappa: np.ndarray
  known: np.ndarray


def majority(clusters: np.ndarray, codes: np.ndarray, num_values: int) -> Majority:
  """Each cluster's majority value of a factor (or of the classes) and its κ (module docstring)."""
  _, inverse = np.unique(clusters, return_inverse=True)
  num_clusters = int(inverse.max()) + 1 if len(inverse) else 0
  known = codes >= 0
  counts = np.bincount(inverse[known] * num_values + codes[known],
                       minlength=num_clusters * num_values).reshape(num_clusters, num_values)
  members = counts.sum(axis=1)
  totals = counts.sum(axis=0)
  value = np.where(members > 0, counts.argmax(axis=1), -1)
  with np.errstate(invalid='ignore', divide='ignore'):
    share = np.where(members > 0, counts.max(axis=1, initial=0) / members, np.nan)
    base = np.where(members > 0, totals[np.maximum(value, 0)] / max(totals.sum(), 1), np.nan)
    kappa = np.where(base < 1, (share - base) / (1 - base), np.nan)
  return Majority(value, share, base, kappa, members)
