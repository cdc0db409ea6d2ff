// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import "./Base.sol";

/// Drives random sequences of the protocol's money-moving calls from a fixed set of actors.
///
/// Each handler is steered: most of the time (7 in 8 by its first argument; cancel 1 in 4 and
/// cancelUnbonding 1 in 2, as they consume what the others need) it looks for a state in which its
/// call can succeed (a task in the right status, its client or a registered, eligible attempter, an
/// amount the account holds, a matured unbonding after warping to it) and makes that call; the rest
/// of the time, or when no such state exists, it makes the call with raw fuzzed inputs, which the
/// protocol mostly refuses (strangers, wrong states, payments above the task's, data that is no URL).
/// A refused call reverts the handler call (fail_on_revert = false), so forge's table shows, per
/// call kind, calls - reverts = successes; the `ok*` counters count the same successes (they are
/// only incremented after the call returned). `selectors()` weights the kinds.
contract Handler is Base {
    address[] public actors;
    address[3] public providers; // provider, provider2 and master (master must stake first)
    address[2] public sources; // FIRST_RESPONSE, MANUAL_CONFIRMATION
    address[] public tasks;
    address[] public responses;
    uint256 public nonce; // makes response URLs unique

    // Ghost books: coin into and out of the Vault through this handler, and payouts to providers.
    uint256 public deposited;
    uint256 public withdrawn;
    uint256 public paid;

    // Successful calls per kind.
    uint256 public okDeposit;
    uint256 public okWithdraw;
    uint256 public okLock;
    uint256 public okUnbond;
    uint256 public okClaim;
    uint256 public okCancelUnbonding;
    uint256 public okRegister;
    uint256 public okPublish;
    uint256 public okAttempt;
    uint256 public okSubmit; // all successful submitResponse calls
    uint256 public okSubmitPaid; // of which FIRST_RESPONSE (confirmed and paid in the same call)
    uint256 public okConfirm;
    uint256 public okCancel;
    uint256 public okReclaim;
    uint256 public okSanction;
    uint256 public okWaive;

    constructor(Manager m, Terminal t, Nexus n, Vault v, Controller c, address s0, address s1) {
        (manager, terminal, nexus, vault, controller) = (m, t, n, v, c);
        sources = [s0, s1];
        actors = [client, client2, provider, provider2, master, stranger];
        providers = [provider, provider2, master];
    }

    // ---- picking ----

    function _wild(uint256 seed) private pure returns (bool) {
        return seed % 8 == 7;
    }

    function _actor(uint256 seed) private view returns (address) {
        return actors[seed % actors.length];
    }

    /// The first actor from `seed` on for which `ok(actor)` holds, or address(0).
    function _findActor(uint256 seed, function(address) view returns (bool) ok) private view returns (address) {
        for (uint256 i = 0; i < actors.length; i++) {
            address a = actors[(seed + i) % actors.length];
            if (ok(a)) return a;
        }
        return address(0);
    }

    function _findProvider(uint256 seed, function(address) view returns (bool) ok) private view returns (address) {
        for (uint256 i = 0; i < providers.length; i++) {
            address a = providers[(seed + i) % providers.length];
            if (ok(a)) return a;
        }
        return address(0);
    }

    function _some(address[] storage list, uint256 seed) private view returns (address) {
        return list.length == 0 ? address(0) : list[seed % list.length];
    }

    function _status(address task) private view returns (TaskStatus) {
        return Task(task).getStatus();
    }

    function _isOpen(TaskStatus s) private pure returns (bool) {
        return s == TaskStatus.NEW || s == TaskStatus.ATTEMPTED || s == TaskStatus.RESPONDED;
    }

    /// Open to attempts and responses: not final, before expiry, and (FIRST_RESPONSE) not RESPONDED.
    function _acceptsWork(address task) private view returns (bool) {
        TaskStatus s = _status(task);
        if (!_isOpen(s) || block.timestamp >= Task(task).getExpiryTime()) return false;
        return s != TaskStatus.RESPONDED || Task(task).getDeliveryMethod() == DeliveryMethod.MANUAL_CONFIRMATION;
    }

    function _free(address a) private view returns (uint256) {
        uint256 locked = vault.lockupOf(a);
        uint256 needed = nexus.registrationCountOf(a) * vault.MIN_LOCKUP_PER_SOURCE();
        return locked > needed ? locked - needed : 0;
    }

    function _hasBalance(address a) private view returns (bool) {
        return vault.balanceOf(a) > 0;
    }

    function _canPublish(address a) private view returns (bool) {
        return vault.balanceOf(a) >= 0.01 ether;
    }

    function _hasFreeLockup(address a) private view returns (bool) {
        return _free(a) > 0;
    }

    function _isUnbonding(address a) private view returns (bool) {
        return vault.unbondingOf(a) > 0;
    }

    function _isSanctioned(address a) private view returns (bool) {
        return vault.sanctionOf(a) > 0;
    }

    function _holdings(address a) private view returns (uint256) {
        return vault.balanceOf(a) + vault.lockupOf(a) + vault.unbondingOf(a);
    }

    function _hasHoldings(address a) private view returns (bool) {
        return _holdings(a) > 0;
    }

    // ---- Vault ----

    function deposit(uint256 who, uint256 amount) external {
        address a = _actor(who);
        amount = 1 + amount % 5 ether;
        vm.deal(a, a.balance + amount);
        vm.prank(a);
        vault.deposit{value: amount}(a);
        deposited += amount;
        okDeposit++;
    }

    /// Steered: at most half of a balance, so that clients keep paying for tasks.
    function withdraw(uint256 who, uint256 amount) external {
        address a = _wild(who) ? address(0) : _findActor(who, _hasBalance);
        if (a == address(0)) {
            a = _actor(who);
            amount = 1 + amount % 3 ether;
        } else {
            amount = 1 + amount % (vault.balanceOf(a) / 2 + 1);
        }
        vm.prank(a);
        vault.withdraw(amount);
        withdrawn += amount;
        okWithdraw++;
    }

    function lock(uint256 who, uint256 amount) external {
        address a = _wild(who) ? address(0) : _findActor(who, _hasBalance);
        if (a == address(0)) {
            a = _actor(who);
            amount = 1 + amount % 3 ether;
        } else {
            amount = 1 + amount % vault.balanceOf(a);
        }
        vm.prank(a);
        vault.lock(amount);
        okLock++;
    }

    /// Steered: only lockup that no registration needs.
    function unbond(uint256 who, uint256 amount) external {
        address a = _wild(who) ? address(0) : _findActor(who, _hasFreeLockup);
        if (a == address(0)) {
            a = _actor(who);
            amount = 1 + amount % 3 ether;
        } else {
            amount = 1 + amount % _free(a);
        }
        vm.prank(a);
        vault.unbond(amount);
        okUnbond++;
    }

    /// Steered: an account with an unbonding; unless `early` (1 in 8), warps to its maturity first.
    function claim(uint256 who, uint256 early) external {
        address a = _wild(who) ? address(0) : _findActor(who, _isUnbonding);
        if (a == address(0)) {
            a = _actor(who);
        } else {
            uint256 due = vault.unbondingTimestamp(a);
            if (block.timestamp < due && early % 8 != 0) vm.warp(due);
        }
        vm.prank(a);
        vault.claim();
        okClaim++;
    }

    /// Steered half of the time (unbondings are for claiming).
    function cancelUnbonding(uint256 who) external {
        address a = who % 2 != 0 ? address(0) : _findActor(who, _isUnbonding);
        vm.prank(a == address(0) ? _actor(who) : a);
        vault.cancelUnbonding();
        okCancelUnbonding++;
    }

    /// Steered: at most what the account holds (a sanctioned provider is ineligible until waived).
    function sanction(uint256 who, uint256 amount) external {
        address a = _wild(who) ? address(0) : _findActor(who, _hasHoldings);
        if (a == address(0)) {
            a = _actor(who);
            amount = 1 + amount % 1 ether;
        } else {
            uint256 h = _holdings(a);
            amount = 1 + amount % (h < 1 ether ? h : 1 ether);
        }
        vm.prank(judge);
        vault.sanction(a, amount);
        okSanction++;
    }

    /// Steered: a sanctioned account (a provider first: sanctioned, it cannot work), all of its
    /// sanction three times in four.
    function waive(uint256 who, uint256 amount) external {
        address a = _wild(who) ? address(0) : _findProvider(who, _isSanctioned);
        if (a == address(0) && !_wild(who)) a = _findActor(who, _isSanctioned);
        if (a == address(0)) {
            a = _actor(who);
            amount = 1 + amount % 1 ether;
        } else {
            uint256 s = vault.sanctionOf(a);
            amount = amount % 4 != 0 ? s : 1 + amount % s;
        }
        vm.prank(judge);
        vault.waive(a, amount);
        okWaive++;
    }

    // ---- providers ----

    function register(uint256 who, uint256 src) external {
        address a = _wild(who) ? stranger : providers[who % providers.length];
        vm.prank(a);
        nexus.register(sources[src % 2], a, ENV_CPU);
        okRegister++;
    }

    /// Steered: an open task before expiry and a registered, eligible provider that has not
    /// attempted it yet.
    function attempt(uint256 who, uint256 t, uint256 suggested) external {
        (address task, address p) = _wild(who) ? (address(0), address(0)) : _findAttempt(who, t);
        if (task == address(0)) {
            task = _some(tasks, t);
            p = who % 8 == 7 ? stranger : providers[who % providers.length];
        }
        uint256 pay = task == address(0) ? 0 : Task(task).getPayment();
        vm.prank(p);
        nexus.attempt(task, p, suggested % (pay + 1));
        okAttempt++;
    }

    /// A NEW task first (a second attempter of a FIRST_RESPONSE task rarely gets to respond),
    /// then any.
    function _findAttempt(uint256 who, uint256 t) private view returns (address task, address p) {
        (task, p) = _findAttempt(who, t, true);
        if (task == address(0)) (task, p) = _findAttempt(who, t, false);
    }

    function _findAttempt(uint256 who, uint256 t, bool fresh) private view returns (address, address) {
        uint256 n = tasks.length;
        for (uint256 i = 0; i < n; i++) {
            address task = tasks[(t + i) % n];
            if (!_acceptsWork(task) || (fresh && _status(task) != TaskStatus.NEW)) continue;
            Source s = Source(Task(task).getSource());
            for (uint256 j = 0; j < providers.length; j++) {
                address p = providers[(who + j) % providers.length];
                if (s.registrantId(p) != 0 && vault.isEligible(p) && Task(task).attempterId(p) == 0) return (task, p);
            }
        }
        return (address(0), address(0));
    }

    /// Steered: an attempter that has not responded, on a task still accepting work. Wild: any
    /// task and provider, and now and then a payment above the task's or data that is no URL.
    function submit(uint256 who, uint256 t, uint256 payment) external {
        (address task, address p) = _wild(who) ? (address(0), address(0)) : _findSubmit(who, t);
        bool wild = task == address(0);
        if (wild) {
            task = _some(tasks, t);
            p = who % 8 == 7 ? stranger : providers[who % providers.length];
        }
        uint256 max = task == address(0) ? 0 : Task(task).getPayment();
        payment = wild && payment % 5 == 0 ? max + 1 : payment % (max + 1);
        string memory data = wild && payment % 7 == 0 ? "not a url" : string.concat("https://r/", _str(nonce++));
        vm.prank(p);
        nexus.submitResponse(ResponseParams(task, p, data, payment));
        responses.push(Task(task).responseOf(p));
        okSubmit++;
        if (Task(task).getDeliveryMethod() == DeliveryMethod.FIRST_RESPONSE) {
            okSubmitPaid++;
            paid += payment;
        }
    }

    /// A task not RESPONDED yet first (its response pays or awaits confirmation), then any.
    function _findSubmit(uint256 who, uint256 t) private view returns (address task, address p) {
        (task, p) = _findSubmit(who, t, true);
        if (task == address(0)) (task, p) = _findSubmit(who, t, false);
    }

    function _findSubmit(uint256 who, uint256 t, bool first) private view returns (address, address) {
        uint256 n = tasks.length;
        for (uint256 i = 0; i < n; i++) {
            address task = tasks[(t + i) % n];
            if (!_acceptsWork(task) || (first && _status(task) == TaskStatus.RESPONDED)) continue;
            for (uint256 j = 0; j < providers.length; j++) {
                address p = providers[(who + j) % providers.length];
                if (Task(task).attempterId(p) != 0 && Task(task).responseOf(p) == address(0)) return (task, p);
            }
        }
        return (address(0), address(0));
    }

    // ---- clients ----

    /// Steered: an actor with a balance, a payment it can escrow, an expiry within the source's
    /// maxExpiryDuration (an eighth of the tasks within the hour, the rest within three days).
    function publish(uint256 who, uint256 src, uint256 payment, uint256 ttl) external {
        address a = _wild(who) ? address(0) : _findActor(who, _canPublish);
        if (a == address(0)) {
            a = _actor(who);
            payment = 0.01 ether + payment % 1 ether;
            ttl = 1 + ttl % 4 days;
        } else {
            uint256 room = vault.balanceOf(a) - 0.01 ether;
            payment = 0.01 ether + payment % ((room < 1 ether ? room : 1 ether) + 1);
            ttl = ttl % 8 == 0 ? 1 + (ttl >> 3) % 1 hours : 1 hours + (ttl >> 3) % (3 days - 1 hours);
        }
        Source s = Source(sources[src % 2]);
        vm.prank(a);
        controller.publishTask(TaskParams(address(s), "http://cfg", block.timestamp + ttl, payment));
        tasks.push(s.tasks(s.getTaskCount() - 1));
        okPublish++;
    }

    /// Steered: a response whose task awaits confirmation, confirmed by the task's client.
    function confirm(uint256 who, uint256 r) external {
        address response = _wild(who) ? address(0) : _findConfirm(r);
        bool wild = response == address(0);
        if (wild) response = _some(responses, r);
        (address task,, uint256 payment) = response == address(0) ? (address(0), address(0), 0) : Response(response).core();
        vm.prank(wild ? _clientOr(task, who) : Task(task).getClient());
        controller.confirmResponse(response);
        paid += payment;
        okConfirm++;
    }

    function _findConfirm(uint256 r) private view returns (address) {
        uint256 n = responses.length;
        for (uint256 i = 0; i < n; i++) {
            address response = responses[(r + i) % n];
            (address task,,) = Response(response).core();
            if (_status(task) == TaskStatus.RESPONDED) return response;
        }
        return address(0);
    }

    /// Steered one time in four (NEW tasks are for attempting): a NEW task, canceled by its client.
    function cancel(uint256 who, uint256 t) external {
        address task = who % 4 != 0 ? address(0) : _findTask(t, _isNew);
        bool wild = task == address(0);
        if (wild) task = _some(tasks, t);
        vm.prank(wild ? _clientOr(task, who) : Task(task).getClient());
        controller.cancelTask(task);
        okCancel++;
    }

    /// Steered: an expired task not finalized, reclaimed by its client. When none has expired, a
    /// quarter of the time it warps to the expiry of an open task that expires within the hour.
    function reclaim(uint256 who, uint256 t) external {
        address task = _wild(who) ? address(0) : _findTask(t, _isExpiredOpen);
        if (task == address(0) && !_wild(who) && t % 4 == 0) {
            task = _findTask(t, _expiresSoon);
            if (task != address(0)) vm.warp(Task(task).getExpiryTime());
        }
        bool wild = task == address(0);
        if (wild) task = _some(tasks, t);
        vm.prank(wild ? _clientOr(task, who) : Task(task).getClient());
        controller.reclaimExpired(task);
        okReclaim++;
    }

    function _isNew(address task) private view returns (bool) {
        return _status(task) == TaskStatus.NEW;
    }

    function _expiresSoon(address task) private view returns (bool) {
        return _isOpen(_status(task)) && Task(task).getExpiryTime() <= block.timestamp + 1 hours;
    }

    function _isExpiredOpen(address task) private view returns (bool) {
        return _isOpen(_status(task)) && block.timestamp >= Task(task).getExpiryTime();
    }

    function _findTask(uint256 t, function(address) view returns (bool) ok) private view returns (address) {
        uint256 n = tasks.length;
        for (uint256 i = 0; i < n; i++) {
            address task = tasks[(t + i) % n];
            if (ok(task)) return task;
        }
        return address(0);
    }

    /// Mostly the task's own client, sometimes a stranger (who must be refused).
    function _clientOr(address task, uint256 seed) private view returns (address) {
        return task == address(0) || seed % 4 == 3 ? stranger : Task(task).getClient();
    }

    // ---- time ----

    /// Mostly minutes; an eighth of the time up to six hours (tasks expire, unbondings mature).
    function warp(uint256 secs) external {
        vm.warp(block.timestamp + (secs % 8 == 0 ? secs % 6 hours : secs % 30 minutes));
    }

    // ---- the mix ----

    /// The handler's call kinds, each repeated by its weight: forge picks uniformly from the list
    /// that `targetSelectors` returns (a repeated selector is picked that much more often), and
    /// the deterministic campaign uses the same list. A task's life takes a publish, an attempt, a
    /// submit and (MANUAL_CONFIRMATION) a confirm, so those weigh most.
    function selectors() external pure returns (bytes4[] memory s) {
        s = new bytes4[](31);
        uint256 i;
        i = _add(s, i, this.publish.selector, 4);
        i = _add(s, i, this.attempt.selector, 4);
        i = _add(s, i, this.submit.selector, 4);
        i = _add(s, i, this.confirm.selector, 3);
        i = _add(s, i, this.cancel.selector, 1);
        i = _add(s, i, this.reclaim.selector, 1);
        i = _add(s, i, this.deposit.selector, 2);
        i = _add(s, i, this.withdraw.selector, 1);
        i = _add(s, i, this.lock.selector, 1);
        i = _add(s, i, this.unbond.selector, 2);
        i = _add(s, i, this.claim.selector, 2);
        i = _add(s, i, this.cancelUnbonding.selector, 1);
        i = _add(s, i, this.register.selector, 1);
        i = _add(s, i, this.sanction.selector, 1);
        i = _add(s, i, this.waive.selector, 1);
        i = _add(s, i, this.warp.selector, 2);
        require(i == s.length, "selector weights");
    }

    function _add(bytes4[] memory s, uint256 i, bytes4 sel, uint256 weight) private pure returns (uint256) {
        for (uint256 k = 0; k < weight; k++) s[i++] = sel;
        return i;
    }

    // ---- reporting ----

    function _str(uint256 v) private pure returns (string memory) {
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

    function responseCount() external view returns (uint256) {
        return responses.length;
    }
}

/// forge prints console.log calls (hardhat's console address) with -vv; forge-std is unavailable.
library Console {
    address private constant CONSOLE = 0x000000000000000000636F6e736F6c652e6c6f67;

    function log(string memory label, uint256 value) internal view {
        (bool ok,) = CONSOLE.staticcall(abi.encodeWithSignature("log(string,uint256)", label, value));
        ok;
    }
}

contract InvariantTest is Base {
    Handler handler;
    address[] accounts;
    uint256 coinAtStart; // the Vault's coin once setUp has funded it

    function setUp() public {
        deployProtocol();
        // Sources whose tasks may live up to three days: some survive a warp past an unbonding.
        address s0 = _source(DeliveryMethod.FIRST_RESPONSE);
        address s1 = _source(DeliveryMethod.MANUAL_CONFIRMATION);
        stakeAndRegister(provider, s0);
        stakeAndRegister(provider2, s1);
        // Both providers on both sources, with lockup to spare for unbonding.
        _stake(provider, 5 ether);
        _stake(provider2, 5 ether);
        vm.prank(provider);
        nexus.register(s1, provider, ENV_CPU);
        vm.prank(provider2);
        nexus.register(s0, provider2, ENV_CPU);
        fund(client, 50 ether);
        fund(client2, 50 ether);
        // An hour of unbonding: the claim handler warps past it without expiring every task.
        vault.setMaxUnbondingPeriod(1 hours);
        handler = new Handler(manager, terminal, nexus, vault, controller, s0, s1);
        manager.grantRole(manager.JUDGE(), address(handler));
        accounts = [client, client2, provider, provider2, master, stranger, judge, admin];
        coinAtStart = address(vault).balance;
    }

    function _source(DeliveryMethod method) private returns (address) {
        SourceParams memory p = params(method);
        p.maxExpiryDuration = 3 days;
        vm.prank(client);
        nexus.publishSource(p);
        return nexus.sources(nexus.getSourceCount() - 1);
    }

    function _stake(address who, uint256 amount) private {
        vm.startPrank(who);
        vault.deposit{value: amount}(who);
        vault.lock(amount);
        vm.stopPrank();
    }

    function targetContracts() public view returns (address[] memory out) {
        out = new address[](1);
        out[0] = address(handler);
    }

    struct FuzzSelector {
        address addr;
        bytes4[] selectors;
    }

    /// The handler's kinds, weighted (see Handler.selectors).
    function targetSelectors() public view returns (FuzzSelector[] memory out) {
        out = new FuzzSelector[](1);
        out[0] = FuzzSelector(address(handler), handler.selectors());
    }

    /// The Vault's coin balance is exactly what its books owe, and exactly what came in less what
    /// went out.
    function invariantVaultIsSolvent() public view {
        _checkSolvent();
    }

    /// Every task's escrow is either whole (not final) or settled (final): never half; and the
    /// providers' earnings are exactly the payouts the handler saw succeed.
    function invariantEscrowMatchesTaskStatus() public view {
        _checkEscrows();
    }

    function _checkSolvent() private view {
        uint256 owed = vault.sanctionedAmount();
        for (uint256 i = 0; i < accounts.length; i++) {
            address a = accounts[i];
            owed += vault.balanceOf(a) + vault.lockupOf(a) + vault.unbondingOf(a) + vault.frozenPayment(a);
        }
        assertEq(address(vault).balance, owed, "vault balance vs books");
        assertEq(address(vault).balance, coinAtStart + handler.deposited() - handler.withdrawn(), "coin in - coin out");
    }

    function _checkEscrows() private view {
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
        uint256 earned;
        for (uint256 i = 0; i < accounts.length; i++) {
            books += vault.frozenPayment(accounts[i]);
            earned += vault.totalEarningsOf(accounts[i]);
        }
        assertEq(frozen, books, "per-task escrows sum to frozenPayment");
        assertEq(earned, handler.paid(), "earnings vs payouts");
    }

    /// The same handler, driven deterministically: 3,000 pseudo-random steps drawn from the same
    /// weighted mix as forge's campaign, the books checked every 50 steps. Each kind of money-moving
    /// call must succeed often; the counts are printed with -vv.
    function test_campaign_reaches_payouts() public {
        uint256 steps = 3000;
        bytes4[] memory mix = handler.selectors();
        for (uint256 i = 0; i < steps; i++) {
            uint256 r = uint256(keccak256(abi.encode(i, "campaign")));
            uint256 d = uint256(keccak256(abi.encode(r)));
            // Every handler takes at most four uint256 arguments; extra calldata is ignored.
            (bool ok,) = address(handler).call(abi.encodeWithSelector(mix[r % mix.length], r >> 8, r >> 72, r >> 136, d));
            ok; // refusals are expected
            if (i % 50 == 49) {
                _checkSolvent();
                _checkEscrows();
            }
        }
        _checkSolvent();
        _checkEscrows();
        Handler h = handler;
        Console.log("steps", steps);
        Console.log("tasks published", h.okPublish());
        Console.log("ok attempt", h.okAttempt());
        Console.log("ok submitResponse", h.okSubmit());
        Console.log("  of which FIRST_RESPONSE paid", h.okSubmitPaid());
        Console.log("ok confirmResponse", h.okConfirm());
        Console.log("ok cancelTask", h.okCancel());
        Console.log("ok reclaimExpired", h.okReclaim());
        Console.log("ok deposit", h.okDeposit());
        Console.log("ok withdraw", h.okWithdraw());
        Console.log("ok lock", h.okLock());
        Console.log("ok unbond", h.okUnbond());
        Console.log("ok claim", h.okClaim());
        Console.log("ok cancelUnbonding", h.okCancelUnbonding());
        Console.log("ok register", h.okRegister());
        Console.log("ok sanction", h.okSanction());
        Console.log("ok waive", h.okWaive());
        Console.log("wei paid to providers", h.paid());
        // Measured with these seeds: 363 published, 315 attempts, 269 submits (125 paid at once),
        // 138 confirms, 89 claims. The floors sit well below, well above "never".
        _atLeast(h.okPublish(), 200, "publishTask");
        _atLeast(h.okAttempt(), 180, "attempt");
        _atLeast(h.okSubmit(), 150, "submitResponse");
        _atLeast(h.okSubmitPaid(), 60, "submitResponse paid (FIRST_RESPONSE)");
        _atLeast(h.okConfirm(), 80, "confirmResponse");
        _atLeast(h.okCancel(), 10, "cancelTask");
        _atLeast(h.okReclaim(), 25, "reclaimExpired");
        _atLeast(h.okDeposit(), 100, "deposit");
        _atLeast(h.okWithdraw(), 50, "withdraw");
        _atLeast(h.okLock(), 50, "lock");
        _atLeast(h.okUnbond(), 90, "unbond");
        _atLeast(h.okClaim(), 50, "claim");
        _atLeast(h.okCancelUnbonding(), 15, "cancelUnbonding");
        _atLeast(h.okRegister(), 20, "register");
        _atLeast(h.okSanction(), 50, "sanction");
        _atLeast(h.okWaive(), 40, "waive");
        assertTrue(h.paid() > 0, "nothing paid to providers");
    }

    function _atLeast(uint256 got, uint256 floor, string memory what) private pure {
        if (got < floor) assertEq(got, floor, string.concat("too few successful ", what, " calls (got != floor)"));
    }
}
