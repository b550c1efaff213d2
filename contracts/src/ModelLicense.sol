// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

/// @dev What {ModelLicense} reads of the RewardDistributor: the claimable root (past its challenge window) and the
/// sum of its leaves.
interface IRewardRecord {
    /// @notice The round whose root claims use now; 0 before the first root became claimable.
    function claimableRound() external view returns (uint64);

    /// @notice The claimable Merkle root over every account's cumulative reward.
    function rewardsRoot() external view returns (bytes32);

    /// @notice The sum of the claimable root's leaves, committed by the coordinator at settlement.
    function rewardsTotal() external view returns (uint128);
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
 * overflow. An attestation is live for {Parameter.AttestationTtl} seconds: after that the licensee is not
 * licensed (free or staked) and cannot {acquire} until the attester records its revenue again, so that a revenue
 * that grew is not licensed at last year's stake forever. Parameters apply at once: when governance raises the
 * requirement or shortens the attestation period, a licensee locks more or is re-attested to stay licensed.
 *
 * Trust: the attester is trusted to report revenue truthfully (as an auditor would); the contract cannot check
 * it. A false attestation only moves the stake a licensee must lock; it cannot move anyone's tokens. Governance
 * can revoke the role.
 *
 * Fees. Anyone (a licensee, usually) pays fees with {payFee}. Fees go to the contributors pro rata to their
 * recorded contribution: the leaves of the distributor's *claimable* rewards root, each an account's cumulative
 * reward, weighted against the sum of those leaves W that the coordinator committed with the root
 * ({IRewardRecord.rewardsTotal}). A root still pending in the distributor's challenge window never receives fees:
 * the coordinator cannot settle a root and take the next fee before anyone could revoke it. Each fee accrues to
 * the epoch of the claimable round, whose root and W are copied here when the first fee of that round arrives
 * (or anyone calls {syncWeights}). Weights are fixed within an epoch, so its accumulator is its fee total F: a fee
 * is one addition (O(1) whatever the number of contributors), the fee per unit of weight is F / W held exactly,
 * and a contributor of weight w withdraws `floor(w · F / W) − withdrawn` whenever it likes, with the same leaf and
 * proof it claims rewards with. Rounding down leaves a dust below the number of contributors per epoch.
 *
 * Nothing stranded. An epoch closes when the next one starts. Once a closed epoch has been closed for the fee
 * claim period ({Parameter.FeeClaimPeriod}, read when sweeping), anyone may {sweepDust} it: what its
 * contributors did not withdraw (the rounding dust, and shares nobody came for) goes once to the
 * {dustRecipient} that governance names (the federation's timelock, its treasury, by default), and withdrawals
 * from that epoch then revert with {EpochSwept}. The open epoch is never swept: it still receives fees.
 *
 * Governance. {DEFAULT_ADMIN_ROLE} (the federation's TimelockController, driven by its Governor) sets the
 * parameters within fixed bounds ({parameterBounds}) and the dust recipient, grants or revokes the attester role,
 * and pauses: while paused no fee is paid, shared, withdrawn or swept, no revenue is attested and no license is
 * acquired; a licensee may still {release} its own stake after its lock.
 */
contract ModelLicense is AccessControl, Pausable, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @dev The governed parameters, in the order of {parameters}.
    enum Parameter {
        StakeRate,
        RevenueThreshold,
        LockPeriod,
        AttestationTtl,
        FeeClaimPeriod
    }

    /// @dev Values of every {Parameter}.
    struct Parameters {
        uint256 stakeRate;
        uint256 revenueThreshold;
        uint256 lockPeriod;
        uint256 attestationTtl;
        uint256 feeClaimPeriod;
    }

    /// @dev A licensee: its attested revenue, when it was attested, its locked stake and when the lock ends.
    struct Licensee {
        uint128 revenue;
        uint64 attestedAt;
        uint64 unlockAt;
        uint256 locked;
    }

    /// @dev Fees accrued while a round's root was the claimable one: the weights, the fee total, what was paid
    /// out, when the next epoch started (0: still open) and whether the remainder was swept.
    struct Epoch {
        bytes32 weightsRoot;
        uint128 totalWeight;
        uint128 fees;
        uint128 paidOut;
        uint64 closedAt;
        bool swept;
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
    /// @notice Shortest life of an attestation governance may set.
    uint256 public constant MIN_ATTESTATION_TTL = 30 days;
    /// @notice Longest life of an attestation governance may set.
    uint256 public constant MAX_ATTESTATION_TTL = 3650 days;
    /// @notice Shortest fee claim period governance may set: contributors always have this long to withdraw.
    uint256 public constant MIN_FEE_CLAIM_PERIOD = 30 days;
    /// @notice Longest fee claim period governance may set.
    uint256 public constant MAX_FEE_CLAIM_PERIOD = 3650 days;

    IERC20 private immutable _token;
    IRewardRecord private immutable _record;

    uint256[5] private _params;

    /// @notice The distributor round whose contributors the next fee is shared by (0 before the first fee).
    uint64 public currentRound;
    /// @notice Where {sweepDust} sends what an epoch's contributors left.
    address public dustRecipient;
    /// @notice Tokens locked by licensees.
    uint256 public totalLocked;

    mapping(address licensee => Licensee) private _licensees;
    mapping(uint256 round => Epoch) private _epochs;
    mapping(uint256 round => mapping(address account => uint256)) private _withdrawn;
    uint64[] private _feeRounds;

    /// @notice Governance changed `parameter` from `oldValue` to `newValue`.
    event ParameterChanged(Parameter indexed parameter, uint256 oldValue, uint256 newValue);

    /// @notice Governance named `newRecipient` (was `oldRecipient`) to receive swept dust.
    event DustRecipientChanged(address indexed oldRecipient, address indexed newRecipient);

    /// @notice `attester` recorded `licensee`'s annual revenue as `revenue` (18-decimal currency units).
    event RevenueAttested(address indexed licensee, uint256 revenue, address indexed attester);

    /// @notice `licensee` locked `amount` more tokens, `locked` in all, until `unlockAt` (a timestamp).
    event LicenseAcquired(address indexed licensee, uint256 amount, uint256 locked, uint256 unlockAt);

    /// @notice `licensee` took back its `amount` locked tokens after the lock ended.
    event StakeReleased(address indexed licensee, uint256 amount);

    /// @notice Fees now accrue to the contributors of `round`: leaves of `weightsRoot`, `totalWeight` in all. The
    /// previous epoch, if any, closed at this block's timestamp.
    event WeightsSynced(uint256 indexed round, bytes32 weightsRoot, uint256 totalWeight);

    /// @notice `payer` paid a fee of `amount` tokens, shared by the contributors of `round`.
    event FeePaid(address indexed payer, uint256 indexed round, uint256 amount);

    /// @notice `account` was paid `amount` tokens, its share of the fees accrued to `round`.
    event FeeShareWithdrawn(address indexed account, uint256 indexed round, uint256 amount);

    /// @notice What `round`'s contributors left of its fees, `amount`, went to `recipient`.
    event DustSwept(uint256 indexed round, address indexed recipient, uint256 amount);

    /// @dev An address argument was the zero address.
    error ZeroAddress();

    /// @dev An amount of zero was given where a positive one is required.
    error ZeroAmount();

    /// @dev `value` is outside `[min, max]`, the bounds of `parameter`.
    error ParameterOutOfRange(Parameter parameter, uint256 value, uint256 min, uint256 max);

    /// @dev `revenue` is above the largest accepted, `max`.
    error RevenueTooLarge(uint256 revenue, uint256 max);

    /// @dev No revenue was ever attested for `licensee`.
    error RevenueNotAttested(address licensee);

    /// @dev `licensee`'s attestation expired at `expiredAt` (a timestamp); the attester must record it again.
    error AttestationExpired(address licensee, uint256 expiredAt);

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

    /// @dev A fee was paid before the distributor had a claimable root with a positive leaf sum to share it by.
    error NoContributions();

    /// @dev No fee ever accrued to `round`.
    error NoFeesForRound(uint256 round);

    /// @dev The proof does not show `(account, weight)` in the weights root of `round`.
    error InvalidWeightProof(uint256 round, address account, uint256 weight);

    /// @dev `account` has no fee share of `round` left to withdraw.
    error NoFeeShare(uint256 round, address account);

    /// @dev Paying `amount` would exceed what is left of `round`'s fees, `remaining` (an inconsistent root).
    error ShareExceedsFees(uint256 round, uint256 amount, uint256 remaining);

    /// @dev `round`'s epoch still receives fees: only a closed epoch can be swept.
    error EpochOpen(uint256 round);

    /// @dev `round`'s epoch can be swept from `sweepableAt` (a timestamp) on, not before.
    error SweepNotDue(uint256 round, uint256 sweepableAt);

    /// @dev What `round`'s contributors left was swept to the dust recipient: nothing can be withdrawn from it.
    error EpochSwept(uint256 round);

    /// @dev `round`'s contributors withdrew all its fees: there is nothing to sweep.
    error NothingToSweep(uint256 round);

    /**
     * @dev Sets the `token_` stakes and fees are paid in, the `record_` of contributions (the RewardDistributor),
     * the first parameters (each within its bounds), the `dustRecipient_`, and grants {DEFAULT_ADMIN_ROLE} to
     * `admin` (the timelock of a governed federation) and {ATTESTER_ROLE} to `attester` (none when zero).
     */
    constructor(
        IERC20 token_,
        IRewardRecord record_,
        address admin,
        address attester,
        address dustRecipient_,
        Parameters memory initial
    ) {
        if (address(token_) == address(0) || address(record_) == address(0) || admin == address(0)) {
            revert ZeroAddress();
        }
        _token = token_;
        _record = record_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        if (attester != address(0)) _grantRole(ATTESTER_ROLE, attester);
        _setDustRecipient(dustRecipient_);
        _setParameter(Parameter.StakeRate, initial.stakeRate);
        _setParameter(Parameter.RevenueThreshold, initial.revenueThreshold);
        _setParameter(Parameter.LockPeriod, initial.lockPeriod);
        _setParameter(Parameter.AttestationTtl, initial.attestationTtl);
        _setParameter(Parameter.FeeClaimPeriod, initial.feeClaimPeriod);
    }

    /// @notice The token stakes and fees are paid in.
    function token() external view returns (IERC20) {
        return _token;
    }

    /// @notice The contract whose claimable rewards weigh the fee shares (the RewardDistributor).
    function rewardRecord() external view returns (IRewardRecord) {
        return _record;
    }

    /// @notice The current value of `p`.
    function parameter(Parameter p) external view returns (uint256) {
        return _params[uint256(p)];
    }

    /// @notice Every parameter's current value.
    function parameters() external view returns (Parameters memory) {
        return Parameters(_params[0], _params[1], _params[2], _params[3], _params[4]);
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
        if (p == Parameter.AttestationTtl) return (MIN_ATTESTATION_TTL, MAX_ATTESTATION_TTL);
        return (MIN_FEE_CLAIM_PERIOD, MAX_FEE_CLAIM_PERIOD);
    }

    /**
     * @notice Sets `p` to `value`.
     * @dev Requires {DEFAULT_ADMIN_ROLE}; reverts with {ParameterOutOfRange} outside {parameterBounds}. Emits
     * {ParameterChanged}.
     * @param p The parameter.
     * @param value Its new value: X in 18-decimal fixed point, threshold in token units, periods in seconds.
     */
    function setParameter(Parameter p, uint256 value) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setParameter(p, value);
    }

    /**
     * @notice Names `recipient` to receive what contributors leave of closed epochs' fees.
     * @dev Requires {DEFAULT_ADMIN_ROLE}. Emits {DustRecipientChanged}.
     * @param recipient Not the zero address.
     */
    function setDustRecipient(address recipient) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setDustRecipient(recipient);
    }

    /**
     * @notice Stops fees, fee shares, sweeps, attestations and acquisitions; stakes can still be released.
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
     * @notice Records `licensee`'s annual revenue (replacing an earlier attestation), live for the attestation
     * period from now.
     * @dev Requires {ATTESTER_ROLE} and not paused. Emits {RevenueAttested}.
     * @param licensee The company using the model commercially.
     * @param revenue Its annual revenue in 18-decimal currency units, at most {MAX_REVENUE}.
     */
    function attestRevenue(address licensee, uint256 revenue) external onlyRole(ATTESTER_ROLE) whenNotPaused {
        if (licensee == address(0)) revert ZeroAddress();
        if (revenue > MAX_REVENUE) revert RevenueTooLarge(revenue, MAX_REVENUE);
        Licensee storage l = _licensees[licensee];
        // Cannot truncate: revenue <= MAX_REVENUE < 2**128.
        l.revenue = uint128(revenue);
        l.attestedAt = SafeCast.toUint64(block.timestamp);
        emit RevenueAttested(licensee, revenue, _msgSender());
    }

    /**
     * @notice When `licensee`'s attestation expires (a timestamp; 0 when it was never attested).
     * @param licensee The company.
     */
    function attestationExpiresAt(address licensee) public view returns (uint256) {
        uint256 attestedAt = _licensees[licensee].attestedAt;
        // Zero means never attested, not a time: the equality is exact on purpose.
        // slither-disable-next-line incorrect-equality
        return attestedAt == 0 ? 0 : attestedAt + _params[uint256(Parameter.AttestationTtl)];
    }

    /**
     * @notice Locks `amount` more of the caller's tokens for `lockDuration` seconds from now, so that its stake
     * covers the required one; with `amount` zero, renews a lock that already does.
     * @dev Requires a live attestation, `lockDuration` within the lock period and {MAX_LOCK_PERIOD}, an allowance
     * of `amount`, and not paused. A renewal never shortens a lock. Emits {LicenseAcquired}.
     * @param amount Tokens to add to the caller's locked stake.
     * @param lockDuration Seconds the whole stake stays locked, at least the lock period.
     */
    function acquire(uint256 amount, uint64 lockDuration) external whenNotPaused nonReentrant {
        address licensee = _msgSender();
        Licensee storage l = _licensees[licensee];
        if (l.attestedAt == 0) revert RevenueNotAttested(licensee);
        uint256 expiresAt = attestationExpiresAt(licensee);
        // Attestations live months to years; a validator's few seconds of timestamp drift do not matter.
        // slither-disable-next-line timestamp
        if (block.timestamp >= expiresAt) revert AttestationExpired(licensee, expiresAt);
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
     * @dev Open while paused: the stake is the licensee's own and its lock is over, so a pause (meant to stop fee
     * flows while something is investigated) must not hold it hostage. Emits {StakeReleased}.
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
     * @notice Whether `licensee` may use the model commercially: its attestation is live, and its attested
     * revenue is at or below the threshold or it has at least the required stake locked and the lock has not
     * ended.
     * @param licensee The company.
     */
    function isLicensed(address licensee) public view returns (bool) {
        Licensee storage l = _licensees[licensee];
        if (l.attestedAt == 0) return false;
        // See {acquire} on timestamps.
        // slither-disable-next-line timestamp
        if (block.timestamp >= attestationExpiresAt(licensee)) return false;
        uint256 required = requiredStake(l.revenue);
        if (required == 0) return true;
        // slither-disable-next-line timestamp
        return l.locked >= required && block.timestamp < l.unlockAt;
    }

    /**
     * @notice Everything about `licensee`'s license.
     * @return revenue Attested annual revenue (18-decimal currency units).
     * @return attestedAt When it was attested (0: never).
     * @return expiresAt When the attestation expires (0: never attested).
     * @return locked Tokens locked.
     * @return unlockAt When the lock ends.
     * @return required The stake its revenue requires under the current parameters.
     * @return licensed {isLicensed}.
     */
    function licenseOf(address licensee)
        external
        view
        returns (
            uint256 revenue,
            uint256 attestedAt,
            uint256 expiresAt,
            uint256 locked,
            uint256 unlockAt,
            uint256 required,
            bool licensed
        )
    {
        Licensee storage l = _licensees[licensee];
        return (
            l.revenue,
            l.attestedAt,
            attestationExpiresAt(licensee),
            l.locked,
            l.unlockAt,
            requiredStake(l.revenue),
            isLicensed(licensee)
        );
    }

    /**
     * @notice Pays a license fee of `amount` of the caller's tokens, shared by the contributors of the
     * distributor's claimable round in proportion to their cumulative rewards.
     * @dev O(1): adds to the epoch's fee total. Requires an allowance of `amount` and not paused. Emits
     * {WeightsSynced} when the round is new here, and {FeePaid}.
     * @param amount Tokens paid.
     * @return round The round whose contributors share the fee.
     */
    function payFee(uint256 amount) external whenNotPaused nonReentrant returns (uint64 round) {
        if (amount == 0) revert ZeroAmount();
        round = _syncWeights();
        Epoch storage e = _epochs[round];
        e.fees = SafeCast.toUint128(e.fees + amount);
        emit FeePaid(_msgSender(), round, amount);
        _token.safeTransferFrom(_msgSender(), address(this), amount);
    }

    /**
     * @notice Starts the epoch of the distributor's claimable round if fees do not accrue to it yet, closing the
     * previous one.
     * @dev Anyone may call (to start a closed epoch's claim period without waiting for a fee); {payFee} does it
     * first. Requires not paused. Emits {WeightsSynced} when a new epoch starts.
     * @return round The round fees now accrue to.
     */
    function syncWeights() external whenNotPaused returns (uint64 round) {
        return _syncWeights();
    }

    /**
     * @notice What accrued to `round`.
     * @return weightsRoot The round's rewards root: leaves `(account, cumulative reward)` are the weights.
     * @return totalWeight Sum of the weights (the sum of the root's leaves).
     * @return fees Fees paid while the round was the claimable one.
     * @return paidOut Shares of them withdrawn, plus what was swept.
     * @return closedAt When the next epoch started (0: fees still accrue to it).
     * @return swept Whether the remainder went to the dust recipient.
     */
    function epochOf(uint256 round)
        external
        view
        returns (bytes32 weightsRoot, uint256 totalWeight, uint256 fees, uint256 paidOut, uint256 closedAt, bool swept)
    {
        Epoch storage e = _epochs[round];
        return (e.weightsRoot, e.totalWeight, e.fees, e.paidOut, e.closedAt, e.swept);
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
     * @dev Does not check a proof: {withdrawFeeShare} does. Zero once the epoch was swept.
     * @param round A round in {feeRounds}.
     * @param account The contributor.
     * @param weight Its cumulative reward in that round's root.
     */
    function feeShareOf(uint256 round, address account, uint256 weight) public view returns (uint256) {
        Epoch storage e = _epochs[round];
        if (e.totalWeight == 0 || e.swept) return 0;
        // 512-bit intermediate: weight * fees may exceed 256 bits, the share cannot.
        uint256 entitled = Math.mulDiv(weight, e.fees, e.totalWeight);
        uint256 already = _withdrawn[round][account];
        return entitled > already ? entitled - already : 0;
    }

    /**
     * @notice Pays `account` its share of the fees accrued to `round` not withdrawn yet.
     * @dev Anyone may submit it; the tokens always go to `account`. Requires not paused and the epoch not swept.
     * Emits {FeeShareWithdrawn}.
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
    ) external whenNotPaused nonReentrant returns (uint256 amount) {
        Epoch storage e = _epochs[round];
        bytes32 root = e.weightsRoot;
        if (root == bytes32(0)) revert NoFeesForRound(round);
        if (e.swept) revert EpochSwept(round);
        bytes32 leaf = keccak256(bytes.concat(keccak256(abi.encode(account, weight))));
        if (!MerkleProof.verifyCalldata(proof, root, leaf)) revert InvalidWeightProof(round, account, weight);
        amount = feeShareOf(round, account, weight);
        if (amount == 0) revert NoFeeShare(round, account);
        uint256 paid = e.paidOut + amount;
        if (paid > e.fees) revert ShareExceedsFees(round, amount, e.fees - e.paidOut);

        _withdrawn[round][account] += amount;
        // Cannot truncate: paid <= fees, a uint128.
        e.paidOut = uint128(paid);
        emit FeeShareWithdrawn(account, round, amount);
        _token.safeTransfer(account, amount);
    }

    /**
     * @notice When `round`'s epoch can be swept (a timestamp): its close plus the fee claim period; 0 while it is
     * open or if no fee accrued to it.
     * @param round A round in {feeRounds}.
     */
    function sweepableAt(uint256 round) public view returns (uint256) {
        uint256 closedAt = _epochs[round].closedAt;
        return closedAt == 0 ? 0 : closedAt + _params[uint256(Parameter.FeeClaimPeriod)];
    }

    /**
     * @notice Sends what `round`'s contributors left of its fees (rounding dust and unwithdrawn shares) to the
     * {dustRecipient}, once the epoch has been closed for the fee claim period; anyone may call. Withdrawals from
     * the epoch revert with {EpochSwept} afterwards.
     * @dev Requires not paused. Emits {DustSwept}.
     * @param round A closed round in {feeRounds}.
     * @return amount Tokens swept: the epoch's fees less what was withdrawn.
     */
    function sweepDust(uint64 round) external whenNotPaused nonReentrant returns (uint256 amount) {
        Epoch storage e = _epochs[round];
        if (e.weightsRoot == bytes32(0)) revert NoFeesForRound(round);
        if (e.swept) revert EpochSwept(round);
        if (e.closedAt == 0) revert EpochOpen(round);
        uint256 due = sweepableAt(round);
        // The claim period is at least 30 days; a validator's few seconds of timestamp drift do not matter.
        // slither-disable-next-line timestamp
        if (block.timestamp < due) revert SweepNotDue(round, due);
        amount = e.fees - e.paidOut;
        if (amount == 0) revert NothingToSweep(round);
        e.swept = true;
        e.paidOut = e.fees;
        address to = dustRecipient;
        emit DustSwept(round, to, amount);
        _token.safeTransfer(to, amount);
    }

    function _syncWeights() private returns (uint64 round) {
        // The distributor is fixed at construction and its getters are views: nothing here can re-enter.
        round = _record.claimableRound();
        if (round == 0) revert NoContributions();
        uint64 previous = currentRound;
        if (round == previous) return round;
        uint256 total = _record.rewardsTotal();
        if (total == 0) revert NoContributions();
        bytes32 root = _record.rewardsRoot();
        if (previous != 0) _epochs[previous].closedAt = SafeCast.toUint64(block.timestamp);
        Epoch storage e = _epochs[round];
        e.weightsRoot = root;
        // Cannot truncate: the distributor keeps totals in 128 bits.
        e.totalWeight = uint128(total);
        currentRound = round;
        _feeRounds.push(round);
        emit WeightsSynced(round, root, total);
    }

    function _setDustRecipient(address recipient) private {
        if (recipient == address(0)) revert ZeroAddress();
        emit DustRecipientChanged(dustRecipient, recipient);
        dustRecipient = recipient;
    }

    function _setParameter(Parameter p, uint256 value) private {
        (uint256 min, uint256 max) = parameterBounds(p);
        if (value < min || value > max) revert ParameterOutOfRange(p, value, min, max);
        uint256 old = _params[uint256(p)];
        _params[uint256(p)] = value;
        emit ParameterChanged(p, old, value);
    }
}
