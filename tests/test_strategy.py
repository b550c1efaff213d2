"""ScoredStrategy: checks replies, lets the wrapped Flower strategy aggregate, scores every institution."""

from __future__ import annotations

import copy
import dataclasses
import gc
import logging
import pickle
import re
import weakref

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message
from flwr.serverapp.strategy import FedAdam

from fedlearn.config import STRATEGY_NAMES, RunConfig
from fedlearn.errors import ConfigError, ScoringError
from fedlearn.federation.coalitions import long_lived_objects_frozen, models_follow_weight_shares, round_utility
from fedlearn.federation.peer_votes import PeerRound
from fedlearn.federation.replies import arrays_of, examples_of, institution_of
from fedlearn.federation.strategy import (
    MASKED_HARM,
    RoundScoring,
    ScoredStrategy,
    build_flower_strategy,
    graded_proposers,
)
from fedlearn.federation.unit_growth import MIN_INPUTS
from fedlearn.learning.head import refit_output_layer
from fedlearn.learning.models import init_model
from fedlearn.payout.slashing import SlashingPolicy, run_offences
from fedlearn.records.fingerprint import model_hash
from fedlearn.scoring import CachedUtility, banzhaf, banzhaf_estimator_for, banzhaf_surrogate
from fedlearn.scoring import methods as scoring_methods
from fedlearn.scoring.banzhaf_surrogate import check_budget
from tests.conftest import ReplyFactory
from tests.trained import gaussian_classes_mlp

FEATURES, CLASSES = 4, 3


class LoopbackGrid:
    """Just enough of a Grid for ``configure_train``: a fixed set of connected nodes."""

    def __init__(self, n: int) -> None:
        self.nodes = list(range(1, n + 1))

    def get_node_ids(self) -> list[int]:
        return self.nodes


def make_config(strategy: str = "fedavg", method: str = "shapley", n: int = 5, **strategy_keys: object) -> RunConfig:
    return RunConfig.load(overrides=[
        f"strategy.name='{strategy}'", f"scoring.method='{method}'", f"data.institutions={n}",
        # The updates here are random moves of the global model: exactly what the free-rider check sets aside,
        # so it is off, as is leaving harmful updates out (most random moves are): these tests are about
        # aggregation and scoring (tests/test_free_riders.py and the test below cover both checks).
        "model.name='logreg'", "integrity.free_rider_kappa=0", "integrity.exclude_harmful=false",
        *[f"strategy.{k}={v}" for k, v in strategy_keys.items()],
    ])


def validation_set(seed: int = 0, features: int = FEATURES) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(120, features)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 1).astype(np.int64)
    return X, y


def institution_updates(make_reply: ReplyFactory, start: ArrayRecord, n: int, seed: int = 1) -> list[Message]:
    """n replies: the global model moved by a different random step for each institution."""
    rng = np.random.default_rng(seed)
    base = {k: v.numpy() for k, v in start.items()}
    return [
        make_reply({k: (v + rng.normal(scale=0.5, size=v.shape)).astype(np.float32) for k, v in base.items()},
                   examples=int(rng.integers(10, 100)), institution=f"hospital-{i + 1:02d}", node_id=i + 1)
        for i in range(n)
    ]


# What the coordinator registered for each institution: above every claim these tests make, so claims stand.
REGISTERED = {f"hospital-{i:02d}": 1_000 for i in range(1, 21)}


def scored(config: RunConfig, registered: dict[str, int] | None = None,
           features: int = FEATURES) -> tuple[ScoredStrategy, ArrayRecord]:
    model = init_model(config.model, features, CLASSES, seed=0)
    X, y = validation_set(features=features)
    strategy = ScoredStrategy(build_flower_strategy(config, root_data=(X, y, CLASSES)), copy.deepcopy(model),
                              (X, y), config, registered=REGISTERED if registered is None else registered)
    start = ArrayRecord(model.state_dict())
    list(strategy.configure_train(1, start, ConfigRecord(), LoopbackGrid(config.data.institutions)))
    return strategy, start


def test_aggregate_equals_the_wrapped_strategy_and_every_institution_is_scored(make_reply: ReplyFactory) -> None:
    # Prepare
    config = make_config()
    strategy, start = scored(config)
    replies = institution_updates(make_reply, start, 5)
    plain = build_flower_strategy(config)
    # Execute
    arrays, _ = strategy.aggregate_train(1, replies)
    expected, _ = plain.aggregate_train(1, replies)
    # Assert
    assert arrays is not None and expected is not None
    for key in expected.keys():
        np.testing.assert_allclose(arrays[key].numpy(), expected[key].numpy(), rtol=1e-6)
    record = strategy.history[-1]
    assert sorted(record.scores) == [f"hospital-{i:02d}" for i in range(1, 6)]
    assert record.evaluations == 2**5  # exact Shapley evaluates every subset once


def test_shapley_scores_sum_to_the_rounds_gain(make_reply: ReplyFactory) -> None:
    config = make_config()
    strategy, start = scored(config)
    replies = institution_updates(make_reply, start, 5)
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None
    model = init_model(config.model, FEATURES, CLASSES, seed=0)
    X, y = validation_set()

    def neg_brier(record: ArrayRecord) -> float:  # the default utility, computed here from its definition
        model.load_state_dict(record.to_torch_state_dict())
        with torch.no_grad():
            probs = torch.softmax(model(torch.as_tensor(X)), dim=1).double().numpy()
        return float(-((probs - np.eye(CLASSES)[y]) ** 2).sum(axis=1).mean())

    assert config.scoring.utility == "brier"
    gain = neg_brier(arrays) - neg_brier(start)
    record = strategy.history[-1]
    assert sum(record.scores.values()) == pytest.approx(gain, abs=1e-6)
    assert record.gain == pytest.approx(gain, abs=1e-6) and record.gain_low <= record.gain <= record.gain_high


def test_a_bad_reply_scores_zero_and_the_round_goes_on(make_reply: ReplyFactory) -> None:
    config = make_config(method="loo")
    strategy, start = scored(config)
    replies = institution_updates(make_reply, start, 4)
    poisoned = {k: np.full(v.numpy().shape, np.nan, np.float32) for k, v in start.items()}
    replies.append(make_reply(poisoned, examples=50, institution="hospital-05", node_id=5))

    arrays, _ = strategy.aggregate_train(1, replies)
    expected, _ = build_flower_strategy(config).aggregate_train(1, replies[:4])

    assert arrays is not None and expected is not None
    assert np.isfinite(arrays["weight"].numpy()).all()
    np.testing.assert_allclose(arrays["weight"].numpy(), expected["weight"].numpy(), rtol=1e-6)
    record = strategy.history[-1]
    assert record.scores["hospital-05"] == 0.0
    assert "NaN" in record.rejected["hospital-05"]
    assert "hospital-05" not in record.num_examples


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_every_named_strategy_aggregates_and_scores(make_reply: ReplyFactory, name: str) -> None:
    config = make_config(strategy=name, method="gtg", n=7, num_malicious=1)
    strategy, start = scored(config)
    arrays, _ = strategy.aggregate_train(1, institution_updates(make_reply, start, 7))
    assert arrays is not None
    record = strategy.history[-1]
    assert len(record.scores) == 7 and all(np.isfinite(v) for v in record.scores.values())


def test_scoring_does_not_move_a_server_optimisers_state(make_reply: ReplyFactory) -> None:
    config = make_config(strategy="fedadam")
    strategy, start = scored(config)
    replies = institution_updates(make_reply, start, 5)
    plain = build_flower_strategy(config)
    assert isinstance(plain, FedAdam)
    list(plain.configure_train(1, start, ConfigRecord(), LoopbackGrid(5)))

    for server_round in (1, 2):  # the second round exposes any state the first round's scoring moved
        arrays, _ = strategy.aggregate_train(server_round, replies)
        expected, _ = plain.aggregate_train(server_round, replies)
        assert arrays is not None and expected is not None
        np.testing.assert_allclose(arrays["weight"].numpy(), expected["weight"].numpy(), rtol=1e-6)


@pytest.mark.parametrize(
    ("name", "n", "f", "message"),
    [("bulyan", 6, 1, "needs at least 4f + 3"), ("bulyan", 5, 3, "needs at least 4f + 3"),
     ("krum", 4, 1, "more than 2f + 2")],
)
def test_robust_strategies_refuse_too_many_malicious(name: str, n: int, f: int, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_flower_strategy(make_config(strategy=name, n=n, num_malicious=f))


def test_fast_mean_utility_equals_flowers_fedavg_on_every_subset(make_reply: ReplyFactory) -> None:
    import itertools

    from fedlearn.federation.coalitions import MeanUtility, ModelUtility, SubsetAggregator

    config = make_config()
    model = init_model(config.model, FEATURES, CLASSES, seed=0)
    start = ArrayRecord(model.state_dict())
    replies = institution_updates(make_reply, start, 5)
    subsets = [frozenset(c) for size in range(6) for c in itertools.combinations(range(5), size)]
    for metric in ("accuracy", "neg_loss", "brier"):
        fast = MeanUtility(copy.deepcopy(model), replies, start, *validation_set(), metric=metric)
        flower = ModelUtility(copy.deepcopy(model), SubsetAggregator(build_flower_strategy(config), 1, replies, start),
                              *validation_set(), metric=metric)
        expected = [flower(subset) for subset in subsets]
        assert [fast(subset) for subset in subsets] == pytest.approx(expected, abs=1e-6)
        # All subset models at once (vmap over stacked weights), in a shuffled order with repeats.
        order = np.random.default_rng(0).permutation(len(subsets) * 2) % len(subsets)
        assert fast.many([subsets[i] for i in order]) == pytest.approx([expected[i] for i in order], abs=1e-6)
    # Any mix of the updates with the start model: half of update 0's step, update 1's doubled, and the mean of
    # updates 2 and 3 beside a zero step of update 4's weight — each against the model built by hand.
    examples = np.array([examples_of(m) for m in replies], dtype=np.float64)
    mixes = np.zeros((3, 5))
    mixes[0, 0], mixes[1, 1] = 0.5, 2.0
    mixes[2, [2, 3]] = examples[[2, 3]] / examples[[2, 3, 4]].sum()
    start_state = {k: v.detach().numpy().astype(np.float64) for k, v in model.state_dict().items()}
    update_states = [{k: v.numpy().astype(np.float64) for k, v in arrays_of(m).to_torch_state_dict().items()}
                     for m in replies]
    for row, value in zip(mixes, fast.mixes(torch.as_tensor(mixes))):
        by_hand = copy.deepcopy(model)
        by_hand.load_state_dict({k: torch.as_tensor(start_state[k] + sum(c * (u[k] - start_state[k])
                                                                         for c, u in zip(row, update_states)),
                                                    dtype=torch.float32) for k in start_state})
        record = ArrayRecord(by_hand.state_dict())
        assert value == pytest.approx(ModelUtility(by_hand, lambda subset, record=record: record,
                                                   *validation_set(), metric="brier")(frozenset()), abs=1e-6)


@pytest.mark.parametrize("metric", ["accuracy", "neg_loss", "brier", "margin"])
def test_per_example_utility_of_many_models_at_once_equals_one_model_at_a_time(metric: str) -> None:
    from fedlearn.federation.coalitions import per_example_utility

    generator = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(6, 40, CLASSES, generator=generator)
    y = torch.randint(0, CLASSES, (40,), generator=generator)
    stacked = per_example_utility(logits, y, metric)
    assert stacked.shape == (6, 40)
    for one, row in zip(logits, stacked):
        torch.testing.assert_close(row, per_example_utility(one, y, metric), rtol=0, atol=1e-12)
    # Each utility against its definition, computed another way.
    probs = torch.softmax(logits.double(), dim=-1)
    expected = {
        "accuracy": (probs.argmax(dim=-1) == y).double(),
        "neg_loss": torch.stack([-torch.nn.functional.cross_entropy(one.double(), y, reduction="none")
                                 for one in logits]),
        "brier": -((probs - torch.eye(CLASSES, dtype=torch.float64)[y]) ** 2).sum(dim=-1),
        # p(correct) / (p(correct) + p(strongest rival)): softmax's normaliser cancels in the ratio.
        "margin": torch.stack([torch.stack([p[label] / (p[label] + max(q for c, q in enumerate(p) if c != label))
                                            for p, label in zip(model, y.tolist())]) for model in probs]),
    }[metric]
    torch.testing.assert_close(stacked, expected, rtol=0, atol=1e-12)


def towards_a_fitted_model(
    config: RunConfig, start: ArrayRecord
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(the start's arrays, those of a model fitted on the validation split): honest updates step towards it."""
    X, y = validation_set()
    fitted = init_model(config.model, FEATURES, CLASSES, seed=0)
    optimiser = torch.optim.SGD(fitted.parameters(), lr=0.5)
    for _ in range(50):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(fitted(torch.as_tensor(X)), torch.as_tensor(y)).backward()
        optimiser.step()
    return {k: v.numpy() for k, v in start.items()}, {k: v.detach().numpy() for k, v in fitted.state_dict().items()}


@pytest.mark.parametrize(("honest", "flippers", "scale"), [(4, 1, 3.0), (5, 3, 4.0)])
def test_harmful_updates_are_left_out_of_the_aggregate_but_keep_their_negative_scores(
    make_reply: ReplyFactory, honest: int, flippers: int, scale: float
) -> None:
    # Prepare: honest institutions step towards a model fitted on the validation split; flippers step away from
    # it, `scale` times as far.
    n = honest + flippers
    config = RunConfig.load(overrides=["scoring.method='loo'", f"data.institutions={n}", "model.name='logreg'",
                                       "integrity.free_rider_kappa=0"])
    strategy, start = scored(config)
    base, good = towards_a_fitted_model(config, start)
    rng = np.random.default_rng(n)
    moves = [{k: (base[k] + (good[k] - base[k]) * rng.uniform(0.9, 1.0)).astype(np.float32) for k in base}
             for _ in range(honest)]
    moves += [{k: (base[k] - scale * (good[k] - base[k])).astype(np.float32) for k in base} for _ in range(flippers)]
    names = [f"hospital-{i + 1:02d}" for i in range(n)]
    replies = [make_reply(m, examples=50, institution=name, node_id=i + 1)
               for i, (m, name) in enumerate(zip(moves, names))]
    # Execute
    arrays, _ = strategy.aggregate_train(1, replies)
    # Assert: the aggregate is the honest mean; every flipper is excluded, not rejected (slashing reads its
    # negative score, not a rejection), and its update hash is kept as evidence.
    assert arrays is not None
    for key in base:
        np.testing.assert_allclose(arrays[key].numpy(), np.mean([m[key] for m in moves[:honest]], axis=0), rtol=1e-5)
    record = strategy.history[-1]
    assert set(record.excluded) == set(names[honest:]) and record.rejected == {}
    assert max(record.scores[name] for name in names[honest:]) < 0 < min(record.scores[name] for name in names[:honest])
    assert set(names) <= set(record.update_hashes)


@pytest.mark.parametrize("counts_registered", [True, False])
def test_a_boosted_update_is_clipped_and_unpaid_while_honest_ones_of_any_size_stay_whole(
        make_reply: ReplyFactory, counts_registered: bool) -> None:
    # Prepare: six institutions of 32 to 192 rows step towards the fitted model in proportion to their local steps
    # (1 to 6 of batch 32); hospital-06 trains like hospital-02 (2 steps) and sends its step boosted 5x. Their
    # counts are registered, or (a pilot without registered counts, weighing every reply equally) only claimed.
    names = [f"hospital-{i:02d}" for i in range(1, 7)]
    rows = dict(zip(names, [32, 64, 96, 128, 192, 64]))
    registered = rows if counts_registered else dict.fromkeys(names, 0)
    weighting = [] if counts_registered else ["strategy.weighting='equal'"]
    # Harmful updates stay in: of steps along one line, the shorter ones score below 0 by leave-one-out.
    overrides = ["scoring.method='loo'", "data.institutions=6", "model.name='logreg'", "integrity.free_rider_kappa=0",
                 "integrity.exclude_harmful=false", "train.batch_size=32", "train.local_epochs=1", *weighting,
                 "integrity.scaled_update_limit=3"]
    strategy, start = scored(RunConfig.load(overrides=overrides), registered)
    base, good = towards_a_fitted_model(RunConfig.load(overrides=overrides), start)
    per_step = {k: (good[k] - base[k]) / 40 for k in base}  # every aggregate stays short of the fitted model
    factor = {name: rows[name] / 32 for name in names} | {"hospital-06": 5 * 2}
    moves = [{k: (base[k] + factor[name] * per_step[k]).astype(np.float32) for k in base} for name in names]

    def replies() -> list[Message]:
        return [make_reply(m, examples=rows[name], institution=name, node_id=i + 1)
                for i, (m, name) in enumerate(zip(moves, names))]

    # Execute
    arrays, _ = strategy.aggregate_train(1, replies())
    # Assert: only the boosted update is clipped, to 3x the honest length per step (6 steps' worth instead of
    # 10), and aggregated at that length; it is recorded as clipped, not set aside, and paid nothing for the round.
    record = strategy.history[-1]
    assert arrays is not None and record.rejected == {} and record.excluded == {} and record.inconclusive == []
    assert set(record.clipped) == {"hospital-06"}
    assert record.clipped["hospital-06"].startswith("update moves the model 5.0x as far per local step as the "
                                                    "round's reference (limit 3)")
    assert record.scores["hospital-06"] == 0.0 and record.scores["hospital-05"] > 0
    weights = rows if counts_registered else dict.fromkeys(names, 1)
    steps = {**factor, "hospital-06": 6.0}
    for k in base:
        expected = base[k] + sum(weights[n] * steps[n] for n in names) / sum(weights.values()) * per_step[k]
        np.testing.assert_allclose(arrays[k].numpy(), expected, rtol=1e-4, atol=1e-6)
    # The evidence hash is of the update as sent, not as clipped.
    assert record.update_hashes["hospital-06"] == model_hash(moves[5])
    # Off (the default), the boosted update reaches the model at full length, and is paid.
    strategy, _ = scored(RunConfig.load(overrides=overrides[:-1]), registered)
    strategy.aggregate_train(1, replies())
    assert strategy.history[-1].clipped == {} and strategy.history[-1].scores["hospital-06"] > 0


def test_in_a_large_federation_estimation_noise_leaves_no_honest_update_out(make_reply: ReplyFactory) -> None:
    # Prepare: 40 institutions (Banzhaf is estimated: 2^40 coalitions) from 128 draws, so that estimates are
    # noisy; honest ones step towards the fitted model by different amounts (80 % to 100 % of the way, per tensor),
    # two flippers step away. (A much shorter honest step can have a truly negative Banzhaf value: averaged in, it
    # shortens the others' step. That is not noise, and the rule may leave it out.)
    honest, n = 38, 40
    config = RunConfig.load(overrides=[f"data.institutions={n}", "model.name='logreg'", "integrity.free_rider_kappa=0",
                                       "scoring.banzhaf_samples=128"])
    names = [f"hospital-{i + 1:02d}" for i in range(n)]
    strategy, start = scored(config, registered={name: 1_000 for name in names})
    base, good = towards_a_fitted_model(config, start)
    rng = np.random.default_rng(7)
    moves = [{k: (base[k] + (good[k] - base[k]) * rng.uniform(0.8, 1.0)).astype(np.float32) for k in base}
             for _ in range(honest)]
    moves += [{k: (base[k] - 3 * (good[k] - base[k])).astype(np.float32) for k in base} for _ in range(n - honest)]
    replies = [make_reply(m, examples=50, institution=name, node_id=i + 1)
               for i, (m, name) in enumerate(zip(moves, names))]
    # Every honest update is worth something: a long-sampled reference (16,384 draws) puts each above 0.
    utility = CachedUtility(round_utility(strategy.inner, 1, replies, start, strategy.model, strategy.validation,
                                          strategy.scoring.utility))
    reference = banzhaf(n, utility, rng=np.random.default_rng(0), samples=16_384, tolerance=0.0)
    assert (reference.values[:honest] - reference.errors[:honest] > 0).all()
    # Execute
    strategy.aggregate_train(1, replies)
    # Assert: the flippers are left out; no honest update is, though noise puts some honest estimates below 0
    # (their intervals reach above it).
    record = strategy.history[-1]
    assert set(record.excluded) == set(names[honest:])
    assert all(record.score_errors[name] > 0 for name in names)
    noisy = [name for name in names[:honest] if record.scores[name] < 0]
    assert noisy and all(record.scores[name] + record.score_errors[name] >= 0 for name in noisy)


def test_harmful_updates_that_hide_one_another_are_left_out_one_by_one(make_reply: ReplyFactory) -> None:
    # Prepare: a round whose scores are all positive (as a scoring method can find when attackers mask each
    # other), yet whose utility says updates 3 and 4 each spoil the aggregate of the others.
    strategy, start = scored(make_config(method="loo", n=6))
    replies = institution_updates(make_reply, start, 6)
    strategy._updates = [{k: v.numpy() for k, v in arrays_of(m).items()} for m in replies]

    def utility(subset: frozenset[int]) -> float:
        return 0.1 * len(subset - {3, 4}) - 0.5 * len(subset & {3, 4})

    scores = {f"hospital-{i + 1:02d}": 0.05 for i in range(6)}
    # Execute
    kept, reasons, recorded = strategy._exclude_harmful(replies, RoundScoring(scores, frozenset(), 10, False),
                                                        CachedUtility(utility))
    # Assert: both are out, scored by what they cost the rest; the honest four stay with their scores.
    assert [institution_of(m) for m in kept] == ["hospital-01", "hospital-02", "hospital-03", "hospital-06"]
    assert set(reasons) == {"hospital-04", "hospital-05"}
    assert recorded.scores["hospital-04"] < 0 and recorded.scores["hospital-05"] < 0
    assert all(recorded.scores[n] == 0.05 for n in ("hospital-01", "hospital-02", "hospital-03", "hospital-06"))
    assert recorded.evaluations > 10 and len(strategy._updates) == 4


def test_under_peer_validation_the_consensus_before_validator_pay_decides_who_is_left_out(
    make_reply: ReplyFactory,
) -> None:
    # Prepare: peers' consensus of +0.02 on hospital-01, -0.01 on hospital-02 (which, as a voter that agreed,
    # earned a 0.015 reward: recorded +0.005 in all) and 0 on hospital-03 (a voter that disagreed: its own
    # positive score capped at 0).
    strategy, start = scored(make_config(method="loo", n=3))
    replies = institution_updates(make_reply, start, 3)
    strategy._updates = [{k: v.numpy() for k, v in arrays_of(m).items()} for m in replies]
    ballots = {"hospital-02": {"reward": 0.015, "weight": 1.0, "votes": {"hospital-01": 0.02, "hospital-03": 0.0}},
               "hospital-03": {"reward": 0.0, "weight": 0.0, "votes": {"hospital-01": 0.02, "hospital-02": -0.01}}}
    round_scores = RoundScoring({"hospital-01": 0.02, "hospital-02": 0.005, "hospital-03": 0.0},
                                frozenset({"hospital-03"}), 6, False, ballots)
    utility = CachedUtility(round_utility(strategy.inner, 1, replies, start, strategy.model, strategy.validation,
                                          "brier"))
    # Execute
    kept, reasons, _ = strategy._exclude_voted_down(replies, round_scores, utility)
    # Assert: the reward does not buy hospital-02's update its way in; a capped 0 stays; the arrays follow.
    assert [institution_of(m) for m in kept] == ["hospital-01", "hospital-03"]
    assert list(reasons) == ["hospital-02"] and "-0.0100" in reasons["hospital-02"]
    assert len(strategy._updates) == 2


def test_under_peer_validation_a_lone_harmful_update_is_checked_on_the_servers_split(make_reply: ReplyFactory) -> None:
    # Prepare: peer validation, but a round with one accepted update (nobody else to vote on it), which steps away
    # from the fitted model: it is scored on the server's split.
    config = RunConfig.load(overrides=["scoring.validation='peers'", "data.institutions=3", "model.name='logreg'",
                                       "integrity.free_rider_kappa=0"])
    strategy, start = scored(config)
    base, good = towards_a_fitted_model(config, start)
    away = {k: (base[k] - 2 * (good[k] - base[k])).astype(np.float32) for k in base}
    # Execute
    arrays, _ = strategy.aggregate_train(1, [make_reply(away, examples=50, institution="hospital-01", node_id=1)])
    # Assert: left out by the server's check (no ballots exist to read), so the round keeps its start model.
    record = strategy.history[-1]
    assert arrays is None and record.skipped == "every update lowered the utility"
    assert "lowers the utility" in record.excluded["hospital-01"] and record.scores["hospital-01"] < 0
    assert "consensus" not in record.excluded["hospital-01"]


def test_a_proposer_is_graded_only_by_a_counted_vote_from_another_voter_whose_ballot_opened() -> None:
    ballots = {
        "a": {"votes": {"a": 0.5, "b": float("nan"), "c": 0.1}},  # a's self-vote and its NaN do not grade
        "b": {"votes": {"d": 0.2}, "broken": "did not open"},      # a broken ballot grades nobody
        "e": {"votes": {"f": True, "g": -0.3}},                    # a boolean is not a vote; a negative one is
        "h": {"votes": {"i": 0.1}},
    }
    assert graded_proposers(ballots) == {"c", "g", "i"}
    # Where the round weighed votes by stake, each ballot records the stake it was weighed by: none grades nobody.
    staked = {voter: {**ballot, "stake": 0 if voter == "h" else 10**19} for voter, ballot in ballots.items()}
    assert graded_proposers(staked) == {"c", "g"}
    assert graded_proposers({"b": ballots["b"]}) == set()
    # The only staked voter's ballot broke: what opened holds no stake, so nobody is graded (no error either).
    assert graded_proposers({**staked, "a": {**staked["a"], "stake": 0}, "e": {**staked["e"], "stake": 0},
                             "b": {**staked["b"], "stake": 10**19}}) == set()


def test_voters_are_weighed_by_the_stake_the_reader_gives_and_none_holding_any_is_no_consensus(
        caplog: pytest.LogCaptureFixture) -> None:
    config = RunConfig.load(overrides=["scoring.validation='peers'", "data.institutions=3"])
    names = ["hospital-01", "hospital-02", "hospital-03"]
    strategy, _ = scored(config)
    assert strategy._voter_stakes(1, ["hospital-01"]) is None  # no reader: equal weights
    asked: list[int] = []
    strategy.stakes = lambda server_round: asked.append(server_round) or {"hospital-02": 5 * 10**18}
    assert strategy._voter_stakes(2, ["hospital-02", "hospital-03"]) == {"hospital-02": 5 * 10**18, "hospital-03": 0}
    assert asked == [2]  # the stakes of the round being voted on
    # Nobody holds stake: no ballot is run (the grid would be asked), nobody is graded, nothing is paid for votes.
    strategy.stakes = lambda server_round: dict.fromkeys(names, 0)
    with caplog.at_level(logging.WARNING, logger="fedlearn"):
        ballot = strategy._peer_scores(3, [], names)
    assert "round 3: no voter holds stake" in caplog.text and "no consensus" in caplog.text
    assert ballot.scores == dict.fromkeys(names, 0.0) and ballot.ballots() == {} and not ballot.rewards


@pytest.mark.parametrize("step", [-2.0, 0.7, 1.0])
def test_under_peer_validation_an_update_no_voter_graded_is_checked_on_the_servers_split(
    make_reply: ReplyFactory, monkeypatch: pytest.MonkeyPatch, step: float
) -> None:
    # Prepare: three institutions, one voter (hospital-01), which nobody grades and which earned a validator
    # reward; its own update steps away from the fitted model (-2: harmful), or towards it less far than the others
    # (0.7: the others' aggregate is a little better without it, by less than the masking pass's bar), or as far
    # (1.0). Its ballot grades the other two, honest, updates.
    config = RunConfig.load(overrides=["scoring.validation='peers'", "data.institutions=3", "model.name='logreg'",
                                       "integrity.free_rider_kappa=0"])
    strategy, start = scored(config)
    base, good = towards_a_fitted_model(config, start)
    moves = [{k: (base[k] + scale * (good[k] - base[k])).astype(np.float32) for k in base}
             for scale in (step, 0.9, 1.0)]
    replies = [make_reply(m, examples=50, institution=f"hospital-{i + 1:02d}", node_id=i + 1)
               for i, m in enumerate(moves)]
    utility = round_utility(strategy.inner, 1, replies, start, strategy.model, strategy.validation, "brier")
    marginal = utility(frozenset({0, 1, 2})) - utility(frozenset({1, 2}))
    harmful = marginal < -MASKED_HARM
    assert harmful == (step < 0) and (step != 0.7 or -MASKED_HARM <= marginal < 0), marginal
    votes, reward = {"hospital-02": 0.02, "hospital-03": 0.01}, 0.003
    ballot = PeerRound(scores={"hospital-01": reward, **votes}, disagreeing=frozenset(), evaluations=2,
                       commitments={"hospital-01": "ab" * 32}, voter_weights={"hospital-01": 1.0},
                       votes={"hospital-01": votes}, salts={"hospital-01": "cd" * 32},
                       rewards={"hospital-01": reward})
    monkeypatch.setattr(strategy, "_peer_scores", lambda *_: ballot)
    # Execute
    arrays, _ = strategy.aggregate_train(1, replies)
    # Assert: the ungraded harmful update is left out and charged what it costs the others' aggregate on the
    # server's split, on top of its validator reward; the others stay, paid their reward alone.
    record = strategy.history[-1]
    assert arrays is not None
    if harmful:
        reason = record.excluded["hospital-01"]
        assert list(record.excluded) == ["hospital-01"] and "no voter graded it" in reason
        cost = float(re.search(r"by (\d+\.\d+)", reason).group(1))  # type: ignore[union-attr]
        assert cost > 0 and record.scores["hospital-01"] == pytest.approx(reward - cost, abs=1e-4)
    else:
        assert record.excluded == {} and record.scores["hospital-01"] == reward
    assert record.scores["hospital-02"] == 0.02
    # The round's evaluations count the server's check, {all three} and {the other two}, with the voters' two.
    assert record.evaluations == 2 + 2


@pytest.mark.parametrize(("slash", "exclude"), [(True, True), (False, True), (True, False)])
def test_under_peer_validation_a_vote_below_the_slashing_bar_counts_against_a_stake_only_where_the_server_agrees(
    make_reply: ReplyFactory, monkeypatch: pytest.MonkeyPatch, slash: bool, exclude: bool
) -> None:
    # Prepare: three institutions; the voter, hospital-01, votes both others below the slashing bar (-0.03):
    # hospital-02, which steps towards the fitted model (its voter's rows happen to disagree), and hospital-03,
    # which steps away from it. The same round three times over: three bad rounds slash (slash_k = 3 of 4).
    config = RunConfig.load(overrides=["scoring.validation='peers'", "data.institutions=3", "model.name='logreg'",
                                       "integrity.free_rider_kappa=0", f"integrity.slash={str(slash).lower()}",
                                       f"integrity.exclude_harmful={str(exclude).lower()}"])
    strategy, start = scored(config)
    base, good = towards_a_fitted_model(config, start)
    replies = [make_reply({k: (base[k] + scale * (good[k] - base[k])).astype(np.float32) for k in base},
                          examples=50, institution=f"hospital-{i + 1:02d}", node_id=i + 1)
               for i, scale in enumerate((1.0, 0.9, -2.0))]
    votes = {"hospital-02": -0.05, "hospital-03": -0.05}
    ballot = PeerRound(scores={"hospital-01": 0.0, **votes}, disagreeing=frozenset(), evaluations=2,
                       commitments={"hospital-01": "ab" * 32}, voter_weights={"hospital-01": 1.0},
                       votes={"hospital-01": votes}, salts={"hospital-01": "cd" * 32})
    monkeypatch.setattr(strategy, "_peer_scores", lambda *_: ballot)
    # Execute
    rounds = []
    for server_round in (1, 2, 3):
        list(strategy.configure_train(server_round, start, ConfigRecord(), LoopbackGrid(3)))
        strategy.aggregate_train(server_round, [copy.deepcopy(m) for m in replies])
        rounds.append({"server_round": server_round, "scores": dataclasses.asdict(strategy.history[-1])})
    # Assert: both are left out and unpaid, as the votes say; the server's split confirms hospital-03's harm, not
    # hospital-02's, so hospital-02's rounds count neither way and only hospital-03 is slashed.
    record = strategy.history[-1]
    assert record.scores["hospital-02"] == record.scores["hospital-03"] == -0.05
    policy = SlashingPolicy.of(config.integrity)
    if not exclude:  # both stay in the aggregate; the slashing verdict is the same
        assert record.excluded == {} and record.inconclusive == ["hospital-02"]
        assert set(run_offences(rounds, policy)) == {(3, "hospital-03")}
        return
    assert set(record.excluded) == {"hospital-02", "hospital-03"}
    if slash:
        assert record.inconclusive == ["hospital-02"]
        assert "not held against its stake" in record.excluded["hospital-02"]
        found = re.search(r"let in by ([+-]\d+\.\d+)", record.excluded["hospital-02"])
        assert found is not None
        change = float(found.group(1))
        assert change > -config.integrity.slash_threshold
        assert "not held" not in record.excluded["hospital-03"]
        assert set(run_offences(rounds, policy)) == {(3, "hospital-03")}
        # The voters' 2 evaluations; the confirmation: what the votes let in (hospital-01's), and that with each
        # suspect added; the ungraded voter's own check on the server's split: without it (with it is cached).
        assert record.evaluations == 2 + 3 + 1
        # A round without votes (one update) finds nothing to confirm: the last round's verdict is not carried over.
        list(strategy.configure_train(4, start, ConfigRecord(), LoopbackGrid(3)))
        strategy.aggregate_train(4, [copy.deepcopy(replies[0])])
        assert strategy.history[-1].inconclusive == []
    else:  # nobody is slashed: nothing to confirm, no evaluation spent on it
        assert record.inconclusive == [] and record.evaluations == 2 + 2
        assert set(run_offences(rounds, policy)) == {(3, "hospital-02"), (3, "hospital-03")}


def test_several_ungraded_updates_are_left_out_worst_first_whatever_their_order(
    make_reply: ReplyFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: the lone voter's ballot broke, so no update is graded; two step away from the fitted model, one
    # towards it, in either order of names.
    config = RunConfig.load(overrides=["scoring.validation='peers'", "data.institutions=3", "model.name='logreg'",
                                       "integrity.free_rider_kappa=0"])
    outcomes = []
    for scales in ((-1.0, -2.0, 1.0), (1.0, -2.0, -1.0)):
        strategy, start = scored(config)
        base, good = towards_a_fitted_model(config, start)
        replies = [make_reply({k: (base[k] + scale * (good[k] - base[k])).astype(np.float32) for k in base},
                              examples=50, institution=f"hospital-{i + 1:02d}", node_id=i + 1)
                   for i, scale in enumerate(scales)]
        ballot = PeerRound(scores=dict.fromkeys(("hospital-01", "hospital-02", "hospital-03"), 0.0),
                           disagreeing=frozenset({"hospital-01"}), evaluations=0,
                           commitments={"hospital-01": "ab" * 32}, voter_weights={"hospital-01": 0.0},
                           broken={"hospital-01": "its reveal did not match its commitment"})
        monkeypatch.setattr(strategy, "_peer_scores", lambda *_, ballot=ballot: ballot)
        # Execute
        strategy.aggregate_train(1, replies)
        record = strategy.history[-1]
        outcomes.append({scales[int(name[-2:]) - 1] for name in record.excluded})
    # Assert: both updates that step away are left out, in both orders; the one that steps towards it stays.
    assert outcomes == [{-1.0, -2.0}, {-1.0, -2.0}]


def test_under_peer_validation_a_round_whose_every_update_is_voted_down_keeps_its_ballots(
    make_reply: ReplyFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: three updates; the one ballot's consensus puts every one of them below 0.
    config = RunConfig.load(overrides=["scoring.validation='peers'", "data.institutions=3", "model.name='logreg'",
                                       "integrity.free_rider_kappa=0"])
    strategy, start = scored(config)
    replies = institution_updates(make_reply, start, 3)
    votes = {"hospital-02": -0.02, "hospital-03": -0.01}
    ballot = PeerRound(scores={"hospital-01": 0.0, "hospital-02": -0.02, "hospital-03": -0.01},
                       disagreeing=frozenset(), evaluations=2, commitments={"hospital-01": "ab" * 32},
                       voter_weights={"hospital-01": 1.0}, votes={"hospital-01": votes},
                       salts={"hospital-01": "cd" * 32})
    monkeypatch.setattr(strategy, "_peer_scores", lambda *_: ballot)
    # Execute
    arrays, _ = strategy.aggregate_train(1, replies)
    # Assert: the round keeps its start model, every update is recorded as left out, and the ballot that decided
    # it is recorded whole, so anyone can recheck it.
    record = strategy.history[-1]
    assert arrays is None and record.skipped == "every update lowered the utility"
    assert set(record.excluded) == {"hospital-01", "hospital-02", "hospital-03"}
    assert record.ballots["hospital-01"]["votes"] == votes
    recorded = record.ballots["hospital-01"]
    assert recorded["commitment"] == "ab" * 32 and recorded["salt"] == "cd" * 32


def test_bulyan_keeps_the_updates_it_needs_and_resists_the_harmful_one_itself(make_reply: ReplyFactory) -> None:
    # Prepare: Bulyan with f = 1 aggregates nothing below 4f + 3 = 7 updates; of 7, one steps away from the fitted
    # model. Left out, it would leave Bulyan 6 updates and the round no model (nobody paid, nothing learnt).
    config = RunConfig.load(overrides=["strategy.name='bulyan'", "strategy.num_malicious=1", "scoring.method='loo'",
                                       "data.institutions=7", "model.name='logreg'", "integrity.free_rider_kappa=0"])
    strategy, start = scored(config)
    base, good = towards_a_fitted_model(config, start)
    rng = np.random.default_rng(3)
    moves = [{k: (base[k] + (good[k] - base[k]) * rng.uniform(0.9, 1.0)).astype(np.float32) for k in base}
             for _ in range(6)]
    moves.append({k: (base[k] - 3 * (good[k] - base[k])).astype(np.float32) for k in base})
    replies = [make_reply(m, examples=50, institution=f"hospital-{i + 1:02d}", node_id=i + 1)
               for i, m in enumerate(moves)]
    # Execute
    arrays, _ = strategy.aggregate_train(1, replies)
    # Assert: all 7 reach Bulyan, whose trimmed mean moves towards the fitted model, not the harmful one's way;
    # the harmful update still scores below 0 (what slashing reads) and earns nothing.
    record = strategy.history[-1]
    assert arrays is not None and not record.skipped and record.excluded == {}
    for key in base:
        towards = (arrays[key].numpy() - base[key]).ravel() @ (good[key] - base[key]).ravel()
        assert towards > 0, key
    assert record.scores["hospital-07"] < 0 < min(record.scores[f"hospital-{i:02d}"] for i in range(1, 7))


def test_a_claimed_count_above_the_registered_one_is_set_aside(make_reply: ReplyFactory) -> None:
    # Prepare: hospital-01 claims 10,000 examples; the coordinator registered 40 for it.
    config = make_config(method="loo", n=3)
    registered = {"hospital-01": 40, "hospital-02": 40, "hospital-03": 40}
    strategy, start = scored(config, registered)
    base = {k: v.numpy() for k, v in start.items()}
    rng = np.random.default_rng(5)
    moves = [{k: (v + rng.normal(scale=0.5, size=v.shape)).astype(np.float32) for k, v in base.items()}
             for _ in range(3)]
    replies = [make_reply(m, examples=c, institution=f"hospital-{i + 1:02d}", node_id=i + 1)
               for i, (m, c) in enumerate(zip(moves, [10_000, 40, 40]))]
    # Execute
    arrays, _ = strategy.aggregate_train(1, replies)
    # Assert: the liar is set aside and scores 0; the aggregate is the plain mean of the two honest updates.
    assert arrays is not None
    for key in base:
        np.testing.assert_allclose(arrays[key].numpy(), np.mean([m[key] for m in moves[1:]], axis=0), rtol=1e-5)
    record = strategy.history[-1]
    assert record.rejected == {"hospital-01": "claims 10000 examples, more than the 40 registered for it"}
    assert record.scores["hospital-01"] == 0.0
    assert record.num_examples == {"hospital-02": 40, "hospital-03": 40}


def test_an_unregistered_name_is_set_aside_and_equal_weighting_ignores_counts(make_reply: ReplyFactory) -> None:
    strategy, start = scored(make_config(method="loo", n=3), {"hospital-01": 50, "hospital-02": 50})
    replies = institution_updates(make_reply, start, 3)
    strategy.aggregate_train(1, replies)
    assert strategy.history[-1].rejected == {"hospital-03": "not an institution registered in this federation"}
    equal, start = scored(make_config(method="loo", n=3, weighting="'equal'"))
    equal.aggregate_train(1, institution_updates(make_reply, start, 3))
    assert set(equal.history[-1].num_examples.values()) == {1}


def real_round(make_reply: ReplyFactory, *overrides: str, n: int = 8) -> tuple[ScoredStrategy, list[Message],
                                                                              list[str], CachedUtility]:
    """(the strategy, n replies, their names, the round's utility, built apart from the strategy's) for n
    institutions of different registered sizes stepping 70-100 % of the way to a fitted model."""
    config = RunConfig.load(overrides=[f"data.institutions={n}", "model.name='logreg'", "integrity.free_rider_kappa=0",
                                       *overrides])
    names = [f"hospital-{i + 1:02d}" for i in range(n)]
    registered = {name: 100 * (i + 1) for i, name in enumerate(names)}
    strategy, start = scored(config, registered=registered)
    base, good = towards_a_fitted_model(config, start)
    rng = np.random.default_rng(3)
    moves = [{k: (base[k] + (good[k] - base[k]) * rng.uniform(0.7, 1.0)).astype(np.float32) for k in base}
             for _ in range(n)]
    replies = [make_reply(m, examples=registered[name], institution=name, node_id=i + 1)
               for i, (m, name) in enumerate(zip(moves, names))]
    utility = CachedUtility(round_utility(strategy.inner, 1, replies, start, strategy.model, strategy.validation,
                                          strategy.scoring.utility))
    return strategy, replies, names, utility


def test_by_default_a_fedavg_round_below_exact_is_scored_by_the_surrogate_close_to_exact(
    make_reply: ReplyFactory,
) -> None:
    # Prepare: 40 evaluations of the 256 coalitions, the estimator left at its default ("auto").
    strategy, replies, names, utility = real_round(make_reply, "scoring.banzhaf_samples=40")
    exact = banzhaf(len(names), utility, rng=np.random.default_rng(0)).values
    # Execute
    strategy.aggregate_train(1, replies)
    # Assert: the surrogate ran; every institution scored, with an interval, close to exact in normalised L1.
    record = strategy.history[-1]
    assert record.estimator == "surrogate" and record.excluded == {} and record.rejected == {}
    estimate = np.array([record.scores[name] for name in names])
    errors = np.array([record.score_errors[name] for name in names])
    assert (errors > 0).all() and record.evaluations == 40
    assert np.abs(estimate - exact).sum() / np.abs(exact).sum() < 0.1, (estimate, exact)
    assert np.mean(np.abs(estimate - exact) <= errors) >= 0.75


@pytest.mark.parametrize(("overrides", "estimator"), [
    (("strategy.name='multikrum'", "strategy.num_malicious=1", "scoring.banzhaf_samples=40"), "regression"),
    (("scoring.banzhaf_samples=40", "scoring.banzhaf_estimator='regression'"), "regression"),
    (("scoring.banzhaf_samples=19",), "regression"),  # below 2n + 4 = 20: too few for the surrogate's design
    (("scoring.banzhaf_samples=129",), "regression"),  # above half the coalitions: the greedy design's cost
    (("scoring.banzhaf_samples=40", "strategy.name='fedadam'"), "surrogate"),
    (("scoring.banzhaf_samples=20", "strategy.name='fedprox'"), "surrogate"),
    (("scoring.banzhaf_samples=256",), "exact"),  # the budget covers the 256 coalitions
])
def test_auto_takes_the_surrogate_only_where_it_models_the_game(
    make_reply: ReplyFactory, overrides: tuple[str, ...], estimator: str
) -> None:
    # Prepare
    strategy, replies, names, utility = real_round(make_reply, *overrides)
    samples, tolerance = strategy.scoring.banzhaf_samples, strategy.scoring.banzhaf_tolerance
    rng = np.random.default_rng([strategy.seed, 1])  # the strategy's draws for round 1
    weights = np.array([examples_of(m) for m in replies], dtype=np.float64)
    expected = {
        "exact": lambda: banzhaf(len(names), utility, rng=rng),
        "regression": lambda: banzhaf(len(names), utility, rng=rng, samples=samples, tolerance=tolerance),
        "surrogate": lambda: banzhaf_surrogate(len(names), utility, weights, rng=rng, samples=samples),
    }[estimator]().values
    # Execute
    strategy.aggregate_train(1, replies)
    # Assert: the estimator named in the record is the one whose scores were recorded.
    record = strategy.history[-1]
    assert record.estimator == estimator and record.excluded == {}
    np.testing.assert_allclose([record.scores[name] for name in names], expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("failure", [ScoringError, np.linalg.LinAlgError])
def test_auto_scores_a_round_the_surrogate_cannot_fit_by_the_regression(
    make_reply: ReplyFactory, monkeypatch: pytest.MonkeyPatch, failure: type[Exception]
) -> None:
    # Prepare: a surrogate that fails as one does when no length scale gives a usable posterior (its own error, or
    # numpy's from a solve that went singular).
    def unfit(*args: object, **kwargs: object) -> None:
        raise failure("the surrogate's kernel matrix is singular for every length scale")

    monkeypatch.setattr(scoring_methods, "banzhaf_surrogate", unfit)
    strategy, replies, names, utility = real_round(make_reply, "scoring.banzhaf_samples=40")
    regression = banzhaf(len(names), utility, rng=np.random.default_rng([strategy.seed, 1]), samples=40,
                         tolerance=strategy.scoring.banzhaf_tolerance).values
    # Execute
    strategy.aggregate_train(1, replies)
    # Assert: the round is scored, by the regression, and says so.
    record = strategy.history[-1]
    assert record.estimator == "regression"
    np.testing.assert_allclose([record.scores[name] for name in names], regression, rtol=1e-9, atol=1e-12)
    # Forced, the surrogate's failure is the run's: nothing is scored behind the user's back.
    forced, replies, _, _ = real_round(make_reply, "scoring.banzhaf_samples=40",
                                       "scoring.banzhaf_estimator='surrogate'")
    with pytest.raises(failure, match="singular"):
        forced.aggregate_train(1, replies)


@pytest.mark.parametrize("n", range(1, 15))
def test_auto_hands_the_surrogate_only_budgets_it_takes(n: int) -> None:
    for samples in sorted({16, 2 * n + 3, 2 * n + 4, 2 ** (n - 1), 2 ** (n - 1) + 1, 2**n - 1, 2**n, 1024}):
        for weighted_mean in (True, False):
            chosen = banzhaf_estimator_for("auto", n, samples, weighted_mean=weighted_mean)
            assert (chosen == "exact") == (2**n <= samples)
            if chosen == "surrogate":
                check_budget(n, samples)  # raises if the surrogate would refuse it
                assert weighted_mean and samples <= 2 ** (n - 1)
            assert banzhaf_estimator_for("regression", n, samples, weighted_mean=weighted_mean) in ("exact",
                                                                                                 "regression")


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_only_weighted_mean_strategies_form_coalition_models_from_weight_shares(name: str) -> None:
    config = make_config(name, method="banzhaf", n=12, num_malicious=1)
    X, y = validation_set()
    built = build_flower_strategy(config, root_data=(X, y, CLASSES))
    assert models_follow_weight_shares(built) == (name in ("fedavg", "fedprox", "fedadam"))


@pytest.mark.parametrize("refit", [True, False])
def test_only_the_last_rounds_published_model_has_its_output_layer_refitted(refit: bool) -> None:
    # Prepare: a 2-round MLP federation and a model to publish, in float64 as FedAdam's aggregates come.
    config = RunConfig.load(overrides=["run.rounds=2", "data.institutions=3", "model.name='mlp'",
                                       f"integrity.refit_output_layer={str(refit).lower()}"])
    strategy, start = scored(config)
    arrays = ArrayRecord({k: Array(v.numpy().astype(np.float64)) for k, v in start.items()})
    # Execute
    first, last = strategy.published(1, arrays), strategy.published(2, arrays)
    # Assert: round 1 publishes the model as it is; the last round (with the refit on) replaces the output layer
    # alone, in the arrays' own dtype, by the model's output layer refitted on the validation split.
    assert first is arrays
    if not refit:
        assert last is arrays
        return
    expected = init_model(strategy.model_spec, FEATURES, CLASSES, seed=0)
    expected.load_state_dict(start.to_torch_state_dict())
    head = refit_output_layer(expected, *validation_set(), l2=config.integrity.refit_l2,
                              noise=config.integrity.refit_noise, seed=config.run.seed)
    assert head == {"2.weight", "2.bias"}
    for name, array in last.items():
        value, original = array.numpy(), arrays[name].numpy()
        assert value.dtype == original.dtype
        if name in head:
            np.testing.assert_allclose(value, expected.state_dict()[name].numpy(), atol=1e-6)
            assert not np.allclose(value, original)
        else:
            assert np.array_equal(value, original)


def test_a_refit_that_cross_validation_says_costs_accuracy_is_not_published(
        caplog: pytest.LogCaptureFixture) -> None:
    # Prepare: the last round's model is one the refit on its 300 validation rows costs 10 points of test
    # accuracy (generated Gaussian classes); the same model with the check off, for comparison.
    model, validation, _ = gaussian_classes_mlp(seed=0)
    arrays = ArrayRecord(model.state_dict())
    published, records = {}, {}
    for folds in (5, 0):
        config = RunConfig.load(overrides=["run.rounds=1", "data.institutions=3", "model.name='mlp'",
                                           f"integrity.refit_check_folds={folds}"])
        strategy, _ = scored(config)
        strategy.model, strategy.validation = copy.deepcopy(model), (validation.X, validation.y)
        # Execute
        with caplog.at_level(logging.INFO, logger="fedlearn"):
            published[folds] = strategy.published(1, arrays)
        records[folds] = strategy.refit
    # Assert: checked, the model is published as aggregated, and the log and the record say why; unchecked, it is
    # refitted.
    assert published[5] is arrays
    assert "not refitted: 5-fold cross-validation" in caplog.text and "refit_max_drop = 2 point(s)" in caplog.text
    assert published[0] is not arrays and not np.array_equal(published[0]["2.weight"].numpy(),
                                                              arrays["2.weight"].numpy())
    vetoed, made = records[5], records[0]
    assert vetoed is not None and not vetoed["refitted"] and "refit_max_drop" in vetoed["why_not"]
    assert vetoed["check"]["rows"] == 300
    assert vetoed["check"]["accuracy_after"] < vetoed["check"]["accuracy_before"] - 0.02
    assert made == {"refitted": True, "why_not": "", "check": None}


def test_a_validation_split_missing_a_class_publishes_the_model_unrefitted(caplog: pytest.LogCaptureFixture) -> None:
    config = RunConfig.load(overrides=["run.rounds=1", "data.institutions=3", "model.name='mlp'"])
    strategy, start = scored(config)
    X, y = strategy.validation
    strategy.validation = (X[y != 2], y[y != 2])  # class 2 never appears
    with caplog.at_level(logging.WARNING, logger="fedlearn"):
        assert strategy.published(1, start) is start
    assert "not refitted" in caplog.text and "class(es) 2" in caplog.text
    assert strategy.refit is not None and not strategy.refit["refitted"] and "class(es) 2" in strategy.refit["why_not"]


def test_what_the_checks_remember_survives_a_checkpoint_and_nothing_else_is_made_up() -> None:
    # Prepare: a strategy that has seen three rounds' start models, and the backdoor check on (a model it reads).
    config = RunConfig.load(overrides=["data.institutions=3"])
    strategy, start = scored(config, features=MIN_INPUTS)
    for server_round in (2, 3):
        moved = ArrayRecord({k: Array(v.numpy() + server_round) for k, v in start.items()})
        list(strategy.configure_train(server_round, moved, ConfigRecord(), LoopbackGrid(3)))
    assert strategy._growth is not None
    strategy._growth.observe(2, {f"hospital-0{i}": np.full((4, 3), float(i)) for i in (1, 2, 3)})
    # Execute: what a checkpoint keeps, into a fresh strategy (as a resumed run builds), and an older checkpoint.
    state = pickle.loads(pickle.dumps(strategy.check_state()))
    resumed, _ = scored(config, features=MIN_INPUTS)
    resumed.restore_checks(state)
    older, _ = scored(config, features=MIN_INPUTS)
    before = [g.copy() for g in older._globals]
    older.restore_checks(None)
    # Assert: the past global models and the check's sums are back as they were; an older checkpoint changes nothing.
    assert len(resumed._globals) == 3 and all(np.array_equal(a, b) for a, b in zip(resumed._globals, strategy._globals))
    assert resumed._growth is not None and resumed._growth.rounds == strategy._growth.rounds
    assert all(np.array_equal(resumed._growth.sums[n], strategy._growth.sums[n]) for n in strategy._growth.sums)
    assert all(np.array_equal(a, b) for a, b in zip(older._globals, before))


def test_the_backdoor_check_reads_only_a_hidden_layer_over_enough_inputs_and_says_when_it_cannot(
        caplog: pytest.LogCaptureFixture) -> None:
    # Prepare: the default config (the check on) with an MLP over as many inputs as the check needs, over fewer, and
    # a logistic regression (no hidden layer).
    config = RunConfig.load(overrides=["data.institutions=3"])
    # Execute
    with caplog.at_level(logging.INFO, logger="fedlearn"):
        enough, _ = scored(config, features=MIN_INPUTS)
        few, _ = scored(config, features=MIN_INPUTS - 1)
        flat, _ = scored(RunConfig.load(overrides=["data.institutions=3", "model.name='logreg'"]), features=MIN_INPUTS)
        off, _ = scored(RunConfig.load(overrides=["data.institutions=3", "integrity.backdoor_threshold=0"]),
                        features=MIN_INPUTS)
    # Assert: only the first is checked; the other two say why at info level (nothing was misconfigured), and a
    # threshold of 0 turns the check off without a word.
    assert enough._growth is not None and enough._growth.threshold == 1.0
    assert few._growth is None and flat._growth is None and off._growth is None
    said = [r for r in caplog.records if "no backdoor check" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.INFO, logging.INFO]
    assert f"reads {MIN_INPUTS - 1} input features" in said[0].getMessage()
    assert "no hidden layer" in said[1].getMessage()


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_collections_during_a_subset_aggregation_skip_what_lived_before_it_and_still_free_its_own_garbage() -> None:
    # Prepare: a reference cycle that exists before (only a collection frees a cycle; automatic ones are held off
    # so that none frees it before the aggregation begins).
    gc.disable()
    try:
        before = weakref.ref(_Cycle())
        # Execute and Assert: inside, a forced collection leaves the older cycle alone and frees one made inside.
        with pytest.raises(RuntimeError, match="aggregation failed"), long_lived_objects_frozen():
            inside = weakref.ref(_Cycle())
            gc.collect()
            assert inside() is None and before() is not None
            raise RuntimeError("aggregation failed")
        # Assert: after it, even when the aggregation raised, everything is collectable again.
        assert gc.get_freeze_count() == 0
        gc.collect()
        assert before() is None
    finally:
        gc.enable()
