// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import "./Types.sol";
import "./Interfaces.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Clones} from "@openzeppelin/contracts/proxy/Clones.sol";

/// The client's side of a task's life: publish (escrow + Task clone), confirm, cancel, and reclaim
/// the escrow of an expired task. Needs the Manager's CONTROLLER role.
contract Controller is Ownable {
    address public nexus;
    address public terminal;
    address public vault;
    /// Extra: the implementation that task clones delegate to.
    address public taskImplementation;

    constructor(address _nexus, address _terminal, address _vault) Ownable(msg.sender) {
        nexus = _nexus;
        terminal = _terminal;
        vault = _vault;
    }

    /// Escrows `payment` from the caller's Vault balance and deploys the task. The caller is the
    /// task's client. Reverts before any state change on an unknown or inactive source, a payment
    /// below the source's minPayment, an expiry not in (now, now + maxExpiryDuration], or a short
    /// balance.
    function publishTask(TaskParams calldata params) external {
        require(INexusHub(nexus).sourceId(params.source) != 0, "UnknownSource");
        (SourceStatus status, uint256 minPayment, uint256 maxExpiry, DeliveryMethod method) =
            ISourceInstance(params.source).terms();
        require(status == SourceStatus.ACTIVE, "SourceInactive");
        require(params.payment >= minPayment, "InvalidPayment: below the source's minPayment");
        require(params.expiryTime > block.timestamp, "Expired: expiryTime is not in the future");
        require(
            params.expiryTime <= block.timestamp + maxExpiry, "InvalidExpiry: beyond the source's maxExpiryDuration"
        );
        require(params.payment <= type(uint96).max, "InvalidPayment: above 2^96-1 wei");
        require(params.expiryTime <= type(uint40).max, "InvalidExpiry: above 2^40-1");
        address task = Clones.cloneWithImmutableArgs(
            taskImplementation,
            abi.encodePacked(
                nexus, params.source, msg.sender, uint96(params.payment), uint40(params.expiryTime), method, params.config
            )
        );
        IVaultBook(vault).freezePayment(msg.sender, task, params.payment);
        INexusHub(nexus).emitTaskPublished(task, params.source);
    }

    /// Only while NEW; the whole escrow goes back to the client.
    function cancelTask(address task) external {
        (address client, TaskStatus status,) = _clientTask(task);
        require(status == TaskStatus.NEW, "NotCancelable: only a NEW task can be canceled");
        IVaultBook(vault).releasePayment(client, task);
        INexusHub(nexus).setTaskStatus(task, TaskStatus.CANCELED);
    }

    /// The provider is paid the response's payment; the rest of the escrow returns to the client.
    /// Allowed after expiry too, as long as the escrow was not reclaimed.
    function confirmResponse(address response) external {
        (address task, address provider,) = IResponseInstance(response).core();
        (, TaskStatus status,) = _clientTask(task);
        // RESPONDED implies no response of the task is confirmed yet (confirming finalizes).
        if (status != TaskStatus.RESPONDED) {
            if (status == TaskStatus.FINALIZED && ITaskInstance(task).winningProvider() == provider) {
                revert("AlreadyConfirmed");
            }
            revert("AlreadyFinalized: task is not awaiting confirmation");
        }
        INexusHub(nexus).setResponseStatus(response, ResponseStatus.CONFIRMED);
    }

    /// Extra: after expiryTime, the client takes back the escrow of a task that was not finalized
    /// (NEW, ATTEMPTED or RESPONDED with no confirmed response); the task becomes EXPIRED.
    function reclaimExpired(address task) external {
        (address client, TaskStatus status, uint256 expiry) = _clientTask(task);
        require(block.timestamp >= expiry, "NotExpired");
        require(
            status == TaskStatus.NEW || status == TaskStatus.ATTEMPTED || status == TaskStatus.RESPONDED,
            "AlreadyFinalized"
        );
        IVaultBook(vault).releasePayment(client, task);
        INexusHub(nexus).setTaskStatus(task, TaskStatus.EXPIRED);
    }

    /// Checks that `task` is a task of this protocol and the caller its client or client's agent.
    function _clientTask(address task) private view returns (address client, TaskStatus status, uint256 expiry) {
        (address escrowClient,) = IVaultBook(vault).escrowOf(task);
        require(escrowClient != address(0), "UnknownTask");
        (,, , expiry,, status) = ITaskInstance(task).core();
        client = escrowClient;
        if (msg.sender != client) {
            require(ITerminalAuth(terminal).isAgentOf(client, msg.sender), "NotOwner");
        }
    }

    function setNexus(address _nexus) external onlyOwner {
        nexus = _nexus;
    }

    function setTerminal(address _terminal) external onlyOwner {
        terminal = _terminal;
    }

    function setVault(address _vault) external onlyOwner {
        vault = _vault;
    }

    /// Extra: set at deployment; tasks already published keep their implementation.
    function setTaskImplementation(address implementation) external onlyOwner {
        taskImplementation = implementation;
    }
}
