// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import "./Types.sol";

// The slices of each contract that the others call. Extra (non-ABI) functions are marked.

interface IManagerRoles {
    function hasRole(bytes32 role, address account) external view returns (bool);
}

interface ITerminalAuth {
    function masterOf(address provider) external view returns (address);
    function isAgentOf(address principal, address agent) external view returns (bool);
}

interface IVaultBook {
    function freezePayment(address client, address task, uint256 amount) external;
    function processPayment(address client, address provider, address task, uint256 amount) external;
    function releasePayment(address client, address task) external;
    function lockupOf(address account) external view returns (uint256);
    function isEligible(address account) external view returns (bool);
    function isWhitelisted(address account) external view returns (bool);
    function sanctionOf(address account) external view returns (uint256);
    function MIN_LOCKUP_PER_SOURCE() external view returns (uint256);
    // extra
    function escrowOf(address task) external view returns (address client, uint256 amount);
    function lockFor(address account) external payable;
}

interface INexusHub {
    function sourceId(address source) external view returns (uint256);
    function emitTaskPublished(address task, address source) external;
    function setTaskStatus(address task, TaskStatus status) external;
    function setResponseStatus(address response, ResponseStatus status) external;
    // extra
    function registrationCountOf(address provider) external view returns (uint256);
    function sourceStatusChanged(SourceStatus status) external;
}

interface ISourceInstance {
    function getClient() external view returns (address);
    function getStatus() external view returns (SourceStatus);
    function publishTask(address task) external;
    function register(address provider, uint8 preferredEnvironment) external returns (uint256);
    function unregister(address provider) external;
    function setSourceParams(SourceParams calldata params) external;
    function setStatus(SourceStatus status) external;
    function registrantId(address provider) external view returns (uint256);
    // extra
    function initialize(SourceParams calldata params) external;
    function terms()
        external
        view
        returns (SourceStatus status, uint256 minPayment, uint256 maxExpiryDuration, DeliveryMethod deliveryMethod);
    function registrationTerms(address provider)
        external
        view
        returns (SourceStatus status, uint8 imageEnvironments, uint256 minAvailableLockup, uint256 registrantId);
}

interface ITaskInstance {
    function getStatus() external view returns (TaskStatus);
    function attempt(address provider) external;
    function submitResponse(address response, address provider) external;
    function setStatus(TaskStatus status) external;
    function responseOf(address provider) external view returns (address);
    function winningProvider() external view returns (address);
    function isAlreadySubmitted(bytes32 dataHash) external view returns (bool);
    // extra
    function getClient() external view returns (address);
    function finalize(address provider) external;
    function core()
        external
        view
        returns (
            address source,
            address client,
            uint256 payment,
            uint256 expiryTime,
            DeliveryMethod deliveryMethod,
            TaskStatus status
        );
}

interface IResponseInstance {
    function getStatus() external view returns (ResponseStatus);
    // extra
    function core() external view returns (address task, address provider, uint256 payment);
}
