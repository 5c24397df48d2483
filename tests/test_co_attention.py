"""IICL's co-attention: token counts, order invariance over keys, softmax rows, and a sharded jit call;
the pairwise reading's every pair against one pair at a time, and its partner only steering the
attention."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avssl import sharding
from avssl.models import co_attention

WIDTH, HEADS = 32, 4


def _maps(batch=2, seed=0):
  """A video map `[B, T', H', W', Cv]` (8 positions) and an audio map `[B, time, freq, Ca]` (15)."""
  rng = np.random.default_rng(seed)
  return (rng.standard_normal((batch, 2, 2, 2, 24)).astype(np.float32),
          rng.standard_normal((batch, 5, 3, 16)).astype(np.float32))


def _tokens(batch=2, seed=0):
  video_map, audio_map = _maps(batch, seed)
  return co_attention.tokens_from_map(video_map), co_attention.tokens_from_map(audio_map)


def _setup(**kwargs):
  model = co_attention.CoAttention(width=WIDTH, num_heads=HEADS, **kwargs)
  video, audio = _tokens()
  return model, model.init(jax.random.PRNGKey(0), video, audio), video, audio


def test_tokens_from_map_flattens_positions():
  video_map, audio_map = _maps()
  video, audio = co_attention.tokens_from_map(video_map), co_attention.tokens_from_map(audio_map)
  assert video.shape == (2, 8, 24) and audio.shape == (2, 15, 16)
  np.testing.assert_array_equal(video[:, 3], video_map[:, 0, 1, 1])
  np.testing.assert_array_equal(audio[:, 4], audio_map[:, 1, 1])


def test_shapes_follow_the_query_modality():
  model, variables, video, audio = _setup()
  h_v, h_a, tokens_v, tokens_a = model.apply(variables, video, audio, return_tokens=True)
  assert h_v.shape == h_a.shape == (2, WIDTH)
  assert tokens_v.shape == (2, 15, WIDTH)  # visual stream: queries from the 15 audio tokens
  assert tokens_a.shape == (2, 8, WIDTH)  # audio stream: queries from the 8 video tokens
  np.testing.assert_allclose(h_v, tokens_v.mean(axis=1), rtol=1e-6)
  assert h_v.dtype == h_a.dtype == jnp.float32


def test_depth_stacks_one_block_per_stream_per_layer():
  model, variables, video, audio = _setup(depth=2)
  assert sorted(variables['params']) == ['audio_0', 'audio_1', 'project_audio', 'project_video',
                                         'visual_0', 'visual_1']
  h_v, h_a = model.apply(variables, video, audio)
  assert h_v.shape == h_a.shape == (2, WIDTH)


def test_permuting_keys_changes_nothing_but_new_queries_do():
  model, variables, video, audio = _setup()
  forward = jax.jit(lambda v, a: model.apply(variables, v, a, return_tokens=True))
  h_v, h_a, tokens_v, tokens_a = forward(video, audio)

  order = np.random.default_rng(1).permutation(video.shape[1])
  p_h_v, p_h_a, p_tokens_v, p_tokens_a = forward(video[:, order], audio)
  # Video tokens are the keys and values of the visual stream: its tokens do not move.
  np.testing.assert_allclose(p_tokens_v, tokens_v, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(p_h_v, h_v, rtol=1e-5, atol=1e-5)
  # They are the queries of the audio stream: its tokens follow the order, the pooled feature does not.
  np.testing.assert_allclose(p_tokens_a, tokens_a[:, order], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(p_h_a, h_a, rtol=1e-5, atol=1e-5)

  order = np.random.default_rng(2).permutation(audio.shape[1])
  p_h_v, p_h_a, _, p_tokens_a = forward(video, audio[:, order])
  np.testing.assert_allclose(p_tokens_a, tokens_a, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(p_h_v, h_v, rtol=1e-5, atol=1e-5)

  other_video, other_audio = _tokens(seed=3)
  new_audio_h_v, _, _, _ = forward(video, other_audio)
  _, new_video_h_a, _, _ = forward(other_video, audio)
  assert not np.allclose(new_audio_h_v, h_v, atol=1e-3)  # new queries for the visual stream
  assert not np.allclose(new_video_h_a, h_a, atol=1e-3)  # new queries for the audio stream


def test_attention_weights_are_softmax_rows_over_the_other_modality():
  model, variables, video, audio = _setup(sow_weights=True)
  _, state = model.apply(variables, video, audio, mutable=['intermediates'])
  (visual,) = state['intermediates']['visual_0']['attention']['attention_weights']
  (audio_w,) = state['intermediates']['audio_0']['attention']['attention_weights']
  assert visual.shape == (2, HEADS, 15, 8)  # audio queries over video keys
  assert audio_w.shape == (2, HEADS, 8, 15)  # video queries over audio keys
  for weights in (visual, audio_w):
    assert (np.asarray(weights) >= 0).all()
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize('kind', [co_attention.CoAttention, co_attention.PairwiseCoAttention])
def test_bfloat16_activations_give_float32_features(kind):
  model = kind(width=WIDTH, num_heads=HEADS, dtype=jnp.bfloat16)
  video, audio = _tokens()
  variables = model.init(jax.random.PRNGKey(0), video, audio)
  assert {x.dtype for x in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  h_v, h_a = model.apply(variables, video, audio)
  assert h_v.dtype == h_a.dtype == jnp.float32
  assert np.isfinite(np.asarray(h_v)).all() and np.isfinite(np.asarray(h_a)).all()


def test_jit_on_batch_sharded_over_8_devices_matches_one_device():
  model = co_attention.CoAttention(width=WIDTH, num_heads=HEADS)
  video, audio = _tokens(batch=8, seed=4)
  variables = model.init(jax.random.PRNGKey(0), video[:1], audio[:1])
  mesh = sharding.make_mesh()
  global_video, global_audio = sharding.to_global((video, audio), mesh)
  assert len(global_video.sharding.device_set) == 8

  forward = jax.jit(lambda v, a: model.apply(variables, v, a))
  h_v, h_a = forward(global_video, global_audio)
  assert h_v.shape == h_a.shape == (8, WIDTH)
  assert h_v.sharding.is_equivalent_to(sharding.batch_sharded(mesh), 2)
  expected_v, expected_a = model.apply(variables, video, audio)
  np.testing.assert_allclose(h_v, expected_v, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(h_a, expected_a, rtol=1e-5, atol=1e-5)


def _pairwise(depth=1):
  model = co_attention.PairwiseCoAttention(width=WIDTH, num_heads=HEADS, depth=depth)
  video, audio = _tokens(batch=3, seed=5)
  return model, model.init(jax.random.PRNGKey(0), video, audio), video, audio


@pytest.mark.parametrize('depth', [1, 2])
def test_pairwise_every_pair_equals_one_pair_at_a_time(depth):
  """Rows × columns through `jax.vmap` of `pair` on per-clip streams equal each (video i, audio j)
  put through the module on its own (float32: 1e-5)."""
  model, variables, video, audio = _pairwise(depth)
  streams_v, streams_a = model.apply(variables, video, audio, method=model.clips)
  pair = lambda v, a: model.apply(variables, v, a, method=model.pair)
  grid_v, grid_a = jax.jit(jax.vmap(jax.vmap(pair, (None, 0)), (0, None)))(streams_v, streams_a)
  assert grid_v.shape == grid_a.shape == (3, 3, WIDTH)
  for i in range(3):
    for j in range(3):
      h_v, h_a = model.apply(variables, video[i:i + 1], audio[j:j + 1])
      np.testing.assert_allclose(grid_v[i, j], h_v[0], atol=1e-5)
      np.testing.assert_allclose(grid_a[i, j], h_a[0], atol=1e-5)


def test_pairwise_partner_only_steers_the_attention():
  """The visual stream of (video i, audio j) is video i's pooled token plus a mixture of video i's
  values that audio j only weighs: when all of video i's tokens are alike, audio j changes nothing.
  The audio stream, over audio tokens that differ, does depend on its video query."""
  model, variables, video, audio = _pairwise()
  flat_video = np.repeat(video[:, :1], video.shape[1], axis=1)  # Every position the same token.
  streams_v, streams_a = model.apply(variables, flat_video, audio, method=model.clips)
  pair = lambda v, a: model.apply(variables, v, a, method=model.pair)
  grid_v, grid_a = jax.vmap(jax.vmap(pair, (None, 0)), (0, None))(streams_v, streams_a)
  for j in range(1, 3):
    np.testing.assert_allclose(grid_v[:, j], grid_v[:, 0], atol=1e-6)
    assert not np.allclose(grid_a[1, j], grid_a[0, j], atol=1e-3)


def test_pairwise_blocks_per_stream_per_layer():
  _, variables, _, _ = _pairwise(depth=2)
  assert sorted(variables['params']) == ['audio_0', 'audio_1', 'project_audio', 'project_video',
                                         'visual_0', 'visual_1']
  assert sorted(variables['params']['visual_0']) == ['key', 'mlp_hidden', 'mlp_out', 'norm_attention',
                                                     'norm_mlp', 'out', 'query', 'value']
