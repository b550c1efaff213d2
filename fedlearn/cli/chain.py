"""`fedlearn contracts build` and `fedlearn chain ...` (claim included): handlers return an exit code and raise
ChainError (one line) for every bad input.

Without --rpc the commands run on eth-tester, whose in-memory chain is kept between commands in a state file
beside the deployment file, so that `chain deploy`, `chain settle` and `claim` can follow one another.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedlearn.chain import operations as ops
from fedlearn.chain.addresses import address_of
from fedlearn.chain.deployment import (
    DEFAULT_REWARD_PER_ROUND,
    DEFAULT_ROOT_DELAY_S,
    DEFAULT_SLASH_DELAY_S,
    DEFAULT_TOKEN_CAP,
    DEFAULT_UNSTAKE_DELAY_S,
    Deployment,
    deploy,
    distributor_contract,
    token_count,
    token_units,
)
from fedlearn.chain.merkle import InconsistentTree, RewardTree
from fedlearn.chain.session import (
    DEFAULT_KEY_ENV,
    ETH_TESTER,
    ChainSession,
    connect,
    dev_account,
    save_state,
)
from fedlearn.chain.transactions import funded_institution_accounts
from fedlearn.errors import ChainError

DEFAULT_DEPLOYMENT = Path("runs/chain/deployment.json")


def _int(text: str) -> int:
    """Integers in decimal, hex, or with an exponent (`5e18`), exactly."""
    try:
        if "e" in text.lower() and not text.lower().startswith("0x"):
            mantissa, exponent = text.lower().split("e")
            value = int(mantissa) * 10 ** int(exponent)
        else:
            value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if abs(value) >= 2**256:  # no amount, id or round on chain is that large (uint256)
        raise argparse.ArgumentTypeError(f"{text} is beyond what the chain holds (2**256)")
    return value


def _state_path(args: argparse.Namespace) -> Path:
    if args.state:
        return Path(args.state)
    beside = Path(args.deployment).with_suffix(".eth-tester.json")
    # A run's own embedded chain lives in its chain/ directory as eth-tester.json, beside its deployment file.
    in_run = Path(args.deployment).parent / "eth-tester.json"
    return in_run if not beside.exists() and in_run.exists() else beside


def _session(args: argparse.Namespace, *, fresh: bool = False, read_only: bool = False) -> ChainSession:
    if args.rpc:
        if args.institution is not None or args.dev_account is not None:
            raise ChainError("--institution and --dev-account apply to eth-tester only; sign with a key on RPC")
        no_key = not (args.keystore or os.environ.get(args.key_env or DEFAULT_KEY_ENV))
        return connect(
            args.rpc,
            # Reading needs no key: a placeholder account that never signs.
            account=dev_account(0) if read_only and no_key else None,
            key_env=args.key_env,
            keystore=args.keystore,
            password_env=args.password_env,
            password_file=args.password_file,
            expected_chain_id=args.chain_id,
        )
    state = _state_path(args)
    recorded = ""
    if not fresh and Path(args.deployment).exists():
        # A broken file says so, not that its chain is missing; one deployed on a node names it.
        recorded = Deployment.load(args.deployment).backend
    if not fresh and not state.exists():
        if recorded.startswith(("http://", "https://")):
            raise ChainError(f"{args.deployment} was deployed on {recorded}: pass --rpc {recorded}")
        raise ChainError(f"no eth-tester state at {state}: run `fedlearn chain deploy` first (or pass --rpc)")
    session = connect(ETH_TESTER, state_file=None if fresh else state, expected_chain_id=args.chain_id)
    if args.institution is not None:
        return session.as_account(funded_institution_accounts(session, args.institution + 1)[args.institution])
    return session.as_account(dev_account(args.dev_account or 0))


def _finish(args: argparse.Namespace, session: ChainSession) -> None:
    if session.is_eth_tester:
        save_state(session, _state_path(args))


def _deployment(args: argparse.Namespace, session: ChainSession) -> Deployment:
    deployment = Deployment.load(args.deployment, chain_id=session.chain_id)
    deployment.check(session)
    return deployment


def _connection_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("chain connection")
    g.add_argument("--rpc", metavar="URL", help="JSON-RPC node (default: embedded eth-tester)")
    g.add_argument("--chain-id", type=int, help="refuse a node whose chain id differs")
    g.add_argument("--key-env", metavar="VAR", help="env variable holding the hex private key (FEDLEARN_PRIVATE_KEY)")
    g.add_argument("--keystore", type=Path, help="encrypted JSON keystore to sign with")
    g.add_argument("--password-file", type=Path, help="file holding the keystore password")
    g.add_argument("--password-env", metavar="VAR", help="env variable holding it (FEDLEARN_KEYSTORE_PASSWORD)")
    g.add_argument("--deployment", type=Path, default=DEFAULT_DEPLOYMENT, help="deployment file (%(default)s)")
    g.add_argument("--state", type=Path, help="eth-tester state file (default: beside the deployment file)")
    g.add_argument("--dev-account", type=int, help="eth-tester: sign as dev account N (0 admin, default)")
    g.add_argument("--institution", type=int, help="eth-tester: sign as simulated institution N")


def _print(args: argparse.Namespace, human: str, data: dict[str, Any]) -> None:
    print(json.dumps(data, indent=2, default=str) if getattr(args, "json", False) else human)


def _cmd_build(args: argparse.Namespace) -> int:
    from fedlearn.chain.build import build

    for path in build(solc=args.solc):
        print(f"wrote {path}")
    return 0


def _cmd_deploy(args: argparse.Namespace) -> int:
    if Path(args.deployment).is_dir():
        raise ChainError(f"--deployment {args.deployment} is a directory; name the file to write, e.g. "
                         f"{Path(args.deployment) / 'deployment.json'}")
    if Path(args.deployment).exists() and not args.replace:
        # On eth-tester the chain beside the file is started afresh too: its funds, stakes and roots would go.
        raise ChainError(f"{args.deployment} already holds a deployment; pass --deployment NEW_FILE for another, "
                         "or --replace to overwrite it (an embedded chain beside it starts afresh)")
    if args.governed:
        return _deploy_governed(args)
    for flag in ("guardian", "attester", "dust_recipient", "reward_pool", "allocate"):
        if getattr(args, flag):
            raise ChainError(f"--{flag.replace('_', '-')} applies to --governed deployments only")
    session = _session(args, fresh=True)
    deployment = deploy(
        session, admin=args.admin, coordinator=args.coordinator, unstake_delay=args.unstake_delay,
        reward_per_round=args.reward_per_round, root_delay=args.root_delay, slash_delay=args.slash_delay,
        token_cap=args.token_cap,
    )
    deployment.save(args.deployment)
    _finish(args, session)
    _print(
        args,
        f"token {deployment.token}\ndistributor {deployment.distributor}\n"
        f"chain {deployment.chain_id} block {deployment.block}\n"
        f"single-operator deployment: {deployment.admin} holds the admin roles (token admin and minter, "
        "distributor admin); use --governed for a federation\n"
        f"wrote {args.deployment}",
        {"deployment": str(args.deployment), "governed": False, **deployment.__dict__},
    )
    return 0


def _deploy_governed(args: argparse.Namespace) -> int:
    """`chain deploy --governed`: no externally owned account keeps an admin, minter or pauser role."""
    from fedlearn.chain import governance as gov
    from fedlearn.chain.license import license_file_of

    if args.admin:
        raise ChainError("--admin does not apply to --governed: the timelock is the admin")
    allocations: dict[str, int] = {}
    for item in args.allocate or []:
        account, sep, amount = item.partition("=")
        if not sep:
            raise ChainError(f"--allocate takes ADDRESS=AMOUNT (token units), got {item!r}")
        try:
            allocations[account.strip()] = allocations.get(account.strip(), 0) + _int(amount.strip())
        except argparse.ArgumentTypeError as exc:
            raise ChainError(f"--allocate {item!r}: {exc}") from None
    settings = gov.GovernanceSettings(
        voting_delay=args.voting_delay, voting_period=args.voting_period, timelock_delay=args.timelock_delay,
        quorum_percent=args.quorum, proposal_threshold=args.proposal_threshold,
    ).check()
    outside = sum(allocations.values())  # the pool, in the distributor, cannot vote; only these tokens can
    quorum = settings.quorum_percent * (outside + (args.reward_pool or 0)) // 100
    if quorum > outside:
        print(f"fedlearn: warning: the quorum, {settings.quorum_percent}% of the supply ({quorum} units), is more than "
              f"the {outside} units outside the reward pool, which alone can vote: no proposal can pass until that "
              "much of the pool is paid out and delegated (lower --quorum, or --allocate more)", file=sys.stderr)
    session = _session(args, fresh=True)
    got = gov.deploy_governed(
        session, coordinator=args.coordinator, guardian=args.guardian, attester=args.attester,
        dust_recipient=args.dust_recipient, reward_pool=args.reward_pool or 0, allocations=allocations,
        unstake_delay=args.unstake_delay, reward_per_round=args.reward_per_round, root_delay=args.root_delay,
        slash_delay=args.slash_delay, token_cap=args.token_cap, settings=settings,
    )
    d, ld = got.deployment, got.license
    license_path = license_file_of(args.deployment)  # where `fedlearn license` and `gov` look
    d.save(args.deployment)
    ld.save(license_path)
    _finish(args, session)
    kept = ", ".join(got.deployer_roles) or "none"
    _print(
        args,
        f"token {d.token}\ndistributor {d.distributor}\nlicense {ld.license}\ngovernor {d.governor}\n"
        f"timelock {d.timelock} (holds every admin and minter role)\n"
        f"chain {d.chain_id} block {d.block}\n"
        f"governed deployment: the deployer {got.deployer} renounced its admin and minter roles; it keeps: {kept} "
        "(bounded by the contracts, revocable by governance)\n"
        f"wrote {args.deployment} and {license_path}",
        {"deployment": str(args.deployment), "license_file": str(license_path), "governed": True,
         "deployer_roles": got.deployer_roles, **d.__dict__},
    )
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    def t(amount: int) -> str:  # base units, as the chain commands take them, and what a person reads
        return f"{amount} ({token_count(amount)})" if amount else "0"

    session = _session(args, read_only=True)
    state = ops.status(session, _deployment(args, session), args.account or None)
    lines = [
        f"chain {state.chain_id} block {state.block}{' PAUSED' if state.paused else ''}",
        f"last round {state.last_round}  claimable round {state.claimable_round}  root {state.rewards_root}",
        *([f"pending round {state.pending_round} claimable from {state.pending_ready_at} (unix time); a guardian "
           "can revoke it, anyone can challenge it (`fedlearn chain challenge`)"] if state.pending_round else []),
        f"reward per round {t(state.reward_per_round)}  allowance {t(state.round_allowance)}  root delay "
        f"{state.root_delay} s  slash delay {state.slash_delay} s",
        f"funded {t(state.total_funded)}  slashed {t(state.total_slashed)}  settled {t(state.total_settled)}  "
        f"claimed {t(state.total_claimed)}  available {t(state.available)}",
        f"staked {t(state.total_staked)}  distributor balance {t(state.balance)}",
    ]
    lines += [
        f"round {r.round}: total {t(r.round_total)} root {r.rewards_root} model {r.model_hash}" for r in state.rounds
    ]
    lines += [
        f"stake {a}: active {t(s['active'])} pending {t(s['pending'])} held {t(s['held'])} unlock {s['unlock_at']}"
        for a, s in state.stakes.items()
    ]
    _print(args, "\n".join(lines), state.as_dict())
    return 0


def _read_rewards(path: Path) -> dict[str, int]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ChainError(f"cannot read rewards file {path}: {exc.strerror}") from None
    except ValueError:
        raise ChainError(f"rewards file {path} is not JSON") from None
    if not isinstance(data, dict):
        raise ChainError(f"rewards file {path} must map account addresses to cumulative amounts")
    out: dict[str, int] = {}
    for account, amount in data.items():
        value: int | None = None
        if isinstance(amount, (int, str)) and not isinstance(amount, bool):
            try:
                value = int(amount)
            except ValueError:
                pass
        if value is None:
            raise ChainError(f"rewards file {path}: amount of {account} is not an integer: {amount!r}")
        address = address_of(account, f"rewards file {path}: account")
        if address in out:
            raise ChainError(f"rewards file {path}: {address} is listed twice")
        out[address] = value
    return out


def _read_tree(path: Path) -> RewardTree:
    try:
        return RewardTree.load(json.loads(path.read_text()))
    except OSError as exc:
        raise ChainError(f"cannot read rewards tree {path}: {exc.strerror}") from None
    except ValueError:
        raise ChainError(f"rewards tree {path} is not JSON") from None


def _live_tree(session: ChainSession, deployment: Deployment, directory: Path) -> RewardTree | None:
    """The tree of the chain's latest root among the tree files in `directory`, to check that no leaf is lowered;
    None before the first settlement. A root with no tree file there is an error: nothing could be checked."""
    root = ops.live_root(session, deployment)
    if root is None:
        return None
    for path in sorted(directory.glob("*.json")):
        try:
            tree = RewardTree.load(json.loads(path.read_text()))
        except (ChainError, ValueError, OSError):
            continue
        if tree.root == root:
            return tree
    raise ChainError(f"the chain's live root 0x{root.hex()} has no tree file in {directory}; "
                     "pass --previous-tree FILE so that no account's cumulative amount can be lowered unseen")


def _holds_root(session: ChainSession, deployment: Deployment, round_: int, root: bytes) -> bool:
    """Whether the chain holds ``root`` as round ``round_``'s; True when it cannot be read (keep the tree)."""
    try:
        return bytes(distributor_contract(session, deployment).functions.roundOf(round_).call()) == root
    except Exception:  # noqa: BLE001 - web3's, requests' and the chain layer's errors alike
        return True


def _cmd_settle(args: argparse.Namespace) -> int:
    ops.check_round(args.round)  # before its tree file is written
    session = _session(args)
    deployment = _deployment(args, session)
    trees = Path(args.deployment).parent / "trees"
    previous = _read_tree(args.previous_tree) if args.previous_tree else _live_tree(session, deployment, trees)
    rewards = _read_rewards(args.rewards)
    tree = RewardTree.of(rewards)
    # The tree is written before the root is sent: a root on chain without its tree leaves nobody a proof to claim
    # with. Another tree in the file (another deployment's round N, in a shared folder) is never overwritten.
    tree_path = args.tree_out or trees / f"round-{args.round}.json"
    dump = json.dumps(tree.dump(), indent=2) + "\n"
    created = not tree_path.exists()
    try:
        if not created and tree_path.read_text() != dump:
            raise ChainError(f"{tree_path} holds another tree (another deployment's?); pass --tree-out FILE for "
                             "this one; nothing was sent")
        tree_path.parent.mkdir(parents=True, exist_ok=True)
        tree_path.write_text(dump)
    except OSError as exc:
        raise ChainError(f"cannot write the tree to {tree_path}: {exc.strerror}; nothing was sent") from None
    try:
        result = ops.settle_round(session, deployment, args.round, args.model_hash, rewards, previous)
    except BaseException:
        # Refused (or interrupted) before the chain took it: no tree for a root that is not there. A root the
        # chain did take (the receipt was lost) keeps its tree: institutions claim with it.
        if created and not _holds_root(session, deployment, args.round, tree.root):
            tree_path.unlink(missing_ok=True)
        raise
    _finish(args, session)
    sent = f"tx {result.tx.tx_hash} gas {result.tx.gas_used}" if result.tx else "already on chain, nothing sent"
    print(f"round {result.round} root 0x{result.root.hex()} total {result.round_total}: {sent}\nwrote {tree_path}")
    return 0


def _tx_line(what: str, tx: ops.TxResult) -> str:
    return f"{what}: tx {tx.tx_hash} gas {tx.gas_used} block {tx.block}"


def _send(args: argparse.Namespace, action: Callable[[ChainSession], ops.TxResult],
          describe: Callable[[ChainSession], str]) -> int:
    """Sign with the command's account, send one transaction, keep an embedded chain, print one line."""
    session = _session(args)
    tx = action(session)
    _finish(args, session)
    print(_tx_line(describe(session), tx))
    return 0


def _cmd_fund(args: argparse.Namespace) -> int:
    if args.run is not None:
        return _fund_run(args.run, args.amount)
    if args.amount is None:
        raise ChainError("chain fund needs --amount (or --run RUN_DIR to top up what a run lacks)")
    return _send(args, lambda s: ops.fund(s, _deployment(args, s), args.amount, mint_missing=not args.no_mint),
                 lambda s: f"funded {token_units(args.amount)}")


def _cmd_defund(args: argparse.Namespace) -> int:
    return _send(args, lambda s: ops.defund(s, _deployment(args, s), args.to or s.address, args.amount),
                 lambda s: f"returned {token_units(args.amount)} unsettled to {args.to or s.address}")


def _fund_run(run_dir: Path, amount: int | None) -> int:
    """Top up a run's distributor with what the run still lacks (or ``amount``), signing as its coordinator."""
    from fedlearn.payout.settlement import RunChain

    paymaster = RunChain.open(run_dir).paymaster
    funded = paymaster.top_up(amount)
    if funded == 0:
        print(f"nothing to fund: the distributor covers the rest of {run_dir} "
              f"({token_units(paymaster.budget_needed())} still to pay)")
    else:
        print(f"funded {token_units(funded)} for {run_dir}; resume with `fedlearn run --resume {run_dir}`")
    return 0


def _cmd_stake(args: argparse.Namespace) -> int:
    return _send(args, lambda s: ops.stake(s, _deployment(args, s), args.amount),
                 lambda s: f"{s.address} staked {token_units(args.amount)}")


def _cmd_unstake(args: argparse.Namespace) -> int:
    return _send(args, lambda s: ops.request_unstake(s, _deployment(args, s), args.amount),
                 lambda s: f"{s.address} asked to unstake {token_units(args.amount)}")


def _cmd_withdraw(args: argparse.Namespace) -> int:
    return _send(args, lambda s: ops.withdraw(s, _deployment(args, s)), lambda s: f"{s.address} withdrew")


def _cmd_slash(args: argparse.Namespace) -> int:
    for flag, slash_id in (("--execute", args.execute), ("--veto", args.veto)):
        if slash_id is not None and slash_id < 1:
            raise ChainError(f"{flag} {slash_id}: slash ids start at 1")
        given = [f"--{name}" for name in ("account", "amount", "evidence") if getattr(args, name) is not None]
        if slash_id is not None and given:  # the proposal named by the id fixes them: a second source would mislead
            raise ChainError(f"{flag} ID acts on the proposal as it was made; drop {', '.join(given)} (for "
                             "proposing one)")
    if args.execute is not None:
        return _send(args, lambda s: ops.execute_slash(s, _deployment(args, s), args.execute),
                     lambda s: f"executed slash {args.execute}")
    if args.veto is not None:
        return _send(args, lambda s: ops.veto_slash(s, _deployment(args, s), args.veto),
                     lambda s: f"vetoed slash {args.veto}")
    if args.account is None or args.amount is None or args.evidence is None:
        raise ChainError("slash needs --account, --amount and --evidence to propose, or --execute ID / --veto ID")
    session = _session(args)
    earlier = ops.slashes_proposed(session, _deployment(args, session), args.account, args.evidence)
    if earlier:  # a retried command must not slash twice for one offence
        raise ChainError(f"slash {earlier[0][0]} was already proposed against {args.account} with this evidence; "
                         "nothing sent")
    slash_id, tx = ops.propose_slash(session, _deployment(args, session), args.account, args.amount, args.evidence)
    _finish(args, session)
    print(_tx_line(f"proposed slash {slash_id}: {args.amount} of {args.account}'s stake held", tx))
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from fedlearn.chain.audit import audit_tree

    session = _session(args, read_only=True)
    deployment = _deployment(args, session)
    read = None
    try:
        for read in (args.tree, args.previous_tree):
            if read is not None:
                _read_tree(read)  # every tree file first: an altered one is a finding
    except InconsistentTree as exc:  # a verification's finding, like any other mismatch, not a usage error
        _print(args, f"MISMATCH {read}: {exc}", {"problems": [f"{read}: {exc}"]})
        return 10
    tree = _read_tree(args.tree)
    previous = _read_tree(args.previous_tree) if args.previous_tree else None
    audit = audit_tree(session, deployment, tree, account=args.account, previous=previous,
                       files=(str(args.tree), str(args.previous_tree)))
    lines = [f"round {audit.round}: root {audit.state} (claimable from {audit.ready_at} unless superseded), "
             f"leaves add up to {audit.leaves_total}"]
    if audit.account:
        lines.append(f"{audit.account['address']}: cumulative {audit.account['cumulative']}, claimed "
                     f"{audit.account['claimed']}")
    lines += [f"MISMATCH {p}" for p in audit.problems]
    _print(args, "\n".join(lines), audit.__dict__)
    return 10 if audit.problems else 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    return _send(args, lambda s: ops.revoke_pending_root(s, _deployment(args, s)),
                 lambda s: "revoked the pending root")


def _cmd_challenge(args: argparse.Namespace) -> int:
    return _send(args, lambda s: ops.challenge_root(s, _deployment(args, s), args.account,
                                                    _read_tree(args.accepted_tree), _read_tree(args.pending_tree)),
                 lambda s: f"revoked the pending root: it lowers {args.account}'s cumulative amount")


def _cmd_claim(args: argparse.Namespace) -> int:
    session = _session(args)
    deployment = _deployment(args, session)
    account = args.account or session.address
    if args.tree is not None:
        result = ops.claim_from_tree(session, deployment, _read_tree(args.tree), account, args.amount)
    elif args.amount is not None and args.proof is not None:
        proof = [ops.as_bytes32(p, "proof element") for p in args.proof.split(",") if p]
        result = ops.claim(session, deployment, account, args.amount, proof)
    else:
        raise ChainError("claim needs --tree FILE, or --amount with --proof")
    _finish(args, session)
    print(_tx_line(f"paid {result.amount} to {result.account} (cumulative {result.cumulative_amount})", result.tx))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `contracts` and `chain` to the `fedlearn` command line."""
    contracts = subparsers.add_parser("contracts", help="Solidity contracts")
    csub = contracts.add_subparsers(dest="contracts_command", required=True)
    b = csub.add_parser("build", help="compile with the pinned solc and write contracts/artifacts")
    b.add_argument("--solc", help="a native solc of the pinned version (default: solc-js from npm)")
    b.set_defaults(handler=_cmd_build)

    chain = subparsers.add_parser("chain", help="deploy, settle, fund, stake and slash on chain")
    sub = chain.add_subparsers(dest="chain_command", required=True)

    p = sub.add_parser("deploy", help="deploy token and distributor (--governed: with governor, timelock and "
                       "license, no key keeping an admin role); write the deployment file")
    _connection_options(p)
    p.add_argument("--governed", action="store_true",
                   help="a federation: the timelock (token-holder votes) holds every admin and minter role")
    p.add_argument("--replace", action="store_true",
                   help="overwrite an existing deployment file (and start an embedded chain beside it afresh)")
    p.add_argument("--admin", help="single-operator only: admin address (default: the signer)")
    p.add_argument("--coordinator", help="coordinator address (default: the signer)")
    p.add_argument("--unstake-delay", type=int, default=DEFAULT_UNSTAKE_DELAY_S, help="seconds (%(default)s)")
    p.add_argument("--reward-per-round", type=_int, default=DEFAULT_REWARD_PER_ROUND,
                   help="most a settlement may add, token units (%(default)s)")
    p.add_argument("--root-delay", type=int, default=DEFAULT_ROOT_DELAY_S,
                   help="seconds a root is pending before claims use it (%(default)s)")
    p.add_argument("--slash-delay", type=int, default=DEFAULT_SLASH_DELAY_S,
                   help="seconds a proposed slash can be vetoed (%(default)s)")
    p.add_argument("--token-cap", type=_int, default=DEFAULT_TOKEN_CAP, help="supply cap, token units (%(default)s)")
    g = p.add_argument_group("governed deployment (--governed)")
    g.add_argument("--guardian", help="address given GUARDIAN_ROLE: revokes pending roots, vetoes slashes")
    g.add_argument("--attester", help="address attesting licensees' revenue (default: the signer)")
    g.add_argument("--dust-recipient", help="receives swept license fees (default: the timelock)")
    g.add_argument("--reward-pool", type=_int, help="token units minted into the distributor's reward pool")
    g.add_argument("--allocate", action="append", metavar="ADDRESS=AMOUNT",
                   help="token units minted to ADDRESS (stake allowances, a treasury; never the deployer)")
    g.add_argument("--voting-delay", type=int, default=86_400, help="seconds (%(default)s)")
    g.add_argument("--voting-period", type=int, default=7 * 86_400, help="seconds (%(default)s)")
    g.add_argument("--timelock-delay", type=int, default=2 * 86_400, help="seconds (%(default)s)")
    g.add_argument("--quorum", type=int, default=4, help="percent of the supply (%(default)s)")
    g.add_argument("--proposal-threshold", type=_int, default=0, help="votes a proposer needs, units (%(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_cmd_deploy)

    p = sub.add_parser("status", help="rounds, roots, funds and stakes")
    _connection_options(p)
    p.add_argument("--account", action="append", help="show this account's stake (repeatable)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_cmd_status)

    p = sub.add_parser("settle", help="settle a round from a JSON file of cumulative rewards per account")
    _connection_options(p)
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--model-hash", required=True, help="32-byte hex hash of the round's global model")
    p.add_argument("--rewards", type=Path, required=True, help='JSON {"0xaddress": cumulative amount, ...}')
    p.add_argument("--tree-out", type=Path, help="where to write the tree for claims (default: trees/round-N.json)")
    p.add_argument("--previous-tree", type=Path,
                   help="the chain's latest tree, to refuse lowering any leaf (default: found in trees/)")
    p.set_defaults(handler=_cmd_settle)

    p = sub.add_parser("fund", help="add tokens to the reward pool (admin; mints what is missing)")
    _connection_options(p)
    p.add_argument("--amount", type=_int, help="base units, 10**18 to a token: 5e18 is five tokens "
                   "(with --run: default what the run lacks)")
    p.add_argument("--no-mint", action="store_true", help="never mint; fail if the balance is short")
    p.add_argument("--run", type=Path, metavar="RUN_DIR",
                   help="top up this run's distributor, signing with the run's coordinator key")
    p.set_defaults(handler=_cmd_fund)

    p = sub.add_parser("defund", help="return unsettled tokens from the reward pool (admin): a run's unspent budget")
    _connection_options(p)
    p.add_argument("--amount", type=_int, required=True, help="base units (10**18 to a token), at most the unsettled "
                   "funds")
    p.add_argument("--to", help="recipient (default: the signer)")
    p.set_defaults(handler=_cmd_defund)

    for name, handler, text in (("stake", _cmd_stake, "stake tokens"), ("unstake", _cmd_unstake, "start unstaking")):
        p = sub.add_parser(name, help=text)
        _connection_options(p)
        p.add_argument("--amount", type=_int, required=True, help="base units (10**18 to a token)")
        p.set_defaults(handler=handler)

    p = sub.add_parser("withdraw", help="withdraw unstaked tokens after the delay")
    _connection_options(p)
    p.set_defaults(handler=_cmd_withdraw)

    p = sub.add_parser("slash", help="propose a slash (coordinator), execute one after its window, or veto one")
    _connection_options(p)
    p.add_argument("--account", help="institution to slash (with --amount and --evidence: propose)")
    p.add_argument("--amount", type=_int, help="base units (10**18 to a token)")
    p.add_argument("--evidence", help="32-byte hex hash of the evidence")
    action = p.add_mutually_exclusive_group()
    action.add_argument("--execute", type=_int, metavar="ID", help="take a proposed slash after its window (anyone)")
    action.add_argument("--veto", type=_int, metavar="ID", help="veto a proposed slash (guardian or admin)")
    p.set_defaults(handler=_cmd_slash)

    p = sub.add_parser("verify", help="check a published payout tree against the chain (no key, no run directory)")
    _connection_options(p)
    p.add_argument("--tree", type=Path, required=True, help="the round's published tree file")
    p.add_argument("--account", help="your address: what the tree gives it, what it claimed")
    p.add_argument("--previous-tree", type=Path, help="the tree you checked before: no amount may go down")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_cmd_verify)

    p = sub.add_parser("revoke", help="revoke the pending root (guardian or admin)")
    _connection_options(p)
    p.set_defaults(handler=_cmd_revoke)

    p = sub.add_parser("challenge", help="revoke the pending root with proof that it lowers an account (anyone)")
    _connection_options(p)
    p.add_argument("--account", required=True, help="the account whose cumulative amount decreased")
    p.add_argument("--accepted-tree", type=Path, required=True, help="tree file of the claimable root")
    p.add_argument("--pending-tree", type=Path, required=True, help="tree file of the pending root")
    p.set_defaults(handler=_cmd_challenge)

    p = sub.add_parser("claim", help="claim an account's cumulative rewards from a tree file")
    _connection_options(p)
    p.add_argument("--account", help="account paid (default: the signer); anyone may submit")
    p.add_argument("--tree", type=Path, help="the latest round's tree file (from `chain settle`)")
    p.add_argument("--amount", type=_int, help="cumulative amount (checked against the tree)")
    p.add_argument("--proof", help="comma-separated proof hashes, without --tree")
    p.set_defaults(handler=_cmd_claim)
