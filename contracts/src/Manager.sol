// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import "./Types.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// Roles of the protocol: CONTROLLER (the Controller contract), JUDGE (sanctions), PROVIDER
/// (reserved), under DEFAULT_ADMIN_ROLE (the deployer).
contract Manager is AccessControl {
    bytes32 public constant CONTROLLER = CONTROLLER_ROLE;
    bytes32 public constant JUDGE = JUDGE_ROLE;
    bytes32 public constant PROVIDER = PROVIDER_ROLE;

    constructor() {
        _grantRole(DEFAULT_ADMIN_ROLE, msg.sender);
    }
}
