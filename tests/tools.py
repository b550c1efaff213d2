"""Tests that need an external tool (node, solc-js, anvil, Slither, Flower's SuperLink) skip without it, so a
bare ``pytest`` works anywhere; ``scripts/test.sh`` installs every tool and sets FEDLEARN_REQUIRE_TOOLS=1, and
then a missing tool fails the test instead: CI never passes by skipping what it was meant to run."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

REQUIRED = os.environ.get("FEDLEARN_REQUIRE_TOOLS") == "1"


def missing_tool(what: str, hint: str = "run scripts/setup.sh") -> NoReturn:
    """Skip (or, where setup installed every tool, fail) a test whose tool ``what`` is not there."""
    if REQUIRED:
        pytest.fail(f"{what} is missing although scripts/setup.sh installs it ({hint})")
    pytest.skip(f"{what} missing: {hint}")
