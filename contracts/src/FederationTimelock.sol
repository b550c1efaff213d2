// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {TimelockController} from "@openzeppelin/contracts/governance/TimelockController.sol";

/**
 * @title FederationTimelock
 * @dev OpenZeppelin's TimelockController, as the federation deploys it: it holds the admin role of the license
 * parameters and runs what the FederationGovernor passed, `minDelay` seconds after it was queued.
 *
 * Deployed with the governor as the only proposer and canceller, anyone as executor (the zero address) and no
 * admin besides itself, so that only a vote changes the parameters or the delay.
 */
contract FederationTimelock is TimelockController {
    /**
     * @dev See TimelockController: `minDelay` seconds between queueing and execution, the `proposers` (also
     * cancellers), the `executors` (the zero address: anyone) and an optional extra `admin` (zero: none).
     */
    constructor(uint256 minDelay, address[] memory proposers, address[] memory executors, address admin)
        TimelockController(minDelay, proposers, executors, admin)
    {}
}
