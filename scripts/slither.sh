#!/usr/bin/env bash
# Static analysis of the contracts with Slither over the committed Hardhat-format build-info (no compiler runs).
# Fails on any high or medium finding. A finding that is a false positive is silenced where it occurs with
# `// slither-disable-next-line DETECTOR` and a comment saying why, so every exception is explained in the source.
set -euo pipefail
cd "$(dirname "$0")/.."
SLITHER=${SLITHER:-.venv/bin/slither}
if [ ! -x "$SLITHER" ]; then
  echo "slither.sh: $SLITHER not found; install slither-analyzer==0.11.6 into .venv" >&2
  exit 1
fi
# --hardhat-ignore-compile: read artifacts/build-info as committed; --npx-disable: never ask npx for hardhat.
# OpenZeppelin's sources under node_modules are filtered out: findings there are not ours to fix.
exec "$SLITHER" contracts \
  --compile-force-framework hardhat --hardhat-ignore-compile --npx-disable \
  --filter-paths "node_modules|@openzeppelin" \
  --exclude-low --exclude-informational --exclude-optimization \
  --fail-medium
