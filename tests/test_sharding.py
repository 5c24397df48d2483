"""The mesh, the layout of batches and state, and the errors for batches that cannot be split."""

import jax
import numpy as np
import pytest

from avssl import sharding


def test_mesh_spans_all_devices_on_data_axis():
  mesh = sharding.make_mesh()
  assert mesh.axis_names == ('data',)
  assert mesh.devices.size == jax.device_count() == 8


def test_host_batch_becomes_global_array_split_over_devices():
  mesh = sharding.make_mesh()
  batch = {'video': np.arange(16 * 3, dtype=np.float32).reshape(16, 3), 'index': np.arange(16)}
  global_batch = sharding.to_global(batch, mesh)
  assert global_batch['video'].shape == (16, 3)
  shards = sorted(global_batch['video'].addressable_shards, key=lambda s: s.index[0].start)
  assert [s.data.shape for s in shards] == [(2, 3)] * 8
  np.testing.assert_array_equal(np.asarray(shards[3].data), batch['video'][6:8])
  np.testing.assert_array_equal(np.asarray(global_batch['index']), batch['index'])


def test_global_batch_that_does_not_divide_is_named():
  mesh = sharding.make_mesh()
  with pytest.raises(ValueError, match='batch_size=20 does not divide over 8 devices'):
    sharding.check_global_batch(20, mesh)
  with pytest.raises(ValueError, match='does not divide over the 8 local devices'):
    sharding.to_global({'x': np.zeros((6, 2))}, mesh)
  assert sharding.check_global_batch(24, mesh) == 24
