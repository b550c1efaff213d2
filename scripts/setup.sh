#!/usr/bin/env bash
# Creates .venv and installs fedlearn with its development tools. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
# Users with GPUs install their own torch before running this script.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install -q "torch==2.13.0"
fi
# Like setup-chain.sh: nothing to do when this pyproject.toml was installed already (pip's own no-op check takes
# ~20 s, and every script calls this one).
stamp=.venv/.pyproject.sha256
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! .venv/bin/python -c "import fedlearn" 2>/dev/null; then
  .venv/bin/pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi
# Node packages for the contracts (solc-js, OpenZeppelin, anvil); running needs none of them.
bash scripts/setup-chain.sh
