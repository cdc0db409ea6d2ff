// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

// File-level types: the real network's ABIs name them `struct SourceParams`, `enum TaskStatus`, ...
// (no contract prefix), so they must live at file level to keep the same internalType.

enum TaskStatus {
    NEW,
    ATTEMPTED,
    RESPONDED,
    CANCELED,
    EXPIRED,
    FINALIZED
}

enum SourceStatus {
    ACTIVE,
    INACTIVE
}

enum ResponseStatus {
    SUBMITTED,
    CONFIRMED
}

enum DeliveryMethod {
    MANUAL_CONFIRMATION,
    FIRST_RESPONSE
}

struct SourceParams {
    address client;
    string imageMetadataUrl;
    uint8 imageEnvironments;
    uint256 minPayment;
    uint256 minAvailableLockup;
    uint256 maxExpiryDuration;
    bool privacyEnabled;
    string optionalParamsUrl;
    DeliveryMethod deliveryMethod;
    uint256 lastUpdateTime;
}

struct TaskParams {
    address source;
    string config;
    uint256 expiryTime;
    uint256 payment;
}

struct ResponseParams {
    address task;
    address provider;
    string data;
    uint256 payment;
}

// Environment bit flags (Source.imageEnvironments is their OR; register takes exactly one).
uint8 constant ENV_CPU = 1;
uint8 constant ENV_NVIDIA = 2;
uint8 constant ENV_AMD = 4;
uint8 constant ENV_ALL = 7;

// Manager role ids (OpenZeppelin convention; the real values are not public).
bytes32 constant CONTROLLER_ROLE = keccak256("CONTROLLER");
bytes32 constant JUDGE_ROLE = keccak256("JUDGE");
bytes32 constant PROVIDER_ROLE = keccak256("PROVIDER");

/// Reverts with Panic(0x32), as a public array getter does for an index out of bounds.
function panicOutOfBounds() pure {
    assembly ("memory-safe") {
        mstore(0, 0x4e487b7100000000000000000000000000000000000000000000000000000000)
        mstore(4, 0x32)
        revert(0, 0x24)
    }
}

/// Inclusive page bounds, as on the real network: upper >= count panics like an array read.
function checkPage(uint256 lower, uint256 upper, uint256 count) pure returns (uint256 size) {
    if (upper >= count) panicOutOfBounds();
    size = upper - lower + 1; // lower > upper underflows: Panic(0x11)
}
