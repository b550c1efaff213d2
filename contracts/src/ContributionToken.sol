// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";
import {ERC20Votes} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Votes.sol";
import {ERC20Capped} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Capped.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";
import {Time} from "@openzeppelin/contracts/utils/types/Time.sol";

/**
 * @title ContributionToken
 * @dev The ERC-20 token institutions are paid in for their contributions to a federated model, and the voting
 * power of the federation's governance (OpenZeppelin ERC20Votes, with ERC20Permit for gasless approvals).
 *
 * Accounts holding {MINTER_ROLE} create new tokens, never beyond the supply cap fixed at deployment
 * (ERC20Capped). `admin` receives both {DEFAULT_ADMIN_ROLE} and {MINTER_ROLE}: in a governed deployment that is
 * the federation's timelock, and no externally owned account holds either.
 *
 * Votes count from a holder's {delegate} call on (self-delegation included): tokens never delegated do not vote.
 * The clock is the block timestamp (EIP-6372 `mode=timestamp`), so that voting delays and periods are in seconds
 * whatever the chain's block time.
 */
contract ContributionToken is ERC20, ERC20Permit, ERC20Votes, ERC20Capped, AccessControl {
    /// @dev Role allowed to call {mint}.
    bytes32 public constant MINTER_ROLE = keccak256("MINTER_ROLE");

    /**
     * @dev Sets the token's `name` and `symbol` (the EIP-712 domain takes `name`) and its supply cap `cap_`, and
     * grants both roles to `admin`.
     */
    constructor(string memory name_, string memory symbol_, uint256 cap_, address admin)
        ERC20(name_, symbol_)
        ERC20Permit(name_)
        ERC20Capped(cap_)
    {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(MINTER_ROLE, admin);
    }

    /**
     * @notice Creates `amount` tokens and assigns them to `to`.
     * @dev Emits a {Transfer} event from the zero address. Requires {MINTER_ROLE}.
     * @param to Account receiving the new tokens.
     * @param amount Number of tokens, in the smallest unit.
     */
    function mint(address to, uint256 amount) external onlyRole(MINTER_ROLE) {
        _mint(to, amount);
    }

    /// @notice The current timepoint of the vote checkpoints: the block timestamp.
    function clock() public view override returns (uint48) {
        return Time.timestamp();
    }

    /// @notice EIP-6372 description of {clock}.
    // solhint-disable-next-line func-name-mixedcase
    function CLOCK_MODE() public pure override returns (string memory) {
        return "mode=timestamp";
    }

    /// @notice The next EIP-2612 permit nonce of `owner` (ERC20Permit and Nonces both define it).
    function nonces(address owner) public view override(ERC20Permit, Nonces) returns (uint256) {
        return super.nonces(owner);
    }

    /// @dev Every balance change also moves voting power (ERC20Votes); mints stay within the cap (ERC20Capped).
    function _update(address from, address to, uint256 value) internal override(ERC20, ERC20Votes, ERC20Capped) {
        super._update(from, to, value);
    }
}
