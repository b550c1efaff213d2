"""Stateful fuzzing of the distributor on eth-tester, a hostile coordinator included: random fund, settle (honest,
lowering a leaf, moving unclaimed rewards to itself, far or huge round numbers), challenge, revoke, claim, stake,
unstake, withdraw, slash proposals (with and without evidence, evidence used twice), execution, veto, pause and
role changes from random senders, checked against a model after every step.

The property under test is the threat model's: as long as one honest watcher (an institution running
``fedlearn verify``) challenges a pending root that lowers someone before its window ends, no account's claimable
amount ever decreases, nobody is paid more than the claimable root gives it, and the books balance.

Run size: MAX_EXAMPLES x STEPS below for CI (new examples every run outside CI); ``benchmarks/fuzz.py`` runs the same
machine with a larger budget.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from fedlearn import chain
from fedlearn.chain.deployment import distributor_contract, token_contract
from fedlearn.chain.operations import COORDINATOR_ROLE, MAX_ROUND_STEP
from fedlearn.chain.transactions import transact
from fedlearn.errors import ChainError

MAX_EXAMPLES = int(os.environ.get("FEDLEARN_FUZZ_EXAMPLES", "12"))
STEPS = int(os.environ.get("FEDLEARN_FUZZ_STEPS", "15"))
N_INSTITUTIONS = 4
UNSTAKE_DELAY = 86_400
WINDOW = 3_600  # root and slash windows; time moves only by rule, in jumps of JUMP
JUMP = 2 * UNSTAKE_DELAY
PER_ROUND = 1_500
EVIDENCE = b"\x02" * 32
EVIDENCES = [EVIDENCE, b"\x03" * 32, b"\x04" * 32, b"\x00" * 32]  # the last is no evidence
# Senders: 0 admin, 1 coordinator, 2 outsider, 3.. institutions.
SENDERS = st.integers(0, 2 + N_INSTITUTIONS)
AMOUNTS = st.integers(1, 1_000)
STEP_SIZES = st.sampled_from([-1, 0, 1, 1, 1, 2, MAX_ROUND_STEP, MAX_ROUND_STEP + 1, 2**64])


class DistributorMachine(RuleBasedStateMachine):
    @initialize()
    def deploy(self) -> None:
        self.admin = chain.connect(chain.ETH_TESTER, institutions=N_INSTITUTIONS)
        self.deployment = chain.deploy(self.admin, coordinator=chain.dev_account(1).address,
                                       unstake_delay=UNSTAKE_DELAY, reward_per_round=PER_ROUND,
                                       root_delay=WINDOW, slash_delay=WINDOW)
        insts = chain.institution_accounts(N_INSTITUTIONS)
        self.actors = [self.admin.as_account(chain.dev_account(i)) for i in range(3)]
        self.actors += [self.admin.as_account(a) for a in insts]
        self.coordinator = self.actors[1]
        self.institutions = [a.address for a in insts]
        self.dist = distributor_contract(self.admin, self.deployment)
        self.token = token_contract(self.admin, self.deployment)
        self.coordinators = {self.coordinator.address}
        self.paused = False
        self.funded = self.slashed = self.claimed = 0
        self.staked_in = self.withdrawn = 0
        self.last_round = 0
        self.allowance = 0
        self.accepted: dict[str, int] = {}  # the claimable root's leaves
        self.accepted_tree: chain.RewardTree | None = None
        self.pending: tuple[chain.RewardTree, dict[str, int]] | None = None
        self.claimed_by = {a: 0 for a in self.institutions}
        self.stakes = {a: [0, 0, 0] for a in self.institutions}  # active, pending, held
        self.slashes: dict[int, tuple[str, int, bool]] = {}  # id -> account, amount, due (window passed)
        self.open_slashes: set[int] = set()
        self.evidence_used: set[tuple[str, bytes]] = set()  # one piece of evidence slashes an account once

    # ---- helpers -----------------------------------------------------------------------------------------

    def _expect(self, ok: bool, action) -> bool:
        """Runs `action`; it must succeed exactly when `ok`, and fail with a one-line ChainError otherwise."""
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

    def _live(self) -> dict[str, int]:
        return dict(self.pending[1]) if self.pending else dict(self.accepted)

    def _settled(self) -> int:
        return sum(self._live().values())

    def _settle(self, sender: int, step: int, leaves: dict[str, int], raw: bool) -> None:
        actor = self.actors[sender]
        round_ = self.last_round + step
        added = sum(leaves.values()) - self._settled()
        ok = (
            actor.address in self.coordinators
            and not self.paused
            and 0 < round_ < 2**64
            and 0 < step <= MAX_ROUND_STEP
            and 0 <= added <= self.allowance + PER_ROUND
            and sum(leaves.values()) <= self.funded + self.slashed
        )
        tree = chain.RewardTree.of(leaves)
        if not raw and 0 < round_ <= self.last_round and self.dist.functions.roundOf(round_).call() == tree.root:
            block = self.admin.w3.eth.block_number  # the very round again: idempotent, nothing is sent
            assert chain.settle_round(actor, self.deployment, round_, b"\x01" * 32, leaves).tx is None
            assert self.admin.w3.eth.block_number == block
            return
        if raw:  # a compromised key, straight to the contract
            fn = self.dist.functions.settleRound(min(max(round_, 0), 2**64 - 1), b"\x01" * 32, tree.root, tree.total)
            ok = ok and round_ < 2**64
            action = lambda: transact(actor, fn, "settle")  # noqa: E731
        else:
            action = lambda: chain.settle_round(actor, self.deployment, round_, b"\x01" * 32, leaves)  # noqa: E731
        if self._expect(ok, action):
            self.allowance = self.allowance + PER_ROUND - added
            self.last_round = round_
            self.pending = (tree, leaves)

    # ---- the pool and roots --------------------------------------------------------------------------------

    @rule(amount=AMOUNTS, sender=SENDERS)
    def fund(self, amount: int, sender: int) -> None:
        actor = self.actors[sender]
        chain.mint(self.admin, self.deployment, actor.address, amount)
        if self._expect(True, lambda: chain.fund(actor, self.deployment, amount, mint_missing=False)):
            self.funded += amount

    @rule(increments=st.lists(st.integers(0, 600), min_size=N_INSTITUTIONS, max_size=N_INSTITUTIONS),
          step=STEP_SIZES, sender=SENDERS)
    def settle(self, increments: list[int], step: int, sender: int) -> None:
        live = self._live()
        leaves = {a: live.get(a, 0) + inc for a, inc in zip(self.institutions, increments)}
        leaves.update({a: v for a, v in live.items() if a not in leaves})
        self._settle(sender, step, leaves, raw=False)

    @rule(victim=st.integers(0, N_INSTITUTIONS - 1), cut=st.integers(1, 10**6), step=st.integers(1, 3))
    def settle_lowering_a_leaf(self, victim: int, cut: int, step: int) -> None:
        """The coordinator moves part of a victim's cumulative amount to itself: a zero-total round."""
        live = self._live()
        account = self.institutions[victim]
        taken = min(cut, live.get(account, 0))
        leaves = {**live, account: live.get(account, 0) - taken}
        leaves[self.coordinator.address] = leaves.get(self.coordinator.address, 0) + taken
        self._settle(1, step, leaves, raw=True)

    @rule()
    def watch_and_let_time_pass(self) -> None:
        """An honest watcher challenges a pending root that lowers anyone, then the windows pass."""
        if self.pending is not None and self.accepted_tree is not None:
            tree, leaves = self.pending
            lowered = [a for a, v in self.accepted.items() if leaves.get(a, 0) < v]
            if lowered:
                watcher = self.actors[3]
                self._expect(True, lambda: chain.challenge_root(watcher, self.deployment, lowered[0],
                                                                self.accepted_tree, tree))
                self._revoke_in_model()
        chain.advance_time(self.admin, JUMP)
        if self.pending is not None:
            tree, leaves = self.pending
            assert all(leaves.get(a, 0) >= v for a, v in self.accepted.items()), "a lowering root was accepted"
            self.accepted, self.accepted_tree, self.pending = leaves, tree, None
        self.slashes = {i: (a, amount, True) for i, (a, amount, _) in self.slashes.items()}

    def _revoke_in_model(self) -> None:
        assert self.pending is not None
        self.allowance += sum(self.pending[1].values()) - sum(self.accepted.values())
        self.pending = None

    @rule(sender=SENDERS)
    def revoke(self, sender: int) -> None:
        ok = self.pending is not None and sender == 0  # the admin (no guardian is appointed here)
        if self._expect(ok, lambda: chain.revoke_pending_root(self.actors[sender], self.deployment)):
            self._revoke_in_model()

    @precondition(lambda self: self.accepted_tree is not None)
    @rule(who=st.integers(0, N_INSTITUTIONS - 1), sender=SENDERS, extra=st.sampled_from([0, 0, 1, 10**6]))
    def claim(self, who: int, sender: int, extra: int) -> None:
        account = self.institutions[who]
        tree = self.accepted_tree
        assert tree is not None
        amount = self.accepted.get(account, 0) + extra
        owed = amount - self.claimed_by[account]
        ok = owed > 0 and not self.paused and extra == 0 and account in self.accepted
        proof = tree.proof(account) if account in self.accepted else []
        if self._expect(ok, lambda: chain.claim(self.actors[sender], self.deployment, account, amount, proof)):
            self.claimed += owed
            self.claimed_by[account] += owed

    # ---- stakes and slashes --------------------------------------------------------------------------------

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

    @rule(who=st.integers(0, N_INSTITUTIONS - 1))
    def withdraw(self, who: int) -> None:
        actor = self.actors[3 + who]
        unlock_at = chain.stake_of(self.admin, self.deployment, actor.address)["unlock_at"]
        now = self.admin.w3.eth.get_block("latest")["timestamp"]
        pending = self.stakes[actor.address][1]
        ok = not self.paused and pending > 0 and now + 1 >= unlock_at
        if self._expect(ok, lambda: chain.withdraw(actor, self.deployment)):
            self.withdrawn += pending
            self.stakes[actor.address][1] = 0

    @rule(who=st.integers(0, N_INSTITUTIONS - 1), amount=st.integers(1, 1_500), sender=SENDERS,
          evidence=st.sampled_from(EVIDENCES))
    def propose_slash(self, who: int, amount: int, sender: int, evidence: bytes) -> None:
        actor = self.actors[sender]
        account = self.institutions[who]
        active, pending, held = self.stakes[account]
        ok = (actor.address in self.coordinators and not self.paused and amount <= active + pending
              and evidence != b"\x00" * 32 and (account, evidence) not in self.evidence_used)
        out: list[int] = []
        if self._expect(ok, lambda: out.append(chain.propose_slash(actor, self.deployment, account, amount,
                                                                   evidence)[0])):
            from_active = min(amount, active)
            self.stakes[account] = [active - from_active, pending - (amount - from_active), held + amount]
            self.slashes[out[0]] = (account, amount, False)
            self.evidence_used.add((account, evidence))
            self.open_slashes.add(out[0])

    @precondition(lambda self: bool(self.slashes))
    @rule(pick=st.integers(0, 100), sender=SENDERS, veto=st.booleans())
    def close_slash(self, pick: int, sender: int, veto: bool) -> None:
        ids = sorted(self.slashes)
        slash_id = ids[pick % len(ids)]
        account, amount, due = self.slashes[slash_id]
        is_open = slash_id in self.open_slashes
        if veto:
            ok = is_open and not due and sender == 0
            action = lambda: chain.veto_slash(self.actors[sender], self.deployment, slash_id)  # noqa: E731
        else:
            ok = is_open and due and not self.paused
            action = lambda: chain.execute_slash(self.actors[sender], self.deployment, slash_id)  # noqa: E731
        if self._expect(ok, action):
            self.open_slashes.discard(slash_id)
            self.stakes[account][2] -= amount
            if veto:
                self.stakes[account][0] += amount
            else:
                self.slashed += amount

    # ---- administration ------------------------------------------------------------------------------------

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

    # ---- what must always hold -----------------------------------------------------------------------------

    @invariant()
    def books_balance(self) -> None:
        if not hasattr(self, "dist"):
            return
        f = self.dist.functions
        balance = self.token.functions.balanceOf(self.deployment.distributor).call()
        assert balance == self.funded + self.staked_in - self.claimed - self.withdrawn
        assert (f.totalFunded().call(), f.totalSlashed().call()) == (self.funded, self.slashed)
        assert (f.totalSettled().call(), f.totalClaimed().call()) == (self._settled(), self.claimed)
        assert f.rewardsTotal().call() == sum(self.accepted.values())
        assert self.claimed <= sum(self.accepted.values()) <= self._settled() <= self.funded + self.slashed
        assert f.roundAllowance().call() + f.totalSettled().call() >= 0
        assert (f.lastRound().call(), f.paused().call()) == (self.last_round, self.paused)
        root = f.rewardsRoot().call()
        assert root == (self.accepted_tree.root if self.accepted_tree else b"\x00" * 32)
        for account in self.institutions:
            # Nobody is paid beyond the claimable root, and claims never outrun it.
            assert f.claimed(account).call() == self.claimed_by[account] <= self.accepted.get(account, 0)
            state = chain.stake_of(self.admin, self.deployment, account)
            assert [state["active"], state["pending"], state["held"]] == self.stakes[account]
        for i, actor in enumerate(self.actors):
            assert f.hasRole(COORDINATOR_ROLE, actor.address).call() == (actor.address in self.coordinators), i


DistributorMachine.TestCase.settings = settings(
    max_examples=MAX_EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestDistributor = DistributorMachine.TestCase
