"""A small stand-in provider, driven by the chain layer: it watches TaskPublished for its
sources, attempts, reads the task config over HTTP, computes an answer, stores it and submits the
response. Real transactions, pipelined per poll; `pipelined=True`: attempts and submissions on two
threads, as the worker's watcher and responder are, so new tasks are attempted while earlier ones
are answered and submissions mined (on 1 s blocks, one after the other left blocks empty). (The
real provider is the `ogpu-provider` worker; this one exists so client tests do not depend on it.)"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ogpu_prefect.chain.connection import Chain
from ogpu_prefect.chain.network import Network
from ogpu_prefect.chain.structs import ResponseParams
from ogpu_prefect.storage import PayloadStore, fetch_json


def echo(config: dict[str, Any]) -> dict[str, Any]:
    return {"result": config.get("data")}


class SimProvider(threading.Thread):
    def __init__(
        self,
        network: Network,
        key: str,
        sources: list[str],
        store: PayloadStore,
        *,
        from_block: int,
        answer: Callable[[dict[str, Any]], Any] = echo,
        price: Callable[[int], int] = lambda pay: pay,
        take: Callable[[str], bool] = lambda task: True,
        delay: float = 0.0,
        response_url: Callable[[str, str], str] | None = None,
        per_round: int | None = None,
        poll_interval: float = 0.05,
        pipelined: bool = False,
    ) -> None:
        super().__init__(daemon=True, name=f"sim-provider-{key[-4:]}")
        self.chain = Chain(network)
        self.sender = self.chain.sender(key, receipt_timeout=30)  # a stop never waits on a long wait
        self.sources = {s.lower() for s in sources}
        self.store = store
        self.answer = answer
        self.price = price
        self.take = take
        self.delay = delay
        self.response_url = response_url  # (task, stored URL) -> the URL put on chain (a hostile provider's)
        self.per_round = per_round  # tasks worked per round (with `delay`: a slow provider's pace)
        self.poll_interval = poll_interval  # idle; on a metered endpoint each poll is a call or two
        self.pipelined = pipelined
        # ([(task, params, its attempt)], tries): each poll's attempts, for the answering thread
        self._answer_queue: queue.Queue[tuple[list[tuple[str, Any, Any]], int]] = queue.Queue()
        self._sent: set[str] = set()  # tasks whose attempt the answering thread awaits
        self._confirming = ThreadPoolExecutor(1, thread_name_prefix="sim-submits")  # awaits submissions
        self.next_block = from_block
        self.stop_event = threading.Event()
        self.submitted: list[str] = []  # in the order answered
        self.attempted: dict[str, Any] = {}  # task -> its params, once our attempt is mined
        self.errors: list[str] = []

    @property
    def address(self) -> str:
        return self.sender.address

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=60)
        if self.is_alive():  # it would go on sending into the next test's chain
            raise RuntimeError(f"{self.name} did not stop")

    def run(self) -> None:
        answering = threading.Thread(target=self._answer_loop, daemon=True, name=f"{self.name}-answers")
        if self.pipelined:
            answering.start()
        try:
            self._attempt_loop()
        finally:
            if answering.is_alive():
                answering.join(timeout=60)
            self._confirming.shutdown(wait=True)

    def _attempt_loop(self) -> None:
        cursor = self.chain.cursor(["TaskPublished"], self.next_block)
        todo: dict[str, int] = {}  # task -> tries; a failed round is retried, not dropped
        while not self.stop_event.is_set():
            try:
                for e in cursor.poll():
                    if e["source"].lower() in self.sources and self.take(e["task"]):
                        todo.setdefault(e["task"], 0)
                if not todo:
                    time.sleep(self.poll_interval)
                    continue
                batch = list(todo)[: self.per_round]
                for t in batch:
                    todo[t] += 1
                self.work(batch)
            except Exception as e:  # keep serving; the test inspects errors
                self.errors.append(repr(e))
                time.sleep(0.1)
            handed = self._sent if self.pipelined else self.submitted  # the answering thread has it
            for t in [t for t, tries in todo.items() if t in handed or tries >= 20]:
                todo.pop(t)

    def _answer_loop(self) -> None:
        """The pipelined mode's second thread: takes the attempts sent together in a poll, in the
        order sent, awaits their receipts and answers the ones that landed (awaiting every group
        sent meanwhile held the first group's answers a block for the last one's receipts)."""
        while not (self.stop_event.is_set() and self._answer_queue.empty()):
            try:
                sent, tries = self._answer_queue.get(timeout=self.poll_interval)
            except queue.Empty:
                continue
            try:
                tasks = [t for t, _, _ in sent]
                self._attempted(tasks, [p for _, p, _ in sent], self.sender.wait([x for *_, x in sent], check=False))
                self.answer_tasks(tasks)
            except Exception as e:  # e.g. receipts slower than receipt_timeout under a rate limit
                self.errors.append(repr(e))
                if tries < 20 and not self.stop_event.is_set():  # the same transactions, awaited again
                    self._answer_queue.put((sent, tries + 1))

    def work(self, tasks: list[str]) -> None:
        fresh = [t for t in tasks if t not in self.attempted and t not in self._sent]
        if fresh:
            params = self.chain.read_many([self.chain.task(t).read.task_params() for t in fresh])
            attempts = [self.chain.nexus.attempt(t, self.address, self.price(p[3])) for t, p in zip(fresh, params)]
            pending = self.sender.send(attempts, 300_000)
            if self.pipelined:  # the answering thread awaits them: this one attempts what comes next
                self._sent.update(fresh)
                self._answer_queue.put((list(zip(fresh, params, pending)), 0))
                return
            self._attempted(fresh, params, self.sender.wait(pending, check=False))
        self.answer_tasks(tasks)

    def _attempted(self, fresh: list[str], params: list[Any], receipts: list[Any]) -> None:
        reverted = [t for t, r in zip(fresh, receipts) if r.status != 1]
        # A reverted attempt may be our own earlier one, mined before a failed wait: ask the task.
        ids = self.chain.read_many([self.chain.task(t).read.attempter_id(self.address) for t in reverted])
        ours = {t for t, i in zip(reverted, ids) if i}
        for t, p, r in zip(fresh, params, receipts):
            if r.status == 1 or t in ours:
                self.attempted[t] = p
            else:
                self.errors.append(f"attempt {t} reverted")

    def answer_tasks(self, tasks: list[str]) -> None:
        """Stores and submits the answers of the attempted ones among `tasks`."""
        if self.delay:
            time.sleep(self.delay)
        ready = [(t, self.attempted[t]) for t in tasks if t in self.attempted and t not in self.submitted]
        calls = []
        if self.pipelined:  # the configs 8 at a time, as the worker's execution runs tasks at once
            with ThreadPoolExecutor(8, thread_name_prefix="sim-fetch") as pool:
                configs = list(pool.map(fetch_json, [p[1] for _, p in ready]))
        else:
            configs = [fetch_json(p[1]) for _, p in ready]
        for (t, p), config in zip(ready, configs):
            payload = self.answer(config)
            url = self.store.put_json({"provider": self.address, "task": t, **payload})
            if self.response_url is not None:
                url = self.response_url(t, url)
            calls.append(self.chain.nexus.submit_response(ResponseParams(t, self.address, url, self.price(p[3]))))
        if calls and self.pipelined:  # the next answers go out while these are mined
            self._confirming.submit(self._submitted, ready, self.sender.send(calls, 600_000))
        elif calls:
            self._submitted(ready, self.sender.send(calls, 600_000))

    def _submitted(self, ready: list[tuple[str, Any]], pending: list[Any]) -> None:
        try:
            receipts = self.sender.wait(pending, check=False)
        except Exception as e:  # keep serving (the pipelined mode's thread has no caller to tell)
            self.errors.append(repr(e))
            return
        for (t, _), r in zip(ready, receipts):
            if r.status == 1:
                self.submitted.append(t)
            else:
                self.errors.append(f"submitResponse {t} reverted")
