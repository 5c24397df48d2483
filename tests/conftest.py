"""Test setup: 8 simulated CPU devices, set before anything imports jax."""

import os

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '')
                           + ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ['JAX_PLATFORMS'] = 'cpu'

import pathlib  # pylint: disable=g-import-not-at-top,wrong-import-position

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = pathlib.Path(__file__).resolve().parents[1]


def pytest_configure(config):
  del config
  assert jax.device_count() == 8, 'tests expect 8 simulated CPU devices (see tests/conftest.py)'


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
