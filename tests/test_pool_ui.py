"""The `ogpu-provider` work pool as a user meets it: its edit page in a real browser (a real
`prefect server start`: the harness serves no UI), `prefect block register -m ogpu_prefect`, the
server refusing a template whose defaults break the variables' schema, and a worker on a fresh pool
stopping with one line that names the variable to set. Screenshots go to tests/artifacts/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ogpu_prefect.blocks import OGPUNetwork, OGPUStorage, OGPUWallet
from ogpu_prefect.chain.devnet import DEV_KEYS
from ogpu_prefect.worker.configuration import JobVariableError, ProviderJobConfiguration, with_defaults
from ogpu_prefect.worker.worker import OGPUProviderWorker

from .test_ui import SHOTS, browser  # noqa: F401  (the module's headless Chromium)

pytestmark = pytest.mark.stack  # starts `prefect server start`

POOL = "ui-gpus"
SOURCE = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
BASE_FIELDS = ("Environment Variables", "Command", "Labels")  # Prefect's, shown by default; unused here


def save_blocks(prefix: str) -> dict[str, Any]:
    network = OGPUNetwork.mainnet()
    network.save(f"{prefix}-net", overwrite=True)
    storage = OGPUStorage(write_url="memory://ogpu-pool-ui", read_url="https://payloads.example/ogpu")
    storage.save(f"{prefix}-store", overwrite=True)
    wallet = OGPUWallet(private_key=DEV_KEYS[1])
    wallet.save(f"{prefix}-wallet", overwrite=True)
    return {"network": network, "storage": storage, "wallet": wallet}


def create_pool(name: str, template: dict[str, Any]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    with get_client(sync_client=True) as c:
        c.create_work_pool(WorkPoolCreate(name=name, type="ogpu-provider", base_job_template=template), overwrite=True)


def read_template(name: str) -> dict[str, Any]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as c:
        return c.read_work_pool(name).base_job_template


def prefect_cli(*args: str, home: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    """`prefect <args>` against this session's API, in a home of its own."""
    from prefect.settings import PREFECT_API_URL

    environ = {k: v for k, v in os.environ.items() if k != "PREFECT_INTEGRATIONS_OGPU_PROVIDER_WALLET_BLOCK"}
    environ.update(PREFECT_API_URL=PREFECT_API_URL.value(), PREFECT_HOME=str(home), **env)
    return subprocess.run(
        [sys.executable, "-m", "prefect", *args], env=environ, capture_output=True, text=True, timeout=timeout
    )


# ---- the edit page, in a browser ----


@pytest.fixture(scope="module")
def ui_server() -> Iterator[tuple[str, dict[str, Any]]]:
    """A real `prefect server start` holding the pool POOL, whose variables reference saved blocks."""

    from ogpu_prefect import demo as demo_mod

    from .prefect_env import api_at

    home = Path(__file__).resolve().parents[1] / ".ogpu" / "pool-ui-test"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    d = demo_mod.Demo(print, home)
    try:
        d.start_prefect()
        with api_at(d.api_url):
            blocks = save_blocks("ui")
            template = OGPUProviderWorker.get_default_base_job_template()
            create_pool(POOL, with_defaults(template, sources=[SOURCE], max_concurrent_tasks=16, **blocks))
            yield d.api_url.removesuffix("/api"), blocks
    finally:
        d.stop()


def wait_for(driver: Any, url: str, expect: list[str], timeout: float = 60) -> str:
    from selenium.webdriver.common.by import By

    driver.get(url)
    deadline = time.time() + timeout
    text = ""
    while time.time() < deadline:
        text = driver.find_element(By.TAG_NAME, "body").text
        if all(e in text for e in expect):
            break
        time.sleep(0.5)
    return text


def until(condition: Any, timeout: float = 90) -> Any:
    """`condition()` once it is truthy (polled), else its last value after `timeout`: the UI and
    its server answer in their own time on a loaded machine; nothing here waits longer than needed."""
    deadline = time.time() + timeout
    while not (value := condition()) and time.time() < deadline:
        time.sleep(0.3)
    return value


def full_page_screenshot(driver: Any, name: str) -> None:
    """The whole page (the UI scrolls inside its own container, so the window grows to fit it)."""
    height = driver.execute_script(
        "return Math.max(...Array.from(document.querySelectorAll('*')).map(e => e.scrollHeight))"
    )
    driver.set_window_size(1600, min(max(int(height) + 200, 1000), 8000))
    time.sleep(1.0)
    SHOTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(SHOTS / name))
    driver.set_window_size(1600, 1000)


def test_the_pool_edit_page_shows_its_type_titled_variables_and_block_pickers(ui_server, browser) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    ui, blocks = ui_server
    schema = OGPUProviderWorker.get_default_base_job_template()["variables"]["properties"]
    text = wait_for(browser, f"{ui}/work-pools/work-pool/{POOL}/edit", ["Wallet", "ui-wallet", "Lookback (blocks)"])
    full_page_screenshot(browser, "pool-edit.png")

    selects = browser.find_elements(By.TAG_NAME, "select")
    # The Type select lists the types the server's worker catalog knows; the edit page (Prefect's V1
    # UI) labels each by its slug, title-cased: blank before ogpu-prefect added its type there.
    assert Select(selects[0]).first_selected_option.text == "Ogpu Provider", text[:1500]
    for prop in schema.values():
        assert prop["title"] in text, prop["title"]
        shown = (prop["description"], prop["description"].replace("`", ""))  # verbatim, or as markdown
        assert any(d in text for d in shown), prop["description"]
    picked = {
        o.get_attribute("value") for s in selects for o in s.find_elements(By.TAG_NAME, "option") if o.is_selected()
    }
    for variable, block in blocks.items():  # a block picker per block-typed variable, showing the pool's
        assert str(block._block_document_id) in picked, variable
        assert block._block_document_name in text
    for base in BASE_FIELDS:
        assert base not in text, f"Prefect's unused {base!r} field is shown"

    before = read_template(POOL)
    [save] = [b for b in browser.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Save"]
    save.click()
    until(lambda: not browser.current_url.rstrip("/").endswith("/edit"))
    refused = [line for line in browser.find_element(By.TAG_NAME, "body").text.splitlines() if "must" in line]
    assert not browser.current_url.rstrip("/").endswith("/edit"), f"the form saves: {refused}"
    after = read_template(POOL)
    assert {k: v.get("default") for k, v in after["variables"]["properties"].items()} == {
        k: v.get("default") for k, v in before["variables"]["properties"].items()
    }, "saving the form unchanged keeps the pool's values (the block references included)"

    # The form checks a value against the variables' schema before it saves.
    wait_for(browser, f"{ui}/work-pools/work-pool/{POOL}/edit", ["Chain poll interval (s)"])
    [poll] = until(
        lambda: [i for i in browser.find_elements(By.TAG_NAME, "input") if i.get_attribute("value") == "0.25"]
    )
    poll.click()
    poll.send_keys(Keys.CONTROL, "a")
    poll.send_keys("-1")
    [save] = [b for b in browser.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Save"]
    save.click()
    until(lambda: "must be greater than 0" in browser.find_element(By.TAG_NAME, "body").text)
    full_page_screenshot(browser, "pool-edit-refused.png")
    assert "Chain poll interval (s) must be greater than 0" in browser.find_element(By.TAG_NAME, "body").text
    assert browser.current_url.rstrip("/").endswith("/edit")
    assert read_template(POOL) == after, "nothing refused is stored"


def test_the_create_pages_offer_the_opengpu_provider_type(ui_server, browser) -> None:  # noqa: F811
    ui, _ = ui_server
    description = OGPUProviderWorker.get_description()
    for version, path in (("v1", "/work-pools/create"), ("v2", "/v2/work-pools/create")):
        text = wait_for(browser, f"{ui}{path}", ["OpenGPU provider", description])
        full_page_screenshot(browser, f"pool-create-{version}.png")
        assert "OpenGPU provider" in text and description in text, (version, text[:2000])
    text = wait_for(browser, f"{ui}/v2/work-pools/work-pool/{POOL}/edit", ["Wallet", "ui-wallet"])
    full_page_screenshot(browser, "pool-edit-v2.png")
    assert all(
        prop["title"] in text
        for prop in OGPUProviderWorker.get_default_base_job_template()["variables"]["properties"].values()
    )


# ---- the CLI and the server, against the test harness ----


def test_block_register_m_ogpu_prefect_registers_the_three_blocks(prefect_harness, tmp_path: Path) -> None:
    done = prefect_cli("block", "register", "-m", "ogpu_prefect", home=tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "Successfully registered 3 blocks" in " ".join(out.split()), out
    for block in (OGPUNetwork, OGPUWallet, OGPUStorage):
        assert block.get_block_type_name() in out, out


def test_a_template_whose_defaults_break_the_schema_is_refused(prefect_harness, tmp_path: Path) -> None:
    """Prefect's server checks a pool's defaults against its variables' schema (bounds, enums,
    patterns, referenced blocks) when the pool is created; an update it stores unchecked (Prefect
    3.9: PATCH /work_pools/{name} does not validate), and then the worker refuses to start, with
    one line naming the variable."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import PrefectHTTPStatusError

    bad = OGPUProviderWorker.get_default_base_job_template()
    bad["variables"]["properties"]["poll_interval_s"]["default"] = -1
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    cli = ("work-pool", "create", "refused-pool", "--type", "ogpu-provider", "--base-job-template", str(path))
    done = prefect_cli(*cli, home=tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode != 0 and "poll_interval_s" in out, out

    blocks = save_blocks("checked")  # an empty storage_options (a SecretDict) included
    good = with_defaults(OGPUProviderWorker.get_default_base_job_template(), sources=[SOURCE], **blocks)
    cases = {
        "poll_interval_s": -1,
        "max_concurrent_tasks": 0,
        "lookback_blocks": -1,
        "environment": "tpu",
        "sources": ["0x12"],
        "backend": "kubernetes",
        "wallet": {"$ref": {"block_document_id": "00000000-0000-0000-0000-000000000000"}},
    }
    with get_client(sync_client=True) as c:
        for i, (variable, value) in enumerate(cases.items()):
            template = json.loads(json.dumps(good))
            template["variables"]["properties"][variable]["default"] = value
            with pytest.raises(PrefectHTTPStatusError) as info:
                c.create_work_pool(
                    WorkPoolCreate(name=f"refused-{i}", type="ogpu-provider", base_job_template=template)
                )
            status = info.value.response.status_code
            assert status == 422 and variable in info.value.response.text or status == 404 and variable == "wallet"
        c.create_work_pool(WorkPoolCreate(name="checked-pool", type="ogpu-provider", base_job_template=good))
        template = json.loads(json.dumps(good))
        template["variables"]["properties"]["poll_interval_s"]["default"] = -1
        try:
            c.update_work_pool("checked-pool", WorkPoolUpdate(base_job_template=template))
        except PrefectHTTPStatusError as e:  # a Prefect that checks updates too
            assert e.response.status_code == 422 and "poll_interval_s" in e.response.text
            return
    start = ("worker", "start", "--pool", "checked-pool", "--type", "ogpu-provider", "--run-once")
    done = prefect_cli(*start, home=tmp_path)
    out = (done.stdout + done.stderr).strip()
    assert done.returncode == 1 and "Traceback" not in out, out
    assert out.splitlines()[-1].startswith("ogpu-provider worker: poll_interval_s: the work pool's value is refused"), (
        out
    )


def test_a_worker_on_a_fresh_pool_stops_with_one_line_naming_the_variable(prefect_harness, tmp_path: Path) -> None:
    created = prefect_cli("work-pool", "create", "fresh-pool", "--type", "ogpu-provider", "--overwrite", home=tmp_path)
    assert created.returncode == 0, created.stdout + created.stderr
    defaults = {k: v.get("default") for k, v in read_template("fresh-pool")["variables"]["properties"].items()}
    assert defaults["wallet"] is None and defaults["network"] is None and defaults["storage"] is None, (
        "no devnet defaults"
    )

    def stop_line(pool: str, **env: str) -> str:
        """What `prefect worker start` on `pool` prints before it stops: exactly one line."""
        done = prefect_cli(
            "worker", "start", "--pool", pool, "--type", "ogpu-provider", "--run-once", home=tmp_path, **env
        )
        out = (done.stdout + done.stderr).strip()
        assert done.returncode == 1 and len(out.splitlines()) == 1, out
        return out

    line = stop_line("fresh-pool")
    assert line.startswith(
        "ogpu-provider worker: wallet: not set: choose an OGPUWallet block for the work pool's `wallet`"
    )
    blocks = save_blocks("fresh")
    line = stop_line("fresh-pool", PREFECT_INTEGRATIONS_OGPU_PROVIDER_WALLET_BLOCK="fresh-wallet")
    assert line.startswith("ogpu-provider worker: network: not set: choose an OGPUNetwork block"), line
    del blocks["wallet"]
    create_pool("no-wallet-pool", with_defaults(OGPUProviderWorker.get_default_base_job_template(), **blocks))
    line = stop_line("no-wallet-pool", PREFECT_INTEGRATIONS_OGPU_PROVIDER_WALLET_BLOCK="nobody")
    assert line == "ogpu-provider worker: wallet_block: no OGPUWallet block named 'nobody' is saved"


def test_an_older_pool_naming_its_blocks_still_gets_them(prefect_harness) -> None:
    """Pools made before the block-typed variables name their blocks (`network_block`, ...)."""
    import asyncio

    from prefect.client.orchestration import get_client

    blocks = save_blocks("older")
    names = {"network_block": "older-net", "wallet_block": "older-wallet", "storage_block": "older-store"}
    template = {
        "job_configuration": {k: "{{ " + k + " }}" for k in (*names, "sources")},
        "variables": {
            "type": "object",
            "properties": {
                **{k: {"type": "string", "default": v} for k, v in names.items()},
                "sources": {"type": "array", "items": {"type": "string"}, "default": [SOURCE]},
            },
        },
    }
    create_pool("older-pool", template)

    async def load() -> ProviderJobConfiguration:  # as the worker does on start
        async with get_client() as c:
            pool = await c.read_work_pool("older-pool")
            return await ProviderJobConfiguration.from_template_and_values(pool.base_job_template, {}, client=c)

    config = asyncio.run(load())
    wallet, network, storage = config.blocks()
    assert wallet.address == blocks["wallet"].address
    assert network.rpc_url == blocks["network"].rpc_url and storage.write_url == blocks["storage"].write_url
    config.wallet_block = "nobody"
    with pytest.raises(JobVariableError) as info:
        config.blocks()
    assert info.value.field == "wallet_block"
