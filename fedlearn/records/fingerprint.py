"""A model's fingerprint: sha256 over its arrays in a canonical encoding (names sorted; dtype, shape, bytes).

The same weights give the same 32 bytes wherever they are hashed, whichever file format holds them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np


def model_hash(arrays: Mapping[str, np.ndarray]) -> str:
    """0x-prefixed hex sha256 of ``arrays``."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        value = np.ascontiguousarray(arrays[name])
        header = f"{name}|{value.dtype.str}|{','.join(map(str, value.shape))}|".encode()
        digest.update(len(header).to_bytes(4, "big") + header)
        digest.update(value.tobytes())
    return "0x" + digest.hexdigest()
