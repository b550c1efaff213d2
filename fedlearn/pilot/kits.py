"""Startup kits: one directory per party of a pilot, written from its project file.

As NVIDIA FLARE's provisioning does, one file names the federation and every party; each party then gets only
what it needs::

    kits/ca/               the CA's key and certificate: kept by whoever provisions, offline; never handed out
    kits/coordinator/      kit.toml, ca.crt, server.crt + server.key (the SuperLink's TLS), nodes/NAME.pub (the
                           institutions' authentication keys, registered at start), addresses.toml, run.toml,
                           start.sh
    kits/<institution>/    kit.toml (with the schema and the data path to fill in), ca.crt, node.key + node.pub
                           (its SuperNode's authentication key pair), start.sh

Every kit names its federation by the SHA-256 of the CA certificate (``federation_id``); ``fedlearn pilot node``
and ``fedlearn pilot coordinator`` refuse a kit whose files do not belong together or to that federation.
The kits are written to a temporary directory first and moved in place whole: nothing half-written.
"""

from __future__ import annotations

import shutil
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from fedlearn.data.schema import Schema
from fedlearn.errors import ConfigError
from fedlearn.pilot import credentials as cred
from fedlearn.pilot.project import Project

KIT_FILE = "kit.toml"
COORDINATOR = "coordinator"
RUN_FILE = "run.toml"
NODES_FILE = "nodes.toml"
ADDRESSES_FILE = "addresses.toml"
STATE_DIR = "state"

COORDINATOR_START = """#!/bin/sh
# Starts this federation's SuperLink (TLS, node authentication), registers the institutions' keys, runs the
# federation and exits with its outcome. The coordinator's key must be in FEDLEARN_PRIVATE_KEY.
exec fedlearn pilot coordinator "$(cd "$(dirname "$0")" && pwd)" "$@"
"""
NODE_START = """#!/bin/sh
# Starts this institution's SuperNode on its own data file (set data_path in kit.toml, or pass --data-path).
exec fedlearn pilot node "$(cd "$(dirname "$0")" && pwd)" "$@"
"""


@dataclass(frozen=True)
class Kit:
    """A party's kit as read back from its directory."""

    path: Path
    federation: str
    federation_id: str
    party: str
    superlink: str
    table: dict[str, Any]

    @property
    def is_coordinator(self) -> bool:
        return self.party == COORDINATOR

    def schema(self) -> Schema:
        s = self.table["schema"]
        return Schema.parse(s["features"], s["classes"], s["label_column"], s.get("feature_columns", ""))

    @classmethod
    def read(cls, path: Path) -> Kit:
        """The kit in ``path``, its CA checked against the federation it names."""
        path = path.resolve()  # Flower's processes run elsewhere: every path handed to them is absolute
        file = path / KIT_FILE
        try:
            table = tomllib.loads(file.read_text())
            head = table["kit"]
            kit = cls(path, str(head["federation"]), str(head["federation_id"]), str(head["party"]),
                      str(head["superlink"]), table)
        except OSError:
            raise ConfigError(f"{path} is not a pilot kit: {KIT_FILE} cannot be read") from None
        except (tomllib.TOMLDecodeError, KeyError, TypeError):
            raise ConfigError(f"{file} is not a pilot kit file (fedlearn pilot provision writes it)") from None
        ca = cred.read_certificate(path / "ca.crt")
        if cred.federation_id(ca) != kit.federation_id:
            raise ConfigError(f"{path}/ca.crt is not the CA of federation {kit.federation} named in {file}: the kit "
                              "mixes files of another federation")
        return kit


def provision(project: Project, out: Path) -> list[Path]:
    """Write every party's kit under ``out`` (which must not exist or be empty); returns the kit directories."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} already exists and is not empty: kits are written to a new directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        _write(project, staging)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [out / COORDINATOR, *(out / inst.name for inst in project.institutions)]


def _write(project: Project, out: Path) -> None:
    authority = cred.make_authority(project.federation)
    ca_pem = cred.pem_certificate(authority.certificate)
    head = {"federation": project.federation, "federation_id": authority.federation_id,
            "superlink": project.superlink}
    schema = {"features": project.schema.features, "classes": ",".join(project.schema.classes),
              "label_column": project.schema.label_column,
              "feature_columns": ",".join(project.schema.feature_columns)}

    (out / "ca").mkdir()
    (out / "ca" / "ca.crt").write_bytes(ca_pem)
    cred.write_secret(out / "ca" / "ca.key", cred.pem_private_key(authority.key))

    coordinator = out / COORDINATOR
    (coordinator / "nodes").mkdir(parents=True)
    (coordinator / "ca.crt").write_bytes(ca_pem)
    server_key, server_cert = cred.make_server_certificate(authority, project.host, project.federation)
    (coordinator / "server.crt").write_bytes(cred.pem_certificate(server_cert))
    cred.write_secret(coordinator / "server.key", cred.pem_private_key(server_key))

    for inst in project.institutions:
        kit = out / inst.name
        kit.mkdir()
        (kit / "ca.crt").write_bytes(ca_pem)
        key = cred.make_node_key()
        cred.write_secret(kit / "node.key", cred.ssh_private_key(key))
        public = cred.ssh_public_key(key.public_key())
        (kit / "node.pub").write_bytes(public)
        (coordinator / "nodes" / f"{inst.name}.pub").write_bytes(public)
        _toml(kit / KIT_FILE, {
            "kit": {**head, "party": inst.name, "address": inst.address, "examples": inst.examples},
            "schema": schema,
            # Filled in by the institution's IT: where the node reads its own data (CSV, Parquet or NPZ).
            "node": {"data_path": ""},
        })
        _script(kit / "start.sh", NODE_START)

    _toml(coordinator / ADDRESSES_FILE, {inst.name: inst.address for inst in project.institutions})
    _toml(coordinator / KIT_FILE, {"kit": {**head, "party": COORDINATOR}, "schema": schema})
    _toml(coordinator / RUN_FILE, run_config(project, authority.federation_id))
    _script(coordinator / "start.sh", COORDINATOR_START)


def run_config(project: Project, federation_id: str) -> dict[str, dict[str, Any]]:
    """The federation's run config; relative paths are read from the coordinator's kit directory."""
    s = project.schema
    return {
        "run": {"rounds": project.rounds, "output_dir": "runs"},
        "data": {
            "dataset": "files", "institutions": len(project.institutions),
            "institution_names": ",".join(i.name for i in project.institutions),
            "registered_examples": ",".join(str(i.examples) for i in project.institutions),
            "features": s.features, "classes": ",".join(s.classes), "label_column": s.label_column,
            "feature_columns": ",".join(s.feature_columns),
            # The coordinator's own files, to fill in: validation (scoring) and test (reporting) rows.
            "validation_path": "data/validation.csv", "test_path": "data/test.csv",
            "node_registry": f"{STATE_DIR}/{NODES_FILE}", "federation_id": federation_id,
        },
        # Runs pay from the deployment's reward pool, funded once when it is deployed (`chain deploy --governed
        # --reward-pool`, or `chain fund`): a governed deployment's coordinator holds no tokens to fund from.
        "chain": {"backend": project.rpc, "deployment": project.deployment, "addresses": ADDRESSES_FILE,
                  "funding": "none"},
        # Every institution stakes this on the deployment before the run (`fedlearn chain stake`); the coordinator
        # checks before round 1 and stops, naming the first institution short of it.
        "integrity": {"min_stake": project.stake},
    }


def _toml(path: Path, table: dict[str, Any]) -> None:
    path.write_text(tomli_w.dumps(table))


def _script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)
