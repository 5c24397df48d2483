"""`notebooks/explore.ipynb` in its own kernel (nbclient), as a user runs it: with no run given it
makes, trains, labels and browses a small demo; given only a workdir it opens the run without its
records or config file (`avssl.load_run`); and its Colab cell installs avssl and only what Colab lacks.

(The notebook on a run with its records, feeding the browser tests, is in tests/test_browser.py.)
"""

import importlib.metadata
import importlib.util
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import types

import jax
import nbclient
import nbformat
import pytest

from conftest import REPO

NOTEBOOK = REPO / 'notebooks' / 'explore.ipynb'


def execute(**environ: str) -> nbformat.NotebookNode:
  """The notebook executed with `environ` (and none of the caller's AVSSL_* settings); the kernel
  gets the tests' 8 devices, compile flags and compilation cache."""
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  env = {k: v for k, v in os.environ.items() if not k.startswith('AVSSL_')}
  env.update(environ, JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
  client = nbclient.NotebookClient(notebook, timeout=600, kernel_name='python3',
                                   resources={'metadata': {'path': str(NOTEBOOK.parent)}})
  client.execute(env=env)
  return notebook


def outputs(notebook: nbformat.NotebookNode) -> list:
  found = [o for cell in notebook.cells if cell.cell_type == 'code' for o in cell.outputs]
  assert not [o for o in found if o.output_type == 'error']
  return found


def printed(notebook: nbformat.NotebookNode) -> str:
  return ''.join(o.get('text', '') for o in outputs(notebook) if o.output_type == 'stream')


def images(notebook: nbformat.NotebookNode) -> int:
  return sum('image/png' in o.get('data', {}) for o in outputs(notebook))


def test_with_no_run_it_makes_trains_labels_and_browses_a_demo(tmp_path):
  demo = tmp_path / 'demo'
  notebook = execute(AVSSL_DEMO_DIR=str(demo), AVSSL_DEMO_VIDEOS='60',
                     AVSSL_DEMO_CONFIG='configs/selavi_demo.py:tiny')
  text = printed(notebook)
  assert re.search(r'^selavi run .*selavi: step 4 of 4, 50 training videos$', text, re.M), text
  assert (demo / 'selavi' / 'run.json').exists() and (demo / 'selavi' / 'labels.csv').exists()
  assert (demo / 'selavi' / 'browser' / 'index.html').exists()
  shown = sorted(p.name for p in (demo / 'selavi' / 'plots').glob('*.png'))
  assert {'loss.png', 'cluster_sizes.png', 'label_quality.png'} <= set(shown)
  assert images(notebook) == 1 + len(shown)  # The loss curve, then the plots of --mode=label.
  assert any('<iframe' in o.get('data', {}).get('text/html', '') for o in outputs(notebook))
  assert re.findall(r'^test/c\d\d_\S+ ', text, re.M)  # Test videos, which training never saw.


def test_given_only_a_workdir_it_shows_the_metrics_and_labels_new_videos(
    _selavi_tiny_run, new_records, tmp_path):
  workdir = tmp_path / 'selavi'
  shutil.copytree(_selavi_tiny_run, workdir)
  described = json.loads((workdir / 'run.json').read_text())
  described['config']['data']['dir'] = str(tmp_path / 'records-that-moved')  # Never opened.
  (workdir / 'run.json').write_text(json.dumps(described))
  notebook = execute(AVSSL_WORKDIR=str(workdir), AVSSL_NEW=new_records)
  text = printed(notebook)
  assert 'selavi run' in text and 'step 4 of 4, 58 training videos' in text
  assert any('NMI' in o.get('data', {}).get('text/markdown', '') for o in outputs(notebook))
  assert images(notebook) == 1  # The loss curve, from the run's TensorBoard events.
  assert 'No labels.csv or browser in this run' in text
  assert len(re.findall(r'^train/c\d\d_\S+ ', text, re.M)) == 8  # The eight new videos, labelled.
  assert not (workdir / 'labels.csv').exists()


def _colab_cell() -> str:
  return next(c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells
              if c.cell_type == 'code')


@pytest.fixture
def colab(tmp_path, monkeypatch):
  """A fake Colab: `google.colab` imported, `git` and `pip` recorded instead of run, `av` and `clu`
  missing. Yields the list of commands run."""
  commands = []

  def run(command, check=False):
    commands.append(list(command))
    if command[:2] == ['git', 'clone']:
      (pathlib.Path(command[-1]) / 'configs').mkdir(parents=True)
    return subprocess.CompletedProcess(command, 0)

  real_find_spec = importlib.util.find_spec
  monkeypatch.setitem(sys.modules, 'google.colab', types.ModuleType('google.colab'))
  monkeypatch.setattr(subprocess, 'run', run)
  monkeypatch.setattr(importlib.util, 'find_spec',
                      lambda name, *a: None if name in ('av', 'clu') else real_find_spec(name, *a))
  monkeypatch.setattr(sys, 'path', list(sys.path))
  monkeypatch.setenv('AVSSL_COLAB_DIR', str(tmp_path / 'content' / 'avssl'))
  monkeypatch.delenv('COLAB_TPU_ADDR', raising=False)
  monkeypatch.chdir(tmp_path)
  yield commands


def test_the_colab_cell_installs_avssl_and_only_what_colab_lacks(colab, tmp_path, capsys):
  exec(_colab_cell(), {'__name__': '__colab__'})  # pylint: disable=exec-used
  root = tmp_path / 'content' / 'avssl'
  constraints = str(root / 'colab-constraints.txt')
  assert colab == [
      ['git', 'clone', '--depth=1', 'https://github.com/avssl/avssl', str(root)],
      [sys.executable, '-m', 'pip', 'install', '--quiet', '-c', constraints, 'clu', 'av'],
      [sys.executable, '-m', 'pip', 'install', '--quiet', '-c', constraints, '--no-deps', '-e',
       str(root)]]
  held = (root / 'colab-constraints.txt').read_text().split()
  for name in ('jax', 'jaxlib', 'numpy'):  # Colab's versions stay, whatever a dependency asks.
    assert f'{name}=={importlib.metadata.version(name)}' in held
  installed = [arg for command in colab[1:] for arg in command[7:]]
  assert not [a for a in installed if re.match(r'(jax|jaxlib|tensorflow|numpy)\b', a)]
  assert pathlib.Path.cwd() == root
  assert f'on {jax.device_count()} device(s)' in capsys.readouterr().out


def test_the_colab_cell_refuses_the_retired_tpu_node_runtime(colab, monkeypatch):
  monkeypatch.setenv('COLAB_TPU_ADDR', '10.0.0.2:8470')
  with pytest.raises(RuntimeError, match='retired TPU Node runtime'):
    exec(_colab_cell(), {'__name__': '__colab__'})  # pylint: disable=exec-used
  assert not colab
