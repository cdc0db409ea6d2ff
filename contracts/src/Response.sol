// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import "./Types.sol";
import {CloneArgs, FixedOwner} from "./CloneArgs.sol";

/// One provider's answer to a task: an EIP-1167 clone made by the Nexus. Immutable clone args
/// (packed: nexus 20 | task 20 | provider 20 | payment 12 | data bytes); status and timestamp in
/// one storage slot. The owner is the Nexus.
contract Response is FixedOwner {
    uint256 private constant O_TASK = 20;
    uint256 private constant O_PROVIDER = 40;
    uint256 private constant O_PAYMENT = 60;
    uint256 private constant O_DATA = 72;

    ResponseStatus public status;
    uint64 private _timestamp;

    /// The ABI's constructor. It builds the implementation that clones delegate to.
    constructor(ResponseParams memory) payable {
        _timestamp = 1; // the implementation can never be initialized
    }

    modifier onlyNexus() {
        require(msg.sender == owner(), "NotNexus");
        _;
    }

    /// Extra: called once by the Nexus right after cloning.
    function initialize() external onlyNexus {
        require(_timestamp == 0, "AlreadyInitialized");
        _timestamp = uint64(block.timestamp);
    }

    function owner() public view override returns (address) {
        return CloneArgs.addressAt(0);
    }

    function _task() private view returns (address) {
        return CloneArgs.addressAt(O_TASK);
    }

    function _provider() private view returns (address) {
        return CloneArgs.addressAt(O_PROVIDER);
    }

    function _payment() private view returns (uint256) {
        return CloneArgs.uintAt(O_PAYMENT, 12);
    }

    function responseParams() external view returns (address task, address provider, string memory data, uint256 payment) {
        return (_task(), _provider(), string(CloneArgs.tail(O_DATA)), _payment());
    }

    function getResponseParams() external view returns (ResponseParams memory) {
        return ResponseParams(_task(), _provider(), string(CloneArgs.tail(O_DATA)), _payment());
    }

    /// Extra: the fixed fields without the data string.
    function core() external view returns (address task, address provider, uint256 payment) {
        return (_task(), _provider(), _payment());
    }

    function getStatus() external view returns (ResponseStatus) {
        return status;
    }

    function confirmedFinal() external view returns (bool) {
        return status == ResponseStatus.CONFIRMED;
    }

    function responseTimestamp() external view returns (uint256) {
        return _timestamp;
    }

    function confirm() external onlyNexus {
        require(status == ResponseStatus.SUBMITTED, "AlreadyConfirmed");
        status = ResponseStatus.CONFIRMED;
    }

    function setStatus(ResponseStatus newStatus) external onlyNexus {
        status = newStatus;
    }
}
