"""Nothing silently wrong: a mode that needs trained weights refuses to run without them, a damaged
newest checkpoint falls back to the previous intact one, and a degenerate config is refused at start;
each with one line naming the file, folder or key."""

import logging
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, load_config, state_leaves
from avssl import checkpointing, config_lib
from avssl.errors import UserError
from avssl.modes import setup as setup_mode, train


def _tiny_config():
  """The supervised `:tiny` run cut to 6 steps with a checkpoint every step (3 kept), at the full
  config's width: its largest weights are big enough for OCDBT to store them apart from its index."""
  config = load_config('supervised_synthetic', 'tiny')
  config.total_steps, config.checkpoint_every_steps, config.log_every_steps = 6, 1, 1
  config.model.width = 32
  return config


@pytest.mark.parametrize('verbose', [False, True])
def test_label_without_checkpoint_exits_with_one_line_naming_the_workdir(verbose, tmp_path):
  workdir = tmp_path / 'typo'
  result = subprocess.run(
      [sys.executable, '-m', 'avssl.main', '--config=configs/selavi_vggsound.py:tiny',
       f'--workdir={workdir}', '--mode=label', *(['--verbose'] if verbose else [])],
      cwd=REPO, text=True, capture_output=True, timeout=120, check=False)
  assert result.returncode == 2, result.stderr[-2000:]
  lines = [line for line in result.stderr.splitlines() if line.startswith('avssl:')]
  assert lines == [f'avssl: no checkpoint in {workdir / "checkpoints"}: --mode=label needs a trained '
                   'model; train first (--mode=train with this --workdir), or set '
                   '--config.allow_untrained=true to use the random initialisation']
  assert ('Traceback' in result.stderr) == verbose  # The traceback only with --verbose.
  assert not workdir.exists()  # Refused before anything was written.


def test_init_from_without_checkpoint_is_refused_unless_untrained_is_allowed(tmp_path):
  config = _tiny_config()
  config.init_from = str(tmp_path / 'pretrained')
  with pytest.raises(UserError, match=f'init_from={tmp_path}/pretrained: no checkpoint in '):
    setup_mode.setup(config, str(tmp_path / 'run'))
  config.allow_untrained = True
  run = setup_mode.setup(config, str(tmp_path / 'run'), trained_for='--mode=eval')
  run.checkpointer.close()
  assert int(run.state.step) == 0
  assert not (tmp_path / 'pretrained').exists()


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  """A 6-step run and its final state; its checkpoints are steps 4, 5 and 6."""
  workdir = tmp_path_factory.mktemp('uninterrupted')
  return workdir, state_leaves(train.train_and_evaluate(_tiny_config(), str(workdir)))


def _data_file(step: pathlib.Path) -> pathlib.Path:
  """The biggest of the checkpoint's OCDBT data files: the largest weights' zarr chunks (zstd frames
  without a checksum, which TensorStore reads back without noticing a flipped byte)."""
  return max(step.glob('state/**/d/*'), key=lambda p: p.stat().st_size)


def _truncate_chunk(step):
  chunk = _data_file(step)
  chunk.write_bytes(chunk.read_bytes()[:chunk.stat().st_size // 2])


def _remove_metadata(step):
  (step / 'state' / '_METADATA').unlink()


def _empty_folder(step):
  shutil.rmtree(step)
  step.mkdir()


def _flip_byte(step):
  """Flips one bit of the largest data file where only the saved checksums can tell: TensorStore
  decodes the damaged chunk without an error. Where that is depends on the file's layout (chunks
  land in the order concurrent writes finish, between frame headers), so the byte is searched from
  the file's middle on; a flip that TensorStore notices itself, or one in bytes no read uses, is
  undone and the next byte tried."""
  chunk = _data_file(step)
  original = chunk.read_bytes()
  checkpointer = checkpointing.Checkpointer(str(step.parent.parent), every_steps=1, keep=None)
  try:
    for position in range(len(original) // 2, len(original)):
      data = bytearray(original)
      data[position] ^= 0x01
      chunk.write_bytes(bytes(data))
      try:
        checkpointer.restore_raw(int(step.name))
      except checkpointing.ChecksumError:
        return
      except Exception:  # pylint: disable=broad-except  # TensorStore noticed: not this test's case.
        pass
  finally:
    checkpointer.close()
  raise AssertionError(f'no byte of {chunk} past its middle is caught by the checksums alone')


@pytest.mark.parametrize('damage', [_truncate_chunk, _remove_metadata, _empty_folder, _flip_byte])
def test_damaged_newest_checkpoint_falls_back_to_the_previous_step(damage, uninterrupted, tmp_path,
                                                                   caplog):
  source, final = uninterrupted
  workdir = tmp_path / 'run'
  shutil.copytree(source, workdir)
  newest = workdir / 'checkpoints' / '6'
  damage(newest)
  with caplog.at_level(logging.WARNING):
    resumed = train.train_and_evaluate(_tiny_config(), str(workdir))

  lines = [r.getMessage() for r in caplog.records if 'cannot be read' in r.getMessage()]
  assert len(lines) == 1 and lines[0].startswith(f'Checkpoint {newest} cannot be read ('), lines
  assert lines[0].endswith(f'set aside as {newest}.damaged, using step 5 instead')
  if damage is _flip_byte:
    assert 'ChecksumError: the checksums of 1 of' in lines[0]
  b = state_leaves(resumed)
  assert final.keys() == b.keys()
  for key in final:
    np.testing.assert_array_equal(final[key], b[key], err_msg=key)
  assert (workdir / 'checkpoints' / '6.damaged').is_dir()  # Kept, not deleted.
  checkpointer = checkpointing.Checkpointer(str(workdir), every_steps=1, keep=3)
  assert checkpointer.all_steps() == [4, 5, 6]  # Step 6 saved again by the resumed run.
  checkpointer.close()


def test_no_readable_checkpoint_is_a_user_error_and_renames_nothing(tmp_path):
  (tmp_path / 'checkpoints' / '3').mkdir(parents=True)
  checkpointer = checkpointing.Checkpointer(str(tmp_path), every_steps=1, keep=None)
  with pytest.raises(UserError, match=f'no checkpoint in {tmp_path}/checkpoints can be read '
                                      r'\(step 3: '):
    checkpointer.restore_raw()
  checkpointer.close()
  assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir()) == ['3']


@pytest.mark.parametrize('override, message', [
    ({'total_steps': 0}, 'config.total_steps=0: must be a positive number of steps'),
    ({'total_epochs': 0.0}, 'config.total_epochs=0.0: must be a positive number of epochs'),
    ({'total_steps': -5}, 'config.total_steps=-5: must be a positive number of steps'),
    ({'selavi.num_clusters': 1}, 'config.selavi.num_clusters=1: must be at least 2'),
    ({'checkpoint_every_steps': 0}, 'config.checkpoint_every_steps=0: must be a positive'),
    ({'schedule.warmup_steps': -1}, 'config.schedule.warmup_steps=-1: must be a non-negative'),
])
def test_degenerate_config_is_refused_naming_its_key(override, message):
  config = load_config('selavi_vggsound', 'tiny')
  for key, value in override.items():  # As `--config.<key>=<value>` sets it.
    *parents, last = key.split('.')
    node = config
    for part in parents:
      node = node[part]
    node[last] = value
  config_lib.prefer_given_units(config, override)
  with pytest.raises(UserError, match=message.replace('(', r'\(')):
    config_lib.validate(config)


def test_tiny_run_switches_to_epochs_from_the_command_line(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'avssl.main', '--config=configs/supervised_synthetic.py:tiny',
       '--config.total_epochs=0.125', '--config.model.width=32', f'--workdir={tmp_path}'],
      cwd=REPO, text=True, capture_output=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  # `:tiny` sets total_steps=30; 0.125 of an epoch of 256 clips in batches of 16 is 2 steps.
  assert 'Training supervised from step 0 to 2 (16 steps per epoch)' in result.stderr
