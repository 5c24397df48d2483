"""The device mesh and how arrays are laid out on it.

One mesh over every device of every process, with a single `data` axis: the batch is split over it and
the train state is replicated. Under `jax.jit` with these shardings the compiler inserts the
cross-device reductions (gradient means, BatchNorm statistics of the *global* batch, Sinkhorn's column
sums), so model and method code is written as if for one device.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh over all (global) devices, ordered so each process's devices are contiguous."""
  devices = jax.devices() if devices is None else devices
  devices = sorted(devices, key=lambda d: (d.process_index, d.id))
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array (train state, scalars)."""
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """The leading (example) axis is split over the `data` axis; other axes are whole."""
  return NamedSharding(mesh, P(DATA_AXIS))


def check_global_batch(global_batch_size: int, mesh: Mesh) -> int:
  """Returns the per-process batch size, or raises if the global batch cannot be split evenly."""
  n_devices = mesh.devices.size
  if global_batch_size % n_devices:
    raise ValueError(
        f'batch_size={global_batch_size} does not divide over {n_devices} devices; '
        f'set --config.batch_size to a multiple of {n_devices}')
  return global_batch_size // jax.process_count()


def to_global(local_batch: Any, mesh: Mesh) -> Any:
  """Turns this process's numpy batch (a pytree) into global `jax.Array`s sharded over `data`.

  Each process passes only its own slice of the global batch, in process order; the result's leading
  dimension is the global batch size.
  """
  sharding = batch_sharded(mesh)
  n_local = len(mesh.local_devices)

  def convert(x):
    x = np.asarray(x)
    if x.ndim == 0 or x.shape[0] % n_local:
      raise ValueError(
          f'host batch leading dimension {x.shape[:1]} does not divide over the {n_local} local devices')
    global_shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
    return jax.make_array_from_process_local_data(sharding, x, global_shape)

  return jax.tree.map(convert, local_batch)


def prefetch_to_mesh(local_batches: Iterator[Any], mesh: Mesh, size: int = 2) -> Iterator[Any]:
  """`to_global` of each batch of `local_batches`, `size` batches ahead: while the devices run step
  s, the batches of steps s+1..s+size are already being copied to them (transfers are asynchronous),
  so a step never waits for its input's transfer. `size` 0 converts each batch when it is asked for."""
  queue: collections.deque = collections.deque()

  def enqueue(n: int) -> None:
    for batch in itertools.islice(local_batches, n):
      queue.append(to_global(batch, mesh))

  enqueue(size + 1)
  while queue:
    yield queue.popleft()
    enqueue(1)


def host_copy(x: jax.Array) -> np.ndarray:
  """A replicated array as numpy on every process (each holds a full copy; nothing crosses hosts)."""
  return np.asarray(x.addressable_data(0))


def placed_like(tree: Any, reference: Any) -> Any:
  """`tree` with the dtypes and shardings of `reference`, so a jitted step's in_shardings still hold
  after a method replaces part of the state (label updates, head resets, alignment)."""
  return jax.tree.map(lambda x, ref: jax.device_put(jnp.asarray(x, ref.dtype), ref.sharding),
                      tree, reference)
