// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/**
 * @title ContributionToken
 * @dev The ERC-20 token institutions are paid in for their contributions to a federated model.
 *
 * Accounts holding {MINTER_ROLE} create new tokens; the deployer receives both {DEFAULT_ADMIN_ROLE} and
 * {MINTER_ROLE} and is expected to hand them to the federation's governance.
 */
contract ContributionToken is ERC20, AccessControl {
    /// @dev Role allowed to call {mint}.
    bytes32 public constant MINTER_ROLE = keccak256("MINTER_ROLE");

    /**
     * @dev Sets the token's `name` and `symbol` and grants both roles to `admin`.
     */
    constructor(string memory name_, string memory symbol_, address admin) ERC20(name_, symbol_) {
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
}
