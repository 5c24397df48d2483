"""Learning-rate schedules give the papers' values at the boundaries; optimisers are built by name."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avssl import optim


def _lr(steps_per_epoch=10, total_steps=100, **schedule):
  return optim.learning_rate(optim.default_schedule_config(**schedule), steps_per_epoch, total_steps)


def test_warmup_constant_is_selavi_gradual_warmup():
  # SeLaVi: lr(e) = base * ((W - 1) * e / 10 + 1) for e <= 10 epochs, then base * W constant.
  lr = _lr(name='warmup_constant', base_lr=0.01, multiplier=64.0, warmup_epochs=10.0,
           steps_per_epoch=5, total_steps=1000)
  for epoch in (0, 2, 5, 10):
    assert float(lr(int(epoch * 5))) == pytest.approx(0.01 * (63 * epoch / 10 + 1), rel=1e-6)
  assert float(lr(999)) == pytest.approx(0.64)


def test_warmup_cosine_and_step_decay():
  lr = _lr(name='warmup_cosine', base_lr=1.0, warmup_steps=10, end_lr_fraction=0.0)
  assert float(lr(0)) == 0.0 and float(lr(10)) == pytest.approx(1.0)
  assert float(lr(55)) == pytest.approx(0.5, abs=1e-6) and float(lr(100)) == pytest.approx(0.0)
  lr = _lr(name='step', base_lr=1.0, decay_epochs=(3, 6), decay_rate=0.1)
  assert [round(float(lr(s)), 6) for s in (29, 30, 59, 60)] == [1.0, 0.1, 0.1, 0.01]


def test_sgd_weight_decay_applies_to_every_parameter():
  tx = optim.optimizer(optim.default_optimizer_config(name='sgd', momentum=0.0, weight_decay=0.5),
                       optim.optax.constant_schedule(0.1))
  params = {'w': jnp.ones(2), 'bias': jnp.full(2, 2.0)}
  updates, _ = tx.update({'w': jnp.zeros(2), 'bias': jnp.zeros(2)}, tx.init(params), params)
  np.testing.assert_allclose(updates['w'], -0.05)
  np.testing.assert_allclose(updates['bias'], -0.1)


@pytest.mark.parametrize('name', ['sgd', 'adam', 'adamw', 'lars'])
def test_every_optimizer_builds_and_steps(name):
  tx = optim.optimizer(optim.default_optimizer_config(name=name, weight_decay=1e-4),
                       optim.optax.constant_schedule(0.1))
  params = {'w': jnp.ones((3, 2))}
  updates, _ = tx.update({'w': jnp.ones((3, 2))}, tx.init(params), params)
  assert np.all(np.asarray(updates['w']) < 0)


def test_unknown_names_are_named():
  with pytest.raises(ValueError, match="'rmsprop'"):
    optim.optimizer(optim.default_optimizer_config(name='rmsprop'), optim.optax.constant_schedule(1))
  with pytest.raises(ValueError, match="'poly'"):
    _lr(name='poly')


def test_lr_multipliers_scale_each_named_group_and_zero_freezes_it_exactly():
  config = optim.default_optimizer_config(name='sgd', momentum=0.9, weight_decay=0.5,
                                          lr_multipliers={'backbone': 0.1, 'frozen': 0.0})
  tx = optim.optimizer(config, optim.optax.constant_schedule(0.2))
  params = {'backbone': {'w': jnp.ones(3)}, 'head': {'w': jnp.ones(3)},
            'frozen': {'w': jnp.ones(3)}}
  grads = {'backbone': {'w': jnp.full(3, 2.0)}, 'head': {'w': jnp.full(3, 2.0)},
           'frozen': {'w': jnp.full(3, np.nan)}}  # Even a NaN gradient leaves a frozen group alone.
  state = tx.init(params)
  for step in range(2):  # Two steps, so momentum is in play.
    updates, state = tx.update(grads, state, params)
    # SGD with momentum 0.9 on (g + wd·p) = 2.5: the trace is 2.5, then 2.5·1.9; lr 0.2 × factor.
    trace = 2.5 * (1.0, 1.9)[step]
    np.testing.assert_allclose(updates['head']['w'], -0.2 * trace, rtol=1e-6)
    np.testing.assert_allclose(updates['backbone']['w'], -0.02 * trace, rtol=1e-6)
    np.testing.assert_array_equal(updates['frozen']['w'], 0.0)
  new = optim.optax.apply_updates(params, updates)
  np.testing.assert_array_equal(new['frozen']['w'], params['frozen']['w'])


def test_lr_multipliers_for_adam_equal_a_smaller_learning_rate():
  grads = {'a': jnp.asarray([0.3, -1.0]), 'b': jnp.asarray([2.0, 0.5])}
  params = jax.tree.map(jnp.ones_like, grads)
  scaled = optim.optimizer(optim.default_optimizer_config(name='adamw', weight_decay=0.1,
                                                          lr_multipliers={'a': 0.25}),
                           optim.optax.constant_schedule(0.1))
  small = optim.optimizer(optim.default_optimizer_config(name='adamw', weight_decay=0.1),
                          optim.optax.constant_schedule(0.025))
  got, _ = scaled.update(grads, scaled.init(params), params)
  want, _ = small.update(grads, small.init(params), params)
  np.testing.assert_allclose(got['a'], want['a'], rtol=1e-6)
  np.testing.assert_allclose(got['b'], 4 * want['b'], rtol=1e-6)


def test_lr_multipliers_name_unknown_groups():
  config = optim.default_optimizer_config(lr_multipliers={'bakbone': 0.1})
  tx = optim.optimizer(config, optim.optax.constant_schedule(0.1))
  with pytest.raises(ValueError, match=r"\['bakbone'\], which are not top-level parameters"):
    tx.init({'backbone': jnp.ones(2), 'head': jnp.ones(2)})
  assert not optim.default_optimizer_config().lr_multipliers  # Off unless a config sets it.
