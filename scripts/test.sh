#!/usr/bin/env bash
# The test suite: installs what it needs, then runs pytest on 8 simulated CPU devices (tests/conftest.py),
# in two worker processes (the CI machine's two cores; compiling dominates and is single-threaded), each
# test file in one worker so that a file's fixtures are made once. Lint (ruff) and type check (mypy, with
# its cache in .mypy_cache) come first; env.sh sets -e, so either one failing fails the command. The
# slowest tests are listed at the end, to keep the suite under 10 minutes.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
ruff check avssl benchmarks configs tests
mypy avssl
exec python -m pytest -q -n 2 --dist loadfile --durations=25 tests "$@"
