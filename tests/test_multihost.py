"""Two processes x 4 CPU devices (jax.distributed on 127.0.0.1, gloo collectives), each feeding its own
half of every batch, reach the same parameters as one process with 8 devices."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np

from conftest import REPO
from avssl.modes import setup as setup_mode, train

_STEPS = 4


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _launch_two_processes(workdir) -> list[subprocess.CompletedProcess]:
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4', JAX_PLATFORMS='cpu')
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, '-m', 'avssl.main', '--config=configs/supervised_synthetic.py:tiny',
       f'--workdir={workdir}', f'--config.total_steps={_STEPS}', '--config.log_every_steps=1',
       f'--config.distributed.coordinator_address=127.0.0.1:{port}',
       '--config.distributed.num_processes=2', f'--config.distributed.process_id={i}'],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  outputs = [p.communicate(timeout=300)[0] for p in procs]
  for i, (p, out) in enumerate(zip(procs, outputs)):
    assert p.returncode == 0, f'process {i} failed:\n{out[-4000:]}'
    assert f'process {i} of 2; 4 local devices, 8 in all' in out
  return outputs


def test_two_processes_match_one_process_with_eight_devices(tmp_path):
  from conftest import load_config  # pylint: disable=g-import-not-at-top
  _launch_two_processes(tmp_path / 'two')

  config = load_config('supervised_synthetic', 'tiny')
  config.total_steps = _STEPS
  single = train.train_and_evaluate(config, str(tmp_path / 'one'))
  run = setup_mode.setup(config, str(tmp_path / 'two'))  # restores the two-process checkpoint
  run.checkpointer.close()

  assert int(run.state.step) == int(single.step) == _STEPS
  two = jax.tree_util.tree_leaves_with_path((run.state.params, run.state.batch_stats))
  one = jax.tree_util.tree_leaves((single.params, single.batch_stats))
  for (path, a), b in zip(two, one):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6,
                               err_msg=jax.tree_util.keystr(path))
  fresh = setup_mode.setup(config, str(tmp_path / 'fresh'))
  fresh.checkpointer.close()
  assert not np.allclose(np.asarray(single.params['classifier']['kernel']),
                         np.asarray(fresh.state.params['classifier']['kernel']))


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
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4', JAX_PLATFORMS='cpu')
  address = f'127.0.0.1:{_free_port()}'
  procs = [subprocess.Popen([sys.executable, '-c', _ORDERED_PASS, avsynth_records, address, str(i)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True) for i in range(2)]
  outputs = [p.communicate(timeout=120)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-4000:]
    lines = [line for line in out.splitlines() if line.startswith('index ')]
    assert lines == ['index ' + ' '.join(map(str, range(58)))]
