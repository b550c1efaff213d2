"""`fedlearn license` and `fedlearn gov` end to end on eth-tester, each command in its own parse (state file)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from fedlearn import chain
from fedlearn.chain.license import UNIT
from fedlearn.chain.session import save_state
from fedlearn.cli import chain as chain_cli
from fedlearn.cli import license as license_cli
from fedlearn.errors import ChainError

MODEL = "0x" + "ab" * 32


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="fedlearn")
    sub = parser.add_subparsers(dest="command", required=True)
    chain_cli.register(sub)
    license_cli.register(sub)
    args = parser.parse_args(list(argv))
    return args.handler(args)


def _mint(deployment: Path, to: str, amount: int) -> None:
    """Mints on the saved eth-tester chain (the admin's role; the CLI has no transfer command)."""
    state = deployment.with_suffix(".eth-tester.json")
    session = chain.connect(chain.ETH_TESTER, state_file=state)
    chain.mint(session, chain.Deployment.load(deployment), to, amount)
    save_state(session, state)


@pytest.fixture
def setup(tmp_path: Path) -> Path:
    """Token, distributor and a governed license; round 1 settled with institution 0 at 1,000 and 1 at 3,000."""
    path = tmp_path / "deployment.json"
    d = ["--deployment", str(path)]
    assert run("chain", "deploy", *d) == 0
    assert run("chain", "fund", *d, "--amount", "4e21") == 0
    inst = [a.address for a in chain.institution_accounts(2)]
    rewards = tmp_path / "r1.json"
    rewards.write_text(json.dumps({inst[0]: str(1_000 * UNIT), inst[1]: str(3_000 * UNIT)}))
    assert run("chain", "settle", *d, "--round", "1", "--model-hash", MODEL, "--rewards", str(rewards)) == 0
    assert run("license", "deploy", *d, "--voting-delay", "60", "--voting-period", "600",
               "--timelock-delay", "300", "--quorum", "10") == 0
    return path


def test_license_fees_and_governance_from_the_cli(setup: Path, capsys) -> None:
    d = ["--deployment", str(setup)]
    company = chain.institution_accounts(6)[5].address
    capsys.readouterr()
    assert run("license", "quote", *d, "--revenue", "5000000") == 0
    assert "required stake 4,000 tokens (4000000000000000000000 units)" in capsys.readouterr().out
    assert run("license", "attest", *d, company, "--revenue", "5e6") == 0
    _mint(setup, company, 4_100 * UNIT)
    assert run("license", "acquire", *d, "--institution", "5") == 0
    assert run("license", "status", *d, company) == 0
    assert f"{company}: licensed until" in capsys.readouterr().out
    assert run("license", "pay-fee", *d, "--institution", "5", "--amount", "100") == 0

    # Contributors withdraw their fee shares: 1,000 and 3,000 of 4,000 weight.
    capsys.readouterr()
    assert run("license", "shares", *d, "--institution", "1") == 0
    assert "round 1: 75 withdrawable" in capsys.readouterr().out
    assert run("license", "withdraw", *d, "--account", chain.institution_accounts(1)[0].address) == 0
    assert "paid 25 of round 1's fees" in capsys.readouterr().out

    # Institution 1 claims its rewards, votes with them and changes the lock period and X.
    assert run("chain", "claim", *d, "--institution", "1", "--tree", str(setup.parent / "trees" / "round-1.json")) == 0
    assert run("gov", "delegate", *d, "--institution", "1") == 0
    assert run("gov", "advance-time", *d, "1") == 0
    capsys.readouterr()
    assert run("gov", "propose", *d, "--institution", "1", "--set", "lock-period=400d", "--set", "stake-rate=0.002",
               "--description", "Longer locks, double X") == 0
    proposal = re.search(r"proposal (\d+)", capsys.readouterr().out).group(1)
    assert run("gov", "advance-time", *d, "61") == 0
    assert run("gov", "vote", *d, proposal, "--institution", "1", "--support", "for") == 0
    assert run("gov", "advance-time", *d, "601") == 0
    assert run("gov", "queue", *d, proposal) == 0
    assert run("gov", "advance-time", *d, "301") == 0
    assert run("gov", "execute", *d, proposal) == 0
    capsys.readouterr()
    assert run("gov", "status", *d, proposal, "--json") == 0
    status = json.loads(capsys.readouterr().out)["proposals"][0]
    assert status["state"] == "Executed" and status["changes"]["lock-period"] == 400 * 86_400
    assert run("license", "quote", *d, "--revenue", "5000000") == 0
    out = capsys.readouterr().out
    assert "required stake 8,000 tokens" in out and "lock period 400 days" in out


def test_license_cli_bad_input_is_one_line(setup: Path) -> None:
    d = ["--deployment", str(setup)]
    company = chain.institution_accounts(6)[5].address
    assert run("license", "attest", *d, company, "--revenue", "5000000") == 0
    cases = [
        (["license", "quote", *d, "--revenue", "-5"], "revenue cannot be negative"),
        (["license", "quote", *d, "--revenue", "1e19"], r"above the largest accepted .* \(RevenueTooLarge\)"),
        (["license", "quote", *d, "--revenue", "lots"], "revenue must be a number"),
        (["license", "attest", *d, company, "--revenue", "-1"], "revenue cannot be negative"),
        (["license", "acquire", *d, "--institution", "5"], r"holds 0 tokens, needs 4000000000000000000000"),
        (["license", "acquire", *d, "--institution", "5", "--lock", "30d"],
         r"shorter than the lock period .*LockTooShort"),
        (["license", "acquire", *d, "--institution", "4"], r"no revenue attested .*RevenueNotAttested"),
        (["license", "acquire", *d, "--institution", "5", "--amount", "1"], r"InsufficientStake"),
        (["license", "attest", *d, company, "--revenue", "1", "--institution", "2"],
         "lacks the license's ATTESTER_ROLE"),
        (["license", "pay-fee", *d, "--institution", "5", "--amount", "1"], "holds 0 tokens, needs"),
        (["license", "withdraw", *d, "--institution", "0"], "no fee share left"),
        (["gov", "propose", *d, "--set", "lock-period=1h", "--description", "x"],
         r"lock-period 3600 is outside \[86400, 315360000\] \(ParameterOutOfRange\)"),
        (["gov", "propose", *d, "--set", "stake-rate=1.5", "--description", "x"],
         r"stake-rate .* \(ParameterOutOfRange\)"),
        (["gov", "propose", *d, "--set", "colour=blue", "--description", "x"], "unknown parameter 'colour'"),
        (["gov", "execute", *d, "12345"], "no proposal 12345|proposal 12345"),
        (["license", "status", *d, "--license-file", str(setup.parent / "none.json")], "cannot read license file"),
    ]
    for argv, message in cases:
        with pytest.raises(ChainError, match=message) as err:
            run(*argv)
        assert "\n" not in str(err.value) and err.value.exit_code == 5, argv
