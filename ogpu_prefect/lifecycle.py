"""`ogpu-prefect lifecycle`: a fresh devnet, one source and one task through the whole lifecycle with
each delivery method, printing every step, its gas, and the balances before and after."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .chain import devnet
from .chain.connection import Chain
from .chain.logs import created_address
from .chain.structs import ResponseParams, SourceParams, TaskParams
from .chain.tx import TxSender
from .chain.types import DeliveryMethod, Environment, TaskStatus
from .storage import LocalStore

ETHER = 10**18


def fmt(wei: int) -> str:
    return f"{wei / ETHER:,.4f} OGPU"


@dataclass
class Step:
    name: str
    gas: int


def run_lifecycle(
    chain: Chain, store: LocalStore, senders: dict[str, TxSender], method: DeliveryMethod, say: Callable[[str], None]
) -> list[Step]:
    """Publishes a source and one task under `method`, has provider(s) attempt and respond, and
    (MANUAL_CONFIRMATION) confirms the cheaper response. Returns the gas of each step."""
    client, p1, p2 = senders["client"], senders["provider1"], senders["provider2"]
    steps: list[Step] = []

    def step(name: str, sender: TxSender, call) -> object:  # type: ignore[no-untyped-def]
        receipt = sender.transact(call)
        steps.append(Step(name, receipt.gas_used))
        say(f"  {name:<34} gas {receipt.gas_used:>8,}  tx {receipt.tx_hash[:18]}…")
        return receipt

    now = chain.timestamp()
    metadata = store.put_json(
        {
            "name": f"echo ({method.name})",
            "description": "demo source",
            "logoUrl": "",
            "cpu": store.put_json({"services": {}}),
            "nvidia": "",
            "amd": "",
        }
    )
    params = SourceParams(
        client.address, metadata, int(Environment.CPU), 10**16, ETHER, 3600, deliveryMethod=method, lastUpdateTime=now
    )
    r = step("Nexus.publishSource", client, chain.nexus.publish_source(params))
    source = created_address(r, "SourcePublished", "source", chain.network.nexus)
    step("Nexus.register (provider1)", p1, chain.nexus.register(source, p1.address, int(Environment.CPU)))
    if method is DeliveryMethod.MANUAL_CONFIRMATION:
        step("Nexus.register (provider2)", p2, chain.nexus.register(source, p2.address, int(Environment.CPU)))

    config = store.put_json({"function_name": "echo", "data": {"text": "hello OpenGPU"}})
    payment = 10**17
    r = step(
        "Controller.publishTask", client, chain.controller.publish_task(TaskParams(source, config, now + 600, payment))
    )
    task = created_address(r, "TaskPublished", "task", chain.network.nexus)
    lifecycle = steps[-1].gas

    providers = [p1] if method is DeliveryMethod.FIRST_RESPONSE else [p1, p2]
    responses = {}
    for i, p in enumerate(providers, start=1):
        price = payment - (i - 1) * 2 * 10**16  # provider2 asks less
        lifecycle += step(f"Nexus.attempt (provider{i})", p, chain.nexus.attempt(task, p.address, price)).gas_used  # type: ignore[attr-defined]
    for i, p in enumerate(providers, start=1):
        price = payment - (i - 1) * 2 * 10**16
        data = store.put_json({"result": {"text": "hello OpenGPU"}, "provider": p.address})
        r = step(
            f"Nexus.submitResponse (provider{i})",
            p,
            chain.nexus.submit_response(ResponseParams(task, p.address, data, price)),
        )
        lifecycle += r.gas_used  # type: ignore[attr-defined]
        responses[p.address] = created_address(r, "ResponseSubmitted", "response", chain.network.nexus)
    if method is DeliveryMethod.MANUAL_CONFIRMATION:
        cheapest = responses[p2.address]
        lifecycle += step("Controller.confirmResponse", client, chain.controller.confirm_response(cheapest)).gas_used  # type: ignore[attr-defined]
    status = TaskStatus(chain.task(task).get_status())
    winner = chain.task(task).winning_provider()
    say(f"  task {task} -> {status.name}, winner {winner}")
    say(
        f"  lifecycle gas (publish + attempt(s) + submit(s){' + confirm' if len(providers) > 1 else ''}): {lifecycle:,}"
    )
    steps.append(Step("lifecycle total", lifecycle))
    return steps


def balances(chain: Chain, accounts: dict[str, str]) -> dict[str, tuple[int, int, int]]:
    reads = []
    for addr in accounts.values():
        reads += [
            chain.vault.read.balance_of(addr),
            chain.vault.read.frozen_payment(addr),
            chain.vault.read.total_earnings_of(addr),
        ]
    values = chain.read_many(reads)
    return {role: tuple(values[3 * i : 3 * i + 3]) for i, role in enumerate(accounts)}  # type: ignore[misc]


def print_balances(title: str, values: dict[str, tuple[int, int, int]], say: Callable[[str], None]) -> None:
    say(f"  {title}")
    for role, (bal, frozen, earned) in values.items():
        say(f"    {role:<10} vault balance {fmt(bal):>22}   escrow {fmt(frozen):>16}   earnings {fmt(earned):>16}")


def main(say: Callable[[str], None] = print, *, anvil: str | None = None) -> int:
    t0 = time.monotonic()
    say("Starting a devnet (anvil + OpenGPU contracts)…")
    net = devnet.start(anvil=anvil)
    try:
        say(f"  RPC {net.rpc_url}, chain id {devnet.CHAIN_ID}, deployed in {time.monotonic() - t0:.1f}s")
        for name in ("Nexus", "Controller", "Vault", "Terminal"):
            say(f"  {name:<10} {net.contracts[name]}")
        chain = Chain(net.network)
        senders = {role: chain.sender(net.key(role)) for role in ("client", "provider1", "provider2")}
        accounts = {role: s.address for role, s in senders.items()}
        with tempfile.TemporaryDirectory() as tmp, LocalStore(Path(tmp)) as store:
            for method in (DeliveryMethod.FIRST_RESPONSE, DeliveryMethod.MANUAL_CONFIRMATION):
                say(f"\n{method.name}")
                before = balances(chain, accounts)
                print_balances("before", before, say)
                run_lifecycle(chain, store, senders, method, say)
                after = balances(chain, accounts)
                print_balances("after", after, say)
                for role in accounts:
                    delta = after[role][0] - before[role][0]
                    say(f"    {role:<10} vault balance change {'+' if delta >= 0 else ''}{fmt(delta)}")
        say(f"\nDone in {time.monotonic() - t0:.1f}s.")
    finally:
        net.stop()
    return 0
