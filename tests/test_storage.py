"""The storage layer (`avssl/files.py`): local paths and URLs alike, records and runs on `ram://`
(TensorFlow's in-memory filesystem, standing in for `gs://`), and a source-tree check that nothing
goes around it."""

import ast
import json
import pathlib

import pytest

from avssl import checkpointing, files
from avssl.data import pipeline
from conftest import REPO, load_config

# Every test here runs in its own tmp_path as working directory (`_cwd`); a URL passed through
# `os.path.abspath` or `os.makedirs` would show there as a folder `ram:` (or `gs:`).


@pytest.fixture(autouse=True)
def _cwd(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  yield
  stray = [str(p) for p in tmp_path.rglob('*') if p.name in ('ram:', 'gs:')]
  assert not stray, f'a URL became a local folder: {stray}'


@pytest.fixture(params=['local', 'ram'])
def root(request, tmp_path):
  """A fresh folder: a local one, or one on `ram://` (unique per test; that filesystem lives as long
  as the process)."""
  if request.param == 'local':
    return str(tmp_path / 'root')
  return f'ram://{tmp_path.name}/root'


def test_paths_and_urls_are_told_apart():
  assert files.is_url('gs://bucket/run') and files.is_url('ram://x')
  assert not files.is_url('runs/demo') and not files.is_url('/tmp/x') and not files.is_url('C:/x')
  assert files.local_or_url('gs://bucket/run') == 'gs://bucket/run'
  assert files.local_or_url('runs/x') == str(pathlib.Path.cwd() / 'runs' / 'x')
  assert files.local_or_url('~/x') == str(pathlib.Path.home() / 'x')
  assert files.join('gs://bucket/run', 'checkpoints', 'a') == 'gs://bucket/run/checkpoints/a'


def test_layer_on_local_folders_and_ram(root):
  assert not files.exists(root)
  files.makedirs(files.join(root, 'a', 'b'))
  files.makedirs(files.join(root, 'a', 'b'))  # An existing folder is fine.
  assert files.isdir(files.join(root, 'a', 'b'))
  with files.open(files.join(root, 'a', 'x.csv'), 'w', newline='') as f:
    f.write('id,name\r\n1,"two\nlines"\r\n')
  with files.open(files.join(root, 'a', 'y.bin'), 'wb') as f:
    f.write(b'\x00\xff')
  with files.open(files.join(root, 'a', 'x.csv'), 'w', newline='') as f:
    f.write('id,name\r\n1,"two\nlines"\r\n')  # Writing again replaces the file.
  with files.open(files.join(root, 'a', 'x.csv'), newline='') as f:
    assert f.read() == 'id,name\r\n1,"two\nlines"\r\n'
  with files.open(files.join(root, 'a', 'y.bin'), 'rb') as f:
    assert f.read() == b'\x00\xff'
  assert files.listdir(files.join(root, 'a')) == ['b', 'x.csv', 'y.bin']
  assert files.size(files.join(root, 'a', 'y.bin')) == 2
  assert files.glob(files.join(root, 'a', '*.csv')) == [files.join(root, 'a', 'x.csv')]
  files.copy(files.join(root, 'a', 'y.bin'), files.join(root, 'a', 'b', 'z.bin'))
  files.copy(files.join(root, 'a', 'y.bin'), files.join(root, 'a', 'b', 'z.bin'))  # Replaces.
  with files.open(files.join(root, 'a', 'b', 'z.bin'), 'rb') as f:
    assert f.read() == b'\x00\xff'
  files.rename(files.join(root, 'a', 'x.csv'), files.join(root, 'a', 'b', 'w.csv'))
  assert files.list_files(root) == ['a/b/w.csv', 'a/b/z.bin', 'a/y.bin']
  files.remove(files.join(root, 'a', 'y.bin'))
  files.remove(files.join(root, 'a', 'y.bin'))  # Absent is fine.
  assert not files.exists(files.join(root, 'a', 'y.bin'))
  files.rmtree(files.join(root, 'a'))
  assert not files.exists(files.join(root, 'a'))
  files.rmtree(files.join(root, 'a'))


def test_atomic_open_leaves_nothing_partial(root):
  files.makedirs(root)
  path = files.join(root, 'eval.json')
  with files.atomic_open(path) as f:
    f.write('old')
  with pytest.raises(RuntimeError):
    with files.atomic_open(path) as f:
      f.write('half of the new')
      raise RuntimeError('interrupted')
  with files.open(path) as f:
    assert f.read() == 'old'
  assert files.listdir(root) == ['eval.json']
  with pytest.raises(RuntimeError):
    with files.atomic_open(files.join(root, 'new.bin'), 'wb') as f:
      f.write(b'partial')
      raise RuntimeError('interrupted')
  assert files.listdir(root) == ['eval.json']


def test_text_reads_from_urls_decode_as_open_does(tmp_path):
  path = f'ram://{tmp_path.name}/bom.csv'
  with files.open(path, 'wb') as f:
    f.write('\ufeffa,b\r\n'.encode())
  with files.open(path, encoding='utf-8-sig', newline='') as f:
    assert f.read() == 'a,b\r\n'
  with files.open(path, encoding='utf-8-sig') as f:
    assert f.read() == 'a,b\n'


def _videos(root: pathlib.Path, num_videos: int) -> str:
  from avssl.data_prep import make_synthetic  # pylint: disable=g-import-not-at-top
  make_synthetic.main([f'--output_dir={root}', f'--num_videos={num_videos}', '--num_classes=3',
                       '--size=32', '--fps=10', '--duration=1.2', '--sample_rate=16000',
                       '--test_fraction=0.34', '--workers=1'])
  return str(root)


def _make_records(videos: str, output_dir: str, per_shard: int):
  from avssl.data_prep import annotations, make_records  # pylint: disable=g-import-not-at-top
  settings = make_records.Settings(fps=10.0, short_side=32, sample_rate=16000, min_duration=1.0,
                                   flow=False, audio_only=False, require_audio=True,
                                   jpeg_quality=90, examples_per_shard=per_shard)
  return make_records.run(annotations.parse('folder', root=videos), output_dir, settings,
                          dataset='folder', workers=0)


def test_make_records_to_ram_is_read_back_and_resumes(tmp_path, monkeypatch):
  from avssl.data_prep import make_records  # pylint: disable=g-import-not-at-top
  videos = _videos(tmp_path / 'videos', 6)
  out = f'ram://{tmp_path.name}/records'
  manifest = _make_records(videos, out, per_shard=2)
  assert manifest['status'] == 'complete' and manifest['counts']['written'] == 6
  shards = [s['file'] for split in ('test', 'train') for s in manifest['splits'][split]['shards']]
  assert len(shards) == 4  # 3 test and 3 train videos, 2 per shard.
  assert files.listdir(out) == sorted(
      ['manifest.json', 'test.csv', 'train.csv']
      + [f for s in shards for f in (s, s.replace('.tfrecord', '.json'))])
  with files.open(files.join(out, 'manifest.json')) as f:
    assert json.load(f) == manifest

  source = pipeline.RecordSource(
      pipeline.default_config(dir=out, num_frames=4, min_resize=32, max_resize=32, crop_size=32,
                              eval_resize=32, audio_seconds=0.4),
      batch_size=2, process_index=0, process_count=1, seed=0)
  batch = next(source.train_batches(0))
  assert batch['video'].shape == (2, 4, 32, 32, 3) and batch['audio'].shape[0] == 2
  assert [int(r['index']) for r in source.video_table('train')] == [0, 1, 2]

  written = []
  original = make_records._write_shard  # pylint: disable=protected-access
  monkeypatch.setattr(make_records, '_write_shard',
                      lambda d, shard, *a: written.append(shard.name) or original(d, shard, *a))
  assert _make_records(videos, out, per_shard=2) == manifest
  assert not written  # Every shard was finished: nothing is converted again.
  files.remove(files.join(out, shards[-1]))  # As if the run had stopped during the last shard.
  assert _make_records(videos, out, per_shard=2) == manifest
  assert written == [shards[-1].removesuffix('.tfrecord')]


def test_make_records_command_takes_a_url(tmp_path):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from avssl.data_prep import make_records  # pylint: disable=g-import-not-at-top
  videos = _videos(tmp_path / 'videos', 3)
  out = f'ram://{tmp_path.name}/cli'
  flags.FLAGS([__file__, '--dataset=folder', f'--input={videos}', f'--output_dir={out}',
               '--fps=10', '--short_side=32', '--sample_rate=16000', '--workers=0'])
  try:
    make_records.main([__file__])
  finally:
    flags.FLAGS.unparse_flags()
  assert files.exists(files.join(out, 'manifest.json'))
  assert files.exists(files.join(out, 'train.csv'))


def test_raw_video_folders_must_be_local():
  from avssl.data_prep import annotations  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match='decoded from local disk'):
    annotations.parse('folder', root='ram://videos')


def test_orbax_receives_the_url_unchanged(monkeypatch):
  seen = []

  class Recorder:

    def __init__(self, directory, options=None, item_handlers=None):
      del options, item_handlers
      seen.append(directory)

  # Orbax's CheckpointManager, as the Checkpointer subclasses it (without its preemption polling).
  monkeypatch.setattr(checkpointing, '_Manager', Recorder)
  checkpointing.Checkpointer('gs://bucket/run', every_steps=1, keep=1)
  checkpointing.Checkpointer('gs://bucket/run', every_steps=1, keep=1, directory='gs://b/ckpt')
  checkpointing.Checkpointer('runs/x', every_steps=1, keep=1)
  assert seen == ['gs://bucket/run/checkpoints', 'gs://b/ckpt',
                  str(pathlib.Path.cwd() / 'runs' / 'x' / 'checkpoints')]


def test_a_run_on_ram_trains_evaluates_and_labels(avsynth_records, tmp_path):
  """`selavi_vggsound:tiny` with its records and workdir on `ram://` (checkpoints local: orbax's
  tensorstore does not write `ram://`), then `--mode=eval` and `--mode=label`: everything lands at
  the URL (and, by the module's fixture, no `ram:` folder appears in the working directory)."""
  from avssl.modes import evaluate, label, train  # pylint: disable=g-import-not-at-top
  records = f'ram://{tmp_path.name}/records'
  for name in files.list_files(avsynth_records):
    files.copy(files.join(avsynth_records, name), files.join(records, name))
  workdir = f'ram://{tmp_path.name}/run'
  config = load_config('selavi_vggsound', 'tiny')
  config.data.dir = records
  config.checkpoint_dir = str(tmp_path / 'checkpoints')
  train.train_and_evaluate(config, workdir)
  assert (tmp_path / 'checkpoints').is_dir()
  with files.open(files.join(workdir, 'eval.json')) as f:
    assert 'step' in json.load(f)
  config.evaluation.run = ('method',)
  evaluate.evaluate(config, workdir)
  assert {'tables.md', 'method.json', 'method.md'} <= set(files.listdir(files.join(workdir, 'eval')))
  label.label(config, workdir)
  site = files.list_files(files.join(workdir, 'browser'))
  assert {'index.html', 'browser.js', 'browser.css', 'data/site.js'} <= set(site)
  assert any(name.startswith('media/') for name in site)
  assert files.exists(files.join(workdir, 'labels.csv'))
  assert files.exists(files.join(workdir, 'progress.json'))
  assert files.glob(files.join(workdir, 'plots', '*.png'))
  assert files.glob(files.join(workdir, 'events.out.tfevents.*'))


# The source tree: every file access goes through avssl/files.py.

BANNED_CALLS = ('open', 'os.path.exists', 'os.path.isfile', 'os.path.isdir', 'os.path.getsize',
                'os.makedirs', 'os.listdir', 'os.scandir', 'os.walk', 'os.remove', 'os.unlink',
                'os.rename', 'os.replace', 'os.path.abspath', 'os.path.expanduser')
BANNED_MODULES = ('shutil', 'glob', 'tf.io.gfile', 'tensorflow.io.gfile')
#: (module, function) -> why it may touch files directly.
ALLOWED = {
    ('avssl/data/video_io.py', 'write_video'):
        'PyAV writes the container to a local file; its folder is made locally',
    ('avssl/distributed.py', '_may_be_tpu_vm'):
        "reads this machine's DMI product name under /sys (is it a Compute Engine VM?), never a "
        'user path',
    ('avssl/data_prep/annotations.py', '_list_dir'):
        'scans a local folder of media files (PyAV decodes local files only); os.scandir gives '
        "each entry's type without a stat per file, which matters for 100,000s of videos",
    ('avssl/data_prep/annotations.py', '_assemble'):
        'checks that each media file exists on local disk, where PyAV will decode it',
}


def _dotted(node: ast.AST) -> str:
  if isinstance(node, ast.Name):
    return node.id
  if isinstance(node, ast.Attribute):
    return f'{_dotted(node.value)}.{node.attr}'
  return ''


def _file_accesses(path: pathlib.Path) -> list[tuple[int, str, str]]:
  """(line, what, enclosing function) of every direct file access in `path`."""
  found = []

  def visit(node: ast.AST, function: str) -> None:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      function = node.name
    if isinstance(node, ast.Call):
      name = _dotted(node.func)
      if name in BANNED_CALLS or any(name.startswith(m + '.') for m in BANNED_MODULES):
        found.append((node.lineno, name, function))
    elif isinstance(node, ast.ImportFrom) and node.module in ('os', 'os.path', 'shutil', 'glob'):
      names = [a.name for a in node.names if node.module in ('shutil', 'glob')
               or f'{node.module}.{a.name}' in BANNED_CALLS]
      found.extend((node.lineno, f'from {node.module} import {n}', function) for n in names)
    for child in ast.iter_child_nodes(node):
      visit(child, function)

  visit(ast.parse(path.read_text(), str(path)), '')
  return found


def test_every_file_access_goes_through_the_storage_layer():
  modules = sorted(REPO.glob('avssl/**/*.py'))
  assert len(modules) > 40
  used, offending = set(), []
  for path in modules:
    relative = path.relative_to(REPO).as_posix()
    if relative == 'avssl/files.py':
      continue
    for line, what, function in _file_accesses(path):
      if (relative, function) in ALLOWED:
        used.add((relative, function))
      else:
        offending.append(f'{relative}:{line}: {what} (in {function or "the module"})')
  assert not offending, ('direct file access; use avssl.files (or allow-list it with its reason):\n'
                         + '\n'.join(offending))
  assert used == set(ALLOWED), f'allow-list entries with nothing to allow: {set(ALLOWED) - used}'
