"""Merkle trees byte-compatible with @openzeppelin/merkle-tree's StandardMerkleTree for (address, uint256) leaves.

Same leaf hash (`keccak256(bytes.concat(keccak256(abi.encode(account, amount))))`), same sorted-pair hashing,
same array layout (root at index 0, leaves at the end in reverse order of their sorted hashes), same proofs and
the same `dump()` format, so the library can load a tree written here and the other way round.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eth_abi import encode
from eth_utils import keccak, to_checksum_address

from fedlearn.errors import ChainError

LEAF_ENCODING = ["address", "uint256"]
UINT256_MAX = 2**256 - 1


def leaf_hash(account: str, amount: int) -> bytes:
    """The double-hashed leaf of `(account, amount)`, as StandardMerkleTree and the contract compute it."""
    return keccak(keccak(encode(LEAF_ENCODING, [account, amount])))


def hash_pair(a: bytes, b: bytes) -> bytes:
    return keccak(a + b) if a < b else keccak(b + a)


def process_proof(leaf: bytes, proof: list[bytes]) -> bytes:
    """The root a proof leads to, as MerkleProof.processProof computes it."""
    node = leaf
    for sibling in proof:
        node = hash_pair(node, sibling)
    return node



class InconsistentTree(ChainError):
    """A tree file whose leaves or proofs do not hash to what it says: altered after it was written."""

@dataclass(frozen=True)
class RewardTree:
    """A StandardMerkleTree over cumulative rewards: `values[i] = (account, amount)` sits at `tree_index[i]`."""

    tree: tuple[bytes, ...]
    values: tuple[tuple[str, int], ...]
    tree_index: tuple[int, ...]

    @classmethod
    def of(cls, cumulative: Mapping[str, int]) -> RewardTree:
        """Builds the tree of `cumulative` (account → amount), with the library's default leaf sorting."""
        if not cumulative:
            raise ChainError("cannot build a rewards tree with no accounts")
        values: list[tuple[str, int]] = []
        seen: set[str] = set()
        for account, amount in cumulative.items():
            try:
                checksum = to_checksum_address(account)
            except (ValueError, TypeError):
                raise ChainError(f"invalid account address {account!r} in rewards") from None
            if checksum in seen:
                raise ChainError(f"account {checksum} appears twice in rewards")
            if not isinstance(amount, int) or isinstance(amount, bool) or not 0 <= amount <= UINT256_MAX:
                raise ChainError(f"reward for {checksum} must be an integer in [0, 2**256), got {amount!r}")
            seen.add(checksum)
            values.append((checksum, amount))
        hashed = sorted(((leaf_hash(a, v), i) for i, (a, v) in enumerate(values)), key=lambda h: h[0])
        n = len(hashed)
        tree: list[bytes] = [b""] * (2 * n - 1)
        for i, (h, _) in enumerate(hashed):
            tree[len(tree) - 1 - i] = h
        for i in range(len(tree) - 1 - n, -1, -1):
            tree[i] = hash_pair(tree[2 * i + 1], tree[2 * i + 2])
        index = [0] * n
        for leaf_index, (_, value_index) in enumerate(hashed):
            index[value_index] = len(tree) - 1 - leaf_index
        return cls(tuple(tree), tuple(values), tuple(index))

    @property
    def root(self) -> bytes:
        return self.tree[0]

    @property
    def total(self) -> int:
        """Sum of every cumulative amount in the tree."""
        return sum(amount for _, amount in self.values)

    def amount_of(self, account: str) -> int | None:
        """`account`'s cumulative amount, or None when it has no leaf."""
        i = self._value_index(account)
        return None if i is None else self.values[i][1]

    def proof(self, account: str) -> list[bytes]:
        """The proof of `account`'s leaf, in the order StandardMerkleTree.getProof returns it."""
        i = self._value_index(account)
        if i is None:
            raise ChainError(f"account {account} has no leaf in this rewards tree")
        index = self.tree_index[i]
        proof = []
        while index > 0:
            proof.append(self.tree[index + 1 if index % 2 == 1 else index - 1])
            index = (index - 1) // 2
        return proof

    def _value_index(self, account: str) -> int | None:
        try:
            checksum = to_checksum_address(account)
        except (ValueError, TypeError):
            raise ChainError(f"invalid account address {account!r}") from None
        return next((i for i, (a, _) in enumerate(self.values) if a == checksum), None)

    def leaves(self) -> dict[str, int]:
        """Account → cumulative amount, as the tree holds them."""
        return dict(self.values)

    def dump(self) -> dict[str, Any]:
        """The JSON object StandardMerkleTree.dump() produces (amounts as decimal strings)."""
        return {
            "format": "standard-v1",
            "leafEncoding": LEAF_ENCODING,
            "tree": ["0x" + node.hex() for node in self.tree],
            "values": [
                {"value": [account, str(amount)], "treeIndex": index}
                for (account, amount), index in zip(self.values, self.tree_index)
            ],
        }

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> RewardTree:
        """Reads a dump (ours or the JavaScript library's) and checks it is a consistent tree."""
        try:
            if data.get("format") != "standard-v1" or list(data.get("leafEncoding", [])) != LEAF_ENCODING:
                raise ChainError("rewards tree is not a standard-v1 (address, uint256) StandardMerkleTree dump")
            tree = tuple(bytes.fromhex(str(node).removeprefix("0x")) for node in data["tree"])
            values = tuple((to_checksum_address(v["value"][0]), int(v["value"][1])) for v in data["values"])
            index = tuple(int(v["treeIndex"]) for v in data["values"])
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ChainError(f"malformed rewards tree file: {exc}") from None
        loaded = cls(tree, values, index)
        for (account, amount), i in zip(values, index):
            if not 0 <= i < len(tree) or tree[i] != leaf_hash(account, amount):
                raise InconsistentTree(f"rewards tree is inconsistent at the leaf of {account}")
            if process_proof(tree[i], loaded.proof(account)) != loaded.root:
                raise InconsistentTree(f"rewards tree is inconsistent: the proof of {account} does not reach the "
                                       "root")
        return loaded
