"""Stateful fuzzing of the distributor on eth-tester: random fund, settle, claim, stake, unstake, withdraw, slash,
pause and role changes from random senders, checked against a model after every step.

Run size: max_examples x stateful_step_count below (20 x 15 = up to 300 steps, each one or a few transactions).
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from fedlearn import chain
from fedlearn.chain.deployment import distributor_contract, token_contract
from fedlearn.chain.operations import COORDINATOR_ROLE
from fedlearn.chain.transactions import transact
from fedlearn.errors import ChainError

MAX_EXAMPLES = 20
STEPS = 15
N_INSTITUTIONS = 4
DELAY = 100
# Senders: 0 admin, 1 coordinator, 2 outsider, 3.. institutions.
SENDERS = st.integers(0, 2 + N_INSTITUTIONS)
AMOUNTS = st.integers(1, 1_000)


class DistributorMachine(RuleBasedStateMachine):
    @initialize()
    def deploy(self) -> None:
        self.admin = chain.connect(chain.ETH_TESTER, institutions=N_INSTITUTIONS)
        self.deployment = chain.deploy(self.admin, coordinator=chain.dev_account(1).address, unstake_delay=DELAY)
        insts = chain.institution_accounts(N_INSTITUTIONS)
        self.actors = [self.admin.as_account(chain.dev_account(i)) for i in range(3)]
        self.actors += [self.admin.as_account(a) for a in insts]
        self.institutions = [a.address for a in insts]
        self.dist = distributor_contract(self.admin, self.deployment)
        self.token = token_contract(self.admin, self.deployment)
        self.coordinators = {self.actors[1].address}
        self.paused = False
        self.funded = self.slashed = self.settled = self.claimed = 0
        self.staked_in = self.withdrawn = 0
        self.last_round = 0
        self.tree: chain.RewardTree | None = None
        self.cumulative = {a: 0 for a in self.institutions}
        self.claimed_by = {a: 0 for a in self.institutions}
        self.received = {a: 0 for a in self.institutions}  # tokens paid to each institution by claims
        self.stakes = {a: [0, 0] for a in self.institutions}  # active, pending

    def _expect(self, ok: bool, action) -> bool:
        """Runs `action`; it must succeed exactly when `ok`, and fail with a ChainError otherwise."""
        block = self.admin.w3.eth.block_number
        try:
            action()
        except ChainError as exc:
            assert not ok, f"unexpected refusal: {exc}"
            assert "\n" not in str(exc)
            return False
        assert ok, "an action that should have been refused went through"
        assert self.admin.w3.eth.block_number > block
        return True

    @rule(amount=AMOUNTS, sender=SENDERS)
    def fund(self, amount: int, sender: int) -> None:
        actor = self.actors[sender]
        if self._expect(sender == 0, lambda: chain.fund(actor, self.deployment, amount)):
            self.funded += amount

    @rule(increments=st.lists(st.integers(0, 400), min_size=N_INSTITUTIONS, max_size=N_INSTITUTIONS),
          step=st.integers(-2, 3), sender=SENDERS)
    def settle(self, increments: list[int], step: int, sender: int) -> None:
        actor = self.actors[sender]
        round_ = max(1, self.last_round + step)
        cumulative = {a: self.cumulative[a] + inc for a, inc in zip(self.institutions, increments)}
        total = sum(increments)
        ok = (
            actor.address in self.coordinators
            and not self.paused
            and round_ > self.last_round
            and self.settled + total <= self.funded + self.slashed
        )
        result: list[chain.Settlement] = []
        action = lambda: result.append(chain.settle_round(actor, self.deployment, round_, b"\x01" * 32, cumulative))  # noqa: E731
        if self._expect(ok, action):
            assert result[0].round_total == total
            self.settled += total
            self.last_round = round_
            self.cumulative = cumulative
            self.tree = result[0].tree

    @precondition(lambda self: self.tree is not None)
    @rule(who=st.integers(0, N_INSTITUTIONS - 1), sender=SENDERS)
    def claim(self, who: int, sender: int) -> None:
        account = self.institutions[who]
        owed = self.cumulative[account] - self.claimed_by[account]
        ok = owed > 0 and not self.paused
        if self._expect(ok, lambda: chain.claim_from_tree(self.actors[sender], self.deployment, self.tree, account)):
            self.claimed += owed
            self.claimed_by[account] += owed
            self.received[account] += owed

    @precondition(lambda self: self.tree is not None)
    @rule(who=st.integers(0, N_INSTITUTIONS - 1), extra=st.integers(1, 10**6))
    def claim_more_than_owed(self, who: int, extra: int) -> None:
        account = self.institutions[who]
        proof = self.tree.proof(account)
        self._expect(
            False, lambda: chain.claim(self.admin, self.deployment, account, self.cumulative[account] + extra, proof)
        )

    @rule(who=st.integers(0, N_INSTITUTIONS - 1), amount=AMOUNTS)
    def stake(self, who: int, amount: int) -> None:
        actor = self.actors[3 + who]
        chain.mint(self.admin, self.deployment, actor.address, amount)
        if self._expect(not self.paused, lambda: chain.stake(actor, self.deployment, amount)):
            self.staked_in += amount
            self.stakes[actor.address][0] += amount

    @rule(who=st.integers(0, N_INSTITUTIONS - 1), amount=AMOUNTS)
    def unstake(self, who: int, amount: int) -> None:
        actor = self.actors[3 + who]
        stake = self.stakes[actor.address]
        ok = not self.paused and amount <= stake[0]
        if self._expect(ok, lambda: chain.request_unstake(actor, self.deployment, amount)):
            stake[0] -= amount
            stake[1] += amount

    @rule(who=st.integers(0, N_INSTITUTIONS - 1), wait=st.booleans())
    def withdraw(self, who: int, wait: bool) -> None:
        actor = self.actors[3 + who]
        if wait:
            chain.advance_time(self.admin, DELAY + 1)
        _, pending, unlock_at = self.dist.functions.stakeOf(actor.address).call()
        now = self.admin.w3.eth.get_block("latest")["timestamp"]
        # The next block's timestamp is at least now + 1.
        ok = not self.paused and pending > 0 and now + 1 >= unlock_at
        if self._expect(ok, lambda: chain.withdraw(actor, self.deployment)):
            self.withdrawn += pending
            self.stakes[actor.address][1] = 0

    @rule(who=st.integers(0, N_INSTITUTIONS - 1), amount=st.integers(1, 1_500), sender=SENDERS)
    def slash(self, who: int, amount: int, sender: int) -> None:
        actor = self.actors[sender]
        account = self.institutions[who]
        active, pending = self.stakes[account]
        ok = actor.address in self.coordinators and not self.paused and amount <= active + pending
        if self._expect(ok, lambda: chain.slash(actor, self.deployment, account, amount, b"\x02" * 32)):
            from_active = min(amount, active)
            self.stakes[account] = [active - from_active, pending - (amount - from_active)]
            self.slashed += amount

    @rule(sender=SENDERS, pause=st.booleans())
    def toggle_pause(self, sender: int, pause: bool) -> None:
        action = chain.pause if pause else chain.unpause
        ok = sender == 0 and self.paused != pause
        if self._expect(ok, lambda: action(self.actors[sender], self.deployment)):
            self.paused = pause

    @rule(target_actor=SENDERS, grant=st.booleans(), sender=SENDERS)
    def change_role(self, target_actor: int, grant: bool, sender: int) -> None:
        address = self.actors[target_actor].address
        fn = (self.dist.functions.grantRole if grant else self.dist.functions.revokeRole)(COORDINATOR_ROLE, address)
        if self._expect(sender == 0, lambda: transact(self.actors[sender], fn, "role change")):
            (self.coordinators.add if grant else self.coordinators.discard)(address)

    @invariant()
    def books_balance(self) -> None:
        if not hasattr(self, "dist"):
            return
        f = self.dist.functions
        balance = self.token.functions.balanceOf(self.deployment.distributor).call()
        assert balance == self.funded + self.staked_in - self.claimed - self.withdrawn
        # The form: pool (funded + slashed - claimed) plus what is still staked.
        assert balance == self.funded + self.slashed - self.claimed + (self.staked_in - self.slashed - self.withdrawn)
        assert (f.totalFunded().call(), f.totalSlashed().call()) == (self.funded, self.slashed)
        assert (f.totalSettled().call(), f.totalClaimed().call()) == (self.settled, self.claimed)
        assert self.claimed <= self.settled <= self.funded + self.slashed
        assert f.lastRound().call() == self.last_round
        assert f.paused().call() == self.paused
        for account in self.institutions:
            assert f.claimed(account).call() == self.claimed_by[account] <= self.cumulative[account]
            assert self.received[account] <= self.cumulative[account]
            active, pending, _ = f.stakeOf(account).call()
            assert [active, pending] == self.stakes[account]
        for i, actor in enumerate(self.actors):
            assert f.hasRole(COORDINATOR_ROLE, actor.address).call() == (actor.address in self.coordinators), i


DistributorMachine.TestCase.settings = settings(
    max_examples=MAX_EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestDistributor = DistributorMachine.TestCase
