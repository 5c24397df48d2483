"""Writing result files so that a reader never sees half of one."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import IO


@contextlib.contextmanager
def atomic_open(path: str, mode: str = 'w', **kwargs) -> Iterator[IO]:
  """Opens a temporary file beside `path` and renames it to `path` only when the block succeeds.

  An interruption (an exception, a full disk) leaves whatever `path` held before and removes the
  temporary file: labels, manifests and metrics are either complete or absent, never partial.
  """
  tmp = f'{path}.tmp'
  try:
    with open(tmp, mode, **kwargs) as f:
      yield f
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
