"""The combined table of several runs' eval.json."""

import json

import pytest

from avssl.evaluation import report


def _write(path, values):
  path.mkdir()
  results = {'step': 10}
  for view, (nmi, std) in values.items():
    for metric in ('nmi', 'ari', 'accuracy', 'entropy', 'max_purity'):
      results[f'{view}/{metric}/mean'] = nmi
      results[f'{view}/{metric}/std'] = std
      results[f'{view}/{metric}/head0'] = nmi
  (path / 'eval.json').write_text(json.dumps(results))


def test_rows_in_table_2_order_with_run_names(tmp_path):
  _write(tmp_path / 'a', {'audio': (0.5, 0.0), 'video + audio': (0.9, 0.01)})
  _write(tmp_path / 'b', {'video': (0.7, 0.02)})
  assert report.table([('SeLaVi', str(tmp_path / 'a')), ('SeLa', str(tmp_path / 'b'))]) == (
      '| Method | NMI | ARI | Acc. | ⟨H⟩ | ⟨p_max⟩ |\n'
      '|:---|---:|---:|---:|---:|---:|\n'
      '| SeLaVi: video + audio | 90.0 ± 1.0 | 90.0 ± 1.0 | 90.0 ± 1.0 | 0.90 ± 0.01 | 90.0 ± 1.0 |\n'
      '| SeLaVi: audio | 50.0 ± 0.0 | 50.0 ± 0.0 | 50.0 ± 0.0 | 0.50 ± 0.00 | 50.0 ± 0.0 |\n'
      '| SeLa: video | 70.0 ± 2.0 | 70.0 ± 2.0 | 70.0 ± 2.0 | 0.70 ± 0.02 | 70.0 ± 2.0 |')


def test_missing_run_names_what_to_do(tmp_path):
  with pytest.raises(FileNotFoundError, match='train .* first'):
    report.table([('x', str(tmp_path))])
