"""Every config file loads (full and :tiny), every :tiny one trains a step, and bad keys are named."""

import subprocess
import sys

import pytest

from conftest import REPO, load_config
from avssl import config_lib, train

CONFIGS = sorted(p.stem for p in (REPO / 'configs').glob('*.py')
                 if not p.stem.startswith('_') and p.stem != 'common')


def test_there_are_configs():
  assert CONFIGS


@pytest.mark.parametrize('name', CONFIGS)
def test_config_loads_and_tiny_trains_one_step(name, tmp_path, request):
  full = load_config(name)
  assert full.method and full.batch_size > 0
  tiny = load_config(name, 'tiny')
  tiny.total_epochs, tiny.total_steps = None, 1
  if tiny.data.name == 'records':  # Record-based configs train on the tiny avsynth records.
    fixture = 'avsynth_flow_records' if tiny.data.with_flow else 'avsynth_records'
    tiny.data.dir = request.getfixturevalue(fixture)
  state = train.train_and_evaluate(tiny, str(tmp_path))
  assert int(state.step) == 1


def test_parse_arg_types_and_unknown_names():
  arg = config_lib.parse_arg('tiny,batch_size=16,lr=0.5', tiny=False, batch_size=0, lr=0.1)
  assert arg.tiny is True and arg.batch_size == 16 and arg.lr == 0.5
  with pytest.raises(ValueError, match="'bogus' is not known"):
    config_lib.parse_arg('bogus=1', tiny=False)
  with pytest.raises(ValueError, match="'batch_size': cannot read 'x' as int"):
    config_lib.parse_arg('batch_size=x', batch_size=0)


def test_steps_from_epochs_or_steps():
  config = load_config('supervised_synthetic')
  config.total_epochs = 2.5
  assert config_lib.steps(config, 'total', steps_per_epoch=10) == 25
  config.total_steps = 7
  with pytest.raises(ValueError, match='both total_steps and total_epochs'):
    config_lib.steps(config, 'total', steps_per_epoch=10)


def _main(*args):
  return subprocess.run([sys.executable, '-m', 'avssl.main', *args], cwd=REPO, text=True,
                        capture_output=True, timeout=120)


def test_unknown_override_key_fails_at_start_with_its_name(tmp_path):
  result = _main('--config=configs/supervised_synthetic.py:tiny', f'--workdir={tmp_path}',
                 '--config.schedule.warmup_stpes=3')
  assert result.returncode != 0
  assert ('--config.schedule.warmup_stpes: the config has no such key; Did you mean "warmup_steps"?'
          in result.stderr)
  assert not (tmp_path / 'checkpoints').exists()


def test_unknown_config_argument_fails_with_its_name(tmp_path):
  result = _main('--config=configs/supervised_synthetic.py:tiny,bacth_size=8', f'--workdir={tmp_path}')
  assert result.returncode != 0 and "'bacth_size' is not known" in result.stderr
