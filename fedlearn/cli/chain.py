"""`fedlearn contracts build` and `fedlearn chain ...` (claim included): handlers return an exit code and raise
ChainError (one line) for every bad input.

Without --rpc the commands run on eth-tester, whose in-memory chain is kept between commands in a state file
beside the deployment file, so that `chain deploy`, `chain settle` and `claim` can follow one another.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedlearn.chain import operations as ops
from fedlearn.chain.deployment import DEFAULT_UNSTAKE_DELAY_S, Deployment, deploy
from fedlearn.chain.merkle import RewardTree
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
            return int(mantissa) * 10 ** int(exponent)
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _state_path(args: argparse.Namespace) -> Path:
    return Path(args.state) if args.state else Path(args.deployment).with_suffix(".eth-tester.json")


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
    if not fresh and not state.exists():
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
    session = _session(args, fresh=True)
    deployment = deploy(
        session, admin=args.admin, coordinator=args.coordinator, unstake_delay=args.unstake_delay
    )
    deployment.save(args.deployment)
    _finish(args, session)
    _print(
        args,
        f"token {deployment.token}\ndistributor {deployment.distributor}\n"
        f"chain {deployment.chain_id} block {deployment.block}\nwrote {args.deployment}",
        {"deployment": str(args.deployment), **deployment.__dict__},
    )
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    session = _session(args, read_only=True)
    state = ops.status(session, _deployment(args, session), args.account or None)
    lines = [
        f"chain {state.chain_id} block {state.block}{' PAUSED' if state.paused else ''}",
        f"last round {state.last_round}  root {state.rewards_root}",
        f"funded {state.total_funded}  slashed {state.total_slashed}  settled {state.total_settled}  "
        f"claimed {state.total_claimed}  available {state.available}",
        f"staked {state.total_staked}  distributor balance {state.balance}",
    ]
    lines += [
        f"round {r.round}: total {r.round_total} root {r.rewards_root} model {r.model_hash}" for r in state.rounds
    ]
    lines += [
        f"stake {a}: active {s['active']} pending {s['pending']} unlock {s['unlock_at']}"
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
        out[account] = value
    return out


def _read_tree(path: Path) -> RewardTree:
    try:
        return RewardTree.load(json.loads(path.read_text()))
    except OSError as exc:
        raise ChainError(f"cannot read rewards tree {path}: {exc.strerror}") from None
    except ValueError:
        raise ChainError(f"rewards tree {path} is not JSON") from None


def _cmd_settle(args: argparse.Namespace) -> int:
    session = _session(args)
    deployment = _deployment(args, session)
    result = ops.settle_round(session, deployment, args.round, args.model_hash, _read_rewards(args.rewards))
    tree_path = args.tree_out or Path(args.deployment).parent / "trees" / f"round-{args.round}.json"
    tree_path.parent.mkdir(parents=True, exist_ok=True)
    tree_path.write_text(json.dumps(result.tree.dump(), indent=2) + "\n")
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
                 lambda s: f"funded {args.amount}")


def _cmd_defund(args: argparse.Namespace) -> int:
    return _send(args, lambda s: ops.defund(s, _deployment(args, s), args.to or s.address, args.amount),
                 lambda s: f"returned {args.amount} unsettled to {args.to or s.address}")


def _fund_run(run_dir: Path, amount: int | None) -> int:
    """Top up a run's distributor with what the run still lacks (or ``amount``), signing as its coordinator."""
    from fedlearn.payout.settlement import RunChain

    paymaster = RunChain.open(run_dir).paymaster
    funded = paymaster.top_up(amount)
    if funded == 0:
        print(f"nothing to fund: the distributor covers the rest of {run_dir} "
              f"({paymaster.budget_needed()} wei still to pay)")
    else:
        print(f"funded {funded} wei for {run_dir}; resume with `fedlearn run --resume {run_dir}`")
    return 0


def _cmd_stake(args: argparse.Namespace) -> int:
    return _send(args, lambda s: ops.stake(s, _deployment(args, s), args.amount),
                 lambda s: f"{s.address} staked {args.amount}")


def _cmd_unstake(args: argparse.Namespace) -> int:
    return _send(args, lambda s: ops.request_unstake(s, _deployment(args, s), args.amount),
                 lambda s: f"{s.address} asked to unstake {args.amount}")


def _cmd_withdraw(args: argparse.Namespace) -> int:
    return _send(args, lambda s: ops.withdraw(s, _deployment(args, s)), lambda s: f"{s.address} withdrew")


def _cmd_slash(args: argparse.Namespace) -> int:
    return _send(args, lambda s: ops.slash(s, _deployment(args, s), args.account, args.amount, args.evidence),
                 lambda s: f"slashed {args.amount} from {args.account}")


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

    p = sub.add_parser("deploy", help="deploy token and distributor; write the deployment file")
    _connection_options(p)
    p.add_argument("--admin", help="admin address (default: the signer)")
    p.add_argument("--coordinator", help="coordinator address (default: the signer)")
    p.add_argument("--unstake-delay", type=int, default=DEFAULT_UNSTAKE_DELAY_S, help="seconds (%(default)s)")
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
    p.set_defaults(handler=_cmd_settle)

    p = sub.add_parser("fund", help="add tokens to the reward pool (admin; mints what is missing)")
    _connection_options(p)
    p.add_argument("--amount", type=_int, help="token units (with --run: default what the run lacks)")
    p.add_argument("--no-mint", action="store_true", help="never mint; fail if the balance is short")
    p.add_argument("--run", type=Path, metavar="RUN_DIR",
                   help="top up this run's distributor, signing with the run's coordinator key")
    p.set_defaults(handler=_cmd_fund)

    p = sub.add_parser("defund", help="return unsettled tokens from the reward pool (admin): a run's unspent budget")
    _connection_options(p)
    p.add_argument("--amount", type=_int, required=True, help="token units, at most the unsettled funds")
    p.add_argument("--to", help="recipient (default: the signer)")
    p.set_defaults(handler=_cmd_defund)

    for name, handler, text in (("stake", _cmd_stake, "stake tokens"), ("unstake", _cmd_unstake, "start unstaking")):
        p = sub.add_parser(name, help=text)
        _connection_options(p)
        p.add_argument("--amount", type=_int, required=True, help="token units")
        p.set_defaults(handler=handler)

    p = sub.add_parser("withdraw", help="withdraw unstaked tokens after the delay")
    _connection_options(p)
    p.set_defaults(handler=_cmd_withdraw)

    p = sub.add_parser("slash", help="slash an institution's stake into the reward pool (coordinator)")
    _connection_options(p)
    p.add_argument("--account", required=True)
    p.add_argument("--amount", type=_int, required=True, help="token units")
    p.add_argument("--evidence", required=True, help="32-byte hex hash of the evidence")
    p.set_defaults(handler=_cmd_slash)

    p = sub.add_parser("claim", help="claim an account's cumulative rewards from a tree file")
    _connection_options(p)
    p.add_argument("--account", help="account paid (default: the signer); anyone may submit")
    p.add_argument("--tree", type=Path, help="the latest round's tree file (from `chain settle`)")
    p.add_argument("--amount", type=_int, help="cumulative amount (checked against the tree)")
    p.add_argument("--proof", help="comma-separated proof hashes, without --tree")
    p.set_defaults(handler=_cmd_claim)
