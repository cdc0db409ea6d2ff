"""The run_batch deployment's run form in a real browser: a real `prefect server start` (the UI is
not served by the test harness), prefect.yaml deployed to a process work pool with a worker, the
session's devnet with a stand-in provider (tests/provider_sim.py) serving the source. Headless
Debian Chromium, driven by Selenium, opens Deployments -> run-batch -> Run, checks that every
parameter is described, that the blocks are block pickers and the delivery method and manual policy
drop-downs, fills the form in (amount "0.01 OGPU", blocks picked from the saved ones) and submits
it; the run must complete with finalized results. Screenshots go to tests/artifacts/ (ignored by
git): run-form.png (filled in), run-form-result.png (the run). Before it, without a browser: the
form's contract (the flows' parameter schemas, as Prefect's own schema check reads them) and the
amounts' parsing through the flow's parameter validation."""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from ogpu_prefect.chain.types import DeliveryMethod
from ogpu_prefect.storage import LocalStore

from .scenarios import Ctx
from .test_deploy import POOL, REPO, Procs, World, wait_runs
from .test_ui import SHOTS, browser  # noqa: F401 (the module's browser fixture)

pytestmark = pytest.mark.stack  # a Prefect server, a worker and a browser

INPUTS = [{"text": "a lovely day"}, {"text": "the bus leaves at six"}]
DESCRIBED = [
    "The source's address",
    "One task per item",
    "What each task pays, with its unit",
    "The OpenGPU network: a saved OGPUNetwork block",
    "The client wallet that signs and pays",
    "Where task inputs are written",
    "The delivery method that chooses and pays results",
    "Seconds a task may take",
    "The most the batch may hold in escrow at once",
]


def start_server(procs: Procs, home: Path) -> str:
    """A real Prefect server with its UI, on a free port; its API URL."""
    from ogpu_prefect._loopback import free_port

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    procs.env.update(PREFECT_API_URL=api, PREFECT_HOME=str(home))
    procs.start(
        "server", [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    )
    deadline = time.time() + 120
    while True:
        try:
            if requests.get(f"{api}/health", timeout=2).ok:
                return api
        except requests.RequestException:
            pass
        procs.alive()
        assert time.time() < deadline, procs.tail("server")
        time.sleep(0.5)


@pytest.fixture
def deployed(devnet: Any, tmp_path: Path) -> Iterator[tuple[World, str]]:
    """The stack of the README's tour: a server, saved blocks, prefect.yaml's run-batch deployment,
    a process worker; (the world, the UI's URL)."""

    from .prefect_env import api_at

    env = {
        **os.environ,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
        "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "results"),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PWD": str(REPO),
    }
    procs = Procs(tmp_path / "logs", env)
    procs.services = ("server", "worker")
    try:
        api = start_server(procs, tmp_path / "prefect-home")
        with api_at(api), LocalStore(tmp_path / "payloads") as store:
            ctx = Ctx(devnet, store, tmp_path)
            suffix = uuid.uuid4().hex[:6]
            blocks = (f"form-net-{suffix}", f"form-wallet-{suffix}", f"form-store-{suffix}")
            ctx.network().save(blocks[0])
            ctx.wallet().save(blocks[1])
            ctx.storage().save(blocks[2])
            prefect = [sys.executable, "-m", "prefect"]
            procs.run("pool", [*prefect, "work-pool", "create", POOL, "--type", "process", "--overwrite"])
            procs.run("deploy", [*prefect, "--no-prompt", "deploy", "--name", "run-batch"])
            procs.start("worker", [*prefect, "worker", "start", "--pool", POOL, "--type", "process"])
            source = ctx.source(DeliveryMethod.MANUAL_CONFIRMATION)  # the form picks `manual`, policy `first`
            yield World(ctx, blocks, source, tmp_path, procs), api.removesuffix("/api")
    finally:
        procs.stop()


def section(driver: Any, label: str) -> Any:
    """The form's property `label` (its own, not a nested one's)."""
    from selenium.webdriver.common.by import By

    for el in driver.find_elements(By.CSS_SELECTOR, "div.schema-form-property"):
        names = el.find_elements(By.CSS_SELECTOR, ":scope > .p-label__header .schema-form-property__label")
        if names and names[0].text.strip().removesuffix("(Optional)").strip() == label:
            return el
    raise AssertionError(f"no form field {label!r}")


def type_into(element: Any, text: str) -> None:
    from selenium.webdriver.common.keys import Keys

    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(Keys.DELETE)
    element.send_keys(text)


def pick_block(driver: Any, label: str, kind: str, name: str) -> list[str]:
    """Switches `label` to its block picker (the `kind` tab) and picks the block `name`; the
    picker's choices."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    switch(driver, label, kind)
    deadline = time.time() + 20
    while True:
        selects = section(driver, label).find_elements(By.CSS_SELECTOR, ".block-document-input select")
        choices = [o.text for o in Select(selects[0]).options] if selects else []
        if name in choices:
            Select(selects[0]).select_by_visible_text(name)
            return choices
        assert time.time() < deadline, f"{label}: {name} not among {choices}"
        time.sleep(0.3)


def switch(driver: Any, label: str, tab: str) -> Any:
    """Picks the `tab` side of an either-or field (`X | None`, block or name); the field."""
    from selenium.webdriver.common.by import By

    buttons = section(driver, label).find_elements(By.CSS_SELECTOR, "button.p-button-group__button")
    chosen = [b for b in buttons if b.text.strip() == tab]
    assert chosen, f"{label}: no {tab!r} among {[b.text for b in buttons]}"
    chosen[0].click()
    time.sleep(0.3)
    return section(driver, label)


def choose(driver: Any, label: str, value: str) -> list[str]:
    """Picks `value` in the drop-down `label`; its choices."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    select = Select(section(driver, label).find_element(By.CSS_SELECTOR, "select"))
    choices = [o.text for o in select.options]
    select.select_by_visible_text(value)
    return choices


@pytest.mark.slow
def test_the_run_form_is_described_has_block_pickers_and_runs(deployed: tuple[World, str], browser: Any) -> None:  # noqa: F811
    from prefect.client.orchestration import get_client
    from selenium.webdriver.common.by import By

    world, ui = deployed
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("ogpu-run-batch/run-batch")
    browser.set_window_size(1600, 3400)  # the whole form in one screenshot
    browser.get(f"{ui}/deployments/deployment/{deployment.id}/run")
    deadline = time.time() + 60
    text = ""
    while not all(d in text for d in DESCRIBED) and time.time() < deadline:
        time.sleep(0.5)
        text = browser.find_element(By.TAG_NAME, "body").text
    SHOTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(SHOTS / "run-form-empty.png"))
    assert [d for d in DESCRIBED if d not in text] == [], text[:3000]

    # Fill it in, as a person would (the provider is up before the run publishes).
    with world.ctx.providers(world.source):
        run_id = fill_in_and_submit(browser, world, deployment.id)
        (run,) = wait_runs(world, [run_id], timeout=240)
    assert run.state.is_completed(), f"{run.state}\n{world.procs.tail()}"
    assert run.name == f"ogpu-batch-{len(INPUTS)}-tasks"
    assert {"ogpu", "ogpu-batch"} <= set(run.tags)
    assert run.parameters["payment"] == "0.01 OGPU"
    assert set(run.parameters["network"]) == {"$ref"}, "the picked block travels as a reference"
    assert run.parameters["delivery"] == "manual" and run.parameters["delivery_options"]["policy"] == "first"
    results = run.state.result()
    assert [r.status for r in results] == ["finalized"] * len(INPUTS)
    assert [r.result["result"] for r in results] == INPUTS
    browser.get(f"{ui}/runs/flow-run/{run_id}")
    deadline = time.time() + 30
    while run.name not in browser.find_element(By.TAG_NAME, "body").text and time.time() < deadline:
        time.sleep(0.5)
    browser.save_screenshot(str(SHOTS / "run-form-result.png"))


def fill_in_and_submit(driver: Any, world: World, deployment_id: Any) -> str:
    """Fills the open run form in and submits it; the new flow run's id."""
    from selenium.webdriver.common.by import By

    net, wallet, storage = world.blocks
    type_into(section(driver, "source").find_element(By.TAG_NAME, "textarea"), world.source)
    inputs = section(driver, "inputs")
    for item in INPUTS:
        inputs.find_element(By.XPATH, ".//button[contains(., 'Add item')]").click()
        boxes = section(driver, "inputs").find_elements(By.CSS_SELECTOR, "textarea.p-code-input__textarea")
        type_into(boxes[-1], json.dumps(item))
    type_into(section(driver, "payment").find_element(By.TAG_NAME, "textarea"), "0.01 OGPU")
    assert net in pick_block(driver, "network", "OGPUNetwork", net)
    assert wallet in pick_block(driver, "wallet", "OGPUWallet", wallet)
    assert storage in pick_block(driver, "storage", "OGPUStorage", storage)
    type_into(switch(driver, "function_name", "name").find_element(By.TAG_NAME, "textarea"), "echo")
    type_into(section(driver, "task_timeout").find_element(By.CSS_SELECTOR, "input, textarea"), "120")
    assert {"first_response", "manual", "consensus", "auction"} <= set(choose(driver, "delivery", "manual"))
    switch(driver, "delivery_options", "options")
    assert {"first", "lowest_price"} <= set(choose(driver, "policy", "first")), "the manual policies: a drop-down"
    driver.save_screenshot(str(SHOTS / "run-form.png"))

    form_url = driver.current_url
    driver.find_element(By.XPATH, "//button[normalize-space(.)='Submit']").click()
    deadline, retried = time.time() + 60, False
    while driver.current_url == form_url:  # the UI goes back to the deployment once the run is made
        if time.time() > deadline:
            driver.save_screenshot(str(SHOTS / "run-form-refused.png"))
            raise AssertionError(driver.find_element(By.TAG_NAME, "body").text[:3000])
        if not retried and "Something went wrong" in driver.find_element(By.TAG_NAME, "body").text:
            # The UI's generic toast for a failed API call: seen once in a clean-clone CI run on a
            # loaded 2-CPU machine, with the same form accepted in every other run. Submitted again
            # only if no run was made; a second failure fails the test.
            driver.save_screenshot(str(SHOTS / "run-form-retried.png"))
            if not runs_of(deployment_id):
                print("the run form's first submit failed in the UI ('Something went wrong'); submitting again")
                driver.find_element(By.XPATH, "//button[normalize-space(.)='Submit']").click()
            retried, deadline = True, time.time() + 60
        time.sleep(0.5)
    return created_run(deployment_id)


def runs_of(deployment_id: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))


def created_run(deployment_id: Any) -> str:
    """The id of the flow run the form just created (the deployment's only run)."""
    runs = runs_of(deployment_id)
    assert len(runs) == 1, runs
    return str(runs[0].id)


# ---- the form's contract, without a browser ----


def schema_of(flow: Any) -> dict[str, Any]:
    from prefect.utilities.callables import parameter_schema

    return parameter_schema(flow).model_dump_for_openapi()


@pytest.mark.parametrize("name", ["run_batch", "scheduled_batch"])
def test_every_parameter_is_described_and_typed_for_the_form(name: str) -> None:
    import importlib

    from ogpu_prefect.plugin_manager import PluginKind, installed
    from ogpu_prefect.plugins.manual import Manual

    flow = getattr(importlib.import_module(f"ogpu_prefect.flows.{name}"), name)
    schema = schema_of(flow)
    props = schema["properties"]
    assert [p for p, s in props.items() if not s.get("description")] == [], "every parameter is described"
    for param, block in (("network", "ogpu-network"), ("wallet", "ogpu-wallet"), ("storage", "ogpu-storage")):
        ref, named = props[param]["anyOf"]
        definition = schema["definitions"][ref["$ref"].rsplit("/", 1)[1]]
        assert definition["block_type_slug"] == block, "a block picker"
        assert definition.get("required"), "a picked block's reference is not also valid block data"
        assert named["type"] == "string", "or a saved block's name"
    assert props["payment"]["type"] == "string" and props["payment"]["pattern"], "an amount with its unit"
    assert "0.01 OGPU" in props["payment"]["examples"]
    assert props["budget"]["anyOf"][0]["pattern"] == props["payment"]["pattern"]
    assert props["delivery"]["enum"] == sorted(installed(PluginKind.DELIVERY_METHOD))
    policy = props["delivery_options"]["anyOf"][0]["properties"]["policy"]
    assert policy["enum"] == list(Manual.POLICIES), "the manual policies, as the plugin knows them"


def test_the_server_accepts_what_the_form_and_the_cli_send() -> None:
    from prefect.utilities.schema_tools.validation import ValidationError, validate

    from ogpu_prefect.flows.run_batch import run_batch

    schema = schema_of(run_batch)
    ref = {"$ref": {"block_document_id": str(uuid.uuid4())}}
    form = {
        "source": "0x" + "11" * 20,
        "inputs": INPUTS,
        "payment": "0.01 OGPU",
        "network": ref,
        "wallet": ref,
        "storage": ref,
        "delivery": "manual",
        "delivery_options": {"policy": "first"},
        **dict.fromkeys(("function_name", "batch_deadline", "budget", "batch_key"), None),
    }
    validate(form, schema, raise_on_error=True)
    cli = {**form, "network": "devnet", "wallet": "client", "storage": "devnet", "payment": "10000000000000000 wei"}
    validate({**cli, "budget": "1.5 OGPU", "function_name": "echo"}, schema, raise_on_error=True)
    for bad in ({"payment": 10**16}, {"payment": "0.01"}, {"delivery": "fastest"}, {"storage": ""}):
        with pytest.raises(ValidationError):
            validate({**cli, **bad}, schema, raise_on_error=True)


def test_amounts_through_the_flows_parameter_validation() -> None:
    from decimal import Decimal

    from ogpu_prefect.chain.errors import InvalidInputError
    from ogpu_prefect.flows.run_batch import run_batch

    base = {"source": "0x" + "11" * 20, "inputs": INPUTS, "network": "n", "wallet": "w", "storage": "s"}
    for given, wei in [("0.01 OGPU", 10**16), ("10 gwei", 10**10), (Decimal("0.01"), 10**16), (10**16, 10**16)]:
        assert run_batch.validate_parameters({**base, "payment": given})["payment"] == wei
        assert run_batch.validate_parameters({**base, "payment": 1, "budget": given})["budget"] == wei
    for bad in (0.01, "0.01", "1 eth", "0.0000000000000000001 OGPU", True, None):
        with pytest.raises(InvalidInputError) as info:
            run_batch.validate_parameters({**base, "payment": bad})
        assert info.value.field == "payment", bad
    stored = run_batch.serialize_parameters({**base, "payment": 10**16, "budget": Decimal("2")})
    assert (stored["payment"], stored["budget"]) == ("0.01 OGPU", "2 OGPU"), "shown in OGPU"
