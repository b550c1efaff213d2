#!/usr/bin/env bash
# Static checks: ruff (lint and import order) and mypy (types), both configured in pyproject.toml; zero findings.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check fedlearn server clients tests benchmarks
.venv/bin/mypy
