// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import "./Base.sol";

/// Drives random sequences of the protocol's money-moving calls from a fixed set of actors.
/// Calls that the protocol refuses are simply refused (fail_on_revert = false); what matters is
/// that no sequence breaks the Vault's books.
contract Handler is Base {
    address[] public actors;
    address[] public tasks;
    address[] public responses;
    address[2] public sources;
    uint256 public calls;

    constructor(Manager m, Terminal t, Nexus n, Vault v, Controller c, address s0, address s1) {
        (manager, terminal, nexus, vault, controller) = (m, t, n, v, c);
        sources = [s0, s1];
        actors = [client, client2, provider, provider2, master, stranger];
    }

    function _actor(uint256 seed) private view returns (address) {
        return actors[seed % actors.length];
    }

    function _provider(uint256 seed) private view returns (address) {
        return seed % 8 == 0 ? stranger : (seed % 2 == 0 ? provider : provider2);
    }

    /// Mostly the task's own client, sometimes a stranger (who must be refused).
    function _clientOf(address task, uint256 seed) private view returns (address) {
        return task == address(0) || seed % 8 == 0 ? stranger : Task(task).getClient();
    }

    function _some(address[] storage list, uint256 seed) private view returns (address) {
        return list.length == 0 ? address(0) : list[seed % list.length];
    }

    function deposit(uint256 who, uint256 amount) external {
        address a = _actor(who);
        amount = 1 + amount % 5 ether;
        vm.deal(a, a.balance + amount);
        vm.prank(a);
        vault.deposit{value: amount}(a);
        calls++;
    }

    function withdraw(uint256 who, uint256 amount) external {
        address a = _actor(who);
        vm.prank(a);
        vault.withdraw(1 + amount % 3 ether);
        calls++;
    }

    function lock(uint256 who, uint256 amount) external {
        vm.prank(_actor(who));
        vault.lock(1 + amount % 3 ether);
    }

    function unbond(uint256 who, uint256 amount) external {
        vm.prank(_actor(who));
        vault.unbond(1 + amount % 3 ether);
    }

    function claim(uint256 who) external {
        vm.prank(_actor(who));
        vault.claim();
    }

    function cancelUnbonding(uint256 who) external {
        vm.prank(_actor(who));
        vault.cancelUnbonding();
    }

    function register(uint256 who, uint256 src) external {
        address a = _provider(who);
        vm.prank(a);
        nexus.register(sources[src % 2], a, ENV_CPU);
    }

    function publish(uint256 who, uint256 src, uint256 payment, uint256 ttl) external {
        address a = _actor(who);
        vm.prank(a);
        controller.publishTask(
            TaskParams(sources[src % 2], "http://cfg", block.timestamp + 1 + ttl % 1 hours, 0.01 ether + payment % 1 ether)
        );
        Source s = Source(sources[src % 2]);
        tasks.push(s.tasks(s.getTaskCount() - 1));
        calls++;
    }

    function attempt(uint256 who, uint256 t) external {
        address a = _provider(who);
        vm.prank(a);
        nexus.attempt(_some(tasks, t), a, 0);
    }

    function submit(uint256 who, uint256 t, uint256 payment) external {
        address a = _provider(who);
        address task = _some(tasks, t);
        vm.prank(a);
        nexus.submitResponse(ResponseParams(task, a, string.concat("https://r/", vm_toString(calls++)), payment % 1 ether));
        responses.push(Task(task).responseOf(a));
    }

    function confirm(uint256 who, uint256 r) external {
        address response = _some(responses, r);
        (address task,,) = response == address(0) ? (address(0), address(0), 0) : Response(response).core();
        vm.prank(_clientOf(task, who));
        controller.confirmResponse(response);
    }

    function cancel(uint256 who, uint256 t) external {
        address task = _some(tasks, t);
        vm.prank(_clientOf(task, who));
        controller.cancelTask(task);
    }

    function reclaim(uint256 who, uint256 t) external {
        address task = _some(tasks, t);
        vm.prank(_clientOf(task, who));
        controller.reclaimExpired(task);
    }

    function sanction(uint256 who, uint256 amount) external {
        vm.prank(judge);
        vault.sanction(_actor(who), 1 + amount % 1 ether);
    }

    function waive(uint256 who, uint256 amount) external {
        vm.prank(judge);
        vault.waive(_actor(who), 1 + amount % 1 ether);
    }

    function warp(uint256 secs) external {
        vm.warp(block.timestamp + secs % 2 hours);
    }

    function vm_toString(uint256 v) private pure returns (string memory) {
        bytes memory b = "0";
        if (v > 0) b = "";
        while (v > 0) {
            b = abi.encodePacked(bytes1(uint8(48 + (v % 10))), b);
            v /= 10;
        }
        return string(b);
    }

    function actorCount() external view returns (uint256) {
        return actors.length;
    }

    function taskCount() external view returns (uint256) {
        return tasks.length;
    }
}

contract InvariantTest is Base {
    Handler handler;
    address[] accounts;

    function setUp() public {
        deployProtocol();
        address s0 = publishSource(DeliveryMethod.FIRST_RESPONSE);
        address s1 = publishSource(DeliveryMethod.MANUAL_CONFIRMATION);
        stakeAndRegister(provider, s0);
        stakeAndRegister(provider2, s1);
        fund(client, 50 ether);
        fund(client2, 50 ether);
        handler = new Handler(manager, terminal, nexus, vault, controller, s0, s1);
        manager.grantRole(manager.JUDGE(), address(handler));
        accounts = [client, client2, provider, provider2, master, stranger, judge, admin];
    }

    function targetContracts() public view returns (address[] memory out) {
        out = new address[](1);
        out[0] = address(handler);
    }

    /// The Vault's coin balance is exactly what its books owe.
    function invariantVaultIsSolvent() public view {
        uint256 owed = vault.sanctionedAmount();
        for (uint256 i = 0; i < accounts.length; i++) {
            address a = accounts[i];
            owed += vault.balanceOf(a) + vault.lockupOf(a) + vault.unbondingOf(a) + vault.frozenPayment(a);
        }
        assertEq(address(vault).balance, owed, "vault balance vs books");
    }

    /// Every task's escrow is either whole (not final) or settled (final): never half.
    function invariantEscrowMatchesTaskStatus() public view {
        uint256 n = handler.taskCount();
        uint256 frozen;
        for (uint256 i = 0; i < n; i++) {
            Task t = Task(handler.tasks(i));
            (, uint256 amount) = vault.escrowOf(address(t));
            TaskStatus s = t.getStatus();
            bool open = s == TaskStatus.NEW || s == TaskStatus.ATTEMPTED || s == TaskStatus.RESPONDED;
            assertEq(amount, open ? t.getPayment() : 0, "escrow vs status");
            frozen += amount;
        }
        uint256 books;
        for (uint256 i = 0; i < accounts.length; i++) books += vault.frozenPayment(accounts[i]);
        assertEq(frozen, books, "per-task escrows sum to frozenPayment");
    }
}
