#!/usr/bin/env bash
# The test suite: installs what it needs (env.sh, then the test tools of requirements-test.txt whenever
# that file changes), then runs pytest on 8 simulated CPU devices (tests/conftest.py), in two worker
# processes (the CI machine's two cores; compiling dominates and is single-threaded), each test file in
# one worker so that a file's fixtures are made once. Lint (ruff) and type check (mypy, with its cache in
# .mypy_cache) come first; env.sh sets -e, so either one failing fails the command. The slowest tests are
# listed at the end, to keep the suite under 10 minutes.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
avssl_once "$VIRTUAL_ENV/.requirements-test.sha256" "$(sha256sum requirements-test.txt | cut -d' ' -f1)" \
  python -m pip install --quiet -r requirements-test.txt
ruff check avssl benchmarks configs tests
mypy avssl
exec python -m pytest -q -n 2 --dist loadfile --durations=25 tests "$@"
