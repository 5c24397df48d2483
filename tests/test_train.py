"""The shared loop: training on the sharded batch, exact resume, and the non-finite-loss guard."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avssl import checkpointing, loop, sharding
from avssl.modes import setup as setup_mode, train
from avssl.data import datasets, synthetic
from avssl.methods import supervised
from avssl.errors import UserError
from conftest import state_leaves


def test_loss_falls_on_eight_devices_with_sharded_batch(tiny_config, tmp_path):
  config = tiny_config
  config.total_steps = 40
  config.checkpoint_every_steps = 40
  run = setup_mode.setup(config, str(tmp_path))
  step = loop.make_train_step(run)
  batches = run.data.train_batches(0)
  state, losses = run.state, []
  for _ in range(config.total_steps):
    batch = sharding.to_global(next(batches), run.mesh)
    assert len(batch['video'].sharding.device_set) == 8
    assert batch['video'].addressable_shards[0].data.shape[0] == config.batch_size // 8
    state, metrics = step(state, batch)
    losses.append(float(metrics['loss']))
  assert state.params['classifier']['kernel'].sharding.is_fully_replicated
  first, last = np.mean(losses[:5]), np.mean(losses[-5:])
  assert last < 0.75 * first, (first, last)
  run.checkpointer.close()


def test_resume_is_exact(tiny_config, tmp_path):
  uninterrupted = train.train_and_evaluate(tiny_config, str(tmp_path / 'a'))

  stopped = tiny_config.copy_and_resolve_references()
  stopped.total_steps = 3
  train.train_and_evaluate(stopped, str(tmp_path / 'b'))
  resumed = train.train_and_evaluate(tiny_config, str(tmp_path / 'b'))

  assert int(resumed.step) == int(uninterrupted.step) == 6
  a, b = state_leaves(uninterrupted), state_leaves(resumed)
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_a_checkpoint_from_before_a_method_state_entry_resumes_with_its_initial_value(
    tiny_config, tmp_path, monkeypatch):
  """A method that starts keeping another array (as SeLaVi did its Sinkhorn potentials) resumes
  the runs saved before: the saved entries as saved, the new one from its initial value."""
  def method_state(*entries):
    return lambda self, num_examples: {k: jnp.full((2,), float(i + 1))
                                       for i, k in enumerate(entries)}

  monkeypatch.setattr(supervised.Supervised, 'init_method_state', method_state('kept'))
  stopped = tiny_config.copy_and_resolve_references()
  stopped.total_steps = 3
  train.train_and_evaluate(stopped, str(tmp_path))
  monkeypatch.setattr(supervised.Supervised, 'init_method_state', method_state('kept', 'added'))
  resumed = train.train_and_evaluate(tiny_config, str(tmp_path))
  assert int(resumed.step) == 6
  np.testing.assert_array_equal(resumed.method_state['kept'], [1.0, 1.0])
  np.testing.assert_array_equal(resumed.method_state['added'], [2.0, 2.0])
  assert not list((tmp_path / 'checkpoints').glob('*' + checkpointing.DAMAGED + '*'))


_NAN_FROM_STEP = 4


@datasets.register('synthetic_nan_from_step_4')
def _nan_source(config, **kwargs):
  """Synthetic data whose training batches turn to NaN from step 4 on."""
  source = synthetic.build(config, **kwargs)
  clean = source.train_batches

  def train_batches(start_step, weights=None):
    for step, batch in enumerate(clean(start_step, weights), start=start_step):
      if step >= _NAN_FROM_STEP:
        batch['video'] = np.full_like(batch['video'], np.nan)
      yield batch

  source.train_batches = train_batches
  return source


def test_nan_loss_stops_with_step_named_and_keeps_last_good_checkpoint(tiny_config, tmp_path):
  config = tiny_config
  config.data.name = 'synthetic_nan_from_step_4'
  config.checkpoint_every_steps = 2
  with pytest.raises(loop.NonFiniteLossError, match=f'at step {_NAN_FROM_STEP}: stopping .*checked'):
    train.train_and_evaluate(config, str(tmp_path))

  checkpointer = checkpointing.Checkpointer(str(tmp_path), every_steps=2, keep=3)
  assert checkpointer.latest_step() == _NAN_FROM_STEP
  config.data.name = 'synthetic'
  run = setup_mode.setup(config, str(tmp_path))
  assert int(run.state.step) == _NAN_FROM_STEP
  assert all(np.isfinite(x).all() for x in state_leaves(run.state).values())
  run.checkpointer.close()
  checkpointer.close()


def test_missing_total_duration_fails_before_training(tiny_config, tmp_path):
  tiny_config.total_steps = None
  with pytest.raises(UserError, match='total_steps nor total_epochs'):
    setup_mode.setup(tiny_config, str(tmp_path))


def test_batch_that_does_not_divide_over_devices_is_refused(tiny_config, tmp_path):
  tiny_config.batch_size = 12
  with pytest.raises(ValueError, match='batch_size=12 does not divide over 8 devices'):
    setup_mode.setup(tiny_config, str(tmp_path))


def test_prefetch_keeps_the_order_and_reads_only_its_depth_ahead():
  mesh = sharding.make_mesh()
  read = []

  def batches():
    for i in range(5):
      read.append(i)
      yield {'x': np.full((8, 2), i, np.float32)}

  prefetched = sharding.prefetch_to_mesh(batches(), mesh, 2)
  first = next(prefetched)
  assert read == [0, 1, 2]  # The step's batch and the two behind it, already on their way.
  assert isinstance(first['x'], jax.Array) and first['x'].sharding == sharding.batch_sharded(mesh)
  assert [int(b['x'][0, 0]) for b in [first, *prefetched]] == [0, 1, 2, 3, 4]
