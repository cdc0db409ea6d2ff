"""What the end-to-end benches share about Prefect: the server stack (ogpu_prefect.stack, `sqlite`
or `production`) that this process and the workers talk to, the count of `ogpu.` events the
server stored, the server logs' dropped-message lines, and the CPU each process of the run used."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

QUEUE_FULL = "Subscription queue is full"
"""What Prefect's in-memory messaging logs when it drops a message (`... dropping message`)."""


@contextlib.contextmanager
def prefect_api(home: Path, stack: str, servers: int = 1) -> Iterator[Any]:
    """Starts the stack under `home/stack` and points this process at it (its flows, clients and
    event sender, whose thread reads PREFECT_API_URL from the environment) and the processes it
    starts. Yields the StackInfo; stops everything on the way out."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from ogpu_prefect.stack import PrefectStack

    home.chmod(0o711)  # PostgreSQL runs as its own user and must reach its data folder in here
    from prefect.context import refresh_global_settings_context

    with PrefectStack(home=home, stack=stack, servers=servers, timeout=240) as info:
        # Threads without a settings context of their own (the event sender's, run_batch's
        # progress reporter's) read Prefect's global settings context, made from the environment
        # at import: without the refresh they would start an ephemeral server of their own. Left
        # set after the stack stops, so that a reconnecting sender does not start one either.
        os.environ["PREFECT_API_URL"] = info.api_url
        refresh_global_settings_context()
        with temporary_settings({PREFECT_API_URL: info.api_url}):
            yield info


def stored_ogpu_events(since: float) -> dict[str, int]:
    """How many events named `ogpu.*` the server stored since the wall-clock `since`, by name
    (POST /events/count-by/event through the client's public `request()`)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

    flt = EventFilter(
        occurred=EventOccurredFilter(
            since=datetime.fromtimestamp(since, UTC), until=datetime.now(UTC) + timedelta(hours=1)
        ),
        event=EventNameFilter(prefix=["ogpu."]),
    )
    with get_client(sync_client=True) as c:
        resp = c.request(
            "POST",
            "/events/count-by/event",  # type: ignore[arg-type]
            json={"filter": flt.model_dump(mode="json"), "time_unit": "day", "time_interval": 1.0},
        )
        resp.raise_for_status()
        return {row["value"]: int(row["count"]) for row in resp.json()}


def wait_stored(since: float, emitted: int, settle_s: float = 8.0, timeout: float = 120.0) -> dict[str, int]:
    """The stored `ogpu.` counts once they reach `emitted`, or stop changing for `settle_s`
    (the server's event pipeline stores them a little after they arrive)."""
    deadline = time.monotonic() + timeout
    last, changed = -1, time.monotonic()
    while True:
        counts = stored_ogpu_events(since)
        total = sum(counts.values())
        if total != last:
            last, changed = total, time.monotonic()
        if total >= emitted or time.monotonic() - changed > settle_s or time.monotonic() > deadline:
            return counts
        time.sleep(1.0)


def queue_full_lines(home: Path) -> int:
    """Lines of the stack's server logs saying a subscription queue dropped a message."""
    logs = home / "stack" / "logs"
    return sum(p.read_text(errors="replace").count(QUEUE_FULL) for p in logs.glob("*.log")) if logs.exists() else 0


def sender_counts() -> dict[str, int]:
    """This process' event sender: events it sent, dropped, and still holds."""
    from ogpu_prefect import events

    s = events.sender()
    return {"sent": s.sent, "dropped": s.dropped, "unsent": s.unsent}


# ---- CPU seconds by part, from /proc (Linux) ----

ROLES = (
    ("prefect server services", "Prefect services"),
    ("prefect server start", "Prefect API"),
    ("worker start --pool", "workers"),
    ("worker.runner", "services"),
    ("ogpu_prefect._loopback", "payload server"),
    ("ogpu_prefect.call_loop", "calls' loop"),
    ("anvil", "anvil"),
    ("redis-server", "redis"),
    ("postgres", "postgres"),
    ("py-spy", "py-spy"),
)


def _proc_table() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command line, CPU seconds so far)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[int, str, float]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(pid)] = (int(fields[1]), cmd, (int(fields[11]) + int(fields[12])) / tick)
    return out


def cpu_seconds(extra_roots: tuple[int, ...] = (), named: dict[int, str] | None = None) -> dict[int, tuple[str, float]]:
    """CPU seconds used so far by each process of this run, by pid, with its part: this process
    (the client: run_batch and, in floors, the floor loops) and its descendants (the stack's
    servers, workers and their services, anvil, the payload server), plus the trees of
    `extra_roots` (PostgreSQL's postmaster, which daemonizes); `named` gives parts to pids that
    no command line tells apart (a forked child). Other users' processes on the machine are not
    counted. A process' children's time counts once they are reaped by it."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    me = os.getpid()
    mine, todo = set(), [me, *extra_roots]
    while todo:
        pid = todo.pop()
        if pid in mine or pid not in table:
            continue
        mine.add(pid)
        todo += children.get(pid, [])
    out: dict[int, tuple[str, float]] = {}
    for pid in mine:
        _, cmd, secs = table[pid]
        role = "client" if pid == me else next((r for key, r in ROLES if key in cmd), "other")
        role = (named or {}).get(pid, role)
        out[pid] = (role, secs)
    return out


def server_pids() -> dict[str, int]:
    """The Prefect API servers' and the services process' pids, by a name for profiles."""
    return {
        f"{role.replace(' ', '-')}-{pid}": pid
        for pid, (role, _) in cpu_seconds().items()
        if role in ("Prefect API", "Prefect services")
    }


def parts_text(parts: dict[str, float]) -> str:
    """CPU seconds by part, largest first: `anvil 14.1, Prefect API 12.2, ...`."""
    return ", ".join(f"{k} {v:.1f}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1]) if v >= 0.05)


def cpu_by_part(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    parts: dict[str, float] = {}
    for pid, (role, secs) in after.items():
        parts[role] = parts.get(role, 0.0) + secs - before.get(pid, (role, 0.0))[1]
    return parts


def wait_api_idle(idle_cpu_s: float = 0.1, timeout: float = 60.0) -> float:
    """Waits until the Prefect server's processes use under `idle_cpu_s` of CPU in a second (it
    records a flow's task runs after the flow returns: the next measured run should not pay for
    them); returns the seconds waited."""
    t0 = time.monotonic()
    api = ("Prefect API", "Prefect services", "postgres", "redis")
    last = sum(v for role, v in cpu_seconds().values() if role in api)
    while time.monotonic() - t0 < timeout:
        time.sleep(1.0)
        now = sum(v for role, v in cpu_seconds().values() if role in api)
        if now - last < idle_cpu_s:
            break
        last = now
    return time.monotonic() - t0


def postmaster_pid(home: Path) -> tuple[int, ...]:
    pid_file = home / "stack" / "pgdata" / "postmaster.pid"
    try:
        return (int(pid_file.read_text().split()[0]),)
    except (OSError, ValueError, IndexError):
        return ()


def machine_busy() -> float:
    """CPU-seconds all processes of the machine have used (busy time in /proc/stat): against this
    run's own, what other work on the machine took meanwhile."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
