// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// Reads the immutable arguments appended to an EIP-1167 clone's runtime code (OpenZeppelin
/// `Clones.cloneWithImmutableArgs` layout: 45 bytes of proxy code, then the packed args).
/// Code costs 200 gas a byte to deploy against ~690 for storage, which is what keeps a task's
/// full lifecycle under 600k gas.
library CloneArgs {
    uint256 private constant ARGS_START = 0x2d;

    function word(uint256 offset) internal view returns (bytes32 w) {
        assembly ("memory-safe") {
            extcodecopy(address(), 0, add(ARGS_START, offset), 32)
            w := mload(0)
        }
    }

    function addressAt(uint256 offset) internal view returns (address) {
        return address(uint160(uint256(word(offset)) >> 96));
    }

    function uintAt(uint256 offset, uint256 byteLength) internal view returns (uint256) {
        return uint256(word(offset)) >> (256 - 8 * byteLength);
    }

    function tail(uint256 offset) internal view returns (bytes memory out) {
        uint256 size = address(this).code.length - ARGS_START - offset;
        out = new bytes(size);
        assembly ("memory-safe") {
            extcodecopy(address(), add(out, 0x20), add(ARGS_START, offset), size)
        }
    }

    function tailHash(address instance, uint256 offset) internal view returns (bytes32 h) {
        uint256 size = instance.code.length - ARGS_START - offset;
        bytes memory out = new bytes(size);
        assembly ("memory-safe") {
            extcodecopy(instance, add(out, 0x20), add(ARGS_START, offset), size)
            h := keccak256(add(out, 0x20), size)
        }
    }
}

/// OpenZeppelin `Ownable`'s interface for per-instance contracts whose owner is fixed at creation
/// (the Nexus for tasks and responses, the client for sources). Ownership cannot move: a transfer
/// would desynchronise the Nexus' per-client bookkeeping. Non-owners get OZ's custom error.
abstract contract FixedOwner {
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    error OwnableUnauthorizedAccount(address account);
    error OwnableInvalidOwner(address owner);

    function owner() public view virtual returns (address);

    modifier onlyOwner() {
        if (msg.sender != owner()) revert OwnableUnauthorizedAccount(msg.sender);
        _;
    }

    function transferOwnership(address newOwner) external onlyOwner {
        if (newOwner == address(0)) revert OwnableInvalidOwner(address(0));
        revert("FixedOwner: instance ownership cannot be transferred");
    }

    function renounceOwnership() external onlyOwner {
        revert("FixedOwner: instance ownership cannot be renounced");
    }
}
