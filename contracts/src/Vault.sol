// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import "./Types.sol";
import "./Interfaces.sol";

/// Every coin of the protocol. Per account: liquid balance, lockup (stake), unbonding, escrow
/// (frozenPayment, with a per-task record), earnings counter and sanctions. Invariant: this
/// contract's coin balance equals the sum of all balances, lockups, unbondings, escrows and
/// undrawn sanctions. Admin gating goes through the Manager's roles (the real Vault has no owner).
contract Vault {
    struct Escrow {
        address client;
        uint96 amount; // 0 once settled; the client stays as the record that the task existed
    }

    event Deposited(address account, uint256 amount);
    event Withdrawn(address account, uint256 amount);
    event Locked(address account, uint256 amount);
    event Unbonded(address account, uint256 amount);
    event UnbondingCanceled(address account, uint256 amount);
    event Claimed(address account, uint256 amount);
    event Sanctioned(address account, uint256 amount);
    event Waived(address account, uint256 amount);

    address public immutable manager;
    address public immutable nexus;
    address public terminal;

    uint256 public MIN_LOCKUP_PER_SOURCE;
    uint256 public UNBONDING_PERIOD;
    uint256 public sanctionedAmount;

    mapping(address => uint256) public balanceOf;
    mapping(address => uint256) public lockupOf;
    mapping(address => uint256) public unbondingOf;
    mapping(address => uint256) public unbondingTimestamp; // when the current unbonding matures
    mapping(address => uint256) public frozenPayment;
    mapping(address => uint256) public totalEarningsOf;
    mapping(address => uint256) public sanctionOf;
    mapping(address => bool) public isWhitelisted;
    mapping(address => Escrow) private _escrows;

    constructor(address _manager, address _nexus, address _terminal) {
        manager = _manager;
        nexus = _nexus;
        terminal = _terminal;
    }

    modifier onlyRole(bytes32 role) {
        require(IManagerRoles(manager).hasRole(role, msg.sender), "NotAuthorized");
        _;
    }

    modifier onlyProtocol() {
        require(
            msg.sender == nexus || IManagerRoles(manager).hasRole(CONTROLLER_ROLE, msg.sender), "NotController"
        );
        _;
    }

    // ---- views ----

    function getBalanceOf(address account) external view returns (uint256) {
        return balanceOf[account];
    }

    function getLockupOf(address account) external view returns (uint256) {
        return lockupOf[account];
    }

    /// Not sanctioned, and whitelisted or holding at least MIN_LOCKUP_PER_SOURCE of lockup.
    function isEligible(address account) external view returns (bool) {
        return sanctionOf[account] == 0 && (isWhitelisted[account] || lockupOf[account] >= MIN_LOCKUP_PER_SOURCE);
    }

    /// Extra: the escrow record of a task. `client` is non-zero for every task ever published
    /// through the Controller, so it doubles as the protocol's task registry.
    function escrowOf(address task) external view returns (address client, uint256 amount) {
        Escrow memory e = _escrows[task];
        return (e.client, e.amount);
    }

    // ---- accounts ----

    function deposit(address account) external payable {
        require(msg.value > 0, "ZeroAmount");
        balanceOf[account] += msg.value;
        emit Deposited(account, msg.value);
    }

    function withdraw(uint256 amount) external {
        require(amount > 0, "ZeroAmount");
        require(balanceOf[msg.sender] >= amount, "InsufficientBalance");
        balanceOf[msg.sender] -= amount;
        emit Withdrawn(msg.sender, amount);
        _send(msg.sender, amount);
    }

    function lock(uint256 amount) external {
        require(amount > 0, "ZeroAmount");
        require(balanceOf[msg.sender] >= amount, "InsufficientBalance");
        balanceOf[msg.sender] -= amount;
        lockupOf[msg.sender] += amount;
        emit Locked(msg.sender, amount);
    }

    /// Extra: the Terminal credits a master's `announceProvider` funding to the provider's lockup.
    function lockFor(address account) external payable {
        require(msg.sender == terminal, "NotTerminal");
        lockupOf[account] += msg.value;
        emit Locked(account, msg.value);
    }

    /// Starts (or tops up, restarting the clock of) the unbonding of `amount` of lockup. The lockup
    /// left must still cover MIN_LOCKUP_PER_SOURCE for every source the account is registered to.
    function unbond(uint256 amount) external {
        require(amount > 0, "ZeroAmount");
        uint256 locked = lockupOf[msg.sender];
        require(locked >= amount, "InsufficientLockup");
        uint256 needed = INexusHub(nexus).registrationCountOf(msg.sender) * MIN_LOCKUP_PER_SOURCE;
        require(locked - amount >= needed, "InsufficientLockup: still registered to sources");
        lockupOf[msg.sender] = locked - amount;
        unbondingOf[msg.sender] += amount;
        unbondingTimestamp[msg.sender] = block.timestamp + UNBONDING_PERIOD;
        emit Unbonded(msg.sender, amount);
    }

    function cancelUnbonding() external {
        uint256 amount = unbondingOf[msg.sender];
        require(amount > 0, "NothingUnbonding");
        unbondingOf[msg.sender] = 0;
        unbondingTimestamp[msg.sender] = 0;
        lockupOf[msg.sender] += amount;
        emit UnbondingCanceled(msg.sender, amount);
    }

    function claim() external {
        uint256 amount = unbondingOf[msg.sender];
        require(amount > 0, "NothingUnbonding");
        require(block.timestamp >= unbondingTimestamp[msg.sender], "UnbondingNotElapsed");
        unbondingOf[msg.sender] = 0;
        unbondingTimestamp[msg.sender] = 0;
        balanceOf[msg.sender] += amount;
        emit Claimed(msg.sender, amount);
    }

    // ---- escrow (Nexus and Controller) ----

    function freezePayment(address client, address task, uint256 amount) external onlyProtocol {
        require(amount <= type(uint96).max, "InvalidPayment: above 2^96-1 wei");
        require(_escrows[task].client == address(0), "AlreadyEscrowed");
        require(balanceOf[client] >= amount, "InsufficientBalance");
        balanceOf[client] -= amount;
        frozenPayment[client] += amount;
        _escrows[task] = Escrow(client, uint96(amount));
    }

    /// Pays `amount` of the task's escrow to the provider (its balance and earnings) and returns
    /// the rest of the escrow to the client. Settles the escrow.
    function processPayment(address client, address provider, address task, uint256 amount) external onlyProtocol {
        uint256 escrowed = _settle(client, task);
        require(amount <= escrowed, "InsufficientBalance: payment above escrow");
        balanceOf[provider] += amount;
        totalEarningsOf[provider] += amount;
        balanceOf[client] += escrowed - amount;
    }

    function releasePayment(address client, address task) external onlyProtocol {
        balanceOf[client] += _settle(client, task);
    }

    /// Admin refund of a task's escrow. The task's status is not touched: use it only for tasks
    /// the protocol can no longer settle.
    function forceReleasePayment(address client, address task) external onlyRole(bytes32(0)) {
        balanceOf[client] += _settle(client, task);
    }

    function _settle(address client, address task) private returns (uint256 amount) {
        Escrow storage e = _escrows[task];
        require(e.client == client, "NotEscrowed");
        amount = e.amount;
        require(amount > 0, "AlreadyFinalized: escrow settled");
        e.amount = 0;
        frozenPayment[client] -= amount;
    }

    // ---- sanctions (JUDGE) ----

    /// Moves `amount` out of the account's lockup, then unbonding, then liquid balance.
    function sanction(address account, uint256 amount) external onlyRole(JUDGE_ROLE) {
        require(amount > 0, "ZeroAmount");
        uint256 left = amount;
        left = _take(lockupOf, account, left);
        left = _take(unbondingOf, account, left);
        left = _take(balanceOf, account, left);
        require(left == 0, "InsufficientBalance: sanction above holdings");
        sanctionOf[account] += amount;
        sanctionedAmount += amount;
        emit Sanctioned(account, amount);
    }

    /// Forgives `amount` of a sanction, back to the account's liquid balance.
    function waive(address account, uint256 amount) external onlyRole(JUDGE_ROLE) {
        require(amount > 0 && sanctionOf[account] >= amount, "InsufficientBalance: waive above sanction");
        sanctionOf[account] -= amount;
        sanctionedAmount -= amount;
        balanceOf[account] += amount;
        emit Waived(account, amount);
    }

    function _take(mapping(address => uint256) storage bucket, address account, uint256 want)
        private
        returns (uint256 left)
    {
        uint256 have = bucket[account];
        uint256 taken = have < want ? have : want;
        bucket[account] = have - taken;
        return want - taken;
    }

    // ---- admin (DEFAULT_ADMIN_ROLE) ----

    /// Sends an account's sanctioned coins to the admin calling it (the treasury).
    function withdrawSanctionOf(address account) external onlyRole(bytes32(0)) {
        uint256 amount = sanctionOf[account];
        require(amount > 0, "ZeroAmount");
        sanctionOf[account] = 0;
        sanctionedAmount -= amount;
        _send(msg.sender, amount);
    }

    /// Pays an account its liquid balance, lockup and unbonding in coin, at once. Escrow stays.
    function emergencyExit(address account) external onlyRole(bytes32(0)) {
        uint256 amount = balanceOf[account] + lockupOf[account] + unbondingOf[account];
        require(amount > 0, "ZeroAmount");
        balanceOf[account] = 0;
        lockupOf[account] = 0;
        unbondingOf[account] = 0;
        unbondingTimestamp[account] = 0;
        emit Withdrawn(account, amount);
        _send(account, amount);
    }

    function setMaxUnbondingPeriod(uint256 period) external onlyRole(bytes32(0)) {
        UNBONDING_PERIOD = period;
    }

    function setMinLockupPerSource(uint256 amount) external onlyRole(bytes32(0)) {
        MIN_LOCKUP_PER_SOURCE = amount;
    }

    function setTerminal(address _terminal) external onlyRole(bytes32(0)) {
        terminal = _terminal;
    }

    function setWhitelist(address account, bool value) external onlyRole(bytes32(0)) {
        isWhitelisted[account] = value;
    }

    function _send(address to, uint256 amount) private {
        (bool ok,) = to.call{value: amount}("");
        require(ok, "TransferFailed");
    }
}
