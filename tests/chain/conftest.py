"""Fixtures for the chain tests: a fresh eth-tester chain with the contracts deployed, and anvil on loopback."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedlearn import chain
from fedlearn.chain.artifacts import contracts_dir
from tests.tools import missing_tool

UNSTAKE_DELAY = 2 * 86_400
PER_ROUND = 10**24  # high enough that the rate limit binds only where a test means it to
NODE_MODULES = contracts_dir() / "node_modules"
ANVIL = NODE_MODULES / ".bin" / "anvil"


@pytest.fixture
def session() -> chain.ChainSession:
    """A fresh eth-tester chain; dev account 0 signs (admin), 8 simulated institutions funded with gas."""
    return chain.connect(chain.ETH_TESTER, institutions=8)


@pytest.fixture
def coordinator(session: chain.ChainSession) -> chain.ChainSession:
    return session.as_account(chain.dev_account(1))


@pytest.fixture
def deployment(session: chain.ChainSession) -> chain.Deployment:
    """Token and distributor: dev account 0 is admin, dev account 1 coordinator; roots and slashes take effect
    at once (no delays), as in a single-operator simulation."""
    return chain.deploy(session, coordinator=chain.dev_account(1).address, unstake_delay=UNSTAKE_DELAY,
                        reward_per_round=PER_ROUND, root_delay=0, slash_delay=0)


@pytest.fixture
def institutions(session: chain.ChainSession) -> list[chain.ChainSession]:
    return [session.as_account(a) for a in chain.funded_institution_accounts(session, 8)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def anvil() -> Iterator[str]:
    """anvil from npm on a free loopback port; yields its URL and stops it afterwards."""
    if not ANVIL.exists():
        missing_tool(str(ANVIL), "run scripts/setup-chain.sh to install anvil from npm")
    port = _free_port()
    proc = subprocess.Popen(
        [str(ANVIL), "--host", "127.0.0.1", "--port", str(port), "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    pytest.fail(f"anvil did not start: {err[:300]}")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def node_available() -> bool:
    return shutil.which("node") is not None and (NODE_MODULES / "@openzeppelin" / "merkle-tree").is_dir()


def repo_root() -> Path:
    return contracts_dir().parent
