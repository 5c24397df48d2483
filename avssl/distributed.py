"""Whether this process joins a multi-process run (`jax.distributed`), decided before JAX starts.

A multi-host Cloud TPU slice runs the same command on every host; without `jax.distributed` each host
would train its own copy on its own chips and all of them would write the same workdir. So the slice
is detected without a flag, from what its hosts expose, the same signals JAX's own TPU cluster
detection reads (`jax._src.clusters.cloud_tpu_cluster`; not imported, being private):

- GKE and other launchers set environment variables: `TPU_WORKER_HOSTNAMES` or
  `TPU_PROCESS_ADDRESSES` (one entry per host), `TPU_WORKER_ID`, `TPU_ACCELERATOR_TYPE`,
  `TPU_PROCESS_BOUNDS`, and `MEGASCALE_NUM_SLICES` for several slices;
- a TPU VM made with `gcloud compute tpus tpu-vm create` exposes the same facts in its metadata
  (`tpu-env`: `ACCELERATOR_TYPE: 'v4-32'`, `TPU_PROCESS_BOUNDS: '1,1,4'`, `WORKER_ID`, ...), read only
  on a Google Compute Engine machine where JAX has not ruled out TPUs (`TPU_SKIP_MDS_QUERY`, which
  `import jax` sets where it finds no TPU chip).

A single host (v4-8, v5litepod-8, one entry in `TPU_WORKER_HOSTNAMES`) stays one process: there
`jax.distributed` would only add a coordinator to wait for. An explicit configuration decides before
any detection: `config.distributed.coordinator_address`, `config.distributed.auto=true` (JAX detects
SLURM, Open MPI, Cloud TPU) or `JAX_COORDINATOR_ADDRESS` join; `config.distributed.enabled=false`
keeps one process whatever the environment says.
"""

from __future__ import annotations

import math
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import ml_collections
from absl import logging

from avssl.errors import UserError

# The largest slice of one host: v2/v3/v4/v5p name TensorCores (v4-8 = 4 chips, one host), v5e and
# v6e name chips (v5litepod-8 = 8 chips, one host); every larger slice spans several hosts.
_MAX_ONE_HOST = 8
_ACCELERATOR_TYPE = re.compile(r'^[a-z0-9]+-(\d+)$')
_METADATA_URL = 'http://{host}/computeMetadata/v1/instance/attributes/tpu-env'
# The metadata server is on the VM's own link; an HTTP(S)_PROXY of the environment cannot reach it.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Decision(NamedTuple):
  """Whether to call `jax.distributed.initialize` and why, for the one line the run logs."""
  join: bool
  reason: str


def should_initialize(dist: ml_collections.ConfigDict, environ: Mapping[str, str],
                      tpu_env: Callable[[], Mapping[str, str]] | None = None) -> Decision:
  """The decision for the `config.distributed` block `dist` in the environment `environ`.
  `tpu_env` reads the TPU VM's `tpu-env` metadata (None: not on a TPU VM); it is called only when
  neither the config nor the environment has decided, so that elsewhere nothing goes to the network.
  """
  explicit = [name for name, given in (
      (f'config.distributed.coordinator_address={dist.coordinator_address}',
       dist.coordinator_address),
      ('config.distributed.auto=true', dist.auto),
      (f'JAX_COORDINATOR_ADDRESS={environ.get("JAX_COORDINATOR_ADDRESS")}',
       environ.get('JAX_COORDINATOR_ADDRESS'))) if given]
  if not dist.enabled:
    if explicit:
      raise UserError(f'config.distributed.enabled=false contradicts {explicit[0]}: unset one of them')
    return Decision(False, 'one process: config.distributed.enabled=false')
  if explicit:
    return Decision(True, explicit[0])
  hosts = tpu_hosts(environ)
  if hosts is None and tpu_env is not None:
    hosts = tpu_hosts(_as_environment(tpu_env()), source='the TPU VM metadata (tpu-env)')
  if hosts is None:
    return Decision(False, 'one process: no coordinator configured, JAX_COORDINATOR_ADDRESS unset '
                    'and no multi-host Cloud TPU detected')
  many, evidence = hosts
  if many:
    return Decision(True, f'multi-host Cloud TPU: {evidence}')
  return Decision(False, f'one process: single-host Cloud TPU ({evidence})')


def tpu_hosts(environ: Mapping[str, str], source: str = 'the environment'
              ) -> tuple[bool, str] | None:
  """(True when the Cloud TPU described by `environ` spans several hosts, the evidence), or None
  when `environ` describes no TPU slice. The most direct signal decides: the list of hosts, then the
  process bounds, then the accelerator type; several slices or a worker id above 0 mean several
  hosts whatever the rest says."""
  slices = int(environ.get('MEGASCALE_NUM_SLICES') or 1)
  if slices > 1:
    return True, f'MEGASCALE_NUM_SLICES={slices} in {source}'
  worker = environ.get('TPU_WORKER_ID') or environ.get('CLOUD_TPU_TASK_ID')
  if worker and worker.isdigit() and int(worker) > 0:
    return True, f'worker {worker} in {source}'
  for key in ('TPU_PROCESS_ADDRESSES', 'TPU_WORKER_HOSTNAMES'):
    if environ.get(key):
      count = len([host for host in environ[key].split(',') if host.strip()])
      return count > 1, f'{key} lists {count} host{"s" if count > 1 else ""} in {source}'
  if environ.get('TPU_PROCESS_BOUNDS'):
    count = math.prod(int(n) for n in environ['TPU_PROCESS_BOUNDS'].split(','))
    return count > 1, f'TPU_PROCESS_BOUNDS={environ["TPU_PROCESS_BOUNDS"]} in {source}'
  accelerator = environ.get('TPU_ACCELERATOR_TYPE', '')
  if match := _ACCELERATOR_TYPE.match(accelerator):
    return (int(match.group(1)) > _MAX_ONE_HOST,
            f'accelerator type {accelerator} in {source}')
  return None


def initialize(config: ml_collections.ConfigDict, environ: Mapping[str, str] | None = None) -> None:
  """Joins a multi-process run when `should_initialize` says so, logging why it did or did not.
  Must run before anything touches a JAX device."""
  environ = os.environ if environ is None else environ
  dist = config.distributed
  decision = should_initialize(dist, environ, _read_tpu_env if _may_be_tpu_vm(environ) else None)
  logging.info('jax.distributed: %s', decision.reason)
  if not decision.join:
    return
  if dist.cpu_collectives:
    jax.config.update('jax_cpu_collectives_implementation', dist.cpu_collectives)
  if dist.coordinator_address:
    jax.distributed.initialize(dist.coordinator_address, dist.num_processes, dist.process_id)
  else:
    jax.distributed.initialize()


def _as_environment(tpu_env: Mapping[str, str]) -> dict[str, str]:
  """The metadata's keys under their environment names (`ACCELERATOR_TYPE` is
  `TPU_ACCELERATOR_TYPE`, `WORKER_ID` is `TPU_WORKER_ID`)."""
  renamed = {'ACCELERATOR_TYPE': 'TPU_ACCELERATOR_TYPE', 'WORKER_ID': 'TPU_WORKER_ID'}
  return {renamed.get(key, key): value for key, value in tpu_env.items()}


def _may_be_tpu_vm(environ: Mapping[str, str]) -> bool:
  """On Google Compute Engine (a TPU VM is one), unless JAX found no TPU chip on this machine."""
  if environ.get('TPU_SKIP_MDS_QUERY'):
    return False
  try:
    with open('/sys/class/dmi/id/product_name') as f:
      return f.read().strip() == 'Google Compute Engine'
  except OSError:
    return False


def _read_tpu_env() -> dict[str, str]:
  """The TPU VM's `tpu-env` metadata as a dict (`KEY: 'value'` lines); empty on a GCE machine that
  is not a TPU VM (the attribute does not exist). The metadata server answers within milliseconds on
  GCE; one that does not answer at all is an error, since guessing "one host" on a pod would start
  independent copies of the run."""
  url = _METADATA_URL.format(host=os.environ.get('GCE_METADATA_IP', 'metadata.google.internal'))
  request = urllib.request.Request(url, headers={'Metadata-Flavor': 'Google'})
  error: OSError | None = None
  for attempt in range(3):
    try:
      with _NO_PROXY.open(request, timeout=5) as response:
        lines = response.read().decode().splitlines()
      pairs = (line.split(':', 1) for line in lines if ':' in line)
      return {key.strip(): value.strip().strip('\'"') for key, value in pairs}
    except urllib.error.HTTPError as e:
      if e.code == 404:
        return {}
      error = e
    except OSError as e:
      error = e
    time.sleep(0.5 * (attempt + 1))
  raise UserError(f'cannot read the TPU VM metadata at {url} ({error}): on one host set '
                  '--config.distributed.enabled=false, on a pod --config.distributed.auto=true')
