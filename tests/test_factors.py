"""The nuisance report (`avssl/evaluation/factors.py`): reading and aligning a factors table,
discretising its columns, scoring clusterings against it; then `--mode=eval` and `--mode=label` on
a trained `:tiny` SeLaVi run with a factors CSV of its records."""

import csv
import dataclasses
import json
import pathlib
import re

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

import avssl
from avssl import files
from avssl.errors import UserError
from avssl.evaluation import factors
from avssl.modes import evaluate as eval_mode, label as label_mode
from conftest import load_config


def _write(path: str, text: str) -> str:
  with files.open(path, 'w') as f:
    f.write(text)
  return path


def test_columns_become_categories_numbers_and_dates_quantile_bins():
  camera = factors.discretise('camera', ['cam2', 'cam1', '', 'cam2'])
  assert camera.values == ('cam1', 'cam2') and camera.codes.tolist() == [1, 0, -1, 1]
  assert not camera.binned
  # Few distinct numbers stay categories, as written.
  day = factors.discretise('day', ['3', '1', '3', '1.0'], max_categories=3)
  assert day.values == ('1', '1.0', '3') and day.codes.tolist() == [2, 0, 2, 1]
  # 25 numbers in 5 bins: edges are the column's own i/5 quantiles (inverted CDF), a value on an edge
  # goes to the bin above, the last bin is closed.
  gain = factors.discretise('gain', [str(i) for i in range(25, 0, -1)] + [''], bins=5,
                            max_categories=4)
  assert gain.binned and gain.values == ('[1, 5)', '[5, 10)', '[10, 15)', '[15, 20)', '[20, 25]')
  assert np.bincount(gain.codes[gain.codes >= 0]).tolist() == [4, 5, 5, 5, 6]
  assert gain.codes[-1] == -1 and gain.codes[0] == 4 and gain.codes[-2] == 0
  dates = factors.discretise('date', [f'2024-01-{d:02d}' for d in range(1, 29)], bins=4,
                             max_categories=20)
  assert dates.values == ('[2024-01-01, 2024-01-07)', '[2024-01-07, 2024-01-14)',
                          '[2024-01-14, 2024-01-21)', '[2024-01-21, 2024-01-28]')
  assert np.bincount(dates.codes).tolist() == [6, 7, 7, 8]
  # A column with one non-number is categorical, whatever its size.
  mixed = factors.discretise('x', [str(i) for i in range(30)] + ['n/a'], max_categories=20)
  assert not mixed.binned and len(mixed.values) == 31


def test_read_aligns_by_id_and_names_unknown_and_missing_ids(tmp_path, monkeypatch):
  path = _write(f'ram://{tmp_path.name}/factors.csv',
                '\ufeffvideo_id,camera,gain\r\n'
                'train/a/1,cam1,0.5\r\ntrain/a/2,cam2,\r\n'
                'test/b/9,cam1,0.1\r\nnowhere/7,cam2,0.2\r\n\r\n')
  table = factors.read(path)
  assert table.video_ids == ('train/a/1', 'train/a/2', 'test/b/9', 'nowhere/7')
  warnings = []
  monkeypatch.setattr(factors.logging, 'warning', lambda *a: warnings.append(a[0] % a[1:]))
  aligned = factors.align(table, ['train/a/2', 'train/a/3', 'train/a/1'],
                          in_records={'train/a/1', 'train/a/2', 'train/a/3', 'test/b/9'})
  camera, gain = aligned.factors
  assert camera.codes.tolist() == [1, -1, 0] and gain.codes.tolist() == [-1, -1, 2]
  assert aligned.missing == ('train/a/3',) and aligned.unknown == ('nowhere/7',)
  assert aligned.elsewhere == 1
  notes = aligned.notes()
  assert notes['videos without a row'] == '1 (train/a/3)'
  assert notes['rows in no split of the records'] == '1 (nowhere/7)'
  assert notes['factors'] == ('camera: 2 values, known for 2 of 3 videos; '
                              'gain: 3 values, known for 1 of 3 videos')
  assert len(warnings) == 2 and 'train/a/3' in warnings[0] and 'nowhere/7' in warnings[1]


def test_many_unknown_ids_are_counted_and_the_first_named():
  table = factors.Table('f.csv', tuple(f'x{i}' for i in range(8)),
                        (factors.discretise('camera', ['c'] * 8),))
  aligned = factors.align(table, ['v'], in_records={'v'})
  assert aligned.notes()['rows in no split of the records'] == '8 (x0, x1, x2, x3, x4, ...)'
  assert aligned.notes()['videos without a row'] == '1 (v)'


@pytest.mark.parametrize('text, message', [
    (None, r'ram://.*/factors\.csv: no such factors table \(config\.evaluation\.factors\.file\)'),
    ('id,camera\nv,c\n', r"factors\.csv: no video_id column \(the header is \['id', 'camera'\]\)"),
    ('video_id\nv\n', r'one or more factor columns'),
    ('video_id,camera\nv,c\nw,d\nv,e\n', r"factors\.csv, line 4 repeats 'v' of line 2"),
    ('video_id,camera\nv,c,d\n', r'factors\.csv, line 2: 3 cells, the header has 2'),
    ('', r'factors\.csv: the factors table is empty'),
])
def test_bad_tables_are_refused_naming_the_file_and_what_to_do(tmp_path, text, message):
  path = f'ram://{tmp_path.name}/factors.csv'
  if text is not None:
    _write(path, text)
  with pytest.raises(UserError, match=message):
    factors.read(path)


def test_nmi_against_a_factor_is_sklearns_over_the_videos_known_for_it():
  rng = np.random.default_rng(0)
  clusters = rng.integers(0, 4, size=(50, 3))
  codes = rng.integers(-1, 3, size=50)
  truth = np.where(np.arange(50) < 45, clusters[:, 0], -1)
  aligned = factors.Aligned('f.csv', (factors.Factor('camera', ('a', 'b', 'c'), codes, False),),
                            (), (), 0)
  rows = factors.nmi_rows({'head': clusters[:, 0], 'k-means': clusters}, truth, aligned)
  known = codes >= 0
  expected = [sk_metrics.normalized_mutual_info_score(codes[known], clusters[known, r])
              for r in range(3)]
  assert rows['head']['camera']['runs'] == [expected[0]]
  assert rows['k-means']['camera'] == {'mean': np.mean(expected), 'std': np.std(expected),
                                       'runs': expected}
  assert rows['head']['classes']['mean'] == 1.0 and rows['head']['best'] == 'classes'
  empty = factors.Factor('camera', ('a',), np.full(50, -1), False)
  rows = factors.nmi_rows({'head': clusters[:, 0]}, None,
                          dataclasses.replace(aligned, factors=(empty,)))
  assert rows['head'] == {'classes': None, 'camera': None, 'best': None}


def test_markdown_marks_the_best_column_of_each_row():
  rows = {'video/head0': {'classes': {'mean': 0.5, 'std': 0.0, 'runs': [0.5]},
                          'camera': {'mean': 0.8, 'std': 0.0, 'runs': [0.8]}, 'best': 'camera'},
          'k-means': {'classes': {'mean': 0.6, 'std': 0.1, 'runs': [0.5, 0.7]}, 'camera': None,
                      'best': 'classes'}}
  assert factors.markdown(rows, ['camera']) == (
      '| Clustering | NMI classes | NMI camera | best explained by |\n'
      '|:---|---:|---:|:---|\n'
      '| video/head0 | 50.0 | **80.0** | camera |\n'
      '| k-means | **60.0 ± 10.0** | – | classes |')


def test_majority_gives_each_clusters_chance_corrected_purity():
  clusters = np.array([5, 5, 5, 5, 2, 2, 2, 2, 9])
  codes = np.array([0, 0, 0, 1, 1, 1, 1, 1, -1])
  m = factors.majority(clusters, codes, 2)
  # Clusters in id order 2, 5, 9: 2 is all value 1 (5/8 of the known videos): κ = 1; 5 is 3/4
  # value 0 (3/8 of all): κ = (3/4 - 3/8) / (5/8) = 0.6; 9 has no known member.
  assert m.value.tolist() == [1, 0, -1] and m.known.tolist() == [4, 4, 0]
  np.testing.assert_allclose(m.share[:2], [1.0, 0.75])
  np.testing.assert_allclose(m.base[:2], [5 / 8, 3 / 8])
  np.testing.assert_allclose(m.kappa[:2], [1.0, 0.6])
  assert np.isnan(m.kappa[2])
  # A factor with one value explains nothing: κ undefined.
  assert np.isnan(factors.majority(clusters, np.zeros(9, np.int64), 1).kappa).all()


# `--mode=eval` and `--mode=label` on a trained `:tiny` run.


def _factors_csv(records: str, path: str) -> dict[str, dict[str, str]]:
  """A factors table of the records' videos: `visual` and `sound` (avsynth's class names hold both
  patterns, `c03_v1_a2`) and `take` (numbers, 25 distinct: binned), with the first training video
  left out, one test video in, a `take` cell empty and a row for a video no split has."""
  with open(pathlib.Path(records) / 'train.csv', newline='') as f:
    train = list(csv.DictReader(f))
  with open(pathlib.Path(records) / 'test.csv', newline='') as f:
    test = list(csv.DictReader(f))
  rows = {}
  for i, video in enumerate(train[1:] + test[:1]):
    _, visual, sound = video['label_name'].split('_')
    rows[video['video_id']] = {'visual': visual, 'sound': sound, 'take': str(i % 25) if i else ''}
  rows['train/c99_v9_a9/lost'] = {'visual': 'v9', 'sound': 'a9', 'take': '3'}
  with files.open(path, 'w') as f:
    f.write('video_id,visual,sound,take\n' + ''.join(
        f"{v},{r['visual']},{r['sound']},{r['take']}\n" for v, r in rows.items()))
  return rows


def _expected_nmi(truth_codes: list, clusters: list) -> float:
  codes, clusters = np.array(truth_codes), np.array(clusters)
  known = codes >= 0
  return sk_metrics.normalized_mutual_info_score(codes[known], clusters[known])


def test_eval_and_label_report_every_clustering_against_the_factors(avsynth_records, selavi_workdir,
                                                                    tmp_path):
  config = load_config('selavi_vggsound', 'tiny')
  config.data.dir = avsynth_records
  config.evaluation.run = ('kmeans',)  # 'factors' is added, last, by the factors file.
  config.evaluation.kmeans.update(dict(encoders=('trained',), modalities=('video',)))
  config.evaluation.factors.file = f'ram://{tmp_path.name}/factors.csv'
  rows = _factors_csv(avsynth_records, config.evaluation.factors.file)
  results = eval_mode.evaluate(config, selavi_workdir, 'configs/selavi_vggsound.py:tiny')
  assert list(results) == ['kmeans', 'factors']
  out = pathlib.Path(selavi_workdir) / 'eval'
  report = json.loads((out / 'factors.json').read_text())
  with open(pathlib.Path(avsynth_records) / 'train.csv', newline='') as f:
    train = list(csv.DictReader(f))
  first = train[0]['video_id']
  assert report['videos without a row'] == [first]
  assert report['rows in no split of the records'] == ['train/c99_v9_a9/lost']
  assert report['rows of other splits'] == 1

  # The clusterings, each against every factor, recomputed here from labels.csv (same checkpoint).
  run = avssl.load_run(selavi_workdir, records=avsynth_records)
  try:
    run.config.evaluation.factors.file = config.evaluation.factors.file
    label_mode.write_labels(run)
  finally:
    run.checkpointer.close()
  with open(pathlib.Path(selavi_workdir) / 'labels.csv', newline='') as f:
    labels = list(csv.DictReader(f))
  assert [r['video_id'] for r in labels] == [v['video_id'] for v in train]
  heads = [c for c in labels[0] if re.fullmatch(r'.+/head\d+', c)]
  kmeans_row = 'k-means, trained encoder: video'
  assert set(report['rows']) == {*heads, kmeans_row}
  for name in ('visual', 'sound'):
    values = sorted({r[name] for r in rows.values()})
    codes = [values.index(rows[r['video_id']][name]) if r['video_id'] in rows else -1
             for r in labels]
    for head in heads:
      expected = _expected_nmi(codes, [int(r[head]) for r in labels])
      assert report['rows'][head][name]['runs'] == [pytest.approx(expected, abs=1e-12)]
  classes = sorted({r['label'] for r in labels})
  truth = [classes.index(r['label']) for r in labels]
  for head in heads:
    assert report['rows'][head]['classes']['mean'] == pytest.approx(
        _expected_nmi(truth, [int(r[head]) for r in labels]), abs=1e-12)
  # The k-means row's classes column is the kmeans evaluation's NMI, run by run (same clusters).
  kmeans = json.loads((out / 'kmeans.json').read_text())
  assert report['rows'][kmeans_row]['classes']['runs'] == pytest.approx(
      kmeans[kmeans_row]['nmi']['runs'], abs=1e-12)
  take = report['factors'].split('; ')[2]
  assert take.startswith('take: 10 quantile bins, known for 56 of 58 videos')

  table = (out / 'factors.md').read_text()
  assert '| Clustering | NMI classes | NMI visual | NMI sound | NMI take | best explained by |' in table
  assert f'- videos without a row: 1 ({first})' in table
  assert '- rows in no split of the records: 1 (train/c99_v9_a9/lost)' in table
  assert 'Nuisance factors' in (out / 'tables.md').read_text()

  # The browser of --mode=label has every clustering's NMI against the factors and each cluster's best.
  site = pathlib.Path(selavi_workdir) / 'browser'
  data = _site_data(site, 'site')
  assert [f['name'] for f in data['factors']] == ['visual', 'sound', 'take']
  entry = next(c for c in data['clusterings'] if c['name'] == heads[0])
  assert entry['factor_nmi'][0] == round(report['rows'][heads[0]]['visual']['mean'], 4)
  assert data['factor_notes']['rows in no split of the records'] == '1 (train/c99_v9_a9/lost)'


def _site_data(site: pathlib.Path, key: str):
  text = (site / 'data' / f'{key}.js').read_text()
  return json.loads(text[text.index(', ') + 2:-3])


def test_factors_evaluation_without_a_file_is_skipped_and_with_one_runs_last(avsynth_records,
                                                                             tmp_path):
  config = load_config('selavi_vggsound', 'tiny')
  config.data.dir = avsynth_records
  config.evaluation.run = ('method', 'factors')
  assert eval_mode.plan(config) == ('method',)
  config.evaluation.run = ('method',)
  config.evaluation.factors.file = _write(f'ram://{tmp_path.name}/f.csv', 'video_id,camera\nv,c\n')
  assert eval_mode.plan(config) == ('method', 'factors')
  # A table to fix is named before any checkpoint is looked for (this workdir has none).
  config.evaluation.factors.file = str(tmp_path / 'nope.csv')
  with pytest.raises(UserError, match=r'nope\.csv: no such factors table'):
    eval_mode.evaluate(config, str(tmp_path / 'workdir'))
