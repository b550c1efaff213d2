"""`fedlearn license` and `fedlearn gov` end to end on eth-tester, each command in its own parse (state file)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from fedlearn import chain
from fedlearn.chain.license import UNIT
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


GOVERNANCE = ["--voting-delay", "60", "--voting-period", "600", "--timelock-delay", "300", "--quorum", "10"]


@pytest.fixture
def setup(tmp_path: Path, capsys) -> Path:
    """A governed deployment (5,000 tokens in the pool, 4,100 allocated to institution 5, the licensee); round 1
    settled with institution 0 at 1,000 and 1 at 3,000. Roots are claimable at once (no root delay)."""
    path = tmp_path / "deployment.json"
    d = ["--deployment", str(path)]
    company = chain.institution_accounts(6)[5].address
    assert run("chain", "deploy", *d, "--governed", "--root-delay", "0", "--reward-per-round", "1e24",
               "--reward-pool", "5e21", "--allocate", f"{company}=4100e18", *GOVERNANCE) == 0
    out = capsys.readouterr().out
    assert "governed deployment: the deployer" in out and "it keeps: distributor COORDINATOR_ROLE" in out
    inst = [a.address for a in chain.institution_accounts(2)]
    rewards = tmp_path / "r1.json"
    rewards.write_text(json.dumps({inst[0]: str(1_000 * UNIT), inst[1]: str(3_000 * UNIT)}))
    assert run("chain", "settle", *d, "--round", "1", "--model-hash", MODEL, "--rewards", str(rewards)) == 0
    return path


def test_chain_deploy_says_whether_it_is_governed(tmp_path: Path, capsys) -> None:
    d = ["--deployment", str(tmp_path / "single.json")]
    assert run("chain", "deploy", *d) == 0
    signer = chain.dev_account(0).address
    assert f"single-operator deployment: {signer} holds the admin roles" in capsys.readouterr().out
    assert chain.Deployment.load(tmp_path / "single.json").governor is None
    before = (tmp_path / "single.json").read_bytes(), (tmp_path / "single.eth-tester.json").read_bytes()
    new = ["--deployment", str(tmp_path / "new.json")]
    institution = chain.institution_accounts(2)[1].address
    typo = institution[:-1] + (institution[-1].lower() if institution[-1].isupper() else institution[-1].upper())
    if typo == institution:  # the last character is a digit: change the case of the last letter instead
        i = max(i for i, c in enumerate(institution) if c.isalpha() and i > 1)
        typo = institution[:i] + institution[i].swapcase() + institution[i + 1:]
    cases = [
        # A second deploy onto an existing file would start its embedded chain afresh: funds, stakes, roots gone.
        (["chain", "deploy", *d], "single.json already holds a deployment; pass --deployment NEW_FILE"),
        (["chain", "deploy", *d, "--governed"], "already holds a deployment"),
        (["chain", "deploy", *new, "--guardian", signer], "--guardian applies to --governed deployments only"),
        (["chain", "deploy", *new, "--governed", "--admin", signer], "--admin does not apply to --governed"),
        (["chain", "deploy", *new, "--governed", "--allocate", "0x12"], "--allocate takes ADDRESS=AMOUNT"),
        (["chain", "deploy", *new, "--governed", "--allocate", f"{signer}=5"], "allocation to the deployer"),
        (["chain", "deploy", *new, "--governed", "--guardian", "nobody"], "guardian is not an address"),
        # One character's case changed in a checksummed address: refused, with the form that was typed, checksummed.
        (["chain", "deploy", *new, "--governed", "--allocate", f"{typo}=5"],
         f"allocation recipient {typo}: its EIP-55 checksum is wrong .* is {institution}$"),
        (["chain", "deploy", *new, "--governed", "--token-cap", "10", "--reward-pool", "11"],
         r"exceeds the token cap 10 \(ERC20ExceededCap\)"),
        (["chain", "deploy", *new, "--governed", "--quorum", "101"], "quorum must be a percentage"),
        (["chain", "status", *d, "--account", typo], "EIP-55 checksum is wrong"),
    ]
    for argv, message in cases:
        with pytest.raises(ChainError, match=message) as err:
            run(*argv)
        assert "\n" not in str(err.value), argv
    assert not (tmp_path / "new.json").exists()
    # A quorum the tokens outside the reward pool cannot reach is deployed, with a warning that says so.
    capsys.readouterr()
    assert run("chain", "deploy", *new, "--governed", "--reward-pool", "1e24", "--allocate",
               f"{institution}=10e18") == 0
    assert ("warning: the quorum, 4% of the supply (40000400000000000000000 units), is more than the "
            "10000000000000000000 units outside the reward pool") in capsys.readouterr().err
    assert ((tmp_path / "single.json").read_bytes(), (tmp_path / "single.eth-tester.json").read_bytes()) == before
    # The same address in one case carries no checksum and is taken as written.
    assert run("chain", "status", *d, "--account", institution.lower()) == 0
    assert run("chain", "status", *d, "--account", institution[2:]) == 0  # checksummed, typed without 0x
    assert run("chain", "deploy", *d, "--replace") == 0  # asked for: a fresh deployment in the same file


def test_license_fees_and_governance_from_the_cli(setup: Path, capsys) -> None:
    d = ["--deployment", str(setup)]
    company = chain.institution_accounts(6)[5].address
    capsys.readouterr()
    assert run("license", "quote", *d, "--revenue", "5000000") == 0
    assert "required stake 4,000 tokens (4000000000000000000000 units)" in capsys.readouterr().out
    assert run("license", "attest", *d, company, "--revenue", "5e6") == 0
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
    second = chain.institution_accounts(2)[1].address
    assert run("license", "withdraw", *d, "--account", second, "--json") == 0
    withdrawn = json.loads(capsys.readouterr().out)
    assert withdrawn["account"] == second and withdrawn["paid"]["1"]["amount"] == 75 * UNIT

    # Institution 1 claims its rewards, votes with them and changes the lock period and X, and the distributor's
    # reward per round: one name space.
    assert run("chain", "claim", *d, "--institution", "1", "--tree", str(setup.parent / "trees" / "round-1.json")) == 0
    assert run("gov", "delegate", *d, "--institution", "1") == 0
    assert run("gov", "advance-time", *d, "1") == 0
    capsys.readouterr()
    assert run("gov", "propose", *d, "--institution", "1", "--set", "lock-period=400d", "--set", "stake-rate=0.002",
               "--set", "reward_per_round=500", "--set", "attestation-ttl=400d",
               "--description", "Longer locks, double X, smaller rounds") == 0
    proposal = re.search(r"proposal (\d+)", capsys.readouterr().out).group(1)
    with pytest.raises(ChainError, match=f"propose: proposal {proposal} makes these changes with this description"):
        run("gov", "propose", *d, "--institution", "1", "--set", "lock-period=400d", "--set", "stake-rate=0.002",
            "--set", "reward_per_round=500", "--set", "attestation-ttl=400d",
            "--description", "Longer locks, double X, smaller rounds")
    assert run("gov", "advance-time", *d, "61") == 0
    # Institution 0 holds tokens it never delegated: its vote would weigh nothing, and is refused before sending.
    with pytest.raises(ChainError, match=f"had no voting power at proposal {proposal}'s snapshot"):
        run("gov", "vote", *d, proposal, "--institution", "0", "--support", "against")
    assert run("gov", "vote", *d, proposal, "--institution", "1", "--support", "for") == 0
    assert run("gov", "advance-time", *d, "601") == 0
    assert run("gov", "queue", *d, proposal) == 0
    assert run("gov", "advance-time", *d, "301") == 0
    assert run("gov", "execute", *d, proposal) == 0
    capsys.readouterr()
    assert run("gov", "status", *d, proposal, "--json") == 0
    status = json.loads(capsys.readouterr().out)["proposals"][0]
    assert status["state"] == "Executed" and status["changes"]["lock-period"] == 400 * 86_400
    assert run("gov", "status", *d, proposal) == 0  # as typed: X as a decimal, periods in days, amounts in tokens
    shown = capsys.readouterr().out
    assert "lock-period=400 days (34560000 s)" in shown and "stake-rate=0.002" in shown
    assert "reward-per-round=500" in shown and "stake-rate=2000000000000000" not in shown
    assert status["changes"]["reward-per-round"] == 500 * UNIT
    assert run("license", "quote", *d, "--revenue", "5000000") == 0
    out = capsys.readouterr().out
    assert "required stake 8,000 tokens" in out and "lock period 400 days" in out and "attestations live 400" in out
    assert run("chain", "status", *d, "--json") == 0
    assert json.loads(capsys.readouterr().out)["reward_per_round"] == 500 * UNIT


def test_license_sweep_and_pause_proposal_from_the_cli(setup: Path, tmp_path: Path, capsys) -> None:
    d = ["--deployment", str(setup)]
    assert run("license", "pay-fee", *d, "--institution", "5", "--amount", "100") == 0
    with pytest.raises(ChainError, match=r"EpochOpen"):
        run("license", "sweep", *d, "--round", "1")
    inst = [a.address for a in chain.institution_accounts(2)]
    rewards = tmp_path / "r2.json"
    rewards.write_text(json.dumps({inst[0]: str(1_001 * UNIT), inst[1]: str(3_000 * UNIT)}))
    assert run("chain", "settle", *d, "--round", "2", "--model-hash", MODEL, "--rewards", str(rewards)) == 0
    assert run("license", "pay-fee", *d, "--institution", "5", "--amount", "1") == 0  # closes round 1's epoch
    capsys.readouterr()
    assert run("license", "status", *d) == 0
    out = capsys.readouterr().out
    assert re.search(r"round 1: fees 100 .* closed, sweepable from \d+", out) and "round 2: fees 1 " in out
    assert run("gov", "advance-time", *d, "366d") == 0
    assert run("license", "sweep", *d, "--round", "1", "--institution", "3") == 0
    assert "swept 100 left of round 1's fees to" in capsys.readouterr().out  # nobody withdrew: all of it
    assert run("license", "status", *d, "--json") == 0
    assert json.loads(capsys.readouterr().out)["fee_rounds"][0]["swept"] is True

    assert run("gov", "delegate", *d, "--institution", "5") == 0
    assert run("gov", "advance-time", *d, "1") == 0
    capsys.readouterr()
    assert run("gov", "propose", *d, "--institution", "5", "--action", "pause-license",
               "--description", "Pause while we audit") == 0
    assert "pause-license" in capsys.readouterr().out


def test_each_deployment_keeps_its_own_license_file_and_none_is_overwritten(setup: Path, capsys) -> None:
    # Prepare: a second governed deployment in the same directory (on eth-tester, on a chain of its own), and a
    # license file naming another distributor than setup's.
    own = setup.with_suffix(".license.json")
    first = own.read_text()
    other = setup.parent / "other.json"
    assert run("chain", "deploy", "--deployment", str(other), "--governed", "--reward-pool", "0", *GOVERNANCE) == 0
    foreign = setup.parent / "foreign.license.json"
    stranger = chain.institution_accounts(1)[0].address
    foreign.write_text(json.dumps({**json.loads(first), "distributor": stranger}))

    # Execute and assert: each deployment's license commands use its own license.
    assert own.read_text() == first and other.with_suffix(".license.json").is_file()
    capsys.readouterr()
    assert run("license", "status", "--deployment", str(setup), "--json") == 0
    assert json.loads(capsys.readouterr().out)["license"] == json.loads(first)["license"]
    cases = [
        # A new license over an existing file would leave its licensees' locks in a contract nothing names.
        (["license", "deploy", "--deployment", str(setup)], f"{own} already holds a license; pass --license-file"),
        (["license", "status", "--deployment", str(setup), "--license-file", str(foreign)],
         f"license file {foreign} is for the deployment whose distributor is {stranger}, not {setup}'s"),
        (["chain", "deploy", "--deployment", str(setup.parent), "--governed"], "is a directory; name the file"),
    ]
    for argv, message in cases:
        with pytest.raises(ChainError, match=re.escape(message)):
            run(*argv)
    assert own.read_text() == first
    assert run("license", "deploy", "--deployment", str(setup), "--replace", "--no-governance") == 0
    assert json.loads(own.read_text())["license"] != json.loads(first)["license"]


def test_license_cli_bad_input_is_one_line(setup: Path) -> None:
    d = ["--deployment", str(setup)]
    company = chain.institution_accounts(6)[3].address  # attested, but holds no tokens
    assert run("license", "attest", *d, company, "--revenue", "5000000") == 0
    cases = [
        (["license", "quote", *d, "--revenue", "-5"], "revenue cannot be negative"),
        (["license", "quote", *d, "--revenue", "1e19"], r"above the largest accepted .* \(RevenueTooLarge\)"),
        (["license", "quote", *d, "--revenue", "lots"], "revenue must be a number"),
        (["license", "attest", *d, company, "--revenue", "-1"], "revenue cannot be negative"),
        (["license", "acquire", *d, "--institution", "3"], r"holds 0 tokens \(0 base units\), needs 4,000 tokens "
         r"\(4000000000000000000000 base units\)"),
        (["license", "acquire", *d, "--institution", "3", "--lock", "30d"],
         r"shorter than the lock period .*LockTooShort"),
        (["license", "acquire", *d, "--institution", "4"], r"no revenue attested .*RevenueNotAttested"),
        (["license", "acquire", *d, "--institution", "3", "--amount", "1"], r"InsufficientStake"),
        (["license", "attest", *d, company, "--revenue", "1", "--institution", "2"],
         "lacks the license's ATTESTER_ROLE"),
        (["license", "pay-fee", *d, "--institution", "3", "--amount", "1"],
         r"holds 0 tokens \(0 base units\), needs 1 token \(1000000000000000000 base units\)"),
        (["license", "withdraw", *d, "--institution", "0"], "no fee share left"),
        (["gov", "propose", *d, "--set", "lock-period=1h", "--description", "x"],
         r"lock-period 3600 is outside \[86400, 315360000\] \(ParameterOutOfRange\)"),
        (["gov", "propose", *d, "--set", "stake-rate=1.5", "--description", "x"],
         r"stake-rate .* \(ParameterOutOfRange\)"),
        (["gov", "propose", *d, "--set", "colour=blue", "--description", "x"], "unknown parameter 'colour'"),
        (["gov", "propose", *d, "--set", "slash-delay=30d", "--description", "x"],
         r"slash-delay 2592000 is outside \[0, 604800\] \(ParameterOutOfRange\)"),
        (["gov", "propose", *d, "--description", "x"], "propose needs --set NAME=VALUE or --action ACTION"),
        (["license", "sweep", *d, "--round", "1"], r"round 1's epoch still receives fees|no fee accrued to round 1"),
        (["gov", "execute", *d, "12345"], "no proposal 12345|proposal 12345"),
        (["license", "status", *d, "--license-file", str(setup.parent / "none.json")], "cannot read license file"),
    ]
    for argv, message in cases:
        with pytest.raises(ChainError, match=message) as err:
            run(*argv)
        assert "\n" not in str(err.value) and err.value.exit_code == 5, argv
