#!/usr/bin/env bash
# Installs the contracts' npm packages (solc-js, OpenZeppelin Contracts and merkle-tree, anvil, ethers) from the
# committed lockfile. Idempotent: does nothing when contracts/node_modules already matches the lockfile.
set -euo pipefail
cd "$(dirname "$0")/../contracts"
if ! command -v npm >/dev/null; then
  echo "setup-chain: npm not found; install Node.js 18+ (the committed artifacts run without it)" >&2
  exit 1
fi
stamp=node_modules/.package-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x node_modules/.bin/solcjs ] && [ -x node_modules/.bin/anvil ]; then
  exit 0
fi
npm ci --no-audit --no-fund --loglevel=error
echo "$want" > "$stamp"
