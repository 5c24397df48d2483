"""`jax.distributed` joins on a multi-host Cloud TPU without a flag and never on one host: the decision
against faked TPU environments (GKE's variables, a TPU VM's metadata), explicit settings winning, and
`avssl.main` taking it (jax.distributed.initialize itself is never called in this process)."""

import http.server
import os
import subprocess
import sys
import threading

import jax
import pytest

from conftest import REPO
from avssl import config_lib, distributed
from avssl.errors import UserError

# A v4-32 slice (16 chips, 4 hosts of 4) as GKE describes it to worker 0 in the environment...
V4_32_ENV = {'TPU_WORKER_HOSTNAMES': 't1v-n-0,t1v-n-1,t1v-n-2,t1v-n-3', 'TPU_WORKER_ID': '0',
             'TPU_ACCELERATOR_TYPE': 'v4-32', 'PATH': '/usr/bin'}
# ...and as a TPU VM made by `gcloud compute tpus tpu-vm create` describes it in its `tpu-env`
# metadata (a plain `gcloud ... ssh` shell has no TPU variable).
V4_32_METADATA = {'ACCELERATOR_TYPE': 'v4-32', 'TOPOLOGY': '2x2x4', 'TPU_PROCESS_BOUNDS': '1,1,4',
                  'TPU_CHIPS_PER_PROCESS_BOUNDS': '2,2,1', 'WORKER_ID': '0', 'TYPE': 'V4'}
V4_8_METADATA = {'ACCELERATOR_TYPE': 'v4-8', 'TOPOLOGY': '2x2x1', 'TPU_PROCESS_BOUNDS': '1,1,1',
                 'TPU_CHIPS_PER_PROCESS_BOUNDS': '2,2,1', 'WORKER_ID': '0', 'TYPE': 'V4'}
CPU_ENV = {'PATH': '/usr/bin', 'HOME': '/home/me', 'JAX_PLATFORMS': 'cpu'}


def _dist(**overrides):
  dist = config_lib.distributed_config()
  dist.update(overrides)
  return dist


def _unread():
  raise AssertionError('the metadata was read although the config or environment had decided')


def test_multi_host_tpu_from_the_environment_joins():
  decision = distributed.should_initialize(_dist(), V4_32_ENV, _unread)
  assert decision == (True, 'multi-host Cloud TPU: TPU_WORKER_HOSTNAMES lists 4 hosts in the '
                            'environment')


@pytest.mark.parametrize('metadata', [V4_32_METADATA, {'ACCELERATOR_TYPE': 'v4-32'},
                                      {'ACCELERATOR_TYPE': 'v5litepod-16'}])
def test_multi_host_tpu_vm_from_its_metadata_joins(metadata):
  decision = distributed.should_initialize(_dist(), CPU_ENV, lambda: metadata)
  assert decision.join, decision
  assert decision.reason.endswith('in the TPU VM metadata (tpu-env)')


@pytest.mark.parametrize('environ,metadata', [
    ({'TPU_WORKER_HOSTNAMES': 'localhost', 'TPU_WORKER_ID': '0'}, None),
    ({'TPU_ACCELERATOR_TYPE': 'v4-8'}, None),
    ({'TPU_ACCELERATOR_TYPE': 'v5litepod-8', 'TPU_WORKER_ID': '0'}, None),
    (CPU_ENV, V4_8_METADATA),
    (CPU_ENV, {'ACCELERATOR_TYPE': 'v6e-8'}),
])
def test_single_host_tpu_stays_one_process(environ, metadata):
  decision = distributed.should_initialize(_dist(), environ,
                                           (lambda: metadata) if metadata else None)
  assert not decision.join
  assert decision.reason.startswith('one process: single-host Cloud TPU (')


@pytest.mark.parametrize('metadata', [None, {}])  # Not GCE; a GCE machine that is not a TPU VM.
def test_plain_machine_stays_one_process(metadata):
  decision = distributed.should_initialize(_dist(), CPU_ENV,
                                           None if metadata is None else (lambda: metadata))
  assert decision == (False, 'one process: no coordinator configured, JAX_COORDINATOR_ADDRESS '
                             'unset and no multi-host Cloud TPU detected')


@pytest.mark.parametrize('environ,evidence', [
    ({'TPU_WORKER_HOSTNAMES': 'h0', 'MEGASCALE_NUM_SLICES': '2'}, 'MEGASCALE_NUM_SLICES=2'),
    ({'TPU_ACCELERATOR_TYPE': 'v4-8', 'TPU_WORKER_ID': '3'}, 'worker 3'),  # Misreported type.
    ({'TPU_PROCESS_ADDRESSES': 'a:8476,b:8476'}, 'TPU_PROCESS_ADDRESSES lists 2 hosts'),
    ({'TPU_PROCESS_BOUNDS': '2,2,8'}, 'TPU_PROCESS_BOUNDS=2,2,8'),
])
def test_other_signs_of_several_hosts(environ, evidence):
  assert distributed.should_initialize(_dist(), environ) == (
      True, f'multi-host Cloud TPU: {evidence} in the environment')


@pytest.mark.parametrize('dist,environ,reason', [
    (_dist(coordinator_address='10.0.0.2:1234', num_processes=2), CPU_ENV,
     'config.distributed.coordinator_address=10.0.0.2:1234'),
    (_dist(coordinator_address='10.0.0.2:1234'), {'TPU_ACCELERATOR_TYPE': 'v4-8'},
     'config.distributed.coordinator_address=10.0.0.2:1234'),
    (_dist(auto=True), CPU_ENV, 'config.distributed.auto=true'),
    (_dist(), {**CPU_ENV, 'JAX_COORDINATOR_ADDRESS': 'h0:1234'}, 'JAX_COORDINATOR_ADDRESS=h0:1234'),
])
def test_explicit_settings_join_without_detection(dist, environ, reason):
  assert distributed.should_initialize(dist, environ, _unread) == (True, reason)


def test_disabled_stays_one_process_even_on_a_pod():
  assert distributed.should_initialize(_dist(enabled=False), V4_32_ENV, _unread) == (
      False, 'one process: config.distributed.enabled=false')


def test_disabled_with_a_coordinator_is_refused():
  with pytest.raises(UserError, match='enabled=false contradicts '
                                      'config.distributed.coordinator_address=h0:1'):
    distributed.should_initialize(_dist(enabled=False, coordinator_address='h0:1'), CPU_ENV)


@pytest.fixture
def calls(monkeypatch):
  """jax.distributed.initialize and jax.config.update, recorded instead of run."""
  recorded = []
  monkeypatch.setattr(jax.distributed, 'initialize', lambda *a: recorded.append(('initialize', a)))
  monkeypatch.setattr(jax.config, 'update', lambda *a: recorded.append(('update', a)))
  return recorded


def _config(**overrides):
  config = config_lib.load(f'{REPO}/configs/selavi_vggsound.py:tiny')
  config.distributed.update(overrides)
  return config


def test_initialize_on_a_multi_host_tpu(calls, monkeypatch):
  monkeypatch.setattr(distributed, '_may_be_tpu_vm', lambda environ: False)
  distributed.initialize(_config(), V4_32_ENV)
  assert calls == [('update', ('jax_cpu_collectives_implementation', 'gloo')), ('initialize', ())]


def test_initialize_on_a_tpu_vm_reads_its_metadata(calls, monkeypatch):
  monkeypatch.setattr(distributed, '_may_be_tpu_vm', lambda environ: True)
  monkeypatch.setattr(distributed, '_read_tpu_env', lambda: V4_32_METADATA)
  distributed.initialize(_config(cpu_collectives=''), CPU_ENV)
  assert calls == [('initialize', ())]
  calls.clear()
  monkeypatch.setattr(distributed, '_read_tpu_env', lambda: V4_8_METADATA)
  distributed.initialize(_config(), CPU_ENV)
  assert not calls


def test_initialize_with_a_coordinator(calls):
  distributed.initialize(_config(coordinator_address='h0:1234', num_processes=4, process_id=2,
                                 cpu_collectives=''), CPU_ENV)
  assert calls == [('initialize', ('h0:1234', 4, 2))]


def test_initialize_on_one_host_does_nothing(calls, monkeypatch):
  monkeypatch.setattr(distributed, '_may_be_tpu_vm', lambda environ: False)
  distributed.initialize(_config(), {'TPU_ACCELERATOR_TYPE': 'v4-8'})
  distributed.initialize(_config(enabled=False), V4_32_ENV)
  assert not calls


class _Metadata(http.server.BaseHTTPRequestHandler):
  """A metadata server: the TPU VM's tpu-env at its path for the right header, 404 otherwise."""
  body = ''

  def do_GET(self):  # pylint: disable=invalid-name
    found = (self.path == '/computeMetadata/v1/instance/attributes/tpu-env'
             and self.headers['Metadata-Flavor'] == 'Google' and self.body)
    self.send_response(200 if found else 404)
    self.end_headers()
    self.wfile.write(self.body.encode() if found else b'not found')

  def log_message(self, *args):
    del args


@pytest.mark.parametrize('body,expected', [
    ("ACCELERATOR_TYPE: 'v4-32'\nTPU_PROCESS_BOUNDS: '1,1,4'\nWORKER_ID: '2'\nZONE: 'us-central2-b'\n",
     {'ACCELERATOR_TYPE': 'v4-32', 'TPU_PROCESS_BOUNDS': '1,1,4', 'WORKER_ID': '2',
      'ZONE': 'us-central2-b'}),
    ('', {}),  # A GCE VM that is not a TPU VM: no tpu-env attribute.
])
def test_reads_the_tpu_env_metadata(body, expected, monkeypatch):
  handler = type('Handler', (_Metadata,), {'body': body})
  server = http.server.HTTPServer(('127.0.0.1', 0), handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  try:
    monkeypatch.setenv('GCE_METADATA_IP', f'127.0.0.1:{server.server_port}')
    assert distributed._read_tpu_env() == expected  # pylint: disable=protected-access
  finally:
    server.shutdown()
    server.server_close()


def test_main_logs_its_decision(tmp_path):
  """`python -m avssl.main` decides through `avssl.distributed` and logs why (here: one host of a
  faked single-host TPU; the label mode then stops at the missing checkpoint)."""
  env = {key: value for key, value in os.environ.items() if key != 'JAX_COORDINATOR_ADDRESS'}
  env.update(TPU_WORKER_HOSTNAMES='localhost', TPU_ACCELERATOR_TYPE='v4-8', TPU_SKIP_MDS_QUERY='1')
  result = subprocess.run(
      [sys.executable, '-m', 'avssl.main', '--config=configs/selavi_vggsound.py:tiny',
       f'--workdir={tmp_path / "run"}', '--mode=label'],
      cwd=REPO, env=env, text=True, capture_output=True, timeout=300, check=False)
  assert result.returncode == 2, result.stderr[-2000:]
  assert ('jax.distributed: one process: single-host Cloud TPU (TPU_WORKER_HOSTNAMES lists 1 host '
          'in the environment)') in result.stderr
