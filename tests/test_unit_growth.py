"""Backdoors planted together: the hidden-unit growth score, against its definition and in a paying run."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fedlearn.config import RunConfig
from fedlearn.federation.simulation import run_federation
from fedlearn.federation.strategy import first_layer_weight
from fedlearn.federation.unit_growth import CONCENTRATION_POWER, REASON, THRESHOLD, TOP_INPUTS, UnitGrowth
from fedlearn.payout.ledger import Ledger

UNITS, INPUTS = 8, 12
NAMES = [f"hospital-{i:02d}" for i in range(1, 9)]


def honest_round(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Every institution moves every unit from every input, a new direction each round (skewed data: some more)."""
    return {name: rng.normal(scale=0.5 + i / 4, size=(UNITS, INPUTS)) for i, name in enumerate(NAMES)}


def planted(update: np.ndarray, unit: int, inputs: list[int], strength: float) -> np.ndarray:
    """The same update, plus unit ``unit`` grown from ``inputs`` in one fixed direction."""
    grown = update.copy()
    grown[unit, inputs] += strength
    return grown


def two_planters(rng: np.random.Generator, rounds: range) -> UnitGrowth:
    """The check after ``rounds`` of honest updates in which the first two institutions grow unit 5 from inputs
    7, 8, 10 and 11 with strength 6 each round."""
    growth = UnitGrowth()
    for server_round in rounds:
        updates = honest_round(rng)
        for name in NAMES[:2]:
            updates[name] = planted(updates[name], 5, [7, 8, 10, 11], 6.0)
        growth.observe(server_round, updates)
    return growth


def by_definition(history: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """The score as the module defines it, from every round's residual rows kept (no running sums)."""
    names = sorted(history[0])
    residuals = np.stack([np.stack([r[n] for n in names]) - np.median(np.stack([r[n] for n in names]), axis=0)
                          for r in history])  # (rounds, institutions, units, inputs)
    rows = residuals / np.linalg.norm(residuals, axis=3, keepdims=True)
    t = len(history)
    consistency = np.zeros((len(names), UNITS))
    for a, b in itertools.permutations(range(t), 2):
        consistency += (rows[a] * rows[b]).sum(axis=2) / (t * (t - 1))
    summed = residuals.sum(axis=0)
    energy = summed ** 2
    concentration = np.sort(energy, axis=2)[:, :, -TOP_INPUTS:].sum(axis=2) / energy.sum(axis=2)
    magnitude = np.linalg.norm(summed, axis=2)
    units = (np.clip(consistency, 0, None) * concentration ** CONCENTRATION_POWER
             * magnitude / np.median(magnitude, axis=1, keepdims=True))
    directions = summed / magnitude[:, :, None]
    best = {}
    for i, name in enumerate(names):
        pairs = [(np.minimum(units[i], units[j]) * np.clip((directions[i] * directions[j]).sum(axis=1), 0, None)).max()
                 for j in range(len(names)) if j != i]
        best[name] = float(max(pairs))
    return best


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rounds=st.integers(2, 6), strength=st.floats(0.0, 3.0))
def test_the_running_sums_give_the_score_its_definition_gives(seed: int, rounds: int, strength: float) -> None:
    # Prepare: honest rounds, two institutions growing unit 3 from inputs 0-3 (with any strength, none included).
    rng = np.random.default_rng(seed)
    history = []
    for _ in range(rounds):
        updates = honest_round(rng)
        for name in NAMES[:2]:
            updates[name] = planted(updates[name], 3, [0, 1, 2, 3], strength)
        history.append(updates)
    growth = UnitGrowth()
    # Execute
    for server_round, updates in enumerate(history, start=2):
        growth.observe(server_round, updates)
    # Assert: with every pair counted each institution scores what the definition says; pairing only those with a
    # unit above the threshold flags exactly the same institutions, and scores none higher.
    expected = by_definition(history)
    everyone = growth.scores(floor=-np.inf)
    assert all(everyone[name] == pytest.approx(expected[name], rel=1e-9, abs=1e-12) for name in NAMES)
    pruned = growth.scores()
    assert all(pruned[name] <= everyone[name] + 1e-12 for name in NAMES)
    assert set(growth.flagged(NAMES)) == {n for n, s in expected.items() if s > THRESHOLD}


def test_two_institutions_growing_one_unit_from_four_inputs_are_flagged_and_nobody_else() -> None:
    growth = two_planters(np.random.default_rng(0), range(1, 7))
    assert set(growth.flagged(NAMES)) == set(NAMES[:2])
    assert growth.rounds == dict.fromkeys(NAMES, 5)  # round 1 is not read


def test_one_institution_alone_is_never_flagged_however_it_grows_a_unit() -> None:
    rng = np.random.default_rng(1)
    growth = UnitGrowth()
    for server_round in range(2, 9):
        updates = honest_round(rng)
        updates[NAMES[0]] = planted(updates[NAMES[0]], 5, [7, 8, 10, 11], 5.0)
        growth.observe(server_round, updates)
    assert growth.unit_scores()[NAMES[0]].max() > THRESHOLD  # its own unit stands out ...
    assert growth.flagged(NAMES) == {}  # ... but it takes two to plant one trigger


def test_two_institutions_growing_different_units_or_one_unit_from_every_input_are_not_flagged() -> None:
    rng = np.random.default_rng(2)
    apart, spread, concentrated = UnitGrowth(), UnitGrowth(), UnitGrowth()
    for server_round in range(2, 9):
        updates = honest_round(rng)
        # As strong as the pair flagged above (6 on each of 4 inputs), but each its own unit ...
        apart.observe(server_round, {**updates, NAMES[0]: planted(updates[NAMES[0]], 1, [0, 1, 2, 3], 6.0),
                                     NAMES[1]: planted(updates[NAMES[1]], 6, [0, 1, 2, 3], 6.0)})
        # ... or one unit grown alike, from every input rather than a few, with three times the energy (as two
        # institutions holding mostly one class grow that class's unit: larger than a trigger's, but spread).
        spread.observe(server_round, {**updates, **{n: planted(updates[n], 5, list(range(INPUTS)), 6.0)
                                                    for n in NAMES[:2]}})
        concentrated.observe(server_round, {**updates, **{n: planted(updates[n], 5, [7, 8, 10, 11], 6.0)
                                                          for n in NAMES[:2]}})
    assert min(apart.unit_scores()[n].max() for n in NAMES[:2]) > THRESHOLD  # each stands out alone
    assert apart.flagged(NAMES) == {}
    # Concentration counts most: the larger growth spread over every input is not flagged; the trigger's is.
    assert spread.flagged(NAMES) == {} and set(concentrated.flagged(NAMES)) == set(NAMES[:2])
    assert spread.scores(floor=-np.inf)[NAMES[0]] < 0.25 * concentrated.scores()[NAMES[0]]


def test_a_planter_is_flagged_in_a_round_its_partner_sat_out() -> None:
    # Prepare: two planters every round, then a round (sampling) without the second.
    rng = np.random.default_rng(3)
    growth = two_planters(rng, range(2, 7))
    updates = honest_round(rng)
    updates[NAMES[0]] = planted(updates[NAMES[0]], 5, [7, 8, 10, 11], 6.0)
    del updates[NAMES[1]]
    # Execute
    growth.observe(7, updates)
    # Assert: the pair is read over every round so far; only the round's own institutions are flagged.
    assert set(growth.flagged(sorted(updates))) == {NAMES[0]} and growth.rounds[NAMES[1]] == 5


def test_a_round_with_fewer_than_three_updates_is_not_read() -> None:
    growth = UnitGrowth()
    growth.observe(2, {n: np.ones((UNITS, INPUTS)) for n in NAMES[:2]})
    assert growth.rounds == {} and growth.scores() == {}


def test_only_a_model_with_a_hidden_layer_has_a_first_layer_to_read() -> None:
    assert first_layer_weight(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))) == "0.weight"
    assert first_layer_weight(nn.Linear(4, 2)) is None


def test_institutions_planting_one_trigger_are_set_aside_and_paid_almost_nothing(tmp_path: Path) -> None:
    # Prepare: the integrity benchmark's federation (the demo's ten institutions, 8 rounds), three of them planting
    # the same trigger in 30 % of their rows; the check as configured by default.
    planters = ["hospital-02", "hospital-05", "hospital-08"]
    config = RunConfig.load(Path(__file__).parents[1] / "configs" / "demo.toml", overrides=[
        "run.rounds=8", "simulation.engine='local'", f"run.output_dir='{tmp_path}'",
        "integrity.behaviours='" + ", ".join(f"{name}=backdoor" for name in planters) + "'"])
    # Execute: the run whole, and the same run stopped after round 4 and resumed.
    summary = run_federation(config, run_dir=tmp_path / "whole", progress=False)
    run_federation(config, run_dir=tmp_path / "resumed", progress=False, stop_after=4)
    run_federation(config, run_dir=tmp_path / "resumed", progress=False)
    # Assert: from the third round on the planters' updates are set aside, saying why, and not held against their
    # stake (the check reads weights, not harm); no honest update is; the planters end with under 3 % of the tokens.
    rounds = [r["scores"] for r in json.loads((tmp_path / "whole" / "rounds.json").read_text())[1:]]
    for record in rounds[2:]:
        set_aside = {name for name, why in record["rejected"].items() if why.startswith(REASON)}
        assert set_aside == set(planters) and set(record["inconclusive"]) >= set_aside
    assert not any(why.startswith(REASON) for record in rounds[:2] for why in record["rejected"].values())
    earned = {i["name"]: int(i["tokens_earned"]) for i in summary["institutions"]}
    assert sum(earned[name] for name in planters) < 0.03 * sum(earned.values())
    # The resumed run checked as the whole one did (the check's history is checkpointed): the same set-asides, and
    # every round settled the same.
    again = [r["scores"] for r in json.loads((tmp_path / "resumed" / "rounds.json").read_text())[1:]]
    assert [r["rejected"] for r in again] == [r["rejected"] for r in rounds]
    whole, resumed = (Ledger.open(tmp_path / d / "ledger.sqlite").rounds() for d in ("whole", "resumed"))
    assert len(whole) == len(resumed) == 8 and all(a.same_settlement(b) for a, b in zip(whole, resumed))
