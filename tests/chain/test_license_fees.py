"""Fee shares sum to the fees minus a dust of at most one unit per contributor (Hypothesis, model and chain).

The contract's accumulator: each fee f adds floor((f·2^128 + carry) / W) to acc and keeps the remainder as the
next carry, so acc·W + carry = 2^128·Σf exactly; a contributor of weight w is owed floor(w·acc / 2^128). The
shares then sum to Σf − carry/2^128 − Σ frac_i, and since carry < W < 2^128 and each frac_i < 1, the dust
Σf − Σ shares is an integer below n + 1: at most n, the number of contributors with a positive weight, however
many fees were paid.
"""

from __future__ import annotations

from functools import lru_cache

from eth_account import Account
from eth_utils import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedlearn import chain
from fedlearn.chain import license as lic
from fedlearn.chain.artifacts import DISTRIBUTOR, load_artifact
from fedlearn.chain.deployment import Deployment, token_contract
from fedlearn.chain.transactions import deploy_contract, transact

Q128 = 1 << 128
MAX_UINT = 2**256 - 1


def model_shares(weights: list[int], fees: list[int]) -> list[int]:
    """The contract's arithmetic, in Python."""
    total = sum(weights)
    acc = carry = 0
    for fee in fees:
        numerator = (fee << 128) | carry
        acc += numerator // total
        carry = numerator % total
    return [w * acc // Q128 for w in weights]


def _check_dust(weights: list[int], fees: list[int], shares: list[int]) -> None:
    dust = sum(fees) - sum(shares)
    assert 0 <= dust <= sum(1 for w in weights if w > 0), (weights, fees, shares)


@settings(max_examples=400, deadline=None)
@given(
    weights=st.lists(st.integers(0, 2**100), min_size=1, max_size=40).filter(lambda ws: sum(ws) > 0),
    fees=st.lists(st.integers(1, 2**100), min_size=1, max_size=12),
)
def test_model_shares_sum_to_fees_minus_bounded_dust(weights: list[int], fees: list[int]) -> None:
    _check_dust(weights, fees, model_shares(weights, fees))


def test_dust_bound_is_tight() -> None:
    # One contributor of weight 3 and a fee of 1 leaves acc = floor(2^128 / 3): its share rounds down to 0.
    assert model_shares([3], [1]) == [0]
    assert model_shares([1, 1, 1], [2]) == [0, 0, 0]  # 2 units of dust for 3 contributors
    assert model_shares([1, 1, 1], [2, 1]) == [1, 1, 1]  # the carry makes later fees whole again


@lru_cache(maxsize=1)
def _chain() -> tuple[chain.ChainSession, Deployment, list[str]]:
    session = chain.connect(chain.ETH_TESTER)
    deployment = chain.deploy(session)
    chain.mint(session, deployment, session.address, 2**200)
    contributors = [Account.from_key(keccak(f"fees/{i}".encode())).address for i in range(8)]
    return session, deployment, contributors


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    weights=st.lists(st.integers(0, 10**24), min_size=1, max_size=8).filter(lambda ws: sum(ws) > 0),
    fees=st.lists(st.integers(1, 10**24), min_size=1, max_size=4),
)
def test_contract_shares_match_the_model_and_sum_to_fees_minus_dust(weights: list[int], fees: list[int]) -> None:
    session, base, contributors = _chain()
    # A fresh distributor and license per example, over one token: each example's weights are its own round 1.
    art = load_artifact(DISTRIBUTOR)
    factory = session.w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
    tx = deploy_contract(session, factory, [base.token, session.address, session.address, 0], "deploy")
    deployment = Deployment(session.chain_id, base.token, tx.receipt["contractAddress"], tx.block,
                            session.address, session.address, 0)
    token = token_contract(session, deployment)
    transact(session, token.functions.approve(deployment.distributor, MAX_UINT), "approve")
    chain.fund(session, deployment, sum(weights), mint_missing=False)
    accounts = contributors[: len(weights)]
    settled = chain.settle_round(session, deployment, 1, b"\x01" * 32, dict(zip(accounts, weights)))
    licensed = lic.deploy_license(session, deployment)
    transact(session, token.functions.approve(licensed.license, MAX_UINT), "approve")
    for fee in fees:
        lic.pay_fee(session, licensed, fee)

    shares = [lic.fee_share(session, licensed, 1, settled.tree, a) for a in accounts]
    assert shares == model_shares(weights, fees)
    _check_dust(weights, fees, shares)
    assert lic.epochs(session, licensed)[0].fees == sum(fees)
