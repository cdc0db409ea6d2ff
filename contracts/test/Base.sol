// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import "../src/Types.sol";
import {Manager} from "../src/Manager.sol";
import {Terminal} from "../src/Terminal.sol";
import {Nexus} from "../src/Nexus.sol";
import {Vault} from "../src/Vault.sol";
import {Controller} from "../src/Controller.sol";
import {Source} from "../src/Source.sol";
import {Task} from "../src/Task.sol";
import {Response} from "../src/Response.sol";

/// The forge cheatcodes these tests use (forge-std is a git dependency, unavailable offline).
interface Vm {
    function prank(address) external;
    function startPrank(address) external;
    function stopPrank() external;
    function deal(address, uint256) external;
    function warp(uint256) external;
    function recordLogs() external;
    function label(address, string calldata) external;
}

/// Deploys and wires the protocol exactly as ogpu_prefect.chain.devnet does, with named actors.
abstract contract Base {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    Manager internal manager;
    Terminal internal terminal;
    Nexus internal nexus;
    Vault internal vault;
    Controller internal controller;

    address internal admin = address(this);
    address internal client = address(0xC11E);
    address internal client2 = address(0xC22E);
    address internal provider = address(0xB0B1);
    address internal provider2 = address(0xB0B2);
    address internal master = address(0x3A57);
    address internal judge = address(0x70D6);
    address internal stranger = address(0xBAD);

    uint256 internal constant MIN_LOCKUP = 1 ether;
    uint256 internal constant PAY = 0.1 ether;

    function deployProtocol() internal {
        vm.warp(1_700_000_000);
        manager = new Manager();
        terminal = new Terminal(address(manager), address(0));
        nexus = new Nexus(address(manager), address(terminal), address(0));
        vault = new Vault(address(manager), address(nexus), address(terminal));
        terminal.setVault(address(vault));
        nexus.setVault(address(vault));
        controller = new Controller(address(nexus), address(terminal), address(vault));
        SourceParams memory sp;
        TaskParams memory tp;
        ResponseParams memory rp;
        nexus.setImplementations(address(new Source(sp)), address(new Response(rp)));
        controller.setTaskImplementation(address(new Task(tp, DeliveryMethod.MANUAL_CONFIRMATION, address(nexus))));
        manager.grantRole(manager.CONTROLLER(), address(controller));
        manager.grantRole(manager.JUDGE(), judge);
        vault.setMinLockupPerSource(MIN_LOCKUP);
        vault.setMaxUnbondingPeriod(1 days);
        address[8] memory people = [client, client2, provider, provider2, master, judge, stranger, admin];
        for (uint256 i = 0; i < people.length; i++) vm.deal(people[i], 1000 ether);
    }

    function params(DeliveryMethod method) internal view returns (SourceParams memory p) {
        p.client = client;
        p.imageMetadataUrl = "http://127.0.0.1:8000/meta.json";
        p.imageEnvironments = ENV_CPU | ENV_NVIDIA;
        p.minPayment = 0.01 ether;
        p.minAvailableLockup = MIN_LOCKUP;
        p.maxExpiryDuration = 1 hours;
        p.deliveryMethod = method;
        p.lastUpdateTime = block.timestamp;
    }

    function publishSource(DeliveryMethod method) internal returns (address source) {
        vm.prank(client);
        nexus.publishSource(params(method));
        source = nexus.sources(nexus.getSourceCount() - 1);
    }

    function fund(address account, uint256 amount) internal {
        vm.prank(account);
        vault.deposit{value: amount}(account);
    }

    function stakeAndRegister(address who, address source) internal {
        vm.startPrank(who);
        vault.deposit{value: 5 ether}(who);
        vault.lock(5 ether);
        nexus.register(source, who, ENV_CPU);
        vm.stopPrank();
    }

    function publishTask(address source, uint256 payment) internal returns (address task) {
        vm.prank(client);
        controller.publishTask(TaskParams(source, "http://127.0.0.1:8000/task.json", block.timestamp + 600, payment));
        Source s = Source(source);
        task = s.tasks(s.getTaskCount() - 1);
    }

    function respond(address task, address who, uint256 payment, string memory data) internal returns (address) {
        vm.prank(who);
        nexus.submitResponse(ResponseParams(task, who, data, payment));
        return Task(task).responseOf(who);
    }

    // ---- assertions ----

    function assertEq(uint256 a, uint256 b, string memory what) internal pure {
        if (a != b) revert(string.concat(what, ": ", _u(a), " != ", _u(b)));
    }

    function assertEq(address a, address b, string memory what) internal pure {
        if (a != b) revert(string.concat(what, ": address mismatch"));
    }

    function assertTrue(bool ok, string memory what) internal pure {
        if (!ok) revert(what);
    }

    /// Calls `target` as `from` and requires a revert whose Error(string) reason contains `token`,
    /// or (token starting with "0x") whose custom-error selector is the 4 bytes given.
    function expectRevertToken(address from, address target, bytes memory data, string memory token) internal {
        vm.prank(from);
        (bool ok, bytes memory ret) = target.call(data);
        require(!ok, string.concat("expected revert containing ", token));
        require(_matches(ret, token), string.concat("revert did not contain ", token, ": ", _reason(ret)));
    }

    function expectRevertTokenValue(address from, address target, bytes memory data, uint256 value, string memory token)
        internal
    {
        vm.prank(from);
        (bool ok, bytes memory ret) = target.call{value: value}(data);
        require(!ok, string.concat("expected revert containing ", token));
        require(_matches(ret, token), string.concat("revert did not contain ", token, ": ", _reason(ret)));
    }

    function _matches(bytes memory ret, string memory token) private pure returns (bool) {
        if (bytes(token).length == 10 && bytes(token)[0] == "0" && bytes(token)[1] == "x") {
            return ret.length >= 4 && _hex4(ret) == keccak256(bytes(token));
        }
        return _contains(_reason(ret), token);
    }

    function _reason(bytes memory ret) internal pure returns (string memory) {
        if (ret.length < 68 || bytes4(ret) != 0x08c379a0) return "";
        bytes memory body = new bytes(ret.length - 4);
        for (uint256 i = 0; i < body.length; i++) body[i] = ret[i + 4];
        return abi.decode(body, (string));
    }

    function _hex4(bytes memory ret) private pure returns (bytes32) {
        bytes memory s = new bytes(10);
        bytes16 digits = "0123456789abcdef";
        s[0] = "0";
        s[1] = "x";
        for (uint256 i = 0; i < 4; i++) {
            s[2 + 2 * i] = digits[uint8(ret[i]) >> 4];
            s[3 + 2 * i] = digits[uint8(ret[i]) & 15];
        }
        return keccak256(s);
    }

    function _contains(string memory hay, string memory needle) private pure returns (bool) {
        bytes memory h = bytes(hay);
        bytes memory n = bytes(needle);
        if (n.length > h.length) return false;
        for (uint256 i = 0; i + n.length <= h.length; i++) {
            bool hit = true;
            for (uint256 j = 0; j < n.length; j++) {
                if (h[i + j] != n[j]) {
                    hit = false;
                    break;
                }
            }
            if (hit) return true;
        }
        return false;
    }

    function _u(uint256 v) private pure returns (string memory) {
        if (v == 0) return "0";
        bytes memory b;
        while (v > 0) {
            b = abi.encodePacked(bytes1(uint8(48 + (v % 10))), b);
            v /= 10;
        }
        return string(b);
    }
}
