"""The one storage layer: every file the code reads or writes goes through here, local path or URL.

A workdir, a records folder, imported weights or annotation files may be local paths or URLs that
TensorFlow's filesystems know (`gs://` on Cloud TPU pods and Colab; `ram://`, in memory, in tests).
URLs go through `tf.io.gfile` (TensorFlow is imported only when a URL is used); local paths go
through `os` and Python's `open`, which keep their exact semantics (`newline`, `encoding`, atomic
`os.replace`) and need no TensorFlow. A URL is never passed through `os.path.abspath` or
`expanduser`, which would turn `gs://b/run` into a local folder `./gs:/b/run`.

Raw videos are the exception: PyAV decodes (and writes) local files only (`avssl/data/video_io.py`).
"""

from __future__ import annotations

import builtins
import contextlib
import glob as glob_lib
import io
import os
import posixpath
import re
import shutil
from collections.abc import Iterator
from typing import IO

_URL = re.compile(r'^[A-Za-z][A-Za-z0-9+.-]*://')


def _gfile():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.io.gfile


def _clear_ram(path: str) -> None:
  """Removes `path` on `ram://`, whose files TensorFlow appends to when written again (`gs://` and
  local files are replaced), so that a write means the same everywhere."""
  if path.startswith('ram://') and _gfile().exists(path):
    _gfile().remove(path)


def is_url(path: str) -> bool:
  """Whether `path` is a URL (`gs://...`, `ram://...`) rather than a local path."""
  return bool(_URL.match(os.fspath(path)))


def local_or_url(path: str) -> str:
  """A URL unchanged; a local path with `~` expanded and made absolute (flags, configs, orbax)."""
  path = os.fspath(path)
  return path if is_url(path) else os.path.abspath(os.path.expanduser(path))


def join(base: str, *parts: str) -> str:
  """`os.path.join`, with '/' in URLs whatever the host's separator."""
  return posixpath.join(base, *parts) if is_url(base) else os.path.join(base, *parts)


def exists(path: str) -> bool:
  return _gfile().exists(path) if is_url(path) else os.path.exists(path)


def isdir(path: str) -> bool:
  return _gfile().isdir(path) if is_url(path) else os.path.isdir(path)


def size(path: str) -> int:
  """The size of the file `path` in bytes: one stat, so that record shards can be checked against
  their manifest without reading them."""
  return _gfile().stat(path).length if is_url(path) else os.path.getsize(path)


def makedirs(path: str) -> None:
  """Creates `path` and its parents; an existing folder is fine. (Object stores have no folders; on
  them this only marks the prefix.)"""
  if is_url(path):
    _gfile().makedirs(path)
  else:
    os.makedirs(path, exist_ok=True)


def listdir(path: str) -> list[str]:
  """The names in folder `path`, sorted (so that every caller's order is the same everywhere)."""
  names = _gfile().listdir(path) if is_url(path) else os.listdir(path)
  return sorted(name.rstrip('/') for name in names)


def glob(pattern: str) -> list[str]:
  """The paths matching `pattern` (`*`, `?`, `[...]` within one path component), sorted."""
  return sorted(_gfile().glob(pattern) if is_url(pattern) else glob_lib.glob(pattern))


def open(path: str, mode: str = 'r', **kwargs) -> IO:  # pylint: disable=redefined-builtin
  """Python's `open` for a local path. For a URL: binary modes are `tf.io.gfile.GFile`; a text read
  decodes the whole file (`encoding`, default UTF-8, and `newline` as `open` takes them); a text
  write writes UTF-8 as given (no newline translation, as `newline=''`)."""
  if not is_url(path):
    return builtins.open(path, mode, **kwargs)
  if 'r' in mode and 'b' not in mode:
    with _gfile().GFile(path, 'rb') as f:
      data = f.read()
    text = data.decode(kwargs.get('encoding') or 'utf-8')
    return io.StringIO(text, newline=kwargs.get('newline'))
  if 'w' in mode:
    _clear_ram(path)
  return _gfile().GFile(path, mode)


def copy(source: str, target: str) -> None:
  """Copies one file, replacing `target`; either side may be a URL (uploads, downloads)."""
  if is_url(source) or is_url(target):
    _clear_ram(target)
    _gfile().copy(source, target, overwrite=True)
  else:
    shutil.copyfile(source, target)


def rename(source: str, target: str) -> None:
  """Moves `source` over `target`: atomic for local files (`os.replace`); on an object store a copy
  and a delete, so writers there mark completion with another file (make_records' shard `.json`)."""
  if is_url(source) or is_url(target):
    _gfile().rename(source, target, overwrite=True)
  else:
    os.replace(source, target)


def remove(path: str) -> None:
  """Deletes the file `path`; an absent one is fine (every caller is cleaning up)."""
  if is_url(path):
    if _gfile().exists(path):
      _gfile().remove(path)
  else:
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)


def rmtree(path: str) -> None:
  """Deletes the folder `path` with everything in it; an absent one is fine."""
  if is_url(path):
    if _gfile().exists(path):
      _gfile().rmtree(path)
  else:
    shutil.rmtree(path, ignore_errors=True)


def list_files(top: str) -> list[str]:
  """Every file under the folder `top`, as sorted paths relative to it (to copy a folder file by
  file, e.g. a site built locally up to a bucket)."""
  found = []
  walk = _gfile().walk(top) if is_url(top) else os.walk(top)
  for folder, _, names in walk:
    relative = os.path.relpath(folder, top) if not is_url(top) else folder[len(top):].strip('/')
    found += [name if relative in ('', '.') else f'{relative}/{name}' for name in names]
  return sorted(found)


@contextlib.contextmanager
def atomic_open(path: str, mode: str = 'w', **kwargs) -> Iterator[IO]:
  """Opens `path` for writing so that a reader sees the whole new file or none of it.

  Local: a temporary file beside `path`, renamed to `path` only when the block succeeds; an
  interruption (an exception, a full disk) leaves whatever `path` held and removes the temporary
  file. Object stores: the block writes to memory and the object is written in one upload when the
  block succeeds; an object becomes visible only when complete, and an exception uploads nothing.
  """
  if is_url(path):
    buffer = io.BytesIO() if 'b' in mode else io.StringIO()
    yield buffer
    with open(path, mode) as f:
      f.write(buffer.getvalue())
    return
  tmp = f'{path}.tmp'
  try:
    with builtins.open(tmp, mode, **kwargs) as f:
      yield f
    os.replace(tmp, path)
  finally:
    remove(tmp)
