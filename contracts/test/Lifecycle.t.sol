// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import "./Base.sol";

contract LifecycleTest is Base {
    function setUp() public {
        deployProtocol();
    }

    function testFirstResponsePaysInTheSubmitTransaction() public {
        address source = publishSource(DeliveryMethod.FIRST_RESPONSE);
        stakeAndRegister(provider, source);
        fund(client, 1 ether);
        address task = publishTask(source, PAY);
        assertEq(vault.balanceOf(client), 1 ether - PAY, "escrowed");
        assertEq(vault.frozenPayment(client), PAY, "frozen");
        assertTrue(Task(task).getStatus() == TaskStatus.NEW, "NEW");

        vm.prank(provider);
        nexus.attempt(task, provider, PAY);
        assertTrue(Task(task).getStatus() == TaskStatus.ATTEMPTED, "ATTEMPTED");
        assertEq(Task(task).getAttemptCount(), 1, "attempts");
        assertEq(Task(task).getAttempterId(provider), 1, "attempter id");

        address response = respond(task, provider, 0.08 ether, "https://ipfs.example/ipfs/QmResult");
        assertTrue(Task(task).getStatus() == TaskStatus.FINALIZED, "FINALIZED");
        assertTrue(Response(response).confirmedFinal(), "confirmed");
        assertEq(Task(task).winningProvider(), provider, "winner");
        assertEq(vault.balanceOf(provider), 0.08 ether, "provider paid its claim");
        assertEq(vault.totalEarningsOf(provider), 0.08 ether, "earnings");
        assertEq(vault.balanceOf(client), 1 ether - 0.08 ether, "rest back to client");
        assertEq(vault.frozenPayment(client), 0, "nothing frozen");
        (address t, address p, string memory data, uint256 pay) = Response(response).responseParams();
        assertEq(t, task, "response task");
        assertEq(p, provider, "response provider");
        assertEq(pay, 0.08 ether, "response payment");
        assertTrue(keccak256(bytes(data)) == keccak256("https://ipfs.example/ipfs/QmResult"), "data");
        assertTrue(Task(task).isAlreadySubmitted(keccak256(bytes(data))), "isAlreadySubmitted");

        expectRevertToken(provider2, address(nexus), abi.encodeCall(nexus.attempt, (task, provider2, 0)), "AlreadyFinalized");
    }

    function testManualConfirmationClientChoosesOne() public {
        address source = publishSource(DeliveryMethod.MANUAL_CONFIRMATION);
        stakeAndRegister(provider, source);
        stakeAndRegister(provider2, source);
        fund(client, 1 ether);
        address task = publishTask(source, PAY);
        vm.prank(provider);
        nexus.attempt(task, provider, PAY);
        vm.prank(provider2);
        nexus.attempt(task, provider2, 0.05 ether);
        address r1 = respond(task, provider, PAY, "https://x/1");
        assertTrue(Task(task).getStatus() == TaskStatus.RESPONDED, "RESPONDED");
        address r2 = respond(task, provider2, 0.05 ether, "https://x/2");
        address[] memory rs = Task(task).getResponsesOf(0, 1);
        assertEq(rs[0], r1, "aligned 0");
        assertEq(rs[1], r2, "aligned 1");

        expectRevertToken(stranger, address(controller), abi.encodeCall(controller.confirmResponse, (r2)), "NotOwner");
        vm.prank(client);
        controller.confirmResponse(r2);
        assertTrue(Task(task).getStatus() == TaskStatus.FINALIZED, "FINALIZED");
        assertEq(Task(task).winningProvider(), provider2, "winner");
        assertEq(vault.balanceOf(provider2), 0.05 ether, "paid");
        assertEq(vault.balanceOf(provider), 0, "loser unpaid");
        assertEq(vault.balanceOf(client), 1 ether - 0.05 ether, "refund of the rest");
        expectRevertToken(client, address(controller), abi.encodeCall(controller.confirmResponse, (r1)), "AlreadyFinalized");
        expectRevertToken(client, address(controller), abi.encodeCall(controller.confirmResponse, (r2)), "AlreadyConfirmed");
        assertTrue(Response(r2).confirmedFinal() && !Response(r1).confirmedFinal(), "derived response status");
    }

    function testCancelOnlyWhileNew() public {
        address source = publishSource(DeliveryMethod.FIRST_RESPONSE);
        stakeAndRegister(provider, source);
        fund(client, 1 ether);
        address task = publishTask(source, PAY);
        expectRevertToken(stranger, address(controller), abi.encodeCall(controller.cancelTask, (task)), "NotOwner");
        vm.prank(client);
        controller.cancelTask(task);
        assertTrue(Task(task).getStatus() == TaskStatus.CANCELED, "CANCELED");
        assertEq(vault.balanceOf(client), 1 ether, "refunded");
        expectRevertToken(client, address(controller), abi.encodeCall(controller.cancelTask, (task)), "NotCancelable");
        expectRevertToken(provider, address(nexus), abi.encodeCall(nexus.attempt, (task, provider, 0)), "AlreadyFinalized");

        address task2 = publishTask(source, PAY);
        vm.prank(provider);
        nexus.attempt(task2, provider, 0);
        expectRevertToken(client, address(controller), abi.encodeCall(controller.cancelTask, (task2)), "NotCancelable");
    }

    function testReclaimExpired() public {
        address source = publishSource(DeliveryMethod.MANUAL_CONFIRMATION);
        stakeAndRegister(provider, source);
        fund(client, 1 ether);
        address task = publishTask(source, PAY);
        vm.prank(provider);
        nexus.attempt(task, provider, 0);
        expectRevertToken(client, address(controller), abi.encodeCall(controller.reclaimExpired, (task)), "NotExpired");
        vm.warp(block.timestamp + 601);
        expectRevertToken(
            provider,
            address(nexus),
            abi.encodeCall(nexus.submitResponse, (ResponseParams(task, provider, "https://x", 0))),
            "Expired"
        );
        expectRevertToken(stranger, address(controller), abi.encodeCall(controller.reclaimExpired, (task)), "NotOwner");
        vm.prank(client);
        controller.reclaimExpired(task);
        assertTrue(Task(task).getStatus() == TaskStatus.EXPIRED, "EXPIRED");
        assertEq(vault.balanceOf(client), 1 ether, "escrow back");
        expectRevertToken(client, address(controller), abi.encodeCall(controller.reclaimExpired, (task)), "AlreadyFinalized");
    }

    function testPublishTaskValidation() public {
        address source = publishSource(DeliveryMethod.FIRST_RESPONSE);
        fund(client, 0.05 ether);
        string memory cfg = "http://c";
        uint256 t = block.timestamp;
        bytes4 sel = controller.publishTask.selector;
        expectRevertToken(client, address(controller), abi.encodeWithSelector(sel, TaskParams(stranger, cfg, t + 60, PAY)), "UnknownSource");
        expectRevertToken(client, address(controller), abi.encodeWithSelector(sel, TaskParams(source, cfg, t + 60, 0.001 ether)), "InvalidPayment");
        expectRevertToken(client, address(controller), abi.encodeWithSelector(sel, TaskParams(source, cfg, t, PAY)), "Expired");
        expectRevertToken(client, address(controller), abi.encodeWithSelector(sel, TaskParams(source, cfg, t + 2 hours, PAY)), "InvalidExpiry");
        expectRevertToken(client, address(controller), abi.encodeWithSelector(sel, TaskParams(source, cfg, t + 60, PAY)), "InsufficientBalance");
        vm.prank(client);
        nexus.inactivateSource(source);
        expectRevertToken(client, address(controller), abi.encodeWithSelector(sel, TaskParams(source, cfg, t + 60, 0.01 ether)), "SourceInactive");
        assertEq(vault.balanceOf(client), 0.05 ether, "no wei moved");
    }

    function testRegisterRules() public {
        address source = publishSource(DeliveryMethod.FIRST_RESPONSE);
        bytes4 sel = nexus.register.selector;
        expectRevertToken(provider, address(nexus), abi.encodeWithSelector(sel, source, provider, ENV_CPU), "InsufficientLockup");
        vm.startPrank(provider);
        vault.deposit{value: 1.5 ether}(provider);
        vault.lock(1.5 ether);
        vm.stopPrank();
        expectRevertToken(provider, address(nexus), abi.encodeWithSelector(sel, source, provider, ENV_AMD), "InvalidEnvironment");
        expectRevertToken(provider, address(nexus), abi.encodeWithSelector(sel, source, provider, ENV_CPU | ENV_NVIDIA), "InvalidEnvironment");
        expectRevertToken(provider, address(nexus), abi.encodeWithSelector(sel, stranger, provider, ENV_CPU), "UnknownSource");
        vm.prank(provider);
        nexus.register(source, provider, ENV_NVIDIA);
        assertEq(Source(source).getRegistrantId(provider), 1, "registrant id");
        assertTrue(Source(source).preferredEnvironmentOf(provider) == ENV_NVIDIA, "env");
        // A second source needs 2 x MIN_LOCKUP_PER_SOURCE.
        address source2 = publishSource(DeliveryMethod.FIRST_RESPONSE);
        expectRevertToken(provider, address(nexus), abi.encodeWithSelector(sel, source2, provider, ENV_CPU), "InsufficientLockup");
        // Unbonding below what the registrations need is refused.
        expectRevertToken(provider, address(vault), abi.encodeCall(vault.unbond, (1 ether)), "InsufficientLockup");
        vm.prank(provider);
        nexus.unregister(source, provider);
        assertEq(Source(source).getRegistrantCount(), 0, "unregistered");
        vm.prank(client);
        nexus.inactivateSource(source);
        expectRevertToken(provider, address(nexus), abi.encodeWithSelector(sel, source, provider, ENV_CPU), "SourceInactive");
    }

    function testMasterAndAgentActForProvider() public {
        address source = publishSource(DeliveryMethod.FIRST_RESPONSE);
        vm.prank(master);
        terminal.announceProvider{value: 2 ether}(provider, 2 ether);
        vm.prank(provider);
        terminal.announceMaster(master);
        assertEq(vault.lockupOf(provider), 2 ether, "funding locked for the provider");
        address agent = address(0xA6E);
        vm.prank(master);
        terminal.setAgent(agent, true);
        vm.prank(agent);
        nexus.register(source, provider, ENV_CPU);
        fund(client, 1 ether);
        address task = publishTask(source, PAY);
        vm.prank(master);
        nexus.attempt(task, provider, PAY);
        vm.prank(agent);
        nexus.submitResponse(ResponseParams(task, provider, "https://x/agent", PAY));
        assertEq(vault.balanceOf(provider), PAY, "provider paid");
        expectRevertToken(stranger, address(nexus), abi.encodeCall(nexus.register, (source, provider, ENV_CPU)), "NotProvider");
    }

    function testSubmitRules() public {
        address source = publishSource(DeliveryMethod.MANUAL_CONFIRMATION);
        stakeAndRegister(provider, source);
        stakeAndRegister(provider2, source);
        fund(client, 1 ether);
        address task = publishTask(source, PAY);
        bytes4 sel = nexus.submitResponse.selector;
        expectRevertToken(provider, address(nexus), abi.encodeWithSelector(sel, ResponseParams(task, provider, "https://x", 0)), "NotAttempted");
        vm.prank(provider);
        nexus.attempt(task, provider, 0);
        expectRevertToken(provider2, address(nexus), abi.encodeWithSelector(sel, ResponseParams(task, provider2, "https://x", 0)), "NotAttempted");
        expectRevertToken(provider, address(nexus), abi.encodeWithSelector(sel, ResponseParams(task, provider, "https://x", PAY + 1)), "InvalidPayment");
        expectRevertToken(provider, address(nexus), abi.encodeWithSelector(sel, ResponseParams(task, provider, "{\"result\":1}", 0)), "InvalidData");
        expectRevertToken(provider, address(nexus), abi.encodeWithSelector(sel, ResponseParams(stranger, provider, "https://x", 0)), "UnknownTask");
        respond(task, provider, 0, "https://x/same");
        expectRevertToken(provider, address(nexus), abi.encodeWithSelector(sel, ResponseParams(task, provider, "https://x/other", 0)), "AlreadySubmitted");
        vm.prank(provider2);
        nexus.attempt(task, provider2, 0);
        expectRevertToken(provider2, address(nexus), abi.encodeWithSelector(sel, ResponseParams(task, provider2, "https://x/same", 0)), "AlreadySubmitted");
        expectRevertToken(provider, address(nexus), abi.encodeCall(nexus.attempt, (task, provider, 0)), "AlreadyAttempted");
    }

    function testVaultStakeAndSanctions() public {
        fund(provider, 3 ether);
        vm.startPrank(provider);
        vault.lock(2 ether);
        vault.unbond(1 ether);
        vm.stopPrank();
        expectRevertToken(provider, address(vault), abi.encodeCall(vault.claim, ()), "UnbondingNotElapsed");
        vm.prank(provider);
        vault.cancelUnbonding();
        assertEq(vault.lockupOf(provider), 2 ether, "unbonding canceled");
        vm.prank(provider);
        vault.unbond(1 ether);
        vm.warp(block.timestamp + 1 days);
        vm.prank(provider);
        vault.claim();
        assertEq(vault.balanceOf(provider), 2 ether, "claimed");
        vm.prank(judge);
        vault.sanction(provider, 1.5 ether);
        assertEq(vault.lockupOf(provider), 0, "lockup taken first");
        assertEq(vault.balanceOf(provider), 1.5 ether, "then balance");
        assertTrue(!vault.isEligible(provider), "sanctioned is ineligible");
        vm.prank(judge);
        vault.waive(provider, 0.5 ether);
        assertEq(vault.sanctionOf(provider), 1 ether, "waived part");
        uint256 before = admin.balance;
        vault.withdrawSanctionOf(provider);
        assertEq(admin.balance - before, 1 ether, "sanction drawn by admin");
        assertEq(vault.sanctionedAmount(), 0, "no sanction left");
        expectRevertToken(provider, address(vault), abi.encodeCall(vault.withdraw, (100 ether)), "InsufficientBalance");
        expectRevertToken(provider, address(vault), abi.encodeCall(vault.lock, (100 ether)), "InsufficientBalance");
        expectRevertToken(provider, address(vault), abi.encodeCall(vault.unbond, (100 ether)), "InsufficientLockup");
    }

    function testPagedGettersAreInclusiveAndPanicPastTheEnd() public {
        address s1 = publishSource(DeliveryMethod.FIRST_RESPONSE);
        address s2 = publishSource(DeliveryMethod.FIRST_RESPONSE);
        address[] memory all = nexus.getSources(0, 1);
        assertEq(all.length, 2, "inclusive");
        assertEq(all[0], s1, "first");
        assertEq(all[1], s2, "second");
        expectRevertToken(stranger, address(nexus), abi.encodeCall(nexus.getSources, (0, 2)), "");
        fund(client, 1 ether);
        publishTask(s1, PAY);
        publishTask(s1, PAY);
        address[] memory ts = Source(s1).getTasks(1, 1);
        assertEq(ts.length, 1, "lower > 0 works here");
    }

    receive() external payable {}
}
