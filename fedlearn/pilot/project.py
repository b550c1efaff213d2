"""A pilot's project file (``pilot.toml``): the federation, its data schema, the coordinator and the institutions.

One file, written by the pilot lead, from which ``fedlearn pilot provision`` makes every party's kit::

    [federation]
    name = "cardiology-pilot"
    superlink = "10.0.0.5:9092"      # where the institutions' SuperNodes reach the SuperLink
    rounds = 10

    [schema]                         # what every party's data file must look like
    features = 64
    label_column = "digit"
    classes = "0,1,2,3,4,5,6,7,8,9"
    feature_columns = ""             # optional: names and order, for tables

    [chain]
    rpc = "http://10.0.0.5:8545"
    deployment = "deployment.json"   # the federation's contracts (fedlearn chain deploy), in the coordinator's kit
    stake = 10                       # tokens each institution stakes there before joining; what slashes take

    [[institution]]
    name = "clinic-a"
    address = "0x…"                  # EIP-55 checksummed: where it is paid
    examples = 300                   # registered example count: weights aggregation

The file is checked whole before anything is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedlearn.config import read_toml
from fedlearn.data.schema import Schema
from fedlearn.errors import ConfigError, DataError
from fedlearn.payout.settlement import checked_address

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
# Entries of the kits directory besides the institutions' kits: no institution may take their names.
RESERVED = {"coordinator": "the coordinator's kit", "ca": "the kits' certificate authority (kept offline)"}


@dataclass(frozen=True)
class Institution:
    name: str
    address: str
    examples: int


@dataclass(frozen=True)
class Project:
    federation: str
    superlink: str
    rounds: int
    schema: Schema
    rpc: str
    deployment: str
    institutions: tuple[Institution, ...]
    stake: float = 10.0

    @property
    def host(self) -> str:
        return self.superlink.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.superlink.rsplit(":", 1)[1])

    @classmethod
    def load(cls, path: Path) -> Project:
        return cls.parse(read_toml(path, "pilot file"), str(path))

    @classmethod
    def parse(cls, table: dict[str, Any], where: str) -> Project:
        def section(name: str) -> dict[str, Any]:
            value = table.get(name)
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: [{name}] is missing")
            return value

        def field(values: dict[str, Any], key: str, kind: type, what: str, default: Any = None) -> Any:
            value = values.get(key, default)
            if value is None:
                raise ConfigError(f"{where}: {what} is missing")
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ConfigError(f"{where}: {what} must be a {kind.__name__}, got {value!r}")
            return value

        def known(values: dict[str, Any], keys: tuple[str, ...], what: str) -> None:
            # A misspelt key would otherwise fall back to its default unseen (`roundz = 5`: 10 rounds).
            unknown = sorted(set(values) - set(keys))
            if unknown:
                named = f"key {what}.{unknown[0]}" if what else f"section [{unknown[0]}]"
                raise ConfigError(f"{where}: unknown {named} (known: {', '.join(keys)})")

        known(table, ("federation", "schema", "chain", "institution"), "")
        fed, sch, ch = section("federation"), section("schema"), section("chain")
        known(fed, ("name", "superlink", "rounds"), "federation")
        known(sch, ("features", "classes", "label_column", "feature_columns"), "schema")
        known(ch, ("rpc", "deployment", "stake"), "chain")
        name = field(fed, "name", str, "federation.name")
        if not NAME.match(name):
            raise ConfigError(f"{where}: federation.name {name!r} must be lowercase letters, digits, '.', '_' or '-'")
        superlink = host_port(field(fed, "superlink", str, "federation.superlink"), f"{where}: federation.superlink")
        rounds = field(fed, "rounds", int, "federation.rounds", 10)
        if rounds < 1:
            raise ConfigError(f"{where}: federation.rounds must be at least 1, got {rounds}")
        try:
            schema = Schema.parse(field(sch, "features", int, "schema.features"),
                                  field(sch, "classes", str, "schema.classes"),
                                  field(sch, "label_column", str, "schema.label_column", "label"),
                                  field(sch, "feature_columns", str, "schema.feature_columns", ""))
        except DataError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        rpc = field(ch, "rpc", str, "chain.rpc")
        if not rpc.startswith(("http://", "https://")):
            raise ConfigError(f"{where}: chain.rpc {rpc!r} must be an http(s) JSON-RPC URL (a pilot pays on a node)")
        deployment = field(ch, "deployment", str, "chain.deployment", "deployment.json")
        stake = ch.get("stake", 10)
        if isinstance(stake, bool) or not isinstance(stake, int | float) or not 0 <= stake < float("inf"):
            raise ConfigError(f"{where}: chain.stake must be a number of tokens >= 0 (0: nothing staked, nobody "
                              f"slashed), got {stake!r}")
        rows = table.get("institution")
        if not isinstance(rows, list) or len(rows) < 2:
            raise ConfigError(f"{where}: a federation needs at least 2 [[institution]] entries")
        institutions: list[Institution] = []
        for row in rows:
            if not isinstance(row, dict):
                raise ConfigError(f"{where}: every [[institution]] must be a table")
            who = field(row, "name", str, "institution.name")
            known(row, ("name", "address", "examples"), "institution")
            if not NAME.match(who):
                raise ConfigError(f"{where}: institution name {who!r} must be lowercase letters, digits, '.', '_' "
                                  "or '-' (it names a kit directory)")
            examples = field(row, "examples", int, f"institution {who}'s examples")
            if examples < 1:
                raise ConfigError(f"{where}: institution {who}'s examples must be at least 1, got {examples}")
            address = checked_address(who, field(row, "address", str, f"institution {who}'s address"), where)
            institutions.append(Institution(who, address, examples))
        for attribute in ("name", "address"):
            seen: dict[str, str] = {}
            for inst in institutions:
                value = getattr(inst, attribute)
                if value in seen:
                    raise ConfigError(f"{where}: institutions {seen[value]} and {inst.name} share the {attribute} "
                                      f"{value}")
                seen[value] = inst.name
        for inst in institutions:  # names of the kits directory's own entries
            if inst.name in RESERVED:
                raise ConfigError(f"{where}: {inst.name!r} names {RESERVED[inst.name]}; rename that institution")
        return cls(name, superlink, rounds, schema, rpc, deployment, tuple(institutions), float(stake))


def host_port(text: str, what: str) -> str:
    """``text`` when it is HOST:PORT (an IPv6 host in brackets, a port in 1..65535); ConfigError otherwise."""
    well_formed = re.match(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$", text)
    if not well_formed or not 0 < int(text.rsplit(":", 1)[1]) < 65536:
        raise ConfigError(f"{what} {text!r} must be HOST:PORT (a port from 1 to 65535)")
    return text
