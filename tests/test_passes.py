"""Ordered passes: parallel shard reading that changes no result, one gather, progress lines, stats."""

import jax
import numpy as np

from avssl import passes, sharding
from avssl.data import datasets, pipeline
from avssl.modes import setup as setup_mode
from conftest import load_config


def _indexed(num_train, batch_size):
  """A source of `num_train` clips whose only input is `label` = 10 × index (nothing to decode)."""
  fetch = lambda split, indices: {'label': 10 * indices.astype(np.int32)}
  return datasets.IndexedSource(fetch, num_train, 0, batch_size=batch_size, process_index=0,
                                process_count=1, seed=0)


def test_ordered_pass_sorts_drops_padding_and_logs_progress(monkeypatch):
  monkeypatch.setattr(passes, 'PROGRESS_SECONDS', 0.0)  # A line after every batch.
  # The lines as passes logs them (caplog misses absl's records once another test in the same
  # worker has set absl's handler up).
  logged = []
  monkeypatch.setattr(passes.logging, 'info', lambda msg, *args: logged.append(msg % args))
  batches = _indexed(20, 8).dataset_batches()  # 3 batches, the last with 4 rows of padding.
  reversed_batches = datasets.PassBatches(reversed(list(batches)), batches.clips)
  mesh = sharding.make_mesh()
  with passes.recorded() as stats:
    out = passes.ordered_pass(lambda batch: {'label': batch['label']}, reversed_batches, mesh,
                              name='test pass')
  assert out['index'].tolist() == list(range(20))
  assert out['label'].tolist() == [10 * i for i in range(20)]
  lines = [line for line in logged if line.startswith('test pass:')]
  assert lines[0].startswith('test pass: 8/20 clips, ') and 'clips/s/device), ETA ' in lines[0]
  assert lines[-1].startswith('test pass: 20 clips in ') and lines[-1].endswith('clips/s/device)')
  assert [(s.name, s.clips, s.devices) for s in stats] == [('test pass', 20, 8)]
  assert stats[0].seconds > 0 and stats[0].clips_per_sec == 20 / stats[0].seconds


def _labels_only(directory, readers):
  config = pipeline.default_config(dir=directory, eval_split='test', with_video=False,
                                   with_audio=False, pass_readers=readers)
  return pipeline.RecordSource(config, batch_size=8, process_index=0, process_count=1, seed=0)


def test_shards_are_interleaved_in_one_order_whatever_the_readers(avsynth_records):
  """58 videos in shards of 16, 16, 16, 10: record by record across the shards, then the padding."""
  order = {readers: [int(i) for b in _labels_only(avsynth_records, readers).dataset_batches()
                     for i in b['index']] for readers in (1, 8)}
  assert order[1] == order[8]
  assert order[1][:5] == [0, 16, 32, 48, 1] and order[1][-6:] == [-1] * 6
  assert sorted(order[1][:58]) == list(range(58))


def test_selavi_label_update_is_bitwise_the_same_with_1_and_8_readers(avsynth_records, tmp_path):
  config = load_config('selavi_vggsound', 'tiny')
  config.data.dir = avsynth_records
  # No batch-norm warm-up (it reads training batches, not a pass) and one pass for both heads: the
  # test's time is the set-up and the compilation.
  config.selavi.bn_warmup_batches, config.selavi.num_groups = 0, 1
  run = setup_mode.setup(config, str(tmp_path))
  updated = {}
  for readers in (1, 8):
    data_config = config.data.copy_and_resolve_references()
    data_config.pass_readers = readers
    data = datasets.build(data_config, batch_size=config.batch_size, process_index=0,
                          process_count=1, seed=config.seed)
    with passes.recorded() as stats:
      state = run.method.label_update(run.state, data, run.mesh)
    assert [(s.name, s.clips) for s in stats] == [('label pass (heads 0, 1)', 58)]
    updated[readers] = jax.tree.map(np.asarray, (state.method_state, state.params))
  run.checkpointer.close()
  (state_1, params_1), (state_8, params_8) = updated[1], updated[8]
  assert np.all(state_1['self_labels'] >= 0)
  for a, b in zip(jax.tree.leaves((state_1, params_1)), jax.tree.leaves((state_8, params_8))):
    np.testing.assert_array_equal(a, b)
