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
 * @dev Pays institutions for their contributions to a federated model, one Merkle root per training round.
 *
 * The coordinator settles each round with one transaction: the round number (strictly increasing), the hash of
 * the round's global model, and a Merkle root over every account's _cumulative_ reward so far, built like
 * OpenZeppelin's JavaScript `StandardMerkleTree` for `(address, uint256)` leaves. An institution claims at any
 * time with its cumulative amount and a proof against the latest root and receives the difference to what it
 * already claimed, so one claim covers every round since its last one.
 *
 * Institutions may stake tokens as a bond; the coordinator slashes misbehaving institutions up to their stake
 * (active or waiting to be withdrawn) and the slashed tokens return to the reward pool. Settled rewards can never
 * exceed what was funded plus what was slashed, and claims can never exceed what was settled, so staked tokens are
 * never paid out as rewards.
 *
 * The reentrancy guard lives in transient storage (EIP-1153, Cancun and later): a claim pays for no guard slot.
 *
 * Amounts are kept in 128 bits so that related totals share a storage slot; this bounds every total at about
 * 3.4e38 token units.
 */
contract RewardDistributor is AccessControl, Pausable, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @dev Role allowed to settle rounds and to slash stakes.
    bytes32 public constant COORDINATOR_ROLE = keccak256("COORDINATOR_ROLE");

    /// @dev What a settled round recorded.
    struct Round {
        bytes32 modelHash;
        bytes32 rewardsRoot;
    }

    /// @dev An institution's bond: `active` can be slashed or unstaked, `pending` waits until `unlockAt`.
    struct Stake {
        uint128 active;
        uint128 pending;
        uint64 unlockAt;
    }

    IERC20 private immutable _token;
    uint64 private immutable _unstakeDelay;

    // Declared first so that it shares a slot with Pausable's flag: settle and claim read both.
    /// @notice The latest settled round; 0 before the first settlement.
    uint64 public lastRound;

    /// @notice Sum of every settled round's total.
    uint128 public totalSettled;
    /// @notice Sum of every claim paid.
    uint128 public totalClaimed;

    /// @notice Sum of every amount funded.
    uint128 public totalFunded;
    /// @notice Sum of every amount slashed (returned to the reward pool).
    uint128 public totalSlashed;
    /// @notice Sum of every unsettled amount the admin took back out of the reward pool.
    uint128 public totalDefunded;

    /// @notice Tokens currently held as stakes, active and pending.
    uint256 public totalStaked;

    mapping(uint256 round => Round) private _rounds;
    mapping(address account => uint256) private _claimed;
    mapping(address account => Stake) private _stakes;

    /// @notice The reward pool received `amount` tokens from `funder`.
    event Funded(address indexed funder, uint256 amount);

    /// @notice `amount` unsettled tokens left the reward pool for `to` (a run's unspent budget, returned).
    event Defunded(address indexed to, uint256 amount);

    /**
     * @notice Round `round` was settled.
     * @param round The round number.
     * @param modelHash Hash of the round's aggregated global model.
     * @param rewardsRoot Merkle root over every account's cumulative reward after this round.
     * @param roundTotal Tokens this round added to the cumulative rewards.
     */
    event RoundSettled(uint256 indexed round, bytes32 indexed modelHash, bytes32 rewardsRoot, uint256 roundTotal);

    /// @notice `account` was paid `amount`, bringing what it claimed to `cumulativeAmount`.
    event Claimed(address indexed account, uint256 amount, uint256 cumulativeAmount);

    /// @notice `account` staked `amount` more tokens.
    event Staked(address indexed account, uint256 amount);

    /// @notice `account` asked to unstake `amount`; it can be withdrawn from `unlockAt` (a timestamp) on.
    event UnstakeRequested(address indexed account, uint256 amount, uint256 unlockAt);

    /// @notice `account` withdrew `amount` of unstaked tokens.
    event Withdrawn(address indexed account, uint256 amount);

    /// @notice `amount` of `account`'s stake was slashed into the reward pool, with `evidenceHash` as the reason.
    event Slashed(address indexed account, uint256 amount, bytes32 indexed evidenceHash);

    /// @dev A constructor argument was the zero address.
    error ZeroAddress();

    /// @dev An amount of zero was given where a positive one is required.
    error ZeroAmount();

    /// @dev `round` is not greater than the latest settled round `lastRound`.
    error RoundNotIncreasing(uint256 round, uint256 lastRound);

    /// @dev A round was settled with an empty Merkle root.
    error EmptyRewardsRoot();

    /// @dev Settling would bring the settled total to `required`, above the `available` funded plus slashed.
    error InsufficientFunds(uint256 required, uint256 available);

    /// @notice `amount` exceeds the reward pool's unsettled funds `available`.
    error DefundExceedsAvailable(uint256 amount, uint256 available);

    /// @dev A claim was made before any round was settled.
    error NoRoundSettled();

    /// @dev The proof does not show `(account, cumulativeAmount)` in the latest rewards root.
    error InvalidProof(address account, uint256 cumulativeAmount);

    /// @dev `account` already claimed `claimed`, which is not less than `cumulativeAmount`.
    error NothingToClaim(address account, uint256 cumulativeAmount, uint256 claimed);

    /// @dev Paying `amount` would exceed the settled but unclaimed total `unclaimed` (an inconsistent root).
    error ClaimExceedsSettled(uint256 amount, uint256 unclaimed);

    /// @dev `account` asked to unstake `amount` but has only `active` staked.
    error UnstakeExceedsStake(address account, uint256 amount, uint256 active);

    /// @dev `account` has nothing waiting to be withdrawn.
    error NothingToWithdraw(address account);

    /// @dev `account`'s unstaked tokens stay locked until `unlockAt` (a timestamp).
    error StakeLocked(address account, uint256 unlockAt);

    /// @dev Slashing `amount` from `account` exceeds its stake `staked` (active plus pending).
    error SlashExceedsStake(address account, uint256 amount, uint256 staked);

    /**
     * @dev Sets the reward `token_`, grants {DEFAULT_ADMIN_ROLE} to `admin` and {COORDINATOR_ROLE} to
     * `coordinator`, and fixes how long unstaked tokens stay slashable (`unstakeDelay_`, seconds).
     */
    constructor(IERC20 token_, address admin, address coordinator, uint64 unstakeDelay_) {
        if (address(token_) == address(0) || admin == address(0) || coordinator == address(0)) {
            revert ZeroAddress();
        }
        _token = token_;
        _unstakeDelay = unstakeDelay_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(COORDINATOR_ROLE, coordinator);
    }

    /// @notice The token rewards and stakes are paid in.
    function token() external view returns (IERC20) {
        return _token;
    }

    /// @notice Seconds between {requestUnstake} and the earliest {withdraw}.
    function unstakeDelay() external view returns (uint64) {
        return _unstakeDelay;
    }

    /**
     * @notice What round `round` recorded; both zero if it was never settled.
     * @param round The round number.
     * @return modelHash Hash of the round's global model.
     * @return root The Merkle root of cumulative rewards after the round.
     */
    function roundOf(uint256 round) external view returns (bytes32 modelHash, bytes32 root) {
        Round storage r = _rounds[round];
        return (r.modelHash, r.rewardsRoot);
    }

    /// @notice The Merkle root claims are checked against: the latest settled round's.
    function rewardsRoot() external view returns (bytes32) {
        return _rounds[lastRound].rewardsRoot;
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
     */
    function stakeOf(address account) external view returns (uint256 active, uint256 pending, uint256 unlockAt) {
        Stake storage s = _stakes[account];
        return (s.active, s.pending, s.unlockAt);
    }

    /// @notice Tokens in the reward pool not yet committed to a settled round.
    function availableFunds() external view returns (uint256) {
        return uint256(totalFunded) + totalSlashed - totalSettled - totalDefunded;
    }

    /**
     * @notice Moves `amount` tokens from the caller into the reward pool.
     * @dev Requires {DEFAULT_ADMIN_ROLE} and an allowance of `amount`. Emits {Funded}.
     * @param amount Tokens to add.
     */
    function fund(uint256 amount) external onlyRole(DEFAULT_ADMIN_ROLE) nonReentrant {
        if (amount == 0) revert ZeroAmount();
        totalFunded = SafeCast.toUint128(totalFunded + amount);
        emit Funded(_msgSender(), amount);
        _token.safeTransferFrom(_msgSender(), address(this), amount);
    }

    /**
     * @notice Returns `amount` unsettled tokens from the reward pool to `to`: a run's budget it did not pay.
     * @dev Requires {DEFAULT_ADMIN_ROLE}. Only funds no settled round committed can leave, so what institutions
     * earned stays claimable. Emits {Defunded}.
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

    /**
     * @notice Records round `round`: its global model hash and the Merkle root of cumulative rewards.
     * @dev Requires {COORDINATOR_ROLE}; rounds strictly increase; the settled total may not exceed funds plus
     * slashed stakes, less what was returned ({defund}). The root must commit to leaves
     * `keccak256(bytes.concat(keccak256(abi.encode(account, cumulativeAmount))))`. Emits {RoundSettled}.
     * @param round Round number, greater than {lastRound}.
     * @param modelHash Hash of the round's aggregated global model.
     * @param newRewardsRoot Merkle root over every account's cumulative reward after this round.
     * @param roundTotal Tokens this round adds to the cumulative rewards.
     */
    function settleRound(
        uint64 round,
        bytes32 modelHash,
        bytes32 newRewardsRoot,
        uint256 roundTotal
    ) external onlyRole(COORDINATOR_ROLE) whenNotPaused {
        uint64 last = lastRound;
        if (round <= last) revert RoundNotIncreasing(round, last);
        if (newRewardsRoot == bytes32(0)) revert EmptyRewardsRoot();
        uint256 settled = totalSettled + roundTotal;
        // Returned funds are gone: settled rounds may commit only what was funded or slashed and not returned.
        uint256 available = uint256(totalFunded) + totalSlashed - totalDefunded;
        if (settled > available) revert InsufficientFunds(settled, available);

        lastRound = round;
        totalSettled = SafeCast.toUint128(settled);
        _rounds[round] = Round(modelHash, newRewardsRoot);
        emit RoundSettled(round, modelHash, newRewardsRoot, roundTotal);
    }

    /**
     * @notice Pays `account` what the latest root owes it beyond what it already claimed.
     * @dev Anyone may submit a claim; the tokens always go to `account`. Emits {Claimed}.
     * @param account The institution's account, a leaf of the latest root.
     * @param cumulativeAmount Its cumulative reward in that leaf.
     * @param proof Sibling hashes from the leaf to the root, as `StandardMerkleTree.getProof` returns them.
     * @return amount Tokens paid.
     */
    function claim(
        address account,
        uint256 cumulativeAmount,
        bytes32[] calldata proof
    ) external whenNotPaused nonReentrant returns (uint256 amount) {
        uint64 round = lastRound;
        if (round == 0) revert NoRoundSettled();
        bytes32 leaf = keccak256(bytes.concat(keccak256(abi.encode(account, cumulativeAmount))));
        if (!MerkleProof.verifyCalldata(proof, _rounds[round].rewardsRoot, leaf)) {
            revert InvalidProof(account, cumulativeAmount);
        }
        uint256 already = _claimed[account];
        if (cumulativeAmount <= already) revert NothingToClaim(account, cumulativeAmount, already);
        amount = cumulativeAmount - already;
        uint256 claimedTotal = totalClaimed + amount;
        if (claimedTotal > totalSettled) revert ClaimExceedsSettled(amount, totalSettled - totalClaimed);

        _claimed[account] = cumulativeAmount;
        // Cannot truncate: claimedTotal <= totalSettled, a uint128.
        totalClaimed = uint128(claimedTotal);
        emit Claimed(account, amount, cumulativeAmount);
        _token.safeTransfer(account, amount);
    }

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
        // Cannot truncate: amount <= active, and pending + active never exceeds what was staked, a uint128.
        s.active = uint128(active - amount);
        s.pending += uint128(amount);
        s.unlockAt = unlockAt;
        emit UnstakeRequested(_msgSender(), amount, unlockAt);
    }

    /**
     * @notice Pays the caller its pending unstaked tokens once the delay has passed.
     * @dev Emits {Withdrawn}.
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
     * @notice Slashes `amount` of `account`'s stake into the reward pool.
     * @dev Requires {COORDINATOR_ROLE}. Takes from the active stake first, then from pending. Emits {Slashed}.
     * @param account The institution slashed.
     * @param amount Tokens taken, at most its active plus pending stake.
     * @param evidenceHash Hash of the evidence (for instance, of the flagged update and its scores).
     */
    function slash(address account, uint256 amount, bytes32 evidenceHash) external onlyRole(COORDINATOR_ROLE) whenNotPaused {
        if (amount == 0) revert ZeroAmount();
        Stake storage s = _stakes[account];
        uint256 active = s.active;
        uint256 pending = s.pending;
        if (amount > active + pending) revert SlashExceedsStake(account, amount, active + pending);
        uint256 fromActive = amount < active ? amount : active;
        // Cannot truncate: both results are below values read from uint128 fields.
        s.active = uint128(active - fromActive);
        s.pending = uint128(pending - (amount - fromActive));
        totalStaked -= amount;
        totalSlashed = SafeCast.toUint128(totalSlashed + amount);
        emit Slashed(account, amount, evidenceHash);
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
}
