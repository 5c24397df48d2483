"""Learning-rate schedules give the papers' values at the boundaries; optimisers are built by name."""

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
