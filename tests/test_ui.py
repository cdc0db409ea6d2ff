"""The Prefect UI in a real browser after a small demo run: a real `prefect server start` (the UI
is not served by the test harness), two `ogpu-provider` workers, a sentiment batch through
`run_batch`; then headless Debian Chromium, driven by Selenium, must show the batch's flow run,
the provider task runs, the `ogpu-provider` work pool and the results artifact. Screenshots go to
tests/artifacts/ (ignored by git)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ogpu_prefect import demo as demo_mod

from .docker_engine import apt_install

pytestmark = pytest.mark.stack  # anvil, a Prefect server and a browser

SHOTS = Path(__file__).parent / "artifacts"


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
def demo_run() -> Iterator[tuple[demo_mod.Demo, list[Any]]]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from ogpu_prefect.chain import devnet

    home = Path(__file__).resolve().parents[1] / ".ogpu" / "ui-test"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    d = demo_mod.Demo(print, home)
    try:
        d.net = devnet.start(log_path=home / "anvil.log")
        d.start_prefect()
        with temporary_settings({PREFECT_API_URL: d.api_url}):
            d.save_blocks()
            source = d.publish_source()
            d.start_workers(source)
            from .flow_proc import run_flow_elsewhere

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
                task_timeout=120,
            )
            yield d, results
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
    d, results = demo_run
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
