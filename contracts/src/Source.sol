// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import "./Types.sol";
import "./Interfaces.sol";
import {CloneArgs, FixedOwner} from "./CloneArgs.sol";

/// One published service. Deployed by the Nexus as an EIP-1167 clone whose only immutable arg is
/// the Nexus address; the owner is the source's client. The params live in storage because
/// `updateSource` changes them.
contract Source is FixedOwner {
    SourceParams public sourceParams;
    SourceStatus public status;
    bool private _initialized;

    address[] public tasks;
    address[] public registrants;
    mapping(address => uint256) public registrantId; // 1-based; 0 = not registered
    mapping(address => uint8) public preferredEnvironmentOf;

    /// The ABI's constructor. It builds the implementation that clones delegate to; that contract
    /// is not a source itself (its `nexus()` is meaningless) and cannot be initialized.
    constructor(SourceParams memory) payable {
        _initialized = true;
    }

    modifier onlyNexus() {
        require(msg.sender == nexus(), "NotNexus");
        _;
    }

    /// Extra: called once by the Nexus right after cloning.
    function initialize(SourceParams calldata params) external onlyNexus {
        require(!_initialized, "AlreadyInitialized");
        _initialized = true;
        sourceParams = params;
    }

    function nexus() public view returns (address) {
        return CloneArgs.addressAt(0);
    }

    function owner() public view override returns (address) {
        return sourceParams.client;
    }

    function getClient() external view returns (address) {
        return sourceParams.client;
    }

    function getStatus() external view returns (SourceStatus) {
        return status;
    }

    function getSourceParams() external view returns (SourceParams memory) {
        return sourceParams;
    }

    /// Extra: what Controller.publishTask checks, without copying the strings.
    function terms()
        external
        view
        returns (SourceStatus, uint256 minPayment, uint256 maxExpiryDuration, DeliveryMethod deliveryMethod)
    {
        SourceParams storage p = sourceParams;
        return (status, p.minPayment, p.maxExpiryDuration, p.deliveryMethod);
    }

    /// Extra: what Nexus.register checks.
    function registrationTerms(address provider)
        external
        view
        returns (SourceStatus, uint8 imageEnvironments, uint256 minAvailableLockup, uint256 id)
    {
        SourceParams storage p = sourceParams;
        return (status, p.imageEnvironments, p.minAvailableLockup, registrantId[provider]);
    }

    function getTaskCount() external view returns (uint256) {
        return tasks.length;
    }

    /// Inclusive bounds. Unlike mainnet, lower > 0 works.
    function getTasks(uint256 lower, uint256 upper) external view returns (address[] memory out) {
        out = new address[](checkPage(lower, upper, tasks.length));
        for (uint256 i = 0; i < out.length; i++) out[i] = tasks[lower + i];
    }

    function getRegistrantCount() external view returns (uint256) {
        return registrants.length;
    }

    function getRegistrants(uint256 lower, uint256 upper) external view returns (address[] memory out) {
        out = new address[](checkPage(lower, upper, registrants.length));
        for (uint256 i = 0; i < out.length; i++) out[i] = registrants[lower + i];
    }

    function getRegistrantId(address provider) external view returns (uint256) {
        return registrantId[provider];
    }

    function publishTask(address task) external onlyNexus {
        tasks.push(task);
    }

    /// Registers, or updates the preferred environment of, a provider. Returns its 1-based id.
    function register(address provider, uint8 preferredEnvironment) external onlyNexus returns (uint256 id) {
        id = registrantId[provider];
        if (id == 0) {
            registrants.push(provider);
            id = registrants.length;
            registrantId[provider] = id;
        }
        preferredEnvironmentOf[provider] = preferredEnvironment;
    }

    function unregister(address provider) external onlyNexus {
        uint256 id = registrantId[provider];
        require(id != 0, "NotRegistered");
        address last = registrants[registrants.length - 1];
        registrants[id - 1] = last;
        registrantId[last] = id;
        registrants.pop();
        delete registrantId[provider];
        delete preferredEnvironmentOf[provider];
    }

    function setSourceParams(SourceParams calldata params) external onlyNexus {
        sourceParams = params;
    }

    /// The Nexus may set any status (its owner's admin route). The client may only inactivate,
    /// which is one-way for it; the Nexus is told so that it emits SourceStatusChanged.
    function setStatus(SourceStatus newStatus) external {
        if (msg.sender == nexus()) {
            status = newStatus;
            return;
        }
        if (msg.sender != owner()) revert OwnableUnauthorizedAccount(msg.sender);
        require(newStatus == SourceStatus.INACTIVE, "NotOwner: a client can only inactivate its source");
        require(status == SourceStatus.ACTIVE, "SourceInactive");
        status = newStatus;
        INexusHub(nexus()).sourceStatusChanged(newStatus);
    }
}
