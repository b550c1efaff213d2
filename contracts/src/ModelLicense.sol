// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

/// @dev What {ModelLicense} reads of the RewardDistributor: the latest settled round and its cumulative rewards.
interface IRewardRecord {
    /// @notice The latest settled round; 0 before the first settlement.
    function lastRound() external view returns (uint64);

    /// @notice Merkle root over every account's cumulative reward after the latest round.
    function rewardsRoot() external view returns (bytes32);

    /// @notice Sum of every settled round's total: the sum of the latest root's leaves.
    function totalSettled() external view returns (uint128);
}

/**
 * @title ModelLicense
 * @dev A revenue-based commercial license for a federated model, whose fees go to the institutions that trained it.
 *
 * Licensing. An attester ({ATTESTER_ROLE}) records each licensee's annual revenue. A licensee whose revenue is at
 * or below the revenue threshold is licensed for free; above it, it must lock at least
 * `requiredStake(revenue) = X · (revenue − threshold)` tokens for at least the lock period. Revenue and threshold
 * are in the token's smallest unit (18 decimals: 1 currency unit of revenue = 10^18), X ({Parameter.StakeRate}) is
 * 18-decimal fixed point (10^18 = 1; the default 10^15 is 0.001) and the product rounds up. Revenue above
 * {MAX_REVENUE} (10^18 whole currency units) is refused with {RevenueTooLarge}: with X at most 1 no product can
 * overflow. Parameters apply at once: when governance raises the requirement, a licensee locks more to stay
 * licensed.
 *
 * Trust: the attester is trusted to report revenue truthfully (as an auditor would); the contract cannot check
 * it. A false attestation only moves the stake a licensee must lock; it cannot move anyone's tokens. Governance
 * can revoke the role.
 *
 * Fees. Anyone (a licensee, usually) pays fees with {payFee}. Fees go to the contributors pro rata to their
 * recorded contribution: the cumulative rewards the RewardDistributor settled. Each fee accrues to the epoch of the
 * distributor's latest round, whose rewards root and settled total W are copied here when the first fee of that
 * round arrives. Weights are fixed within an epoch, so its accumulator is its fee total F: a fee is one addition
 * (O(1) whatever the number of contributors), the fee per unit of weight is F / W held exactly, and a contributor
 * of weight w withdraws `floor(w · F / W) − withdrawn` whenever it likes, with the same leaf and proof it claims
 * rewards with. Rounding down is the only dust: once everyone has withdrawn, what stays of an epoch's fees is
 * the sum of the n contributors' fractional parts, an integer below n (at most n − 1 token units).
 *
 * Governance. {DEFAULT_ADMIN_ROLE} (the federation's TimelockController, driven by its Governor) sets the
 * parameters within fixed bounds ({parameterBounds}), including the reward per round that the coordinator pays
 * out of the distributor, and grants or revokes the attester role.
 */
contract ModelLicense is AccessControl, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @dev The governed parameters, in the order of {parameters}.
    enum Parameter {
        StakeRate,
        RevenueThreshold,
        LockPeriod,
        RewardPerRound
    }

    /// @dev Values of every {Parameter}.
    struct Parameters {
        uint256 stakeRate;
        uint256 revenueThreshold;
        uint256 lockPeriod;
        uint256 rewardPerRound;
    }

    /// @dev A licensee: its attested revenue, when it was attested, its locked stake and when the lock ends.
    struct Licensee {
        uint128 revenue;
        uint64 attestedAt;
        uint64 unlockAt;
        uint256 locked;
    }

    /// @dev Fees accrued while a round's contributions were the latest: the weights and the fee total.
    struct Epoch {
        bytes32 weightsRoot;
        uint128 totalWeight;
        uint128 fees;
        uint256 paidOut;
    }

    /// @dev Role allowed to record licensees' revenue.
    bytes32 public constant ATTESTER_ROLE = keccak256("ATTESTER_ROLE");

    /// @notice Fixed-point one for {Parameter.StakeRate}.
    uint256 public constant WAD = 1e18;
    /// @notice Largest revenue accepted: 10^18 whole currency units, in 18-decimal units.
    uint256 public constant MAX_REVENUE = 1e36;
    /// @notice Largest stake rate: 1, a stake equal to the revenue above the threshold.
    uint256 public constant MAX_STAKE_RATE = WAD;
    /// @notice Shortest lock period governance may set.
    uint256 public constant MIN_LOCK_PERIOD = 1 days;
    /// @notice Longest lock period governance may set, and longest lock a licensee may take.
    uint256 public constant MAX_LOCK_PERIOD = 3650 days;
    /// @notice Largest reward per round: 10^9 whole tokens.
    uint256 public constant MAX_REWARD_PER_ROUND = 1e27;

    IERC20 private immutable _token;
    IRewardRecord private immutable _record;

    uint256[4] private _params;

    /// @notice The distributor round whose contributions the next fee is shared by (0 before the first fee).
    uint64 public currentRound;
    /// @notice Tokens locked by licensees.
    uint256 public totalLocked;

    mapping(address licensee => Licensee) private _licensees;
    mapping(uint256 round => Epoch) private _epochs;
    mapping(uint256 round => mapping(address account => uint256)) private _withdrawn;
    uint64[] private _feeRounds;

    /// @notice Governance changed `parameter` from `oldValue` to `newValue`.
    event ParameterChanged(Parameter indexed parameter, uint256 oldValue, uint256 newValue);

    /// @notice `attester` recorded `licensee`'s annual revenue as `revenue` (18-decimal currency units).
    event RevenueAttested(address indexed licensee, uint256 revenue, address indexed attester);

    /// @notice `licensee` locked `amount` more tokens, `locked` in all, until `unlockAt` (a timestamp).
    event LicenseAcquired(address indexed licensee, uint256 amount, uint256 locked, uint256 unlockAt);

    /// @notice `licensee` took back its `amount` locked tokens after the lock ended.
    event StakeReleased(address indexed licensee, uint256 amount);

    /// @notice Fees now accrue to the contributors of `round`: leaves of `weightsRoot`, `totalWeight` in all.
    event WeightsSynced(uint256 indexed round, bytes32 weightsRoot, uint256 totalWeight);

    /// @notice `payer` paid a fee of `amount` tokens, shared by the contributors of `round`.
    event FeePaid(address indexed payer, uint256 indexed round, uint256 amount);

    /// @notice `account` was paid `amount` tokens, its share of the fees accrued to `round`.
    event FeeShareWithdrawn(address indexed account, uint256 indexed round, uint256 amount);

    /// @dev A constructor argument was the zero address.
    error ZeroAddress();

    /// @dev An amount of zero was given where a positive one is required.
    error ZeroAmount();

    /// @dev `value` is outside `[min, max]`, the bounds of `parameter`.
    error ParameterOutOfRange(Parameter parameter, uint256 value, uint256 min, uint256 max);

    /// @dev `revenue` is above the largest accepted, `max`.
    error RevenueTooLarge(uint256 revenue, uint256 max);

    /// @dev No revenue was ever attested for `licensee`.
    error RevenueNotAttested(address licensee);

    /// @dev A lock of `duration` seconds is shorter than the lock period `minimum`.
    error LockTooShort(uint256 duration, uint256 minimum);

    /// @dev A lock of `duration` seconds is longer than the longest allowed, `maximum`.
    error LockTooLong(uint256 duration, uint256 maximum);

    /// @dev A stake of `locked` tokens is below the `required` one.
    error InsufficientStake(uint256 locked, uint256 required);

    /// @dev `licensee`'s stake stays locked until `unlockAt` (a timestamp).
    error LicenseLocked(address licensee, uint256 unlockAt);

    /// @dev `licensee` has no locked stake.
    error NothingLocked(address licensee);

    /// @dev A fee was paid before the distributor recorded any contribution to share it by.
    error NoContributions();

    /// @dev No fee ever accrued to `round`.
    error NoFeesForRound(uint256 round);

    /// @dev The proof does not show `(account, weight)` in the weights root of `round`.
    error InvalidWeightProof(uint256 round, address account, uint256 weight);

    /// @dev `account` has no fee share of `round` left to withdraw.
    error NoFeeShare(uint256 round, address account);

    /// @dev Paying `amount` would exceed what is left of `round`'s fees, `remaining` (an inconsistent root).
    error ShareExceedsFees(uint256 round, uint256 amount, uint256 remaining);

    /**
     * @dev Sets the `token_` stakes and fees are paid in, the `record_` of contributions (the RewardDistributor),
     * the first parameters (each within its bounds), and grants {DEFAULT_ADMIN_ROLE} to `admin` (the timelock of a
     * governed federation) and {ATTESTER_ROLE} to `attester` (none when zero).
     */
    constructor(IERC20 token_, IRewardRecord record_, address admin, address attester, Parameters memory initial) {
        if (address(token_) == address(0) || address(record_) == address(0) || admin == address(0)) {
            revert ZeroAddress();
        }
        _token = token_;
        _record = record_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        if (attester != address(0)) _grantRole(ATTESTER_ROLE, attester);
        _setParameter(Parameter.StakeRate, initial.stakeRate);
        _setParameter(Parameter.RevenueThreshold, initial.revenueThreshold);
        _setParameter(Parameter.LockPeriod, initial.lockPeriod);
        _setParameter(Parameter.RewardPerRound, initial.rewardPerRound);
    }

    /// @notice The token stakes and fees are paid in.
    function token() external view returns (IERC20) {
        return _token;
    }

    /// @notice The contract whose settled rewards weigh the fee shares (the RewardDistributor).
    function rewardRecord() external view returns (IRewardRecord) {
        return _record;
    }

    /// @notice The current value of `parameter`.
    function parameter(Parameter p) external view returns (uint256) {
        return _params[uint256(p)];
    }

    /// @notice Every parameter's current value.
    function parameters() external view returns (Parameters memory) {
        return Parameters(_params[0], _params[1], _params[2], _params[3]);
    }

    /**
     * @notice The values governance may give `p`.
     * @return min Smallest allowed value.
     * @return max Largest allowed value.
     */
    function parameterBounds(Parameter p) public pure returns (uint256 min, uint256 max) {
        if (p == Parameter.StakeRate) return (0, MAX_STAKE_RATE);
        if (p == Parameter.RevenueThreshold) return (0, MAX_REVENUE);
        if (p == Parameter.LockPeriod) return (MIN_LOCK_PERIOD, MAX_LOCK_PERIOD);
        return (0, MAX_REWARD_PER_ROUND);
    }

    /**
     * @notice Sets `p` to `value`.
     * @dev Requires {DEFAULT_ADMIN_ROLE}; reverts with {ParameterOutOfRange} outside {parameterBounds}. Emits
     * {ParameterChanged}.
     * @param p The parameter.
     * @param value Its new value: X in 18-decimal fixed point, threshold in token units, lock period in seconds,
     * reward per round in token units.
     */
    function setParameter(Parameter p, uint256 value) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setParameter(p, value);
    }

    /**
     * @notice Tokens a licensee with annual `revenue` must lock: `X · max(0, revenue − threshold)`, rounded up.
     * @dev Reverts with {RevenueTooLarge} above {MAX_REVENUE}.
     * @param revenue Annual revenue in 18-decimal currency units.
     */
    function requiredStake(uint256 revenue) public view returns (uint256) {
        if (revenue > MAX_REVENUE) revert RevenueTooLarge(revenue, MAX_REVENUE);
        uint256 threshold = _params[uint256(Parameter.RevenueThreshold)];
        if (revenue <= threshold) return 0;
        // At most 1e18 * 1e36 before the division: no overflow.
        return Math.mulDiv(revenue - threshold, _params[uint256(Parameter.StakeRate)], WAD, Math.Rounding.Ceil);
    }

    /**
     * @notice Records `licensee`'s annual revenue (replacing an earlier attestation).
     * @dev Requires {ATTESTER_ROLE}. Emits {RevenueAttested}.
     * @param licensee The company using the model commercially.
     * @param revenue Its annual revenue in 18-decimal currency units, at most {MAX_REVENUE}.
     */
    function attestRevenue(address licensee, uint256 revenue) external onlyRole(ATTESTER_ROLE) {
        if (licensee == address(0)) revert ZeroAddress();
        if (revenue > MAX_REVENUE) revert RevenueTooLarge(revenue, MAX_REVENUE);
        Licensee storage l = _licensees[licensee];
        // Cannot truncate: revenue <= MAX_REVENUE < 2**128.
        l.revenue = uint128(revenue);
        l.attestedAt = SafeCast.toUint64(block.timestamp);
        emit RevenueAttested(licensee, revenue, _msgSender());
    }

    /**
     * @notice Locks `amount` more of the caller's tokens for `lockDuration` seconds from now, so that its stake
     * covers the required one; with `amount` zero, renews a lock that already does.
     * @dev Requires an attested revenue, `lockDuration` within the lock period and {MAX_LOCK_PERIOD}, and an
     * allowance of `amount`. A renewal never shortens a lock. Emits {LicenseAcquired}.
     * @param amount Tokens to add to the caller's locked stake.
     * @param lockDuration Seconds the whole stake stays locked, at least the lock period.
     */
    function acquire(uint256 amount, uint64 lockDuration) external nonReentrant {
        address licensee = _msgSender();
        Licensee storage l = _licensees[licensee];
        if (l.attestedAt == 0) revert RevenueNotAttested(licensee);
        uint256 minimum = _params[uint256(Parameter.LockPeriod)];
        if (lockDuration < minimum) revert LockTooShort(lockDuration, minimum);
        if (lockDuration > MAX_LOCK_PERIOD) revert LockTooLong(lockDuration, MAX_LOCK_PERIOD);
        uint256 locked = l.locked + amount;
        uint256 required = requiredStake(l.revenue);
        if (locked < required) revert InsufficientStake(locked, required);
        uint64 unlockAt = SafeCast.toUint64(block.timestamp + lockDuration);
        if (unlockAt < l.unlockAt) unlockAt = l.unlockAt;

        l.locked = locked;
        l.unlockAt = unlockAt;
        totalLocked += amount;
        emit LicenseAcquired(licensee, amount, locked, unlockAt);
        if (amount > 0) _token.safeTransferFrom(licensee, address(this), amount);
    }

    /**
     * @notice Returns the caller's locked stake once its lock has ended; the license lapses with it.
     * @dev Emits {StakeReleased}.
     */
    function release() external nonReentrant {
        address licensee = _msgSender();
        Licensee storage l = _licensees[licensee];
        uint256 amount = l.locked;
        if (amount == 0) revert NothingLocked(licensee);
        // Locks are days to years long; a validator's few seconds of timestamp drift do not matter.
        // slither-disable-next-line timestamp
        if (block.timestamp < l.unlockAt) revert LicenseLocked(licensee, l.unlockAt);
        l.locked = 0;
        totalLocked -= amount;
        emit StakeReleased(licensee, amount);
        _token.safeTransfer(licensee, amount);
    }

    /**
     * @notice Whether `licensee` may use the model commercially: its attested revenue is at or below the
     * threshold, or it has at least the required stake locked and the lock has not ended.
     * @param licensee The company.
     */
    function isLicensed(address licensee) public view returns (bool) {
        Licensee storage l = _licensees[licensee];
        if (l.attestedAt == 0) return false;
        uint256 required = requiredStake(l.revenue);
        if (required == 0) return true;
        // See {release} on timestamps.
        // slither-disable-next-line timestamp
        return l.locked >= required && block.timestamp < l.unlockAt;
    }

    /**
     * @notice Everything about `licensee`'s license.
     * @return revenue Attested annual revenue (18-decimal currency units).
     * @return attestedAt When it was attested (0: never).
     * @return locked Tokens locked.
     * @return unlockAt When the lock ends.
     * @return required The stake its revenue requires under the current parameters.
     * @return licensed {isLicensed}.
     */
    function licenseOf(address licensee)
        external
        view
        returns (uint256 revenue, uint256 attestedAt, uint256 locked, uint256 unlockAt, uint256 required, bool licensed)
    {
        Licensee storage l = _licensees[licensee];
        return (l.revenue, l.attestedAt, l.locked, l.unlockAt, requiredStake(l.revenue), isLicensed(licensee));
    }

    /**
     * @notice Pays a license fee of `amount` of the caller's tokens, shared by the contributors of the
     * distributor's latest settled round in proportion to their cumulative rewards.
     * @dev O(1): adds to the epoch's fee total. Requires an allowance of `amount`. Emits
     * {WeightsSynced} when the round is new here, and {FeePaid}.
     * @param amount Tokens paid.
     * @return round The round whose contributors share the fee.
     */
    function payFee(uint256 amount) external nonReentrant returns (uint64 round) {
        if (amount == 0) revert ZeroAmount();
        round = _syncWeights();
        Epoch storage e = _epochs[round];
        e.fees = SafeCast.toUint128(e.fees + amount);
        emit FeePaid(_msgSender(), round, amount);
        _token.safeTransferFrom(_msgSender(), address(this), amount);
    }

    /**
     * @notice Starts the epoch of the distributor's latest round if fees do not accrue to it yet.
     * @dev Anyone may call; {payFee} does it first. Emits {WeightsSynced} when a new epoch starts.
     * @return round The round fees now accrue to.
     */
    function syncWeights() external returns (uint64 round) {
        return _syncWeights();
    }

    /**
     * @notice What accrued to `round`.
     * @return weightsRoot The round's rewards root: leaves `(account, cumulative reward)` are the weights.
     * @return totalWeight Sum of the weights (the distributor's settled total then).
     * @return fees Fees paid while the round was the latest.
     * @return paidOut Shares of them withdrawn.
     */
    function epochOf(uint256 round)
        external
        view
        returns (bytes32 weightsRoot, uint256 totalWeight, uint256 fees, uint256 paidOut)
    {
        Epoch storage e = _epochs[round];
        return (e.weightsRoot, e.totalWeight, e.fees, e.paidOut);
    }

    /// @notice Every round fees accrued to, oldest first.
    function feeRounds() external view returns (uint64[] memory) {
        return _feeRounds;
    }

    /// @notice What `account` already withdrew of `round`'s fees.
    function withdrawnOf(uint256 round, address account) external view returns (uint256) {
        return _withdrawn[round][account];
    }

    /**
     * @notice What `account` (with `weight` in the round's weights root) may still withdraw of `round`'s fees.
     * @dev Does not check a proof: {withdrawFeeShare} does.
     * @param round A round in {feeRounds}.
     * @param account The contributor.
     * @param weight Its cumulative reward in that round's root.
     */
    function feeShareOf(uint256 round, address account, uint256 weight) public view returns (uint256) {
        Epoch storage e = _epochs[round];
        if (e.totalWeight == 0) return 0;
        // 512-bit intermediate: weight * fees may exceed 256 bits, the share cannot.
        uint256 entitled = Math.mulDiv(weight, e.fees, e.totalWeight);
        uint256 already = _withdrawn[round][account];
        return entitled > already ? entitled - already : 0;
    }

    /**
     * @notice Pays `account` its share of the fees accrued to `round` not withdrawn yet.
     * @dev Anyone may submit it; the tokens always go to `account`. Emits {FeeShareWithdrawn}.
     * @param round A round in {feeRounds}.
     * @param account The contributor, a leaf of the round's rewards root.
     * @param weight Its cumulative reward in that leaf.
     * @param proof Sibling hashes from the leaf to the root, as `StandardMerkleTree.getProof` returns them.
     * @return amount Tokens paid.
     */
    function withdrawFeeShare(
        uint64 round,
        address account,
        uint256 weight,
        bytes32[] calldata proof
    ) external nonReentrant returns (uint256 amount) {
        Epoch storage e = _epochs[round];
        bytes32 root = e.weightsRoot;
        if (root == bytes32(0)) revert NoFeesForRound(round);
        bytes32 leaf = keccak256(bytes.concat(keccak256(abi.encode(account, weight))));
        if (!MerkleProof.verifyCalldata(proof, root, leaf)) revert InvalidWeightProof(round, account, weight);
        amount = feeShareOf(round, account, weight);
        if (amount == 0) revert NoFeeShare(round, account);
        uint256 paid = e.paidOut + amount;
        if (paid > e.fees) revert ShareExceedsFees(round, amount, e.fees - e.paidOut);

        _withdrawn[round][account] += amount;
        e.paidOut = paid;
        emit FeeShareWithdrawn(account, round, amount);
        _token.safeTransfer(account, amount);
    }

    function _syncWeights() private returns (uint64 round) {
        // The distributor is fixed at construction and its getters are views: nothing here can re-enter.
        round = _record.lastRound();
        if (round == 0) revert NoContributions();
        if (round == currentRound) return round;
        uint256 total = _record.totalSettled();
        if (total == 0) revert NoContributions();
        bytes32 root = _record.rewardsRoot();
        Epoch storage e = _epochs[round];
        e.weightsRoot = root;
        // Cannot truncate: the distributor keeps totals in 128 bits.
        e.totalWeight = uint128(total);
        currentRound = round;
        _feeRounds.push(round);
        emit WeightsSynced(round, root, total);
    }

    function _setParameter(Parameter p, uint256 value) private {
        (uint256 min, uint256 max) = parameterBounds(p);
        if (value < min || value > max) revert ParameterOutOfRange(p, value, min, max);
        uint256 old = _params[uint256(p)];
        _params[uint256(p)] = value;
        emit ParameterChanged(p, old, value);
    }
}
