"""BatchNorm under jit on a batch sharded over 8 devices normalises with the *global* batch statistics.

This is synchronised BN, which SeLaVi's release uses (SyncBatchNorm over the whole world): the
compiler inserts the cross-device reduction, so no `axis_name` is needed. Each device's shard is given a
very different mean, so per-device statistics would fail the comparison by a wide margin.
"""

import flax.linen as nn
import jax
import numpy as np

from avssl import sharding


def test_batchnorm_uses_global_batch_statistics():
  mesh = sharding.make_mesh()
  rng = np.random.default_rng(0)
  shard_means = np.arange(8, dtype=np.float32)[:, None, None] * 3.0
  x = (rng.standard_normal((8, 4, 5)).astype(np.float32) + shard_means).reshape(32, 5)
  bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
  variables = bn.init(jax.random.PRNGKey(0), x[:1])

  @jax.jit
  def forward(variables, x):
    return bn.apply(variables, x, mutable=['batch_stats'])

  global_x = sharding.to_global(x, mesh)
  y, updates = forward(variables, global_x)
  assert len(global_x.sharding.device_set) == 8

  mean, var = x.astype(np.float64).mean(0), x.astype(np.float64).var(0)
  np.testing.assert_allclose(np.asarray(y), (x - mean) / np.sqrt(var + 1e-5), atol=1e-5)
  np.testing.assert_allclose(np.asarray(updates['batch_stats']['mean']), 0.1 * mean, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(updates['batch_stats']['var']), 0.9 + 0.1 * var, rtol=1e-5)
  per_device_mean = x[:4].mean(0)
  assert not np.allclose(per_device_mean, mean, atol=1.0)
