"""One pipelined publication of tasks (`OGPUClient.publish_tasks` checks, then runs one).

This thread writes the configs and signs a chunk's transactions while a second thread sends, in
nonce order, everything signed since its last send (bigger batches when the node is the
bottleneck: anvil mines fewer, fuller blocks); then receipts are read in bulk. Whatever was sent is
awaited even when a later step fails, and such a failure names what landed (PartialPublishError).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from .chain.connection import Chain
from .chain.errors import EscrowHeldError, InvalidInputError
from .chain.logs import created_address
from .chain.structs import TaskParams
from .chain.tx import SUPERSEDED, PendingTx, Receipt, TxSender
from .fetching import StorageError, fetch_json
from .lease import LeaseLostError, current_lease
from .models import PublishedTask
from .storage import PayloadStore, put_many

log = logging.getLogger(__name__)

PUBLISH_CHUNK = 128
"""Tasks whose transactions are signed together, and whose configs a network store writes
together, while the previous chunk is sent (a local store writes every config first)."""
AWAIT_SLICE = 1000
"""Published tasks whose receipts are awaited and read together."""


class PartialPublishError(EscrowHeldError):
    """Publishing stopped after some tasks were on chain: `published` (= `tasks`) lists them,
    `__cause__` says why it stopped."""

    @property
    def published(self) -> list[PublishedTask]:
        return self.tasks


def check_readable(url: str, body: bytes) -> None:
    """A config just written must be readable at the URL providers will be given, and be what
    was written: otherwise every task's escrow would sit frozen until its expiry, since no
    provider can serve it. InvalidInputError naming `storage.read_url`."""
    try:
        found = fetch_json(url)
    except StorageError as e:
        raise InvalidInputError(
            "storage.read_url", f"a config written to the storage cannot be read back at {url[:200]}: {e}"
        ) from None
    if found != json.loads(body):
        raise InvalidInputError("storage.read_url", f"{url[:200]} does not serve the config written there")


class Publication:
    """One publishing pass of a client (OGPUClient.publish_tasks): what it needs of the client is
    given, so this module does not depend on it."""

    def __init__(
        self,
        chain: Chain,
        sender: TxSender,
        store: PayloadStore,
        source: str,
        payment: int,
        expiry_time: int,
        indexes: Sequence[int],
    ) -> None:
        self.chain, self.sender, self.store = chain, sender, store
        self.source, self.payment, self.expiry_time, self.indexes = source, payment, expiry_time, indexes

    def run(self, bodies: list[bytes], existing: dict[str, Any]) -> list[PublishedTask]:
        """Publishes one task per config body (reusing `existing`: config URL -> its task on
        chain); returns them in order."""
        store = self.store
        out: dict[int, PublishedTask] = {}
        # A nonce of ours taken by another sender of the key may have gone to this very task (a
        # killed run's last broadcasts, landing after this run read the chain): the sender asks
        # before signing such a transaction again (_published_meanwhile).
        self.first_block, self.out, self.meta = self.chain.block_number(), out, {}
        sender = self.sender
        previous, sender.superseded = sender.superseded, self._published_meanwhile
        sent: list[tuple[int, str, float, PendingTx]] = []
        # Pipelined: this thread signs a chunk's transactions (and writes its configs, for a
        # network store) while a second thread sends, in nonce order, everything signed since its
        # last send (bigger batches when the node is the bottleneck: anvil mines fewer, fuller
        # blocks). Writes stay on this thread: a third (writer) thread measured no faster here.
        sending = ThreadPoolExecutor(1, thread_name_prefix="ogpu-send")
        ready: list[tuple[int, str, PendingTx]] = []
        in_flight: tuple[Future[None], list[tuple[int, str, float, PendingTx]]] | None = None

        def flush(block: bool) -> None:  # sends what is ready unless a send is under way
            nonlocal in_flight
            if in_flight is not None and (block or in_flight[0].done()):
                future, batch = in_flight
                in_flight = None
                future.result()
                sent.extend(batch)
            if in_flight is None and ready:
                sent_at = time.time()
                batch = [(i, url, sent_at, p) for i, url, p in ready]
                ready.clear()
                in_flight = (sending.submit(self.sender.broadcast, [p for *_, p in batch]), batch)

        # Local files are all written before the send thread starts (~15 us each): a file create
        # releases the GIL, and getting it back from a busy send thread costs up to a switch
        # interval (5 ms). Network stores write a chunk at a time, in parallel with the sends.
        lease = current_lease()
        write_ahead = len(bodies) if not getattr(store, "parallel", True) else PUBLISH_CHUNK
        urls: list[str] = []
        gas: int | None = None
        failure: BaseException | None = None
        try:
            # The key's lock from the first nonce to the last broadcast: no other sender of this
            # key on this machine takes our nonces meanwhile (chain/nonces.py).
            with self.sender.exclusive():
                for start in range(0, len(bodies), PUBLISH_CHUNK):
                    span = range(start, min(start + PUBLISH_CHUNK, len(bodies)))
                    if len(urls) < span.stop:
                        urls += put_many(store, bodies[len(urls) : len(urls) + write_ahead])
                    todo = []
                    for i in span:
                        found = existing.get(urls[i])
                        if found is not None:
                            out[i] = PublishedTask(
                                index=self.indexes[i],
                                address=found.address,
                                source=self.source,
                                payment=found.payment,
                                expiry_time=found.expiry_time,
                                config_url=urls[i],
                                tx_hash=found.tx_hash,
                                published_at=time.time(),
                            )
                        else:
                            todo.append((i, urls[i]))
                    if not todo:
                        continue
                    if gas is None:  # once, before the first transaction is signed
                        check_readable(todo[0][1], bodies[todo[0][0]])
                    calls = [
                        self.chain.controller.publish_task(TaskParams(self.source, url, self.expiry_time, self.payment))
                        for _, url in todo
                    ]
                    if gas is None:
                        gas = self.sender.estimate(calls[:1])[0]  # same shape for all: one estimate serves
                    if lease is not None:  # the batch's fence (lease.py): never publish on a lapsing lease
                        lease.check()
                    signed = self.sender.sign(calls, gas)
                    if lease is not None:
                        lease.record_nonces(self.sender.address, max(p.nonce for p in signed))
                    self.meta.update({id(p): (i, url) for (i, url), p in zip(todo, signed)})
                    ready += [(i, url, p) for (i, url), p in zip(todo, signed)]
                    flush(block=False)
                while ready or in_flight is not None:
                    flush(block=True)
        except BaseException as e:
            failure = e
            self.sender.resync_nonce()  # transactions signed but never sent leave a gap in the local nonces
        finally:  # even when a later step fails, what was sent is awaited: nothing left in flight
            if in_flight is not None and in_flight[0].exception() is None:
                sent.extend(in_flight[1])
            sending.shutdown()
        try:
            reverted = self._await(sent, out)
        except Exception as e:  # sent, but their outcome unknown: a reconciling retry finds them
            sender.superseded = previous
            landed = [out[i] for i in sorted(out)]
            raise PartialPublishError(
                f"{len(sent)} publishTask transaction(s) were sent but their receipts could "
                f"not be read ({e}); a retry with the same marks finds what landed",
                landed,
            ) from (failure or e)
        sender.superseded = previous
        landed = [out[i] for i in sorted(out)]
        if failure is not None:
            if landed and isinstance(failure, Exception):
                raise PartialPublishError(
                    f"publishing stopped after {len(landed)} of {len(bodies)} task(s) were published: {failure}", landed
                ) from failure
            raise failure
        if reverted is not None:
            error = self.sender.explain(reverted)
            if landed:
                raise PartialPublishError(
                    f"{error} ({len(landed)} of {len(bodies)} task(s) published)", landed
                ) from error
            raise error
        if missing := [i for i in range(len(bodies)) if i not in out]:  # lost nonces, not signed again
            raise PartialPublishError(
                f"{len(missing)} of {len(bodies)} input(s) lost their nonces while the batch's lease may have "
                "lapsed and were not signed again; the run that holds the batch now publishes them",
                landed,
            ) from LeaseLostError("lease not surely held")
        return [out[i] for i in range(len(bodies))]

    def _await(self, sent: list[tuple[int, str, float, PendingTx]], out: dict[int, PublishedTask]) -> Receipt | None:
        """Waits for every sent publishTask, a slice at a time (a receipt is kept only until its
        task address is read: 10,000 receipts with their logs are ~30 MB), into `out`. Returns
        the first reverted receipt, once all are in: nothing is left unaccounted for."""
        reverted = None
        for start in range(0, len(sent), AWAIT_SLICE):
            part = sent[start : start + AWAIT_SLICE]
            for (i, url, sent_at, _), receipt in zip(part, self.sender.wait([p for *_, p in part], check=False)):
                if receipt.status == SUPERSEDED:  # out[i] is the task another sender published
                    continue
                if receipt.status != 1:
                    reverted = reverted or receipt
                    continue
                task = created_address(receipt, "TaskPublished", "task", self.chain.network.nexus)
                out[i] = PublishedTask(
                    index=self.indexes[i],
                    address=task,
                    source=self.source,
                    payment=self.payment,
                    expiry_time=self.expiry_time,
                    config_url=url,
                    tx_hash=receipt.tx_hash,
                    published_at=sent_at,
                )
        return reverted

    def _published_meanwhile(self, lost: list[PendingTx]) -> list[PendingTx]:
        """Of `lost` (their nonces went to other transactions of the key), those whose config is
        on chain already, published since this publication began: their tasks go into `out`;
        the sender does not sign them again."""
        from .reconcile import find_published

        mine = [(p, self.meta[id(p)]) for p in lost if id(p) in self.meta]
        if not mine:
            return []
        found = find_published(self.chain, self.sender.address, self.source, self.first_block)
        done = []
        for p, (i, url) in mine:
            if url in found:
                t = found[url][0]
                self.out[i] = PublishedTask(
                    index=self.indexes[i],
                    address=t.address,
                    source=self.source,
                    payment=t.payment,
                    expiry_time=t.expiry_time,
                    config_url=url,
                    tx_hash=t.tx_hash,
                    published_at=time.time(),
                )
                done.append(p)
        if done:
            log.warning("%d task(s) were published meanwhile by another sender of the key: not again", len(done))
        lease = current_lease()
        if lease is not None and not lease.surely_held():
            # Signing again takes fresh nonces past the mark the next holder waits for: a holder
            # whose lease may have lapsed leaves these inputs to it (the fence, lease.py).
            log.warning(
                "%d transaction(s) lost their nonce while the batch's lease may have lapsed: not signed again",
                len(lost),
            )
            return list(lost)
        return done
