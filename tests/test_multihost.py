"""Two processes x 4 CPU devices (jax.distributed on 127.0.0.1, gloo collectives), each feeding its own
half of every batch: SeLaVi, label updates included, reaches the state of one process with 8 devices;
and a SIGTERM to one of them stops both at the same step, with one checkpoint of it."""

import os
import re
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, tree_leaves
from avssl import checkpointing, config_lib
from avssl.modes import setup as setup_mode
from avssl.modes import train

CONFIG = 'tests/configs/selavi_synthetic.py'
TOTAL_STEPS = 10


def _four_devices() -> str:
  """This session's XLA flags (conftest.py) with 4 simulated devices per process instead of 8."""
  return os.environ['XLA_FLAGS'].replace('device_count=8', 'device_count=4')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _launch_two_processes(workdir) -> list[subprocess.Popen]:
  env = dict(os.environ, XLA_FLAGS=_four_devices(), JAX_PLATFORMS='cpu',
             JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
  port = _free_port()
  return [subprocess.Popen(
      [sys.executable, '-m', 'avssl.main', f'--config={CONFIG}', f'--workdir={workdir}',
       f'--config.distributed.coordinator_address=127.0.0.1:{port}',
       '--config.distributed.num_processes=2', f'--config.distributed.process_id={i}'],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]


def _wait(procs: list[subprocess.Popen], already_read: str = '') -> list[str]:
  outputs = [p.communicate(timeout=300)[0] for p in procs]
  outputs[0] = already_read + outputs[0]
  for i, (p, out) in enumerate(zip(procs, outputs)):
    assert p.returncode == 0, f'process {i} failed:\n{out[-4000:]}'
    assert f'process {i} of 2; 4 local devices, 8 in all' in out
  return outputs


def _leaves(workdir) -> dict:
  """The latest checkpoint of `workdir`, restored onto this process's 8 devices."""
  run = setup_mode.setup(config_lib.load(str(REPO / CONFIG)), str(workdir))
  run.checkpointer.close()
  assert int(run.state.step) == TOTAL_STEPS
  return tree_leaves(run.state)


@pytest.fixture(scope='module')
def one_process(tmp_path_factory):
  """The same run in this process, on its 8 devices."""
  workdir = tmp_path_factory.mktemp('one')
  train.train_and_evaluate(config_lib.load(str(REPO / CONFIG)), str(workdir))
  return _leaves(workdir)


def test_two_processes_match_one_process_with_eight_devices(one_process, tmp_path):
  outputs = _wait(_launch_two_processes(tmp_path))
  for out in outputs:  # Both processes took part in both label updates.
    assert len(re.findall(r'Label update 1, heads', out)) == 2
  two = _leaves(tmp_path)
  assert two.keys() == one_process.keys()
  np.testing.assert_array_equal(two[".method_state['self_labels']"],
                                one_process[".method_state['self_labels']"])
  for key in two:
    np.testing.assert_allclose(two[key], one_process[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_sigterm_to_one_process_stops_both_at_the_same_step(tmp_path):
  procs = _launch_two_processes(tmp_path)
  read = []
  for line in procs[0].stdout:
    read.append(line)
    if re.search(r'\] \[2\] ', line):  # Process 0 logged step 2.
      break
  procs[1].send_signal(signal.SIGTERM)
  outputs = _wait(procs, ''.join(read))
  steps = [re.findall(r'preempted at step (\d+); rerun the same command', out) for out in outputs]
  assert steps[0] and steps[0] == steps[1], steps
  stopped = int(steps[0][-1])
  assert 2 <= stopped < TOTAL_STEPS
  checkpointer = checkpointing.Checkpointer(str(tmp_path), every_steps=1, keep=None)
  assert checkpointer.latest_step() == stopped
  checkpointer.close()


_ORDERED_PASS = '''
import sys
import jax
jax.config.update('jax_cpu_collectives_implementation', 'gloo')
jax.distributed.initialize(sys.argv[2], 2, int(sys.argv[3]))
from avssl import passes, sharding
from avssl.data import pipeline
config = pipeline.default_config(dir=sys.argv[1], eval_split='test', with_video=False,
                                 with_audio=False)
source = pipeline.RecordSource(config, batch_size=8, process_index=jax.process_index(),
                               process_count=2, seed=0)
out = passes.ordered_pass(lambda batch: {'label': batch['label']}, source.dataset_batches(),
                          sharding.make_mesh(), keys=('label',))
print('index', ' '.join(map(str, out['index'])))
'''


def test_two_processes_pass_over_every_video_once(avsynth_records):
  """58 videos in shards of 16, 16, 16, 10: process 0 reads 32, process 1 reads 26 and pads to the
  same 8 batches of 4, so the gathers stay in step (unequal counts would hang them)."""
  env = dict(os.environ, XLA_FLAGS=_four_devices(), JAX_PLATFORMS='cpu')
  address = f'127.0.0.1:{_free_port()}'
  procs = [subprocess.Popen([sys.executable, '-c', _ORDERED_PASS, avsynth_records, address, str(i)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True) for i in range(2)]
  outputs = [p.communicate(timeout=120)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-4000:]
    lines = [line for line in out.splitlines() if line.startswith('index ')]
    assert lines == ['index ' + ' '.join(map(str, range(58)))]
