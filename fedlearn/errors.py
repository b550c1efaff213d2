"""Errors that reach the user as one line and a non-zero exit code."""

from __future__ import annotations


class FedlearnError(Exception):
    """Base of every error the CLI turns into one line and ``exit_code``."""

    exit_code: int = 1


class ConfigError(FedlearnError):
    """A configuration key or value is invalid."""

    exit_code = 2


class DataError(FedlearnError):
    """A dataset cannot be loaded or partitioned as asked."""

    exit_code = 3


class ScoringError(FedlearnError):
    """A contribution-scoring method cannot run on this input."""

    exit_code = 4


class ChainError(FedlearnError):
    """The chain refused or could not be reached."""

    exit_code = 5
