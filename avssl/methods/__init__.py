"""Methods, looked up by `config.method`: each is a `base.Method` subclass in a module of this package."""

from __future__ import annotations

import importlib

import ml_collections

from avssl.methods.base import Method, RunContext

_REGISTRY = {
    'finetune': 'avssl.methods.finetune:Finetune',
    'goca': 'avssl.methods.goca:GOCA',
    'iicl': 'avssl.methods.iicl:IICL',
    'selavi': 'avssl.methods.selavi:SeLaVi',
    'supervised': 'avssl.methods.supervised:Supervised',
    'xdc': 'avssl.methods.xdc:XDC',
}


def names() -> list[str]:
  return sorted(_REGISTRY)


def build(config: ml_collections.ConfigDict, context: RunContext | None = None) -> Method:
  """Instantiates the method named by `config.method` with the whole config and the run's context."""
  name = config.method
  if name not in _REGISTRY:
    raise ValueError(f'config.method={name!r} is not one of {names()}')
  module_name, class_name = _REGISTRY[name].split(':')
  return getattr(importlib.import_module(module_name), class_name)(config, context)
