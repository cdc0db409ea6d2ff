"""Submitting finished tasks' responses in pipelined batches (a Provider's)."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

from ..chain.connection import Chain
from ..chain.logs import created_address
from ..chain.structs import ResponseParams
from ..chain.tx import TxSender
from ..chain.types import TaskStatus
from .outcomes import Executed, ProviderError, TaskTakenError

CheckOpen = Callable[[str, TaskStatus, int], None]
"""Raises TaskTakenError when a task (its status, its expiry) no longer takes our response."""

log = logging.getLogger(__name__)


class Responder:
    """Submits finished tasks' responses in pipelined batches: whatever is ready when the previous
    batch is mined goes out together (one fee query, one send, bulk receipt polling), so a burst
    of results costs a few round trips instead of a few per task. Each caller gets a future."""

    MAX_BATCH = 256

    def __init__(self, chain: Chain, sender: TxSender, provider: str, check_open: CheckOpen) -> None:
        """`provider`: the address the responses are from (the sender's own, or the provider it is
        an agent of)."""
        self.chain, self.sender, self.provider, self.check_open = chain, sender, provider, check_open
        self._queue: queue.Queue[tuple[str, str, int, int, Future[Executed]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="ogpu-responder", daemon=True)
        self._thread.start()

    def submit(self, task: str, url: str, payment: int, expiry: int) -> Future[Executed]:
        future: Future[Executed] = Future()
        self._queue.put((task, url, payment, expiry, future))
        return future

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)
        while True:  # whatever came after the stop is refused, not left waiting
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item[-1].set_exception(ProviderError("the provider stopped before submitting the response"))

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
            try:
                self._send(batch)
            except Exception as e:  # never strand a waiter
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(ProviderError(f"submitting the response failed: {e}"))

    def _send(self, batch: list[tuple[str, str, int, int, Future[Executed]]]) -> None:
        chain = self.chain
        statuses = chain.read_many([chain.task(t).read.get_status() for t, *_ in batch])
        ready = []
        for item, status in zip(batch, statuses):
            task, _, _, expiry, future = item
            try:
                self.check_open(task, status, expiry)
                ready.append(item)
            except TaskTakenError as e:
                future.set_exception(e)
        if not ready:
            return
        calls = [chain.nexus.submit_response(ResponseParams(t, self.provider, url, pay)) for t, url, pay, _, _ in ready]
        try:
            receipts = self.sender.wait(self.sender.send(calls, 600_000), check=False)
        except Exception as e:
            # Some may have landed before the failure: the chain says which.
            log.warning("submitting %d response(s) failed (%s); checking which landed", len(ready), e)
            done = chain.read_many([chain.task(t).read.response_of(self.provider) for t, *_ in ready])
            for (task, url, pay, _, future), response in zip(ready, done):
                if int(response, 16):
                    future.set_result(Executed(response, url, pay))
                else:
                    future.set_exception(ProviderError(f"submitting the response of {task} failed: {e}"))
            return
        failed = [(item, r) for item, r in zip(ready, receipts) if r.status != 1]
        for (_, url, pay, _, future), r in zip(ready, receipts):
            if r.status == 1:
                future.set_result(
                    Executed(
                        created_address(r, "ResponseSubmitted", "response", chain.network.nexus),
                        url,
                        pay,
                        block=r.block_number,
                    )
                )
        if failed:
            statuses = chain.read_many([chain.task(item[0]).read.get_status() for item, _ in failed])
            for ((task, _, _, expiry, future), r), status in zip(failed, statuses):
                try:  # lost a race (another provider finalized it, or it expired) or a real revert
                    self.check_open(task, status, expiry)
                    future.set_exception(ProviderError(f"task {task}: {self.sender.explain(r)}"))
                except TaskTakenError as e:
                    future.set_exception(e)
