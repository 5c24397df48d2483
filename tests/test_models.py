"""Encoders and heads: the papers' sizes, the multi-head equals a loop, everything runs sharded."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avssl import sharding
from avssl.models import encoders, heads
from avssl.models.audio_resnet import AudioResNet
from avssl.models.common import Norm
from avssl.models.r2plus1d import R2Plus1D, adaptive_avg_pool, mid_channels


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _abstract_init(model, *shape, **kwargs):
  """Variables and outputs by shape only: nothing is computed at the papers' input sizes."""
  return jax.eval_shape(lambda: model.init_with_output(
      jax.random.PRNGKey(0), jnp.zeros(shape), train=False, **kwargs))


def test_r2plus1d_18_parameter_count_and_feature_map():
  (feature, fmap), variables = _abstract_init(R2Plus1D(), 1, 30, 112, 112, 3, return_map=True)
  assert _count(variables['params']) == 31_300_125
  assert feature.shape == (1, 512) and fmap.shape == (1, 4, 7, 7, 512)
  _, with_fc = _abstract_init(R2Plus1D(num_classes=400), 1, 8, 112, 112, 3)
  assert _count(with_fc['params']) == 31_505_325  # torchvision's r2plus1d_18


def test_mid_channels_torchvision_and_xdc_rules():
  assert [mid_channels(i, o) for i, o in [(64, 64), (64, 128), (128, 128), (128, 256), (256, 512)]] \
      == [144, 230, 288, 460, 921]
  _, per_block = _abstract_init(R2Plus1D(), 1, 4, 32, 32, 3)
  _, per_conv = _abstract_init(R2Plus1D(mid_channels='per_conv'), 1, 4, 32, 32, 3)
  for stage, torchvision_mid, xdc_mid in [(2, 230, 288), (3, 460, 576), (4, 921, 1152)]:
    conv2 = lambda variables, stage=stage: variables['params'][f'layer{stage}_0']['conv2']
    assert conv2(per_block)['spatial']['kernel'].shape[-1] == torchvision_mid
    assert conv2(per_conv)['spatial']['kernel'].shape[-1] == xdc_mid
    assert conv2(per_conv)['temporal']['kernel'].shape[-2] == xdc_mid


@pytest.mark.parametrize('pool,size', [('avg', 512), ('max222', 9216), ('avg122', 2048)])
def test_r2plus1d_pooling_options(pool, size):
  feature, _ = _abstract_init(R2Plus1D(pool=pool), 1, 32, 112, 112, 3)
  assert feature.shape == (1, size)


def test_adaptive_avg_pool_matches_pytorch_bins():
  x = jnp.arange(7.0).reshape(1, 1, 7, 1, 1) * jnp.ones((1, 1, 1, 7, 1))
  pooled = adaptive_avg_pool(x, (1, 2, 2))
  # PyTorch's bins over 7 positions into 2: [0, 4) and [3, 7).
  np.testing.assert_allclose(pooled[0, 0, :, 0, 0], [1.5, 4.5])


def test_audio_resnet9_parameter_count_and_feature_map():
  (feature, fmap), variables = _abstract_init(AudioResNet(depth=9), 1, 257, 99, 1, return_map=True)
  assert _count(variables['params']) == 4_899_520
  assert feature.shape == (1, 512) and fmap.shape == (1, 9, 4, 512)
  (feature, fmap), _ = _abstract_init(AudioResNet(depth=18), 1, 40, 100, 1, return_map=True)
  assert feature.shape == (1, 512) and fmap.shape == (1, 2, 4, 512)


def test_multihead_equals_loop_of_single_heads():
  x = jax.random.normal(jax.random.PRNGKey(1), (8, 32))
  multi = heads.MultiHead(num_heads=3, num_clusters=5, hidden=16, dropout=0.0)
  variables = multi.init({'params': jax.random.PRNGKey(0)}, x, train=False)
  assert variables['params']['heads']['hidden']['kernel'].shape == (3, 32, 16)
  single = heads.MLPHead(num_clusters=5, hidden=16, dropout=0.0)
  for train in (False, True):
    out, updates = multi.apply(variables, x, train=train, mutable=['batch_stats'])
    assert out.shape == (3, 8, 5)
    for h in range(3):
      head_vars = {c: jax.tree.map(lambda v, h=h: v[h], variables[c]['heads']) for c in variables}
      expected, head_updates = single.apply(head_vars, x, train=train, mutable=['batch_stats'])
      np.testing.assert_allclose(out[h], expected, rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(updates['batch_stats']['heads']['bn']['var'][h],
                                 head_updates['batch_stats']['bn']['var'], rtol=1e-5)


def test_hidden_zero_is_selas_linear_head_per_head_in_float64():
  """`hidden=0` (SeLa's `top_layer`): each head is x @ W_h + b_h, nothing else (no BN, no dropout even
  in training), against a float64 reference."""
  x = jax.random.normal(jax.random.PRNGKey(1), (8, 32))
  multi = heads.MultiHead(num_heads=3, num_clusters=5, hidden=0, dropout=0.3)
  variables = multi.init({'params': jax.random.PRNGKey(0)}, x, train=False)
  assert set(variables) == {'params'} and set(variables['params']['heads']) == {'out'}
  out = variables['params']['heads']['out']
  kernel, bias = np.float64(out['kernel']), np.float64(out['bias'])
  assert kernel.shape == (3, 32, 5) and bias.shape == (3, 5)
  expected = np.einsum('bd,hdk->hbk', np.float64(x), kernel) + bias[:, None]
  logits = multi.apply(variables, x, train=True, rngs={'dropout': jax.random.PRNGKey(2)})
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)


def test_multihead_dropout_differs_between_heads():
  x = jnp.ones((4, 8))
  multi = heads.MultiHead(num_heads=2, num_clusters=3, hidden=64, dropout=0.5)
  variables = multi.init({'params': jax.random.PRNGKey(0)}, x, train=False)
  shared = jax.tree.map(lambda v: jnp.stack([v[0], v[0]]), variables)
  out, _ = multi.apply(shared, x, train=True, mutable=['batch_stats'],
                       rngs={'dropout': jax.random.PRNGKey(3)})
  assert not np.allclose(out[0], out[1])


def test_projection_and_instance_heads_are_unit_norm_cluster_head_is_a_distribution():
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 24))
  for head in (heads.ProjectionHead(hidden=32, out=16), heads.InstanceHead(out=12)):
    z, _ = head.init_with_output(jax.random.PRNGKey(1), x, train=False)
    np.testing.assert_allclose(jnp.linalg.norm(z, axis=-1), 1.0, rtol=1e-5)
  y, _ = heads.ClusterHead(num_clusters=7).init_with_output(jax.random.PRNGKey(1), x)
  assert y.shape == (8, 7) and np.all(y >= 0)
  np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-5)
  kernel = jax.random.normal(jax.random.PRNGKey(2), (16, 10)) * 3
  np.testing.assert_allclose(jnp.linalg.norm(heads.normalize_prototypes(kernel), axis=0), 1.0,
                             rtol=1e-5)


class _AllEncoders(nn.Module):
  """Every encoder and head on one sharded batch (tiny widths come from small inputs, not flags)."""

  @nn.compact
  def __call__(self, video, audio, train):
    v = R2Plus1D(depth=10, norm=Norm(dtype=jnp.bfloat16))(video, train)
    a = AudioResNet(depth=9)(audio, train)
    return (heads.MultiHead(2, 4, hidden=8)(v, train), heads.LinearHead(3)(a),
            heads.ProjectionHead(16, 8)(a, train),
            heads.InstanceHead(8)(v), heads.ClusterHead(5)(a))


def test_encoders_and_heads_run_under_jit_on_eight_device_batch():
  mesh = sharding.make_mesh()
  rng = np.random.default_rng(0)
  batch = sharding.to_global({'video': rng.standard_normal((8, 4, 16, 16, 3), np.float32),
                              'audio': rng.standard_normal((8, 32, 16, 1), np.float32)}, mesh)
  model = _AllEncoders()
  variables = jax.jit(lambda b: model.init({'params': jax.random.PRNGKey(0)}, b['video'],
                                           b['audio'], train=False))(batch)

  @jax.jit
  def forward(variables, b):
    return model.apply(variables, b['video'], b['audio'], train=True, mutable=['batch_stats'],
                       rngs={'dropout': jax.random.PRNGKey(1)})

  outputs, _ = forward(variables, batch)
  shapes = [o.shape for o in outputs]
  assert shapes == [(2, 8, 4), (8, 3), (8, 8), (8, 8), (8, 5)]
  assert all(np.isfinite(np.asarray(o, np.float32)).all() for o in outputs)
  assert outputs[1].sharding.spec[0] == 'data' or len(outputs[1].sharding.device_set) == 8


def test_remat_keeps_loss_gradients_and_batch_stats():
  """`remat` only trades memory for time: against 'none', 'blocks' and 'full' give the same loss,
  gradients and BatchNorm updates (tolerance 1e-6; on CPU they are bitwise equal) and parameters."""
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 4, 16, 16, 3), np.float32))
  config = encoders.encoder_config('small', widths=(4, 8))
  variables = encoders.video_encoder(config, Norm()).init(jax.random.PRNGKey(0), x, False)

  def loss_and_grads(remat):
    model = encoders.video_encoder(config, Norm(remat=remat))

    def loss(params):
      feature, updates = model.apply({'params': params, 'batch_stats': variables['batch_stats']},
                                     x, True, mutable=['batch_stats'])
      return jnp.sum(feature ** 2), updates

    return jax.jit(jax.value_and_grad(loss, has_aux=True))(variables['params'])

  (reference, stats), grads = loss_and_grads('none')
  for remat in ('blocks', 'full'):
    (value, remat_stats), remat_grads = loss_and_grads(remat)
    assert jax.tree.structure(remat_grads) == jax.tree.structure(grads)
    np.testing.assert_allclose(value, reference, rtol=0, atol=1e-6)
    for a, b in zip(jax.tree.leaves((remat_grads, remat_stats)), jax.tree.leaves((grads, stats))):
      np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize('remat, regions', [('none', 0), ('blocks', 4), ('full', 1)])
def test_remat_wraps_each_residual_block_or_the_whole_encoder(remat, regions):
  """The ResNets' blocks are submodules wrapped by class (the small encoders' stages, tested above,
  are functions): ResNet-9 has 4 blocks, each a `remat2` (jax.checkpoint) region. Traced only, not
  compiled, to stay fast."""
  model = AudioResNet(depth=9, norm=Norm(remat=remat))
  x = jnp.zeros((2, 32, 16, 1))
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, False))
  jaxpr = jax.make_jaxpr(lambda v: model.apply(v, x, True, mutable=['batch_stats']))(variables)
  assert sum(e.primitive.name == 'remat2' for e in jaxpr.jaxpr.eqns) == regions


def test_norm_rejects_unknown_remat_and_policy():
  with pytest.raises(ValueError, match='remat'):
    Norm(remat='layers')
  with pytest.raises(ValueError, match='remat_policy'):
    Norm(remat='blocks', remat_policy='save_only_these_names')
