#!/usr/bin/env bash
# Sets up .venv (first time) and runs the whole test suite; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# setup.sh installed every tool the tests use (node, solc-js, anvil, Slither, Flower's SuperLink): a test that
# finds one missing fails here instead of skipping (tests/tools.py). -rs lists whatever still skips, and why.
export FEDLEARN_REQUIRE_TOOLS=1
exec .venv/bin/python -m pytest -q -rs "$@"
