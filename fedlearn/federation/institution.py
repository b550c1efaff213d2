"""An institution's side of a round: train the global model on local data only, reply weights and counts; vote on
other institutions' updates when the server asks (peer validation)."""

from __future__ import annotations

import dataclasses
from typing import cast

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedlearn.config import FILES, RunConfig
from fedlearn.errors import DataError
from fedlearn.federation.peer_votes import cast_votes, local_split, reveal_votes
from fedlearn.federation.replies import ARRAYS_KEY, EXAMPLES_KEY, INSTITUTION_KEY, META_KEY, METRICS_KEY
from fedlearn.federation.roster import Member, institution_data, own_member
from fedlearn.learning.behaviours import Collusion, train_as
from fedlearn.learning.models import build_model
from fedlearn.learning.training import select_device

PREVIOUS_GLOBAL_KEY = "previous-global"


def build_client_app(config: RunConfig | None = None) -> ClientApp:
    """A ClientApp for ``config`` (or, under ``flwr run``, the run config Flower passes in)."""
    app = ClientApp()

    def member_of(context: Context) -> tuple[RunConfig, Member, int]:
        cfg = config or RunConfig.from_flat(context.run_config)
        if cfg.data.dataset == FILES:  # a pilot: this node's own file, named in its node config, and nothing else
            node = context.node_config
            if "institution" not in node or "data-path" not in node:
                raise DataError("a pilot's node config needs institution and data-path (its own data file)")
            if cfg.data.federation_id and str(node.get("federation", "")) != cfg.data.federation_id:
                raise DataError(f"this node's kit is for federation {node.get('federation') or '(none named)'}; "
                                f"the run is federation {cfg.data.federation_id}")
            member, index = own_member(cfg, str(node["institution"]), str(node["data-path"]))
            return cfg, member, index
        partition_id = int(context.node_config["partition-id"])
        return cfg, institution_data(cfg, partition_id), partition_id

    def local_data(cfg: RunConfig, member: Member, partition_id: int) -> tuple:
        X, y = member.data.X, member.data.y
        if cfg.scoring.validation == "peers":  # keep a local validation split for voting
            return local_split(X, y, cfg.run.seed * 1_000 + partition_id)
        return (X, y), (X[:0], y[:0])

    def seed_of(cfg: RunConfig, server_round: int, partition_id: int) -> int:
        return cfg.run.seed * 100_003 + server_round * 1_009 + partition_id

    @app.train()
    def train_round(msg: Message, context: Context) -> Message:
        cfg, member, partition_id = member_of(context)
        (X, y), _ = local_data(cfg, member, partition_id)
        server_config = msg.content.config_records["config"]
        server_round = int(cast(int, server_config["server-round"]))
        collusion = None
        if member.leader is not None:  # a colluder trains on its leader's rows with the leader's seed
            (lead_X, lead_y), _ = local_data(cfg, institution_data(cfg, member.leader), member.leader)
            collusion = Collusion(lead_X, lead_y, seed_of(cfg, server_round, member.leader))
        spec = cfg.train
        if "proximal-mu" in server_config:  # FedProx tells clients the proximal weight
            spec = dataclasses.replace(spec, proximal_mu=float(cast(float, server_config["proximal-mu"])))

        model = build_model(cfg.model, X.shape[1], member.data.num_classes)
        received = msg.content.array_records[ARRAYS_KEY]
        model.load_state_dict(received.to_torch_state_dict())
        # The node's state keeps the global model it received last round (a replaying free rider reads it).
        kept = context.state.array_records.get(PREVIOUS_GLOBAL_KEY)
        previous = {k: v.numpy() for k, v in kept.items()} if kept is not None else None
        _, claimed, result = train_as(member.behaviour, model, X, y, member.data.num_classes, spec,
                                      select_device(spec.device),
                                      seed=seed_of(cfg, server_round, partition_id),
                                      previous=previous, collusion=collusion, server_round=server_round)
        context.state[PREVIOUS_GLOBAL_KEY] = received.copy()

        reply = RecordDict({
            ARRAYS_KEY: ArrayRecord(model.cpu().state_dict()),
            METRICS_KEY: MetricRecord({EXAMPLES_KEY: claimed, "train-loss": result.train_loss}),
            META_KEY: ConfigRecord({INSTITUTION_KEY: member.name}),
        })
        return Message(content=reply, reply_to=msg)

    @app.query("vote")
    def vote(msg: Message, context: Context) -> Message:
        cfg, member, partition_id = member_of(context)
        _, (X, y) = local_data(cfg, member, partition_id)
        # Phase 1 of the ballot: reply only a commitment; the votes and salt wait in the node's state.
        return cast_votes(msg, build_model(cfg.model, X.shape[1], member.data.num_classes), X, y, context.state)

    @app.query("reveal")
    def reveal(msg: Message, context: Context) -> Message:
        # Phase 2, once every voter has committed: reveal the votes and salt kept in phase 1.
        return reveal_votes(msg, context.state)

    return app
