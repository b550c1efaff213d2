#!/usr/bin/env bash
# Sets up .venv (first time) and runs the whole test suite; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# setup.sh installed every tool the tests use (node, solc-js, anvil, Slither, Flower's SuperLink): a test that
# finds one missing fails here instead of skipping (tests/tools.py). -rs lists whatever still skips, and why.
export FEDLEARN_REQUIRE_TOOLS=1
# One worker per core (at most 4), a test file per worker at a time (module fixtures run once), each worker's
# BLAS and OpenMP single-threaded: two thread pools spinning on a core another worker holds made numpy's small
# factorisations up to 17x slower (a free-rider test: 8 s alone, 135 s beside a busy process).
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec .venv/bin/python -m pytest -q -rs --numprocesses=auto --maxprocesses=4 --dist=loadfile "$@"
