// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import "./Types.sol";
import "./Interfaces.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Clones} from "@openzeppelin/contracts/proxy/Clones.sol";

/// Registry and factory of sources and responses, provider entry points, and the event hub:
/// every lifecycle event comes from this address, none of them indexed.
contract Nexus is Ownable {
    event Attempted(address task, address provider, uint256 suggestedPayment);
    event Registered(address provider, uint256 registrantId, address source, uint8 preferredEnvironment);
    event ResponseStatusChanged(address response, ResponseStatus status);
    event ResponseSubmitted(address response, address task);
    event SourcePublished(address source);
    event SourceStatusChanged(address source, SourceStatus status);
    event SourceUpdated(address source, SourceParams sourceParams);
    event TaskPublished(address task, address source);
    event TaskStatusChanged(address task, TaskStatus status);

    bytes32 public constant CONTROLLER = CONTROLLER_ROLE;
    bytes32 public constant PROVIDER = PROVIDER_ROLE;

    address public manager;
    address public terminal;
    address public vault;
    /// Extra: the implementations that source and response clones delegate to.
    address public sourceImplementation;
    address public responseImplementation;

    address[] public sources;
    mapping(address => uint256) public sourceId; // 1-based; 0 = not a source of this Nexus
    address[] public clients; // every account that published a source, once
    mapping(address => address[]) public sourcesOf; // client -> its sources
    mapping(address => uint256) public activeSourceCountOf; // client -> its active sources
    /// Extra: provider -> number of sources it is registered to (drives the lockup rule).
    mapping(address => uint256) public registrationCountOf;

    constructor(address _manager, address _terminal, address _vault) Ownable(msg.sender) {
        manager = _manager;
        terminal = _terminal;
        vault = _vault;
    }

    modifier onlyController() {
        require(checkController(msg.sender), "NotController");
        _;
    }

    // ---- views ----

    function checkController(address account) public view returns (bool) {
        return IManagerRoles(manager).hasRole(CONTROLLER_ROLE, account);
    }

    function getSourceCount() external view returns (uint256) {
        return sources.length;
    }

    function getSourceId(address source) external view returns (uint256) {
        return sourceId[source];
    }

    function getActiveSourceCount(address client) external view returns (uint256) {
        return activeSourceCountOf[client];
    }

    /// Inclusive bounds.
    function getSources(uint256 lower, uint256 upper) external view returns (address[] memory out) {
        out = new address[](checkPage(lower, upper, sources.length));
        for (uint256 i = 0; i < out.length; i++) out[i] = sources[lower + i];
    }

    // ---- sources (clients) ----

    function publishSource(SourceParams calldata params) external {
        _requireSelfOrAgent(params.client, "NotOwner: params.client must be the caller or its principal");
        _checkSourceParams(params);
        address source = Clones.cloneWithImmutableArgs(sourceImplementation, abi.encodePacked(address(this)));
        ISourceInstance(source).initialize(params);
        sources.push(source);
        sourceId[source] = sources.length;
        if (sourcesOf[params.client].length == 0) clients.push(params.client);
        sourcesOf[params.client].push(source);
        activeSourceCountOf[params.client] += 1;
        emit SourcePublished(source);
    }

    /// The client stays the same; tasks already published keep the terms they were published with.
    function updateSource(address source, SourceParams calldata params) external {
        address client = _sourceClient(source);
        _requireSelfOrAgent(client, "NotOwner");
        require(params.client == client, "NotOwner: the client of a source cannot change");
        require(ISourceInstance(source).getStatus() == SourceStatus.ACTIVE, "SourceInactive");
        _checkSourceParams(params);
        ISourceInstance(source).setSourceParams(params);
        emit SourceUpdated(source, params);
    }

    /// One-way for the client; only the owner's admin route (setSourceStatus) can reactivate.
    function inactivateSource(address source) external {
        _requireSelfOrAgent(_sourceClient(source), "NotOwner");
        require(ISourceInstance(source).getStatus() == SourceStatus.ACTIVE, "SourceInactive");
        ISourceInstance(source).setStatus(SourceStatus.INACTIVE);
        _sourceStatusChanged(source, SourceStatus.INACTIVE);
    }

    function setSourceStatus(address source, SourceStatus status) external onlyOwner {
        _sourceClient(source);
        if (ISourceInstance(source).getStatus() == status) return;
        ISourceInstance(source).setStatus(status);
        _sourceStatusChanged(source, status);
    }

    /// Extra: a source tells the Nexus that its client inactivated it directly (Source.setStatus).
    function sourceStatusChanged(SourceStatus status) external {
        require(sourceId[msg.sender] != 0, "UnknownSource");
        _sourceStatusChanged(msg.sender, status);
    }

    function _sourceStatusChanged(address source, SourceStatus status) private {
        address client = ISourceInstance(source).getClient();
        if (status == SourceStatus.ACTIVE) activeSourceCountOf[client] += 1;
        else activeSourceCountOf[client] -= 1;
        emit SourceStatusChanged(source, status);
    }

    function _checkSourceParams(SourceParams calldata params) private pure {
        require(
            params.imageEnvironments != 0 && params.imageEnvironments & ~ENV_ALL == 0,
            "InvalidEnvironment: imageEnvironments must be a non-empty OR of CPU=1, NVIDIA=2, AMD=4"
        );
        require(params.maxExpiryDuration > 0, "InvalidExpiry: maxExpiryDuration must be positive");
        require(bytes(params.imageMetadataUrl).length > 0, "InvalidData: imageMetadataUrl is empty");
    }

    function _sourceClient(address source) private view returns (address) {
        require(sourceId[source] != 0, "UnknownSource");
        return ISourceInstance(source).getClient();
    }

    // ---- providers ----

    /// Lockup rule: lockup >= max(source.minAvailableLockup, MIN_LOCKUP_PER_SOURCE x registrations
    /// including this one), unless the provider is whitelisted. Re-registering updates the
    /// preferred environment.
    function register(address source, address provider, uint8 preferredEnvironment) external {
        _requireProviderAuthority(provider);
        require(sourceId[source] != 0, "UnknownSource");
        (SourceStatus status, uint8 envs, uint256 minLockup, uint256 existing) =
            ISourceInstance(source).registrationTerms(provider);
        require(status == SourceStatus.ACTIVE, "SourceInactive");
        require(
            preferredEnvironment != 0 && preferredEnvironment & (preferredEnvironment - 1) == 0
                && preferredEnvironment & envs != 0,
            "InvalidEnvironment: one environment the source offers"
        );
        IVaultBook v = IVaultBook(vault);
        require(v.sanctionOf(provider) == 0, "NotEligible: sanctioned");
        uint256 count = registrationCountOf[provider] + (existing == 0 ? 1 : 0);
        if (!v.isWhitelisted(provider)) {
            uint256 perSource = v.MIN_LOCKUP_PER_SOURCE() * count;
            uint256 needed = minLockup > perSource ? minLockup : perSource;
            require(v.lockupOf(provider) >= needed, "InsufficientLockup");
        }
        registrationCountOf[provider] = count;
        uint256 id = ISourceInstance(source).register(provider, preferredEnvironment);
        emit Registered(provider, id, source, preferredEnvironment);
    }

    /// Emits nothing, as on the real network.
    function unregister(address source, address provider) external {
        _requireProviderAuthority(provider);
        require(sourceId[source] != 0, "UnknownSource");
        ISourceInstance(source).unregister(provider);
        registrationCountOf[provider] -= 1;
    }

    function attempt(address task, address provider, uint256 suggestedPayment) external {
        _requireProviderAuthority(provider);
        (address source,, uint256 payment, uint256 expiry, DeliveryMethod method, TaskStatus status) = _task(task);
        _requireOpen(status, method);
        require(block.timestamp < expiry, "Expired");
        require(suggestedPayment <= payment, "InvalidPayment: suggestedPayment above task payment");
        require(ISourceInstance(source).registrantId(provider) != 0, "NotEligible: provider not registered to source");
        require(IVaultBook(vault).isEligible(provider), "NotEligible");
        ITaskInstance(task).attempt(provider);
        if (status == TaskStatus.NEW) emit TaskStatusChanged(task, TaskStatus.ATTEMPTED);
        emit Attempted(task, provider, suggestedPayment);
    }

    /// Only an attempter, once, before expiry, with a URL and a payment claim <= the task's payment.
    /// FIRST_RESPONSE: the response is confirmed and paid in this transaction.
    function submitResponse(ResponseParams calldata params) external {
        _requireProviderAuthority(params.provider);
        address task = params.task;
        (, address client, uint256 payment, uint256 expiry, DeliveryMethod method, TaskStatus status) = _task(task);
        _requireOpen(status, method);
        require(status != TaskStatus.NEW, "NotAttempted");
        require(block.timestamp < expiry, "Expired");
        require(params.payment <= payment, "InvalidPayment: response payment above task payment");
        _requireUrl(bytes(params.data));
        require(!ITaskInstance(task).isAlreadySubmitted(keccak256(bytes(params.data))), "AlreadySubmitted: same data");
        address response = Clones.cloneWithImmutableArgs(
            responseImplementation,
            abi.encodePacked(
                address(this), task, params.provider, uint96(params.payment), uint40(block.timestamp), params.data
            )
        );
        ITaskInstance(task).submitResponse(response, params.provider);
        emit ResponseSubmitted(response, task);
        if (method == DeliveryMethod.FIRST_RESPONSE) {
            _confirm(response, task, client, params.provider, params.payment);
        } else if (status != TaskStatus.RESPONDED) {
            emit TaskStatusChanged(task, TaskStatus.RESPONDED);
        }
    }

    // ---- status routes (Controller) ----

    function setTaskStatus(address task, TaskStatus status) external onlyController {
        ITaskInstance(task).setStatus(status);
        emit TaskStatusChanged(task, status);
    }

    /// CONFIRMED runs the whole confirmation: response confirmed, task finalized with its winner,
    /// the response's payment paid and the rest of the escrow back to the client.
    function setResponseStatus(address response, ResponseStatus status) external onlyController {
        require(status == ResponseStatus.CONFIRMED, "InvalidStatus: only CONFIRMED");
        (address task, address provider, uint256 payment) = IResponseInstance(response).core();
        require(ITaskInstance(task).responseOf(provider) == response, "UnknownResponse");
        _confirm(response, task, ITaskInstance(task).getClient(), provider, payment);
    }

    function emitTaskPublished(address task, address source) external onlyController {
        ISourceInstance(source).publishTask(task);
        emit TaskPublished(task, source);
    }

    /// The response's CONFIRMED status is derived from the task's winner (see Response).
    function _confirm(address response, address task, address client, address provider, uint256 payment) private {
        ITaskInstance(task).finalize(provider);
        IVaultBook(vault).processPayment(client, provider, task, payment);
        emit ResponseStatusChanged(response, ResponseStatus.CONFIRMED);
        emit TaskStatusChanged(task, TaskStatus.FINALIZED);
    }

    // ---- checks ----

    function _task(address task)
        private
        view
        returns (address, address, uint256, uint256, DeliveryMethod, TaskStatus)
    {
        (address client,) = IVaultBook(vault).escrowOf(task);
        require(client != address(0), "UnknownTask");
        return ITaskInstance(task).core();
    }

    function _requireOpen(TaskStatus status, DeliveryMethod method) private pure {
        require(status != TaskStatus.FINALIZED, "AlreadyFinalized");
        require(status != TaskStatus.CANCELED, "AlreadyFinalized: task canceled");
        require(status != TaskStatus.EXPIRED, "Expired");
        require(status != TaskStatus.RESPONDED || method == DeliveryMethod.MANUAL_CONFIRMATION, "AlreadyFinalized");
    }

    /// The provider itself, its master, or an agent of its master.
    function _requireProviderAuthority(address provider) private view {
        if (msg.sender == provider) return;
        ITerminalAuth t = ITerminalAuth(terminal);
        address master = t.masterOf(provider);
        require(
            master != address(0) && (msg.sender == master || t.isAgentOf(master, msg.sender)),
            "NotProvider: caller is not the provider, its master or the master's agent"
        );
    }

    function _requireSelfOrAgent(address principal, string memory reason) private view {
        if (msg.sender == principal) return;
        require(ITerminalAuth(terminal).isAgentOf(principal, msg.sender), reason);
    }

    function _requireUrl(bytes calldata data) private pure {
        require(
            _startsWith(data, "https://") || _startsWith(data, "http://") || _startsWith(data, "ipfs://"),
            "InvalidData: response data must be an http(s) or ipfs URL"
        );
    }

    function _startsWith(bytes calldata data, bytes memory prefix) private pure returns (bool) {
        if (data.length <= prefix.length) return false;
        for (uint256 i = 0; i < prefix.length; i++) {
            if (data[i] != prefix[i]) return false;
        }
        return true;
    }

    // ---- admin ----

    function setManager(address _manager) external onlyOwner {
        manager = _manager;
    }

    function setTerminal(address _terminal) external onlyOwner {
        terminal = _terminal;
    }

    function setVault(address _vault) external onlyOwner {
        vault = _vault;
    }

    /// Extra: set once at deployment (and on upgrade); existing clones keep their implementation.
    function setImplementations(address source, address response) external onlyOwner {
        sourceImplementation = source;
        responseImplementation = response;
    }
}
