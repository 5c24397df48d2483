"""GOCA: the swapped-prediction loss, guided codes, fixed prototypes, multi-crop views with flow, and
the transport problem over the global batch."""

import os
import types

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from conftest import load_config
from avssl import sharding
from avssl.modes import setup as setup_mode, train
from avssl.clustering import prototypes as prototypes_lib
from avssl.data import flow as flow_lib
from avssl.data import pipeline, records
from avssl.methods import goca


def _method(variant: str = 'goca', **overrides) -> goca.GOCA:
  config = load_config('goca_ucf101', f'tiny,variant={variant}')
  config.goca.update(overrides)
  return goca.GOCA(config)


def test_swapped_prediction_equals_a_float64_reference():
  rng = np.random.default_rng(0)
  scores = rng.normal(size=(4, 5, 6))
  codes = rng.dirichlet(np.ones(6), size=(2, 5))
  log_p = scores / 0.1 - np.log(np.exp(scores / 0.1).sum(-1, keepdims=True))
  terms = [-(codes[t] * log_p[v]).sum(-1).mean() for t in range(2) for v in range(4) if v != t]
  got = goca.swapped_prediction(jnp.asarray(scores, jnp.float32), jnp.asarray(codes, jnp.float32),
                                0.1)
  np.testing.assert_allclose(float(got), np.mean(terms), rtol=1e-5)


def _agreement(codes, other):
  return float(np.mean(np.argmax(codes, -1) == np.argmax(other, -1)))


def test_guided_codes_agree_more_with_the_other_stream_and_the_release_sign_less():
  rng = np.random.default_rng(1)
  protos = rng.normal(size=(16, 8))
  protos /= np.linalg.norm(protos, axis=1, keepdims=True)
  shared = rng.normal(size=(64, 8))
  z = {m: shared + 1.5 * rng.normal(size=(64, 8)) for m in goca.MODALITIES}
  scores = {m: jnp.asarray((x / np.linalg.norm(x, axis=1, keepdims=True)) @ protos.T, jnp.float32)
            for m, x in z.items()}
  method = _method()
  initial = method.assign(scores, 0.0)
  paper = method.assign(scores, 0.03, sign=1.0)
  release = method.assign(scores, 0.03, sign=-1.0)
  for m, other in (('video', 'flow'), ('flow', 'video')):
    unguided = _agreement(initial[m], initial[other])
    assert _agreement(paper[m], initial[other]) > unguided + 0.1
    assert _agreement(release[m], initial[other]) < unguided
    np.testing.assert_allclose(np.sum(paper[m], axis=1), 1.0, rtol=1e-5)  # Each sample's code.
  # Sep and SView never guide: their codes are each stream's own SwAV codes.
  np.testing.assert_allclose(_method('sep').assign(scores, 0.03)['video'], initial['video'],
                             rtol=1e-6)


def test_queue_rows_join_the_transport_problem_and_advance_fifo():
  method = _method(queue_length=6, queue_start_epochs=None, queue_start_steps=0,
                   guidance_start_epochs=None, guidance_start_steps=3)
  rng = np.random.default_rng(2)
  a, b, k, d = 2, 4, 16, 16
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  protos = jnp.asarray(unit(rng.normal(size=(k, d))), jnp.float32)
  z = {m: jnp.asarray(unit(rng.normal(size=(3, b, d))), jnp.float32) for m in goca.MODALITIES}
  queue = {m: jnp.asarray(unit(rng.normal(size=(a, 6, d))), jnp.float32) for m in goca.MODALITIES}
  scores = {m: z[m] @ protos.T for m in z}
  prototypes = {m: protos for m in z}
  # The queue (6 rows) is full from step 2 (batches of 4); guidance starts at step 3.
  for step, eps2 in ((2, 0.0), (3, 0.03)):
    state = types.SimpleNamespace(step=jnp.int32(step), method_state={'queue': queue})
    codes, method_state = method._codes(scores, z, prototypes, state)
    for t in range(a):
      rows = {m: jnp.concatenate([queue[m][t] @ protos.T, scores[m][t]]) for m in z}
      expected = method.assign(rows, eps2)
      for m in z:
        np.testing.assert_allclose(codes[m][t], expected[m][-b:], atol=1e-6)
  for m in z:  # The newest batch first, the oldest rows dropped.
    np.testing.assert_array_equal(method_state['queue'][m][:, :b], z[m][:a])
    np.testing.assert_array_equal(method_state['queue'][m][:, b:], queue[m][:, :6 - b])


def test_variants_and_bad_settings_are_named():
  assert _method('avg').streams == ('avg',)
  assert _method('sview').prototype_set('flow') == 'flow'
  assert _method('sep').prototype_set('flow') == 'shared'
  with pytest.raises(ValueError, match='config.goca.variant'):
    _method('concat')
  with pytest.raises(ValueError, match='prior_sign'):
    _method(prior_sign=0.5)
  config = load_config('goca_ucf101', 'tiny')
  config.data.multi_crop = ((1, 4),)
  with pytest.raises(ValueError, match='at least two clips'):
    goca.GOCA(config)


def test_multi_crop_clips_share_their_frames_with_their_flow(avsynth_flow_records):
  config = pipeline.default_config(
      dir=avsynth_flow_records, with_flow=True, with_audio=False, num_frames=4,
      multi_crop=((2, 4), (3, 2)), min_resize=40, max_resize=40, crop_size=40, flip=False)
  source = pipeline.RecordSource(config, batch_size=4, process_index=0, process_count=1, seed=3)
  batch = next(source.train_batches(0))
  assert batch['video'].shape == (4, 2, 4, 40, 40, 3) and batch['flow'].shape == (4, 2, 4, 40, 40, 2)
  assert batch['video_1'].shape == (4, 3, 2, 40, 40, 3) and batch['flow_1'].shape[-1] == 2
  stored = {}
  for shard in source.host_shards('train'):
    path = os.path.join(avsynth_flow_records, shard['file'])
    for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
      record = records.read(raw)
      stored[record.video_id] = record
  table = source.video_table('train')
  starts = []
  for i, index in enumerate(batch['index']):
    record = stored[table[index]['video_id']]
    frames = (record.frames.astype(np.float32) / 255 - 0.45) / 0.225
    flow = (flow_lib.dequantize(record.flow) + 20) / 40
    flow = (flow - 0.45) / 0.225
    for key in ('video', 'video_1'):
      for clip, flow_clip in zip(batch[key][i], batch[key.replace('video', 'flow')][i]):
        length = len(clip)
        start = min(range(len(frames) - length + 1),
                    key=lambda s: np.abs(frames[s:s + length] - clip).max())
        np.testing.assert_allclose(clip, frames[start:start + length], atol=1e-4)
        expected = flow[np.minimum(np.arange(start, start + length), len(flow) - 1)]
        np.testing.assert_allclose(flow_clip, expected, atol=1e-4)
        starts.append(start)
  assert len(set(starts)) > 1  # Every clip draws its own start.


def test_fixed_prototypes_stay_bit_identical_and_apart(avsynth_flow_records, tmp_path):
  config = load_config('goca_ucf101', 'tiny')
  config.data.dir = avsynth_flow_records
  config.total_steps = 2
  config.evaluation.run = ('method',)
  state = train.train_and_evaluate(config, str(tmp_path))
  s = config.goca
  fresh, max_cos = prototypes_lib.separated_prototypes(
      s.num_prototypes, s.projection_dim, steps=s.separation_steps, seed=config.seed)
  kept = np.asarray(state.method_state['prototypes']['shared'])
  assert np.array_equal(kept, np.asarray(fresh))
  rng = np.random.default_rng(0)
  random = rng.normal(size=kept.shape)
  random /= np.linalg.norm(random, axis=1, keepdims=True)
  assert max_cos < float(prototypes_lib.max_cosine(jnp.asarray(random, jnp.float32)))
  assert 'prototypes' not in state.params  # Nothing the optimiser sees.


def test_first_step_codes_on_eight_devices_equal_one_device(avsynth_flow_records, tmp_path):
  config = load_config('goca_ucf101', 'tiny')
  config.data.dir = avsynth_flow_records
  run = setup_mode.setup(config, str(tmp_path))
  batch = next(run.data.train_batches(0))
  method = run.method
  eight = jax.jit(method.codes)(run.state.params, run.state, sharding.to_global(batch, run.mesh))
  one_device = jax.devices()[0]
  method._context = dataclasses.replace(method.context, mesh=sharding.make_mesh([one_device]))
  local = jax.device_put((run.state.params, run.state, batch), one_device)
  one = jax.jit(method.codes)(*local[:2], local[2])
  for m in goca.MODALITIES:
    assert eight[m].shape == (2, config.batch_size, config.goca.num_prototypes)
    np.testing.assert_allclose(np.asarray(eight[m]), np.asarray(one[m]), atol=2e-5)
  run.checkpointer.close()
