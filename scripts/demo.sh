#!/usr/bin/env bash
# Sets up .venv (first time) and runs the demo federated run; extra arguments go to `fedlearn run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/fedlearn run --config configs/demo.toml "$@"
