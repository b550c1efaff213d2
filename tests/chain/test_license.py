"""The license contract on eth-tester: the stake formula, locks, fees shared by recorded contribution, refusals."""

from __future__ import annotations

import pytest

from fedlearn import chain
from fedlearn.chain import license as lic
from fedlearn.chain.deployment import token_contract
from fedlearn.chain.license import MAX_REVENUE, UNIT, LicenseParameters, Parameter, call
from fedlearn.chain.transactions import transact
from fedlearn.errors import ChainError

MODEL = b"\x11" * 32
YEAR = 365 * 86_400
THRESHOLD = 1_000_000 * UNIT


@pytest.fixture
def licensed(session, deployment) -> lic.LicenseDeployment:
    """A license with the default parameters; dev account 0 is its admin, dev account 2 its attester."""
    return lic.deploy_license(session, deployment, attester=chain.dev_account(2).address)


@pytest.fixture
def attester(session) -> chain.ChainSession:
    return session.as_account(chain.dev_account(2))


def _balance(session, deployment, account: str) -> int:
    return token_contract(session, deployment).functions.balanceOf(account).call()


def test_required_stake_at_the_boundaries_and_for_absurd_revenue(session, licensed) -> None:
    contract = lic.license_contract(session, licensed)
    params = lic.parameters(session, licensed)
    assert params == LicenseParameters()  # X = 0.001, 1,000,000 units, 365 days
    cases = {
        0: 0,
        THRESHOLD - 1: 0,
        THRESHOLD: 0,
        THRESHOLD + 1: 1,  # 0.001 of one unit rounds up: never under-staked
        THRESHOLD + 1_000: 1,
        THRESHOLD + 1_001: 2,
        5_000_000 * UNIT: 4_000 * UNIT,
        MAX_REVENUE: (MAX_REVENUE - THRESHOLD) // 1_000,
    }
    for revenue, stake in cases.items():
        assert contract.functions.requiredStake(revenue).call() == stake, revenue
        assert lic.required_stake(revenue, params) == stake
        assert lic.quote(session, licensed, revenue).required == stake
    with pytest.raises(ChainError, match=rf"RevenueTooLarge\(revenue={MAX_REVENUE + 1}, max={MAX_REVENUE}\)"):
        call(contract.functions.requiredStake(MAX_REVENUE + 1), "quote")
    with pytest.raises(ChainError, match=r"RevenueTooLarge\(revenue=\d+, max="):
        call(contract.functions.requiredStake(2**256 - 1), "quote")
    with pytest.raises(ChainError, match="revenue cannot be negative"):
        lic.quote(session, licensed, -1)
    with pytest.raises(ChainError, match=r"above the largest accepted .* \(RevenueTooLarge\)"):
        lic.quote(session, licensed, MAX_REVENUE + 1)


def test_bounds_mirror_the_contract(session, licensed) -> None:
    contract = lic.license_contract(session, licensed)
    for p in Parameter:
        assert tuple(contract.functions.parameterBounds(int(p)).call()) == lic.BOUNDS[p]


def test_acquire_lock_expiry_and_release(session, deployment, licensed, attester, institutions) -> None:
    company, small, stranger = institutions[0], institutions[1], institutions[2]
    lic.attest_revenue(attester, licensed, company.address, 5_000_000 * UNIT)
    lic.attest_revenue(attester, licensed, small.address, THRESHOLD)
    assert not lic.license_status(session, licensed, stranger.address).licensed  # no attestation
    assert lic.license_status(session, licensed, small.address).licensed  # at the threshold: free
    required = 4_000 * UNIT
    chain.mint(session, deployment, company.address, required - 1)

    with pytest.raises(ChainError, match=rf"\({required - 1} base units\), needs .* tokens \({required} base units\)"):
        lic.acquire(company, licensed)
    chain.mint(session, deployment, company.address, 1)
    with pytest.raises(ChainError, match=rf"shorter than the lock period {YEAR} s \(LockTooShort\)"):
        lic.acquire(company, licensed, lock_duration=YEAR - 1)
    with pytest.raises(ChainError, match=r"below the \d+ required .* \(InsufficientStake\)"):
        lic.acquire(company, licensed, amount=required - 1)
    with pytest.raises(ChainError, match="RevenueNotAttested"):
        lic.acquire(stranger, licensed)
    # The contract refuses the same on its own, whatever a client checks.
    contract = lic.license_contract(company, licensed)
    with pytest.raises(ChainError, match=rf"LockTooShort\(duration={YEAR - 1}, minimum={YEAR}\)"):
        transact(company, contract.functions.acquire(required, YEAR - 1), "acquire")
    with pytest.raises(ChainError, match=rf"InsufficientStake\(locked={required - 1}, required={required}\)"):
        transact(company, contract.functions.acquire(required - 1, YEAR), "acquire")
    with pytest.raises(ChainError, match=r"LockTooLong"):
        transact(company, contract.functions.acquire(required, 3651 * 86_400), "acquire")

    got = lic.acquire(company, licensed)
    assert got.amount == required and got.status.licensed and got.status.locked == required
    assert _balance(session, deployment, company.address) == 0
    locked = rf"LicenseLocked\(licensee={company.address}, unlockAt={got.status.unlock_at}\)"
    with pytest.raises(ChainError, match=locked):
        lic.release(company, licensed)
    chain.advance_time(session, YEAR - 10)
    assert lic.license_status(session, licensed, company.address).licensed
    chain.advance_time(session, 20)
    assert not lic.license_status(session, licensed, company.address).licensed  # the lock expired
    lic.release(company, licensed)
    assert _balance(session, deployment, company.address) == required
    assert lic.license_status(session, licensed, company.address).locked == 0
    with pytest.raises(ChainError, match="NothingLocked"):
        lic.release(company, licensed)


def test_a_higher_revenue_needs_a_top_up(session, deployment, licensed, attester, institutions) -> None:
    company = institutions[0]
    lic.attest_revenue(attester, licensed, company.address, 2_000_000 * UNIT)
    chain.mint(session, deployment, company.address, 10_000 * UNIT)
    first = lic.acquire(company, licensed)
    assert first.amount == 1_000 * UNIT and first.status.licensed
    lic.attest_revenue(attester, licensed, company.address, 3_000_000 * UNIT)
    assert not lic.license_status(session, licensed, company.address).licensed
    top_up = lic.acquire(company, licensed)
    assert top_up.amount == 1_000 * UNIT and top_up.status.licensed and top_up.status.locked == 2_000 * UNIT
    assert top_up.status.unlock_at >= first.status.unlock_at  # a renewal never shortens the lock


def test_unauthorized_calls_revert_with_custom_errors(session, licensed, institutions) -> None:
    outsider = institutions[3]
    contract = lic.license_contract(outsider, licensed)
    with pytest.raises(ChainError, match=rf"AccessControlUnauthorizedAccount\(account={outsider.address}"):
        transact(outsider, contract.functions.attestRevenue(outsider.address, 1), "attest")
    with pytest.raises(ChainError, match=rf"AccessControlUnauthorizedAccount\(account={outsider.address}"):
        transact(outsider, contract.functions.setParameter(int(Parameter.STAKE_RATE), 1), "set")
    with pytest.raises(ChainError, match="lacks the license's ATTESTER_ROLE"):
        lic.attest_revenue(outsider, licensed, outsider.address, 1)
    admin = lic.license_contract(session, licensed)
    with pytest.raises(ChainError, match=r"ParameterOutOfRange\(parameter=2, value=3600, min=86400, max=315360000\)"):
        transact(session, admin.functions.setParameter(int(Parameter.LOCK_PERIOD), 3600), "set")
    with pytest.raises(ChainError, match=r"ParameterOutOfRange\(parameter=0, value=1000000000000000001"):
        transact(session, admin.functions.setParameter(int(Parameter.STAKE_RATE), 10**18 + 1), "set")
    transact(session, admin.functions.setParameter(int(Parameter.STAKE_RATE), 2 * 10**15), "set")
    assert lic.parameters(session, licensed).stake_rate == 2 * 10**15


def test_fees_are_shared_by_recorded_contribution_and_withdrawn_whenever(
    session, coordinator, deployment, licensed, institutions
) -> None:
    payer = institutions[7]
    chain.mint(session, deployment, payer.address, 10**6)
    with pytest.raises(ChainError, match="NoContributions"):
        lic.pay_fee(payer, licensed, 100)
    a, b, c = (i.address for i in institutions[:3])
    chain.fund(session, deployment, 10_000)
    first = chain.settle_round(coordinator, deployment, 1, MODEL, {a: 100, b: 300, c: 0})
    paid = lic.pay_fee(payer, licensed, 1_000)
    assert paid.round == 1
    lic.pay_fee(payer, licensed, 7)  # 1,007 in all: 251.75 and 755.25
    assert lic.fee_share(session, licensed, 1, first.tree, a) == 251
    assert lic.fee_share(session, licensed, 1, first.tree, b) == 755
    assert lic.fee_share(session, licensed, 1, first.tree, c) == 0
    got = lic.withdraw_fee_share(session, licensed, 1, first.tree, a)  # anyone submits; a is paid
    assert got.amount == 251 and _balance(session, deployment, a) == 251

    # A new round moves later fees to the new contributions; round 1's shares stay withdrawable.
    second = chain.settle_round(coordinator, deployment, 2, MODEL, {a: 100, b: 300, c: 600})
    assert lic.pay_fee(payer, licensed, 1_000).round == 2
    assert [e.round for e in lic.epochs(session, licensed)] == [1, 2]
    assert lic.withdraw_fee_share(session, licensed, 2, second.tree, c).amount == 600
    assert lic.withdraw_fee_share(session, licensed, 1, first.tree, b).amount == 755
    assert lic.withdraw_fee_share(session, licensed, 2, second.tree, a).amount == 100

    with pytest.raises(ChainError, match="no fee share of round 1 left"):
        lic.withdraw_fee_share(session, licensed, 1, first.tree, a)
    with pytest.raises(ChainError, match="is not round 2's weights root"):
        lic.withdraw_fee_share(session, licensed, 2, first.tree, b)
    contract = lic.license_contract(session, licensed)
    with pytest.raises(ChainError, match=rf"InvalidWeightProof\(round=2, account={b}, weight=301\)"):
        transact(session, contract.functions.withdrawFeeShare(2, b, 301, second.tree.proof(b)), "withdraw")
    with pytest.raises(ChainError, match=rf"NoFeeShare\(round=1, account={a}\)"):
        transact(session, contract.functions.withdrawFeeShare(1, a, 100, first.tree.proof(a)), "withdraw")
    with pytest.raises(ChainError, match=r"NoFeesForRound\(round=5\)"):
        transact(session, contract.functions.withdrawFeeShare(5, a, 100, first.tree.proof(a)), "withdraw")

    # What stays is exactly the unwithdrawn shares plus the dust.
    held = _balance(session, deployment, licensed.license)
    owed = lic.fee_share(session, licensed, 2, second.tree, b)
    assert owed == 300 and held == 2_007 - (251 + 755 + 600 + 100) and held - owed == 1  # 1 unit of dust


def test_attestations_expire_and_the_licensee_must_be_re_attested(
    session, deployment, licensed, attester, institutions
) -> None:
    company, small = institutions[0], institutions[1]
    lic.attest_revenue(attester, licensed, company.address, 5_000_000 * UNIT)
    lic.attest_revenue(attester, licensed, small.address, THRESHOLD)
    chain.mint(session, deployment, company.address, 4_000 * UNIT)
    got = lic.acquire(company, licensed, lock_duration=2 * YEAR)  # locked well past the attestation's life
    ttl = lic.parameters(session, licensed).attestation_ttl
    assert ttl == YEAR and got.status.expires_at == got.status.attested_at + ttl
    chain.advance_time(session, ttl - 10)
    assert lic.license_status(session, licensed, company.address).licensed
    assert lic.license_status(session, licensed, small.address).licensed
    chain.advance_time(session, 20)
    expired = lic.license_status(session, licensed, company.address)
    assert not expired.licensed and expired.locked == 4_000 * UNIT and expired.unlock_at > expired.now
    assert not lic.license_status(session, licensed, small.address).licensed  # free licenses expire too
    with pytest.raises(ChainError, match=rf"attestation of {company.address} expired at {expired.expires_at} "
                                         r"\(AttestationExpired\)"):
        lic.acquire(company, licensed, amount=0)
    contract = lic.license_contract(company, licensed)
    with pytest.raises(ChainError, match=rf"AttestationExpired\(licensee={company.address}, "
                                         rf"expiredAt={expired.expires_at}\)"):
        transact(company, contract.functions.acquire(0, YEAR), "acquire")

    lic.attest_revenue(attester, licensed, company.address, 5_000_000 * UNIT)  # re-attested: licensed again
    renewed = lic.license_status(session, licensed, company.address)
    assert renewed.licensed and renewed.expires_at > expired.expires_at
    # Governance bounds the lifetime: at least 30 days, at most ten years; a shorter one applies at once.
    admin = lic.license_contract(session, licensed)
    with pytest.raises(ChainError, match=r"ParameterOutOfRange\(parameter=3, value=86400, min=2592000"):
        transact(session, admin.functions.setParameter(int(Parameter.ATTESTATION_TTL), 86_400), "set")
    transact(session, admin.functions.setParameter(int(Parameter.ATTESTATION_TTL), 30 * 86_400), "set")
    chain.advance_time(session, 30 * 86_400 + 1)
    assert not lic.license_status(session, licensed, company.address).licensed


def test_governance_pauses_fees_attestations_and_acquisitions_but_not_release(
    session, coordinator, deployment, licensed, attester, institutions
) -> None:
    company, payer, outsider = institutions[0], institutions[7], institutions[3]
    a = institutions[1].address
    lic.attest_revenue(attester, licensed, company.address, 5_000_000 * UNIT)
    chain.mint(session, deployment, company.address, 4_000 * UNIT)
    lic.acquire(company, licensed)
    chain.fund(session, deployment, 10_000)
    settled = chain.settle_round(coordinator, deployment, 1, MODEL, {a: 100})
    chain.mint(session, deployment, payer.address, 1_000)
    lic.pay_fee(payer, licensed, 500)

    with pytest.raises(ChainError, match="lacks the license's DEFAULT_ADMIN_ROLE"):
        lic.set_paused(outsider, licensed, True)
    with pytest.raises(ChainError, match=rf"AccessControlUnauthorizedAccount\(account={outsider.address}"):
        transact(outsider, lic.license_contract(outsider, licensed).functions.pause(), "pause")
    lic.set_paused(session, licensed, True)
    assert lic.paused(session, licensed)
    with pytest.raises(ChainError, match=r"pay fee: the license is paused by governance \(EnforcedPause\)"):
        lic.pay_fee(payer, licensed, 1)
    with pytest.raises(ChainError, match=r"withdraw: the license is paused"):
        lic.withdraw_fee_share(session, licensed, 1, settled.tree, a)
    with pytest.raises(ChainError, match=r"attest: the license is paused"):
        lic.attest_revenue(attester, licensed, company.address, 1)
    # The contract refuses on its own, whatever a client checks.
    for who, fn in (
        (payer, lambda c: c.functions.payFee(1)),
        (payer, lambda c: c.functions.syncWeights()),
        (company, lambda c: c.functions.acquire(0, YEAR)),
        (attester, lambda c: c.functions.attestRevenue(company.address, 1)),
        (session, lambda c: c.functions.withdrawFeeShare(1, a, 100, settled.tree.proof(a))),
        (session, lambda c: c.functions.sweepDust(1)),
    ):
        with pytest.raises(ChainError, match=r"EnforcedPause\(\)"):
            transact(who, fn(lic.license_contract(who, licensed)), "paused call")
    # A licensee's own stake comes back after its lock even while paused.
    chain.advance_time(session, YEAR + 1)
    lic.release(company, licensed)
    assert _balance(session, deployment, company.address) == 4_000 * UNIT

    lic.set_paused(session, licensed, False)
    assert lic.withdraw_fee_share(session, licensed, 1, settled.tree, a).amount == 500
    with pytest.raises(ChainError, match="already running"):
        lic.set_paused(session, licensed, False)
