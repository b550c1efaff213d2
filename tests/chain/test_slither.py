"""Slither over the committed build-info: no high or medium finding that is not explained in the source."""

from __future__ import annotations

import subprocess

import pytest

from tests.chain.conftest import repo_root
from tests.tools import missing_tool

SLITHER = repo_root() / ".venv" / "bin" / "slither"

pytestmark = pytest.mark.slow


def test_slither_finds_nothing_high_or_medium() -> None:
    if not SLITHER.exists():
        missing_tool("slither-analyzer in .venv")
    out = subprocess.run(
        ["bash", str(repo_root() / "scripts" / "slither.sh")], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "contracts analyzed" in out.stderr and "0 result(s) found" in out.stderr
