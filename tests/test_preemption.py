"""Preemption: a real SIGTERM (or kill -9) to a real training subprocess, then a resume that ends
bit-identical to an uninterrupted run.

The runs are `selavi_vggsound:tiny` for 12 steps on the tiny avsynth records: label updates before
steps 0 and 4 (a dataset pass each), checkpoints every 2 steps and right after each label update.
"""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import multihost_utils

from conftest import REPO, load_config, tree_leaves
from avssl import checkpointing
from avssl.methods import selavi
from avssl.modes import train
from avssl.train_state import TrainState

TOTAL_STEPS = 12
GRACE_SECONDS = 30  # What Cloud TPU pods and spot VMs give between the notice and the kill.


def _config(records, **overrides):
  config = load_config('selavi_vggsound', 'tiny')
  config.data.dir, config.total_steps, config.keep_checkpoints = records, TOTAL_STEPS, 20
  for key, value in overrides.items():
    config[key] = value
  return config


def _start(records, workdir, **overrides) -> subprocess.Popen:
  """`python -m avssl.main` on the tiny config, sharing this session's compilation cache."""
  args = [f'--config.{k}={v}' for k, v in {
      'data.dir': records, 'total_steps': TOTAL_STEPS, 'keep_checkpoints': 20, **overrides}.items()]
  env = {**os.environ, 'JAX_COMPILATION_CACHE_DIR': jax.config.jax_compilation_cache_dir,
         'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
         'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '0'}
  return subprocess.Popen(
      [sys.executable, '-m', 'avssl.main', '--config=configs/selavi_vggsound.py:tiny',
       f'--workdir={workdir}', *args], cwd=REPO, env=env, text=True, stderr=subprocess.PIPE,
      stdout=subprocess.DEVNULL)


def _read_until(process: subprocess.Popen, pattern: str, log: list[str]) -> None:
  """Reads the process's log into `log` until a line matches `pattern`."""
  for line in process.stderr:
    log.append(line)
    if re.search(pattern, line):
      return
  raise AssertionError(f'the run ended before logging {pattern!r}:\n{"".join(log[-30:])}')


def _finish(process: subprocess.Popen, log: list[str], timeout: float) -> str:
  _, rest = process.communicate(timeout=timeout)
  return ''.join(log) + rest


def _preempted_step(output: str) -> int:
  found = re.findall(r'preempted at step (\d+); rerun the same command to resume', output)
  assert found, output[-3000:]
  return int(found[-1])


def _final_state(workdir) -> dict:
  checkpointer = checkpointing.Checkpointer(str(workdir), every_steps=1, keep=None)
  raw = checkpointer.restore_raw(TOTAL_STEPS)
  checkpointer.close()
  return tree_leaves(raw)


@pytest.fixture(scope='module')
def uninterrupted(avsynth_records, tmp_path_factory):
  """The reference: the same run, in one go (in this process), as a dict of its final leaves."""
  config = _config(avsynth_records)
  assert selavi.SeLaVi(config).label_update_steps(TOTAL_STEPS, 3) == [0, 4]
  workdir = tmp_path_factory.mktemp('uninterrupted')
  train.train_and_evaluate(config, str(workdir))
  return _final_state(workdir)


def _assert_equal(a: dict, b: dict) -> None:
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_sigterm_at_a_random_step_saves_it_exits_0_and_resumes_identically(
    avsynth_records, uninterrupted, tmp_path):
  step = random.randrange(2, 9)
  process = _start(avsynth_records, tmp_path)
  log: list[str] = []
  _read_until(process, rf'\] \[{step}\] ', log)  # The LoggingWriter's line of step `step`.
  sent = time.monotonic()
  process.send_signal(signal.SIGTERM)
  output = _finish(process, log, timeout=GRACE_SECONDS)
  latency = time.monotonic() - sent
  assert process.returncode == 0, output[-3000:]
  stopped = _preempted_step(output)
  assert step <= stopped < TOTAL_STEPS, (step, stopped)
  checkpointer = checkpointing.Checkpointer(str(tmp_path), every_steps=1, keep=None)
  assert checkpointer.latest_step() == stopped, (step, checkpointer.all_steps())
  checkpointer.close()
  print(f'SIGTERM after step {step}: saved step {stopped}, exit 0 after {latency:.1f} s')
  before = json.loads((tmp_path / 'progress.json').read_text())
  assert before['step'] == stopped and before['uptime_s'] > 0

  train.train_and_evaluate(_config(avsynth_records), str(tmp_path))
  _assert_equal(uninterrupted, _final_state(tmp_path))
  after = json.loads((tmp_path / 'progress.json').read_text())  # The time before the stop counts.
  assert after['step'] == TOTAL_STEPS and after['uptime_s'] > before['uptime_s']


def test_sigterm_during_a_label_update_abandons_the_pass_and_the_resume_redoes_it(
    avsynth_records, uninterrupted, tmp_path):
  process = _start(avsynth_records, tmp_path)
  log: list[str] = []
  # The first label update (a batch-norm warm-up and two dataset passes) starts right after this.
  _read_until(process, r'Training selavi from step 0', log)
  process.send_signal(signal.SIGTERM)
  output = _finish(process, log, timeout=GRACE_SECONDS)
  assert process.returncode == 0, output[-3000:]
  assert _preempted_step(output) == 0
  checkpointer = checkpointing.Checkpointer(str(tmp_path), every_steps=1, keep=None)
  assert checkpointer.all_steps() == [0]
  saved = checkpointer.restore_raw(0)
  checkpointer.close()
  # The state of step 0 before the update: no labels were made, and the update is not marked done.
  assert int(saved['method_state']['updates']) == 0 and int(saved['updated_at']) == -1

  train.train_and_evaluate(_config(avsynth_records), str(tmp_path))
  _assert_equal(uninterrupted, _final_state(tmp_path))


def test_kill_9_after_a_label_updates_checkpoint_resumes_without_redoing_it(
    avsynth_records, uninterrupted, tmp_path):
  # Checkpoints only after label updates (and at the end), so the kill leaves step 4's.
  process = _start(avsynth_records, tmp_path, checkpoint_every_steps=100)
  after_update = tmp_path / 'checkpoints' / '4'
  while not after_update.is_dir() and process.poll() is None:
    time.sleep(0.02)
  process.kill()
  process.communicate()
  assert process.returncode == -signal.SIGKILL, 'the run ended before the kill'
  checkpointer = checkpointing.Checkpointer(str(tmp_path), every_steps=1, keep=None)
  assert checkpointer.latest_step() == 4
  saved = checkpointer.restore_raw(4)
  checkpointer.close()
  assert int(saved['method_state']['updates']) == 2 and int(saved['updated_at']) == 4

  resume = _start(avsynth_records, tmp_path, checkpoint_every_steps=100)
  output = _finish(resume, [], timeout=300)
  assert resume.returncode == 0, output[-3000:]
  assert 'Resuming from the checkpoint of step 4' in output
  assert not re.search(r'Label update \d+, heads', output)  # Update 1 (step 4) was not redone.
  final = _final_state(tmp_path)
  assert int(final["['method_state']['updates']"]) == 2
  _assert_equal(uninterrupted, final)


def test_checkpoints_leave_jax_preemption_sync_counter_alone(tmp_path, monkeypatch):
  """Orbax's own save asks JAX's preemption sync manager about the checkpoint's step, which moves the
  counter the loop's checks are numbered with: under `jax.distributed` a notice arriving after a save
  then waited for a step no process reached, and the processes trained on to the end."""
  calls = []
  ask = multihost_utils.reached_preemption_sync_point
  monkeypatch.setattr(multihost_utils, 'reached_preemption_sync_point',
                      lambda step: calls.append(step) or ask(step))
  state = TrainState(step=jnp.int32(3), params={'w': jnp.ones(2)}, batch_stats={}, opt_state={},
                     rng=jax.random.PRNGKey(0), method_state={})
  checkpointer = checkpointing.Checkpointer(str(tmp_path), every_steps=1, keep=1)
  assert checkpointer.maybe_save(state, 3, final=True)
  checkpointer.close()
  assert checkpointer.latest_step() == 3 and not calls
