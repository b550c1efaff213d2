"""Settings that give up a protection the default configuration has, and what each gives up.

Every one is allowed (pilots may need one, and the benchmarks measure with them), but users run defaults and
change one line at a time: a run that uses one says so when it starts (a warning on the ``fedlearn`` logger, which
always reaches the terminal) and lists it in ``summary.json`` as ``weaker_options``. The README's table of options
names the same settings with the figures ``benchmarks/integrity.py`` measured for them;
``tests/test_weaker_options.py`` holds the two lists to each other.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass

from fedlearn.config import RunConfig


@dataclass(frozen=True)
class WeakerOption:
    """``key`` set to any of ``values`` (TOML literals, as the README writes them) gives up what ``cost`` says."""

    key: str
    values: tuple[str, ...]
    cost: str
    refit_detail: bool = False  # a setting of the refit, which says nothing while the refit is off

    def value(self, config: RunConfig) -> object:
        section, name = self.key.split(".")
        return getattr(getattr(config, section), name)

    def applies(self, config: RunConfig) -> bool:
        if self.refit_detail and not config.integrity.refit_output_layer:
            return False
        return any(self.value(config) == tomllib.loads(f"v = {literal}")["v"] for literal in self.values)

    def setting(self, config: RunConfig) -> str:
        return f"{self.key} = {self.value(config)!r}"


WEAKER_OPTIONS: tuple[WeakerOption, ...] = (
    WeakerOption("scoring.method", ('"gtg"', '"shapley"'),
                 "an institution split over several identities can earn more than the whole"),
    WeakerOption("scoring.method", ('"loo"',),
                 "blind to redundancy: institutions holding the same data each earn about nothing"),
    WeakerOption("scoring.validation", ('"peers"',),
                 "no server validation: peers' votes on a few dozen rows each leave honest updates out and pay noise"),
    WeakerOption("scoring.method", ('"trust"',),
                 "unmeasured against the attacks; each identity of a split institution gets its own trust weight"),
    WeakerOption("strategy.name", ('"fltrust"',),
                 "updates are scaled to the server's own update: low-effort and boosted ones earn as honest work"),
    WeakerOption("strategy.name", ('"fedmedian"',), "costs honest accuracy; boosted updates are paid"),
    WeakerOption("strategy.name", ('"multikrum"',), "costs honest accuracy; boosted updates are paid"),
    WeakerOption("strategy.name", ('"krum"',),
                 "costs honest accuracy and slashes honest institutions; sybils earn more than the whole"),
    WeakerOption("strategy.name", ('"fedtrimmedavg"',),
                 "boosted updates earn more than honest work; honest institutions slashed"),
    WeakerOption("strategy.name", ('"fedadam"',), "boosted updates earn more than honest work"),
    WeakerOption("strategy.name", ('"bulyan"',),
                 "costs honest accuracy and slashes honest institutions; targeted label flips are paid"),
    WeakerOption("strategy.name", ('"fedprox"',),
                 "measured with train.proximal_mu = 0.1 only: honest accuracy 0.7 points below plain FedAvg"),
    WeakerOption("strategy.weighting", ('"claimed"',),
                 "trusts every reply's example count: a count lie buys weight in the model and in the pay"),
    WeakerOption("payout.round_weight", ('"headroom"',),
                 "late rounds outweigh early ones: low-effort updates, near-copies and sybils are paid"),
    WeakerOption("integrity.exclude_harmful", ("false",), "harmful updates reach the model"),
    WeakerOption("integrity.free_rider_kappa", ("0",), "free riders are paid"),
    WeakerOption("integrity.backdoor_threshold", ("0",),
                 "institutions planting one trigger together are paid for their updates"),
    WeakerOption("integrity.min_stake", ("0",),
                 "nothing is staked: an institution flagged round after round loses nothing"),
    WeakerOption("integrity.slash", ("false",), "an institution flagged round after round keeps its stake"),
    WeakerOption("integrity.refit_output_layer", ("false",), "the published model keeps a planted backdoor"),
    WeakerOption("integrity.refit_noise", ("0",),
                 "the output layer is refitted on clean rows alone: more of a backdoor survives", refit_detail=True),
    WeakerOption("integrity.refit_check_folds", ("0",),
                 "the refit is published unchecked, even where it costs accuracy", refit_detail=True),
)


def weaker_options(config: RunConfig) -> list[str]:
    """One line per weaker setting ``config`` uses: the setting, then what it gives up."""
    return [f"{option.setting(config)}: {option.cost}" for option in WEAKER_OPTIONS if option.applies(config)]
