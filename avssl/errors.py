"""Errors the user must fix (a path, a config key, a missing checkpoint), as opposed to bugs.

`avssl.main` prints a `UserError` as one or two lines, `avssl: <message>`, and exits with status 2;
the traceback, which would only bury the file or key to fix, is logged with `--verbose`. The message
itself therefore names what is wrong (the file, folder or config key) and what to do about it.
"""

from __future__ import annotations


class UserError(Exception):
  """A problem with the run's inputs that the user fixes (the message says where and how)."""
