"""The Prefect UI in a real browser after a small demo run: a real `prefect server start` (the UI
is not served by the test harness), two `ogpu-provider` workers, a sentiment batch through
`run_batch`; then headless Debian Chromium, driven by Selenium, must show the batch's flow run,
the provider task runs, the `ogpu-provider` work pool and the results artifact. Screenshots go to
tests/artifacts/ (ignored by git).

The batch runs on a chain whose clock is not the wall clock: before it, the devnet's next block is
stamped `CHAIN_LEAD_S` ahead and every later block `BLOCK_INTERVAL_S` after the one before it
(anvil's own clock controls, as a chain with its own block times has), so a provider task's times
in the UI tell the chain's times from the worker's wall clock."""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from ogpu_prefect import demo as demo_mod

from .docker_engine import apt_install

pytestmark = pytest.mark.stack  # anvil, a Prefect server and a browser

SHOTS = Path(__file__).parent / "artifacts"
CHAIN_LEAD_S = 900
"""How far ahead of the wall clock the batch's first block is stamped."""
BLOCK_INTERVAL_S = 10
"""Chain seconds between consecutive blocks during the batch (however fast anvil mines them): a
task's attempt and response are at least this far apart on chain, while its client saw it served
in well under a second of wall clock here; the margin is for a loaded machine."""


class DemoRun(NamedTuple):
    demo: demo_mod.Demo
    results: list[Any]
    first_block: int  # the first block of the batch
    finished_at: float  # wall clock when the batch returned


def chromium() -> tuple[str, str] | str:
    """(chromium, chromedriver) paths, installing Debian's packages where missing; or why not."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        why = apt_install("chromium", "chromium-driver")
        if why:
            return f"no chromium: {why}"
    return shutil.which("chromium") or "", shutil.which("chromedriver") or ""


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    found = chromium()
    if isinstance(found, str):
        pytest.skip(f"browser test: {found}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = found[0]
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1600,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(found[1]), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def demo_run() -> Iterator[DemoRun]:

    from ogpu_prefect.chain import devnet
    from ogpu_prefect.chain.rpc import Rpc

    from .prefect_env import api_at

    home = Path(__file__).resolve().parents[1] / ".ogpu" / "ui-test"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    d = demo_mod.Demo(print, home)
    try:
        d.net = devnet.start(log_path=home / "anvil.log")
        d.start_prefect()
        with api_at(d.api_url):
            d.save_blocks()
            source = d.publish_source()
            d.start_workers(source)
            from .flow_proc import run_flow_elsewhere

            rpc = Rpc(d.net.rpc_url)  # the chain's clock leaves the wall clock (module doc)
            rpc.call("evm_setNextBlockTimestamp", [int(time.time()) + CHAIN_LEAD_S])
            rpc.call("evm_mine")
            first_block = int(rpc.call("eth_blockNumber"), 16) + 1
            rpc.call("anvil_setBlockTimestampInterval", [BLOCK_INTERVAL_S])
            results = run_flow_elsewhere(
                d.api_url,
                "run_batch",
                source,
                [{"text": t} for t in ("A lovely day.", "A dreadful, broken mess.", "The bus leaves at six.")],
                demo_mod.PAYMENT,
                demo_mod.NETWORK_BLOCK,
                demo_mod.wallet_block("client"),
                demo_mod.STORAGE_BLOCK,
                function_name="analyze",
                task_timeout=900,  # on chain time, which runs BLOCK_INTERVAL_S per block here
            )
            finished_at = time.time()
            rpc.call("anvil_removeBlockTimestampInterval")
            yield DemoRun(d, results, first_block, finished_at)
    finally:
        d.stop()


def page_text(driver: Any, url: str, expect: list[str], shot: str, timeout: float = 60) -> str:
    from selenium.webdriver.common.by import By

    driver.get(url)
    deadline = time.time() + timeout
    text = ""
    while time.time() < deadline:
        text = driver.find_element(By.TAG_NAME, "body").text
        if all(e in text for e in expect):
            break
        time.sleep(0.5)
    SHOTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(SHOTS / shot))
    return text


def test_the_ui_shows_the_batch_the_provider_runs_the_pool_and_the_artifact(demo_run, browser) -> None:
    d, results = demo_run.demo, demo_run.results
    assert [r.status for r in results] == ["finalized"] * 3
    assert [r.result["result"]["label"] for r in results] == ["positive", "negative", "neutral"]
    ui = d.api_url.removesuffix("/api")
    runs = page_text(browser, f"{ui}/runs", ["ogpu-run-batch", "ogpu-provider-task"], "runs.png")
    assert "ogpu-run-batch" in runs and "ogpu-provider-task" in runs, runs[:2000]
    pools = page_text(browser, f"{ui}/work-pools", [demo_mod.POOL], "work-pools.png")
    assert demo_mod.POOL in pools, pools[:2000]
    pool = page_text(browser, f"{ui}/work-pools/work-pool/{demo_mod.POOL}", ["ogpu-provider"], "work-pool.png")
    assert "ogpu-provider" in pool, pool[:2000]
    arts = page_text(browser, f"{ui}/artifacts", ["ogpu-batch-results"], "artifacts.png")
    assert "ogpu-batch-results" in arts, arts[:2000]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as c:
        art = c.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["ogpu-batch-results"])))[0]
    first = results[0].task
    table = page_text(browser, f"{ui}/artifacts/artifact/{art.id}", [first], "artifact-table.png")
    assert first in table and "finalized" in table, table[:2000]


def shown_seconds(text: str) -> int:
    """Seconds from a duration as the UI shows it ("7s", "1m 3s", "2m"; its seconds rounded up)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(int(part[:-1]) * units[part[-1]] for part in text.split())


def shown_at(driver: Any, at: float) -> str:
    """How the UI shows the time `at` to the second ("numeric": yyyy/MM/dd hh:mm:ss a, the
    browser's time zone; date-fns cuts the fraction)."""
    west = driver.execute_script("return new Date(arguments[0]).getTimezoneOffset()", at * 1000)
    return (datetime.fromtimestamp(int(at), UTC) - timedelta(minutes=west)).strftime("%Y/%m/%d %I:%M:%S %p")


DETAILS_JS = """
const out = {};
for (const kv of document.querySelectorAll('.p-key-value')) {
  const label = kv.querySelector('.p-key-value__label'), value = kv.querySelector('.p-key-value__value');
  if (label && value && !(label.innerText.trim() in out)) out[label.innerText.trim()] = value.innerText.trim();
}
return out;
"""

ROW_JS = """
const link = document.querySelector(`.task-run-list-item a[href$="/runs/task-run/${arguments[0]}"]`);
if (!link) return null;
const meta = link.closest('.task-run-list-item').querySelector('.state-list-item__meta');
const duration = [...meta.querySelectorAll('.p-icon-text')].find(e => !e.classList.contains('flow-run-date-icon-text'));
return {
  state: meta.querySelector('.state-badge')?.innerText.trim(),
  duration: duration?.innerText.trim(),
  start: meta.querySelector('.flow-run-date-icon-text .formatted-date')?.innerText.trim(),
};
"""


def wait_for(driver: Any, read: Any, shot: str, timeout: float = 60) -> Any:
    """`read()` once it gives a value (None before), with a screenshot and the page's source."""
    deadline = time.time() + timeout
    found = read()
    while not found and time.time() < deadline:
        time.sleep(0.5)
        found = read()
    SHOTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{shot}.png"))
    (SHOTS / f"{shot}.html").write_text(driver.page_source)
    return found


def test_a_provider_task_run_shows_the_chains_duration_and_start_not_the_workers_clock(demo_run, browser) -> None:
    """The serving provider's task run of each task of the batch shows, on its page (the details
    panel's Duration and Start Time) and in its session flow run's Task Runs list, the chain's
    times: the response's block time R minus the attempt's block time A, and A.

    Precision: the worker stamps a state with its block's second refined by when it saw the
    receipt, at most 0.9 s later (task_records.py), so the recorded duration is within
    (R - A) +/- 0.9 s and the UI, which rounds a duration's seconds up, shows R - A or R - A + 1
    seconds; a start is shown to the second, cut: A's second.

    Why a record of the worker's own clock fails: the chain's clock runs BLOCK_INTERVAL_S per
    block (module doc), so R - A is at least that, while the worker sees the attempt and the
    response between the task's publication and the client's decision, a window the client
    measured on the wall clock (`latency_s`); the test checks that ceil(latency_s + 0.5 s) is
    below R - A, so a wall-clock duration could not show R - A or more. A wall-clock start is
    before the batch returned, and the test checks that the chain stamped A later than that
    (CHAIN_LEAD_S ahead), so a wall-clock start could not show A either."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, WorkPoolFilter, WorkPoolFilterName
    from selenium.webdriver.common.by import By

    from ogpu_prefect.chain.connection import Chain

    from .prefect_env import api_at

    d, results = demo_run.demo, demo_run.results
    assert [r.status for r in results] == ["finalized"] * 3
    chain = Chain(d.net.network)
    stamps: dict[int, int] = {}

    def stamp(block: int) -> int:
        if block not in stamps:
            stamps[block] = chain.timestamp(block)
        return stamps[block]

    attempted = {
        (e["provider"].lower(), e["task"].lower()): stamp(e.block_number)
        for e in chain.cursor(["Attempted"], demo_run.first_block).poll()
    }
    submitted = chain.cursor(["ResponseSubmitted"], demo_run.first_block).poll()
    params = chain.read_many([chain.response(e["response"]).read.get_response_params() for e in submitted])
    responded = {(p.provider.lower(), p.task.lower()): stamp(e.block_number) for e, p in zip(submitted, params)}

    served = {(r.provider.lower(), r.task.lower()) for r in results}
    with api_at(d.api_url), get_client(sync_client=True) as c:
        deadline = time.time() + 60
        while True:  # the workers' task run records reach the API in batches
            sessions = c.read_flow_runs(work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[demo_mod.POOL])))
            provider_of = {
                s.id: next((t[9:].lower() for t in s.tags if t.startswith("provider:")), "") for s in sessions
            }
            runs = c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(provider_of))))
            by_key = {(provider_of[r.flow_run_id], r.dynamic_key.lower()): r for r in runs}
            if all(k in by_key and by_key[k].state_name == "Completed" for k in served):
                break
            assert time.time() < deadline, (served, {k: r.state_name for k, r in by_key.items()})
            time.sleep(0.5)

    ui = d.api_url.removesuffix("/api")
    for r in results:
        key = (r.provider.lower(), r.task.lower())
        run, attempt, response = by_key[key], attempted[key], responded[key]
        chain_s = response - attempt
        # The chain's times are not the worker's: a record of its clock could show neither.
        assert math.ceil(r.latency_s + 0.5) < chain_s, (r.task, r.latency_s, attempt, response)
        assert attempt > demo_run.finished_at + 1, (r.task, attempt, demo_run.finished_at)
        start = shown_at(browser, attempt)

        browser.get(f"{ui}/runs/task-run/{run.id}")
        panel = wait_for(
            browser,
            lambda: (p := browser.execute_script(DETAILS_JS)).get("Duration") and p.get("Start Time") and p,
            f"task-run-{r.index}",
        )
        assert panel, f"no details panel for task run {run.id}"
        print(
            f"{run.name} ({r.provider}): UI {panel['Duration']!r} from {panel['Start Time']!r}; chain attempt"
            f" {attempt} ({start}), response {response}: {chain_s} s; client's wall-clock latency {r.latency_s:.2f} s"
        )
        assert shown_seconds(panel["Duration"]) in (chain_s, chain_s + 1), (panel, chain_s)
        assert panel["Start Time"] == start, (panel, start)

        browser.get(f"{ui}/runs/flow-run/{run.flow_run_id}")
        tab = wait_for(browser, lambda: browser.find_elements(By.ID, "task-runs"), f"session-{r.index}")
        assert tab, f"no Task Runs tab on the session flow run {run.flow_run_id}"
        tab[0].click()
        row = wait_for(
            browser,
            lambda rid=str(run.id): (w := browser.execute_script(ROW_JS, rid)) and w.get("duration") and w,
            f"session-{r.index}-task-runs",
        )
        assert row, f"task run {run.name} not in its session's Task Runs list"
        assert row["state"] == "Completed", row
        assert shown_seconds(row["duration"]) in (chain_s, chain_s + 1), (row, chain_s)
        assert row["start"] == start, (row, start)
