// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import "./Types.sol";
import "./Interfaces.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// Identity and delegation: master <-> provider pairing (one provider per master, as
/// `providerOf(master)` suggests), agents acting for a client or master, and the providers'
/// base / live data URLs.
contract Terminal is Ownable {
    event AgentSet(address account, address agent, bool value);
    event BaseDataUpdated(address provider);
    event DefaultAgentDisabled(address master, bool value); // the real ABI names the provider `master`
    event LiveDataUpdated(address provider);
    event MasterAnnounced(address provider, address master);
    event ProviderAnnounced(address provider, address master);
    event ProviderRemoved(address provider);
    event RemoveContainer(address provider, address source);

    bytes32 public constant PROVIDER = PROVIDER_ROLE;

    address public manager;
    address public vault;

    mapping(address => address) public masterOf; // provider -> master, once both announced
    mapping(address => address) public providerOf; // master -> provider (announced, maybe unconfirmed)
    mapping(address => bool) public isMaster;
    mapping(address => bool) public isProvider;
    mapping(address => mapping(address => bool)) public isAgentOf; // principal -> agent
    mapping(address => bool) public defaultAgentDisabled;
    mapping(address => string) public baseDataOf;
    mapping(address => string) public liveDataOf;

    constructor(address _manager, address _vault) Ownable(msg.sender) {
        manager = _manager;
        vault = _vault;
    }

    function getMasterOf(address provider) external view returns (address) {
        return masterOf[provider];
    }

    function getIsMaster(address master) external view returns (bool) {
        return isMaster[master];
    }

    function getIsAgentOf(address master, address agent) external view returns (bool) {
        return isAgentOf[master][agent];
    }

    /// First half of pairing, by the master. `amount` (== msg.value) goes to the provider's lockup.
    function announceProvider(address provider, uint256 amount) external payable {
        require(msg.value == amount, "InvalidPayment: msg.value must equal amount");
        require(provider != address(0) && provider != msg.sender, "NotProvider");
        require(!isProvider[msg.sender], "NotMaster: a provider cannot be a master");
        address current = providerOf[msg.sender];
        require(current == address(0) || masterOf[current] == address(0), "NotMaster: already paired");
        require(masterOf[provider] == address(0), "NotProvider: provider already paired");
        providerOf[msg.sender] = provider;
        emit ProviderAnnounced(provider, msg.sender);
        if (amount > 0) IVaultBook(vault).lockFor{value: amount}(provider);
    }

    /// Second half of pairing, by the provider.
    function announceMaster(address master) external {
        require(providerOf[master] == msg.sender, "NotMaster: master did not announce this provider");
        require(masterOf[msg.sender] == address(0), "NotProvider: already paired");
        masterOf[msg.sender] = master;
        isMaster[master] = true;
        isProvider[msg.sender] = true;
        emit MasterAnnounced(msg.sender, master);
    }

    function removeProvider(address provider) external {
        require(providerOf[msg.sender] == provider && provider != address(0), "NotMaster");
        delete providerOf[msg.sender];
        if (masterOf[provider] == msg.sender) {
            delete masterOf[provider];
            isProvider[provider] = false;
        }
        isMaster[msg.sender] = false;
        emit ProviderRemoved(provider);
    }

    /// A signal for the provider's runtime to stop a source's containers.
    function removeContainer(address provider, address source) external {
        require(masterOf[provider] == msg.sender && msg.sender != address(0), "NotMaster");
        emit RemoveContainer(provider, source);
    }

    /// Clients and masters name agents; providers cannot.
    function setAgent(address agent, bool value) external {
        require(!isProvider[msg.sender], "NotMaster: providers cannot set agents");
        require(agent != address(0) && agent != msg.sender, "InvalidAgent");
        isAgentOf[msg.sender][agent] = value;
        emit AgentSet(msg.sender, agent, value);
    }

    function setDefaultAgentDisabled(bool value) external {
        _requireProvider();
        defaultAgentDisabled[msg.sender] = value;
        emit DefaultAgentDisabled(msg.sender, value);
    }

    function setBaseData(string calldata data) external {
        _requireProvider();
        baseDataOf[msg.sender] = data;
        emit BaseDataUpdated(msg.sender);
    }

    function setLiveData(string calldata data) external {
        _requireProvider();
        liveDataOf[msg.sender] = data;
        emit LiveDataUpdated(msg.sender);
    }

    /// A provider is a paired one, or one that stands on its own stake (eligible in the Vault).
    function _requireProvider() private view {
        require(isProvider[msg.sender] || IVaultBook(vault).isEligible(msg.sender), "NotProvider");
    }

    function setManager(address _manager) external onlyOwner {
        manager = _manager;
    }

    function setVault(address _vault) external onlyOwner {
        vault = _vault;
    }
}
