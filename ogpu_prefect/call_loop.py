"""The process that runs the loop behind `OGPUFunction` calls (call_engine.py starts it).

Why a process: a `.map` of 1,000 calls is 1,000 Prefect task runs, each a thread of the caller's
process that starts, records and ends its run in Python. Sharing their interpreter lock, the loop
got 1 s of CPU in 10 s of wall (BENCHMARKS.md, bench/fanout.py): every socket read of the loop
waited behind the task runs' threads. Here it has an interpreter of its own.

The wallet's key never comes here: transactions are signed by the caller's process
(`RemoteSigner.sign_many`: one exchange per publication). What comes is the spec (network and
storage blocks, the source's terms, the delivery and reputation options, the limits), the seal of
the reputation records (derived one-way from the key, reputation.py) and the caller's Prefect
settings. Everything published is reported back as it enters the batch's ledger, so the caller
can settle it should this process die.

Messages (tuples over a `multiprocessing.connection.Connection` on two inherited pipes):
- caller -> loop: ("call", index, item, attempt, tasks, flow_run), ("calls", [those]),
  ("withdraw", {run: state}),
  ("close",), ("signed", id, [(raw, hash)] | error);
- loop -> caller: ("result", TaskResult), ("ledger", added, dropped), ("sign", id, [tx]),
  ("closed", why).
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .batch import Ledger
    from .client import SourceTerms
    from .engine.window import Limits
    from .models import TaskInput, TaskResult
    from .streaming import Stream

log = logging.getLogger(__name__)

IDLE_S = 2.0
"""Seconds a loop with nothing queued or in flight waits for calls before it ends."""
LINGER_S = 0.3
LINGER_CALLS = 100
"""Calls queued are handed to the Stream once this many wait, or the oldest waited LINGER_S:
calls that a `.map` starts one by one go out in a few large publications, not many small ones
(each a round of blocks for the client and the providers)."""
SIGN_TIMEOUT_S = 120.0


@dataclass
class LoopSpec:
    """What the loop process needs, the wallet's key excepted (see module doc)."""

    network: Any  # an OGPUNetwork block or a saved block's name
    storage: Any  # an OGPUStorage block or a saved block's name
    address: str  # the wallet's
    terms: SourceTerms
    delivery: str
    delivery_options: dict[str, Any] | None
    reputation: str | None
    reputation_options: dict[str, Any] | None
    limits: Limits
    key: str  # the batch mark in every task's config
    from_block: int


class Channel:
    """One end of the two pipes, safe for many threads: `send`, and `request` for an answer."""

    def __init__(self, incoming: Connection, outgoing: Connection) -> None:
        self.incoming, self.outgoing = incoming, outgoing
        self._send = threading.Lock()
        self._ids = itertools.count()
        self._waiting: dict[int, tuple[threading.Event, list[Any]]] = {}

    def send(self, message: tuple[Any, ...]) -> None:
        with self._send:
            self.outgoing.send(message)

    def recv(self) -> Any:
        return self.incoming.recv()

    def request(self, kind: str, body: Any, timeout: float) -> Any:
        rid, event, box = next(self._ids), threading.Event(), []
        self._waiting[rid] = (event, box)
        try:
            self.send((kind, rid, body))
            if not event.wait(timeout):
                raise TimeoutError(f"no answer to {kind} in {timeout:.0f}s")
        finally:
            self._waiting.pop(rid, None)
        return box[0]

    def answer(self, rid: int, body: Any) -> None:
        waiting = self._waiting.get(rid)
        if waiting is not None:
            waiting[1].append(body)
            waiting[0].set()

    def fail_all(self, why: str) -> None:
        for rid in list(self._waiting):
            self.answer(rid, why)

    def close(self) -> None:
        for conn in (self.incoming, self.outgoing):
            try:
                conn.close()
            except OSError:
                pass


class RemoteSigner:
    """A TxSigner whose key stays in the caller's process: signs by asking it."""

    def __init__(self, address: str, channel: Channel) -> None:
        self.address, self.channel = address, channel

    def sign(self, tx: dict[str, Any]) -> tuple[bytes, bytes]:
        return self.sign_many([tx])[0]

    def sign_many(self, txs: list[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
        signed = self.channel.request("sign", txs, SIGN_TIMEOUT_S)
        if isinstance(signed, str):
            raise RuntimeError(f"the caller's process did not sign: {signed}")
        return [(bytes(raw), bytes(h)) for raw, h in signed]

    def __repr__(self) -> str:
        return f"RemoteSigner({self.address})"


class CallLoop:
    """The Stream's input feed (calls as they come, lingering for company) and its results writer
    (each result goes back to the caller). Runs the Stream until closed and idle."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.lock = threading.Lock()
        self.queue: deque[tuple[int, TaskInput, int, list[str]]] = deque()
        self.flow_runs: dict[int, str | None] = {}
        self.withdrawn: dict[int, str] = {}
        self.open: set[int] = set()  # calls without a result yet
        self.manifest: dict[str, Any] = {}  # the Stream reads earlier runs' counts from its writer
        self.closing = False
        self.stream: Stream | None = None
        self.ledger: Ledger | None = None
        self._last = time.monotonic()
        self._oldest = 0.0
        self._handing = False

    def queue_calls(self, calls: list[tuple[int, TaskInput, int, list[str], str | None]]) -> None:
        """Calls (index, input, attempt, earlier tasks, flow run), queued for the next refill."""
        with self.lock:
            if not self.queue:
                self._oldest = time.monotonic()
            for index, item, attempt, tasks, flow_run in calls:
                self.queue.append((index, item, attempt, tasks))
                self.flow_runs[index] = flow_run
                self.withdrawn.pop(index, None)
                self.open.add(index)
            self._last = time.monotonic()

    # ---- the Stream's feed ----

    def __iter__(self) -> CallLoop:
        return self

    def __next__(self) -> tuple[int, TaskInput | None, int, list[str]] | tuple[int, None]:
        from .engine.window import NOTHING_YET

        assert self.stream is not None
        with self.lock:
            if self.queue:
                now = time.monotonic()
                if self._handing or len(self.queue) >= LINGER_CALLS or now - self._oldest >= LINGER_S:
                    self._last, self._handing = now, len(self.queue) > 1
                    return self.queue.popleft()
                return NOTHING_YET  # more calls are likely on their way: one publication for them all
            self._handing = False
            if not self.closing or self.open or self.stream.inflight or self.stream.retry:
                return NOTHING_YET
        raise StopIteration

    # ---- the Stream's results writer ----

    def add(self, r: TaskResult) -> None:
        why = self.withdrawn.get(r.index)
        if why is not None and not r.ok:
            r = r.model_copy(update={"status": "canceled", "reason": "canceled", "error": why})
        with self.lock:
            self.open.discard(r.index)
            self._last = time.monotonic()
        try:
            self.channel.send(("result", r))
        except OSError:
            pass  # the caller is gone: what it left open is being withdrawn

    def idle_for(self) -> float:
        """Seconds with nothing queued, open or in flight (0 while something is)."""
        with self.lock:
            busy = self.queue or self.open or (self.stream is not None and (self.stream.inflight or self.stream.retry))
            return 0.0 if busy else time.monotonic() - self._last

    def withdraw(self, ended: dict[str, str]) -> None:
        """The calls of the flow runs `ended` (id -> state) end as cancelled: queued ones at once,
        published ones by cancelling their tasks on chain (what a provider took runs out)."""
        with self.lock:
            runs = {i: self.flow_runs.get(i) for i in self.open}
            gone = {i: f"its flow run is {ended[r].lower()}" for i, r in runs.items() if r in ended}
        self._withdraw(gone, ", ".join(ended))

    def withdraw_all(self, why: str) -> None:
        with self.lock:
            gone = dict.fromkeys(self.open, why)
        self._withdraw(gone, why)

    def _withdraw(self, gone: dict[int, str], what: str) -> None:
        from .escrow import settle
        from .models import TaskResult

        assert self.stream is not None
        with self.lock:
            self.withdrawn.update(gone)
            queued = [q for q in self.queue if q[0] in gone]
            for q in queued:
                self.queue.remove(q)
            open_tasks = [t for t, e in list(self.stream.inflight.items()) if e.index in gone]
        for q in queued:
            self.add(TaskResult(index=q[0], status="canceled", reason="canceled", tasks=list(q[3])))
        if open_tasks:
            log.warning("cancelling %d task(s) of withdrawn calls (%s)", len(open_tasks), what)
            report = settle(self.stream.client, open_tasks)
            log.warning("withdrawn calls: %s", report.summary())


def mirrored_ledger(ledger: Ledger, channel: Channel) -> Ledger:
    """The batch's ledger, each change also told to the caller (who settles it if we die)."""
    add, drop = ledger.add, ledger.drop

    def added(addresses: Any) -> None:
        add(addresses)
        channel.send(("ledger", list(addresses), []))

    def dropped(addresses: Any) -> None:
        drop(addresses)
        channel.send(("ledger", [], list(addresses)))

    ledger.add, ledger.drop = added, dropped  # type: ignore[method-assign]
    return ledger


def serve(channel: Channel, spec: LoopSpec, seal: bytes | None) -> str:
    """Runs the loop until the caller closes it and nothing is open; returns why it ended."""
    from .batch import BatchRecord, Ledger
    from .blocks import OGPUNetwork, OGPUStorage, load_block
    from .client import OGPUClient
    from .reputation import open_book
    from .streaming import Stream
    from .validation import parse_delivery

    loop = CallLoop(channel)
    threading.Thread(target=_read, args=(channel, loop), name="ogpu-calls-read", daemon=True).start()
    store = load_block(OGPUStorage, spec.storage, "storage")
    chain = load_block(OGPUNetwork, spec.network, "network").connect()
    signer = RemoteSigner(spec.address, channel)
    client = OGPUClient(chain, signer, store.store(), trusted_origins=store.trusted_origins())
    strategy = parse_delivery(spec.delivery, spec.delivery_options)
    book = open_book(chain.network.chain_id, spec.reputation, spec.reputation_options, seal=seal)
    record = BatchRecord(spec.key, chain.network.chain_id, client.address, spec.terms.address, spec.from_block)
    ledger = loop.ledger = mirrored_ledger(Ledger(client, record), channel)
    loop.stream = Stream(client, spec.terms, strategy, loop, ledger, spec.limits, key=spec.key, book=book)  # type: ignore[arg-type]
    threading.Thread(target=_ask_to_close_when_idle, args=(loop,), name="ogpu-calls-idle", daemon=True).start()
    try:
        loop.stream.run(loop)
    except BaseException as e:  # the loop broke (the node, a publication): nothing stays open
        why = f"the calls' loop stopped: {type(e).__name__}: {e}"
        log.error("%s; settling the escrow of its %d open task(s)", why, len(ledger.tasks))
        try:
            ledger.settle()
        except Exception as settle_error:
            log.error("settling after the loop stopped failed: %s", settle_error)
        return why
    if loop.stream.stopped is not None:
        return f"every call failed the same way: {loop.stream.stopped}"
    return "idle"


def _ask_to_close_when_idle(loop: CallLoop) -> None:
    """Idle for IDLE_S: asks the caller, which closes the loop only if no call came meanwhile
    (it decides under the lock its calls are sent under, so none is lost in the pipe)."""
    while not loop.closing:
        time.sleep(0.2)
        if loop.idle_for() >= IDLE_S:
            try:
                loop.channel.send(("idle",))
            except OSError:
                return
            time.sleep(IDLE_S)


def _read(channel: Channel, loop: CallLoop) -> None:
    """The caller's messages. Its end of the pipes closing means it died: with the key gone,
    nothing can be signed (no cancel), so the process ends, naming what it leaves open."""
    while True:
        try:
            message = channel.recv()
        except (EOFError, OSError):
            break
        kind = message[0]
        if kind == "call":
            loop.queue_calls([message[1:]])
        elif kind == "calls":
            loop.queue_calls(message[1])
        elif kind == "signed":
            channel.answer(message[1], message[2])
        elif kind == "withdraw":  # settles on chain, which needs this thread to read signatures
            threading.Thread(target=loop.withdraw, args=(message[1],), daemon=True).start()
        elif kind == "close":
            loop.closing = True
        elif kind == "exit":
            threading.Thread(target=_settle_and_exit, args=(loop,), daemon=True).start()
    channel.fail_all("the caller's process is gone")
    open_tasks = loop.ledger.tasks if loop.ledger is not None else []
    if open_tasks:
        log.error("the caller's process is gone; %d task(s) left open: %s", len(open_tasks), ", ".join(open_tasks))
    os._exit(1 if open_tasks else 0)


def _settle_and_exit(loop: CallLoop) -> None:
    """The caller is exiting: what is on chain is settled (cancelled if NEW), at once."""
    why = "the caller exited"
    if loop.ledger is not None and loop.ledger.tasks:
        try:
            why += f": {loop.ledger.settle().summary()}"
        except Exception as e:
            why += f"; settling failed: {type(e).__name__}: {e}"
    try:
        loop.channel.send(("closed", why))
    finally:
        os._exit(0)


def main(argv: list[str]) -> int:
    """`python -m ogpu_prefect.call_loop READ_FD WRITE_FD` (its environment: the caller's, with
    the caller's Prefect settings): the spec and the seal first, then the loop; its last message
    says why it ended."""
    channel = Channel(Connection(int(argv[0]), writable=False), Connection(int(argv[1]), readable=False))
    logging.basicConfig(level=logging.WARNING, format="ogpu calls: %(levelname)s %(message)s")
    from . import blocks, client, reputation, streaming  # noqa: F401  (the seconds a first call would wait)

    try:
        spec, seal = channel.recv()
    except (EOFError, OSError):
        return 0  # a spare the caller did not need
    try:
        why = serve(channel, spec, seal)
    except BaseException as e:
        why = f"the calls' loop could not start: {type(e).__name__}: {e}"
        log.error("%s", why)
    try:
        channel.send(("closed", why))
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
