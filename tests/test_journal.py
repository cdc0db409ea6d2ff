"""The worker's flow-run journal against a real Prefect API (the test harness's server)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import anyio
import httpx
import pytest

from ogpu_prefect.worker.journal import FlowRunJournal, _run_name
from ogpu_prefect.worker.worker import OGPUProviderWorker

pytestmark = pytest.mark.usefixtures("prefect_harness")


async def _journal(client: Any, name: str) -> FlowRunJournal:
    from prefect.client.schemas.actions import WorkPoolCreate

    await client.create_work_pool(
        WorkPoolCreate(
            name=name, type="ogpu-provider", base_job_template=OGPUProviderWorker.get_default_base_job_template()
        ),
        overwrite=True,
    )
    await client.create_work_queue(name="q", work_pool_name=name)
    flow_id = await client.create_flow_from_name(f"{name}-flow")
    deployment_id = await client.create_deployment(flow_id=flow_id, name=name, work_pool_name=name, work_queue_name="q")
    return FlowRunJournal(
        client,
        deployment_id,
        flow_id,
        name,
        "q",
        ["ogpu-provider"],
        lambda run: logging.LoggerAdapter(logging.getLogger("test-journal"), {}),
        logging.getLogger("test-journal"),
    )


def test_a_creation_that_landed_but_failed_on_our_side_is_still_closed() -> None:
    """The server created the run (Running) but its reply was lost; by the retry the task had
    ended. The retry finds the existing run by idempotency key, and the journal must still close
    it, not take it for a run created in the end state (that left runs Running forever).
    Mocked: only the lost reply (a transport fault the harness cannot produce); the server is real."""
    from prefect.client.orchestration import get_client

    async def main() -> tuple[str, int]:
        async with get_client() as client:
            journal = await _journal(client, "journal-lost-reply")
            real_request, lost = client.request, []

            async def request(method: str, path: str, **kw: Any) -> Any:
                resp = await real_request(method, path, **kw)
                if path == "/flow_runs/" and not lost:
                    lost.append(resp.json()["id"])
                    raise httpx.ReadTimeout("reply lost")
                return resp

            client.request = request
            journal.start("0x" + "ab" * 20, {"task": "t"}, "key-lost-reply")
            await journal.flush()  # landed Running; we saw a timeout
            journal.end("0x" + "ab" * 20, "COMPLETED", "response submitted on chain")
            await journal.flush()  # the retry returns the Running run: it must be set Completed
            await journal.flush()
            run = await client.read_flow_run(lost[0])
            return run.state.type.value, journal.pending()

    state, pending = anyio.run(main)
    assert state == "COMPLETED"
    assert pending == 0


def test_runs_are_created_running_with_their_infrastructure_and_lines_keep_their_times() -> None:
    """Every run shows Running from its start (a task that ended before its run was created too:
    it used to be created Completed, with no Running state and no duration), names its provider
    and task as its infrastructure id, and a line written before its run existed keeps its time."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    async def main() -> tuple[list[str], str, float, float]:
        async with get_client() as client:
            journal = await _journal(client, "journal-states")
            journal.make_logger = lambda run: logging.LoggerAdapter(logging.getLogger("test-journal"), {})
            done, running = "0x" + "01" * 20, "0x" + "02" * 20
            journal.start(done, {"task": done}, "key-done", infrastructure=f"0xprovider:{done}")
            written = time.time()
            captured: list[logging.LogRecord] = []
            handler = logging.Handler()
            handler.emit = captured.append  # type: ignore[method-assign]
            logging.getLogger("test-journal").addHandler(handler)
            logging.getLogger("test-journal").setLevel(logging.INFO)
            journal.log(done, logging.INFO, "a line before the run exists")
            time.sleep(0.3)
            journal.end(done, "COMPLETED", "response submitted on chain", artifact="### done")
            journal.start(running, {"task": running}, "key-running")
            await journal.flush()
            [running_id] = journal.open_runs()
            first = (await client.read_flow_run(running_id)).state.type.value
            journal.end(running, "FAILED", "the service failed")
            await journal.flush()
            [done_run] = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[_run_name(done)]))
            )
            history = await client.read_flow_run_states(done_run.id)
            kinds = [first, (await client.read_flow_run(running_id)).state.type.value]
            kinds += [st.type.value for st in sorted(history, key=lambda st: st.timestamp)]
            line = next(r for r in captured if r.getMessage() == "a line before the run exists")
            return kinds, done_run.infrastructure_pid or "", line.created, written

    kinds, infrastructure, logged_at, written = anyio.run(main)
    assert kinds == ["RUNNING", "FAILED", "RUNNING", "COMPLETED"], kinds
    assert infrastructure == f"0xprovider:{'0x' + '01' * 20}"
    assert abs(logged_at - written) < 0.2, "the line carries the time it was written, not the flush's"


def test_a_state_change_the_bulk_request_did_not_apply_is_tried_again() -> None:
    """bulk_set_state answers per run, and one run's change can fail (SQLite busy) while the
    request succeeds. Mocked: the first bulk request carries one run fewer (as if the server had
    refused it); the server and the retry are real."""
    from prefect.client.orchestration import get_client

    async def main() -> list[str]:
        async with get_client() as client:
            journal = await _journal(client, "journal-refused")
            tasks = ["0x" + f"{i:02x}" * 20 for i in range(3)]
            for t in tasks:
                journal.start(t, {"task": t}, f"key-refused-{t}")
            await journal.flush()  # all created Running
            ids = list(journal.open_runs())
            real_request, dropped = client.request, []

            async def request(method: str, path: str, **kw: Any) -> Any:
                if path == "/flow_runs/bulk_set_state" and not dropped:
                    dropped.append(kw["json"]["flow_runs"]["id"]["any_"].pop())
                return await real_request(method, path, **kw)

            client.request = request
            for t in tasks:
                journal.end(t, "COMPLETED", "response submitted on chain")
            await journal.flush()
            await journal.flush()
            return [(await client.read_flow_run(i)).state.type.value for i in ids]

    assert anyio.run(main) == ["COMPLETED"] * 3


def test_a_task_address_that_comes_back_gets_a_flow_run_of_its_own() -> None:
    """A devnet revert (or a reorg) can bring a task's address back as a new task while the old
    execution's record is still being written: both runs must be recorded, each in its state."""
    from prefect.client.orchestration import get_client

    task = "0x" + "cd" * 20

    async def main() -> tuple[str, str, int]:
        async with get_client() as client:
            journal = await _journal(client, "journal-address-reuse")
            journal.start(task, {"task": task}, "key-first-publication")
            journal.end(task, "CANCELLED", "the task is not on this chain any more")
            journal.start(task, {"task": task}, "key-second-publication")  # before any flush
            journal.end(task, "COMPLETED", "response submitted on chain")
            for _ in range(3):
                await journal.flush()
            from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[journal.deployment_id]))
            )
            by_key = {r.idempotency_key: r.state.type.value for r in runs}
            return by_key["key-first-publication"], by_key["key-second-publication"], journal.pending()

    assert anyio.run(main) == ("CANCELLED", "COMPLETED", 0)


def test_a_second_flow_run_for_an_executing_task_is_cancelled_not_adopted() -> None:
    """A run of the deployment started from the UI for a task the worker is already executing:
    the task's own run keeps recording it (it was left Running forever when the journal switched
    to the new run), and the new one is Cancelled with the reason."""
    from prefect.client.orchestration import get_client

    task = "0x" + "ef" * 20

    async def main() -> tuple[str, str, str]:
        async with get_client() as client:
            journal = await _journal(client, "journal-second-run")
            journal.start(task, {"task": task}, "key-own-run")
            await journal.flush()
            own = journal._entries[task].run_id
            extra = await client.create_flow_run_from_deployment(journal.deployment_id, parameters={"task": task})
            journal.start(task, {}, "", run_id=extra.id, note="started from Prefect")
            journal.end(task, "COMPLETED", "response submitted on chain")
            for _ in range(3):
                await journal.flush()
            a, b = await client.read_flow_run(own), await client.read_flow_run(extra.id)
            return a.state.type.value, b.state.type.value, b.state.message

    own_state, extra_state, message = anyio.run(main)
    assert (own_state, extra_state) == ("COMPLETED", "CANCELLED")
    assert "is executing in flow run" in message


def test_tasks_are_task_runs_of_a_session_with_the_chains_times() -> None:
    """records=tasks: each task is a task run of its source's session flow run, whose Running
    and final states carry the attempt's and the response's block times (read back from the API:
    within 1 s), its lines one log record of that task run, the session's table one artifact.
    The block times come from a function the journal is given (here: fixed times long past, so a
    state stamped with the time of our writes would be off by a minute); the server, its task
    run recorder and the events websocket are real."""
    import time
    from uuid import NAMESPACE_URL, UUID, uuid5

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterTaskRunId

    from ogpu_prefect import events
    from ogpu_prefect.worker.task_records import TaskRunJournal

    now = int(time.time())
    mined = {10: float(now - 120), 11: float(now - 117), 12: float(now - 60), 13: float(now - 50)}
    racing = "0x" + "7c" * 20
    raced: list[str] = []
    holder: list[Any] = []

    def block_times(blocks: list[int]) -> dict[int, float]:
        if not raced:  # the task ends (block 13, not asked for) while these times are read
            raced.append(racing)
            holder[0].end(racing, "COMPLETED", "response submitted on chain", block=13)
        return {b: mined[b] for b in blocks}

    answered, failed, quick, found_late = "0x" + "a1" * 20, "0x" + "f2" * 20, "0x" + "9e" * 20, "0x" + "1a" * 20
    source = "0x" + "5c" * 20

    async def main() -> tuple[Any, Any, list[Any], list[Any], list[Any], str]:
        async with get_client() as client:
            runs = await _journal(client, "journal-task-runs")
            runs.make_logger = OGPUProviderWorker(work_pool_name="journal-task-runs").get_flow_run_logger
            journal = TaskRunJournal(
                runs,
                events.sender().put,
                block_times,
                response_times=lambda responses: {r: mined[11] for r in responses},
                running_after=0,  # Running at the first flush, as a task that runs long is
            )
            holder.append(journal)
            journal.start(answered, {"task": answered, "source": source}, f"31337:0xp:{answered}:0x1", block=10)
            journal.start(failed, {"task": failed, "source": source}, f"31337:0xp:{failed}:0x2", block=10)
            # Attempt and response in one block (one second): both seen later than it. Their times
            # were the same, and Prefect's recorder then kept the run Running.
            journal.start(racing, {"task": racing, "source": source}, f"31337:0xp:{racing}:0x5", block=10)
            journal.start(quick, {"task": quick, "source": source}, f"31337:0xp:{quick}:0x3", block=12)
            journal.end(quick, "COMPLETED", "response submitted on chain", block=12)
            # A response found landed after a failed send: no block; its Response keeps its time.
            journal.start(found_late, {"task": found_late, "source": source}, f"31337:0xp:{found_late}:0x4", block=10)
            journal.log(answered, logging.INFO, "running")
            journal.log(answered, logging.INFO, "[service] done")
            await journal.flush()  # the session run; Running for the two still running
            journal.end(answered, "COMPLETED", "response submitted on chain", block=11, result={"response": "0xr"})
            journal.end(failed, "FAILED", "the service failed")
            journal.end(found_late, "COMPLETED", "response submitted on chain", result={"response": "0xresp"})
            await journal.flush()
            [session] = [r for r, _ in journal.sessions._entries.items()]
            session_id = journal.sessions.run_of(session)
            assert session_id is not None
            journal.finish()
            for _ in range(20):
                await journal.flush()
                if not journal.pending():
                    break
            ids = {
                t: uuid5(NAMESPACE_URL, f"ogpu-task-run:31337:0xp:{t}:0x{n}")
                for t, n in ((answered, 1), (failed, 2), (quick, 3), (found_late, 4), (racing, 5))
            }
            found: dict[UUID, Any] = {}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(found) < 5:
                events.sender().flush()
                for i in ids.values():
                    try:
                        run = await client.read_task_run(i)
                    except Exception:
                        continue
                    if run.state is not None and run.state.is_final():
                        found[i] = run
                await anyio.sleep(0.5)
            assert ids[quick] in found, "the one-block task's run ended"
            ended_while_read = found[ids[racing]]
            assert abs(ended_while_read.end_time.timestamp() - mined[13]) <= 1.0, "it waited for its block's time"
            late = found[ids[found_late]]
            assert abs(late.end_time.timestamp() - mined[11]) <= 1.0, "the Response's time, not when we wrote"
            done, bad = found[ids[answered]], found[ids[failed]]
            history = await client.read_task_run_states(done.id)
            logs: list[Any] = []  # Prefect's log handler sends every few seconds
            while time.monotonic() < deadline + 30 and not logs:
                logs = await client.read_logs(log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[done.id])))
                await anyio.sleep(0.5)
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[session_id]))
            )
            session_state = (await client.read_flow_run(session_id)).state.type.value
            return done, bad, history, logs, artifacts, session_state

    done, bad, history, logs, artifacts, session_state = anyio.run(main)
    assert done.state.type.value == "COMPLETED" and bad.state.type.value == "FAILED"
    assert abs(done.start_time.timestamp() - mined[10]) <= 1.0
    assert abs(done.end_time.timestamp() - mined[11]) <= 1.0
    assert 2.0 <= done.total_run_time.total_seconds() <= 4.0
    by_type = {st.type.value: st.timestamp.timestamp() for st in history}
    assert abs(by_type["RUNNING"] - mined[10]) <= 1.0 and abs(by_type["COMPLETED"] - mined[11]) <= 1.0
    assert done.flow_run_id == bad.flow_run_id  # one session run
    assert [lg.message.count("\n") for lg in logs] == [1], "a task's lines are one record"
    assert len(artifacts) == 1 and answered in artifacts[0].data and failed in artifacts[0].data
    assert session_state == "COMPLETED"


def test_summary_records_a_session_run_and_its_table_and_no_task_runs() -> None:
    """records=summary: the session's flow run and one artifact with its tasks' chain times; no
    task run and no per-task log line (fewest writes). Block times from a given function (as
    above); the server is real."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterId

    from ogpu_prefect.worker.task_records import TaskRunJournal

    mined = {20: float(int(time.time()) - 90), 21: float(int(time.time()) - 88)}
    task, source = "0x" + "b7" * 20, "0x" + "5d" * 20
    sent: list[Any] = []

    async def main() -> tuple[str, list[Any], list[Any]]:
        async with get_client() as client:
            runs = await _journal(client, "journal-summary")
            journal = TaskRunJournal(runs, sent.append, lambda blocks: {b: mined[b] for b in blocks}, summary_only=True)
            journal.start(task, {"task": task, "source": source}, f"31337:0xp:{task}:0x1", block=20)
            journal.log(task, logging.INFO, "running")
            journal.end(task, "COMPLETED", "response submitted on chain", block=21, result={"response": "0xr"})
            await journal.flush()
            journal.finish()
            for _ in range(10):
                await journal.flush()
                if not journal.pending():
                    break
            [session] = [r for r in await client.read_flow_runs(limit=200) if r.parameters.get("source") == source]
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[session.id]))
            )
            task_runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[session.id]))
            )
            return session.state.type.value, artifacts, task_runs

    state, artifacts, task_runs = anyio.run(main)
    assert state == "COMPLETED"
    assert sent == [] and task_runs == [], "no task-run event, no task run"
    assert len(artifacts) == 1 and task in artifacts[0].data
    start = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(mined[20]))
    assert start in artifacts[0].data, "the table's start is the attempt's block time"


def test_a_short_task_sends_its_final_state_only_and_a_long_one_shows_running() -> None:
    """records=tasks: a task that ends within `running_after` of its attempt is written as one
    event, its final state (the task run it creates carries the attempt's time as its start); a
    task still running past it is recorded Running first. Every flush before that sent Running,
    one event more for each of a burst's short tasks (5.2 writes a task in bench/economy.py)."""
    import time

    from prefect.client.orchestration import get_client

    from ogpu_prefect.worker.task_records import TaskRunJournal

    now = float(int(time.time()))
    mined = {30: now - 20, 31: now - 19}
    short, long_, source = "0x" + "c1" * 20, "0x" + "c2" * 20, "0x" + "5e" * 20
    sent: list[Any] = []

    async def main() -> list[tuple[str, str]]:
        async with get_client() as client:
            runs = await _journal(client, "journal-running-after")
            journal = TaskRunJournal(runs, sent.append, lambda blocks: {b: mined[b] for b in blocks}, running_after=1.0)
            journal.start(short, {"task": short, "source": source}, f"31337:0xp:{short}:0x1", block=30)
            journal.start(long_, {"task": long_, "source": source}, f"31337:0xp:{long_}:0x2", block=30)
            await journal.flush()  # both just began: nothing about them yet
            journal.end(short, "COMPLETED", "response submitted on chain", block=31)
            await journal.flush()
            await anyio.sleep(1.1)
            await journal.flush()  # the long one has run past running_after
            journal.finish()
            return [(e.resource["prefect.resource.id"], e.event) for e in sent]

    events = anyio.run(main)
    by_task: dict[str, list[str]] = {}
    for resource, name in events:
        by_task.setdefault(resource, []).append(name)
    assert sorted(by_task.values()) == [["prefect.task-run.Completed"], ["prefect.task-run.Running"]], events
    [short_event] = [e for e in sent if e.event == "prefect.task-run.Completed"]
    start = short_event.payload["task_run"]["start_time"]
    assert abs(datetime.fromisoformat(start).timestamp() - mined[30]) <= 1.0, "its start is the attempt's time"


def test_the_journal_waits_out_429s_and_records_everything() -> None:
    """A real proxy answering 429 with Retry-After in front of the real server: the session run,
    its task run and its table are still written, after waiting (none dropped)."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    from ogpu_prefect.api_writer import ApiWriter
    from ogpu_prefect.worker.task_records import TaskRunJournal

    from .prefect_env import api_at
    from .prefectproxy import PrefectProxy

    mined = {30: float(int(time.time()) - 40), 31: float(int(time.time()) - 38)}
    task, source = "0x" + "c4" * 20, "0x" + "6e" * 20

    async def main(proxy: PrefectProxy, events: ApiWriter) -> tuple[str, int]:
        async with get_client() as client:
            runs = await _journal(client, "journal-limited")
            journal = TaskRunJournal(runs, lambda e: events.put(e.model_dump(mode="json")), lambda b: mined)
            journal.start(task, {"task": task, "source": source}, f"31337:0xp:{task}:0x1", block=30)
            journal.end(task, "COMPLETED", "response submitted on chain", block=31)
            proxy.refuse_next(6)
            journal.finish()
            for _ in range(30):
                try:
                    await journal.flush()
                except Exception:  # the journal's run loop retries so: here, the test does
                    await anyio.sleep(0.5)
                if not journal.pending():
                    break
            assert events.flush(60)
            [session] = [r for r in await client.read_flow_runs(limit=200) if r.parameters.get("source") == source]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                found = await client.read_task_runs()
                done = [
                    r for r in found if r.dynamic_key == task and r.state_type and r.state_type.value == "COMPLETED"
                ]
                if done:
                    break
                await anyio.sleep(0.5)
            return session.state.type.value, len(done)

    with PrefectProxy(PREFECT_API_URL.value()) as proxy:
        with api_at(proxy.url):
            events = ApiWriter("/events")
            state, done = anyio.run(main, proxy, events)
        metering = proxy.reset()
    assert sum(metering.refused.values()) == 6
    assert all(gap >= 0.95 for gap in metering.retry_gaps), metering.retry_gaps
    assert state == "COMPLETED" and done == 1
