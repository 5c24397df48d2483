"""Every config file loads (full and :tiny), every :tiny one sets up and steps, and bad keys are named."""

import json
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

import avssl
from conftest import REPO, load_config, tree_leaves
from avssl import config_lib, loop, optim, sharding
from avssl.data import datasets
from avssl.errors import UserError
from avssl.methods import selavi
from avssl.modes import setup as setup_mode
from avssl.modes import train

CONFIGS = sorted(p.stem for p in (REPO / 'configs').glob('*.py')
                 if not p.stem.startswith('_') and p.stem != 'common')


def test_there_are_configs():
  assert CONFIGS


# One config per method trains a step and runs its evaluation end to end; every other config is set up
# (data, model, the initial state's shapes and shardings) and its train step traced and lowered with the
# real batch, which is where a config's mistakes show. Compiling 27 near-identical steps (and their
# inits) would add minutes, not checks.
TRAINED = {'selavi_vggsound', 'xdc_audioset', 'goca_kinetics', 'iicl_kinetics', 'finetune_esc50',
           'supervised_synthetic'}


def test_every_method_has_a_config_that_trains():
  methods = {load_config(name).method for name in CONFIGS}
  assert methods == {load_config(name).method for name in TRAINED}


@pytest.mark.parametrize('name', CONFIGS)
def test_config_loads_and_tiny_sets_up_and_steps(name, tmp_path, request):
  full = load_config(name)
  assert full.method and full.batch_size > 0
  tiny = load_config(name, 'tiny')
  tiny.total_epochs, tiny.total_steps = None, 1
  if tiny.data.name == 'records':  # Record-based configs train on the tiny avsynth records.
    fixture = 'avsynth_flow_records' if tiny.data.with_flow else 'avsynth_records'
    tiny.data.dir = request.getfixturevalue(fixture)
  if name in TRAINED:
    if tiny.data.name == 'records':
      # Video and flow as uint8, normalised on the device: the method's training step, scheduled
      # updates and evaluation, and the run rebuilt from run.json, all read them so.
      tiny.data.normalize_on_device = True
    _train_then_load_without_records(tiny, tmp_path)
    return
  run = setup_mode.setup(tiny, str(tmp_path), abstract=True)
  try:
    batch = sharding.to_global(next(run.data.train_batches(0)), run.mesh)
    lowered = loop.make_train_step(run).lower(run.state, batch)
    assert 'loss' in lowered.out_info[1]
  finally:
    run.checkpointer.close()


def _train_then_load_without_records(config, tmp_path):
  """Trains one step on a copy of the records, deletes the copy, and reopens the run from its
  workdir alone (`avssl.load_run`): the same config and, bit for bit, the same state."""
  workdir = tmp_path / 'run'
  if config.data.name == 'records':
    config.data.dir = str(shutil.copytree(config.data.dir, tmp_path / 'records'))
  state = train.train_and_evaluate(config, str(workdir))
  assert int(state.step) == 1
  if config.data.name == 'records':
    shutil.rmtree(config.data.dir)
  run = avssl.load_run(str(workdir))
  run.checkpointer.close()
  assert run.config.to_dict() == config.to_dict()
  assert run.data.num_train > 0 and run.total_steps == 1
  expected, loaded = tree_leaves(state), tree_leaves(run.state)
  assert expected.keys() == loaded.keys()
  for key, value in expected.items():
    np.testing.assert_array_equal(loaded[key], value, err_msg=key)


# `:accel` (`configs/common.accelerate`) in every config on records. The supervised config trains on
# generated float32 clips with a one-convolution network (no uint8 input, no block to recompute) and
# refuses it by name.
ACCEL = {('model', 'dtype'): 'bfloat16', ('model', 'remat'): 'blocks',
         ('data', 'normalize_on_device'): True}


def test_accel_sets_bfloat16_remat_and_uint8_inputs_in_every_config_and_nothing_else():
  for name in CONFIGS:
    if name == 'supervised_synthetic':
      with pytest.raises(ValueError, match="config argument 'accel' is not known"):
        load_config(name, 'accel')
      continue
    for arg in ('', 'tiny'):
      plain = load_config(name, arg)
      assert plain.data.normalize_on_device is False, name  # The float32 inputs of every run before.
      accel = load_config(name, ','.join(filter(None, (arg, 'accel'))))
      for (group, key), value in ACCEL.items():
        assert accel[group][key] == value, (name, arg, group, key)
        accel[group][key] = plain[group][key]
      assert accel.to_dict() == plain.to_dict(), (name, arg)  # With `:tiny` too, nothing else moves.


def test_load_run_without_a_checkpoint_is_refused_before_anything_is_built(tmp_path):
  config = load_config('supervised_synthetic', 'tiny')
  (tmp_path / 'run.json').write_text(json.dumps(
      {'config': json.loads(config.to_json_best_effort()), 'data': {}, 'example': {}}))
  with pytest.raises(UserError, match='no checkpoint in .*: load_run needs a trained model'):
    avssl.load_run(str(tmp_path))


def test_an_abstract_setup_has_the_states_shapes_dtypes_and_shardings(tiny_config, tmp_path):
  def spec(state):
    return jax.tree.map(lambda x: (x.shape, x.dtype, x.sharding), state)

  real = setup_mode.setup(tiny_config, str(tmp_path / 'real'))
  abstract = setup_mode.setup(tiny_config, str(tmp_path / 'abstract'), abstract=True)
  # A data stand-in and one example's shapes build the same state without reading any data.
  described = datasets.Described(num_train=real.data.num_train, num_eval=0,
                                 steps_per_epoch=real.steps_per_epoch, classes=[], records='')
  standin = setup_mode.setup(tiny_config, str(tmp_path / 'standin'), abstract=True, data=described,
                             example=real.example)
  for run in (real, abstract, standin):
    run.checkpointer.close()
  assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(abstract.state))
  assert spec(abstract.state) == spec(real.state) == spec(standin.state)


def test_parse_arg_types_and_unknown_names():
  arg = config_lib.parse_arg('tiny,batch_size=16,lr=0.5', tiny=False, batch_size=0, lr=0.1)
  assert arg.tiny is True and arg.batch_size == 16 and arg.lr == 0.5
  with pytest.raises(ValueError, match="'bogus' is not known"):
    config_lib.parse_arg('bogus=1', tiny=False)
  with pytest.raises(ValueError, match="'batch_size': cannot read 'x' as int"):
    config_lib.parse_arg('batch_size=x', batch_size=0)


def test_steps_from_epochs_or_steps():
  config = load_config('supervised_synthetic')
  config.total_epochs = 2.5
  assert config_lib.steps(config, 'total', steps_per_epoch=10) == 25
  config.total_steps = 7
  with pytest.raises(ValueError, match='both total_steps and total_epochs'):
    config_lib.steps(config, 'total', steps_per_epoch=10)


def _main(*args):
  return subprocess.run([sys.executable, '-m', 'avssl.main', *args], cwd=REPO, text=True,
                        capture_output=True, timeout=120, check=False)


def test_unknown_override_key_fails_at_start_with_its_name(tmp_path):
  result = _main('--config=configs/supervised_synthetic.py:tiny', f'--workdir={tmp_path}',
                 '--config.schedule.warmup_stpes=3')
  assert result.returncode != 0
  assert ('--config.schedule.warmup_stpes: the config has no such key; Did you mean "warmup_steps"?'
          in result.stderr)
  assert not (tmp_path / 'checkpoints').exists()


def test_unknown_config_argument_fails_with_its_name(tmp_path):
  result = _main('--config=configs/supervised_synthetic.py:tiny,bacth_size=8', f'--workdir={tmp_path}')
  assert result.returncode != 0 and "'bacth_size' is not known" in result.stderr


def test_selavi_vggsound_states_the_papers_numbers():
  """SeLaVi's VGG-Sound row as the paper (§3, §4) and the authors' release train it, read back from the
  resolved config: a refactor that moves a default must not move a number."""
  config = load_config('selavi_vggsound')
  assert config.method == 'selavi'
  assert (config.batch_size, config.total_epochs, config.seed) == (1024, 200.0, 31)
  o = config.optimizer
  assert (o.name, o.momentum, o.nesterov, o.weight_decay) == ('sgd', 0.9, False, 1e-5)
  schedule = config.schedule
  assert (schedule.name, schedule.base_lr, schedule.warmup_epochs) == ('warmup_constant', 0.01, 10.0)
  assert schedule.base_lr * schedule.multiplier == pytest.approx(0.64)  # 0.01 × 64 GPUs at 16 each.
  s = config.selavi
  assert (s.num_clusters, s.num_heads, s.num_groups, s.lam) == (309, 10, 2, 20.0)
  assert (s.prior, s.prior_sd, s.alignment) == ('gaussian', 0.1, True)
  assert (s.num_label_updates, s.schedule_power, s.modalities) == (100, 1.5, ('video', 'audio'))
  assert (config.model.video.name, config.model.video.depth) == ('r2plus1d', 18)
  assert (config.model.audio.name, config.model.audio.depth) == ('audio_resnet', 9)
  d = config.data
  assert (d.num_frames, d.crop_size, d.min_resize, d.max_resize, d.flip) == (30, 112, 128, 160, True)
  assert (d.eval_clips, d.eval_crops, d.eval_resize) == (1, 1, 112)  # The release's cluster export.
  assert (d.audio_seconds, d.audio.mode, d.audio.num_filters) == (1.0, 'logfbank', 257)
  assert (d.audio.win_length_s, d.audio.hop_length_s, d.volume_jitter) == (0.02, 0.01, 0.1)


# What each of Table 3's ablations sets (its columns MA, G, DH: alignment, Gaussian prior, decorrelated
# head groups), on VGG-Sound (rows d-f) and on the demo.
ABLATIONS = {
    'no_ma': dict(alignment=False, prior='gaussian', num_groups=2),
    'no_g': dict(alignment=True, prior='uniform', num_groups=2),
    'no_dh': dict(alignment=True, prior='gaussian', num_groups=1),
}

# SeLaVi Table 3, row by row: the config and its argument, and what the row sets on top of SeLaVi's
# VGG-Sound recipe.
TABLE3 = {
    'a': ('sela_vggsound', 'table3', dict(
        modalities=('video',), fusion='none', num_heads=10, num_groups=1, lam=25.0, prior='uniform',
        alignment=False, num_label_updates=100, schedule_power=2.0, head_hidden=0, head_dropout=0.0)),
    'b': ('concat_vggsound', 'table3', dict(
        modalities=('video', 'audio'), fusion='concat', num_heads=1, num_groups=1, lam=20.0,
        prior='uniform', alignment=False, schedule_power=1.5, head_hidden=512)),
    'c': ('selavi_vggsound', 'table3,no_ma,no_g,no_dh', dict(
        fusion='none', num_heads=10, alignment=False, prior='uniform', num_groups=1, lam=20.0,
        schedule_power=1.5)),
    'd': ('selavi_vggsound', 'table3,no_ma', dict(**ABLATIONS['no_ma'], schedule_power=1.5)),
    'e': ('selavi_vggsound', 'table3,no_g', dict(**ABLATIONS['no_g'], schedule_power=1.5)),
    'f': ('selavi_vggsound', 'table3,no_dh', dict(**ABLATIONS['no_dh'], schedule_power=1.5)),
    'g': ('selavi_vggsound', 'table3', dict(alignment=True, prior='gaussian', num_groups=2,
                                            num_heads=10, lam=20.0, head_hidden=512,
                                            schedule_power=1.5)),
}


@pytest.mark.parametrize('row', sorted(TABLE3))
def test_table3_row_resolves_to_the_papers_settings(row):
  """Each row of SeLaVi's Table 3 at its 100 epochs ("evaluated at 100 epochs"), K = 309 (VGG-Sound's
  classes), with the label updates spread over those 100 epochs as the release spreads them over a
  run's epochs: 99 of the 100 points (the last, the end of training, is never reached), as many in
  the first 10 epochs as (k / 99)^power · 100 ≤ 10 allows."""
  name, arg, expected = TABLE3[row]
  config = load_config(name, arg)
  assert config.method == 'selavi' and config.total_epochs == 100.0
  s = config.selavi
  assert {key: s[key] for key in expected} == expected
  assert s.num_clusters == 309 and s.num_label_updates == 100
  assert (config.model.video.name, config.model.video.depth) == ('r2plus1d', 18)
  steps_per_epoch = 166  # VGG-Sound's 170,752 training videos at batch 1024.
  total = config_lib.steps(config, 'total', steps_per_epoch)
  updates = selavi.SeLaVi(config).label_update_steps(total, steps_per_epoch)
  assert len(updates) == 99 and updates[0] == 0 and updates[-1] < total
  # (k / 99)^power < 0.1 for k < 99 · 0.1^(1 / power): k ≤ 21 at power 1.5, k ≤ 31 at 2.
  early = {1.5: 22, 2.0: 32}[expected['schedule_power']]
  assert sum(step < 10 * steps_per_epoch for step in updates) == early
  if name == 'selavi_vggsound':  # SeLaVi's recipe otherwise (test_selavi_vggsound_states_...).
    assert (config.batch_size, config.seed, config.schedule.name) == (1024, 31, 'warmup_constant')


def test_sela_states_selas_released_settings():
  """Table 3 (a) beyond its method keys: SeLa's training recipe (its release's `main.py` and ImageNet
  scripts), SeLa's augmentations, and the evaluations of a frames-only model."""
  full, table3 = load_config('sela_vggsound'), load_config('sela_vggsound', 'table3')
  assert (full.total_epochs, table3.total_epochs) == (400.0, 100.0)
  assert (full.batch_size, full.seed) == (256, 42)
  o, schedule = full.optimizer, full.schedule
  assert (o.name, o.momentum, o.weight_decay) == ('sgd', 0.9, 1e-5)
  assert (schedule.name, schedule.base_lr, schedule.multiplier) == ('step', 0.05, 1.0)
  assert (schedule.warmup_steps, schedule.warmup_epochs) == (None, None)
  assert (schedule.decay_epochs, schedule.decay_rate) == ((150.0, 300.0, 350.0), 0.1)
  lr = optim.learning_rate(schedule, steps_per_epoch=10, total_steps=4000)
  np.testing.assert_allclose([lr(e * 10) for e in (0, 149, 150, 299, 300, 349, 350, 399)],
                             [0.05, 0.05, 5e-3, 5e-3, 5e-4, 5e-4, 5e-5, 5e-5], rtol=1e-6)
  d = full.data
  assert (d.color_jitter, d.color_jitter_prob, d.grayscale_prob, d.flip) == (
      (0.4, 0.4, 0.4, 0.4), 1.0, 0.2, True)
  assert full.evaluation.kmeans.modalities == ('video',)
  assert full.evaluation.robustness.views == ('video',)
  assert load_config('concat_vggsound').evaluation.robustness.views == ('video + audio',)


def test_tiny_never_adds_heads_or_hidden_units():
  """`:tiny` shrinks Concat's one head and SeLa's linear heads no further and never grows them (it
  once set 2 MLP heads on every SeLaVi config)."""
  concat, sela = load_config('concat_vggsound', 'tiny'), load_config('sela_vggsound', 'tiny')
  assert (concat.selavi.num_heads, concat.selavi.num_groups) == (1, 1)
  assert (sela.selavi.num_heads, sela.selavi.head_hidden) == (2, 0)
  assert load_config('selavi_vggsound', 'tiny').selavi.head_hidden == 16


@pytest.mark.parametrize('arg, expected', [
    ('', dict(modalities=('video', 'audio'), alignment=True, prior='gaussian', num_groups=2,
              lam=20.0)),
    ('sela', dict(modalities=('video',), alignment=False, prior='uniform', num_groups=1, lam=25.0,
                  schedule_power=2.0, head_hidden=0)),
    ('concat', dict(fusion='concat', num_heads=1, num_groups=1, prior='uniform', alignment=False)),
    ('no_ma,no_g,no_dh', dict(alignment=False, prior='uniform', num_groups=1, num_heads=4)),
    *ABLATIONS.items(),
])
def test_demo_rows_are_table3s_methods_at_the_demos_sizes(arg, expected):
  config = load_config('selavi_demo', arg)
  s = config.selavi
  assert {key: s[key] for key in expected} == expected
  assert (s.num_clusters, s.num_label_updates, config.total_epochs, config.batch_size) == (
      10, 20, 10.0, 64)
  assert s.num_heads == (1 if arg == 'concat' else 4)
  # The demo's SeLa drops the release's colour augmentation (it erases avsynth's look); no row adds it.
  assert (config.data.color_jitter, config.data.grayscale_prob) == ((), 0.0)


def test_demo_nuisance_is_avnuisances_recipe_on_any_row():
  """`:nuisance` = the custom config's switches, whole-clip audio and 30 epochs of 40 label updates;
  cross targets only where each modality has its own heads; SeLa keeps its colour augmentation."""
  selavi, sela, concat = (load_config('selavi_demo', arg)
                          for arg in ('nuisance', 'sela,nuisance', 'concat,nuisance'))
  for config in (selavi, sela, concat):
    assert (config.data.dir, config.data.subtract_background, config.data.audio_band_norm,
            config.data.audio_seconds, config.total_epochs, config.selavi.num_label_updates) == (
                'runs/nuisance/records', 'median', 'mean_std', 2.0, 30.0, 40)
  assert [c.selavi.targets for c in (selavi, sela, concat)] == ['cross', 'shared', 'shared']
  assert (sela.data.color_jitter, sela.data.grayscale_prob) == ((0.4, 0.4, 0.4, 0.4), 0.2)
  assert load_config('selavi_demo', 'nuisance,records=/data/r').data.dir == '/data/r'
  assert load_config('selavi_demo').data.dir == 'runs/demo/records'


def test_demo_refuses_two_rows_at_once():
  with pytest.raises(ValueError, match='separate rows of Table 3'):
    load_config('selavi_demo', 'sela,no_dh')


@pytest.mark.parametrize('name', ['selavi_vggsound', 'xdc_kinetics', 'iicl_kinetics'])
def test_label_has_one_shape(name):
  assert load_config(name).label.to_dict() == dict(dir='', split='train', file='labels.csv',
                                                    save_probs=False)


def test_nothing_in_the_package_imports_configs():
  offenders = [str(p.relative_to(REPO)) for p in (REPO / 'avssl').rglob('*.py')
               if re.search(r'^\s*(from|import) configs\b', p.read_text(), re.MULTILINE)]
  assert not offenders


def test_a_config_package_imports_its_siblings_from_any_directory(tmp_path, monkeypatch):
  package = tmp_path / 'elsewhere' / 'my_configs'
  package.mkdir(parents=True)
  (package / '__init__.py').write_text('')
  (package / 'base.py').write_text('import ml_collections\n\ndef get_config(arg=None):\n'
                                   '  return ml_collections.ConfigDict(dict(batch_size=8))\n')
  (package / 'child.py').write_text('from my_configs import base\n\ndef get_config(arg=None):\n'
                                    '  config = base.get_config()\n  config.batch_size *= 2\n'
                                    '  return config\n')
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(sys, 'path', list(sys.path))
  assert config_lib.load(str(package / 'child.py')).batch_size == 16


def test_compilation_cache_dir_is_off_by_default_and_reaches_jax(tmp_path):
  """`config.compilation_cache_dir` ('' = off) sets JAX's persistent cache, as every mode's setup does."""
  assert load_config('selavi_vggsound').compilation_cache_dir == ''
  before = jax.config.jax_compilation_cache_dir
  try:
    setup_mode.use_compilation_cache('')
    assert jax.config.jax_compilation_cache_dir == before
    setup_mode.use_compilation_cache(str(tmp_path / 'cache'))
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / 'cache')
  finally:
    jax.config.update('jax_compilation_cache_dir', before)


def test_custom_nuisance_turns_on_the_switches_measured_on_avnuisance():
  plain, nuisance = load_config('selavi_custom'), load_config('selavi_custom', 'nuisance')
  assert (plain.data.subtract_background, plain.data.audio_band_norm, plain.selavi.targets) == (
      '', '', 'shared')
  assert (nuisance.data.subtract_background, nuisance.data.audio_band_norm,
          nuisance.selavi.targets) == ('median', 'mean_std', 'cross')
