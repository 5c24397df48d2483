"""Test setup: 8 simulated CPU devices, set before anything imports jax."""

import os

# The tests' programs are tiny and compiled once or twice each, so compiling is most of the suite's
# time: without LLVM's optimisation passes XLA's CPU backend compiles them in about 60% of it (the
# whole suite: 810 s -> 540 s on 2 cores). Subprocesses (multi-host, preemption) inherit the flags, so
# their numbers equal this process's.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_backend_optimization_level=0'
                           + ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ['JAX_PLATFORMS'] = 'cpu'

import pathlib  # pylint: disable=g-import-not-at-top,wrong-import-position
import shutil  # pylint: disable=g-import-not-at-top,wrong-import-position
import tempfile  # pylint: disable=g-import-not-at-top,wrong-import-position
from collections.abc import Mapping, Sequence  # pylint: disable=g-import-not-at-top,wrong-import-position

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = pathlib.Path(__file__).resolve().parents[1]

# One compilation cache for the session: the many tiny runs (every config's `:tiny`, every method's
# tests) compile the same programs again and again; XLA then compiles each one once. pytest-xdist's
# workers inherit the controller's environment, so they and every subprocess share one folder.
os.environ.setdefault('AVSSL_TEST_COMPILATION_CACHE', tempfile.mkdtemp(prefix='avssl-xla-cache-'))
jax.config.update('jax_compilation_cache_dir', os.environ['AVSSL_TEST_COMPILATION_CACHE'])
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


# The slowest files first. pytest-xdist's `--dist loadfile` hands files to the two workers in
# collection order; when the long ones (real training subprocesses, notebooks, every config) start
# first, the short ones fill the gaps and both workers end together instead of one waiting on the
# other's last long file.
SLOW_FIRST = ('test_preemption.py', 'test_configs.py', 'test_multihost.py', 'test_accelerator.py',
              'test_notebook.py', 'test_evaluation.py', 'test_selavi.py', 'test_storage.py',
              'test_browser.py')


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(SLOW_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # Stable: a file keeps its order.


def pytest_configure(config):
  del config
  assert jax.device_count() == 8, 'tests expect 8 simulated CPU devices (see tests/conftest.py)'


#: Where the browser tests look for Chromium after $AVSSL_CHROMIUM: Debian's package, Ubuntu's (a snap
#: wrapper), Google Chrome; then these names on PATH; then playwright's own download, if it was made.
CHROMIUM_PATHS = ('/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome')
CHROMIUM_NAMES = ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable')


def find_chromium(environ: Mapping[str, str] = os.environ, paths: Sequence[str] = CHROMIUM_PATHS,
                  playwright: bool = True) -> tuple[str | None, list[str]]:
  """(the first Chromium executable found or None, every place looked in): the browser tests drive
  whichever Chromium the machine has, since none is installed for them (scripts/env.sh needs no root)."""
  tried = []
  for path in ([environ['AVSSL_CHROMIUM']] if environ.get('AVSSL_CHROMIUM') else []) + list(paths):
    tried.append(path)
    if os.path.isfile(path) and os.access(path, os.X_OK):
      return path, tried
  for name in CHROMIUM_NAMES:
    tried.append(f'{name} on PATH')
    found = shutil.which(name, path=environ.get('PATH', ''))
    if found:
      return found, tried
  if playwright:
    tried.append("playwright's download (playwright install chromium)")
    from playwright.sync_api import sync_playwright  # pylint: disable=g-import-not-at-top
    with sync_playwright() as driver:
      path = driver.chromium.executable_path
    if os.path.isfile(path) and os.access(path, os.X_OK):
      return path, tried
  return None, tried


def require_chromium(environ: Mapping[str, str] = os.environ, paths: Sequence[str] = CHROMIUM_PATHS,
                     playwright: bool = True) -> str:
  """`find_chromium`'s executable; without one the test skips with a line that says where it looked,
  or fails where AVSSL_REQUIRE_CHROMIUM=1 (CI, whose machine has one: there the tests must run)."""
  path, tried = find_chromium(environ, paths, playwright)
  if path is not None:
    return path
  reason = f'no Chromium found (tried {", ".join(tried)}); set AVSSL_CHROMIUM to its executable'
  if environ.get('AVSSL_REQUIRE_CHROMIUM') == '1':
    pytest.fail(reason + ' (AVSSL_REQUIRE_CHROMIUM=1)')
  pytest.skip(reason)


@pytest.fixture(scope='session')
def chromium_executable() -> str:
  return require_chromium()


def load_config(name: str, arg: str = ''):
  """`configs/<name>.py:arg`, as `--config` would give it."""
  from avssl import config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.load(f'{REPO / "configs" / name}.py:{arg}')


@pytest.fixture
def tiny_config():
  """The loop's tiny supervised config, shrunk further to a few steps with checkpoints every step."""
  config = load_config('supervised_synthetic', 'tiny')
  config.batch_size = 16
  config.total_steps = 6
  config.checkpoint_every_steps = 1
  config.log_every_steps = 1
  return config


def make_avsynth(root: pathlib.Path, *, num_videos: int, flow: bool = False,
                 test_fraction: float = 0.1, seed: int = 0) -> str:
  """avsynth clips (6 classes, 1.2 s at 40², 10 fps, 16 kHz) made through the real path: mp4 files
  written by make_synthetic, converted by make_records (with TV-L1 flow when `flow`)."""
  from avssl.data_prep import (  # pylint: disable=g-import-not-at-top
      annotations, make_records, make_synthetic)
  make_synthetic.main([f'--output_dir={root / "videos"}', f'--num_videos={num_videos}',
                       '--num_classes=6', '--size=40', '--fps=10', '--duration=1.2',
                       '--sample_rate=16000', f'--test_fraction={test_fraction}', f'--seed={seed}',
                       '--workers=1']
                      + (['--flow_friendly'] if flow else []))
  settings = make_records.Settings(fps=10.0, short_side=40, sample_rate=16000, min_duration=1.0,
                                   flow=flow, audio_only=False, require_audio=True,
                                   jpeg_quality=90, examples_per_shard=16)
  make_records.run(annotations.parse('folder', root=str(root / 'videos')), str(root / 'records'),
                   settings, dataset='folder', workers=0)
  return str(root / 'records')


@pytest.fixture(scope='session')
def avsynth_records(tmp_path_factory):
  """A tiny avsynth record set: 58 train + 6 test clips (see `make_avsynth`)."""
  return make_avsynth(tmp_path_factory.mktemp('avsynth'), num_videos=64, flow=False)


@pytest.fixture(scope='session')
def avsynth_flow_records(tmp_path_factory):
  """Tiny flow-friendly avsynth records with TV-L1 flow: 18 train + 6 test clips."""
  return make_avsynth(tmp_path_factory.mktemp('avsynth_flow'), num_videos=24, flow=True,
                  test_fraction=0.25)


def make_class_folders(root: pathlib.Path, *, classes: int, per_class: int, per_shard: int,
                       sorted_shards: bool = False) -> str:
  """`classes` folders of `per_class` 1.1 s clips (16², 10 fps, a 440 Hz tone at 16 kHz; class c's
  frames grey level 25·c), whose ids sort by class, converted by make_records into shards of `per_shard`; with `sorted_shards` cut in video_id
  order, as make_records did before it ordered shards by a hash of the ids."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from avssl.data import video_io  # pylint: disable=g-import-not-at-top
  from avssl.data_prep import annotations, make_records  # pylint: disable=g-import-not-at-top
  videos = root / 'videos'
  if not videos.exists():
    tone = (0.1 * np.sin(2 * np.pi * 440 * np.arange(17600) / 16000)).astype(np.float32)
    for c in range(classes):
      for k in range(per_class):
        frames = np.full((11, 16, 16, 3), 25 * c, np.uint8)
        video_io.write_video(str(videos / f'class{c}' / f'clip{k}.mp4'), frames, 10, tone, 16000)
  settings = make_records.Settings(fps=10.0, short_side=16, sample_rate=16000, min_duration=1.0,
                                   flow=False, audio_only=False, require_audio=True,
                                   jpeg_quality=90, examples_per_shard=per_shard)
  output = root / ('sorted' if sorted_shards else 'records')
  with pytest.MonkeyPatch.context() as patch:
    if sorted_shards:
      patch.setattr(make_records, 'shard_order_key', lambda video_id, seed: video_id)
    make_records.run(annotations.parse('folder', root=str(videos)), str(output), settings,
                     dataset='folder', workers=0)
  return str(output)


@pytest.fixture(scope='session')
def class_folder_records(tmp_path_factory):
  """8 class folders of 8 clips each in 4 shards of 16, written twice: (make_records' mixed shards,
  the same cut in video_id order as an earlier make_records cut them)."""
  root = tmp_path_factory.mktemp('class_folders')
  return tuple(make_class_folders(root, classes=8, per_class=8, per_shard=16, sorted_shards=s)
               for s in (False, True))


@pytest.fixture(scope='session')
def _selavi_tiny_run(avsynth_records, tmp_path_factory):
  from avssl.modes import train  # pylint: disable=g-import-not-at-top
  config = load_config('selavi_vggsound', 'tiny')
  config.data.dir = avsynth_records
  workdir = tmp_path_factory.mktemp('selavi_tiny')
  train.train_and_evaluate(config, str(workdir))
  return workdir


@pytest.fixture(scope='session')
def new_records(tmp_path_factory):
  """Eight avsynth videos made with another seed than `avsynth_records`: new to a model trained there."""
  return make_avsynth(tmp_path_factory.mktemp('new_videos'), num_videos=8, test_fraction=0, seed=7)


@pytest.fixture
def selavi_workdir(_selavi_tiny_run, tmp_path):
  """A copy (the test's own) of a trained 4-step `selavi_vggsound:tiny` run on `avsynth_records`."""
  workdir = tmp_path / 'selavi'
  shutil.copytree(_selavi_tiny_run, workdir)
  return str(workdir)


def random_like(variables):
  """Random weights of the shapes of `variables` (BN and LayerNorm scales 1, offsets and means 0)
  without compiling the initialisers: XLA takes seconds on the threefry draws of even a small model."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)

  def fill(path, x):
    name = jax.tree_util.keystr(path)
    if "'var'" in name or "'scale'" in name:
      return np.ones(x.shape, x.dtype)
    if "'mean'" in name or "'bias'" in name:
      return np.zeros(x.shape, x.dtype)
    return (rng.standard_normal(x.shape) / np.sqrt(np.prod(x.shape[:-1]))).astype(x.dtype)

  return jax.tree_util.tree_map_with_path(fill, variables)


def tree_leaves(tree) -> dict:
  """The arrays of a pytree, by path, on the host."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  return {jax.tree_util.keystr(path): np.asarray(x)
          for path, x in jax.tree_util.tree_leaves_with_path(tree)}


def state_leaves(state) -> dict:
  """Every array a resumed run must reproduce (step, params, BN statistics, optimiser state, RNG and
  method state), by path, on the host."""
  return tree_leaves((state.step, state.params, state.batch_stats, state.opt_state, state.rng,
                      state.method_state))
