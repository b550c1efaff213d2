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


# A server update longer than this is refused: half of float64's largest value, so that rescaling a unit vector (whose
# entries may round a hair above 1) to ‖g₀‖ can never overflow.
_MAX_NORM = float(np.finfo(np.float64).max) / 2


def fltrust(server_update: np.ndarray, client_updates: Sequence[np.ndarray]) -> TrustResult:
    """Trust scores, weights and the trust-weighted aggregate of magnitude-normalised client updates.

    A zero server update trusts nobody (it points nowhere); a zero client update earns trust 0. Any other update,
    however tiny, is a direction like any other (norms are computed scaled, see :func:`_directions`). The aggregate
    is never longer than the server update; a server update whose norm exceeds ``_MAX_NORM`` is refused.
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
    anchor_units, anchor_norms = _directions(anchor[None, :])
    anchor_unit, anchor_norm = anchor_units[0], float(anchor_norms[0])
    if not anchor_norm <= _MAX_NORM:
        raise ScoringError(f"server update is too large: its norm exceeds {_MAX_NORM:.3g}")
    units, norms = _directions(clients)
    usable = norms > 0
    trust = np.zeros(len(clients))
    if anchor_norm > 0 and usable.any():
        cosine = units[usable] @ anchor_unit
        trust[usable] = np.clip(cosine, 0.0, 1.0)  # ReLU; the upper clip only absorbs rounding above 1
    total = float(trust.sum())
    weights = trust / total if total > 0 else np.zeros_like(trust)
    # Each ḡ_i is unit_i · ‖g₀‖: no squares of raw values, so no underflow for tiny updates nor overflow for huge ones.
    aggregate = (weights @ units) * anchor_norm if len(clients) else np.zeros_like(anchor)
    # The rule: ‖aggregate‖ ≤ ‖g₀‖, exactly as _directions measures lengths. Unit vectors and the weighted sum can
    # round a few ulps long; shrink until they do not (each pass shrinks more, ending at the zero update at worst).
    shrink = 2.0**-52
    while (length := float(_directions(aggregate[None, :])[1][0])) > anchor_norm:
        aggregate = aggregate * (anchor_norm / length * (1.0 - shrink))
        shrink = min(2.0 * shrink, 1.0)
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


def _directions(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's unit vector (zero for a zero row) and Euclidean norm, without underflow or overflow.

    Squaring the raw values underflows below ~1e-154 (3.6e-159² is subnormal, 1e-170² is 0) and overflows above
    ~1e154, so a tiny update's norm came out several ppm off, or 0. Dividing each row by its largest magnitude first
    puts the squares in [0, 1] with at least one equal to 1: the norm and the direction are then exact to a few ulps
    at every scale, and only a nonzero row's norm that exceeds float64 (≥ ~1.8e308) comes out infinite.
    """
    scale = np.max(np.abs(rows), axis=1, initial=0.0)
    units = np.zeros_like(rows)
    norms = np.zeros(len(rows))
    nonzero = scale > 0
    if nonzero.any():
        scaled = rows[nonzero] / scale[nonzero, None]
        length = np.sqrt(np.einsum("ij,ij->i", scaled, scaled))  # in [1, √n]
        units[nonzero] = scaled / length[:, None]
        with np.errstate(over="ignore"):
            norms[nonzero] = scale[nonzero] * length
    return units, norms


def _check_finite(values: np.ndarray, what: str) -> None:
    if not np.isfinite(values).all():
        raise ScoringError(f"{what} holds NaN or Inf")
