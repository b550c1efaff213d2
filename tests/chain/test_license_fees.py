"""Fee shares sum to the fees minus a dust below the number of contributors (Hypothesis, model and chain).

Weights are fixed within an epoch (one settled round's cumulative rewards, total W), so the contract's
accumulator is the epoch's fee total F and a contributor of weight w is owed floor(w·F / W). The shares then sum
to F − Σ frac_i, where frac_i = (w_i·F mod W) / W < 1 and Σ (w_i·F mod W) ≡ W·F ≡ 0 (mod W): the dust is an
integer below n, the number of contributors with a positive weight, so at most n − 1 units, however many fees
were paid.
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

MAX_UINT = 2**256 - 1


def model_shares(weights: list[int], fees: list[int]) -> list[int]:
    """The contract's arithmetic, in Python."""
    total, paid = sum(weights), sum(fees)
    return [w * paid // total for w in weights]


def _check_dust(weights: list[int], fees: list[int], shares: list[int]) -> None:
    dust = sum(fees) - sum(shares)
    assert 0 <= dust < sum(1 for w in weights if w > 0), (weights, fees, shares)


@settings(max_examples=400, deadline=None)
@given(
    weights=st.lists(st.integers(0, 2**100), min_size=1, max_size=40).filter(lambda ws: sum(ws) > 0),
    fees=st.lists(st.integers(1, 2**100), min_size=1, max_size=12),
)
def test_model_shares_sum_to_fees_minus_bounded_dust(weights: list[int], fees: list[int]) -> None:
    _check_dust(weights, fees, model_shares(weights, fees))


def test_dust_bound_is_tight() -> None:
    assert model_shares([1, 1, 1], [2]) == [0, 0, 0]  # n − 1 = 2 units of dust for 3 contributors
    assert model_shares([1, 1, 1], [1, 1]) == [0, 0, 0]
    assert model_shares([1, 1, 1], [2, 1]) == [1, 1, 1]  # later fees make the earlier fractions whole
    assert model_shares([1_000, 3_000], [100 * 10**18]) == [25 * 10**18, 75 * 10**18]  # exact ratios stay exact


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
