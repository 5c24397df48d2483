#!/usr/bin/env bash
# The test suite: installs what it needs, then runs pytest on 8 simulated CPU devices (tests/conftest.py).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec python -m pytest -q tests "$@"
