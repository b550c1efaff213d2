"""The money side: scores → rewards → ledger → settlement on chain, slashing, and verification."""
