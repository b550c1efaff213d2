// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

/**
 * @title RewardDistributor
 * @dev Pays institutions for their contributions to a federated model, one Merkle root per training round, with
 * a coordinator that is bounded rather than trusted.
 *
 * The coordinator settles each round with one transaction: the round number (increasing, by at most
 * {MAX_ROUND_STEP}; rounds are numbered across every run of the federation), the hash of the round's global
 * model, a Merkle root over every account's _cumulative_ reward, built like OpenZeppelin's JavaScript
 * `StandardMerkleTree` for `(address, uint256)` leaves, and the sum of those leaves. An institution claims with
 * its cumulative amount and a proof and receives the difference to what it already claimed.
 *
 * What bounds the coordinator key (see the README's threat model):
 * - A new root is *pending* for {rootDelay} seconds before claims can use it (as Morpho's Universal Rewards
 *   Distributor does). Meanwhile a guardian ({GUARDIAN_ROLE}) or the admin can revoke it, and anyone can revoke it
 *   with {challengeRoot}: two proofs showing that some account's cumulative amount is lower in the pending root
 *   than in the accepted one. A root settled while another is pending replaces it and restarts the delay.
 * - The sum of the leaves may only grow, by at most what the rate limit allows: every settlement adds the governed
 *   {rewardPerRound} to an allowance ({roundAllowance}) and spends the round's increase from it; and never above
 *   what was funded plus slashed, less what was returned.
 * - Slashing is a proposal with an evidence hash. The proposed tokens are held at once (they can be neither
 *   unstaked nor withdrawn), and move to the reward pool only after {slashDelay} seconds, during which a guardian
 *   or the admin can veto it. One piece of evidence slashes an account once, vetoed or not: a coordinator that
 *   retries a proposal whose receipt it lost cannot take the stake twice. Pending unstakes stay slashable; {unstakeDelay} is at least {slashDelay}.
 * Claims never exceed the accepted root's leaf sum, so staked tokens are never paid out as rewards.
 *
 * The reentrancy guard lives in transient storage (EIP-1153, Cancun and later). Amounts are kept in 128 bits so
 * that related totals share a storage slot; this bounds every total at about 3.4e38 token units.
 */
contract RewardDistributor is AccessControl, Pausable, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @dev Role allowed to settle rounds and to propose slashes.
    bytes32 public constant COORDINATOR_ROLE = keccak256("COORDINATOR_ROLE");
    /// @dev Role allowed to revoke a pending root and to veto a proposed slash (the admin may too).
    bytes32 public constant GUARDIAN_ROLE = keccak256("GUARDIAN_ROLE");

    /// @notice Largest step between two settled round numbers.
    uint64 public constant MAX_ROUND_STEP = 1000;
    /// @notice Largest {rewardPerRound} governance may set: 10^9 whole tokens.
    uint128 public constant MAX_REWARD_PER_ROUND = 1e27;
    /// @notice Longest {rootDelay} governance may set.
    uint64 public constant MAX_ROOT_DELAY = 30 days;
    /// @notice Shortest {unstakeDelay}: a stake stays slashable at least this long after an unstake request.
    uint64 public constant MIN_UNSTAKE_DELAY = 1 days;
    /// @notice Longest {unstakeDelay}.
    uint64 public constant MAX_UNSTAKE_DELAY = 365 days;

    /// @dev The governed parameters, in the order of {ParameterChanged}.
    enum Parameter {
        RewardPerRound,
        RootDelay,
        SlashDelay
    }

    /// @dev An institution's bond: `active` can be unstaked, `pending` waits until `unlockAt`, `held` is under a
    /// proposed slash. All three are slashable.
    struct Stake {
        uint128 active;
        uint128 pending;
        uint128 held;
        uint64 unlockAt;
    }

    /// @dev A proposed slash: `amount` of `account`'s stake, held until `executableAt` and then taken.
    struct SlashProposal {
        address account;
        uint64 executableAt;
        bool closed;
        uint128 amount;
        bytes32 evidenceHash;
    }

    IERC20 private immutable _token;
    uint64 private immutable _unstakeDelay;

    // Declared first so that they share a slot with Pausable's flag: settle and claim read all of them.
    /// @notice The latest settled round number, pending, accepted or revoked; 0 before the first settlement.
    uint64 public lastRound;
    uint64 private _acceptedRound;
    uint64 private _readyAt; // when the pending root becomes claimable; 0 when none is pending

    /// @notice Sum of the leaves of the latest live root (pending, else accepted): what settled rounds committed.
    uint128 public totalSettled;
    /// @notice What settlements may still add: {rewardPerRound} per settlement, less every round's increase.
    uint128 public roundAllowance;

    uint128 private _acceptedTotal;
    /// @notice Sum of every claim paid.
    uint128 public totalClaimed;

    /// @notice Sum of every amount funded.
    uint128 public totalFunded;
    /// @notice Sum of every amount slashed (returned to the reward pool).
    uint128 public totalSlashed;
    /// @notice Sum of every unsettled amount the admin took back out of the reward pool.
    uint128 public totalDefunded;

    /// @notice Tokens a settlement adds to {roundAllowance}: the governed reward per round.
    uint128 public rewardPerRound;
    /// @notice Seconds a settled root stays pending (revocable) before claims can use it.
    uint64 public rootDelay;
    /// @notice Seconds between a slash proposal and its execution, during which it can be vetoed.
    uint64 public slashDelay;

    /// @notice Tokens currently held as stakes: active, pending and held.
    uint256 public totalStaked;
    /// @notice Number of slash proposals made; proposal ids run from 1 to it.
    uint256 public slashCount;

    mapping(uint256 round => bytes32) private _roots;
    mapping(address account => uint256) private _claimed;
    mapping(address account => Stake) private _stakes;
    mapping(uint256 id => SlashProposal) private _slashes;
    mapping(address account => mapping(bytes32 evidenceHash => bool)) private _evidenceUsed;

    /// @notice The reward pool received `amount` tokens from `funder`.
    event Funded(address indexed funder, uint256 amount);

    /// @notice `amount` unsettled tokens left the reward pool for `to` (a run's unspent budget, returned).
    event Defunded(address indexed to, uint256 amount);

    /**
     * @notice Round `round` was settled; its root is pending until `readyAt`.
     * @param round The round number.
     * @param modelHash Hash of the round's aggregated global model.
     * @param rewardsRoot Merkle root over every account's cumulative reward after this round.
     * @param roundTotal Tokens this round added to the sum of the leaves.
     * @param leavesTotal The sum of the root's leaves.
     * @param readyAt Timestamp from which claims use the root.
     */
    event RoundSettled(
        uint256 indexed round,
        bytes32 indexed modelHash,
        bytes32 rewardsRoot,
        uint256 roundTotal,
        uint256 leavesTotal,
        uint256 readyAt
    );

    /// @notice The root of `round` became the one claims use.
    event RootAccepted(uint256 indexed round, bytes32 rewardsRoot, uint256 leavesTotal);

    /// @notice The pending root of `round` was revoked by `by` (a guardian, the admin or a challenger).
    event RootRevoked(uint256 indexed round, bytes32 rewardsRoot, address indexed by);

    /// @notice `account`'s cumulative amount fell from `acceptedAmount` to `pendingAmount` in the pending root.
    event RootChallenged(uint256 indexed round, address indexed account, uint256 acceptedAmount, uint256 pendingAmount);

    /// @notice `account` was paid `amount`, bringing what it claimed to `cumulativeAmount`.
    event Claimed(address indexed account, uint256 amount, uint256 cumulativeAmount);

    /// @notice `account` staked `amount` more tokens.
    event Staked(address indexed account, uint256 amount);

    /// @notice `account` asked to unstake `amount`; it can be withdrawn from `unlockAt` (a timestamp) on.
    event UnstakeRequested(address indexed account, uint256 amount, uint256 unlockAt);

    /// @notice `account` withdrew `amount` of unstaked tokens.
    event Withdrawn(address indexed account, uint256 amount);

    /// @notice Slash `id` proposes taking `amount` of `account`'s stake, for `evidenceHash`, from `executableAt` on.
    event SlashProposed(
        uint256 indexed id, address indexed account, uint256 amount, bytes32 indexed evidenceHash, uint256 executableAt
    );

    /// @notice Slash `id` was vetoed by `by`; the held tokens went back to `account`'s active stake.
    event SlashVetoed(uint256 indexed id, address indexed account, address indexed by);

    /// @notice `amount` of `account`'s stake was slashed into the reward pool, with `evidenceHash` as the reason.
    event Slashed(address indexed account, uint256 amount, bytes32 indexed evidenceHash);

    /// @notice Governance changed `parameter` from `oldValue` to `newValue`.
    event ParameterChanged(Parameter indexed parameter, uint256 oldValue, uint256 newValue);

    /// @dev A constructor argument was the zero address.
    error ZeroAddress();

    /// @dev An amount of zero was given where a positive one is required.
    error ZeroAmount();

    /// @dev `round` is not greater than the latest settled round `lastRound`.
    error RoundNotIncreasing(uint256 round, uint256 lastRound);

    /// @dev `round` is more than {MAX_ROUND_STEP} after the latest settled round `lastRound`.
    error RoundStepTooLarge(uint256 round, uint256 lastRound);

    /// @dev A round was settled with an empty Merkle root.
    error EmptyRewardsRoot();

    /// @dev The new root's leaves sum to `leavesTotal`, below the `settled` sum of the live root's leaves.
    error CumulativeTotalDecreased(uint256 leavesTotal, uint256 settled);

    /// @dev The round adds `roundTotal`, more than the `allowance` the governed reward per round left.
    error RoundCapExceeded(uint256 roundTotal, uint256 allowance);

    /// @dev Settling would bring the settled total to `required`, above the `available` funded plus slashed.
    error InsufficientFunds(uint256 required, uint256 available);

    /// @notice `amount` exceeds the reward pool's unsettled funds `available`.
    error DefundExceedsAvailable(uint256 amount, uint256 available);

    /// @dev A claim was made before any root was accepted.
    error NoRoundSettled();

    /// @dev The proof does not show `(account, cumulativeAmount)` in the root it was checked against.
    error InvalidProof(address account, uint256 cumulativeAmount);

    /// @dev `account` already claimed `claimed`, which is not less than `cumulativeAmount`.
    error NothingToClaim(address account, uint256 cumulativeAmount, uint256 claimed);

    /// @dev Paying `amount` would exceed the accepted but unclaimed total `unclaimed` (an inconsistent root).
    error ClaimExceedsSettled(uint256 amount, uint256 unclaimed);

    /// @dev No root is pending (none was settled since the last accepted one, or it became claimable already).
    error NoPendingRoot();

    /// @dev A challenge needs an accepted root to compare the pending one with.
    error NoAcceptedRoot();

    /// @dev The challenge shows no decrease: `pendingAmount` is not below `acceptedAmount`.
    error NotADecrease(uint256 acceptedAmount, uint256 pendingAmount);

    /// @dev The caller is neither a guardian nor the admin.
    error NotGuardian(address caller);

    /// @dev `account` asked to unstake `amount` but has only `active` staked.
    error UnstakeExceedsStake(address account, uint256 amount, uint256 active);

    /// @dev `account` has nothing waiting to be withdrawn.
    error NothingToWithdraw(address account);

    /// @dev `account`'s unstaked tokens stay locked until `unlockAt` (a timestamp).
    error StakeLocked(address account, uint256 unlockAt);

    /// @dev A slash was proposed without evidence.
    error EmptyEvidence();

    /// @dev `evidenceHash` already backed a slash proposal against `account` (executed, vetoed or open).
    error EvidenceAlreadyUsed(address account, bytes32 evidenceHash);

    /// @dev Slashing `amount` from `account` exceeds its stake not already held, `staked`.
    error SlashExceedsStake(address account, uint256 amount, uint256 staked);

    /// @dev Slash `id` was never proposed, or was already executed or vetoed.
    error SlashNotOpen(uint256 id);

    /// @dev Slash `id` can be executed from `executableAt` on, not before.
    error SlashNotDue(uint256 id, uint256 executableAt);

    /// @dev Slash `id`'s veto window ended at `executableAt`.
    error VetoWindowClosed(uint256 id, uint256 executableAt);

    /// @dev `value` is outside the bounds `[min, max]` of `parameter`.
    error ParameterOutOfRange(Parameter parameter, uint256 value, uint256 min, uint256 max);

    /// @dev The unstake delay `unstakeDelay` is outside `[max(MIN_UNSTAKE_DELAY, slashDelay), MAX_UNSTAKE_DELAY]`.
    error UnstakeDelayOutOfRange(uint256 unstakeDelay, uint256 slashDelay);

    /// @dev Only a guardian or the admin may call.
    modifier onlyGuardian() {
        if (!hasRole(GUARDIAN_ROLE, _msgSender()) && !hasRole(DEFAULT_ADMIN_ROLE, _msgSender())) {
            revert NotGuardian(_msgSender());
        }
        _;
    }

    /**
     * @dev Sets the reward `token_`, grants {DEFAULT_ADMIN_ROLE} to `admin` and {COORDINATOR_ROLE} to
     * `coordinator`, and sets the delays (seconds) and the reward per round (token units).
     */
    constructor(
        IERC20 token_,
        address admin,
        address coordinator,
        uint64 unstakeDelay_,
        uint128 rewardPerRound_,
        uint64 rootDelay_,
        uint64 slashDelay_
    ) {
        if (address(token_) == address(0) || admin == address(0) || coordinator == address(0)) {
            revert ZeroAddress();
        }
        if (unstakeDelay_ < MIN_UNSTAKE_DELAY || unstakeDelay_ > MAX_UNSTAKE_DELAY || unstakeDelay_ < slashDelay_) {
            revert UnstakeDelayOutOfRange(unstakeDelay_, slashDelay_);
        }
        _token = token_;
        _unstakeDelay = unstakeDelay_;
        _setParameter(Parameter.RewardPerRound, rewardPerRound_);
        _setParameter(Parameter.RootDelay, rootDelay_);
        _setParameter(Parameter.SlashDelay, slashDelay_);
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(COORDINATOR_ROLE, coordinator);
    }

    // ---- views ---------------------------------------------------------------------------------------------

    /// @notice The token rewards and stakes are paid in.
    function token() external view returns (IERC20) {
        return _token;
    }

    /// @notice Seconds between {requestUnstake} and the earliest {withdraw}.
    function unstakeDelay() external view returns (uint64) {
        return _unstakeDelay;
    }

    /// @notice The bounds `[min, max]` governance may set `parameter` within.
    function parameterBounds(Parameter parameter) public view returns (uint256 min, uint256 max) {
        if (parameter == Parameter.RewardPerRound) return (0, MAX_REWARD_PER_ROUND);
        if (parameter == Parameter.RootDelay) return (0, MAX_ROOT_DELAY);
        return (0, _unstakeDelay);
    }

    /// @notice The Merkle root settled for `round`; zero if it was never settled, or was revoked.
    function roundOf(uint256 round) external view returns (bytes32) {
        return _roots[round];
    }

    /// @notice The round whose root claims use now: the pending one once its delay passed, else the accepted one.
    function claimableRound() public view returns (uint64) {
        (uint64 round,) = _claimable();
        return round;
    }

    /// @notice The Merkle root claims are checked against now (zero before the first accepted root).
    function rewardsRoot() external view returns (bytes32) {
        (uint64 round,) = _claimable();
        return _roots[round];
    }

    /// @notice The sum of the leaves of the root claims use now.
    function rewardsTotal() external view returns (uint128) {
        (, uint128 total) = _claimable();
        return total;
    }

    /**
     * @notice The pending root, if any.
     * @return round Its round (0: none pending).
     * @return root The root.
     * @return leavesTotal The sum of its leaves.
     * @return readyAt When claims start to use it.
     */
    function pendingRoot() external view returns (uint64 round, bytes32 root, uint128 leavesTotal, uint64 readyAt) {
        // Zero means "none pending", not a time: the equality is exact on purpose.
        // slither-disable-next-line incorrect-equality,timestamp
        if (_readyAt == 0 || block.timestamp >= _readyAt) return (0, bytes32(0), 0, 0);
        return (lastRound, _roots[lastRound], totalSettled, _readyAt);
    }

    /// @notice Cumulative amount `account` has claimed so far.
    function claimed(address account) external view returns (uint256) {
        return _claimed[account];
    }

    /**
     * @notice `account`'s stake.
     * @return active Tokens staked and not asked back.
     * @return pending Tokens asked back, withdrawable from `unlockAt` on.
     * @return unlockAt Timestamp from which `pending` can be withdrawn.
     * @return held Tokens held by proposed slashes.
     */
    function stakeOf(address account)
        external
        view
        returns (uint256 active, uint256 pending, uint256 unlockAt, uint256 held)
    {
        Stake storage s = _stakes[account];
        return (s.active, s.pending, s.unlockAt, s.held);
    }

    /// @notice Slash proposal `id`.
    function slashOf(uint256 id) external view returns (SlashProposal memory) {
        return _slashes[id];
    }

    /// @notice Whether `evidenceHash` already backed a slash proposal against `account`.
    function evidenceUsed(address account, bytes32 evidenceHash) external view returns (bool) {
        return _evidenceUsed[account][evidenceHash];
    }

    /// @notice Tokens in the reward pool not yet committed to a settled round.
    function availableFunds() external view returns (uint256) {
        return uint256(totalFunded) + totalSlashed - totalSettled - totalDefunded;
    }

    // ---- the reward pool -----------------------------------------------------------------------------------

    /**
     * @notice Moves `amount` tokens from the caller into the reward pool.
     * @dev Anyone may fund. Requires an allowance of `amount`. Emits {Funded}.
     * @param amount Tokens to add.
     */
    function fund(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        totalFunded = SafeCast.toUint128(totalFunded + amount);
        emit Funded(_msgSender(), amount);
        _token.safeTransferFrom(_msgSender(), address(this), amount);
    }

    /**
     * @notice Returns `amount` unsettled tokens from the reward pool to `to`: a run's budget it did not pay.
     * @dev Requires {DEFAULT_ADMIN_ROLE}. Only funds no live root committed can leave. Emits {Defunded}.
     * @param to Where the tokens go (the funder).
     * @param amount Tokens to return, at most {availableFunds}.
     */
    function defund(address to, uint256 amount) external onlyRole(DEFAULT_ADMIN_ROLE) nonReentrant {
        if (to == address(0)) revert ZeroAddress();
        if (amount == 0) revert ZeroAmount();
        uint256 available = uint256(totalFunded) + totalSlashed - totalSettled - totalDefunded;
        if (amount > available) revert DefundExceedsAvailable(amount, available);
        totalDefunded = SafeCast.toUint128(totalDefunded + amount);
        emit Defunded(to, amount);
        _token.safeTransfer(to, amount);
    }

    // ---- roots ---------------------------------------------------------------------------------------------

    /**
     * @notice Records round `round`: its global model hash and the Merkle root of cumulative rewards, pending
     * for {rootDelay} seconds.
     * @dev Requires {COORDINATOR_ROLE}. The root must commit to leaves
     * `keccak256(bytes.concat(keccak256(abi.encode(account, cumulativeAmount))))` summing to `leavesTotal`. A
     * root pending when this one arrives is replaced. Emits {RoundSettled} (and {RootAccepted} for a pending root
     * whose delay had passed).
     * @param round Round number, greater than {lastRound} by at most {MAX_ROUND_STEP}.
     * @param modelHash Hash of the round's aggregated global model.
     * @param newRewardsRoot Merkle root over every account's cumulative reward after this round.
     * @param leavesTotal The sum of the root's leaves: at least {totalSettled}, by at most the allowance more.
     */
    function settleRound(uint64 round, bytes32 modelHash, bytes32 newRewardsRoot, uint256 leavesTotal)
        external
        onlyRole(COORDINATOR_ROLE)
        whenNotPaused
    {
        _acceptIfReady();
        uint64 last = lastRound;
        if (round <= last) revert RoundNotIncreasing(round, last);
        if (round - last > MAX_ROUND_STEP) revert RoundStepTooLarge(round, last);
        if (newRewardsRoot == bytes32(0)) revert EmptyRewardsRoot();
        uint256 settled = totalSettled;
        if (leavesTotal < settled) revert CumulativeTotalDecreased(leavesTotal, settled);
        uint256 roundTotal = leavesTotal - settled;
        uint256 allowance = uint256(roundAllowance) + rewardPerRound;
        if (roundTotal > allowance) revert RoundCapExceeded(roundTotal, allowance);
        // Returned funds are gone: live roots may commit only what was funded or slashed and not returned.
        uint256 available = uint256(totalFunded) + totalSlashed - totalDefunded;
        if (leavesTotal > available) revert InsufficientFunds(leavesTotal, available);

        uint64 readyAt = SafeCast.toUint64(block.timestamp + rootDelay);
        lastRound = round;
        _readyAt = readyAt;
        // Cannot truncate: leavesTotal <= available and roundTotal <= allowance, both below 2**128 in practice;
        // SafeCast guards the allowance, which only grows by bounded rewards per round.
        totalSettled = SafeCast.toUint128(leavesTotal);
        roundAllowance = SafeCast.toUint128(allowance - roundTotal);
        _roots[round] = newRewardsRoot;
        emit RoundSettled(round, modelHash, newRewardsRoot, roundTotal, leavesTotal, readyAt);
    }

    /**
     * @notice Makes the pending root the one claims use, once its delay has passed. Claims and settlements do
     * this themselves; anyone may call it.
     * @dev Emits {RootAccepted}.
     */
    function acceptRoot() external {
        if (!_acceptIfReady()) revert NoPendingRoot();
    }

    /**
     * @notice Revokes the pending root: claims keep using the accepted one.
     * @dev Requires {GUARDIAN_ROLE} or {DEFAULT_ADMIN_ROLE}. Emits {RootRevoked}.
     */
    function revokePendingRoot() external onlyGuardian {
        _revokePending();
    }

    /**
     * @notice Revokes the pending root by proving that it lowers `account`'s cumulative amount: anyone may call.
     * @dev Emits {RootChallenged} and {RootRevoked}.
     * @param account The account whose amount decreased.
     * @param acceptedAmount Its cumulative amount in the accepted root.
     * @param acceptedProof Its proof against the accepted root.
     * @param pendingAmount Its cumulative amount in the pending root, below `acceptedAmount`.
     * @param pendingProof Its proof against the pending root.
     */
    function challengeRoot(
        address account,
        uint256 acceptedAmount,
        bytes32[] calldata acceptedProof,
        uint256 pendingAmount,
        bytes32[] calldata pendingProof
    ) external {
        _acceptIfReady();
        if (_readyAt == 0) revert NoPendingRoot();
        uint64 accepted = _acceptedRound;
        if (accepted == 0) revert NoAcceptedRoot();
        if (pendingAmount >= acceptedAmount) revert NotADecrease(acceptedAmount, pendingAmount);
        if (!MerkleProof.verifyCalldata(acceptedProof, _roots[accepted], _leaf(account, acceptedAmount))) {
            revert InvalidProof(account, acceptedAmount);
        }
        if (!MerkleProof.verifyCalldata(pendingProof, _roots[lastRound], _leaf(account, pendingAmount))) {
            revert InvalidProof(account, pendingAmount);
        }
        emit RootChallenged(lastRound, account, acceptedAmount, pendingAmount);
        _revokePending();
    }

    /**
     * @notice Pays `account` what the claimable root owes it beyond what it already claimed.
     * @dev Anyone may submit a claim; the tokens always go to `account`. Emits {Claimed}.
     * @param account The institution's account, a leaf of the claimable root.
     * @param cumulativeAmount Its cumulative reward in that leaf.
     * @param proof Sibling hashes from the leaf to the root, as `StandardMerkleTree.getProof` returns them.
     * @return amount Tokens paid.
     */
    function claim(address account, uint256 cumulativeAmount, bytes32[] calldata proof)
        external
        whenNotPaused
        nonReentrant
        returns (uint256 amount)
    {
        _acceptIfReady();
        uint64 round = _acceptedRound;
        if (round == 0) revert NoRoundSettled();
        if (!MerkleProof.verifyCalldata(proof, _roots[round], _leaf(account, cumulativeAmount))) {
            revert InvalidProof(account, cumulativeAmount);
        }
        uint256 already = _claimed[account];
        if (cumulativeAmount <= already) revert NothingToClaim(account, cumulativeAmount, already);
        amount = cumulativeAmount - already;
        uint256 claimedTotal = totalClaimed + amount;
        uint256 acceptedTotal = _acceptedTotal;
        if (claimedTotal > acceptedTotal) revert ClaimExceedsSettled(amount, acceptedTotal - totalClaimed);

        _claimed[account] = cumulativeAmount;
        // Cannot truncate: claimedTotal <= acceptedTotal, a uint128.
        totalClaimed = uint128(claimedTotal);
        emit Claimed(account, amount, cumulativeAmount);
        _token.safeTransfer(account, amount);
    }

    // ---- stakes --------------------------------------------------------------------------------------------

    /**
     * @notice Stakes `amount` of the caller's tokens as a bond.
     * @dev Requires an allowance of `amount`. Emits {Staked}.
     * @param amount Tokens to stake.
     */
    function stake(uint256 amount) external whenNotPaused nonReentrant {
        if (amount == 0) revert ZeroAmount();
        Stake storage s = _stakes[_msgSender()];
        s.active = SafeCast.toUint128(s.active + amount);
        totalStaked += amount;
        emit Staked(_msgSender(), amount);
        _token.safeTransferFrom(_msgSender(), address(this), amount);
    }

    /**
     * @notice Starts unstaking `amount`; it stays slashable and can be withdrawn after {unstakeDelay}.
     * @dev A new request adds to what is pending and restarts the delay. Emits {UnstakeRequested}.
     * @param amount Tokens to move from active to pending.
     */
    function requestUnstake(uint256 amount) external whenNotPaused {
        if (amount == 0) revert ZeroAmount();
        Stake storage s = _stakes[_msgSender()];
        uint256 active = s.active;
        if (amount > active) revert UnstakeExceedsStake(_msgSender(), amount, active);
        uint64 unlockAt = SafeCast.toUint64(block.timestamp + _unstakeDelay);
        // Cannot truncate: amount <= active, and a stake's parts never exceed what was staked, a uint128.
        s.active = uint128(active - amount);
        s.pending += uint128(amount);
        s.unlockAt = unlockAt;
        emit UnstakeRequested(_msgSender(), amount, unlockAt);
    }

    /**
     * @notice Pays the caller its pending unstaked tokens once the delay has passed.
     * @dev Tokens held by a proposed slash stay. Emits {Withdrawn}.
     */
    function withdraw() external whenNotPaused nonReentrant {
        Stake storage s = _stakes[_msgSender()];
        uint256 amount = s.pending;
        if (amount == 0) revert NothingToWithdraw(_msgSender());
        // The delay is days long; a validator's few seconds of timestamp drift do not matter.
        // slither-disable-next-line timestamp
        if (block.timestamp < s.unlockAt) revert StakeLocked(_msgSender(), s.unlockAt);
        s.pending = 0;
        totalStaked -= amount;
        emit Withdrawn(_msgSender(), amount);
        _token.safeTransfer(_msgSender(), amount);
    }

    /**
     * @notice Proposes slashing `amount` of `account`'s stake, with `evidenceHash` as the reason; the tokens are
     * held at once and taken after {slashDelay} unless vetoed.
     * @dev Requires {COORDINATOR_ROLE}. Holds from the active stake first, then from pending. Emits {SlashProposed}.
     * @param account The institution to slash.
     * @param amount Tokens to take, at most its active plus pending stake.
     * @param evidenceHash Hash of the evidence (for instance, of the flagged update and its scores); not zero, and
     * never used against `account` before.
     * @return id The proposal's id.
     */
    function proposeSlash(address account, uint256 amount, bytes32 evidenceHash)
        external
        onlyRole(COORDINATOR_ROLE)
        whenNotPaused
        returns (uint256 id)
    {
        if (amount == 0) revert ZeroAmount();
        if (evidenceHash == bytes32(0)) revert EmptyEvidence();
        if (_evidenceUsed[account][evidenceHash]) revert EvidenceAlreadyUsed(account, evidenceHash);
        _evidenceUsed[account][evidenceHash] = true;
        Stake storage s = _stakes[account];
        uint256 active = s.active;
        uint256 pending = s.pending;
        if (amount > active + pending) revert SlashExceedsStake(account, amount, active + pending);
        uint256 fromActive = amount < active ? amount : active;
        // Cannot truncate: every result is bounded by values read from uint128 fields.
        s.active = uint128(active - fromActive);
        s.pending = uint128(pending - (amount - fromActive));
        s.held += uint128(amount);
        id = ++slashCount;
        uint64 executableAt = SafeCast.toUint64(block.timestamp + slashDelay);
        _slashes[id] = SlashProposal(account, executableAt, false, uint128(amount), evidenceHash);
        emit SlashProposed(id, account, amount, evidenceHash, executableAt);
    }

    /**
     * @notice Takes the tokens of slash `id` into the reward pool once its veto window has passed; anyone may
     * call.
     * @dev Emits {Slashed}.
     * @param id The proposal's id.
     */
    function executeSlash(uint256 id) external whenNotPaused {
        SlashProposal storage p = _slashes[id];
        if (p.account == address(0) || p.closed) revert SlashNotOpen(id);
        // slither-disable-next-line timestamp
        if (block.timestamp < p.executableAt) revert SlashNotDue(id, p.executableAt);
        p.closed = true;
        uint128 amount = p.amount;
        _stakes[p.account].held -= amount;
        totalStaked -= amount;
        totalSlashed = SafeCast.toUint128(uint256(totalSlashed) + amount);
        emit Slashed(p.account, amount, p.evidenceHash);
    }

    /**
     * @notice Vetoes slash `id` during its window: the held tokens return to the account's active stake.
     * @dev Requires {GUARDIAN_ROLE} or {DEFAULT_ADMIN_ROLE}. Emits {SlashVetoed}.
     * @param id The proposal's id.
     */
    function vetoSlash(uint256 id) external onlyGuardian {
        SlashProposal storage p = _slashes[id];
        if (p.account == address(0) || p.closed) revert SlashNotOpen(id);
        // slither-disable-next-line timestamp
        if (block.timestamp >= p.executableAt) revert VetoWindowClosed(id, p.executableAt);
        p.closed = true;
        Stake storage s = _stakes[p.account];
        s.held -= p.amount;
        s.active += p.amount;
        emit SlashVetoed(id, p.account, _msgSender());
    }

    // ---- governance ----------------------------------------------------------------------------------------

    /**
     * @notice Sets a governed parameter: the reward per round (token units), the root delay or the slash delay
     * (seconds), within {parameterBounds}.
     * @dev Requires {DEFAULT_ADMIN_ROLE} (the timelock, in a governed deployment). Emits {ParameterChanged}.
     * @param parameter Which parameter.
     * @param value Its new value.
     */
    function setParameter(Parameter parameter, uint256 value) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setParameter(parameter, value);
    }

    /**
     * @notice Stops settlements, claims, stakes, unstakes, withdrawals and slashes.
     * @dev Requires {DEFAULT_ADMIN_ROLE}. Emits {Paused}.
     */
    function pause() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _pause();
    }

    /**
     * @notice Resumes what {pause} stopped.
     * @dev Requires {DEFAULT_ADMIN_ROLE}. Emits {Unpaused}.
     */
    function unpause() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _unpause();
    }

    // ---- internals -----------------------------------------------------------------------------------------

    function _leaf(address account, uint256 amount) private pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(account, amount))));
    }

    /// @dev The claimable round and its leaf sum, counting a pending root whose delay passed as accepted.
    function _claimable() private view returns (uint64, uint128) {
        uint64 readyAt = _readyAt;
        // slither-disable-next-line timestamp
        if (readyAt != 0 && block.timestamp >= readyAt) return (lastRound, totalSettled);
        return (_acceptedRound, _acceptedTotal);
    }

    /// @dev Accepts the pending root if its delay passed; returns whether it did.
    function _acceptIfReady() private returns (bool) {
        uint64 readyAt = _readyAt;
        // The delay is hours to days long; a validator's few seconds of timestamp drift do not matter. Zero
        // means "none pending", not a time: the equality is exact on purpose.
        // slither-disable-next-line incorrect-equality,timestamp
        if (readyAt == 0 || block.timestamp < readyAt) return false;
        uint64 round = lastRound;
        uint128 total = totalSettled;
        _acceptedRound = round;
        _readyAt = 0;
        _acceptedTotal = total;
        emit RootAccepted(round, _roots[round], total);
        return true;
    }

    function _revokePending() private {
        uint64 readyAt = _readyAt;
        // slither-disable-next-line incorrect-equality,timestamp
        if (readyAt == 0 || block.timestamp >= readyAt) revert NoPendingRoot();
        uint64 round = lastRound;
        bytes32 root = _roots[round];
        uint128 accepted = _acceptedTotal;
        // What the revoked rounds spent of the allowance comes back: the coordinator re-settles honestly.
        roundAllowance = SafeCast.toUint128(uint256(roundAllowance) + totalSettled - accepted);
        totalSettled = accepted;
        _readyAt = 0;
        delete _roots[round];
        emit RootRevoked(round, root, _msgSender());
    }

    function _setParameter(Parameter parameter, uint256 value) private {
        (uint256 min, uint256 max) = parameterBounds(parameter);
        if (value < min || value > max) revert ParameterOutOfRange(parameter, value, min, max);
        uint256 old;
        if (parameter == Parameter.RewardPerRound) {
            old = rewardPerRound;
            rewardPerRound = uint128(value);
        } else if (parameter == Parameter.RootDelay) {
            old = rootDelay;
            rootDelay = uint64(value);
        } else {
            old = slashDelay;
            slashDelay = uint64(value);
        }
        emit ParameterChanged(parameter, old, value);
    }
}
