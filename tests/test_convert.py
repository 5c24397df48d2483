"""Importing PyTorch weights: SeLaVi's checkpoint layout round-trips, mismatches are refused by name,
and torchvision's r2plus1d_18 gives the same features in Flax (when torch is installed)."""

import importlib.util
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avssl.models import convert, heads
from avssl.models.audio_resnet import AudioResNet
from avssl.models.r2plus1d import R2Plus1D

NUM_HEADS, NUM_CLUSTERS = 2, 7


class _SeLaViLayout(nn.Module):
  """The submodule names `convert.convert_selavi` fills."""

  @nn.compact
  def __call__(self, video, audio, train=False):
    return (heads.MultiHead(NUM_HEADS, NUM_CLUSTERS, name='video_heads')(
        R2Plus1D(name='video')(video, train), train),
            heads.MultiHead(NUM_HEADS, NUM_CLUSTERS, name='audio_heads')(
                AudioResNet(name='audio')(audio, train), train))


def _bn(prefix, n):
  return {f'{prefix}.weight': (n,), f'{prefix}.bias': (n,), f'{prefix}.running_mean': (n,),
          f'{prefix}.running_var': (n,), f'{prefix}.num_batches_tracked': ()}


def _selavi_key_shapes():
  """SeLaVi's released `AVModel` state dict, key -> PyTorch shape, written out from torchvision's
  layer naming (independently of the converter's own key mapping)."""
  keys = {'video_network.base.stem.0.weight': (45, 3, 1, 7, 7),
          **_bn('video_network.base.stem.1', 45),
          'video_network.base.stem.3.weight': (64, 45, 3, 1, 1), **_bn('video_network.base.stem.4', 64),
          'audio_network.base.conv1.weight': (64, 1, 7, 7), **_bn('audio_network.base.bn1', 64)}
  for i, planes in enumerate((64, 128, 256, 512), start=1):
    inplanes = 64 if i == 1 else planes // 2
    for j in range(2):
      c_in = inplanes if j == 0 else planes
      mid = (c_in * planes * 27) // (c_in * 9 + 3 * planes)
      p = f'video_network.base.layer{i}.{j}'
      for conv, conv_in in (('conv1', c_in), ('conv2', planes)):
        keys[f'{p}.{conv}.0.0.weight'] = (mid, conv_in, 1, 3, 3)
        keys.update(_bn(f'{p}.{conv}.0.1', mid))
        keys[f'{p}.{conv}.0.3.weight'] = (planes, mid, 3, 1, 1)
        keys.update(_bn(f'{p}.{conv}.1', planes))
      if i > 1 and j == 0:
        keys[f'{p}.downsample.0.weight'] = (planes, c_in, 1, 1, 1)
        keys.update(_bn(f'{p}.downsample.1', planes))
    a = f'audio_network.base.layer{i}.0'
    keys.update({f'{a}.conv1.weight': (planes, inplanes, 3, 3), **_bn(f'{a}.bn1', planes),
                 f'{a}.conv2.weight': (planes, planes, 3, 3), **_bn(f'{a}.bn2', planes)})
    if i > 1:
      keys.update({f'{a}.downsample.0.weight': (planes, inplanes, 1, 1),
                   **_bn(f'{a}.downsample.1', planes)})
  for h in range(NUM_HEADS):
    for m in 'va':
      keys.update({f'mlp_{m}{h}.block_forward.2.weight': (512, 512),
                   **_bn(f'mlp_{m}{h}.block_forward.4', 512),
                   f'mlp_{m}{h}.block_forward.8.weight': (NUM_CLUSTERS, 512),
                   f'mlp_{m}{h}.block_forward.8.bias': (NUM_CLUSTERS,)})
  return {f'module.{k}': v for k, v in keys.items()}


def _random_state_dict(shapes, seed=0):
  rng = np.random.default_rng(seed)
  return {k: (np.array(3, np.int64) if k.endswith('num_batches_tracked')
              else rng.standard_normal(s).astype(np.float32)) for k, s in shapes.items()}


def _abstract_selavi_variables():
  return jax.eval_shape(lambda: _SeLaViLayout().init(
      jax.random.PRNGKey(0), jnp.zeros((1, 4, 32, 32, 3)), jnp.zeros((1, 64, 32, 1))))


def test_selavi_npz_round_trip(tmp_path):
  state_dict = _random_state_dict(_selavi_key_shapes())
  path = tmp_path / 'selavi.npz'
  np.savez(path, **state_dict)

  variables, report = convert.convert_selavi(convert.load_state_dict(str(path)),
                                             _abstract_selavi_variables(), NUM_HEADS)
  assert report.unused == [] and report.uninitialised == [], str(report)
  params, stats = variables['params'], variables['batch_stats']
  np.testing.assert_array_equal(params['video']['stem_spatial']['kernel'],
                                state_dict['module.video_network.base.stem.0.weight']
                                .transpose(2, 3, 4, 1, 0))
  np.testing.assert_array_equal(stats['audio']['layer3_0']['downsample_bn']['var'],
                                state_dict['module.audio_network.base.layer3.0.downsample.1.running_var'])
  np.testing.assert_array_equal(params['audio_heads']['heads']['out']['kernel'][1],
                                state_dict['module.mlp_a1.block_forward.8.weight'].T)

  exported = convert.export(variables, convert.selavi_key_fn(NUM_HEADS))
  expected = {k[len('module.'):]: v for k, v in state_dict.items()
              if not k.endswith('num_batches_tracked')}
  assert exported.keys() == expected.keys()
  for key, value in expected.items():
    np.testing.assert_array_equal(exported[key], value, err_msg=key)


def test_mismatched_shape_is_refused_with_key_and_both_shapes():
  shapes = _selavi_key_shapes()
  shapes['module.mlp_v1.block_forward.8.weight'] = (NUM_CLUSTERS + 1, 512)
  with pytest.raises(ValueError, match=r"'mlp_v1\.block_forward\.8\.weight' has shape \(8, 512\).*"
                                       r"video_heads/heads/out/kernel has shape \(2, 512, 7\) \(stacked over heads\)"):
    convert.convert_selavi(_random_state_dict(shapes), _abstract_selavi_variables(), NUM_HEADS)


def test_unused_keys_and_uninitialised_variables_are_reported():
  shapes = _selavi_key_shapes()
  del shapes['module.audio_network.base.layer4.0.bn2.running_var']
  shapes['module.video_network.base.fc.weight'] = (400, 512)
  variables, report = convert.convert_selavi(_random_state_dict(shapes),
                                             _abstract_selavi_variables(), NUM_HEADS)
  assert report.unused == ['video_network.base.fc.weight']
  assert report.uninitialised == ['batch_stats/audio/layer4_0/bn2/var']
  assert isinstance(variables['batch_stats']['audio']['layer4_0']['bn2']['var'], jax.ShapeDtypeStruct)


def test_xdc_layout_uses_per_conv_mid_channels_and_drops_fc():
  model = R2Plus1D(mid_channels='per_conv')
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 32, 32, 3)),
                                                train=False))
  zeros = jax.tree.map(lambda v: np.zeros(v.shape, v.dtype), variables)
  state_dict = convert.export(zeros, convert.r2plus1d_key_fn())
  assert state_dict['layer2.0.conv2.0.0.weight'].shape == (288, 128, 1, 3, 3)
  state_dict['fc.weight'] = np.zeros((400, 512), np.float32)
  _, report = convert.convert_xdc_r2plus1d(state_dict, variables)
  assert report.unused == [] and report.uninitialised == []


_NO_TORCH = ('torch and torchvision are not installed: this optional test compares against '
             'torchvision (pip install torch torchvision)')


@pytest.fixture(scope='module')
def torchvision_reference(tmp_path_factory):
  if importlib.util.find_spec('torch') is None or importlib.util.find_spec('torchvision') is None:
    pytest.skip(_NO_TORCH)
  out = tmp_path_factory.mktemp('torchvision') / 'reference.npz'
  subprocess.run([sys.executable, str(pathlib.Path(__file__).with_name('torchvision_reference.py')),
                  str(out)], check=True, timeout=300)
  with np.load(out) as data:
    return {k: data[k] for k in data.files}


@pytest.mark.parametrize('train', [False, True])
def test_torchvision_r2plus1d_18_gives_the_same_features(torchvision_reference, train):
  reference = torchvision_reference
  state_dict = {k[len('weights/'):]: v for k, v in reference.items() if k.startswith('weights/')}
  flax_model = R2Plus1D()
  target = jax.eval_shape(lambda: flax_model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 56, 56, 3)),
                                                  train=False))
  variables, report = convert.convert_torchvision_r2plus1d(state_dict, target)
  assert report.unused == [] and report.uninitialised == []

  got, _ = flax_model.apply(variables, jnp.asarray(reference['clip'].transpose(0, 2, 3, 4, 1)),
                            train=train, mutable=['batch_stats'])
  difference = float(np.abs(np.asarray(got) - reference[f'features_train={train}']).max())
  print(f'torchvision r2plus1d_18 vs Flax, train={train}: max abs difference {difference:.2e}')
  assert difference <= 1e-4


def test_pth_training_checkpoint_is_unwrapped(tmp_path):
  torch = pytest.importorskip('torch', reason=_NO_TORCH)
  weights = {'stem.0.weight': torch.ones(45, 3, 1, 7, 7), 'stem.1.num_batches_tracked': torch.tensor(2)}
  torch.save({'model': weights, 'epoch': 3}, tmp_path / 'checkpoint.pth.tar')
  state_dict = convert.load_state_dict(str(tmp_path / 'checkpoint.pth.tar'))
  assert sorted(state_dict) == sorted(weights)
  np.testing.assert_array_equal(state_dict['stem.0.weight'], np.ones((45, 3, 1, 7, 7), np.float32))
