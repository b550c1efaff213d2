"""One typed, validated run configuration.

A config is a TOML file with one table per section (``[data]``, ``[train]`` …). The same keys, flattened as
``section.key``, are what ``--set section.key=value`` overrides and what Flower's run config carries under
``flwr run .``, so one schema serves the CLI, simulation and deployment.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedlearn.errors import ConfigError

MODEL_NAMES = ("mlp", "logreg")
OPTIMIZER_NAMES = ("sgd", "adam")
STRATEGY_NAMES = (
    "fedavg",
    "fedprox",
    "fedadam",
    "krum",
    "multikrum",
    "bulyan",
    "fedtrimmedavg",
    "fedmedian",
    "fltrust",
)
WEIGHTINGS = ("registered", "equal", "claimed")
SCORING_METHODS = ("loo", "shapley", "gtg", "banzhaf", "trust", "none")
BANZHAF_ESTIMATORS = ("auto", "regression", "surrogate")
VALIDATION_SOURCES = ("server", "peers")
UTILITIES = ("accuracy", "neg_loss", "brier", "margin")
SIGNIFICANCE_TESTS = ("bootstrap", "none")
ROUND_WEIGHTS = ("headroom", "equal")
PARTITION_SCHEMES = ("iid", "dirichlet", "pathological", "quantity_skew")


@dataclass(frozen=True)
class RunSection:
    name: str = "fedlearn"
    seed: int = 42
    rounds: int = 5
    output_dir: str = "runs"


@dataclass(frozen=True)
class DataSection:
    dataset: str = "digits"
    label_column: str = "label"
    institutions: int = 10
    partition: str = "dirichlet"
    alpha: float = 0.5
    classes_per_institution: int = 2
    validation_fraction: float = 0.15
    test_fraction: float = 0.15
    name_prefix: str = "hospital"
    # dataset = "files": a pilot, where nobody pools data. Each institution's node reads its own file (node config
    # `institution`, `data-path`); the coordinator validates and tests on its own files; all are checked against
    # the schema below (fedlearn.data.schema). Lists are comma-separated.
    features: int = 0
    classes: str = ""
    feature_columns: str = ""
    validation_path: str = ""
    test_path: str = ""
    institution_names: str = ""
    registered_examples: str = ""  # each institution's example count, registered at provisioning
    # TOML `institution = node id`: the authenticated SuperNode registered for each institution. Given, a reply
    # belongs to its node's institution, whatever name it claims.
    node_registry: str = ""
    # The pilot's federation (its CA certificate's SHA-256, from the kits): a node whose kit names another is refused.
    federation_id: str = ""


@dataclass(frozen=True)
class ModelSection:
    name: str = "mlp"
    hidden_units: int = 64
    hidden_layers: int = 1


@dataclass(frozen=True)
class TrainSection:
    # The demo's settings, under which benchmarks/integrity.py measured the checks' figures: the free-rider and
    # backdoor checks read the length and direction of local updates, which these set.
    local_epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    proximal_mu: float = 0.0
    # "auto" picks CUDA when present, else CPU.
    device: str = "auto"


@dataclass(frozen=True)
class StrategySection:
    name: str = "fedavg"
    # Aggregation weights: "registered" caps each reply's claimed example count at the count the coordinator
    # registered for the institution; "equal" weighs every reply 1; "claimed" trusts the reply (unsafe).
    weighting: str = "registered"
    fraction_train: float = 1.0
    # Byzantine tolerance f for Krum, MultiKrum and Bulyan.
    num_malicious: int = 0
    multikrum_select: int = 0
    trimmed_beta: float = 0.2
    server_learning_rate: float = 0.1
    # Faults: a round starts once `min_nodes` institutions are connected (0: every one) and waits at most
    # `round_timeout` seconds for replies; the run stops, with an error, after `node_wait` seconds below quorum.
    # An institution missing from a round earns nothing for it and is not slashed for it.
    min_nodes: int = 0
    round_timeout: float = 600.0
    node_wait: float = 600.0


@dataclass(frozen=True)
class ScoringSection:
    # "banzhaf" (default): splitting an institution over identities does not raise what it earns (see
    # fedlearn.scoring.banzhaf); "gtg" / "shapley" follow the retraining Shapley value no closer and can pay sybils
    # more than the whole; "loo" misses redundant contributors.
    method: str = "banzhaf"
    # "server": utility on the server's validation split; "peers": voters score each update on local data.
    validation: str = "server"
    # U(S): "brier" (minus the Brier score), "neg_loss" (minus the log-loss), "margin" (σ of the correct class's
    # logit less its strongest rival's) or "accuracy" on the server's validation split. The smooth three move with
    # every example's probabilities; accuracy moves in steps.
    utility: str = "brier"
    # A round's gain counts (and pays) only when a paired bootstrap over validation examples puts its lower
    # `confidence` bound above min_gain ("none": any gain above min_gain counts).
    significance: str = "bootstrap"
    confidence: float = 0.95
    bootstrap_samples: int = 1000
    # The smallest gain that counts, in utility units: a model that barely moved (every example's Brier score
    # changed by a ten-thousandth) has a tight bootstrap interval above zero and would otherwise release the whole
    # budget at the true-up for nothing learnt. One example turning right moves accuracy by 1/n, far above it.
    min_gain: float = 1e-4
    gtg_within_round_epsilon: float = 1e-3
    gtg_between_round_epsilon: float = 1e-3
    gtg_convergence_tolerance: float = 0.05
    gtg_max_permutations: int = 0
    # Banzhaf beyond 2^n > banzhaf_samples: at most that many coalitions are drawn, fewer once the estimate's
    # normalised L1 error is within banzhaf_tolerance at 95 % (each institution's interval is in rounds.json).
    banzhaf_samples: int = 1024
    banzhaf_tolerance: float = 0.05
    # How Banzhaf is estimated below 2^n evaluations: "regression" (any n; stops early at banzhaf_tolerance),
    # "surrogate" (at most 12 institutions; a Gaussian-process model of the utility over the coalitions' weight
    # shares, evaluated where it is least sure: a quarter of the regression's error at 10 % of 2^n evaluations on
    # real rounds, ~2 s of CPU a round at n = 12; fedlearn.scoring.banzhaf_surrogate) or "auto" (default: the
    # surrogate where it models the game — FedAvg, FedProx, FedAdam with at most 12 updates and a budget from 2n + 4
    # to half the 2^n coalitions — else the regression, which also scores a round the surrogate cannot fit;
    # resolved every round, recorded as the round's "estimator").
    banzhaf_estimator: str = "auto"


ENGINES = ("ray", "local")


@dataclass(frozen=True)
class SimulationSection:
    # "ray": Flower's simulation engine; "local": the same apps in this process, one client at a time.
    engine: str = "ray"
    # torch threads in the coordinator's process (0: torch's default). Scoring runs hundreds of tiny model
    # evaluations a round, where threads only contend: one is several times faster on a busy machine.
    server_threads: int = 1
    client_cpus: float = 1.0
    client_gpus: float = 0.0


FILES = "files"  # data.dataset: every party reads its own file
# Keys that name files (data.dataset when it is not a bundled dataset's name); a run may find the first five
# elsewhere when it resumes (what they hold is checked otherwise), but not other addresses or node registrations.
MOVABLE_KEYS = ("data.dataset", "data.validation_path", "data.test_path", "chain.deployment", "chain.keystore")
PATH_KEYS = (*MOVABLE_KEYS, "chain.addresses", "data.node_registry")
FUNDING_MODES = ("total", "per_round", "none")


@dataclass(frozen=True)
class ChainSection:
    enabled: bool = True
    # "eth-tester" (embedded, in the run directory) or an http(s) JSON-RPC URL.
    backend: str = "eth-tester"
    # An existing deployment file to attach to; "" deploys fresh contracts.
    deployment: str = ""
    chain_id: int = 0
    key_env: str = "FEDLEARN_PRIVATE_KEY"
    keystore: str = ""
    password_env: str = "FEDLEARN_KEYSTORE_PASSWORD"
    # The run's budget is reward_per_round x run.rounds tokens, shared out by contribution (fedlearn.payout.schedule).
    reward_per_round: float = 100.0
    # "total": fund every round's budget up front; "per_round": before each round; "none": use existing funds.
    funding: str = "total"
    # A TOML file mapping institution name → address (pilots); "" derives simulated addresses.
    addresses: str = ""
    # Submit every institution's claim when the run ends (simulated institutions on eth-tester only).
    claim_at_end: bool = True
    # How long the end of a run keeps retrying settlements queued while the node was unreachable.
    retry_seconds: float = 60.0


@dataclass(frozen=True)
class PayoutSection:
    # Share of the run's budget (chain.reward_per_round x run.rounds) released as the run goes, in proportion to
    # the validated gain; the last round trues every institution up to its share of the cumulative
    # contribution. 0: everything at the end; 1: as fast as the gains come (a larger true-up error). What is
    # released can never be taken back, so an institution that turns harmful later keeps it: a quarter keeps that
    # small at no measured cost in fit (README, "Tests and benchmarks").
    interim_fraction: float = 0.25
    # How a round's scores count in an institution's contribution (what the tokens follow). "equal": in utility
    # units, every round alike. "headroom" (an option): divided by the error left at the round's start, so a score
    # counts as the share of that error the update removed: tokens closer to the retraining Shapley value, but late
    # rounds, where a near-idle update that shortens the step helps, then outweigh the early ones where it hurts
    # (low-effort updates, near-copies and sybils are paid: fedlearn.weaker_options).
    round_weight: str = "equal"


@dataclass(frozen=True)
class IntegritySection:
    # Simulated behaviours, e.g. "hospital-03=sign_flip:scale=4, hospital-05=free_rider" (default: all honest).
    behaviours: str = ""
    # Free riders: an update whose residual (after the past global steps) lies no more in the span of the other
    # updates' residuals than noise would (score < kappa, or below the line noise passes with probability 1e-6
    # where that is lower; noise scores ~1) is set aside (fedlearn.federation.free_riders). 0 turns the check off.
    free_rider_kappa: float = 5.0
    # Boosted updates (an option, off by default): one that moves the model more than this many times as far per
    # local step (steps from the registered example counts) as the round's reference is clipped to that length and
    # not paid for the round (fedlearn.federation.step_lengths). Off, boosting still earns at most half of what
    # honest work earns; on (3), it earns about nothing, and so do late rounds of institutions with noisy labels.
    scaled_update_limit: float = 0.0
    # Backdoors planted together: an institution that grows a hidden unit with another, in the same direction every
    # round from a few inputs, is set aside in each round its pair score exceeds this (fedlearn.federation.unit_growth:
    # honest institutions have scored at most 0.72, on Dirichlet α = 0.05 partitions; planters at α = 0.5 1.24
    # and more when first caught). Not evidence against a stake. 0: no check.
    backdoor_threshold: float = 1.0
    # An update whose contribution score on the server's validation split is negative (the round's model is
    # better without it) is left out of the aggregate: sign flips, label flips and noise never reach the model.
    # Under peer validation, an update whose voters' consensus is negative is left out the same way (noisy votes
    # leave about half of the honest updates out too, at no measured cost in accuracy; three sign flippers let in
    # cost up to 15.9 points).
    exclude_harmful: bool = True
    # Backdoors: the last round's aggregate (the model a run publishes) has its output layer re-initialised and
    # refitted on the server's validation split, features frozen, with this L2 penalty (fedlearn.learning.head):
    # a trigger's path through units clean data does not use is cut. After that round is scored.
    refit_output_layer: bool = True
    refit_l2: float = 1e-4
    # ... and with noisy copies of the validation rows beside the clean ones (Gaussian noise of this standard
    # deviation on every feature, in the features' own units: standard deviations once standardised; 0: none).
    refit_noise: float = 1.0
    # ... but only where k-fold cross-validation on the validation split (this many folds; 0: no check) says the
    # refit costs accuracy no more than refit_max_drop points: on some data a small split refits worse than
    # training fitted. A model kept unrefitted keeps whatever was planted in it, so the tolerance is not tight:
    # the accuracy drop the integrity benchmark allows an attack (2 points; 5 rows of a 270-row split).
    refit_check_folds: int = 5
    refit_max_drop: float = 2.0
    # Fraction of institutions drawn each round as voters when scoring.validation = "peers".
    voters_fraction: float = 0.3
    # Peer validation: share of each round's positive scores paid to its voters by agreement with the consensus.
    validator_share: float = 0.1
    # Slashing: flagged when, in k of its last m rounds, an update was rejected or scored below -threshold.
    slash: bool = True
    # Conservative defaults: on non-IID data an honest update can cost a point or two in an unlucky round.
    slash_threshold: float = 0.03
    slash_k: int = 3
    slash_m: int = 4
    slash_fraction: float = 0.5
    # Tokens each institution stakes before joining, what a slash takes from (0: no stake asked, nothing to slash:
    # a weaker option). On a node, institutions stake on the attached deployment first (`fedlearn chain stake`).
    min_stake: float = 10.0


LEGACY_VALUES: dict[str, Any] = {"integrity.refit_noise": 0.0, "integrity.refit_check_folds": 0,
                                 "integrity.backdoor_threshold": 0.0, "scoring.min_gain": 0.0,
                                 "payout.round_weight": "equal"}
"""What a key added since meant before it existed: a saved run config that lacks it was made with this value, so a
run resumed from it replays as it was made (a crash between settling the last round and checkpointing it is
recovered by refitting the published model again, which must give the same bits)."""


@dataclass(frozen=True)
class RunConfig:
    run: RunSection = field(default_factory=RunSection)
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)
    strategy: StrategySection = field(default_factory=StrategySection)
    scoring: ScoringSection = field(default_factory=ScoringSection)
    simulation: SimulationSection = field(default_factory=SimulationSection)
    chain: ChainSection = field(default_factory=ChainSection)
    payout: PayoutSection = field(default_factory=PayoutSection)
    integrity: IntegritySection = field(default_factory=IntegritySection)

    # ---- construction ------------------------------------------------------------------------------------

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> RunConfig:
        """Build from ``section.key`` → value pairs; unknown keys and ill-typed values are errors."""
        sections: dict[str, dict[str, Any]] = {}
        known = _known_keys()
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"unknown config key {key!r} ({_nearest_keys(key, known)})")
            section, name = key.split(".", 1)
            sections.setdefault(section, {})[name] = _coerce(key, value, known[key])
        built = {s.name: s.type_cls(**sections.get(s.name, {})) for s in _section_fields()}
        config = cls(**built)
        config.validate()
        return config

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
        """Read a TOML file (or the defaults), then apply ``key=value`` overrides."""
        flat: dict[str, Any] = {}
        if path is not None:
            flat.update(_flatten_toml(Path(path)))
        flat.update(parse_overrides(overrides or []))
        return cls.from_flat(flat)

    @classmethod
    def load_saved(cls, path: str | Path) -> RunConfig:
        """A run's own saved config.toml: a key added since, which the file cannot hold, takes the value the run
        was made with (``LEGACY_VALUES``), not today's default, so resuming and verifying replay what was done."""
        legacy = {key: value for key, value in LEGACY_VALUES.items() if key not in cls.keys_given(path)}
        saved = cls.load(path)
        return cls.from_flat({**saved.flat(), **legacy}) if legacy else saved

    @staticmethod
    def keys_given(path: str | Path | None = None, overrides: list[str] | None = None) -> set[str]:
        """The ``section.key`` names a TOML file and ``key=value`` overrides set themselves (not the defaults that
        :meth:`load` fills in around them)."""
        return set(_flatten_toml(Path(path)) if path is not None else {}) | set(parse_overrides(overrides or []))

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        return cls.from_flat(json.loads(text))

    # ---- export -----------------------------------------------------------------------------------------

    def flat(self) -> dict[str, Any]:
        """``section.key`` → value, the form Flower's run config and ``--set`` use."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            for k, v in dataclasses.asdict(getattr(self, f.name)).items():
                out[f"{f.name}.{k}"] = v
        return out

    def to_json(self) -> str:
        return json.dumps(self.flat(), sort_keys=True)

    def to_toml(self) -> str:
        lines: list[str] = []
        for f in dataclasses.fields(self):
            lines.append(f"[{f.name}]")
            for k, v in dataclasses.asdict(getattr(self, f.name)).items():
                lines.append(f"{k} = {json.dumps(v)}")
            lines.append("")
        return "\n".join(lines)

    def anchored(self) -> RunConfig:
        """The same config with the files it names given by absolute path, so that the run directory it is saved
        in resumes from any working directory (a bundled dataset's name stays a name)."""
        flat = self.flat()
        for key in PATH_KEYS:
            value = flat[key]
            if value and (key != "data.dataset" or Path(value).suffix) and Path(value).exists():
                flat[key] = str(Path(value).resolve())
        return self if flat == self.flat() else RunConfig.from_flat(flat)

    def replace(self, **sections: Any) -> RunConfig:
        """A copy with some sections' fields replaced: ``cfg.replace(run={"rounds": 3})``."""
        updated = {
            name: dataclasses.replace(getattr(self, name), **changes) for name, changes in sections.items()
        }
        config = dataclasses.replace(self, **updated)
        config.validate()
        return config

    # ---- validation -------------------------------------------------------------------------------------

    def validate(self) -> None:
        """Raise ConfigError naming the first invalid value."""
        ch = self.chain
        _check(ch.backend == "eth-tester" or ch.backend.startswith(("http://", "https://")), "chain.backend",
               ch.backend, "must be eth-tester or an http(s) JSON-RPC URL")
        _check(ch.chain_id >= 0, "chain.chain_id", ch.chain_id, "must be >= 0 (0: any)")
        _check(ch.reward_per_round >= 0, "chain.reward_per_round", ch.reward_per_round, "must be >= 0")
        _one_of("chain.funding", ch.funding, FUNDING_MODES)
        _check(ch.retry_seconds >= 0, "chain.retry_seconds", ch.retry_seconds, "must be >= 0")
        r, d, m, t, s, sc, sim = (
            self.run,
            self.data,
            self.model,
            self.train,
            self.strategy,
            self.scoring,
            self.simulation,
        )
        _check(r.rounds >= 1, "run.rounds", r.rounds, "must be at least 1")
        _check(bool(r.name.strip()), "run.name", r.name, "must not be empty")
        # The run directory is <output_dir>/<name>-<time>: a name that is a path would put it elsewhere.
        _check(not any(c in r.name for c in "/\\\0") and r.name.strip() not in (".", ".."), "run.name", r.name,
               "must be a plain name (no / or \\), not a path")
        _check(d.institutions >= 1, "data.institutions", d.institutions, "must be at least 1")
        if d.dataset == FILES:
            _check_files_mode(self)
        _one_of("data.partition", d.partition, PARTITION_SCHEMES)
        _check(d.alpha > 0, "data.alpha", d.alpha, "must be > 0")
        _check(bool(d.name_prefix.strip()), "data.name_prefix", d.name_prefix,
               "must name the institutions (hospital-01, …): a non-empty prefix")
        _check(d.classes_per_institution >= 1, "data.classes_per_institution", d.classes_per_institution,
               "must be at least 1")
        for key, frac in (("data.validation_fraction", d.validation_fraction),
                          ("data.test_fraction", d.test_fraction)):
            _check(0 < frac < 1, key, frac, "must be in (0, 1)")
        _check(d.validation_fraction + d.test_fraction < 1, "data.test_fraction", d.test_fraction,
               "plus data.validation_fraction must be < 1")
        _one_of("model.name", m.name, MODEL_NAMES)
        _check(m.hidden_units >= 1, "model.hidden_units", m.hidden_units, "must be at least 1")
        _check(m.hidden_layers >= 1, "model.hidden_layers", m.hidden_layers, "must be at least 1")
        _check(t.local_epochs >= 1, "train.local_epochs", t.local_epochs, "must be at least 1")
        _check(t.batch_size >= 1, "train.batch_size", t.batch_size, "must be at least 1")
        _check(t.learning_rate > 0, "train.learning_rate", t.learning_rate, "must be > 0")
        _one_of("train.optimizer", t.optimizer, OPTIMIZER_NAMES)
        _check(0 <= t.momentum < 1, "train.momentum", t.momentum, "must be in [0, 1)")
        _check(t.proximal_mu >= 0, "train.proximal_mu", t.proximal_mu, "must be >= 0")
        _check(t.device == "auto" or t.device == "cpu" or t.device.startswith("cuda"), "train.device",
               t.device, "must be auto, cpu, cuda or cuda:N")
        _one_of("strategy.name", s.name, STRATEGY_NAMES)
        _one_of("strategy.weighting", s.weighting, WEIGHTINGS)
        _check(0 < s.fraction_train <= 1, "strategy.fraction_train", s.fraction_train, "must be in (0, 1]")
        _check(s.num_malicious >= 0, "strategy.num_malicious", s.num_malicious, "must be >= 0")
        _check(self.run.output_dir.strip() != "", "run.output_dir", self.run.output_dir,
               "must name a directory ('.' for the working directory)")
        _check(s.multikrum_select >= 0, "strategy.multikrum_select", s.multikrum_select, "must be >= 0")
        _check(0 <= s.trimmed_beta < 0.5, "strategy.trimmed_beta", s.trimmed_beta, "must be in [0, 0.5)")
        _check(s.server_learning_rate > 0, "strategy.server_learning_rate", s.server_learning_rate,
               "must be > 0")
        _check(0 <= s.min_nodes <= d.institutions, "strategy.min_nodes", s.min_nodes,
               f"must be in [0, data.institutions = {d.institutions}] (0: every institution)")
        _check(0 < s.round_timeout < math.inf, "strategy.round_timeout", s.round_timeout, "must be a positive number "
               "of seconds")
        _check(0 < s.node_wait < math.inf, "strategy.node_wait", s.node_wait, "must be a positive number of seconds")
        _one_of("scoring.method", sc.method, SCORING_METHODS)
        _one_of("scoring.utility", sc.utility, UTILITIES)
        _one_of("scoring.validation", sc.validation, VALIDATION_SOURCES)
        _one_of("scoring.significance", sc.significance, SIGNIFICANCE_TESTS)
        _check(0.5 < sc.confidence < 1, "scoring.confidence", sc.confidence, "must be in (0.5, 1)")
        _check(0 <= sc.min_gain < 1, "scoring.min_gain", sc.min_gain, "must be in [0, 1) (utility units)")
        _check(sc.bootstrap_samples >= 100, "scoring.bootstrap_samples", sc.bootstrap_samples, "must be at least 100")
        _check(sc.banzhaf_samples >= 16, "scoring.banzhaf_samples", sc.banzhaf_samples, "must be at least 16")
        _check(0 <= sc.banzhaf_tolerance < 1, "scoring.banzhaf_tolerance", sc.banzhaf_tolerance, "must be in [0, 1)")
        _one_of("scoring.banzhaf_estimator", sc.banzhaf_estimator, BANZHAF_ESTIMATORS)
        _one_of("payout.round_weight", self.payout.round_weight, ROUND_WEIGHTS)
        _check(0 <= self.payout.interim_fraction <= 1, "payout.interim_fraction", self.payout.interim_fraction,
               "must be in [0, 1] (the share of the budget paid before the final true-up)")
        g = self.integrity
        _check(0 < g.voters_fraction <= 1, "integrity.voters_fraction", g.voters_fraction, "must be in (0, 1]")
        _check(0 <= g.validator_share < 1, "integrity.validator_share", g.validator_share, "must be in [0, 1)")
        _check(g.min_stake >= 0, "integrity.min_stake", g.min_stake, "must be >= 0")
        _check(0 <= g.refit_l2 < 1, "integrity.refit_l2", g.refit_l2, "must be in [0, 1)")
        _check(0 <= g.refit_noise <= 10, "integrity.refit_noise", g.refit_noise,
               "must be in [0, 10] (a standard deviation of input noise; 0: no noisy copies)")
        _check(g.refit_check_folds == 0 or 2 <= g.refit_check_folds <= 20, "integrity.refit_check_folds",
               g.refit_check_folds, "must be 0 (no check) or in [2, 20]")
        _check(0 <= g.refit_max_drop <= 100, "integrity.refit_max_drop", g.refit_max_drop,
               "must be in [0, 100] (accuracy points the refit may cost)")
        _check(g.scaled_update_limit == 0 or 1.5 <= g.scaled_update_limit <= 100, "integrity.scaled_update_limit",
               g.scaled_update_limit, "must be 0 (off) or in [1.5, 100] (honest updates reach 2.2x the reference)")
        _check(0 <= g.free_rider_kappa <= 100, "integrity.free_rider_kappa", g.free_rider_kappa,
               "must be in [0, 100] (0: no free-rider check; noise scores about 1)")
        _check(0 <= g.backdoor_threshold <= 100, "integrity.backdoor_threshold", g.backdoor_threshold,
               "must be in [0, 100] (0: no backdoor check; 1: the default, measured)")
        _check(g.slash_threshold >= 0, "integrity.slash_threshold", g.slash_threshold,
               "must be >= 0 (a score below -threshold counts as harmful)")
        _check(g.slash_k >= 2, "integrity.slash_k", g.slash_k,
               "would slash on a single bad round; one unlucky round must not slash an institution (use >= 2)")
        _check(g.slash_m >= g.slash_k, "integrity.slash_m", g.slash_m,
               f"cannot hold integrity.slash_k = {g.slash_k} bad rounds (need slash_k <= slash_m)")
        _check(0 < g.slash_fraction <= 1, "integrity.slash_fraction", g.slash_fraction,
               "must be in (0, 1] (more than the stake cannot be slashed)")
        if sc.method == "shapley":
            _check(d.institutions <= 10, "data.institutions", d.institutions,
                   "exceeds 10, the limit for exact Shapley (use scoring.method = \"gtg\")")
        for key, eps in (("scoring.gtg_within_round_epsilon", sc.gtg_within_round_epsilon),
                         ("scoring.gtg_between_round_epsilon", sc.gtg_between_round_epsilon),
                         ("scoring.gtg_convergence_tolerance", sc.gtg_convergence_tolerance)):
            _check(eps >= 0, key, eps, "must be >= 0")
        _check(sc.gtg_max_permutations >= 0, "scoring.gtg_max_permutations", sc.gtg_max_permutations,
               "must be >= 0 (0: automatic)")
        _one_of("simulation.engine", sim.engine, ENGINES)
        _check(sim.server_threads >= 0, "simulation.server_threads", sim.server_threads, "must be >= 0 (0: default)")
        _check(sim.client_cpus > 0, "simulation.client_cpus", sim.client_cpus, "must be > 0")
        _check(sim.client_gpus >= 0, "simulation.client_gpus", sim.client_gpus, "must be >= 0")


# ---- helpers ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SectionField:
    name: str
    type_cls: type


def _section_fields() -> list[_SectionField]:
    hints = {
        "run": RunSection,
        "data": DataSection,
        "model": ModelSection,
        "train": TrainSection,
        "strategy": StrategySection,
        "scoring": ScoringSection,
        "simulation": SimulationSection,
        "chain": ChainSection,
        "payout": PayoutSection,
        "integrity": IntegritySection,
    }
    return [_SectionField(f.name, hints[f.name]) for f in dataclasses.fields(RunConfig)]


def _nearest_keys(key: str, known: Iterable[str]) -> str:
    """What to say of an unknown key: the known ones it is likely a typo of, else its section's keys, else the
    sections (the whole list of keys is a hundred names on one line)."""
    known = sorted(known)
    # A key in the wrong section (or none) is found by its own name.
    close = [k for k in known if k.split(".", 1)[1] == key.rsplit(".", 1)[-1]]
    close = close or difflib.get_close_matches(key, known, n=3, cutoff=0.75)
    if close:
        return f"did you mean {' or '.join(close)}?"
    section = key.split(".", 1)[0]
    same = [k for k in known if k.startswith(section + ".")]
    if same:
        return f"{section} keys: {', '.join(k.split('.', 1)[1] for k in same)}"
    sections = sorted({k.split(".", 1)[0] for k in known})
    return f"sections: {', '.join(sections)}; `fedlearn config` prints every key with its value"


def _known_keys() -> dict[str, type]:
    known: dict[str, type] = {}
    for section in _section_fields():
        for f in dataclasses.fields(section.type_cls):
            known[f"{section.name}.{f.name}"] = type(f.default)
    return known


def _coerce(key: str, value: Any, target: type) -> Any:
    if target is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if target is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key {key!r} must be a finite number, got {value!r}")
    if target is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, target) or (target is int and isinstance(value, bool)):
        raise ConfigError(f"config key {key!r} expects {target.__name__}, got {value!r}")
    return value


def _parse_override(raw: str) -> Any:
    """``3`` → int, ``0.5`` → float, ``true`` → bool, ``"x"`` or ``x`` → str."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``section.key=value`` strings (``--set``) as key → typed value."""
    flat: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        flat[key.strip()] = _parse_override(raw.strip())
    return flat


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """A TOML file as a table; one line naming ``what`` it is when it cannot be read or parsed."""
    try:
        return tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from None


def _flatten_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        doc = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    flat: dict[str, Any] = {}
    for section, table in doc.items():
        if not isinstance(table, dict):
            raise ConfigError(f"config file {path}: top-level key {section!r} must be a [table]")
        for key, value in table.items():
            flat[f"{section}.{key}"] = value
    return flat


def _check(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"{key} = {value!r} {why}")


def _one_of(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {key} {value!r} (choose from {', '.join(choices)})")


def split_list(text: str) -> list[str]:
    """A comma-separated config list."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _check_files_mode(config: RunConfig) -> None:
    """A pilot's data settings: the schema, the coordinator's own files, the institutions and their counts."""
    d = config.data
    _check(d.features >= 1, "data.features", d.features, "must be the schema's number of feature columns")
    _check(len(split_list(d.classes)) >= 2, "data.classes", d.classes, "must list the federation's classes")
    _check(bool(d.validation_path), "data.validation_path", d.validation_path, "must name the coordinator's file")
    _check(bool(d.test_path), "data.test_path", d.test_path, "must name the coordinator's file")
    names = split_list(d.institution_names)
    _check(len(names) == d.institutions and len(set(names)) == len(names), "data.institution_names",
           d.institution_names, f"must name the {d.institutions} institutions, each once")
    counts = split_list(d.registered_examples)
    if config.strategy.weighting == "registered":
        _check(len(counts) == d.institutions and all(c.isdigit() and int(c) > 0 for c in counts),
               "data.registered_examples", d.registered_examples,
               f"must give the {d.institutions} example counts registered at provisioning (or set "
               "strategy.weighting = 'equal')")
    _check(not config.integrity.behaviours, "integrity.behaviours", config.integrity.behaviours,
           "simulates attacks, which a pilot's own files do not")

