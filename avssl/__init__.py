"""avssl: audio-visual self-supervised learning by clustering, in JAX/Flax.

`avssl.load_run(workdir)` opens a trained run from its workdir alone (`avssl/modes/setup.py`); it is
imported on first use, so `import avssl` stays light.
"""

from typing import Any

__version__ = '0.1.0'


def __getattr__(name: str) -> Any:
  if name == 'load_run':
    from avssl.modes.setup import load_run  # pylint: disable=g-import-not-at-top
    return load_run
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
