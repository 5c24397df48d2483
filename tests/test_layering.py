"""The package's layers, read from the source with `ast` (nothing is imported): an arrow never runs upward.

main -> modes -> methods -> (models, clustering, data, evaluation) -> (sharding, files). The loop knows
methods only through their base interface; the evaluation library knows no method, mode, loop or
reporting; methods know no mode or reporting; avssl.data_prep trains and evaluates nothing.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def imported_modules(path: pathlib.Path) -> set[str]:
  """Every module `path` imports, at any depth (function-level imports included), as dotted names;
  `from avssl import methods` counts as `avssl.methods`."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      found.add(node.module)
      found.update(f'{node.module}.{alias.name}' for alias in node.names)
  return found


def modules(*patterns: str) -> list[pathlib.Path]:
  paths = []
  for pattern in patterns:
    matched = sorted(ROOT.glob(pattern))
    assert matched, f'no module matches {pattern}'
    paths += matched
  return paths


def violations(paths: list[pathlib.Path], forbidden: tuple[str, ...],
               allowed: tuple[str, ...] = ()) -> list[str]:
  """`file: module` for each import of a `forbidden` package (or module) not in `allowed`."""
  bad = []
  for path in paths:
    for name in sorted(imported_modules(path)):
      hit = any(name == f or name.startswith(f + '.') for f in forbidden)
      if hit and not any(name == a or name.startswith(a + '.') for a in allowed):
        bad.append(f'{path.name}: {name}')
  return bad


EVALUATION_LIBRARY = ('avssl/evaluation/*.py',)
LOWER = ('avssl/models/*.py', 'avssl/clustering/*.py', 'avssl/data/*.py')
UPPER = ('avssl.modes', 'avssl.reporting', 'avssl.loop', 'avssl.main')

RULES = {
    'the loop imports no evaluation, reporting, mode or concrete method': (
        ('avssl/loop.py',), ('avssl.evaluation', 'avssl.reporting', 'avssl.methods') + UPPER,
        ('avssl.methods.base',)),
    'the evaluation library imports no method, mode, loop, reporting or avssl.data_prep': (
        EVALUATION_LIBRARY, ('avssl.methods', 'avssl.data_prep') + UPPER, ()),
    'methods import no mode, reporting or loop': (('avssl/methods/*.py',), UPPER, ()),
    'avssl.data_prep imports nothing from evaluation, methods, modes or reporting': (
        ('avssl/data_prep/*.py',), ('avssl.evaluation', 'avssl.methods') + UPPER, ()),
    'models, clustering and data import nothing above them': (
        LOWER, ('avssl.evaluation', 'avssl.methods', 'avssl.data_prep') + UPPER, ()),
    'reporting imports no method, mode or loop': (
        ('avssl/reporting/*.py',), ('avssl.methods', 'avssl.modes', 'avssl.loop', 'avssl.main'), ()),
}


@pytest.mark.parametrize('rule', sorted(RULES))
def test_layer(rule):
  patterns, forbidden, allowed = RULES[rule]
  assert violations(modules(*patterns), forbidden, allowed) == []


def test_the_checker_sees_function_level_and_from_imports(tmp_path):
  module = tmp_path / 'm.py'
  module.write_text('from avssl import methods\n\ndef f():\n  from avssl.modes import train\n')
  assert violations([module], ('avssl.methods', 'avssl.modes'), ()) != []
  assert imported_modules(module) >= {'avssl.methods', 'avssl.modes.train'}
