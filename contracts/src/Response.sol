// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import "./Types.sol";
import {CloneArgs, FixedOwner} from "./CloneArgs.sol";

interface ITaskWinner {
    function getStatus() external view returns (TaskStatus);
    function winningProvider() external view returns (address);
}

/// One provider's answer to a task: an EIP-1167 clone made by the Nexus, with no storage at all.
/// Immutable clone args (packed: nexus 20 | task 20 | provider 20 | payment 12 | timestamp 5 |
/// data bytes). Its status is derived from its task: CONFIRMED once the task's winner is this
/// response's provider, so confirming writes one slot (the task's) instead of two. The owner is
/// the Nexus.
contract Response is FixedOwner {
    uint256 private constant O_TASK = 20;
    uint256 private constant O_PROVIDER = 40;
    uint256 private constant O_PAYMENT = 60;
    uint256 private constant O_TIMESTAMP = 72;
    uint256 private constant O_DATA = 77;

    /// The ABI's constructor. It builds the implementation that clones delegate to.
    constructor(ResponseParams memory) payable {}

    modifier onlyNexus() {
        require(msg.sender == owner(), "NotNexus");
        _;
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

    function status() public view returns (ResponseStatus) {
        address task = _task();
        bool won = ITaskWinner(task).getStatus() == TaskStatus.FINALIZED && ITaskWinner(task).winningProvider() == _provider();
        return won ? ResponseStatus.CONFIRMED : ResponseStatus.SUBMITTED;
    }

    function getStatus() external view returns (ResponseStatus) {
        return status();
    }

    function confirmedFinal() external view returns (bool) {
        return status() == ResponseStatus.CONFIRMED;
    }

    function responseTimestamp() external view returns (uint256) {
        return CloneArgs.uintAt(O_TIMESTAMP, 5);
    }

    /// In the ABI, but confirmation is recorded on the task (see the contract's doc), so the Nexus
    /// never calls these; they exist for interface compatibility and refuse everyone.
    function confirm() external onlyNexus {
        revert("StatusDerived: a response is confirmed through Controller.confirmResponse");
    }

    function setStatus(ResponseStatus) external onlyNexus {
        revert("StatusDerived: a response is confirmed through Controller.confirmResponse");
    }
}
