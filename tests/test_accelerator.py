"""`benchmarks/accelerator.sh`, the script a session with a lent GPU runs as is, runs here at toy sizes
where TensorFlow, PyAV and clu cannot be imported (that machine has none of them)."""

import json
import os
import subprocess
import sys

from conftest import REPO

HIDDEN = ('tensorflow', 'av', 'clu')


def test_the_accelerator_script_measures_every_part_without_tensorflow(tmp_path):
  hidden = tmp_path / 'hidden'
  for name in HIDDEN:  # Packages that shadow the installed ones and refuse to import.
    (hidden / name).mkdir(parents=True)
    (hidden / name / '__init__.py').write_text(f'raise ImportError("{name} is hidden from this test")')
  # One CPU device: the script is a one-accelerator benchmark, and its programs compile faster
  # unpartitioned (the suite's time).
  flags = os.environ.get('XLA_FLAGS', '').replace('--xla_force_host_platform_device_count=8', '')
  env = {**os.environ, 'PYTHON': sys.executable, 'PYTHONPATH': str(hidden), 'JAX_PLATFORMS': 'cpu',
         'XLA_FLAGS': f'{flags} --xla_force_host_platform_device_count=1'}
  env.pop('OUT', None)
  out = tmp_path / 'out'
  done = subprocess.run(['bash', str(REPO / 'benchmarks' / 'accelerator.sh'), '--tiny',
                         f'--out={out}'], check=False, env=env, capture_output=True, text=True,
                        timeout=600)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  results = json.loads((out / 'accelerator.json').read_text())
  measured = {(row['part'], row['what']) for row in results['rows']}
  for part, what in [('peaks', 'matmul 256³ bfloat16'),
                     ('train step', 'SeLaVi VGG-Sound float32, clips/s/device'),
                     ('train step', 'SeLaVi VGG-Sound bfloat16 + remat, clips/s/device'),
                     ('train step', 'SeLaVi VGG-Sound float32, MFU'),
                     ('train step', 'SeLaVi VGG-Sound bfloat16 + remat, memory'),
                     ('encoder', 'avssl R(2+1)D-10 bfloat16 (jax)'),
                     ('sinkhorn', 'scaling, default chunks: whole solve'),
                     ('k-means', 'Lloyd only, 65536-row blocks')]:
    assert (part, what) in measured, (part, what, sorted(measured))
  assert all(row['value'] > 0 for row in results['rows'])
  notes = results['notes']
  assert 'TensorFlow imported by the jax part: False' in notes
  assert not any('failed' in note for note in notes), notes
  assert 'input pipeline: not measured here' in done.stdout
  table = (out / 'table.md').read_text()
  assert '| train step | SeLaVi VGG-Sound bfloat16 + remat, clips/s/device |' in table
  assert 'devices: 1 x cpu' in table
