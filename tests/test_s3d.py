"""S3D: shapes at GOCA's input size, the parameter count of the PyTorch S3D, and a sharded train step.

Parameter count of the reference PyTorch S3D (kylemin/S3D `model.py`, CoCLR `backbone/s3dg.py`) without
the final classifier, by hand. Convolutions have no bias; each BatchNorm has a weight and a bias (its
running statistics are buffers, not parameters):

  BasicConv3d(i, o), 1x1x1:   i·o + 2o
  SepConv3d(i, o, k):         i·o·k² + 2o  (spatial 1xkxk)  +  o·o·k + 2o  (temporal kx1x1)
  Mixed(i; b0, b1r, b1, b2r, b2, b3):
      Basic(i, b0) + Basic(i, b1r) + Sep(b1r, b1, 3) + Basic(i, b2r) + Sep(b2r, b2, 3) + Basic(i, b3)

  Conv_1a   SepConv3d(3, 64, 7)       9,408 + 128 + 28,672 + 128        =    38,336
  Conv_2b   BasicConv3d(64, 64)       4,096 + 128                       =     4,224
  Conv_2c   SepConv3d(64, 192, 3)     110,592 + 384 + 110,592 + 384     =   221,952
  Mixed_3b  (192; 64, 96, 128, 16, 32, 32)                              =   208,416
  Mixed_3c  (256; 128, 128, 192, 32, 96, 64)                            =   479,040
  Mixed_4b  (480; 192, 96, 208, 16, 48, 64)                             =   501,728
  Mixed_4c  (512; 160, 112, 224, 24, 64, 64)                            =   588,624
  Mixed_4d  (512; 128, 128, 256, 24, 64, 64)                            =   695,728
  Mixed_4e  (512; 112, 144, 288, 32, 64, 64)                            =   835,136
  Mixed_4f  (528; 256, 160, 320, 32, 128, 128)                          = 1,161,088
  Mixed_5b  (832; 256, 160, 320, 32, 128, 128)                          = 1,336,192
  Mixed_5c  (832; 384, 192, 384, 48, 128, 128)                          = 1,839,584
                                                                  total = 7,910,048
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from avssl import sharding
from avssl.models import s3d
from avssl.models.common import Norm

REFERENCE_PARAMS = 7_910_048

# The reference layer list above: (name, input channels, branch channels) per Mixed block.
REFERENCE_MIXED = [
    ('Mixed_3b', 192, (64, 96, 128, 16, 32, 32)),
    ('Mixed_3c', 256, (128, 128, 192, 32, 96, 64)),
    ('Mixed_4b', 480, (192, 96, 208, 16, 48, 64)),
    ('Mixed_4c', 512, (160, 112, 224, 24, 64, 64)),
    ('Mixed_4d', 512, (128, 128, 256, 24, 64, 64)),
    ('Mixed_4e', 512, (112, 144, 288, 32, 64, 64)),
    ('Mixed_4f', 528, (256, 160, 320, 32, 128, 128)),
    ('Mixed_5b', 832, (256, 160, 320, 32, 128, 128)),
    ('Mixed_5c', 832, (384, 192, 384, 48, 128, 128)),
]


def _basic(i, o):
  return i * o + 2 * o


def _sep(i, o, k):
  return i * o * k * k + 2 * o + o * o * k + 2 * o


def _mixed(i, channels):
  b0, b1r, b1, b2r, b2, b3 = channels
  return _basic(i, b0) + _basic(i, b1r) + _sep(b1r, b1, 3) + _basic(i, b2r) + _sep(b2r, b2, 3) + _basic(i, b3)


def _count(tree):
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def _variable_shapes(model, shape):
  return jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False),
                        jax.ShapeDtypeStruct(shape, jnp.float32))


def _numpy_variables(model, shape):
  """He-scaled random variables made on the host from `init`'s shapes.

  Compiling `model.init` itself (over a hundred random initialisers) takes 20-35 s on the 2-core test
  machine, which the init-free checks here do not need; `_variable_shapes` still traces `init`.
  """
  rng = np.random.default_rng(0)

  def make(path, leaf):
    name = jax.tree_util.keystr(path)
    if 'kernel' in name:
      fan_in = math.prod(leaf.shape[:-1])
      return rng.standard_normal(leaf.shape).astype(np.float32) * np.float32(math.sqrt(2.0 / fan_in))
    if 'scale' in name or "'var'" in name:
      return np.ones(leaf.shape, np.float32)
    return np.zeros(leaf.shape, np.float32)

  return jax.tree_util.tree_map_with_path(make, _variable_shapes(model, shape))


def test_parameter_count_matches_pytorch_s3d_without_classifier():
  params = _variable_shapes(s3d.S3D(), (1, 8, 32, 32, 3))['params']
  stem = _sep(3, 64, 7) + _basic(64, 64) + _sep(64, 192, 3)
  by_hand = stem + sum(_mixed(i, c) for _, i, c in REFERENCE_MIXED)
  print(f'S3D parameters: {_count(params):,} (PyTorch S3D without classifier, by hand: {by_hand:,})')
  assert by_hand == REFERENCE_PARAMS
  assert _count(params) == REFERENCE_PARAMS
  for name, i, channels in REFERENCE_MIXED:
    assert _count(params[name]) == _mixed(i, channels), name
  assert _count(params['Conv_1a']) == _sep(3, 64, 7) == 38_336


def test_gating_adds_one_fc_per_branch():
  plain = _count(_variable_shapes(s3d.S3D(), (1, 8, 32, 32, 3))['params'])
  gated = _count(_variable_shapes(s3d.S3D(gating=True), (1, 8, 32, 32, 3))['params'])
  fc = sum(c * c + c for _, _, (b0, _, b1, _, b2, b3) in REFERENCE_MIXED for c in (b0, b1, b2, b3))
  assert gated - plain == fc


def test_feature_map_is_4x4x4x1024_for_32x128x128_clips():
  model = s3d.S3D()
  variables = _variable_shapes(model, (1, 32, 128, 128, 3))
  feature, feature_map = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False, return_map=True),
      variables, jax.ShapeDtypeStruct((2, 32, 128, 128, 3), jnp.float32))
  assert feature.shape == (2, 1024)
  assert feature_map.shape == (2, 4, 4, 4, 1024)


def test_bfloat16_activations_keep_float32_params_and_feature():
  model = s3d.S3D(norm=Norm(eps=1e-3, dtype=jnp.bfloat16))
  variables = _variable_shapes(model, (1, 8, 32, 32, 3))
  assert {x.dtype for x in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  feature, feature_map = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False, return_map=True),
      variables, jax.ShapeDtypeStruct((2, 8, 32, 32, 3), jnp.float32))
  assert feature.dtype == jnp.float32
  assert feature_map.dtype == jnp.bfloat16


def test_pooled_feature_is_the_mean_of_the_map_at_16x64x64():
  model = s3d.S3D()
  variables = _numpy_variables(model, (1, 16, 64, 64, 3))
  video = np.random.default_rng(1).standard_normal((2, 16, 64, 64, 3)).astype(np.float32)
  feature, feature_map = jax.jit(lambda v, x: model.apply(v, x, train=False, return_map=True))(
      variables, video)
  assert feature.shape == (2, 1024)
  assert feature_map.shape == (2, 2, 2, 2, 1024)
  assert np.isfinite(np.asarray(feature)).all()
  np.testing.assert_allclose(np.asarray(feature), np.asarray(feature_map).mean(axis=(1, 2, 3)),
                             rtol=1e-5, atol=1e-6)


def test_train_step_on_batch_sharded_over_8_devices():
  model = s3d.S3D()
  variables = _numpy_variables(model, (1, 8, 32, 32, 3))
  mesh = sharding.make_mesh()
  video = sharding.to_global(
      np.random.default_rng(2).standard_normal((8, 8, 32, 32, 3)).astype(np.float32), mesh)

  @jax.jit
  def forward(variables, video):
    return model.apply(variables, video, train=True, mutable=['batch_stats'])

  feature, updates = forward(variables, video)
  assert feature.shape == (8, 1024)
  assert feature.sharding.is_equivalent_to(sharding.batch_sharded(mesh), 2)
  assert np.isfinite(np.asarray(feature)).all()
  moved = jax.tree.map(lambda new, old: not np.allclose(new, old),
                       updates['batch_stats'], variables['batch_stats'])
  assert all(jax.tree.leaves(moved))


def test_max_pool_pads_with_minus_inf_like_pytorch():
  x = -1.0 - np.arange(3 * 5 * 5, dtype=np.float32).reshape(1, 3, 5, 5, 1) / 100
  y = np.asarray(s3d.max_pool(jnp.asarray(x), (3, 3, 3), (2, 2, 2), (1, 1, 1)))
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
  expected = np.empty((1, 2, 3, 3, 1), np.float32)
  for t in range(2):
    for h in range(3):
      for w in range(3):
        window = padded[0, 2 * t:2 * t + 3, 2 * h:2 * h + 3, 2 * w:2 * w + 3]
        expected[0, t, h, w] = window.max(axis=(0, 1, 2))
  assert (y < 0).all()
  np.testing.assert_array_equal(y, expected)
