"""Settlement of a run on chain: scores → rewards → cumulative amounts → Merkle root → one transaction a round.

Every round is journaled in the ledger before it is sent. Sending goes in round order and is idempotent (the
chain layer returns without a transaction when the chain already has the round with the same root). When a
JSON-RPC node cannot be reached, rounds stay pending, training goes on, and the next round (or the end of the
run, for up to ``chain.retry_seconds``) sends the queue.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_utils import is_checksum_address

from fedlearn.chain import (
    ETH_TESTER,
    ChainSession,
    Deployment,
    RewardTree,
    claim,
    connect,
    deploy,
    execute_slash,
    fund,
    institution_accounts,
    mint,
    propose_slash,
    settle_round,
    slash_proposal,
    stake,
    stake_of,
    status,
)
from fedlearn.chain.addresses import address_of
from fedlearn.chain.deployment import (
    DEFAULT_ROOT_DELAY_S,
    DEFAULT_SLASH_DELAY_S,
    DEFAULT_TOKEN_CAP,
    distributor_contract,
    token_contract,
)
from fedlearn.chain.operations import MINTER_ROLE, defund, live_root, slashes_proposed
from fedlearn.chain.session import save_state
from fedlearn.chain.transactions import call
from fedlearn.config import FILES, ChainSection, RunConfig, read_toml
from fedlearn.errors import ChainError, ConfigError
from fedlearn.logs import log
from fedlearn.payout.ledger import Entry, Ledger, RoundEntry
from fedlearn.payout.rewards import WEI_PER_TOKEN, tokens_to_wei
from fedlearn.payout.schedule import RoundMeasure, allocate
from fedlearn.payout.slashing import SlashingPolicy, evidence_hash, run_evidence, run_offences, slash_amount
from fedlearn.records.rundir import runs_inside, saved_rounds
from fedlearn.scoring.round import RoundScores
from fedlearn.scoring.utility import UTILITY_MAX

CHAIN_DIR = "chain"
TREES_DIR = "trees"
DEPLOYMENT_FILE = "deployment.json"
STATE_FILE = "eth-tester.json"


def institution_addresses(config: RunConfig, institutions: list[str]) -> dict[str, str]:
    """Each institution's payout address: from ``chain.addresses`` (pilots) or derived (simulation, on the
    embedded chain only: derived keys come from a public seed, so anyone could spend what they are paid)."""
    if not config.chain.addresses:
        if config.chain.backend != ETH_TESTER:
            raise ConfigError(f"chain.backend is {config.chain.backend}: set chain.addresses to the institutions' "
                              "own addresses (derived simulation addresses have public keys anyone can spend from)")
        accounts = institution_accounts(len(institutions))
        return {name: account.address for name, account in zip(institutions, accounts)}
    path = Path(config.chain.addresses)
    table = read_toml(path, "chain.addresses file")
    table = table.get("addresses", table)
    addresses: dict[str, str] = {}
    for name in institutions:
        value = table.get(name)
        if value is None:
            raise ConfigError(f"institution {name} has no address in {path}")
        addresses[name] = checked_address(name, value, str(path))
    seen: dict[str, str] = {}
    for name, address in addresses.items():
        if address in seen:
            raise ConfigError(f"institutions {seen[address]} and {name} share the address {address}")
        seen[address] = name
    return addresses


def checked_address(name: str, value: object, where: str) -> str:
    """An institution's address as written in ``where``, checksummed; one with a wrong EIP-55 checksum refused
    (``fedlearn.chain.addresses``), one without a checksum taken with a warning."""
    try:
        address = address_of(value, f"institution {name}'s address in {where}")
    except ChainError as exc:
        raise ConfigError(str(exc)) from None
    if not is_checksum_address(value):
        log.warning("institution %s: address %s in %s carries no EIP-55 checksum, so a typo in it cannot be "
                    "caught; check it and write it as %s", name, value, where, address)
    return address


def measure_of(record: RoundEntry) -> RoundMeasure:
    """What the payout rule read of a journaled round."""
    return RoundMeasure(record.round, {e.institution: e.score for e in record.entries}, record.gain,
                        record.significant, record.start_utility)


@dataclass
class ChainLink:
    """The run's chain: a session, the deployment it pays from, and (eth-tester) where the chain is kept."""

    session: ChainSession
    deployment: Deployment
    state_file: Path | None
    trees_dir: Path  # every settled tree, by root: what the next run (and any challenger) builds on

    @classmethod
    def open(cls, chain: ChainSection, run_dir: Path, institutions: int, *, existing: bool = False) -> ChainLink:
        """Connect, then attach to the run's deployment, the configured one, or deploy fresh contracts;
        ``existing``: only attach to the run's own deployment (commands on a finished run)."""
        directory = run_dir / CHAIN_DIR
        if existing and not (directory / DEPLOYMENT_FILE).exists():
            raise ChainError(f"run directory {run_dir} has no chain deployment ({CHAIN_DIR}/{DEPLOYMENT_FILE})")
        directory.mkdir(parents=True, exist_ok=True)
        state_file: Path | None = None
        if chain.backend == ETH_TESTER:
            # An attached deployment's embedded chain lives beside its file (where `fedlearn chain` keeps it):
            # every run of the federation goes on with the same chain.
            state_file = (Path(chain.deployment).with_suffix(".eth-tester.json") if chain.deployment
                          else directory / STATE_FILE)
            session = connect(ETH_TESTER, institutions=institutions, state_file=state_file,
                              expected_chain_id=chain.chain_id or None)
        else:
            session = connect(chain.backend, key_env=chain.key_env, keystore=chain.keystore or None,
                              password_env=chain.password_env, expected_chain_id=chain.chain_id or None)
        own = directory / DEPLOYMENT_FILE
        # A shared deployment keeps its trees beside its file, so that every run of the federation finds them.
        trees_dir = (Path(chain.deployment).parent if chain.deployment else directory) / TREES_DIR
        if own.exists():
            deployment = Deployment.load(own, chain_id=session.chain_id)
        elif chain.deployment:
            deployment = Deployment.load(chain.deployment, chain_id=session.chain_id)
        else:
            # The run's own contracts: one operator (this key) holds every role. On the embedded chain, a
            # simulation, roots and slashes take effect at once; on a node they wait out the default delays.
            simulated = chain.backend == ETH_TESTER
            deployment = deploy(session, reward_per_round=tokens_to_wei(chain.reward_per_round),
                                root_delay=0 if simulated else DEFAULT_ROOT_DELAY_S,
                                slash_delay=0 if simulated else DEFAULT_SLASH_DELAY_S)
            log.info("single-operator deployment: %s holds the admin and coordinator roles (simulation; a "
                     "federation deploys with `fedlearn chain deploy --governed`)", session.address)
        deployment.check(session)
        if not own.exists():
            deployment.save(own)
        link = cls(session, deployment, state_file, trees_dir)
        link.save()
        return link

    def save_tree(self, tree: RewardTree) -> Path:
        """Keep ``tree`` under its root, atomically: a later run opens with it, an institution proves with it."""
        self.trees_dir.mkdir(parents=True, exist_ok=True)
        path = self.trees_dir / f"0x{tree.root.hex()}.json"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(tree.dump(), indent=1) + "\n")
            tmp.replace(path)
        return path

    def load_tree(self, root: bytes) -> RewardTree:
        path = self.trees_dir / f"0x{root.hex()}.json"
        try:
            tree = RewardTree.load(json.loads(path.read_text()))
        except OSError:
            raise ChainError(f"the chain's root 0x{root.hex()} has no tree file {path}: copy the `{TREES_DIR}/` "
                             "directory of the run that settled it beside the deployment file") from None
        except ValueError:
            raise ChainError(f"tree file {path} is not a rewards tree") from None
        if tree.root != root:
            raise ChainError(f"tree file {path} holds root 0x{tree.root.hex()}, not 0x{root.hex()}")
        return tree

    def save(self) -> None:
        """Keep an embedded chain on disk, so a resumed run or a later command goes on with it."""
        if self.state_file is not None:
            save_state(self.session, self.state_file)

    def reachable(self) -> bool:
        try:
            return bool(self.session.w3.is_connected())
        except Exception:  # noqa: BLE001 - any transport failure means unreachable
            return False


def slashable_stake(session: ChainSession, deployment: Deployment, address: str) -> int:
    """What of ``address``'s stake can be slashed: active plus pending unstakes (both stay slashable)."""
    held = stake_of(session, deployment, address)
    return int(held["active"] + held["pending"])


def require_stakes(session: ChainSession, deployment: Deployment, addresses: Mapping[str, str],
                   tokens: float) -> None:
    """Every institution holds at least ``tokens`` of slashable stake on ``deployment``; the first one short
    stops the run. Reads only."""
    needed = tokens_to_wei(tokens)
    for name, address in addresses.items():
        current = slashable_stake(session, deployment, address)
        if current < needed:
            raise ChainError(f"institution {name} ({address}) has staked {current} wei; this run asks "
                             f"{needed} (integrity.min_stake = {tokens}) before joining")


def require_funder(session: ChainSession, deployment: Deployment, config: RunConfig) -> None:
    """A run that funds its own budget on an attached deployment (``chain.funding`` "total" or "per_round") has
    the tokens to: its signer holds the budget (the governed rate × the rounds) or may mint it. A governed
    deployment's reward pool is funded at deployment and its coordinator holds nothing: such runs pay from the pool
    (``chain.funding = "none"``), which this says. Reads only."""
    if config.chain.funding == "none":
        return
    rate = int(call(distributor_contract(session, deployment).functions.rewardPerRound(), "reading the reward rate"))
    budget = rate * config.run.rounds
    token = token_contract(session, deployment)
    held = int(call(token.functions.balanceOf(session.address), "reading balance"))
    if held >= budget or call(token.functions.hasRole(MINTER_ROLE, session.address), "reading roles"):
        return
    available = status(session, deployment, accounts=[]).available
    hint = (f"the distributor's reward pool holds {available} unsettled wei already: set chain.funding = \"none\" "
            "to pay from it" if available >= budget else
            "transfer it tokens, or fund the reward pool (`fedlearn chain fund`) and set chain.funding = \"none\"")
    raise ChainError(f"chain.funding = \"{config.chain.funding}\" funds the run's budget ({budget} wei) from "
                     f"{session.address}, which holds {held} and cannot mint: {hint}")


def check_budget_fits(config: RunConfig, institutions: int) -> None:
    """A run that deploys its own contracts mints its budget, and on the embedded chain every simulated
    institution's stake, within the token's cap (``DEFAULT_TOKEN_CAP``): beyond it the mint would revert after the
    contracts and the run directory exist, so it is refused before anything is written. (An attached deployment
    pays at its governed rate, which its own funding checks.)"""
    ch = config.chain
    if not ch.enabled or ch.deployment:
        return
    budget = tokens_to_wei(ch.reward_per_round) * config.run.rounds
    simulated = ch.backend == ETH_TESTER and not ch.addresses
    stakes = tokens_to_wei(config.integrity.min_stake) * institutions if simulated else 0
    if budget + stakes > DEFAULT_TOKEN_CAP:
        staked = f" plus {institutions} stakes of {config.integrity.min_stake}" if stakes else ""
        raise ConfigError(
            f"the run's budget, chain.reward_per_round x run.rounds = {ch.reward_per_round} x {config.run.rounds} "
            f"tokens{staked}, exceeds the token's cap of {DEFAULT_TOKEN_CAP // WEI_PER_TOKEN:,} tokens; nothing can "
            "fund it")


@dataclass(frozen=True)
class FoundSlash:
    """A slash on chain, on a run's evidence, that its ledger does not record."""

    round: int
    institution: str
    address: str
    slash_id: int
    amount: int
    evidence: str
    tx_hash: str


class Paymaster:
    """Turns each round's scores into a journaled, then settled, payout."""

    def __init__(self, config: RunConfig, ledger: Ledger, link: ChainLink, addresses: Mapping[str, str]):
        self.chain = config.chain
        self.integrity = config.integrity
        self.rounds = config.run.rounds
        self.ledger = ledger
        self.link = link
        self.addresses = dict(addresses)
        # The rate the run's schedule was planned at: journaled with its first round, so that a resumed run and
        # `verify` plan with the same figure (a later governance change is met by the chain's own check).
        journaled = self.ledger.meta().get("reward_per_round")
        self.per_round = int(journaled) if journaled is not None else self.governed_reward_per_round()
        self.budget = self.per_round * self.rounds
        self.interim_fraction = config.payout.interim_fraction
        self.round_weight = config.payout.round_weight
        # A simulation resumes (`fedlearn run --resume`); a pilot under `flwr run` starts a new run directory.
        self.resumable = config.data.dataset != FILES
        self.best_utility = UTILITY_MAX[config.scoring.utility]
        self._stakes_read: dict[str, int] | None = None  # the stakes last read on chain (voting_stakes)
        self.stake_cap = tokens_to_wei(config.integrity.min_stake)
        # (offence round, institution) → (its update's hash, the policy): slashes the chain was down for.
        self._deferred: dict[tuple[int, str], tuple[str, SlashingPolicy]] = {}
        self._closed: set[tuple[int, str]] = set()  # offences recorded, or flagged with no stake to take

    def governed_reward_per_round(self) -> int:
        """The reward per round the distributor enforces: the run pays by the chain's figure, not its config's."""
        on_chain = int(distributor_contract(self.link.session, self.link.deployment).functions.rewardPerRound().call())
        configured = tokens_to_wei(self.chain.reward_per_round)
        if on_chain != configured:
            log.warning("chain.reward_per_round is %s tokens in the config; the deployment's governed reward per "
                        "round is %s wei: paying that", self.chain.reward_per_round, on_chain)
        return on_chain

    # ---- funding ----------------------------------------------------------------------------------------

    def budget_needed(self) -> int:
        """Wei the distributor must still hold unsettled for this run to finish: its budget less what settled
        rounds committed and what was returned to the funder."""
        journaled = self.ledger.rounds()
        settled = sum(r.round_total for r in journaled if r.status == "settled")
        returned = sum(amount for _, _, amount, _ in self.ledger.returns())
        return max(self.budget - settled - returned, 0)

    def shortfall(self) -> int:
        """Wei missing from the distributor's unsettled funds for this run to finish (0 when covered)."""
        available = status(self.link.session, self.link.deployment, accounts=[]).available
        return max(self.budget_needed() - available, 0)

    def fund_run(self) -> None:
        """Fund the budget up front (``total``: every round's budget, topped up when a resumed run asks for more
        rounds) or check the funds cover it (``none``). Runs before the first round and on every resume."""
        if self.chain.funding == "total":
            returned = sum(amount for _, _, amount, _ in self.ledger.returns())
            # What this run funded and did not take back; a resumed run with more rounds funds the difference.
            kept = int(self.ledger.meta().get("funded_wei", "0")) - returned
            if self.budget > kept:
                self.top_up(self.budget - kept)
        elif self.chain.funding == "none":
            short = self.shortfall()
            if short > 0:
                raise ChainError(
                    f"distributor {self.link.deployment.distributor} lacks {short} wei of the run's budget "
                    f"({self.rounds} rounds x {self.chain.reward_per_round} tokens); top it up with "
                    f"`fedlearn chain fund --run {self.ledger.path.parent}` (a coordinator that holds or may mint "
                    "tokens) or `fedlearn chain fund --amount N` from any account that holds them, "
                    + (f"then `fedlearn run --resume {self.ledger.path.parent}`" if self.resumable
                       else "then start the run again")
                )
        self.link.save()

    def top_up(self, amount: int | None = None) -> int:
        """Fund ``amount`` wei, or what the run still lacks; returns the wei funded (0: nothing missing)."""
        amount = self.shortfall() if amount is None else amount
        if amount > 0:
            fund(self.link.session, self.link.deployment, amount)
            funded = int(self.ledger.meta().get("funded_wei", "0"))
            self.ledger.set_meta(funded_wei=str(funded + amount))
            self.link.save()
        return amount

    # ---- the deployment's earlier runs -------------------------------------------------------------------

    def opening(self) -> tuple[int, dict[str, int]]:
        """(round offset, opening cumulative amounts): where this run starts on a deployment that may have paid
        earlier runs. Fixed, in the ledger, when the run journals its first round: this run's round r is the
        chain's round offset + r, and every leaf is the opening amount plus what this run paid."""
        meta = self.ledger.meta()
        if "round_offset" in meta:
            return int(meta["round_offset"]), {a: int(v) for a, v in json.loads(meta.get("opening", "{}")).items()}
        if self.ledger.rounds():
            return 0, {}  # journaled before deployments served many runs: the run's rounds are the chain's
        dist = distributor_contract(self.link.session, self.link.deployment)
        offset = int(dist.functions.lastRound().call())
        opening: dict[str, int] = {}
        if offset:
            live = live_root(self.link.session, self.link.deployment)
            if live is not None:
                opening = self.link.load_tree(live).leaves()
            log.info("this deployment paid earlier runs up to round %d: this run's rounds are %d.., and its "
                     "amounts add to the %d accounts' cumulative amounts so far", offset, offset + 1, len(opening))
        self.ledger.set_meta(round_offset=str(offset), opening=json.dumps({a: str(v) for a, v in opening.items()}),
                             reward_per_round=str(self.per_round))
        return offset, opening

    def check_its_turn(self) -> None:
        """A run that journaled rounds goes on only where it left the chain. Runs on one deployment take turns:
        once another run has settled rounds after this one's last, this run's next tree (its opening amounts plus
        what it paid) would lower what the other run paid, which the chain and every institution's check refuse.
        Raised before anything more is funded, journaled or trained."""
        meta = self.ledger.meta()
        if "round_offset" not in meta:
            return  # nothing journaled yet: the run starts after the chain's latest round (opening)
        if (self.ledger.last_round() or 0) >= self.rounds and not self.ledger.pending():
            return  # every round settled: resuming only writes the summary, model and report
        offset = int(meta["round_offset"])
        dist = distributor_contract(self.link.session, self.link.deployment).functions
        last = int(dist.lastRound().call())
        mine = offset
        for record in self.ledger.rounds():
            # Settled, or pending although the chain holds its root (the receipt never reached the ledger).
            chain_round = offset + record.round
            if record.status == "settled" or (
                    chain_round <= last and "0x" + bytes(dist.roundOf(chain_round).call()).hex() == record.root):
                mine = chain_round
            else:
                break
        if last > mine:
            raise ChainError(
                f"deployment {self.link.deployment.distributor}: another run settled chain rounds {mine + 1}..{last} "
                f"after this run's last settled round; runs on one deployment take turns, and this run's next tree "
                "would lower what that run paid, so it cannot go on here (what it funded and did not pay stays in "
                "the distributor: `fedlearn chain defund` returns it)")

    def publish(self, record: RoundEntry, chain_round: int) -> Path:
        """The round's record beside its tree, for institutions that check on their own (`fedlearn chain verify
        --tree`): what was measured and paid, by name and address, and which tree file holds the root."""
        path = self.link.trees_dir / f"record-{chain_round}.json"
        data = {"chain_round": chain_round, "run_round": record.round, "model_hash": record.model_hash,
                "root": record.root, "tree": f"{record.root}.json", "gain": record.gain,
                "gain_low": record.gain_low, "significant": record.significant, "final": record.final,
                "round_total": str(record.round_total),
                "institutions": [{"name": e.institution, "address": e.address, "score": e.score,
                                  "reward": str(e.reward), "cumulative_this_run": str(e.cumulative),
                                  "rejected": e.rejected} for e in record.entries]}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        tmp.replace(path)
        return path

    def leaves(self, record: RoundEntry) -> dict[str, int]:
        """The round's tree leaves: the opening amounts plus this run's cumulative amounts."""
        return self._with_opening({e.address: e.cumulative for e in record.entries})

    def _with_opening(self, paid: Mapping[str, int]) -> dict[str, int]:
        """Address → the opening amount plus what this run paid (``paid``, by address)."""
        _, opening = self.opening()
        leaves = dict(opening)
        for address, amount in paid.items():
            leaves[address] = leaves.get(address, 0) + amount
        return leaves

    # ---- one round --------------------------------------------------------------------------------------

    def settle(self, scores: RoundScores, model_hash: str) -> RoundEntry:
        """Journal the round's payout, then send every pending round in order."""
        record = self.payout(scores, model_hash)
        if self.ledger.journal(record) and self.chain.funding == "per_round" and record.round_total > 0:
            fund(self.link.session, self.link.deployment, record.round_total)
        self.flush()
        return self.ledger.round(scores.server_round) or record

    def payout(self, scores: RoundScores, model_hash: str) -> RoundEntry:
        """The round's entry under the payout rule (``fedlearn.payout.schedule``), from the journaled history."""
        server_round = scores.server_round
        earlier = [r for r in self.ledger.rounds() if r.round < server_round]
        before = {e.institution: e.cumulative for e in earlier[-1].entries} if earlier else {}
        all_scores = {name: float(scores.scores.get(name, 0.0)) for name in self.addresses}
        measure = RoundMeasure(server_round, all_scores, scores.gain, scores.significant, scores.start_utility)
        final = server_round >= self.rounds
        plan = allocate([*map(measure_of, earlier), measure], {n: before.get(n, 0) for n in self.addresses},
                        self.budget, self.interim_fraction, self.best_utility, final, self.per_round,
                        weighting=self.round_weight)
        cumulative = plan.cumulative
        tree = RewardTree.of(self._with_opening({self.addresses[n]: amount for n, amount in cumulative.items()}))
        return RoundEntry(
            round=server_round,
            model_hash=model_hash,
            root="0x" + tree.root.hex(),
            round_total=plan.released - sum(before.values()),
            budget=self.budget,
            final=final,
            released=plan.released,
            carried=plan.carried,
            returned=plan.returned,
            start_utility=scores.start_utility,
            gain=scores.gain,
            gain_low=scores.gain_low,
            gain_high=scores.gain_high,
            significant=scores.significant,
            entries=tuple(
                Entry(name, self.addresses[name], all_scores[name], cumulative[name] - before.get(name, 0),
                      cumulative[name], scores.rejected.get(name))
                for name in sorted(self.addresses)
            ),
        )

    def return_unspent(self) -> int:
        """After the last round: send the budget nobody earned back to the funder (the distributor's admin) on
        chain, once; returns the wei returned. Nothing to do when the run paid its whole budget."""
        journaled = self.ledger.rounds()
        last = journaled[-1] if journaled else None
        if last is None or not last.final or last.returned == 0 or self.chain.funding == "per_round":
            return 0  # per_round funding never took the unpaid budget from the funder in the first place
        if self.chain.funding == "none":  # the run paid from a pool it never funded: what it left stays there
            if not self.ledger.meta().get("left_in_pool"):
                log.warning("round %d: %d wei of the budget went unearned and stay in the reward pool it was paid "
                            "from (chain.funding = \"none\")", last.round, last.returned)
                self.ledger.set_meta(left_in_pool=str(last.returned))
            return 0
        if any(r == last.round for r, _, _, _ in self.ledger.returns()):
            return 0
        to = self.link.session.address
        try:
            tx = defund(self.link.session, self.link.deployment, to, last.returned)
        except ChainError as exc:
            log.warning("round %d: %d wei of the budget went unearned and stay in the distributor (%s); its admin "
                        "can return them with `fedlearn chain defund`", last.round, last.returned, exc)
            return 0
        self.ledger.record_return(last.round, to, last.returned, tx.tx_hash)
        log.warning("round %d: %d wei of the budget went unearned; returned to the funder %s (tx %s)",
                    last.round, last.returned, to, tx.tx_hash)
        self.link.save()
        return last.returned

    def flush(self) -> int:
        """Send pending rounds in order; returns how many remain pending (the node is unreachable)."""
        pending = self.ledger.pending()
        offset, _ = self.opening() if pending else (0, {})
        for record in pending:
            leaves = self.leaves(record)
            self.link.save_tree(RewardTree.of(leaves))
            self.publish(record, offset + record.round)
            try:
                live = live_root(self.link.session, self.link.deployment)
                previous = self.link.load_tree(live) if live is not None else None
                settlement = settle_round(self.link.session, self.link.deployment, offset + record.round,
                                          record.model_hash, leaves, previous)
            except ChainError as exc:
                if self.link.session.is_eth_tester or self.link.reachable():
                    raise  # the chain refused: a real error, not an outage
                remaining = len(self.ledger.pending())
                log.warning("chain unreachable (%s); %d round(s) queued for settlement", exc, remaining)
                return remaining
            if "0x" + settlement.root.hex() != record.root:
                raise ChainError(f"round {record.round}: the chain layer built root 0x{settlement.root.hex()}, "
                                 f"the ledger holds {record.root}")
            tx = settlement.tx
            self.ledger.mark_settled(record.round, tx.tx_hash if tx else None, tx.block if tx else None,
                                     tx.gas_used if tx else None)
            self.link.save()
        return 0

    def drain(self) -> None:
        """At the end of a run: retry the queue for up to ``chain.retry_seconds``, then fail loudly."""
        deadline = time.monotonic() + self.chain.retry_seconds
        while self.flush():
            if time.monotonic() >= deadline:
                raise ChainError(
                    f"{len(self.ledger.pending())} round(s) still unsettled after {self.chain.retry_seconds:.0f} s "
                    f"of retries; they are journaled in {self.ledger.path}: when the node is back, "
                    + (f"`fedlearn run --resume {self.ledger.path.parent}` settles them and finishes the run "
                       "(summary, model, report)" if self.resumable
                       else f"`fedlearn settle {self.ledger.path.parent}` settles them")
                )
            time.sleep(1.0)
        self.retry_slashes()
        offset = self.opening()[0] if self._deferred else 0
        for (server_round, name), (update_hash, _) in sorted(self._deferred.items()):
            log.warning("round %d: %s was not slashed: the chain did not answer (`fedlearn chain slash --account %s "
                        "--amount ... --evidence 0x%s` proposes it by hand; `fedlearn settle %s` then records it)",
                        server_round, name, self.addresses[name],
                        evidence_hash(offset + server_round, update_hash).hex(), self.ledger.path.parent)
        self.return_unspent()

    # ---- stake and slash --------------------------------------------------------------------------------

    def stake_of(self, address: str) -> int:
        """What of ``address``'s stake can be slashed (``slashable_stake``)."""
        return slashable_stake(self.link.session, self.link.deployment, address)

    def voting_stakes(self, server_round: int) -> dict[str, int]:
        """What each institution's peer votes weigh in round ``server_round`` (wei): its slashable stake as it
        stood when the round began, capped at ``integrity.min_stake``, so that a slashed voter has less say and
        staking more buys none. "As it stood": what the chain holds now plus what this run's slashes recorded for
        that round or later took, so a round recomputed on resume after its own slash went out weighs its votes
        as the first time. While the node is unreachable, the stakes last read (a ballot does not wait for the
        chain, as settlement does not)."""
        try:
            self._stakes_read = {name: self.stake_of(address) for name, address in self.addresses.items()}
        except Exception as exc:  # noqa: BLE001 - web3's, requests' and the chain layer's errors alike
            if self.link.session.is_eth_tester or self.link.reachable() or self._stakes_read is None:
                raise
            log.warning("chain unreachable (%s); votes are weighed by the stakes read before", exc)
        stood = dict(self._stakes_read)
        for slashed_round, name, amount, _ in self.ledger.slashes():
            if slashed_round >= server_round and name in stood:
                stood[name] += amount
        return {name: min(stake, self.stake_cap) for name, stake in stood.items()}

    def ensure_stakes(self, tokens: float, signers: Mapping[str, Any] | None) -> None:
        """Every institution stakes ``tokens`` before joining: simulated ones are minted and stake here
        (``signers``: name → account); on a real chain an institution short of stake stops the run."""
        if signers is None:
            require_stakes(self.link.session, self.link.deployment, self.addresses, tokens)
            return
        needed = tokens_to_wei(tokens)
        for name, address in self.addresses.items():
            current = self.stake_of(address)
            if current >= needed:
                continue
            mint(self.link.session, self.link.deployment, address, needed - current)
            stake(self.link.session.as_account(signers[name]), self.link.deployment, needed - current)
        self.link.save()

    def slash(self, offences: Mapping[tuple[int, str], str], policy: SlashingPolicy) -> dict[str, int]:
        """Slash each offence ((round, institution) → evidence of its update) the ledger lacks, once; returns wei
        slashed. Given every offence of the run each time, so that one a killed run never sent goes out when it
        resumes (or `fedlearn settle` runs): the queue itself lives in memory only.

        While the node is unreachable the offenders wait, with a warning, and the next call that reaches it
        slashes them, each for its own round's offence (``unslashed``: those still waiting)."""
        for key, update_hash in offences.items():
            if key not in self._closed:
                self._deferred.setdefault(key, (update_hash, policy))
        return self.retry_slashes()

    def retry_slashes(self) -> dict[str, int]:
        """Slash the offenders waiting for the chain, if it answers now; returns wei slashed."""
        if not self._deferred:
            return {}
        try:
            return self._slash_waiting()
        except Exception as exc:  # noqa: BLE001 - web3's, requests' and the chain layer's errors alike
            if self.link.session.is_eth_tester or self.link.reachable():
                raise
            log.warning("chain unreachable (%s); slashing %s waits for it", exc,
                        ", ".join(f"{name} (round {r})" for r, name in sorted(self._deferred)))
            return {}

    def unslashed(self) -> list[tuple[int, str]]:
        """(round, institution) of the offences whose slash still waits for the chain."""
        return sorted(self._deferred)

    def _slash_waiting(self) -> dict[str, int]:
        done = {(r, name) for r, name, _, _ in self.ledger.slashes()}
        delay = int(distributor_contract(self.link.session, self.link.deployment).functions.slashDelay().call())
        offset, _ = self.opening()
        slashed: dict[str, int] = {}
        for (server_round, name), (update_hash, policy) in sorted(self._deferred.items()):
            if (server_round, name) in done or name not in self.addresses:
                del self._deferred[(server_round, name)]
                self._closed.add((server_round, name))
                continue
            address = self.addresses[name]
            # The chain's round, not the run's: two runs on one deployment (even with identical updates) never
            # share evidence, which the distributor takes once per account.
            evidence = evidence_hash(offset + server_round, update_hash)
            sent = slashes_proposed(self.link.session, self.link.deployment, address, evidence)
            if sent:
                # Proposed before and never recorded (the node went away between sending and the receipt): the
                # chain holds it, and would refuse a second proposal on this evidence; record the one it holds.
                slash_id, tx_hash = sent[0]
                found = slash_proposal(self.link.session, self.link.deployment, slash_id)
                amount, closed = found.amount, found.closed
            else:
                amount = slash_amount(self.stake_of(address), policy)
                if amount == 0:
                    del self._deferred[(server_round, name)]
                    self._closed.add((server_round, name))
                    log.warning("round %d: %s is flagged but has no stake to slash", server_round, name)
                    continue
                slash_id, tx = propose_slash(self.link.session, self.link.deployment, address, amount, evidence)
                tx_hash, closed = tx.tx_hash, False
            self.ledger.record_slash(server_round, name, address, amount, "0x" + evidence.hex(), tx_hash)
            del self._deferred[(server_round, name)]  # recorded: a later failure does not propose it twice
            self._closed.add((server_round, name))
            if closed:  # found executed or vetoed since it was sent
                vetoed = any(int(e["args"]["id"]) == slash_id for e in distributor_contract(
                    self.link.session, self.link.deployment).events.SlashVetoed().get_logs(
                        from_block=self.link.deployment.block))
                if not vetoed:
                    slashed[name] = slashed.get(name, 0) + amount
                log.warning("round %d: slash #%d of %s, %d wei (evidence 0x%s), had reached the chain before its "
                            "receipt was lost, and was %s since; recorded", server_round, slash_id, name, amount,
                            evidence.hex(), "vetoed" if vetoed else "executed")
                continue
            slashed[name] = slashed.get(name, 0) + amount
            if delay == 0:
                execute_slash(self.link.session, self.link.deployment, slash_id)
                log.warning("round %d: slashed %s %d wei (evidence 0x%s)", server_round, name, amount, evidence.hex())
            else:
                log.warning("round %d: proposed slash #%d of %s, %d wei held (evidence 0x%s); governance or a "
                            "guardian can veto it for %d s, then `fedlearn chain slash --execute %d` takes it",
                            server_round, slash_id, name, amount, evidence.hex(), delay, slash_id)
        self.link.save()
        return slashed

    def run_evidence(self, run_dir: Path) -> dict[tuple[str, str], tuple[int, str]]:
        """What a slash of the run in ``run_dir`` can rest on (``slashing.run_evidence`` over its rounds.json)."""
        return run_evidence(saved_rounds(run_dir), self.opening()[0])

    def slash_run_offences(self, run_dir: Path) -> list[tuple[int, str]]:
        """Send the slashes the run in ``run_dir`` flagged (by its own rules, over its rounds.json) and never sent:
        a coordinator stopped while they waited for the node. Returns (round, institution) of those sent now."""
        if not (self.integrity.slash and self.integrity.min_stake > 0):
            return []
        saved = saved_rounds(run_dir)
        before = {(r, name) for r, name, _, _ in self.ledger.slashes()}
        policy = SlashingPolicy.of(self.integrity)
        self.slash(run_offences(saved, policy), policy)
        return sorted({(r, name) for r, name, _, _ in self.ledger.slashes()} - before)

    def unrecorded_slashes(self, evidence: Mapping[tuple[str, str], tuple[int, str]]) -> list[FoundSlash]:
        """The slashes on chain that rest on this run's ``evidence`` and are missing from the ledger: sent when the
        receipt was lost and no slashing pass of the run came after (its last round's)."""
        done = {(name, recorded) for _, name, _, recorded in self.ledger.slashes()}
        found = []
        events = distributor_contract(self.link.session, self.link.deployment).events.SlashProposed().get_logs(
            from_block=self.link.deployment.block)
        for e in events:
            key = "0x" + bytes(e["args"]["evidenceHash"]).hex()
            for name, address in self.addresses.items():
                if (key, name) in evidence and e["args"]["account"] == address and (name, key) not in done:
                    found.append(FoundSlash(evidence[(key, name)][0], name, address, int(e["args"]["id"]),
                                            int(e["args"]["amount"]), key,
                                            "0x" + bytes(e["transactionHash"]).hex().removeprefix("0x")))
        return found

    def record_found_slashes(self, evidence: Mapping[tuple[str, str], tuple[int, str]]) -> int:
        """Record :meth:`unrecorded_slashes` in the ledger; returns how many."""
        found = self.unrecorded_slashes(evidence)
        for f in found:
            self.ledger.record_slash(f.round, f.institution, f.address, f.amount, f.evidence, f.tx_hash)
            log.warning("round %d: slash #%d of %s (%d wei) reached the chain without reaching the ledger; "
                        "recorded", f.round, f.slash_id, f.institution, f.amount)
        return len(found)

    # ---- claims -----------------------------------------------------------------------------------------

    def claimable_tree(self) -> RewardTree:
        """The tree of the root claims use now (a later root may still wait out its challenge window)."""
        if not self.latest_tree_entries():
            raise ChainError("no round of this run is settled yet")
        root = bytes(distributor_contract(self.link.session, self.link.deployment).functions.rewardsRoot().call())
        if root == b"\x00" * 32:
            raise ChainError("no root is claimable yet: the first one waits out its challenge window "
                             "(`fedlearn chain status` says until when)")
        return self.link.load_tree(root)

    def claims_open(self) -> bool:
        """Whether claims already use this run's latest settled root (not waiting out a challenge window)."""
        entries = self.latest_tree_entries()
        if not entries:
            return False
        latest = [r for r in self.ledger.rounds() if r.status == "settled"][-1]
        root = bytes(distributor_contract(self.link.session, self.link.deployment).functions.rewardsRoot().call())
        return "0x" + root.hex() == latest.root

    def claim(self, institutions: list[str]) -> dict[str, int]:
        """Claim for ``institutions`` (anyone may submit; tokens go to each address); returns wei paid."""
        tree = self.claimable_tree()
        paid: dict[str, int] = {}
        for name in institutions:
            address = self.addresses[name]
            owed = tree.amount_of(address) or 0
            already = _claimed_on_chain(self.link, address)
            if owed <= already:
                paid[name] = 0
                continue
            # claimable_tree() checked the tree's root against the chain's once for all of these claims.
            result = claim(self.link.session, self.link.deployment, address, owed, tree.proof(address))
            self.ledger.record_claim(name, address, result.amount, result.cumulative_amount, result.tx.tx_hash)
            paid[name] = result.amount
        self.link.save()
        return paid

    def token_summary(self) -> dict[str, dict[str, str]]:
        """Per institution: address, wei earned (settled cumulative), wei claimed on chain (decimal strings)."""
        earned = {e.institution: e.cumulative for e in self.latest_tree_entries()}
        slashed: dict[str, int] = {}
        for _, name, amount, _ in self.ledger.slashes():
            slashed[name] = slashed.get(name, 0) + amount
        return {
            name: {"address": address, "tokens_earned": str(earned.get(name, 0)),
                   "tokens_claimed": str(_claimed_on_chain(self.link, address)),
                   "tokens_slashed": str(slashed.get(name, 0))}
            for name, address in self.addresses.items()
        }

    def latest_tree_entries(self) -> tuple[Entry, ...]:
        settled = [r for r in self.ledger.rounds() if r.status == "settled"]
        return settled[-1].entries if settled else ()

    def balances(self) -> dict[str, int]:
        """Token balance of each institution's address."""
        token = token_contract(self.link.session, self.link.deployment)
        return {name: int(token.functions.balanceOf(address).call()) for name, address in self.addresses.items()}


def _claimed_on_chain(link: ChainLink, address: str) -> int:
    return int(distributor_contract(link.session, link.deployment).functions.claimed(address).call())


@dataclass
class RunChain:
    """A finished (or interrupted) run's config, ledger and chain, for claim, settle and verify."""

    config: RunConfig
    institutions: list[str]
    paymaster: Paymaster

    @classmethod
    def open(cls, run_dir: Path) -> RunChain:
        """Read the run's config and ledger and attach to its chain. Names and addresses come from the
        ledger (what was paid), so claim and verify need neither the data nor Flower nor torch."""
        from fedlearn.payout.ledger import LEDGER_FILE

        run_dir = Path(run_dir)
        if not (run_dir / "config.toml").is_file():
            raise ConfigError(f"{run_dir} is not a run directory (no config.toml){runs_inside(run_dir)}")
        config = RunConfig.load_saved(run_dir / "config.toml")
        if not config.chain.enabled:
            raise ConfigError(f"run {run_dir} ran without a chain (chain.enabled = false)")
        ledger = Ledger.open(run_dir / LEDGER_FILE)
        journaled = ledger.rounds()
        if journaled:
            addresses = {e.institution: e.address for e in journaled[-1].entries}
        else:  # nothing journaled yet: the roster says who takes part
            from fedlearn.federation.roster import roster

            addresses = institution_addresses(config, [m.name for m in roster(config)])
        institutions = list(addresses)
        link = ChainLink.open(config.chain, run_dir, len(institutions), existing=True)
        return cls(config, institutions, Paymaster(config, ledger, link, addresses))
