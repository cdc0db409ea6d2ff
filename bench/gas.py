"""Gas of every lifecycle step, on a fresh devnet, through the chain layer (`Chain`, each step one
`TxSender.transact`, its receipt's `gas_used`).

Replays contracts/tools/measure_gas.py's walk (which uses raw legacy transactions and no
ogpu_prefect) with our own stack: from the devnet's funded state, rolled back to it before each
delivery method, one provider and the same URL lengths (a 28-byte metadata and config URL, a
68-byte response URL), so the figures compare with contracts/README.md's table:

- per delivery method (FIRST_RESPONSE, MANUAL_CONFIRMATION): publishSource, register, then a
  source's first task and the next one: publishTask, attempt, submitResponse (+ confirmResponse);
- the other steps: cancelTask, reclaimExpired (after the expiry), unregister, and the Vault's
  deposit, lock, unbond, cancelUnbonding, claim (after the unbonding period) and withdraw.

    .venv/bin/python bench/gas.py    (--smoke: the same walk; it takes seconds already)

Ends with `total_gas=<FIRST_RESPONSE lifecycle + MANUAL lifecycle, each a source's first task
(publishTask + attempt + submitResponse, + confirmResponse for MANUAL), one provider>`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _smoke import parse_args  # noqa: E402

from ogpu_prefect.chain import devnet as devnet_mod  # noqa: E402
from ogpu_prefect.chain.connection import Chain  # noqa: E402
from ogpu_prefect.chain.logs import created_address  # noqa: E402
from ogpu_prefect.chain.structs import ResponseParams, SourceParams, TaskParams  # noqa: E402
from ogpu_prefect.chain.types import DeliveryMethod, Environment  # noqa: E402

ETHER = 10**18
META, CONFIG = "http://127.0.0.1:9/meta.json", "http://127.0.0.1:9/task.json"  # 28 bytes each, as measure_gas.py


def main() -> None:
    parse_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    net = devnet_mod.start()
    rows: list[tuple[str, str, int]] = []  # (group, step, gas)
    lifecycles: dict[str, dict[str, int]] = {}
    try:
        funded = net.snapshot()
        for method in (DeliveryMethod.FIRST_RESPONSE, DeliveryMethod.MANUAL_CONFIRMATION):
            net.revert(funded)
            funded = net.snapshot()  # a snapshot is used up by its revert
            chain = Chain(net.network)
            client, p1 = chain.sender(net.key("client")), chain.sender(net.key("provider1"))
            group = method.name

            def step(name: str, sender, call, group: str = group) -> object:  # type: ignore[no-untyped-def]
                receipt = sender.transact(call)
                rows.append((group, name, receipt.gas_used))
                print(f"  {group:<20} {name:<40} {receipt.gas_used:>9,}")
                return receipt

            params = SourceParams(
                client.address, META, 3, 10**16, ETHER, 3600, deliveryMethod=method, lastUpdateTime=chain.timestamp()
            )
            r = step("Nexus.publishSource", client, chain.nexus.publish_source(params))
            source = created_address(r, "SourcePublished", "source", chain.network.nexus)
            step("Nexus.register", p1, chain.nexus.register(source, p1.address, int(Environment.CPU)))
            for which in ("first task", "next task"):
                before = len(rows)
                r = step(
                    f"Controller.publishTask ({which})",
                    client,
                    chain.controller.publish_task(TaskParams(source, CONFIG, chain.timestamp() + 600, 10**17)),
                )
                task = created_address(r, "TaskPublished", "task", chain.network.nexus)
                step(f"Nexus.attempt ({which})", p1, chain.nexus.attempt(task, p1.address, 10**17))
                url = f"https://ipfs.example/ipfs/{task}"  # 68 bytes, as measure_gas.py
                r = step(
                    f"Nexus.submitResponse ({which})",
                    p1,
                    chain.nexus.submit_response(ResponseParams(task, p1.address, url, 9 * 10**16)),
                )
                if method is DeliveryMethod.MANUAL_CONFIRMATION:
                    response = created_address(r, "ResponseSubmitted", "response", chain.network.nexus)
                    step(f"Controller.confirmResponse ({which})", client, chain.controller.confirm_response(response))
                lifecycles.setdefault(group, {})[which] = sum(g for _, _, g in rows[before:])
                print(f"  {group:<20} {'lifecycle (' + which + ')':<40} {lifecycles[group][which]:>9,}")

        # The other steps, continuing from the MANUAL state.
        chain = Chain(net.network)
        client, p1, p2 = (chain.sender(net.key(r)) for r in ("client", "provider1", "provider2"))
        group = "other"

        def other(name: str, sender, call) -> object:  # type: ignore[no-untyped-def]
            receipt = sender.transact(call)
            rows.append((group, name, receipt.gas_used))
            print(f"  {group:<20} {name:<40} {receipt.gas_used:>9,}")
            return receipt

        def advance(seconds: int) -> None:
            chain.rpc.call("evm_increaseTime", [seconds])
            chain.rpc.call("evm_mine")

        params = SourceParams(
            client.address,
            META,
            3,
            10**16,
            ETHER,
            3600,
            deliveryMethod=DeliveryMethod.FIRST_RESPONSE,
            lastUpdateTime=chain.timestamp(),
        )
        source = created_address(
            client.transact(chain.nexus.publish_source(params)), "SourcePublished", "source", chain.network.nexus
        )
        p1.transact(chain.nexus.register(source, p1.address, int(Environment.CPU)))

        def publish(expiry_in: int) -> str:
            r = client.transact(
                chain.controller.publish_task(TaskParams(source, CONFIG, chain.timestamp() + expiry_in, 10**17))
            )
            return created_address(r, "TaskPublished", "task", chain.network.nexus)

        other("Controller.cancelTask (NEW task)", client, chain.controller.cancel_task(publish(600)))
        task = publish(60)
        p1.transact(chain.nexus.attempt(task, p1.address, 10**17))
        advance(61)
        other("Controller.reclaimExpired (attempted)", client, chain.controller.reclaim_expired(task))
        other("Nexus.unregister", p1, chain.nexus.unregister(source, p1.address))
        other("Vault.deposit", p2, chain.vault.deposit(p2.address, value=ETHER))
        other("Vault.lock", p2, chain.vault.lock(ETHER))
        other("Vault.unbond", p2, chain.vault.unbond(ETHER))
        other("Vault.cancelUnbonding", p2, chain.vault.cancel_unbonding())
        other("Vault.unbond (again)", p2, chain.vault.unbond(ETHER))
        advance(61)  # the devnet's unbonding period is 60 s
        other("Vault.claim", p2, chain.vault.claim())
        other("Vault.withdraw", p2, chain.vault.withdraw(ETHER))
    finally:
        net.stop()

    fr, manual = lifecycles["FIRST_RESPONSE"], lifecycles["MANUAL_CONFIRMATION"]
    print(
        f"lifecycle FIRST_RESPONSE (publishTask + attempt + submitResponse): {fr['first task']:,} a source's "
        f"first task, {fr['next task']:,} the next"
    )
    print(
        f"lifecycle MANUAL (publishTask + attempt + submitResponse + confirmResponse): {manual['first task']:,} "
        f"a source's first task, {manual['next task']:,} the next"
    )
    print(f"total_gas={fr['first task'] + manual['first task']}")


if __name__ == "__main__":
    main()
