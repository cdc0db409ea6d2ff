// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import "./Base.sol";

/// Every state-changing function of every contract, called by someone not allowed to: it reverts.
/// (For permissionless calls, the caller lacks what the call needs: funds, an attempt, a role.)
contract AuthTest is Base {
    bytes32 internal constant ADMIN_ROLE = bytes32(0);
    string internal constant OWNABLE = "0x118cdaa7"; // OwnableUnauthorizedAccount(address)
    string internal constant ACCESS = "0xe2517d3f"; // AccessControlUnauthorizedAccount(address,bytes32)
    address source;
    address task;
    address response;

    function setUp() public {
        deployProtocol();
        source = publishSource(DeliveryMethod.MANUAL_CONFIRMATION);
        stakeAndRegister(provider, source);
        fund(client, 1 ether);
        task = publishTask(source, PAY);
        vm.prank(provider);
        nexus.attempt(task, provider, PAY);
        response = respond(task, provider, PAY, "https://x/r");
    }

    function testManager() public {
        bytes32 judgeRole = manager.JUDGE();
        expectRevertToken(stranger, address(manager), abi.encodeCall(manager.grantRole, (judgeRole, stranger)), ACCESS);
        expectRevertToken(stranger, address(manager), abi.encodeCall(manager.revokeRole, (judgeRole, judge)), ACCESS);
        expectRevertToken(stranger, address(manager), abi.encodeCall(manager.renounceRole, (judgeRole, judge)), "0x6697b232");
    }

    function testNexus() public {
        address n = address(nexus);
        SourceParams memory p = params(DeliveryMethod.FIRST_RESPONSE);
        expectRevertToken(stranger, n, abi.encodeCall(nexus.publishSource, (p)), "NotOwner");
        expectRevertToken(stranger, n, abi.encodeCall(nexus.updateSource, (source, p)), "NotOwner");
        expectRevertToken(stranger, n, abi.encodeCall(nexus.inactivateSource, (source)), "NotOwner");
        expectRevertToken(stranger, n, abi.encodeCall(nexus.register, (source, provider, ENV_CPU)), "NotProvider");
        expectRevertToken(stranger, n, abi.encodeCall(nexus.unregister, (source, provider)), "NotProvider");
        expectRevertToken(stranger, n, abi.encodeCall(nexus.attempt, (task, provider, 0)), "NotProvider");
        expectRevertToken(
            stranger, n, abi.encodeCall(nexus.submitResponse, (ResponseParams(task, provider, "https://y", 0))), "NotProvider"
        );
        expectRevertToken(stranger, n, abi.encodeCall(nexus.emitTaskPublished, (task, source)), "NotController");
        expectRevertToken(stranger, n, abi.encodeCall(nexus.setTaskStatus, (task, TaskStatus.FINALIZED)), "NotController");
        expectRevertToken(stranger, n, abi.encodeCall(nexus.setResponseStatus, (response, ResponseStatus.CONFIRMED)), "NotController");
        expectRevertToken(stranger, n, abi.encodeCall(nexus.setSourceStatus, (source, SourceStatus.INACTIVE)), OWNABLE);
        expectRevertToken(stranger, n, abi.encodeCall(nexus.sourceStatusChanged, (SourceStatus.INACTIVE)), "UnknownSource");
        expectRevertToken(stranger, n, abi.encodeCall(nexus.setManager, (stranger)), OWNABLE);
        expectRevertToken(stranger, n, abi.encodeCall(nexus.setTerminal, (stranger)), OWNABLE);
        expectRevertToken(stranger, n, abi.encodeCall(nexus.setVault, (stranger)), OWNABLE);
        expectRevertToken(stranger, n, abi.encodeCall(nexus.setImplementations, (stranger, stranger)), OWNABLE);
        expectRevertToken(stranger, n, abi.encodeCall(nexus.transferOwnership, (stranger)), OWNABLE);
        expectRevertToken(stranger, n, abi.encodeCall(nexus.renounceOwnership, ()), OWNABLE);
    }

    function testController() public {
        address c = address(controller);
        expectRevertToken(
            stranger, c, abi.encodeCall(controller.publishTask, (TaskParams(source, "http://c", block.timestamp + 60, PAY))),
            "InsufficientBalance"
        );
        expectRevertToken(stranger, c, abi.encodeCall(controller.confirmResponse, (response)), "NotOwner");
        expectRevertToken(stranger, c, abi.encodeCall(controller.cancelTask, (task)), "NotOwner");
        expectRevertToken(stranger, c, abi.encodeCall(controller.reclaimExpired, (task)), "NotOwner");
        expectRevertToken(stranger, c, abi.encodeCall(controller.setNexus, (stranger)), OWNABLE);
        expectRevertToken(stranger, c, abi.encodeCall(controller.setTerminal, (stranger)), OWNABLE);
        expectRevertToken(stranger, c, abi.encodeCall(controller.setVault, (stranger)), OWNABLE);
        expectRevertToken(stranger, c, abi.encodeCall(controller.setTaskImplementation, (stranger)), OWNABLE);
        expectRevertToken(stranger, c, abi.encodeCall(controller.transferOwnership, (stranger)), OWNABLE);
        expectRevertToken(stranger, c, abi.encodeCall(controller.renounceOwnership, ()), OWNABLE);
    }

    function testVault() public {
        address v = address(vault);
        expectRevertToken(stranger, v, abi.encodeCall(vault.deposit, (stranger)), "ZeroAmount");
        expectRevertToken(stranger, v, abi.encodeCall(vault.withdraw, (1)), "InsufficientBalance");
        expectRevertToken(stranger, v, abi.encodeCall(vault.lock, (1)), "InsufficientBalance");
        expectRevertToken(stranger, v, abi.encodeCall(vault.unbond, (1)), "InsufficientLockup");
        expectRevertToken(stranger, v, abi.encodeCall(vault.cancelUnbonding, ()), "NothingUnbonding");
        expectRevertToken(stranger, v, abi.encodeCall(vault.claim, ()), "NothingUnbonding");
        expectRevertTokenValue(stranger, v, abi.encodeCall(vault.lockFor, (stranger)), 1, "NotTerminal");
        expectRevertToken(stranger, v, abi.encodeCall(vault.freezePayment, (client, stranger, 1)), "NotController");
        expectRevertToken(stranger, v, abi.encodeCall(vault.processPayment, (client, stranger, task, 1)), "NotController");
        expectRevertToken(stranger, v, abi.encodeCall(vault.releasePayment, (client, task)), "NotController");
        expectRevertToken(stranger, v, abi.encodeCall(vault.forceReleasePayment, (client, task)), "NotAuthorized");
        expectRevertToken(stranger, v, abi.encodeCall(vault.sanction, (provider, 1)), "NotAuthorized");
        expectRevertToken(stranger, v, abi.encodeCall(vault.waive, (provider, 1)), "NotAuthorized");
        expectRevertToken(judge, v, abi.encodeCall(vault.withdrawSanctionOf, (provider)), "NotAuthorized");
        expectRevertToken(stranger, v, abi.encodeCall(vault.emergencyExit, (provider)), "NotAuthorized");
        expectRevertToken(stranger, v, abi.encodeCall(vault.setMaxUnbondingPeriod, (0)), "NotAuthorized");
        expectRevertToken(stranger, v, abi.encodeCall(vault.setMinLockupPerSource, (0)), "NotAuthorized");
        expectRevertToken(stranger, v, abi.encodeCall(vault.setTerminal, (stranger)), "NotAuthorized");
        expectRevertToken(stranger, v, abi.encodeCall(vault.setWhitelist, (stranger, true)), "NotAuthorized");
    }

    function testTerminal() public {
        address t = address(terminal);
        expectRevertToken(stranger, t, abi.encodeCall(terminal.announceMaster, (master)), "NotMaster");
        expectRevertTokenValue(stranger, t, abi.encodeCall(terminal.announceProvider, (provider, 2)), 1, "InvalidPayment");
        expectRevertToken(stranger, t, abi.encodeCall(terminal.removeProvider, (provider)), "NotMaster");
        expectRevertToken(stranger, t, abi.encodeCall(terminal.removeContainer, (provider, source)), "NotMaster");
        vm.prank(master);
        terminal.announceProvider(provider2, 0);
        vm.prank(provider2);
        terminal.announceMaster(master);
        expectRevertToken(provider2, t, abi.encodeCall(terminal.setAgent, (stranger, true)), "NotMaster");
        expectRevertToken(stranger, t, abi.encodeCall(terminal.setBaseData, ("https://b")), "NotProvider");
        expectRevertToken(stranger, t, abi.encodeCall(terminal.setLiveData, ("https://l")), "NotProvider");
        expectRevertToken(stranger, t, abi.encodeCall(terminal.setDefaultAgentDisabled, (true)), "NotProvider");
        expectRevertToken(stranger, t, abi.encodeCall(terminal.setManager, (stranger)), OWNABLE);
        expectRevertToken(stranger, t, abi.encodeCall(terminal.setVault, (stranger)), OWNABLE);
        expectRevertToken(stranger, t, abi.encodeCall(terminal.transferOwnership, (stranger)), OWNABLE);
        expectRevertToken(stranger, t, abi.encodeCall(terminal.renounceOwnership, ()), OWNABLE);
    }

    function testSource() public {
        Source s = Source(source);
        SourceParams memory p = params(DeliveryMethod.FIRST_RESPONSE);
        expectRevertToken(client, source, abi.encodeCall(s.initialize, (p)), "NotNexus");
        expectRevertToken(client, source, abi.encodeCall(s.publishTask, (stranger)), "NotNexus");
        expectRevertToken(client, source, abi.encodeCall(s.register, (stranger, ENV_CPU)), "NotNexus");
        expectRevertToken(client, source, abi.encodeCall(s.unregister, (provider)), "NotNexus");
        expectRevertToken(client, source, abi.encodeCall(s.setSourceParams, (p)), "NotNexus");
        expectRevertToken(stranger, source, abi.encodeCall(s.setStatus, (SourceStatus.INACTIVE)), OWNABLE);
        expectRevertToken(client, source, abi.encodeCall(s.setStatus, (SourceStatus.ACTIVE)), "NotOwner");
        expectRevertToken(stranger, source, abi.encodeCall(s.transferOwnership, (stranger)), OWNABLE);
        expectRevertToken(stranger, source, abi.encodeCall(s.renounceOwnership, ()), OWNABLE);
        expectRevertToken(client, source, abi.encodeCall(s.transferOwnership, (stranger)), "FixedOwner");
        // The client's direct route works and reaches the Nexus' bookkeeping.
        vm.prank(client);
        s.setStatus(SourceStatus.INACTIVE);
        assertEq(nexus.getActiveSourceCount(client), 0, "active count follows");
    }

    function testTask() public {
        Task k = Task(task);
        expectRevertToken(client, task, abi.encodeCall(k.attempt, (stranger)), "NotNexus");
        expectRevertToken(client, task, abi.encodeCall(k.submitResponse, (stranger, provider)), "NotNexus");
        expectRevertToken(client, task, abi.encodeCall(k.setStatus, (TaskStatus.FINALIZED)), "NotNexus");
        expectRevertToken(client, task, abi.encodeCall(k.finalize, (provider)), "NotNexus");
        expectRevertToken(client, task, abi.encodeCall(k.transferOwnership, (stranger)), OWNABLE);
        expectRevertToken(client, task, abi.encodeCall(k.renounceOwnership, ()), OWNABLE);
    }

    function testResponse() public {
        Response r = Response(response);
        expectRevertToken(provider, response, abi.encodeCall(r.confirm, ()), "NotNexus");
        expectRevertToken(provider, response, abi.encodeCall(r.setStatus, (ResponseStatus.CONFIRMED)), "NotNexus");
        expectRevertToken(provider, response, abi.encodeCall(r.transferOwnership, (stranger)), OWNABLE);
        expectRevertToken(provider, response, abi.encodeCall(r.renounceOwnership, ()), OWNABLE);
    }
}
