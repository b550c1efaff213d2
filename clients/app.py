"""The institution's ClientApp: train the global model on local data only, reply weights and counts."""

from __future__ import annotations

import dataclasses

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedlearn.config import RunConfig
from fedlearn.federation import institution_data
from fedlearn.models import build_model
from fedlearn.replies import ARRAYS_KEY, EXAMPLES_KEY, INSTITUTION_KEY, META_KEY, METRICS_KEY
from fedlearn.training import select_device, train


def build_client_app(config: RunConfig | None = None) -> ClientApp:
    """A ClientApp for ``config`` (or, under ``flwr run``, the run config Flower passes in)."""
    app = ClientApp()

    @app.train()
    def train_round(msg: Message, context: Context) -> Message:
        cfg = config or RunConfig.from_flat(context.run_config)
        partition_id = int(context.node_config["partition-id"])
        name, data = institution_data(cfg, partition_id)
        server_config = msg.content["config"]
        server_round = int(server_config["server-round"])
        spec = cfg.train
        if "proximal-mu" in server_config:  # FedProx tells clients the proximal weight
            spec = dataclasses.replace(spec, proximal_mu=float(server_config["proximal-mu"]))

        model = build_model(cfg.model, data.X.shape[1], data.num_classes)
        model.load_state_dict(msg.content[ARRAYS_KEY].to_torch_state_dict())
        result = train(model, data.X, data.y, spec, select_device(spec.device),
                       seed=cfg.run.seed * 100_003 + server_round * 1_009 + partition_id)

        reply = RecordDict({
            ARRAYS_KEY: ArrayRecord(model.cpu().state_dict()),
            METRICS_KEY: MetricRecord({EXAMPLES_KEY: result.num_examples, "train-loss": result.train_loss}),
            META_KEY: ConfigRecord({INSTITUTION_KEY: name}),
        })
        return Message(content=reply, reply_to=msg)

    return app


app = build_client_app()
