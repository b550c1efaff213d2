"""The coordinator's ServerApp (``flwr run .``): the round loop lives in :mod:`fedlearn.federation.coordinator`."""

from fedlearn.federation.coordinator import build_server_app

app = build_server_app()
