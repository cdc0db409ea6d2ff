// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import "./Types.sol";
import {CloneArgs, FixedOwner} from "./CloneArgs.sol";

/// One published task: an EIP-1167 clone made by the Controller. Everything fixed at publish time
/// is an immutable clone arg (packed: nexus 20 | source 20 | client 20 | payment 12 | expiryTime 5 |
/// deliveryMethod 1 | config bytes); only the lifecycle state is in storage, packed so that a task's
/// first attempt writes two new slots (status with the first attempter, and that attempter's
/// record) and each later attempt two more. The owner is the Nexus, the only mutating caller.
contract Task is FixedOwner {
    struct State {
        TaskStatus status;
        uint32 attemptCount;
        uint32 winner; // 1-based attempt index of the winning provider; 0 = none
        address firstAttempter; // attempt 1 lives here: most tasks have exactly one attempter
    }

    struct Attender {
        address response;
        uint32 id; // 1-based attempt index
        uint64 timestamp; // of the attempt
    }

    uint256 private constant O_SOURCE = 20;
    uint256 private constant O_CLIENT = 40;
    uint256 private constant O_PAYMENT = 60;
    uint256 private constant O_EXPIRY = 72;
    uint256 private constant O_METHOD = 77;
    uint256 private constant O_CONFIG = 78;
    uint256 private constant RESPONSE_DATA_OFFSET = 77; // Response's clone-arg layout

    State private _state;
    mapping(uint256 => address) private _attempters; // 0-based, from index 1 on (index 0: firstAttempter)
    mapping(address => Attender) private _attenders;

    /// The ABI's constructor. It builds the implementation that clones delegate to; that contract
    /// is not a task itself and its views are meaningless.
    constructor(TaskParams memory, DeliveryMethod, address) payable {}

    modifier onlyNexus() {
        require(msg.sender == owner(), "NotNexus");
        _;
    }

    // ---- immutable args ----

    function owner() public view override returns (address) {
        return CloneArgs.addressAt(0);
    }

    function getSource() public view returns (address) {
        return CloneArgs.addressAt(O_SOURCE);
    }

    /// Extra: the account that published (and pays for) the task.
    function getClient() public view returns (address) {
        return CloneArgs.addressAt(O_CLIENT);
    }

    function getPayment() public view returns (uint256) {
        return CloneArgs.uintAt(O_PAYMENT, 12);
    }

    function getExpiryTime() public view returns (uint256) {
        return CloneArgs.uintAt(O_EXPIRY, 5);
    }

    function getDeliveryMethod() public view returns (DeliveryMethod) {
        return DeliveryMethod(CloneArgs.uintAt(O_METHOD, 1));
    }

    function deliveryMethod() external view returns (DeliveryMethod) {
        return getDeliveryMethod();
    }

    function taskParams() external view returns (address source, string memory config, uint256 expiryTime, uint256 payment) {
        return (getSource(), string(CloneArgs.tail(O_CONFIG)), getExpiryTime(), getPayment());
    }

    /// Extra: everything the Controller and Nexus check, in one call.
    function core()
        external
        view
        returns (address, address, uint256, uint256, DeliveryMethod, TaskStatus)
    {
        return (getSource(), getClient(), getPayment(), getExpiryTime(), getDeliveryMethod(), _state.status);
    }

    // ---- lifecycle state ----

    function status() external view returns (TaskStatus) {
        return _state.status;
    }

    function getStatus() external view returns (TaskStatus) {
        return _state.status;
    }

    function getAttemptCount() external view returns (uint256) {
        return _state.attemptCount;
    }

    function attempters(uint256 index) public view returns (address) {
        if (index >= _state.attemptCount) panicOutOfBounds();
        return _attempter(index);
    }

    function attemptTimestamps(uint256 index) public view returns (uint256) {
        return _attenders[attempters(index)].timestamp;
    }

    function _attempter(uint256 index) private view returns (address) {
        return index == 0 ? _state.firstAttempter : _attempters[index];
    }

    function attempterId(address provider) public view returns (uint256) {
        return _attenders[provider].id;
    }

    function getAttempterId(address provider) external view returns (uint256) {
        return _attenders[provider].id;
    }

    function getAttempters(uint256 lower, uint256 upper) external view returns (address[] memory out) {
        out = new address[](checkPage(lower, upper, _state.attemptCount));
        for (uint256 i = 0; i < out.length; i++) out[i] = _attempter(lower + i);
    }

    function getAttemptTimestamps(uint256 lower, uint256 upper) external view returns (uint256[] memory out) {
        out = new uint256[](checkPage(lower, upper, _state.attemptCount));
        for (uint256 i = 0; i < out.length; i++) out[i] = _attenders[_attempter(lower + i)].timestamp;
    }

    /// Aligned with the attempters; the zero address where an attempter has not responded.
    function getResponsesOf(uint256 lower, uint256 upper) external view returns (address[] memory out) {
        out = new address[](checkPage(lower, upper, _state.attemptCount));
        for (uint256 i = 0; i < out.length; i++) out[i] = _attenders[_attempter(lower + i)].response;
    }

    function responseOf(address provider) external view returns (address) {
        return _attenders[provider].response;
    }

    function winningProvider() external view returns (address) {
        uint32 w = _state.winner;
        return w == 0 ? address(0) : _attempter(w - 1);
    }

    /// True when a response whose data hashes (keccak256 of the data string's bytes) to
    /// `dataHash` was already submitted to this task. A scan, not a stored set: submissions are
    /// few per task and a view costs nothing, while a stored set would cost 22k gas per response.
    function isAlreadySubmitted(bytes32 dataHash) public view returns (bool) {
        uint256 n = _state.attemptCount;
        for (uint256 i = 0; i < n; i++) {
            address r = _attenders[_attempter(i)].response;
            if (r != address(0) && CloneArgs.tailHash(r, RESPONSE_DATA_OFFSET) == dataHash) return true;
        }
        return false;
    }

    // ---- mutations (Nexus only; it enforces the protocol rules) ----

    function attempt(address provider) external onlyNexus {
        require(_attenders[provider].id == 0, "AlreadyAttempted");
        State memory s = _state;
        require(s.attemptCount < type(uint32).max, "TooManyAttempts");
        if (s.attemptCount == 0) s.firstAttempter = provider;
        else _attempters[s.attemptCount] = provider;
        s.attemptCount += 1;
        if (s.status == TaskStatus.NEW) s.status = TaskStatus.ATTEMPTED;
        _state = s;
        _attenders[provider] = Attender(address(0), s.attemptCount, uint64(block.timestamp));
    }

    /// Records the provider's response; under MANUAL_CONFIRMATION the task becomes RESPONDED.
    function submitResponse(address response, address provider) external onlyNexus {
        Attender storage a = _attenders[provider];
        require(a.id != 0, "NotAttempted");
        require(a.response == address(0), "AlreadySubmitted");
        a.response = response;
        if (getDeliveryMethod() == DeliveryMethod.MANUAL_CONFIRMATION) _state.status = TaskStatus.RESPONDED;
    }

    function setStatus(TaskStatus newStatus) external onlyNexus {
        _state.status = newStatus;
    }

    /// Extra: records the winner and finalizes.
    function finalize(address provider) external onlyNexus {
        uint32 id = _attenders[provider].id;
        require(id != 0, "NotAttempted");
        _state.winner = id;
        _state.status = TaskStatus.FINALIZED;
    }
}
