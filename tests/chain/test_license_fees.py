"""Fee shares sum to the fees minus a dust below the number of contributors (Hypothesis, model and chain); the
weights are the claimable root's leaves (a pending root gets no fee); what is left is swept to a named address.

Weights are fixed within an epoch (one settled round's cumulative rewards, total W), so the contract's
accumulator is the epoch's fee total F and a contributor of weight w is owed floor(w·F / W). The shares then sum
to F − Σ frac_i, where frac_i = (w_i·F mod W) / W < 1 and Σ (w_i·F mod W) ≡ W·F ≡ 0 (mod W): the dust is an
integer below n, the number of contributors with a positive weight, so at most n − 1 units, however many fees
were paid.
"""

from __future__ import annotations

from functools import lru_cache

import pytest
from eth_account import Account
from eth_utils import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedlearn import chain
from fedlearn.chain import license as lic
from fedlearn.chain.artifacts import DISTRIBUTOR, load_artifact
from fedlearn.chain.deployment import Deployment, token_contract
from fedlearn.chain.transactions import deploy_contract, transact
from fedlearn.errors import ChainError
from tests.chain.conftest import PER_ROUND, UNSTAKE_DELAY

MAX_UINT = 2**256 - 1
DAY = 86_400
YEAR = 365 * DAY
MODEL = b"\x11" * 32


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
    deployment = chain.deploy(session, token_cap=2**207)  # the examples' amounts, far below the cap
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
    # No root delay, so the root is claimable (and receives fees) at once; no cap binds.
    args = [base.token, session.address, session.address, DAY, 10**27, 0, 0]
    tx = deploy_contract(session, factory, args, "deploy")
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


def _balance(session: chain.ChainSession, deployment: Deployment, account: str) -> int:
    return int(token_contract(session, deployment).functions.balanceOf(account).call())


def test_fees_follow_the_claimable_roots_leaves_and_a_pending_root_gets_none(session, institutions) -> None:
    """Weights are the claimable root's leaves and their committed sum: shares add up to the fees (no dilution by
    over-settling), and a root settled just before a fee waits out its challenge window without receiving it."""
    deployment = chain.deploy(session, coordinator=chain.dev_account(1).address, unstake_delay=UNSTAKE_DELAY,
                              reward_per_round=PER_ROUND, root_delay=DAY, slash_delay=0)
    coordinator = session.as_account(chain.dev_account(1))
    chain.fund(session, deployment, 10_000)
    licensed = lic.deploy_license(session, deployment)
    payer = institutions[7]
    chain.mint(session, deployment, payer.address, 10**6)
    a, b, c = (i.address for i in institutions[:3])

    first = chain.settle_round(coordinator, deployment, 1, MODEL, {a: 100, b: 300})
    with pytest.raises(ChainError, match=r"no claimable root .* \(NoContributions\)"):
        lic.pay_fee(payer, licensed, 1_000)
    token = token_contract(payer, deployment)
    transact(payer, token.functions.approve(licensed.license, MAX_UINT), "approve")
    with pytest.raises(ChainError, match=r"NoContributions\(\)"):
        transact(payer, lic.license_contract(payer, licensed).functions.payFee(1_000), "pay fee")
    chain.advance_time(session, DAY + 1)
    assert lic.pay_fee(payer, licensed, 1_000).round == 1

    # Round 2 gives c a large share, but its root is pending: the next fee still goes to round 1's leaves.
    second = chain.settle_round(coordinator, deployment, 2, MODEL, {a: 100, b: 300, c: 600})
    assert lic.pay_fee(payer, licensed, 1_000).round == 1
    (e1,) = lic.epochs(session, licensed)
    assert (e1.round, e1.total_weight, e1.fees, e1.closed_at) == (1, first.tree.total, 2_000, 0)
    assert [lic.fee_share(session, licensed, 1, first.tree, x) for x in (a, b)] == [500, 1_500]  # all 2,000

    chain.advance_time(session, DAY + 1)
    assert lic.pay_fee(payer, licensed, 1_000).round == 2
    e1, e2 = lic.epochs(session, licensed)
    assert e1.closed_at > 0 and e2.closed_at == 0 and e2.total_weight == second.tree.total == 1_000
    assert [lic.fee_share(session, licensed, 2, second.tree, x) for x in (a, b, c)] == [100, 300, 600]
    for r, tree in ((1, first.tree), (2, second.tree)):
        for x in tree.leaves():
            if lic.fee_share(session, licensed, r, tree, x):
                lic.withdraw_fee_share(session, licensed, r, tree, x)
    assert _balance(session, deployment, licensed.license) == 0  # exact ratios: nothing stranded


def test_what_contributors_leave_is_swept_to_the_named_recipient_after_the_claim_period(
    session, coordinator, deployment, institutions
) -> None:
    treasury = institutions[6].address
    licensed = lic.deploy_license(session, deployment, dust_recipient=treasury)
    assert lic.dust_recipient(session, licensed) == treasury
    payer = institutions[7]
    chain.mint(session, deployment, payer.address, 10**6)
    a, b, c = (i.address for i in institutions[:3])
    chain.fund(session, deployment, 10_000)
    first = chain.settle_round(coordinator, deployment, 1, MODEL, {a: 1, b: 1, c: 1})
    lic.pay_fee(payer, licensed, 100)  # 33 each, 1 unit of dust
    lic.withdraw_fee_share(session, licensed, 1, first.tree, a)
    lic.withdraw_fee_share(session, licensed, 1, first.tree, b)  # c never comes
    contract = lic.license_contract(session, licensed)
    with pytest.raises(ChainError, match=r"round 1's epoch still receives fees \(EpochOpen\)"):
        lic.sweep_dust(session, licensed, 1)
    with pytest.raises(ChainError, match=r"EpochOpen\(round=1\)"):
        transact(session, contract.functions.sweepDust(1), "sweep")
    with pytest.raises(ChainError, match=r"no fee accrued to round 7 \(NoFeesForRound\)"):
        lic.sweep_dust(session, licensed, 7)

    second = chain.settle_round(coordinator, deployment, 2, MODEL, {a: 1, b: 1, c: 2})
    lic.pay_fee(payer, licensed, 40)  # closes round 1's epoch
    e1 = lic.epoch(session, licensed, 1)
    assert e1.closed_at > 0 and e1.sweepable_at == e1.closed_at + YEAR
    with pytest.raises(ChainError, match=rf"swept from {e1.sweepable_at} .* \(SweepNotDue\)"):
        lic.sweep_dust(session, licensed, 1)
    with pytest.raises(ChainError, match=rf"SweepNotDue\(round=1, sweepableAt={e1.sweepable_at}\)"):
        transact(session, contract.functions.sweepDust(1), "sweep")
    chain.advance_time(session, YEAR - 60)
    lic.withdraw_fee_share(session, licensed, 1, first.tree, c)  # in time: c's 33 is paid
    chain.advance_time(session, 61)

    swept = lic.sweep_dust(institutions[5], licensed, 1)  # anyone sweeps; the recipient is paid
    assert (swept.amount, swept.recipient) == (1, treasury) and _balance(session, deployment, treasury) == 1
    e1 = lic.epoch(session, licensed, 1)
    assert e1.swept and e1.paid_out == e1.fees == 100
    assert lic.fee_share(session, licensed, 1, first.tree, c) == 0
    with pytest.raises(ChainError, match=r"already swept \(EpochSwept\)"):
        lic.sweep_dust(session, licensed, 1)
    with pytest.raises(ChainError, match=r"EpochSwept\(round=1\)"):
        transact(session, contract.functions.sweepDust(1), "sweep")
    with pytest.raises(ChainError, match=r"EpochSwept\(round=1\)"):
        transact(session, contract.functions.withdrawFeeShare(1, a, 1, first.tree.proof(a)), "withdraw")
    with pytest.raises(ChainError, match=r"swept to the dust recipient .* \(EpochSwept\)"):
        lic.withdraw_fee_share(session, licensed, 1, first.tree, a)
    # Round 2's epoch is open and its fees stay withdrawable; the license holds exactly them.
    assert _balance(session, deployment, licensed.license) == 40
    assert lic.withdraw_fee_share(session, licensed, 2, second.tree, c).amount == 20

    # Only the admin names the recipient, never the zero address.
    outsider = institutions[4]
    with pytest.raises(ChainError, match=rf"AccessControlUnauthorizedAccount\(account={outsider.address}"):
        transact(outsider, lic.license_contract(outsider, licensed).functions.setDustRecipient(outsider.address), "set")
    with pytest.raises(ChainError, match=r"ZeroAddress\(\)"):
        transact(session, contract.functions.setDustRecipient("0x" + "00" * 20), "set")
    transact(session, contract.functions.setDustRecipient(outsider.address), "set")
    assert lic.dust_recipient(session, licensed) == outsider.address


def test_everything_withdrawn_leaves_nothing_to_sweep(session, coordinator, deployment, institutions) -> None:
    licensed = lic.deploy_license(session, deployment)
    payer = institutions[7]
    chain.mint(session, deployment, payer.address, 10**6)
    a = institutions[0].address
    chain.fund(session, deployment, 10_000)
    first = chain.settle_round(coordinator, deployment, 1, MODEL, {a: 5})
    lic.pay_fee(payer, licensed, 100)
    lic.withdraw_fee_share(session, licensed, 1, first.tree, a)
    chain.settle_round(coordinator, deployment, 2, MODEL, {a: 6})
    transact(session, lic.license_contract(session, licensed).functions.syncWeights(), "sync")  # anyone closes it
    chain.advance_time(session, YEAR + 1)
    with pytest.raises(ChainError, match=r"withdrew all its fees \(NothingToSweep\)"):
        lic.sweep_dust(session, licensed, 1)
