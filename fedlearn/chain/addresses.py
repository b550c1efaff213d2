"""Addresses typed by a person: checksummed, and refused when their EIP-55 checksum shows a typo.

An address in one case (all lower or all upper) carries no checksum and is taken as written; mixed case is an
EIP-55 checksum, which exists to catch a mistyped character before tokens, stakes or a license go to it.
"""

from __future__ import annotations

from eth_utils import is_address, is_checksum_address, to_checksum_address

from fedlearn.errors import ChainError


def address_of(value: object, what: str) -> str:
    """``value`` as a checksummed address; ``what`` names it in the one-line error."""
    if not isinstance(value, str) or not is_address(value):
        raise ChainError(f"{what} is not an address: {value!r}")
    digits = value[2:] if value[:2].lower() == "0x" else value
    if digits not in (digits.lower(), digits.upper()) and not is_checksum_address("0x" + digits):
        raise ChainError(f"{what} {value}: its EIP-55 checksum is wrong (a typo?); the checksummed form of what was "
                         f"typed is {to_checksum_address(value)}")
    return str(to_checksum_address(value))
