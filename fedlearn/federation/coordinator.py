"""The coordinator's round loop: every round checked, aggregated, scored, journaled, settled and checkpointed.

``server/app.py`` is the Flower app built from it; the simulation engines build their own from the same code.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from flwr.common.serde import message_to_proto
from flwr.serverapp import Grid, ServerApp

from fedlearn.chain import ETH_TESTER, Deployment, institution_accounts
from fedlearn.chain.session import ChainSession, connect
from fedlearn.config import FILES, RunConfig
from fedlearn.errors import ChainError, ConfigError, FedlearnError
from fedlearn.federation.roster import federated_split, node_registry, registered_counts, roster
from fedlearn.federation.strategy import ScoredStrategy, build_flower_strategy, quorum_of
from fedlearn.learning.behaviours import attack_success_rate
from fedlearn.learning.models import init_model
from fedlearn.learning.training import evaluate
from fedlearn.logs import log as money_log
from fedlearn.payout.ledger import LEDGER_FILE, Ledger, RoundEntry
from fedlearn.payout.rewards import WEI_PER_TOKEN
from fedlearn.payout.settlement import (
    CHAIN_DIR,
    DEPLOYMENT_FILE,
    STATE_FILE,
    ChainLink,
    Paymaster,
    check_budget_fits,
    institution_addresses,
    require_funder,
    require_stakes,
)
from fedlearn.payout.slashing import SlashingPolicy, run_offences
from fedlearn.records import checkpoint
from fedlearn.records.fingerprint import model_hash
from fedlearn.records.rundir import ROUNDS_FILE, RoundResult, RunDirError, RunRecorder, new_run_dir, saved_rounds
from fedlearn.weaker_options import weaker_options

log = logging.getLogger("flwr")  # shown with Flower's own lines under `flwr run`

RoundCallback = Callable[[RoundResult, int, RoundEntry | None], None]


def log_round(result: RoundResult, total: int, payout: RoundEntry | None) -> None:
    scores = result.scores
    scoring = f"  scoring {scores.scoring_seconds:.2f}s ({scores.label}, {scores.evaluations} evals)" if scores else ""
    paid = f"  paid {payout.round_total / WEI_PER_TOKEN:.2f} tokens ({payout.status})" if payout else ""
    log.info("round %d/%d  test accuracy %.4f  loss %.4f%s%s", result.server_round, total,
             result.test_accuracy, result.test_loss, scoring, paid)


@dataclass
class RunOptions:
    run_dir: Path | None = None
    stop_after: int | None = None  # stop (resumably) once this round is completed
    on_round: RoundCallback = log_round
    on_finish: Callable[[dict[str, Any]], None] | None = None
    # Set (by Ctrl-C under the Ray engine) to end the run at the next round or reply wait: the round in flight is
    # dropped, nothing of it written, and the run resumes from its last checkpoint.
    stop: threading.Event | None = None


class QuorumNotReached(FedlearnError):
    exit_code = 6


class ServerAppFailed(Exception):
    """What the ServerApp raises under ``flwr run`` for a run it refuses or stops: Flower logs it with its
    traceback, so it carries the one line ``fedlearn`` would print and none of the frames that led to it."""


class RunInterrupted(FedlearnError):
    """The run was asked to stop (``RunOptions.stop``) before it finished."""

    exit_code = 130


def send_and_receive(grid: Grid, messages: list[Message], timeout: float,
                     stop: threading.Event | None) -> list[Message]:
    """``grid.send_and_receive``, but raising RunInterrupted as soon as ``stop`` is set: Flower's own waits out the
    whole timeout for replies that a stopped engine never sends."""
    if stop is None:
        return list(grid.send_and_receive(messages, timeout=timeout))
    pending, replies = set(grid.push_messages(messages)), []
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        if stop.is_set():
            raise RunInterrupted("interrupted")
        received = list(grid.pull_messages(pending))
        replies += received
        pending -= {m.metadata.reply_to_message_id for m in received}
        if pending:
            stop.wait(0.1)
    return replies


def mean_bytes(messages: list[Message]) -> int | None:
    """Mean size of the messages with content, serialized as Flower puts them on the wire (None for none)."""
    sizes = [message_to_proto(m).ByteSize() for m in messages if m.has_content()]
    return round(sum(sizes) / len(sizes)) if sizes else None


def wait_for_quorum(grid: Grid, quorum: int, wait: float, then: str = "resumes with `fedlearn run --resume`"
                    ) -> None:
    """Return once ``quorum`` nodes are connected; raise after ``wait`` seconds below it (Flower's own sampling
    would wait forever), saying what ``then`` happens."""
    deadline = time.monotonic() + wait
    while (connected := len(list(grid.get_node_ids()))) < quorum:
        if time.monotonic() >= deadline:
            raise QuorumNotReached(f"only {connected} of the {quorum} nodes a round needs (strategy.min_nodes) "
                                   f"connected within strategy.node_wait = {wait:g} s; the run stops here and "
                                   f"{then}")
        time.sleep(min(1.0, wait))


def offenders(recorder: RunRecorder, policy: SlashingPolicy) -> dict[tuple[int, str], str]:
    """Every offence of the run so far, (round, institution) → its evidence: the paymaster sends those the ledger
    lacks, so one a killed run never sent goes out when it resumes."""
    return run_offences([dataclasses.asdict(r) for r in recorder.rounds], policy)


def require_whole(run_dir: Path, config: RunConfig) -> None:
    """A run directory a run goes on from holds what its finished rounds left: every completed round in
    rounds.json, and with a chain its ledger and its deployment (and the embedded chain's state). Without them the
    resumed rounds would pay or score as though the earlier ones never happened; refused before anything is
    written (RunDirError, exit 9)."""
    done = checkpoint.completed_rounds(run_dir)
    ledger, chain_dir = run_dir / LEDGER_FILE, run_dir / CHAIN_DIR
    missing = []
    if done:
        recorded = {r.get("server_round") for r in saved_rounds(run_dir)}
        absent = [r for r in range(1, done[-1] + 1) if r not in recorded]
        if absent:
            missing.append(f"{ROUNDS_FILE} (what rounds {absent[0]}..{absent[-1]} measured)" if len(absent) > 1
                           else f"{ROUNDS_FILE} (what round {absent[0]} measured)")
    if config.chain.enabled and (done or ledger.exists() or chain_dir.exists()):
        if not ledger.exists():
            missing.append(f"{LEDGER_FILE} (what was paid)")
        else:
            opened = Ledger.open(ledger)
            deployed = "distributor" in opened.meta()
            opened.close()
            # An attached deployment is found again from chain.deployment; contracts the run deployed, only here.
            own = deployed and not config.chain.deployment
            if own and not (chain_dir / DEPLOYMENT_FILE).exists():
                missing.append(f"{CHAIN_DIR}/{DEPLOYMENT_FILE} (the run's contracts)")
            if own and config.chain.backend == ETH_TESTER and not (chain_dir / STATE_FILE).exists():
                missing.append(f"{CHAIN_DIR}/{STATE_FILE} (the run's embedded chain)")
    if missing:
        raise RunDirError(f"{run_dir} cannot go on: {', '.join(missing)} is missing, so the rounds it runs would "
                          "pay and score as though the earlier ones never happened; start a new run")


def preflight(config: RunConfig, fresh: bool = True) -> dict[str, str] | None:
    """Everything about a run that can be wrong, checked before anything is written on chain or to disk:
    data and behaviours, the device, the strategy's settings for this many institutions, the payout addresses,
    the signing key and node, and on a real node's attached deployment the stakes and, for a ``fresh`` run (not a
    resumed one), the tokens its funding needs.
    Returns the payout addresses (None without a chain)."""
    from fedlearn.learning.training import select_device

    members = roster(config)  # loads and partitions the data: data and behaviour errors surface here
    node_registry(config)
    select_device(config.train.device)
    validation = federated_split(config).validation
    level = log.level
    log.setLevel(logging.ERROR)  # a trial build: Flower's notice that clients never evaluate is for the real one
    try:
        build_flower_strategy(config, len(members), (validation.X, validation.y, validation.num_classes))
    finally:
        log.setLevel(level)
    if not config.chain.enabled:
        return None
    check_budget_fits(config, len(members))
    ch = config.chain
    if ch.deployment and not Path(ch.deployment).is_file():
        raise ConfigError(f"chain.deployment file {ch.deployment} does not exist")
    if ch.backend != ETH_TESTER:
        return check_node(config, [m.name for m in members], fresh)
    addresses = institution_addresses(config, [m.name for m in members])
    if ch.addresses:  # institutions of their own, even on the embedded chain: nobody stakes for them
        _stakes_need_a_deployment(config, "with chain.addresses")
    state = Path(ch.deployment).with_suffix(".eth-tester.json") if ch.deployment else None
    if state is not None and state.is_file():  # an attached embedded chain: read it, change nothing
        session = connect(ETH_TESTER, state_file=state, expected_chain_id=ch.chain_id or None)
        _check_deployment(session, config, addresses, fresh, own_stakes=bool(ch.addresses))
    return addresses


def _check_deployment(session: ChainSession, config: RunConfig, addresses: dict[str, str], fresh: bool,
                      own_stakes: bool) -> None:
    """On the attached deployment: the stakes of institutions that stake for themselves (``own_stakes``) and, for a
    ``fresh`` run (a resumed one funded its budget when it began), the tokens its funding needs."""
    deployment = Deployment.load(config.chain.deployment, chain_id=session.chain_id)
    if own_stakes and config.integrity.min_stake > 0:
        require_stakes(session, deployment, addresses, config.integrity.min_stake)
    if fresh:
        require_funder(session, deployment, config)


def _stakes_need_a_deployment(config: RunConfig, where: str) -> None:
    """Institutions that stake for themselves do it on contracts deployed before the run: fresh ones hold none."""
    if config.integrity.min_stake > 0 and not config.chain.deployment:
        raise ConfigError(
            f"integrity.min_stake = {config.integrity.min_stake} {where} needs chain.deployment: institutions stake "
            "on an existing deployment before the run (fresh contracts hold no stake), or set integrity.min_stake = 0"
        )


def check_node(config: RunConfig, names: list[str], fresh: bool = True, key_env: str | None = None) -> dict[str, str]:
    """What a run paying on a JSON-RPC node needs there, read and never sent: the institutions' own addresses, the
    signing key (from ``key_env``, else ``chain.key_env``), the expected chain id, gas, the stakes on the attached
    deployment and, ``fresh``, the tokens its funding needs. Returns the payout addresses."""
    ch = config.chain
    _stakes_need_a_deployment(config, "on a real node")
    if not ch.addresses:
        raise ConfigError(f"chain.backend is {ch.backend}: set chain.addresses to the institutions' own "
                          "addresses (derived simulation addresses have public keys anyone can spend from)")
    session = connect(ch.backend, key_env=key_env or ch.key_env, keystore=ch.keystore or None,
                      password_env=ch.password_env, expected_chain_id=ch.chain_id or None)
    if session.w3.eth.get_balance(session.address) == 0:
        raise ChainError(f"account {session.address} has no ETH on {ch.backend} to pay for gas; fund it first")
    addresses = institution_addresses(config, names)
    if ch.deployment:
        _check_deployment(session, config, addresses, fresh, own_stakes=True)
    return addresses


def build_server_app(config: RunConfig | None = None, options: RunOptions | None = None) -> ServerApp:
    """A ServerApp for ``config`` (or, under ``flwr run``, the run config Flower passes in)."""
    app = ServerApp()
    opts = options or RunOptions()

    def run_app(grid: Grid, context: Context) -> None:
        cfg = config or RunConfig.from_flat(context.run_config)
        if opts.run_dir is not None:
            require_whole(opts.run_dir, cfg)
        addresses = preflight(cfg, fresh=opts.run_dir is None or not (opts.run_dir / LEDGER_FILE).exists())
        run_dir = opts.run_dir or new_run_dir(cfg)
        if cfg.simulation.server_threads:
            torch.set_num_threads(cfg.simulation.server_threads)

        # Data: the server holds the validation set (for scoring) and the test set (for reporting).
        split, members = federated_split(cfg), roster(cfg)
        names = [m.name for m in members]
        test, validation = split.test, split.validation
        model = init_model(cfg.model, test.X.shape[1], test.num_classes, cfg.run.seed)
        # With a backdoor configured, every round also measures how often the trigger buys its target class
        # (the first backdoor institution's target, should several name different ones).
        target = next((m.behaviour.target_class for m in members if m.behaviour.name == "backdoor"), None)
        registered = registered_counts(cfg, members)
        recorder = RunRecorder(run_dir, cfg, names, registered, backdoor_target=target)
        made = checkpoint.made_with(cfg, split.digest())

        # Start or resume: the last checkpoint holds the global model, the strategy's state and the RNG.
        inner = build_flower_strategy(cfg, len(members), (validation.X, validation.y, validation.num_classes))
        arrays, first = ArrayRecord(model.state_dict()), 1
        random.seed(cfg.run.seed)  # Flower samples institutions with random.sample
        resumed = checkpoint.latest(run_dir)
        published = arrays
        if resumed is not None:
            inner, arrays, first = resumed.strategy, resumed.arrays, resumed.server_round + 1
            published = resumed.published
            random.setstate(resumed.random_state)
            recorder.resume_after(resumed.server_round)

        # Chain: journal and settle every round (embedded eth-tester unless the config names a node).
        paymaster = None
        if cfg.chain.enabled and addresses is not None:
            ledger = Ledger.open(run_dir / LEDGER_FILE, create=True)
            link = ChainLink.open(cfg.chain, run_dir, len(members))
            paymaster = Paymaster(cfg, ledger, link, addresses)
            ledger.set_meta(backend=cfg.chain.backend, chain_id=str(link.session.chain_id),
                            distributor=link.deployment.distributor, token=link.deployment.token)
            paymaster.check_its_turn()  # a resumed run that another run overtook on the deployment stops here
            simulated = link.session.is_eth_tester and not cfg.chain.addresses
            if cfg.integrity.min_stake > 0 and not simulated:
                paymaster.ensure_stakes(cfg.integrity.min_stake, None)  # a short stake stops the run unfunded
            paymaster.fund_run()
            if cfg.integrity.min_stake > 0 and simulated:  # simulated institutions stake before joining
                signers = dict(zip(names, institution_accounts(len(names))))
                paymaster.ensure_stakes(cfg.integrity.min_stake, signers)
            paymaster.flush()  # whatever an interrupted run left queued
        policy = SlashingPolicy.of(cfg.integrity)
        slashing = cfg.integrity.slash and cfg.integrity.min_stake > 0

        # Peer votes are weighed by each voter's stake on chain, where institutions stake.
        stakes = None
        if paymaster is not None and cfg.integrity.min_stake > 0 and cfg.scoring.validation == "peers":
            stakes = paymaster.voting_stakes
        strategy = ScoredStrategy(inner, copy.deepcopy(model), (validation.X, validation.y), cfg,
                                  on_round=recorder.scored, registered=registered, nodes=node_registry(cfg),
                                  stakes=stakes)
        if resumed is not None:
            strategy.restore_checks(resumed.checks)
        eval_model = copy.deepcopy(model)

        def evaluate_global(server_round: int, arrays: ArrayRecord, **cost: Any) -> RoundResult:
            eval_model.load_state_dict(arrays.to_torch_state_dict())
            loss, accuracy = evaluate(eval_model, test.X, test.y)
            success = None if target is None else attack_success_rate(eval_model, test.X, test.y, target)
            return recorder.evaluated(server_round, accuracy, loss, success, **cost)

        if first == 1:
            opts.on_round(evaluate_global(0, arrays), cfg.run.rounds, None)

        # Said once everything is set up, so that a run refused at its start says one line: the refusal.
        for weaker in weaker_options(cfg):
            money_log.warning("weaker than the default: %s", weaker)
        quorum = quorum_of(cfg, len(members))
        # A pilot under `flwr run` cannot be resumed: its next run starts anew and opens on the chain's latest root.
        then = (f"resumes with `fedlearn run --resume {run_dir}`" if cfg.data.dataset != FILES else
                f"its settled rounds stay paid; start the coordinator again for a new run (this one is {run_dir})")
        # Rounds: sample → local training → checks → aggregation → scoring → evaluation → settlement.
        last = cfg.run.rounds if opts.stop_after is None else min(cfg.run.rounds, opts.stop_after)
        for server_round in range(first, last + 1):
            if opts.stop is not None and opts.stop.is_set():
                raise RunInterrupted("interrupted")
            wait_for_quorum(grid, quorum, cfg.strategy.node_wait, then)
            started = time.perf_counter()
            messages = list(strategy.configure_train(server_round, arrays, ConfigRecord({"seed": cfg.run.seed}),
                                                     grid))
            replies = send_and_receive(grid, messages, cfg.strategy.round_timeout, opts.stop)
            aggregated, _ = strategy.aggregate_train(server_round, replies)
            # A round without a model (every update rejected, or the rule refused) was scored 0 throughout:
            # the global model stays and the round contributes nothing, so it pays nothing.
            arrays = aggregated if aggregated is not None else arrays
            # What the round publishes (evaluated, hashed on chain, saved): the last round's model has its
            # output layer refitted (integrity.refit_output_layer), skipped round or not; training goes on
            # from ``arrays``.
            published = strategy.published(server_round, arrays)
            result = evaluate_global(server_round, published, seconds=time.perf_counter() - started,
                                     bytes_down=mean_bytes(messages), bytes_up=mean_bytes(replies))
            if result.scores is not None and result.scores.skipped:
                money_log.warning("round %d skipped: %s; nothing paid, it contributes nothing",
                                  server_round, result.scores.skipped)
            payout = None
            if paymaster is not None and result.scores is not None:
                payout = paymaster.settle(result.scores, model_hash(checkpoint.numpy_arrays(published)))
                if slashing:
                    paymaster.slash(offenders(recorder, policy), policy)
            checkpoint.save(run_dir, server_round, published, inner, random.getstate(),
                            training=None if published is arrays else arrays, checks=strategy.check_state(),
                            made=made)
            opts.on_round(result, cfg.run.rounds, payout)

        if last < cfg.run.rounds:
            log.info("stopped after round %d of %d; resume with `fedlearn run --resume %s`",
                     last, cfg.run.rounds, run_dir)
            return
        tokens = None
        if paymaster is not None:
            if slashing:  # a run resumed after its last round: what it flagged and never sent goes now
                paymaster.slash(offenders(recorder, policy), policy)
            paymaster.drain()
            if cfg.chain.claim_at_end and paymaster.link.session.is_eth_tester and not cfg.chain.addresses:
                if paymaster.claims_open():
                    paymaster.claim(names)
                else:
                    money_log.warning("the last root waits out its challenge window; claims open after it "
                             "(`fedlearn chain status`), then `fedlearn claim RUN_DIR`")
            tokens = paymaster.token_summary()
        summary = recorder.finish(published, tokens, refit=strategy.refit)
        if opts.on_finish is not None:
            opts.on_finish(summary)
        if config is None:  # under `flwr run`: nobody else writes the report, or says where the run is
            from fedlearn.report import build_report

            log.info("run directory %s; report %s", run_dir, build_report(run_dir))

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            run_app(grid, context)
        except FedlearnError as exc:
            if config is not None:  # a caller (`fedlearn run`) says what went wrong itself, with its exit code
                raise
            raise ServerAppFailed(f"fedlearn: error: {exc}") from None

    return app
