"""The institution's ClientApp (``flwr run .``): local training and peer votes live in
:mod:`fedlearn.federation.institution`."""

from fedlearn.federation.institution import build_client_app

app = build_client_app()
