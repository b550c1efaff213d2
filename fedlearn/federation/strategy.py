"""A strategy that wraps any Flower strategy and scores every institution's update every round."""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    Bulyan,
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    MultiKrum,
    Strategy,
)
from torch import nn

from fedlearn.config import RunConfig
from fedlearn.errors import ConfigError, ScoringError
from fedlearn.federation.coalitions import (
    long_lived_objects_frozen,
    models_follow_weight_shares,
    per_example_utility,
    round_utility,
)
from fedlearn.federation.fltrust import FLTrust, RootTrainer
from fedlearn.federation.free_riders import flatten, free_riders
from fedlearn.federation.peer_votes import PeerRound, peer_scores
from fedlearn.federation.replies import (
    ARRAYS_KEY,
    Rejection,
    apply_weighting,
    arrays_of,
    claimed_of,
    examples_of,
    institution_of,
    partition_replies,
)
from fedlearn.federation.step_lengths import local_steps, overlong
from fedlearn.federation.unit_growth import MIN_INPUTS, UnitGrowth
from fedlearn.federation.unit_growth import REASON as BACKDOOR_REASON
from fedlearn.learning.head import RefitCheck, RefitError, check_refit, refit_output_layer
from fedlearn.logs import log as money_log
from fedlearn.records.checkpoint import numpy_arrays
from fedlearn.records.fingerprint import model_hash
from fedlearn.scoring import CachedUtility, ScoreResult, banzhaf_estimator_for, score_round
from fedlearn.scoring.banzhaf_surrogate import check_budget
from fedlearn.scoring.round import RoundScores
from fedlearn.scoring.significance import RoundGain, round_gain
from fedlearn.scoring.trust import fltrust_arrays
from fedlearn.scoring.votes import combine_votes, select_voters

log = logging.getLogger("flwr")  # shown with Flower's own lines under `flwr run`


def _consensus(scored: RoundScoring, names: list[str]) -> dict[str, float]:
    """Each update's score before the validator reward its institution earned as a voter: the voters' consensus,
    scaled by 1 − validator share when positive. Its sign decides whether the votes let the update in."""
    rewards = {voter: float(ballot.get("reward", 0.0)) for voter, ballot in scored.ballots.items()}
    return {name: scored.scores.get(name, 0.0) - rewards.get(name, 0.0) for name in names}


def fewest_updates(config: RunConfig) -> int:
    """The fewest updates the configured rule aggregates at all: Bulyan's 4f + 3 (Flower's Bulyan skips the
    round below it; Krum and MultiKrum narrow their neighbourhoods instead); 1 for the others."""
    s = config.strategy
    return 4 * s.num_malicious + 3 if s.name == "bulyan" else 1


def quorum_of(config: RunConfig, members: int) -> int:
    """How many connected nodes a round needs: ``strategy.min_nodes``, or every participant when it is 0."""
    return min(config.strategy.min_nodes or members, members)


def build_flower_strategy(
    config: RunConfig,
    members: int | None = None,
    root_data: tuple[np.ndarray, np.ndarray, int] | None = None,
) -> Strategy:
    """The strategy named in ``strategy.name`` for ``members`` participants (default: the institutions);
    evaluation is server-side, so clients never evaluate. FLTrust trains on ``root_data`` (X, y, classes)."""
    s, n = config.strategy, members or config.data.institutions
    quorum = quorum_of(config, n)
    common: dict[str, Any] = dict(
        fraction_train=s.fraction_train,
        fraction_evaluate=0.0,
        min_train_nodes=max(1, int(quorum * s.fraction_train)),
        min_available_nodes=quorum,
    )
    if s.name in ("krum", "multikrum") and n <= 2 * s.num_malicious + 2:
        raise ConfigError(
            f"strategy.num_malicious = {s.num_malicious} is too large for {n} institutions "
            f"({s.name} needs more than 2f + 2 updates)"
        )
    if s.name == "multikrum" and s.multikrum_select > n - s.num_malicious:
        raise ConfigError(
            f"strategy.multikrum_select = {s.multikrum_select} is more than MultiKrum can keep from {n} institutions "
            f"with strategy.num_malicious = {s.num_malicious} (at most n - f = {n - s.num_malicious}, what 0 selects)"
        )
    if config.scoring.method == "banzhaf" and config.scoring.banzhaf_estimator == "surrogate":
        try:
            check_budget(n, config.scoring.banzhaf_samples)
        except ScoringError as exc:
            raise ConfigError(f"scoring.banzhaf_estimator = 'surrogate': {exc}") from None
    if s.name == "bulyan" and n < 4 * s.num_malicious + 3:
        raise ConfigError(
            f"strategy.num_malicious = {s.num_malicious} is too large for bulyan with {n} institutions "
            "(needs at least 4f + 3)"
        )
    builders: dict[str, Callable[[], Strategy]] = {
        "fedavg": lambda: FedAvg(**common),
        "fedprox": lambda: FedProx(**common, proximal_mu=config.train.proximal_mu),
        "fedadam": lambda: FedAdam(**common, eta=s.server_learning_rate, eta_l=config.train.learning_rate),
        "krum": lambda: Krum(**common, num_malicious_nodes=s.num_malicious),
        "multikrum": lambda: MultiKrum(
            **common,
            num_malicious_nodes=s.num_malicious,
            num_nodes_to_select=s.multikrum_select or max(1, n - s.num_malicious),
        ),
        "bulyan": lambda: Bulyan(**common, num_malicious_nodes=s.num_malicious),
        "fedtrimmedavg": lambda: FedTrimmedAvg(**common, beta=s.trimmed_beta),
        "fedmedian": lambda: FedMedian(**common),
        "fltrust": lambda: FLTrust(_root_trainer(config, root_data), **common),
    }
    if s.name not in builders:
        raise ConfigError(f"unknown strategy.name {s.name!r} (choose from {', '.join(builders)})")
    return builders[s.name]()


def _root_trainer(config: RunConfig, root_data: tuple[np.ndarray, np.ndarray, int] | None) -> RootTrainer:
    if root_data is None:
        raise ConfigError("strategy.name = 'fltrust' needs the server's root data (the validation split)")
    X, y, classes = root_data
    return RootTrainer(config.model, config.train, X, y, classes, config.run.seed)


MASKED_HARM = 0.01
"""How much an update must lower the utility of the others' aggregate (in utility units; the Brier utility spans
[-2, 0]) to be left out once the negatively scored ones are gone."""


@dataclass(frozen=True)
class RoundScoring:
    """One round's contribution scores, before they are recorded."""

    scores: dict[str, float]
    disagreeing: frozenset[str]
    evaluations: int
    truncated: bool
    ballots: dict[str, dict] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)
    estimator: str = ""


def first_layer_weight(model: nn.Module) -> str | None:
    """The state-dict name of the first linear layer's weight when a hidden layer follows it, else None (a model
    with one linear layer has no hidden unit for ``fedlearn.federation.unit_growth`` to read)."""
    linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    return f"{linear[0]}.weight" if len(linear) >= 2 else None


def refit_record(refitted: bool, why_not: str, check: RefitCheck | None) -> dict[str, Any]:
    """What the summary says of the published model's refit: whether it was made, why not, and what the
    cross-validated check saw (None: no check)."""
    return {"refitted": refitted, "why_not": why_not,
            "check": None if check is None else {"folds": check.folds, "rows": check.rows,
                                                 "accuracy_before": check.before, "accuracy_after": check.after}}


def graded_proposers(ballots: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """The proposers whose consensus rests on at least one counted vote, as :func:`combine_votes` counts them
    over the ballots that opened, weighed by the ``stake`` each ballot records when the round weighed votes by
    stake (a voter's vote on itself, a non-finite vote and a voter without stake count for nobody); it scores the
    rest 0."""
    opened = {voter: ballot for voter, ballot in ballots.items() if "broken" not in ballot}
    weighed = {voter: ballot["stake"] for voter, ballot in opened.items() if "stake" in ballot}
    stakes = weighed if len(weighed) == len(opened) else None
    if not opened or (stakes is not None and not any(stakes.values())):
        return set()
    support = combine_votes({voter: ballot.get("votes", {}) for voter, ballot in opened.items()},
                            stakes=stakes).support
    return {proposer for proposer, votes in support.items() if votes > 0}


class ScoredStrategy(Strategy):
    """Delegates sampling and aggregation to a Flower strategy; checks replies first and scores after.

    Replies that fail the checks in :mod:`fedlearn.federation.replies` never reach the wrapped strategy: they
    score 0 and are logged with the institution's name.
    """

    def __init__(
        self,
        inner: Strategy,
        model: nn.Module,
        validation: tuple[np.ndarray, np.ndarray],
        config: RunConfig,
        on_round: Callable[[RoundScores], None] | None = None,
        registered: Mapping[str, int] | None = None,
        nodes: Mapping[int, str] | None = None,
        stakes: Callable[[int], Mapping[str, int]] | None = None,
    ):
        """``registered``: each institution's example count as the coordinator knows it (the roster's partition
        sizes in simulation), the ceiling on the weight its replies may claim (``strategy.weighting``).
        ``nodes``: in a pilot, the institution each authenticated node was registered for; a reply is its
        node's institution's, whatever name it gives. ``stakes``: reads what each institution's votes weigh in a
        round (its stake on chain, wei); under peer validation the voters' votes are weighed by it (``None``:
        equally)."""
        self.nodes = dict(nodes) if nodes is not None else None
        self.stakes = stakes
        self.inner = inner
        self.weighting = config.strategy.weighting
        self.registered = dict(registered) if registered is not None else None
        self.model = model
        self.validation = validation
        self.scoring = config.scoring
        self.seed = config.run.seed
        self.voters_fraction = config.integrity.voters_fraction
        self.validator_share = config.integrity.validator_share
        self.free_rider_kappa = config.integrity.free_rider_kappa
        self.scaled_limit = config.integrity.scaled_update_limit
        # Backdoors planted together (fedlearn.federation.unit_growth): read from the first layer of a model with a
        # hidden one; the history is checkpointed with every round (check_state).
        self._growth = (UnitGrowth(config.integrity.backdoor_threshold)
                        if config.integrity.backdoor_threshold > 0 else None)
        self._first_layer = first_layer_weight(model)
        if self._growth is not None:
            inputs = None if self._first_layer is None else int(model.state_dict()[self._first_layer].shape[1])
            if inputs is None or inputs < MIN_INPUTS:
                # On by default: a model it cannot read is not a misconfiguration, so this is said, not warned.
                money_log.info("no backdoor check: %s", "the model has no hidden layer to read" if inputs is None else
                               f"the model reads {inputs} input features, fewer than the {MIN_INPUTS} it needs "
                               f"(on few features an honest class concentrates by itself)")
                self._growth = None
        self.exclude_harmful = config.integrity.exclude_harmful
        # Under peer validation a vote below the slashing bar is held against a stake only where the server's
        # split confirms the harm (_confirm_votes); None: nobody is slashed, nothing to confirm.
        self.slash_threshold = config.integrity.slash_threshold if config.integrity.slash else None
        self.fewest = fewest_updates(config)
        self.refit_l2 = config.integrity.refit_l2 if config.integrity.refit_output_layer else None
        self.refit_noise = config.integrity.refit_noise
        self.refit_folds = config.integrity.refit_check_folds
        self.refit_max_drop = config.integrity.refit_max_drop
        # What the last round's refit did (``published``), for the run's summary; None until then.
        self.refit: dict[str, Any] | None = None
        self.rounds = config.run.rounds
        self._globals: list[np.ndarray] = []  # the last three rounds' starting models, flat: past global steps
        self.train_spec, self.model_spec = config.train, config.model
        self.history: list[RoundScores] = []
        self.on_round = on_round
        self._start_arrays: ArrayRecord | None = None
        self._grid: Grid | None = None
        self._sent: list[Message] = []
        self._updates: list[dict[str, np.ndarray]] = []
        self._hashes: dict[str, str] = {}  # every scored update's hash: evidence, kept even when left out
        self._clipped: dict[str, str] = {}  # this round's boosted updates, clipped: institution → why
        self._unconfirmed: dict[str, str] = {}  # this round's votes below the slashing bar the server did not confirm

    def summary(self) -> None:
        log.info("scoring: %s on server validation (%s)", self.scoring.method, self.scoring.utility)
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._start_arrays, self._grid = arrays, grid
        self._globals = [*self._globals[-2:], flatten(numpy_arrays(arrays))]
        # Kept to name the node behind an error the SuperLink sends in place of a reply (it names none).
        self._sent = list(self.inner.configure_train(server_round, arrays, config, grid))
        return self._sent

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if self._start_arrays is None:
            raise RuntimeError("aggregate_train called before configure_train")
        self._unconfirmed = {}
        accepted, rejected, unanswered = partition_replies(list(replies), self._start_arrays, self.nodes, self._sent)
        for node, reason in unanswered:
            who = (self.nodes or {}).get(node, f"node {node}") if node is not None else "a node"
            # Missing, not rejected: it earns nothing for the round and is not slashed for it.
            money_log.warning("round %d: no reply from %s: %s", server_round, who, reason)
        accepted, unregistered = apply_weighting(accepted, self.weighting, self.registered)
        rejected += unregistered
        # Each update decoded once, here: robust rules pop arrays out of the replies they aggregate.
        self._updates = [numpy_arrays(arrays_of(m)) for m in accepted]
        # Hashed before the checks that set updates aside: a slash for a free ride or a planted backdoor rests on
        # the very update that was sent, as any other slash does.
        self._hashes = {**{r.institution: r.update_hash for r in rejected if r.update_hash},
                        **{institution_of(m): model_hash(u) for m, u in zip(accepted, self._updates)}}
        self._observe_growth(server_round, accepted)
        accepted, riders = self._set_aside_free_riders(accepted)
        accepted, planted = self._set_aside_backdoors(accepted)
        rejected += riders + planted
        for rejection in rejected:
            money_log.warning("round %d: update from %s set aside: %s", server_round, rejection.institution,
                              rejection.reason)
        clipped = self._clip_overlong(accepted)
        for name, reason in clipped.items():
            money_log.warning("round %d: update from %s clipped and not paid for the round: %s", server_round, name,
                              reason)
        started = time.perf_counter()
        if not accepted:
            self._record(server_round, {}, [], rejected, 0, started, skipped="every update was rejected")
            return None, None
        # One cache for scoring and the harmful-update check: the coalitions they share are evaluated once.
        utility = CachedUtility(round_utility(self.inner, server_round, accepted, self._start_arrays, self.model,
                                              self.validation, self.scoring.utility))
        scored = None if self.scoring.method == "trust" else self._scores(server_round, accepted, utility)
        if scored is not None and self.scoring.validation == "peers" and len(accepted) > 1:
            scored = self._confirm_votes(accepted, scored, utility)
            if not self.exclude_harmful:  # otherwise the reason is recorded with the update's exclusion
                for name, why in self._unconfirmed.items():
                    log.info("round %d: update from %s %s", server_round, name, why)
        excluded: dict[str, str] = {}
        if scored is not None and self.exclude_harmful:
            # A lone update is scored on the server's split even under peer validation (_scores): checked there too.
            if self.scoring.validation == "server" or len(accepted) == 1:
                accepted, excluded, scored = self._exclude_harmful(accepted, scored, utility)
            else:
                accepted, excluded, scored = self._exclude_voted_down(accepted, scored, utility)
            for name, reason in excluded.items():
                # Routine on non-IID data (an honest outlier often scores a little below 0): info, not a warning.
                log.info("round %d: update from %s left out of the aggregate: %s", server_round, name, reason)
            if not accepted:
                self._record(server_round, scored.scores, [], rejected, scored.evaluations, started,
                             scored.truncated, scored.disagreeing, skipped="every update lowered the utility",
                             excluded=excluded, ballots=scored.ballots, errors=scored.errors,
                             estimator=scored.estimator)
                return None, None
        with long_lived_objects_frozen():  # Bulyan collects garbage once per reply
            arrays, metrics = self.inner.aggregate_train(server_round, accepted)
        if arrays is None:
            # A model that does not exist cannot be paid for: score nobody (Bulyan below 4f + 3 updates). A left-out
            # update's negative score still stands: slashing reads it, as in any other round.
            names = [institution_of(m) for m in accepted]
            held = {name: min(scored.scores.get(name, 0.0), 0.0) for name in excluded} if scored is not None else {}
            self._record(server_round, {**{name: 0.0 for name in names}, **held}, accepted, rejected, 0, started,
                         skipped=f"{type(self.inner).__name__} aggregated no model from {len(accepted)} update(s)",
                         excluded=excluded, ballots=scored.ballots if scored is not None else None)
            return None, None
        if scored is None:  # FLTrust's trust weights exist only once it has aggregated
            names = [institution_of(m) for m in accepted]
            scored = RoundScoring(self._trust_scores(accepted, names, utility), frozenset(), 2, False)
        self._record(server_round, scored.scores, accepted, rejected, scored.evaluations, started, scored.truncated,
                     scored.disagreeing, self._round_gain(server_round, arrays), excluded=excluded,
                     ballots=scored.ballots, errors=scored.errors, estimator=scored.estimator)
        return arrays, metrics

    def published(self, server_round: int, arrays: ArrayRecord) -> ArrayRecord:
        """The model round ``server_round`` publishes: ``arrays`` (the round's global model, after scoring),
        except in the last round, where its output layer is refitted on the validation split
        (``integrity.refit_output_layer``, :mod:`fedlearn.learning.head`). Only the output layer's arrays are
        replaced, in their own dtype; a model the refit does not apply to is returned as it is, with a warning
        when the validation split is what stops it, or when cross-validation on it says the refit costs more
        accuracy than ``integrity.refit_max_drop`` (``integrity.refit_check_folds``)."""
        if server_round != self.rounds or self.refit_l2 is None:
            return arrays
        model = copy.deepcopy(self.model)
        model.load_state_dict(arrays.to_torch_state_dict())
        l2, noise, seed = self.refit_l2, self.refit_noise, self.seed
        check, refitted, why_not = None, None, ""
        try:
            check = (check_refit(model, *self.validation, l2=l2, noise=noise, seed=seed, folds=self.refit_folds)
                     if self.refit_folds else None)
            verdict = "" if check is None else (
                f"{check.folds}-fold cross-validation on the validation split gives the refitted model accuracy "
                f"{check.after:.4f} against {check.before:.4f} unrefitted")
            if check is not None and check.costs_more_than(self.refit_max_drop):
                why_not = f"{verdict}, more than integrity.refit_max_drop = {self.refit_max_drop:g} point(s) lower"
            else:
                if verdict:
                    money_log.info("round %d: refit checked: %s", server_round, verdict)
                refitted = refit_output_layer(model, *self.validation, l2=l2, noise=noise, seed=seed)
        except RefitError as exc:
            why_not = str(exc)
        if why_not:
            money_log.warning("round %d: the published model's output layer is not refitted: %s", server_round,
                              why_not)
        elif refitted is None:
            why_not = "the model has no hidden layer to read"
        self.refit = refit_record(refitted is not None, why_not, check)
        if refitted is None:
            return arrays
        money_log.info("round %d: the published model's output layer refitted on the server's validation split",
                       server_round)
        state = model.state_dict()
        return ArrayRecord({name: Array(state[name].numpy().astype(array.numpy().dtype) if name in refitted
                                        else array.numpy()) for name, array in arrays.items()})

    def _exclude_harmful(
        self, accepted: list[Message], scored: RoundScoring, utility: CachedUtility
    ) -> tuple[list[Message], dict[str, str], RoundScoring]:
        """(the updates that stay, institution → why it was left out, the scores as recorded).

        First, every update whose contribution score is negative (its whole interval, where it is estimated) is
        left out: the validation split says the round's model is better without it. Then, as harmful updates can
        hide one another (with two sign flippers in the set, removing a third changes little), the one whose
        removal raises the utility of what is left most goes, again and again, while that gain exceeds
        :data:`MASKED_HARM` (an honest update that merely moves less than the others costs the aggregate far
        less than that, and stays). An update left out keeps its
        score if that is negative, else it scores its (negative) marginal contribution to the set that stayed: its
        update is not in the model, so it is not paid for it, and slashing reads how much it hurt.
        ``self._updates`` keeps the arrays of those that stay.
        """
        names = [institution_of(m) for m in accepted]
        scores = dict(scored.scores)
        # An estimated score (Banzhaf beyond exact) counts as negative only when its whole 95 % interval is: in a
        # large federation many honest contributions are small, and the estimate's noise alone puts half below 0.
        # GTG's interval (Student's t over a few permutation blocks) is recorded, not read here: it is wide, and
        # the GTG configuration's integrity figures are measured with its point estimates.
        margin = scored.errors if self.scoring.method == "banzhaf" else {}
        kept = {i for i, name in enumerate(names) if scores.get(name, 0.0) + margin.get(name, 0.0) >= 0}
        # A robust rule that aggregates no fewer than `fewest` updates keeps that many, the least harmful ones:
        # resisting the rest is its job, and below its bound it would aggregate nothing at all.
        for i in sorted(set(range(len(names))) - kept, key=lambda i: (-scores.get(names[i], 0.0), names[i])):
            if self.fewest <= 1 or len(kept) >= self.fewest:  # a rule without a floor may keep none
                break
            kept.add(i)
        reasons = {names[i]: f"contribution {scores[names[i]]:+.4f} lowers the utility"
                   for i in range(len(names)) if i not in kept}
        before = utility.evaluations
        while len(kept) > max(1, self.fewest):
            whole = utility(frozenset(kept))
            order = sorted(kept)
            marginal = {i: whole - u for i, u in zip(order, utility.many([frozenset(kept - {i}) for i in order]))}
            worst = min(marginal, key=lambda i: (marginal[i], names[i]))
            if marginal[worst] >= -MASKED_HARM:
                break
            kept.discard(worst)
            scores[names[worst]] = min(scores[names[worst]], marginal[worst])
            reasons[names[worst]] = (f"its update lowers the utility of the others' aggregate by "
                                     f"{-marginal[worst]:.4f}")
        recorded = dataclasses.replace(scored, scores=scores,
                                       evaluations=scored.evaluations + utility.evaluations - before)
        return self._keep(accepted, kept), reasons, recorded

    def _exclude_voted_down(
        self, accepted: list[Message], scored: RoundScoring, utility: CachedUtility
    ) -> tuple[list[Message], dict[str, str], RoundScoring]:
        """Peer validation's harmful-update check: (the updates that stay, institution → why it was left out, the
        scores as recorded).

        An update whose consensus score is negative is left out: at least half of its voters' stake found the
        round's model better on their own data without it, and a colluding minority of voters can push no honest
        proposer below the honest votes' range (:mod:`fedlearn.scoring.votes`). The sign is read before the
        validator reward an institution earned as a voter, which would otherwise buy a harmful update its way in:
        the recorded score minus that reward is the consensus itself when negative, and (1 − validator share) ×
        the consensus when positive (a disagreeing voter's own score is capped at 0 and stays in). There is no
        second, masking pass as on the server's split: it needs the utility of any subset, and votes give each
        update's against all the others only. An update no voter graded (a lone voter's own: nobody grades
        itself; or one whose voters sent no ballot, a broken one or no counted vote on it) is checked on the
        server's split instead, as the masking pass there checks: left out, worst first, while the others'
        aggregate is better without it by more than :data:`MASKED_HARM`, and charged that marginal (the model
        evaluations that takes are counted with the voters'). Scores otherwise stand as recorded: the negative
        consensus, plus any validator reward the institution earned that round as a voter. ``self._updates``
        keeps the arrays of those that stay.
        """
        names = [institution_of(m) for m in accepted]
        consensus = _consensus(scored, names)
        kept = {i for i, name in enumerate(names) if consensus[name] >= 0}
        reasons = {names[i]: f"its voters' consensus {consensus[names[i]]:+.4f} says it lowers the utility"
                   for i in range(len(names)) if i not in kept}
        graded = graded_proposers(scored.ballots)
        scores = dict(scored.scores)
        before = utility.evaluations
        for name, why in self._unconfirmed.items():  # voted below the bar means voted below 0: left out
            reasons[name] += f"; {why}"
        # Worst first, as the masking pass on the server's split goes: which one of several ungraded updates is
        # harmful must not depend on the order they came in.
        while ungraded := sorted(i for i in kept if names[i] not in graded):
            whole = utility(frozenset(kept))
            marginal = {i: whole - u for i, u in zip(ungraded, utility.many([frozenset(kept - {i})
                                                                              for i in ungraded]))}
            worst = min(marginal, key=lambda i: (marginal[i], names[i]))
            if marginal[worst] >= -MASKED_HARM:  # the masking pass's bar: an honest update that moves less stays
                break
            kept.discard(worst)
            scores[names[worst]] += marginal[worst]
            reasons[names[worst]] = (f"no voter graded it, and on the server's validation split it lowers the "
                                     f"utility of the others' aggregate by {-marginal[worst]:.4f}")
        recorded = dataclasses.replace(scored, scores=scores,
                                       evaluations=scored.evaluations + utility.evaluations - before)
        return self._keep(accepted, kept), reasons, recorded

    def _confirm_votes(self, accepted: list[Message], scored: RoundScoring, utility: CachedUtility) -> RoundScoring:
        """Under peer validation, a vote is held against a stake only where the server's split confirms the harm.

        Sets ``self._unconfirmed``: institution → why its round is not held against its stake. Its voters scored
        its update below the slashing bar (−``integrity.slash_threshold``, on the score slashing reads), but on the
        server's validation split adding it to the updates the votes let in lowers their aggregate's utility by
        no more than that bar (it is still left out and unpaid: pay follows the votes). Votes rest on a few dozen
        rows each, from data unlike the proposer's: in the integrity benchmark they voted the largest honest
        institution below the bar round after round and slashed it. Measured against the updates the votes let
        in, harmful updates left out by their votes cannot hide one another; under a robust rule that resists an
        outlier the server sees no harm done, and votes alone no longer slash it. Returns ``scored`` with the
        evaluations this took (one per suspect, one for the set let in)."""
        if self.slash_threshold is None:
            return scored
        names = [institution_of(m) for m in accepted]
        graded = graded_proposers(scored.ballots)
        consensus = _consensus(scored, names)
        let_in = frozenset(i for i, name in enumerate(names) if consensus[name] >= 0)  # as _exclude_voted_down keeps
        suspects = [i for i, name in enumerate(names)
                    if name in graded and scored.scores.get(name, 0.0) < -self.slash_threshold]
        if not suspects:
            return scored
        before = utility.evaluations
        base = utility(let_in)
        change = {i: u - base for i, u in zip(suspects, utility.many([let_in | {i} for i in suspects]))}
        self._unconfirmed = {
            names[i]: (f"not held against its stake: below the slashing bar by its votes, but on the server's "
                       f"validation split it changes the aggregate of the updates its round's votes let in by "
                       f"{change[i]:+.4f}") for i in suspects if change[i] >= -self.slash_threshold}
        return dataclasses.replace(scored, evaluations=scored.evaluations + utility.evaluations - before)

    def _keep(self, accepted: list[Message], kept: set[int]) -> list[Message]:
        """The replies at the ``kept`` indices; ``self._updates``, aligned with them, keeps the same ones."""
        self._updates = [u for i, u in enumerate(self._updates) if i in kept]
        return [m for i, m in enumerate(accepted) if i in kept]

    def check_state(self) -> dict[str, Any]:
        """What the update checks remember across rounds (the free-rider check's past global models, the backdoor
        check's sums), saved with each round's checkpoint."""
        return {"globals": list(self._globals), "growth": copy.deepcopy(self._growth)}

    def restore_checks(self, state: Mapping[str, Any] | None) -> None:
        """Resume the checks from a checkpoint's :meth:`check_state`, so that a resumed run, and a round replayed
        after a crash, checks as the uninterrupted run did (a checkpoint from before this was kept: none)."""
        if not state:
            return
        self._globals = list(state.get("globals", []))
        if self._growth is not None and state.get("growth") is not None:
            self._growth = copy.deepcopy(state["growth"])  # its threshold too: a resumed run keeps its config

    def _observe_growth(self, server_round: int, accepted: list[Message]) -> None:
        """The backdoor check (``fedlearn.federation.unit_growth``) reads every update of the round, whatever the
        later checks make of it."""
        if self._growth is None or self._first_layer is None or self._start_arrays is None:
            return
        start = self._start_arrays[self._first_layer].numpy()
        self._growth.observe(server_round, {institution_of(m): update[self._first_layer] - start
                                            for m, update in zip(accepted, self._updates)})

    def _set_aside_backdoors(self, accepted: list[Message]) -> tuple[list[Message], list[Rejection]]:
        """Updates from institutions that grow a hidden unit together with another, round after round, from a few
        inputs are set aside; ``self._updates`` keeps the decoded arrays of those that stay. After the free-rider
        check, so that its verdict, which is evidence against a stake, stands where both apply."""
        if self._growth is None:  # off, or a model it cannot read (__init__)
            return accepted, []
        names = [institution_of(m) for m in accepted]
        flagged = self._growth.flagged(names)
        kept = self._keep(accepted, {i for i, name in enumerate(names) if name not in flagged})
        # Not evidence against a stake: the check reads how weights grow, not harm done, and an honest pair sits
        # closer to the threshold in some federations than slashing can afford (unit_growth's measurements).
        return kept, [Rejection(name, f"{BACKDOOR_REASON}, "
                                      f"in one direction every round from a few inputs, as planting a backdoor "
                                      f"does (score {score:.2f} > {self._growth.threshold:g})", evidence=False)
                      for name, score in sorted(flagged.items())]

    def _clip_overlong(self, accepted: list[Message]) -> dict[str, str]:
        """Updates that move the model far further per local step than the round's reference (boosted:
        :mod:`fedlearn.federation.step_lengths`) are clipped to the limit, in the replies themselves (so that the
        scoring, the harmful-update check and the aggregation all see the clipped update) and in
        ``self._updates``; institution → why. Steps come from the registered counts where the coordinator has
        them, else from the count the reply claimed (before weighting replaced it: "equal" makes it 1), which
        a booster can inflate: without registered counts the check is only as good as the claims."""
        self._clipped = {}
        if self.scaled_limit <= 0 or self._start_arrays is None or not accepted:
            return {}
        start = numpy_arrays(self._start_arrays)
        names = [institution_of(m) for m in accepted]
        counts = [(self.registered or {}).get(name) or claimed_of(m) for name, m in zip(names, accepted)]
        steps = [local_steps(n, self.train_spec.batch_size, self.train_spec.local_epochs) for n in counts]
        lengths = [float(np.linalg.norm(flatten({k: u[k] - start[k] for k in start}))) for u in self._updates]
        for i, ratio in sorted(overlong(lengths, steps, self.scaled_limit).items()):
            factor = self.scaled_limit / ratio
            clipped = {k: (start[k] + factor * (self._updates[i][k].astype(np.float64) - start[k]))
                       .astype(self._updates[i][k].dtype) for k in start}
            self._updates[i] = clipped
            accepted[i].content.array_records[ARRAYS_KEY] = ArrayRecord(
                {k: Array(v) for k, v in clipped.items()})
            self._clipped[names[i]] = (f"update moves the model {ratio:.1f}x as far per local step as the round's "
                                       f"reference (limit {self.scaled_limit:g}): scaled up, as boosting does")
        return dict(self._clipped)

    def _unpaid_clipped(self, scores: Mapping[str, float], ballots: Mapping[str, Mapping[str, Any]]
                        ) -> dict[str, float]:
        """``scores`` with each clipped update's share capped at 0: not paid for the round, while a negative
        score stands for slashing. Under peer validation a validator reward the institution earned as a voter
        stays its own."""
        capped = dict(scores)
        for name in self._clipped:
            if name in capped:
                reward = float((ballots.get(name) or {}).get("reward", 0.0))
                capped[name] = min(capped[name] - reward, 0.0) + reward
        return capped

    def _set_aside_free_riders(self, accepted: list[Message]) -> tuple[list[Message], list[Rejection]]:
        """Updates with no training signal of their own (``fedlearn.federation.free_riders``) are set aside;
        ``self._updates`` keeps the decoded arrays of those that stay."""
        if self.free_rider_kappa <= 0 or not self._globals:
            return accepted, []
        start = self._globals[-1]
        steps = [b - a for a, b in zip(self._globals, self._globals[1:])]
        flagged = free_riders([flatten(u) - start for u in self._updates], steps, self.free_rider_kappa)
        kept = self._keep(accepted, {i for i in range(len(accepted)) if i not in flagged})
        return kept, [Rejection(institution_of(accepted[i]), verdict.reason, verdict.conclusive)
                      for i, verdict in sorted(flagged.items())]

    @torch.no_grad()
    def _round_gain(self, server_round: int, arrays: ArrayRecord) -> tuple[float, RoundGain]:
        """(the start model's utility, the round's gain): the aggregate against the start, example by example."""
        assert self._start_arrays is not None
        X = torch.as_tensor(self.validation[0], dtype=torch.float32)
        y = torch.as_tensor(self.validation[1], dtype=torch.long)
        per_example = []
        for record in (self._start_arrays, arrays):
            self.model.load_state_dict(record.to_torch_state_dict())
            self.model.eval()
            per_example.append(per_example_utility(self.model(X), y, self.scoring.utility).numpy())
        before, after = per_example
        gain = round_gain(before, after, test=self.scoring.significance, confidence=self.scoring.confidence,
                          samples=self.scoring.bootstrap_samples, seed=(self.seed, server_round),
                          min_gain=self.scoring.min_gain)
        return float(before.mean()), gain

    def _scores(
        self, server_round: int, accepted: list[Message], utility: CachedUtility
    ) -> RoundScoring:
        """Every accepted update's contribution: peers' votes, or the coalition game on the server's split."""
        names = [institution_of(m) for m in accepted]
        if self.scoring.validation == "peers" and len(accepted) > 1:
            ballot = self._peer_scores(server_round, accepted, names)
            return RoundScoring(ballot.scores, ballot.disagreeing, ballot.evaluations, False, ballot.ballots())
        estimator = ""
        if self.scoring.method == "banzhaf" and self.scoring.validation == "server":
            estimator = banzhaf_estimator_for(self.scoring.banzhaf_estimator, len(accepted),
                                              self.scoring.banzhaf_samples,
                                              weighted_mean=models_follow_weight_shares(self.inner))
        before = utility.evaluations

        def score(banzhaf_estimator: str) -> ScoreResult:
            return score_round(
                self.scoring.method,
                len(accepted),
                utility,
                rng=np.random.default_rng([self.seed, server_round]),
                within_round_epsilon=self.scoring.gtg_within_round_epsilon,
                between_round_epsilon=self.scoring.gtg_between_round_epsilon,
                convergence_tolerance=self.scoring.gtg_convergence_tolerance,
                max_permutations=self.scoring.gtg_max_permutations or None,
                banzhaf_samples=self.scoring.banzhaf_samples,
                banzhaf_tolerance=self.scoring.banzhaf_tolerance,
                banzhaf_estimator=banzhaf_estimator,
                weights=np.array([examples_of(m) for m in accepted], dtype=np.float64),
            )

        try:
            result = score("surrogate" if estimator == "surrogate" else "regression")
        except (ScoringError, np.linalg.LinAlgError) as exc:  # the GP's solve, should its kernel go singular
            if estimator != "surrogate" or self.scoring.banzhaf_estimator != "auto":
                raise
            # "auto" picks what works: a round the surrogate cannot fit is scored by the regression, which reuses
            # every coalition already evaluated.
            money_log.warning("round %d: the surrogate Banzhaf estimator failed (%s); scored by the regression",
                              server_round, exc)
            estimator, result = "regression", score("regression")
        errors = {} if result.errors is None else {name: float(e) for name, e in zip(names, result.errors)}
        return RoundScoring({name: float(v) for name, v in zip(names, result.values)}, frozenset(),
                            utility.evaluations - before, result.truncated, errors=errors, estimator=estimator)

    def _record(
        self,
        server_round: int,
        scores: dict[str, float],
        accepted: list[Message],
        rejected: list[Rejection],
        evaluations: int,
        started: float,
        truncated: bool = False,
        disagreeing: frozenset[str] = frozenset(),
        gain: tuple[float, RoundGain] = (0.0, RoundGain(0.0, 0.0, 0.0, False)),
        skipped: str = "",
        excluded: Mapping[str, str] | None = None,
        ballots: Mapping[str, dict] | None = None,
        errors: Mapping[str, float] | None = None,
        estimator: str = "",
    ) -> None:
        """``gain``: (the start model's utility, the round's gain); a skipped round has none."""
        names = [institution_of(m) for m in accepted]
        start_utility, measured = gain
        scores = {**self._unpaid_clipped(scores, ballots or {}), **{r.institution: 0.0 for r in rejected}}
        record = RoundScores(
            server_round=server_round,
            scores=scores,
            num_examples={name: examples_of(m) for name, m in zip(names, accepted)},
            rejected={r.institution: r.reason for r in rejected},
            inconclusive=sorted({r.institution for r in rejected if not r.evidence} | set(self._unconfirmed)),
            evaluations=evaluations,
            # Scoring time includes building the utility, not the real aggregation in between.
            scoring_seconds=time.perf_counter() - started,
            truncated=truncated,
            method="peers" if self.scoring.validation == "peers" else self.scoring.method,
            update_hashes={name: h for name, h in self._hashes.items() if name in scores},
            disagreeing_voters=sorted(disagreeing),
            skipped=skipped,
            utility=self.scoring.utility,
            start_utility=start_utility,
            gain=measured.gain,
            gain_low=measured.low,
            gain_high=measured.high,
            significant=measured.significant,
            excluded=dict(excluded or {}),
            clipped={name: why for name, why in self._clipped.items() if name in scores},
            ballots=dict(ballots or {}),
            score_errors=dict(errors or {}),
            estimator=estimator,
        )
        self.history.append(record)
        if self.on_round is not None:
            self.on_round(record)

    def _peer_scores(
        self, server_round: int, accepted: list[Message], names: list[str]
    ) -> PeerRound:
        """Stake-weighted consensus of the voters' committed, then revealed votes (fedlearn.scoring.votes); a voter
        that disagrees, or whose ballot is broken, earns nothing for its own update this round; voters share
        ``integrity.validator_share`` of the round's positive scores by agreement."""
        assert self._grid is not None and self._start_arrays is not None
        voters = select_voters(names, self.voters_fraction, self.seed, server_round)
        candidates = [(name, m.metadata.src_node_id, ArrayRecord({k: Array(v) for k, v in update.items()}),
                       examples_of(m))
                      for name, m, update in zip(names, accepted, self._updates)]
        stakes = self._voter_stakes(server_round, voters)
        if stakes is not None and not any(stakes.values()):
            # Votes without stake count for nobody: no consensus, so every update is checked on the server's split.
            money_log.warning("round %d: no voter holds stake (%s); no consensus this round", server_round,
                              ", ".join(voters))
            return PeerRound(scores=dict.fromkeys(names, 0.0), disagreeing=frozenset(), evaluations=0,
                             commitments={}, voter_weights={}, stakes=stakes)
        return peer_scores(self._grid, server_round, self._start_arrays, candidates, voters, stakes=stakes,
                           validator_share=self.validator_share, unpaid=frozenset(self._clipped))

    def _voter_stakes(self, server_round: int, voters: list[str]) -> dict[str, int] | None:
        """What each voter's votes weigh this round, as the stake reader gives it (a slash proposed against a voter
        lowers its say from the next ballot on); ``None`` (equal weights) without a reader."""
        if self.stakes is None:
            return None
        held = self.stakes(server_round)
        return {voter: int(held.get(voter, 0)) for voter in voters}

    def _trust_scores(
        self, accepted: list[Message], names: list[str], utility: Callable[[frozenset[int]], float]
    ) -> dict[str, float]:
        """FLTrust trust weights times the round's gain U(N) − U(∅): the gain split by trust."""
        assert self._start_arrays is not None
        start = {k: v.numpy() for k, v in self._start_arrays.items()}
        if isinstance(self.inner, FLTrust) and self.inner.last_trust is not None:
            trust = self.inner.last_trust
        else:
            X, y = self.validation
            reference = RootTrainer(self.model_spec, self.train_spec, X, y, int(y.max()) + 1, self.seed)(start)
            trust, _ = fltrust_arrays(start, reference, self._updates)
        gain = utility(frozenset(range(len(accepted)))) - utility(frozenset())
        return {name: float(w) * gain for name, w in zip(names, trust.weights)}

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)
