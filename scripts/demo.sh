#!/usr/bin/env bash
# The demo: installs what it needs, then trains on the built-in demo data into runs/demo (resumes if
# run again) and evaluates. Extra arguments go to avssl.main (e.g. --config.total_steps=100).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec python -m avssl.main --config=configs/supervised_synthetic.py:tiny --workdir=runs/demo "$@"
