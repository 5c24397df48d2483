"""What a benchmark ran on, printed with every figure so that numbers from different runs compare."""

from __future__ import annotations

import os
import platform


def cpu() -> str:
  """The host CPU's model name and core count."""
  name = platform.processor() or platform.machine()
  if os.path.exists('/proc/cpuinfo'):
    with open('/proc/cpuinfo') as f:
      names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
    name = names[0] if names else name
  return f'{name}, {os.cpu_count()} cores'


def jax_devices() -> str:
  """The JAX backend and its devices (imports jax: call after any XLA_FLAGS are set)."""
  import jax  # pylint: disable=g-import-not-at-top
  devices = jax.devices()
  return (f'{len(devices)} x {devices[0].device_kind} ({jax.default_backend()}); '
          f'jax {jax.__version__}')
