"""The package as `pip install .` makes it: pyproject.toml declares every distribution the package
imports (read from the source with `ast`), its ranges hold the versions the lock files pin, and its
console scripts are functions that run as `python -m` does. No pip: the install itself is shown in a
clean venv (README, "Installing with pip")."""

import ast
import importlib
import inspect
import pathlib
import re
import subprocess
import sys
import tomllib

import pytest
from packaging.requirements import Requirement

from conftest import REPO

PROJECT = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']
#: Import names whose distribution has another name.
DISTRIBUTIONS = {'absl': 'absl-py', 'cv2': 'opencv-contrib-python-headless', 'ml_collections':
                 'ml-collections', 'orbax': 'orbax-checkpoint', 'PIL': 'pillow', 'sklearn':
                 'scikit-learn', 'yaml': 'pyyaml'}
#: Declared, never imported by name: why.
NOT_IMPORTED = {'tensorboard': "tf.summary's scalar and image writers import it when they write"}
#: Pinned in requirements.txt without being declared: why.
PINNED_ONLY = {'jaxlib': "jax's compiled half, pinned to jax's version",
               'tensorflow-cpu': "the CPU build of the declared tensorflow, pinned alike"}


def _name(requirement: str) -> str:
  return Requirement(requirement).name.lower().replace('_', '-')


def _pins(path: pathlib.Path) -> dict[str, str]:
  """name -> version of each `name==version` line."""
  return {m[1].lower(): m[2] for m in re.finditer(r'^([\w.-]+)==(\S+)', path.read_text(), re.M)}


def required_imports(path: pathlib.Path) -> list[tuple[int, str]]:
  """(line, top-level name) of every absolute import in `path`, at any depth, except those inside a
  `try` that handles ImportError (an optional extra such as torch)."""
  tree = ast.parse(path.read_text(), str(path))
  optional = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Try) and any(
        isinstance(h.type, ast.Name) and h.type.id in ('ImportError', 'ModuleNotFoundError')
        for h in node.handlers):
      optional.update(id(n) for statement in node.body for n in ast.walk(statement))
  found = []
  for node in ast.walk(tree):
    if id(node) in optional:
      continue
    if isinstance(node, ast.Import):
      found += [(node.lineno, alias.name.split('.')[0]) for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      found.append((node.lineno, node.module.split('.')[0]))
  return found


def test_every_import_of_the_package_is_a_declared_dependency():
  declared = {_name(r) for r in PROJECT['dependencies']}
  undeclared, used = [], set()
  for path in sorted((REPO / 'avssl').rglob('*.py')):
    for line, module in required_imports(path):
      if module in sys.stdlib_module_names or module == 'avssl':
        continue
      distribution = DISTRIBUTIONS.get(module, module.lower().replace('_', '-'))
      used.add(distribution)
      if distribution not in declared:
        undeclared.append(f'{path.relative_to(REPO)}:{line}: {module} ({distribution})')
  assert not undeclared, 'imported but not in pyproject.toml\'s dependencies:\n' + '\n'.join(undeclared)
  assert declared - used == set(NOT_IMPORTED)  # Nothing declared that nothing needs.


def test_the_checker_sees_nested_imports_and_skips_optional_ones(tmp_path):
  module = tmp_path / 'm.py'
  module.write_text('import a.b\n\ndef f():\n  from c import d\n  try:\n    import torch\n'
                    '  except ImportError:\n    pass\n')
  assert required_imports(module) == [(1, 'a'), (4, 'c')]


def test_the_declared_ranges_hold_the_pinned_versions():
  """requirements.txt (the runtime lock) and requirements-test.txt (the test tools) are what the
  tests run on; pyproject's ranges must contain them, and the lock must pin nothing undeclared."""
  runtime, tools = _pins(REPO / 'requirements.txt'), _pins(REPO / 'requirements-test.txt')
  extras = PROJECT['optional-dependencies']
  for requirement, pins in ([(r, runtime) for r in PROJECT['dependencies'] + extras['tpu']
                             + extras['cuda12']] + [(r, tools) for r in extras['test']]):
    name = _name(requirement)
    version = pins['tensorflow-cpu' if name == 'tensorflow' else name]
    assert Requirement(requirement).specifier.contains(version), (requirement, version)
  declared = {_name(r) for r in PROJECT['dependencies']}
  assert set(runtime) - declared == set(PINNED_ONLY)
  assert 'tensorflow-datasets' not in runtime  # Records are make_records' shards (README).


@pytest.mark.parametrize('command', sorted(PROJECT['scripts']))
def test_each_console_script_is_a_function_of_no_arguments(command):
  module, _, attribute = PROJECT['scripts'][command].partition(':')
  function = getattr(importlib.import_module(module), attribute)
  assert callable(function)
  assert all(p.default is not p.empty for p in inspect.signature(function).parameters.values())


#: An option each command's --help must list.
OPTIONS = {'avssl': '--workdir', 'avssl-make-records': '--dataset', 'avssl-make-synthetic': '--num_classes'}


@pytest.mark.parametrize('command', sorted(PROJECT['scripts']))
def test_each_console_script_helps_with_its_own_name_and_options(command):
  """What pip's launcher does (argv[0] the command's path, then the function), with --help: the usage
  names the command and lists the module's options, as `python -m` does."""
  module, _, attribute = PROJECT['scripts'][command].partition(':')
  launcher = (f'import sys; sys.argv = ["/venv/bin/{command}", "--help"]; '
              f'from {module} import {attribute}; {attribute}()')
  result = subprocess.run([sys.executable, '-c', launcher], cwd=REPO, capture_output=True, text=True,
                          check=False)  # absl's --help exits with 1, argparse's with 0.
  # argparse's usage line, or the heading of absl's list of the main module's flags.
  assert re.search(rf'(?im)^(usage: )?(/venv/bin/)?{command}[ :]', result.stdout), result.stdout
  assert OPTIONS[command] in result.stdout
