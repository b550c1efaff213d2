"""The ``fedlearn`` command line: run, claim, settle, verify, report; ``chain``, ``license`` and ``gov``."""

from fedlearn.cli.main import main

__all__ = ["main"]
