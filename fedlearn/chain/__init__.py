"""The chain layer: connect to eth-tester or a JSON-RPC node, deploy, settle rounds, claim, stake and slash.

Knows nothing of training or scoring: it takes cumulative reward amounts per account and puts them on chain.
"""

from fedlearn.chain.deployment import Deployment, deploy
from fedlearn.chain.merkle import RewardTree
from fedlearn.chain.operations import (
    ChainStatus,
    ClaimResult,
    Settlement,
    claim,
    claim_from_tree,
    defund,
    fund,
    mint,
    pause,
    request_unstake,
    settle_round,
    slash,
    stake,
    status,
    unpause,
    withdraw,
)
from fedlearn.chain.reverts import ChainRevertError, Revert, decode_revert
from fedlearn.chain.session import (
    ETH_TESTER,
    ChainSession,
    advance_time,
    connect,
    dev_account,
    institution_accounts,
)
from fedlearn.chain.transactions import TxResult, funded_institution_accounts

__all__ = [
    "ETH_TESTER",
    "ChainRevertError",
    "ChainSession",
    "ChainStatus",
    "ClaimResult",
    "Deployment",
    "Revert",
    "RewardTree",
    "Settlement",
    "TxResult",
    "advance_time",
    "claim",
    "claim_from_tree",
    "connect",
    "decode_revert",
    "deploy",
    "dev_account",
    "defund",
    "fund",
    "funded_institution_accounts",
    "institution_accounts",
    "mint",
    "pause",
    "request_unstake",
    "settle_round",
    "slash",
    "stake",
    "status",
    "unpause",
    "withdraw",
]
