"""The ``fedlearn`` logger: warnings about money (an unreachable node, queued settlements, slashes, rejected
updates, skipped rounds) always reach the terminal, however quiet Flower and the engine are told to be.

Flower's own logger ("flwr") is silenced in quiet runs; this one is not, and it writes to whatever
``sys.stderr`` is at the time (so a progress bar's or a test's redirection sees it).
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

log = logging.getLogger("fedlearn")


class _CurrentStderr(logging.StreamHandler):
    """A stream handler bound to the current ``sys.stderr``, not the one at import time."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:  # StreamHandler assigns it; the property always reads stderr
        pass


if not log.handlers:
    _handler = _CurrentStderr()
    _handler.setFormatter(logging.Formatter("fedlearn: %(levelname)s: %(message)s"))
    log.addHandler(_handler)
    log.setLevel(logging.WARNING)
    log.propagate = False  # Flower's and Ray's handlers would print it twice
