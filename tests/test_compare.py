"""`avssl.modes.compare`: several runs' results in one table."""

import json

import pytest

from avssl.modes import compare


METRICS = ('nmi', 'ari', 'accuracy', 'entropy', 'max_purity')


def _write(path, values):
  """`values`: view -> (mean, std) per metric of `METRICS`, in that order; 'head0' is set to a value
  the table must not show."""
  path.mkdir()
  results = {'step': 10}
  for view, stats in values.items():
    for metric, (mean, std) in zip(METRICS, stats, strict=True):
      results[f'{view}/{metric}/mean'] = mean
      results[f'{view}/{metric}/std'] = std
      results[f'{view}/{metric}/head0'] = 0.123
  (path / 'eval.json').write_text(json.dumps(results))


def test_rows_in_table_2_order_with_run_names(tmp_path):
  # Every cell distinct, so a swapped column, view, statistic or run shows.
  _write(tmp_path / 'a', {
      'audio': [(0.51, 0.001), (0.52, 0.002), (0.53, 0.003), (1.54, 0.05), (0.55, 0.006)],
      'video + audio': [(0.91, 0.011), (0.92, 0.012), (0.93, 0.013), (1.94, 0.15), (0.95, 0.016)]})
  _write(tmp_path / 'b', {
      'video': [(0.71, 0.021), (0.72, 0.022), (0.73, 0.023), (1.74, 0.25), (0.75, 0.026)]})
  runs = {'SeLaVi': str(tmp_path / 'a'), 'SeLa': str(tmp_path / 'b')}
  assert compare.table('clustering', runs) == (
      '| Method | NMI | ARI | Acc. | ⟨H⟩ | ⟨p_max⟩ |\n'
      '|:---|---:|---:|---:|---:|---:|\n'
      '| SeLaVi: video + audio | 91.0 ± 1.1 | 92.0 ± 1.2 | 93.0 ± 1.3 | 1.94 ± 0.15 | 95.0 ± 1.6 |\n'
      '| SeLaVi: audio | 51.0 ± 0.1 | 52.0 ± 0.2 | 53.0 ± 0.3 | 1.54 ± 0.05 | 55.0 ± 0.6 |\n'
      '| SeLa: video | 71.0 ± 2.1 | 72.0 ± 2.2 | 73.0 ± 2.3 | 1.74 ± 0.25 | 75.0 ± 2.6 |')


def test_missing_run_names_what_to_do(tmp_path):
  with pytest.raises(SystemExit, match='train .* first'):
    compare.table('clustering', {'x': str(tmp_path)})


def test_xdc_layout_puts_runs_side_by_side_per_iteration(tmp_path, capsys):
  for name, offset in (('sdc', 0.0), ('xdc', 0.5)):
    (tmp_path / name).mkdir()
    results = {f'iteration{i}/{c}/nmi': offset + i / 10 + j / 100
               for i in (0, 1) for j, c in enumerate(('video', 'audio'))}
    (tmp_path / name / 'eval.json').write_text(json.dumps(results))
  compare.main(['--layout=xdc', f'SDC={tmp_path / "sdc"}', f'XDC={tmp_path / "xdc"}'])
  assert capsys.readouterr().out.splitlines() == [
      '| Iteration: clustering (NMI) | SDC | XDC |', '|:---|---:|---:|',
      '| 0: video | 0.0 | 50.0 |', '| 0: audio | 1.0 | 51.0 |',
      '| 1: video | 10.0 | 60.0 |', '| 1: audio | 11.0 | 61.0 |']


def test_a_run_without_a_name_is_a_usage_error(tmp_path):
  with pytest.raises(SystemExit):
    compare.main([str(tmp_path)])
