"""FLTrust: trust each update by how well its direction agrees with the server's own update. Pure numpy.

Cao, Fang, Liu, Gong, "FLTrust: Byzantine-robust Federated Learning via Trust Bootstrapping", NDSS 2021.
The server trains one step on its own small clean validation data; its update g₀ anchors the round:

- trust_i = ReLU(cos(g_i, g₀)): an update pointing away from the server's (sign flip, label flip) earns 0;
- each g_i is rescaled to ‖g₀‖, so a boosted update weighs no more than its unboosted original;
- aggregate = Σ trust_i · ḡ_i / Σ trust_i, the zero update when every trust is 0 (the global model stays put).

Updates are flat deltas from the round's global model; :func:`flatten` and :func:`unflatten` convert named
arrays to and from one vector in a fixed order (names sorted).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedlearn.errors import ScoringError


@dataclass(frozen=True, eq=False)
class TrustResult:
    """Per-client trust in [0, 1], aggregation weights (trust normalised to sum 1, or all 0), the aggregate."""

    trust: np.ndarray
    weights: np.ndarray
    aggregate: np.ndarray


def fltrust(server_update: np.ndarray, client_updates: Sequence[np.ndarray]) -> TrustResult:
    """Trust scores, weights and the trust-weighted aggregate of magnitude-normalised client updates.

    A zero server update trusts nobody (it points nowhere); a zero client update earns trust 0.
    """
    anchor = np.asarray(server_update, dtype=np.float64).reshape(-1)
    _check_finite(anchor, "server update")
    clients = np.zeros((len(client_updates), anchor.size))
    for i, update in enumerate(client_updates):
        flat = np.asarray(update, dtype=np.float64).reshape(-1)
        if flat.size != anchor.size:
            raise ScoringError(f"client update {i} has {flat.size} values, the server update {anchor.size}")
        _check_finite(flat, f"client update {i}")
        clients[i] = flat
    anchor_norm = float(np.linalg.norm(anchor))
    norms = np.linalg.norm(clients, axis=1)
    usable = norms > 0
    trust = np.zeros(len(clients))
    rescaled = np.zeros_like(clients)
    if anchor_norm > 0 and usable.any():
        cosine = clients[usable] @ anchor / (norms[usable] * anchor_norm)
        trust[usable] = np.clip(cosine, 0.0, 1.0)  # ReLU; the upper clip only absorbs rounding above 1
        rescaled[usable] = clients[usable] * (anchor_norm / norms[usable])[:, None]
    total = float(trust.sum())
    weights = trust / total if total > 0 else np.zeros_like(trust)
    aggregate = weights @ rescaled if len(clients) else np.zeros_like(anchor)
    for array in (trust, weights, aggregate):
        array.setflags(write=False)
    return TrustResult(trust=trust, weights=weights, aggregate=aggregate)


def flatten(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """All arrays as one float64 vector, names sorted."""
    if not arrays:
        return np.zeros(0)
    return np.concatenate([np.asarray(arrays[name], dtype=np.float64).reshape(-1) for name in sorted(arrays)])


def unflatten(vector: np.ndarray, like: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inverse of :func:`flatten`: arrays named, shaped and typed as ``like``, in ``like``'s key order."""
    flat = np.asarray(vector).reshape(-1)
    sizes = {name: int(np.asarray(like[name]).size) for name in like}
    if flat.size != sum(sizes.values()):
        raise ScoringError(f"vector has {flat.size} values, the arrays {sum(sizes.values())}")
    out: dict[str, np.ndarray] = {}
    offset = 0
    for name in sorted(like):
        ref = np.asarray(like[name])
        out[name] = flat[offset : offset + sizes[name]].reshape(ref.shape).astype(ref.dtype)
        offset += sizes[name]
    return {name: out[name] for name in like}


def delta(arrays: Mapping[str, np.ndarray], start: Mapping[str, np.ndarray]) -> np.ndarray:
    """The flat update ``arrays − start``; both must name the same arrays."""
    if set(arrays) != set(start):
        raise ScoringError("update and global model name different arrays")
    return flatten(arrays) - flatten(start)


def fltrust_arrays(
    global_arrays: Mapping[str, np.ndarray],
    server_arrays: Mapping[str, np.ndarray],
    client_arrays: Sequence[Mapping[str, np.ndarray]],
) -> tuple[TrustResult, dict[str, np.ndarray]]:
    """FLTrust on whole models: (the result, the next global model = global + aggregate)."""
    result = fltrust(delta(server_arrays, global_arrays), [delta(c, global_arrays) for c in client_arrays])
    return result, unflatten(flatten(global_arrays) + result.aggregate, global_arrays)


def _check_finite(values: np.ndarray, what: str) -> None:
    if not np.isfinite(values).all():
        raise ScoringError(f"{what} holds NaN or Inf")
