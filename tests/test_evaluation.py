"""The evaluation suite: frozen features, k-means baselines, degradation, tables, and `--mode=eval`."""

import json
import pathlib

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from avssl import sharding
from avssl.modes import evaluate as eval_mode, setup as setup_mode
from avssl.evaluation import baselines, features, robustness, tables
from avssl.models import encoders
from conftest import load_config


def _small_config(pool='avg'):
  model = ml_collections.ConfigDict(dict(
      video=encoders.encoder_config('small', widths=(4, 8), pool=pool),
      audio=encoders.encoder_config('small', widths=(4, 8)),
      bn_momentum=0.9, bn_eps=1e-5, dtype='float32'))
  return ml_collections.ConfigDict(dict(model=model))


def _batches(x, labels, batch=8):
  """Host batches of `x` in dataset order, the last one padded and masked."""
  n = len(x)
  for start in range(0, n, batch):
    index = np.arange(start, start + batch)
    mask = index < n
    take = np.where(mask, index, 0)
    yield {'video': x[take], 'label': np.where(mask, labels[take], -1).astype(np.int32),
           'index': np.where(mask, index, -1).astype(np.int32), 'mask': mask.astype(np.float32)}


def test_extract_equals_the_encoder_applied_view_by_view():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(11, 3, 2, 8, 8, 3)).astype(np.float32)  # 11 videos × 3 views.
  labels = np.arange(11) % 4
  module = features.encoder_module(_small_config(), 'video')
  variables = features.encoder_variables('random', module, 'video', lambda: x[0, 0], seed=3)
  mesh = sharding.make_mesh()
  encoder = features.Encoder(module, variables, 'video')
  got = features.extract({'v': encoder}, _batches(x, labels), mesh)['v']
  assert got.views.shape == (11, 3, 8)
  np.testing.assert_array_equal(got.index, np.arange(11))
  np.testing.assert_array_equal(got.labels, labels)
  for v in range(3):
    want = module.apply(variables, jnp.asarray(x[:, v]), False)
    np.testing.assert_allclose(got.views[:, v], want, rtol=1e-5, atol=1e-6)
  other = features.Encoder(module, features.encoder_variables('random', module, 'video',
                                                              lambda: x[0, 0], seed=4), 'video')
  both = features.extract({'one': encoder, 'other': other}, _batches(x[:, 0], labels), mesh)
  single = both['one']
  np.testing.assert_allclose(both['other'].views[:, 0], module.apply(other.variables, x[:, 0], False),
                             rtol=1e-5, atol=1e-6)  # Two encoders, one pass, each its own result.
  degraded = features.extract({'v': encoder}, _batches(x[:, 0], labels), mesh,
                              transform=lambda v: v * 0.0)['v']
  np.testing.assert_allclose(single.views[:, 0], got.views[:, 0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(degraded.views[:, 0],  # The transform reaches the video input.
                             module.apply(variables, jnp.zeros_like(x[:, 0]), False), atol=1e-6)


def test_encoder_choices_fail_clearly():
  with pytest.raises(ValueError, match='only the r2plus1d encoder'):
    features.encoder_module(_small_config(), 'video', pool='max222')
  module = features.encoder_module(_small_config(), 'video')
  with pytest.raises(ValueError, match="'trained' needs a checkpoint"):
    features.encoder_variables('trained', module, 'video', lambda: None)
  with pytest.raises(ValueError, match='torchvision:PATH'):
    features.encoder_variables('imagenet', module, 'video', lambda: np.zeros((2, 8, 8, 3)))


def test_kmeans_quality_on_separated_blobs_is_perfect_in_every_run():
  rng = np.random.default_rng(1)
  centres = np.eye(4, 16) * 10
  labels = np.repeat(np.arange(4), 25)
  x = centres[labels] + rng.normal(scale=0.1, size=(100, 16))
  result = baselines.kmeans_quality(x.astype(np.float32), labels, 4, runs=3,
                                    mesh=sharding.make_mesh())
  assert result['num_runs'] == 3 and len(result['nmi']['runs']) == 3
  assert result['nmi']['mean'] == pytest.approx(1.0) and result['nmi']['std'] == pytest.approx(0.0)
  assert result['accuracy']['mean'] == pytest.approx(1.0)


def test_joint_features_weigh_each_modality_equally():
  video = np.array([[[3.0, 4.0]], [[0.0, 2.0]]])  # [N=2, V=1, D=2]
  audio = np.array([[[100.0]], [[-5.0]]])
  joint = baselines.video_features([video, audio])
  np.testing.assert_allclose(joint, [[0.6, 0.8, 1.0], [0.0, 1.0, -1.0]])
  raw = baselines.video_features([video, audio], normalize=False)
  np.testing.assert_allclose(raw, [[3, 4, 100], [0, 2, -5]])


def test_degrade_removes_detail_and_keeps_shape():
  checker = np.indices((16, 16)).sum(0) % 2  # Finest possible detail: period 2.
  frames = np.repeat(checker[None, :, :, None], 3, axis=-1).astype(np.float32)[None]  # [1,16,16,3]
  np.testing.assert_array_equal(robustness.degrade(frames, 1), frames)
  blurred = np.asarray(robustness.degrade(frames, 4))
  assert blurred.shape == frames.shape
  np.testing.assert_allclose(blurred, 0.5, atol=0.005)  # Averaged away to the mean (edges: ±0.003).
  flat = np.full((1, 2, 16, 16, 3), 0.3, np.float32)  # A constant video is left alone.
  np.testing.assert_allclose(robustness.degrade(flat, 8), flat, atol=1e-6)
  with pytest.raises(ValueError, match='factor=0'):
    robustness.degrade(frames, 0)


def test_curve_reads_each_views_nmi_per_factor():
  seen = []

  def evaluate(batches):
    video = next(batches)['video']
    seen.append(float(np.abs(video - video.mean()).mean()))
    return {'video/nmi/mean': 1 - len(seen) / 10, 'video + audio/nmi/mean': 0.9}

  checker = (np.indices((16, 16)).sum(0) % 2).astype(np.float32)[None, :, :, None]
  curve = robustness.curve(evaluate, lambda: iter([{'video': checker}]), (1, 4),
                           baseline=lambda f: 1.0 / f)
  assert curve['factors'] == [1, 4]
  assert curve['video'] == [0.9, 0.8] and curve['video + audio'] == [0.9, 0.9]
  assert curve['k-means (video encoder)'] == [1.0, 0.25]
  assert seen[0] == pytest.approx(0.5) and seen[1] == pytest.approx(0.0, abs=0.005)
  with pytest.raises(ValueError, match="no 'audio/nmi/mean'"):
    robustness.curve(evaluate, lambda: iter([{'video': checker}]), (1,), views=('audio',))


def test_tables_text():
  assert tables.header('T', {'config': 'c.py', 'checkpoint step': 7, 'views': (10, 3)}) == (
      '### T\n\n- config: c.py\n- checkpoint step: 7\n- views: 10, 3\n')
  assert tables.retrieval({'a': {'R@1': 0.5, 'R@5': 0.75}}, (1, 5)) == (
      '| Method | R@1 | R@5 |\n|:---|---:|---:|\n| a | 50.0 | 75.0 |')
  assert tables.robustness({'factors': [1, 4], 'protocol': 'x', 'video': [0.5, 0.25]}) == (
      '| Down-sampling | NMI video |\n|:---|---:|\n| 1× | 50.0 |\n| 4× | 25.0 |')
  assert tables.probe({'e': {'accuracy': {'mean': 0.9, 'std': 0.01}, 'clip_accuracy': 0.8}}) == (
      '| Encoder / dataset | Top-1 (video) | Top-1 (clip) |\n|:---|---:|---:|\n'
      '| e | 90.0 ± 1.0 | 80.0 |')


def _files_outside_eval(workdir):
  """The bytes of every file of a run folder except the evaluations' own outputs (`eval/`,
  `eval.json`): checkpoints, labels, logs."""
  root = pathlib.Path(workdir)
  return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob('*'))
          if f.is_file() and f.relative_to(root).parts[0] not in ('eval', 'eval.json')}


def test_every_evaluation_writes_its_table_and_changes_nothing(avsynth_records, selavi_workdir):
  config = load_config('selavi_vggsound', 'tiny')
  config.data.dir = avsynth_records
  config.data.normalize_on_device = True  # uint8 video: every evaluation normalises it on the device.
  names = ('method', 'kmeans', 'robustness', 'retrieval', 'probe')
  run = setup_mode.setup(config, selavi_workdir)
  before = _files_outside_eval(selavi_workdir)
  assert any(name.startswith('checkpoints/') for name in before)
  context = eval_mode.Context(config, run.method, run.state, run.data, run.mesh, selavi_workdir,
                          int(run.state.step), 'configs/selavi_vggsound.py:tiny')
  results = eval_mode.run(context, names)
  run.checkpointer.close()
  after = _files_outside_eval(selavi_workdir)
  # Nothing on disk changes: no checkpoint saved, rewritten or deleted (so no BatchNorm statistics or
  # weights an evaluation touched can reach a later run), no other file of the run rewritten.
  assert sorted(after) == sorted(before)
  assert [name for name in before if before[name] != after[name]] == []
  out = pathlib.Path(selavi_workdir) / 'eval'
  text = (out / 'tables.md').read_text()
  for title in ('SeLaVi Table 2', 'SeLaVi Table 5', 'GOCA Table 6', 'SeLaVi Fig. 2',
                'SeLaVi Table 4', 'Linear probe'):
    assert title in text
  assert '- checkpoint step: 4' in text and '- config: configs/selavi_vggsound.py:tiny' in text
  table5 = (out / 'kmeans.md').read_text()
  for row in ('k-means, trained encoder: video + audio', 'k-means, random encoder: video',
              'selavi: video + audio'):
    assert f'| {row} |' in table5
  kmeans = json.loads((out / 'kmeans.json').read_text())
  assert len(kmeans['k-means, random encoder: audio']['nmi']['runs']) == config.evaluation.kmeans.runs
  curve = results['robustness']
  assert curve['factors'] == list(config.evaluation.robustness.factors)
  assert len(curve['video']) == len(curve['video + audio']) == len(curve['factors'])
  assert curve['video'][0] == pytest.approx(results['method']['video/nmi/mean'])
  assert 0 <= results['probe']['summary']['accuracy'] <= 1
  # The probe's views, encoder and pooling are retrieval's (`:tiny`): it read no split again.
  assert len(context.feature_cache) == 2
  assert set(results['retrieval']['video']) >= {f'R@{k}' for k in config.evaluation.retrieval.ks}
  assert json.loads((pathlib.Path(selavi_workdir) / 'eval.json').read_text())['step'] == 4


def test_eval_mode_runs_the_configured_evaluations(avsynth_records, selavi_workdir):
  config = load_config('selavi_vggsound', 'tiny')
  config.data.dir = avsynth_records
  config.evaluation.run = ('method',)
  results = eval_mode.evaluate(config, selavi_workdir, 'configs/selavi_vggsound.py')
  assert set(results) == {'method'} and 'video + audio/nmi/mean' in results['method']
  assert (pathlib.Path(selavi_workdir) / 'eval' / 'method.md').exists()


def test_unknown_evaluation_is_named_before_any_work(tmp_path):
  config = load_config('selavi_demo', 'tiny')
  config.evaluation.run = ('method', 'retreival')
  with pytest.raises(ValueError, match=r"\['retreival'\]"):
    eval_mode.evaluate(config, str(tmp_path))
