"""`fedlearn license ...` and `fedlearn gov ...`: license a model, share its fees, govern its parameters.

Amounts on this command line are in whole units (revenue in currency units, stakes and fees in tokens; decimals
allowed) and become 18-decimal integers on chain; `--base-units` takes them as the integers themselves. The stake
rate X is a decimal (0.001), durations are seconds or take a unit (`365d`, `12h`, `30m`). Connection options,
the eth-tester state file and the deployment file are those of `fedlearn chain`; the license's addresses live
in a license file beside the deployment file. Every bad input is one ChainError line (exit 5).
"""

from __future__ import annotations

import argparse
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

from fedlearn.chain import governance as gov
from fedlearn.chain import license as lic
from fedlearn.chain.deployment import Deployment, distributor_contract
from fedlearn.chain.deployment import whole_tokens as tokens
from fedlearn.chain.governance import Action, GovParameter
from fedlearn.chain.license import UNIT, LicenseDeployment, LicenseParameters
from fedlearn.chain.merkle import RewardTree
from fedlearn.chain.session import ChainSession, advance_time
from fedlearn.chain.transactions import call
from fedlearn.cli.chain import _connection_options, _deployment, _finish, _print, _send, _session, _tx_line
from fedlearn.errors import ChainError

_DURATION = re.compile(r"(\d+)\s*([smhd]?)")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}


def units(text: str, what: str, base_units: bool = False, scale: int = UNIT) -> int:
    """`text` (a decimal, `5e6` allowed) times `scale`, exactly; negative or fractional units are refused."""
    try:
        value = Decimal(str(text).replace("_", "").replace(",", ""))
    except InvalidOperation:
        raise ChainError(f"{what} must be a number, got {text!r}") from None
    if not value.is_finite():
        raise ChainError(f"{what} must be a finite number, got {text!r}")
    if value < 0:
        raise ChainError(f"{what} cannot be negative, got {text}")
    scaled = value if base_units else value * scale
    if scaled != scaled.to_integral_value():
        raise ChainError(f"{what} {text} is finer than the smallest unit")
    return int(scaled)


def duration(text: str, what: str) -> int:
    """Seconds from `90`, `90s`, `30m`, `12h` or `365d`."""
    match = _DURATION.fullmatch(str(text).strip().lower())
    if not match:
        raise ChainError(f"{what} must be seconds or a number with s, m, h or d, got {text!r}")
    return int(match.group(1)) * _SECONDS[match.group(2)]


def _parameter_value(p: GovParameter, text: str, base_units: bool) -> int:
    """X as a decimal (always), periods and delays as durations, the threshold and reward in whole units."""
    if p.is_duration:
        return duration(text, p.label)
    return units(text, p.label, base_units and p is not GovParameter.STAKE_RATE)


def _change(label: str, value: int) -> str:
    """A proposal's change as it was typed: X as a decimal, periods in days, amounts in tokens."""
    try:
        p = GovParameter.parse(label)
    except ChainError:  # a parameter this version does not know: as the chain holds it
        return f"{label}={value}"
    if p is GovParameter.STAKE_RATE:
        return f"{label}={Decimal(value) / UNIT:f}"
    return f"{label}={_days(value) if p.is_duration else tokens(value)}"


def _days(seconds: int) -> str:
    return f"{seconds // 86_400} days ({seconds} s)"


def _show_parameters(params: LicenseParameters) -> str:
    return (
        f"X {Decimal(params.stake_rate) / UNIT:f} (stake per unit of revenue above the threshold), "
        f"threshold {tokens(params.revenue_threshold)}, lock period {_days(params.lock_period)}, attestations "
        f"live {_days(params.attestation_ttl)}, fee claim period {_days(params.fee_claim_period)}"
    )


def _license_path(args: argparse.Namespace) -> Path:
    if args.license_file:
        return Path(args.license_file)
    own = lic.license_file_of(args.deployment)
    shared = Path(args.deployment).parent / "license.json"  # where deployments made before named it
    return own if own.exists() or not shared.exists() else shared


def _license(args: argparse.Namespace, session: ChainSession) -> LicenseDeployment:
    path = _license_path(args)
    ld = LicenseDeployment.load(path, chain_id=session.chain_id)
    ours = Deployment.load(args.deployment, chain_id=session.chain_id).distributor  # ld.check reads its code
    if ld.distributor.lower() != ours.lower():  # another deployment's license: its fees go to other institutions
        raise ChainError(f"license file {path} is for the deployment whose distributor is {ld.distributor}, not "
                         f"{args.deployment}'s {ours}; pass --license-file with this deployment's license")
    ld.check(session)
    return ld


def _trees_dir(args: argparse.Namespace) -> Path:
    return Path(args.trees) if args.trees else Path(args.deployment).parent / "trees"


def _tree(args: argparse.Namespace, session: ChainSession, ld: LicenseDeployment, round_: int) -> RewardTree:
    """Round ``round_``'s tree, the one whose root the chain holds for it: `fedlearn chain settle` names its files
    round-N.json, a run names them by root (0x<root>.json); a file holding another root is passed over."""
    import json

    root = bytes(call(distributor_contract(session, ld.base()).functions.roundOf(round_), "reading round"))
    directory = _trees_dir(args)
    for path in (directory / f"round-{round_}.json", directory / f"0x{root.hex()}.json"):
        try:
            tree = RewardTree.load(json.loads(path.read_text()))
        except OSError:
            continue
        except ValueError:
            raise ChainError(f"rewards tree {path} is not JSON") from None
        if tree.root == root:
            return tree
    raise ChainError(f"no rewards tree for round {round_} (root 0x{root.hex()}) in {directory}: `fedlearn chain "
                     "settle` writes round-N.json there, a run 0x<root>.json (pass --trees DIR)")


# --- license -------------------------------------------------------------------------------------------------


def _cmd_deploy(args: argparse.Namespace) -> int:
    b = args.base_units
    params = LicenseParameters(
        stake_rate=units(args.stake_rate, "stake rate"),
        revenue_threshold=units(args.threshold, "revenue threshold", b),
        lock_period=duration(args.lock_period, "lock period"),
        attestation_ttl=duration(args.attestation_ttl, "attestation lifetime"),
        fee_claim_period=duration(args.fee_claim_period, "fee claim period"),
    ).check()
    settings = gov.GovernanceSettings(
        voting_delay=duration(args.voting_delay, "voting delay"),
        voting_period=duration(args.voting_period, "voting period"),
        timelock_delay=duration(args.timelock_delay, "timelock delay"),
        quorum_percent=args.quorum,
        proposal_threshold=units(args.proposal_threshold, "proposal threshold", b),
    ).check()
    path = _license_path(args)
    if path.exists() and not args.replace:  # a licensee's lock and the fees paid stay with the license it names
        raise ChainError(f"{path} already holds a license; pass --license-file NEW_FILE for another, or --replace to "
                         "overwrite it (licensees keep what they locked in the license it names)")
    if path.is_dir():
        raise ChainError(f"--license-file {path} is a directory")
    session = _session(args)
    deployment = _deployment(args, session)
    if args.no_governance:
        ld = lic.deploy_license(session, deployment, attester=args.attester, dust_recipient=args.dust_recipient,
                                params=params)
    else:
        ld = gov.deploy_governed_license(session, deployment, attester=args.attester,
                                         dust_recipient=args.dust_recipient, params=params, settings=settings)
    ld.save(path)
    _finish(args, session)
    lines = [f"license {ld.license}"]
    if ld.governed:
        lines += [f"governor {ld.governor}", f"timelock {ld.timelock} (admin of the parameters)"]
    else:
        lines.append(f"admin {ld.admin} (no governance)")
    lines += [f"attester {ld.attester}", f"dust recipient {lic.dust_recipient(session, ld)}",
              _show_parameters(params), f"wrote {path}"]
    _print(args, "\n".join(lines), ld.__dict__)
    return 0


def _cmd_quote(args: argparse.Namespace) -> int:
    revenue = lic.check_revenue(units(args.revenue, "revenue", args.base_units))
    session = _session(args, read_only=True)
    q = lic.quote(session, _license(args, session), revenue)
    human = (
        f"revenue {tokens(revenue)}: required stake {tokens(q.required)} tokens ({q.required} units), locked for "
        f"at least {q.params.lock_period // 86_400} days\n{_show_parameters(q.params)}"
    )
    _print(args, human, {"revenue": revenue, "required_stake": q.required, **q.params.__dict__})
    return 0


def _cmd_attest(args: argparse.Namespace) -> int:
    revenue = lic.check_revenue(units(args.revenue, "revenue", args.base_units))
    session = _session(args)
    tx = lic.attest_revenue(session, _license(args, session), args.licensee, revenue)
    _finish(args, session)
    print(_tx_line(f"attested revenue {tokens(revenue)} for {args.licensee}", tx))
    return 0


def _cmd_acquire(args: argparse.Namespace) -> int:
    amount = None if args.amount is None else units(args.amount, "amount", args.base_units)
    lock = None if args.lock is None else duration(args.lock, "lock")
    session = _session(args)
    got = lic.acquire(session, _license(args, session), amount=amount, lock_duration=lock)
    _finish(args, session)
    s = got.status
    print(_tx_line(
        f"{s.licensee} locked {tokens(got.amount)} more, {tokens(s.locked)} in all until {s.unlock_at}: "
        f"{'licensed' if s.licensed else 'NOT licensed'}", got.tx))
    return 0


def _cmd_release(args: argparse.Namespace) -> int:
    session = _session(args)
    tx = lic.release(session, _license(args, session))
    _finish(args, session)
    print(_tx_line(f"{session.address} took back its stake; its license lapsed", tx))
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    session = _session(args, read_only=True)
    ld = _license(args, session)
    if args.licensee:
        s = lic.license_status(session, ld, args.licensee)
        if s.attested_at == 0:
            verdict = "NOT licensed: no revenue attested"
        elif s.expires_at <= s.now:
            verdict = f"NOT licensed: the attestation expired at {s.expires_at}; the attester must record it again"
        elif s.licensed:
            verdict = "licensed" + (
                " (revenue at or below the threshold)" if s.required == 0 else f" until {s.unlock_at}"
            )
        elif s.locked >= s.required and s.unlock_at <= s.now:
            verdict = f"NOT licensed: the lock ended at {s.unlock_at}"
        else:
            verdict = f"NOT licensed: {tokens(s.locked)} locked, {tokens(s.required)} required"
        human = (f"{s.licensee}: {verdict}\nrevenue {tokens(s.revenue)}  required {tokens(s.required)}  "
                 f"locked {tokens(s.locked)}  unlock {s.unlock_at}  attestation expires {s.expires_at}  (now {s.now})")
        _print(args, human, s.as_dict())
        return 0
    params = lic.parameters(session, ld)
    epochs = lic.epochs(session, ld)
    paused = lic.paused(session, ld)
    recipient = lic.dust_recipient(session, ld)
    lines = [f"license {ld.license}" + (f" governed by {ld.governor}" if ld.governed else f" admin {ld.admin}")
             + (" PAUSED" if paused else ""), _show_parameters(params), f"dust recipient {recipient}"]
    for e in epochs:
        state = ("swept" if e.swept else f"closed, sweepable from {e.sweepable_at}" if e.closed_at else "open")
        lines.append(f"round {e.round}: fees {tokens(e.fees)}  withdrawn {tokens(e.paid_out)}  total weight "
                     f"{e.total_weight}  {state}")
    data = {"license": ld.license, "paused": paused, "dust_recipient": recipient, "parameters": params.__dict__,
            "fee_rounds": [e.__dict__ for e in epochs]}
    _print(args, "\n".join(lines), data)
    return 0


def _cmd_pay_fee(args: argparse.Namespace) -> int:
    amount = units(args.amount, "fee", args.base_units)
    if amount == 0:
        raise ChainError("fee must be positive")
    session = _session(args)
    paid = lic.pay_fee(session, _license(args, session), amount)
    _finish(args, session)
    print(_tx_line(f"paid a fee of {tokens(amount)}, shared by the contributors of round {paid.round}", paid.tx))
    return 0


def _shares(
    args: argparse.Namespace, session: ChainSession, ld: LicenseDeployment, account: str
) -> list[tuple[int, int]]:
    rounds = [args.round] if args.round is not None else [e.round for e in lic.epochs(session, ld)]
    out = []
    for r in rounds:
        tree = _tree(args, session, ld, r)
        if tree.amount_of(account) is not None:
            out.append((r, lic.fee_share(session, ld, r, tree, account)))
    return out


def _cmd_shares(args: argparse.Namespace) -> int:
    session = _session(args, read_only=True)
    ld = _license(args, session)
    account = args.account or session.address
    shares = _shares(args, session, ld, account)
    lines = [f"round {r}: {tokens(v)} withdrawable ({v} units)" for r, v in shares] or ["no fee share"]
    _print(args, f"{account}\n" + "\n".join(lines), {"account": account, "shares": dict(shares)})
    return 0


def _cmd_withdraw(args: argparse.Namespace) -> int:
    session = _session(args)
    ld = _license(args, session)
    account = args.account or session.address
    owed = [(r, v) for r, v in _shares(args, session, ld, account) if v > 0]
    if not owed:
        raise ChainError(f"withdraw: account {account} has no fee share left to withdraw (NoFeeShare)")
    lines, paid = [], {}
    for r, _ in owed:
        got = lic.withdraw_fee_share(session, ld, r, _tree(args, session, ld, r), account)
        _finish(args, session)
        lines.append(_tx_line(f"paid {tokens(got.amount)} of round {r}'s fees to {account}", got.tx))
        paid[r] = {"amount": got.amount, "tx": got.tx.tx_hash}
    _print(args, "\n".join(lines), {"account": account, "paid": paid})
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    session = _session(args)
    swept = lic.sweep_dust(session, _license(args, session), args.round)
    _finish(args, session)
    print(_tx_line(f"swept {tokens(swept.amount)} left of round {swept.round}'s fees to {swept.recipient}", swept.tx))
    return 0


# --- gov -----------------------------------------------------------------------------------------------------


def _proposal_id(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a proposal id: {text!r}") from None


def _cmd_delegate(args: argparse.Namespace) -> int:
    session = _session(args)
    ld = _license(args, session)
    tx = gov.delegate(session, ld, args.to)
    _finish(args, session)
    print(_tx_line(f"{session.address} delegated its votes to {args.to or 'itself'}", tx))
    return 0


def _cmd_propose(args: argparse.Namespace) -> int:
    changes: dict[GovParameter, int] = {}
    for item in args.set or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise ChainError(f"--set takes NAME=VALUE, got {item!r}")
        p = GovParameter.parse(name)
        changes[p] = _parameter_value(p, value, args.base_units)
    actions = [Action.parse(a) for a in args.action or []]
    if not changes and not actions:
        raise ChainError("propose needs --set NAME=VALUE or --action ACTION")
    session = _session(args)
    proposal = gov.propose(session, _license(args, session), changes, args.description, actions)
    _finish(args, session)
    changes_text = ", ".join([_change(k, v) for k, v in proposal.changes.items()] + proposal.actions)
    print(
        f"proposal {proposal.proposal_id}: {changes_text}\n"
        "vote opens after the voting delay: `fedlearn gov vote ID --support for`"
    )
    return 0


def _cmd_vote(args: argparse.Namespace) -> int:
    return _send(args, lambda s: gov.vote(s, _license(args, s), args.proposal, args.support, args.reason or ""),
                 lambda s: f"{s.address} voted {args.support} on {args.proposal}")


def _cmd_queue(args: argparse.Namespace) -> int:
    return _send(args, lambda s: gov.queue(s, _license(args, s), args.proposal),
                 lambda s: f"queued {args.proposal} in the timelock")


def _cmd_execute(args: argparse.Namespace) -> int:
    return _send(args, lambda s: gov.execute(s, _license(args, s), args.proposal),
                 lambda s: f"executed {args.proposal}")


def _cmd_gov_status(args: argparse.Namespace) -> int:
    session = _session(args, read_only=True)
    ld = _license(args, session)
    ids = [args.proposal] if args.proposal is not None else gov.proposal_ids(session, ld)
    statuses = [gov.proposal_status(session, ld, i) for i in ids]
    lines = [
        f"{s.proposal_id}: {s.state}  for {tokens(s.votes_for)} against {tokens(s.votes_against)} "
        f"abstain {tokens(s.votes_abstain)} (quorum {tokens(s.quorum)})  voting {s.snapshot}..{s.deadline}"
        + (f"  eta {s.eta}" if s.eta else "")
        + f"\n  {s.description}: " + ", ".join([_change(k, v) for k, v in s.changes.items()] + s.actions)
        for s in statuses
    ] or ["no proposals"]
    _print(args, "\n".join(lines), {"proposals": [s.as_dict() for s in statuses]})
    return 0


def _cmd_advance(args: argparse.Namespace) -> int:
    seconds = duration(args.seconds, "time")
    session = _session(args, read_only=True)  # moving a node's clock signs nothing: no key needed
    if not session.is_eth_tester:
        try:
            advance_time(session, seconds)
        except Exception as exc:  # a node without evm_increaseTime
            raise ChainError(f"advance-time: {session.backend} cannot move its clock ({exc})") from None
    else:
        # eth-tester mines the travelled-to block one second short; one more keeps `advance` exact.
        advance_time(session, seconds + 1)
    _finish(args, session)
    print(f"chain time is now {session.w3.eth.get_block('latest')['timestamp']}")
    return 0


def _common(p: argparse.ArgumentParser, *, units_flag: bool = True) -> None:
    _connection_options(p)
    p.add_argument("--license-file", type=Path, help="license file (default: beside the deployment, "
                   "DEPLOYMENT.license.json)")
    if units_flag:
        p.add_argument("--base-units", action="store_true", help="amounts are 18-decimal integers, not whole units")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `license` and `gov` to the `fedlearn` command line."""
    license_ = subparsers.add_parser("license", help="license the model commercially; share its fees")
    sub = license_.add_subparsers(dest="license_command", required=True)

    p = sub.add_parser("deploy", help="deploy the license (and its governor and timelock) over `chain deploy`")
    _common(p)
    p.add_argument("--attester", help="address allowed to attest revenue (default: the signer)")
    p.add_argument(
        "--stake-rate", default="0.001", help="X, stake per unit of revenue above the threshold (%(default)s)"
    )
    p.add_argument("--threshold", default="1000000", help="revenue threshold (%(default)s)")
    p.add_argument("--lock-period", default="365d", help="shortest lock (%(default)s)")
    p.add_argument("--attestation-ttl", default="365d", help="how long an attestation stays live (%(default)s)")
    p.add_argument("--fee-claim-period", default="365d",
                   help="how long a closed epoch's fees stay withdrawable before they are swept (%(default)s)")
    p.add_argument("--dust-recipient", help="receives swept fees (default: the timelock, or the admin)")
    p.add_argument("--no-governance", action="store_true", help="the signer sets parameters; no governor")
    p.add_argument("--replace", action="store_true", help="overwrite an existing license file")
    p.add_argument("--voting-delay", default="1d", help="(%(default)s)")
    p.add_argument("--voting-period", default="7d", help="(%(default)s)")
    p.add_argument("--timelock-delay", default="2d", help="(%(default)s)")
    p.add_argument("--quorum", type=int, default=4, help="percent of the supply (%(default)s)")
    p.add_argument("--proposal-threshold", default="0", help="votes a proposer needs (%(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_cmd_deploy)

    p = sub.add_parser("quote", help="the stake a revenue requires")
    _common(p)
    p.add_argument("--revenue", required=True, help="annual revenue, currency units")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_cmd_quote)

    p = sub.add_parser("attest", help="record a licensee's annual revenue (attester)")
    _common(p)
    p.add_argument("licensee", help="licensee address")
    p.add_argument("--revenue", required=True, help="annual revenue, currency units")
    p.set_defaults(handler=_cmd_attest)

    p = sub.add_parser("acquire", help="lock the required stake (the signer is the licensee)")
    _common(p)
    p.add_argument("--amount", help="tokens to lock (default: what the required stake lacks)")
    p.add_argument("--lock", help="lock duration (default: the lock period)")
    p.set_defaults(handler=_cmd_acquire)

    p = sub.add_parser("status", help="a licensee's license, or the parameters and fees")
    _common(p)
    p.add_argument("licensee", nargs="?", help="licensee address (default: the license's parameters and fees)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_cmd_status)

    p = sub.add_parser("release", help="take the stake back after the lock (the license lapses)")
    _common(p)
    p.set_defaults(handler=_cmd_release)

    p = sub.add_parser("pay-fee", help="pay a license fee, shared by the contributors")
    _common(p)
    p.add_argument("--amount", required=True, help="tokens")
    p.set_defaults(handler=_cmd_pay_fee)

    p = sub.add_parser("sweep", help="send what a closed epoch's contributors left to the dust recipient (anyone)")
    _common(p, units_flag=False)
    p.add_argument("--round", type=int, required=True, help="the epoch's round")
    p.set_defaults(handler=_cmd_sweep)

    for name, handler, text in (
        ("shares", _cmd_shares, "fee shares an account may withdraw"),
        ("withdraw", _cmd_withdraw, "withdraw an account's fee shares (anyone may send; the account is paid)"),
    ):
        p = sub.add_parser(name, help=text)
        _common(p)
        p.add_argument("--account", help="contributor (default: the signer)")
        p.add_argument("--round", type=int, help="only this round (default: every round fees accrued to)")
        p.add_argument("--trees", type=Path, help="folder of the rewards trees, round-N.json or 0x<root>.json "
                       "(default: trees/ beside the deployment)")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(handler=handler)

    govp = subparsers.add_parser("gov", help="token-holder governance of the distributor and license parameters")
    gsub = govp.add_subparsers(dest="gov_command", required=True)

    p = gsub.add_parser("delegate", help="turn tokens into votes (delegate to yourself or another)")
    _common(p, units_flag=False)
    p.add_argument("--to", help="delegate (default: the signer)")
    p.set_defaults(handler=_cmd_delegate)

    p = gsub.add_parser("propose", help="propose parameter changes (distributor and license) or a pause")
    _common(p)
    p.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="one of " + ", ".join(g.label for g in GovParameter)
                   + "; e.g. reward-per-round=500, root-delay=2d, stake-rate=0.002, attestation-ttl=400d")
    p.add_argument("--action", action="append", choices=[a.label for a in Action],
                   help="pause or unpause a contract (repeatable)")
    p.add_argument("--description", required=True, help="what and why")
    p.set_defaults(handler=_cmd_propose)

    p = gsub.add_parser("vote", help="vote on a proposal")
    _common(p, units_flag=False)
    p.add_argument("proposal", type=_proposal_id)
    p.add_argument("--support", choices=sorted(gov.SUPPORT), required=True)
    p.add_argument("--reason")
    p.set_defaults(handler=_cmd_vote)

    for name, handler, text in (
        ("queue", _cmd_queue, "queue a passed proposal in the timelock"),
        ("execute", _cmd_execute, "execute a queued proposal after the timelock delay"),
    ):
        p = gsub.add_parser(name, help=text)
        _common(p, units_flag=False)
        p.add_argument("proposal", type=_proposal_id)
        p.set_defaults(handler=handler)

    p = gsub.add_parser("status", help="proposals, their votes and state")
    _common(p, units_flag=False)
    p.add_argument("proposal", nargs="?", type=_proposal_id)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_cmd_gov_status)

    p = gsub.add_parser("advance-time", help="move a development chain's clock (eth-tester, anvil)")
    _common(p, units_flag=False)
    p.add_argument("seconds", help="seconds, or 2d, 12h, 30m")
    p.set_defaults(handler=_cmd_advance)
