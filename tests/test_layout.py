"""The architecture as imports: each side loads only what comes before it in a round, never the apps.

Each probe imports one module in a fresh interpreter and lists which heavy or downstream packages came with it.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import importlib, sys
importlib.import_module({module!r})
print(" ".join(sorted(name for name in sys.modules if name.split(".")[0] in
      ("torch", "flwr", "web3", "ray", "server", "clients") or name.startswith("fedlearn."))))
"""


def loaded_with(module: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], capture_output=True, text=True,
                         timeout=120, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize(("module", "forbidden"), [
    # Reading a run back (verify, claim, report) needs the chain, never training, Flower or the apps.
    ("fedlearn.payout.verify", ("torch", "flwr", "ray", "fedlearn.federation", "fedlearn.learning")),
    ("fedlearn.report", ("torch", "flwr", "web3", "fedlearn.federation", "fedlearn.chain")),
    ("fedlearn.records.rundir", ("torch", "flwr", "web3", "fedlearn.federation", "fedlearn.payout")),
    # Scoring is pure numpy: no chain, no Flower, no torch.
    ("fedlearn.scoring", ("torch", "flwr", "web3", "fedlearn.federation", "fedlearn.payout", "fedlearn.chain")),
    # The chain knows nothing of training or scoring.
    ("fedlearn.chain", ("torch", "flwr", "fedlearn.scoring", "fedlearn.federation", "fedlearn.payout")),
    # The config is the root of everything and imports none of it.
    ("fedlearn.config", ("torch", "flwr", "web3", "fedlearn.payout", "fedlearn.federation", "fedlearn.chain")),
    # The library runs the apps' logic itself: it never imports server/ or clients/.
    ("fedlearn.federation.coordinator", ("server", "clients")),
    ("fedlearn.federation.institution", ("server", "clients", "web3", "fedlearn.payout", "fedlearn.chain")),
    ("fedlearn.cli.main", ("torch", "flwr", "web3", "server", "clients")),
])
def test_imports_run_one_way(module: str, forbidden: tuple[str, ...]) -> None:
    loaded = loaded_with(module)
    wrong = sorted(name for name in loaded if name.split(".")[0] in forbidden
                   or any(name == f or name.startswith(f + ".") for f in forbidden))
    assert not wrong, f"{module} loads {wrong[:8]}"


def test_the_apps_are_built_from_the_library() -> None:
    loaded = loaded_with("server.app") | loaded_with("clients.app")
    assert {"fedlearn.federation.coordinator", "fedlearn.federation.institution"} <= loaded
