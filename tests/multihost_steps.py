"""`python -m tests.multihost_steps <step>` runs one step of the multi-host test on the host it is
started in (tests/test_multihost.py starts it with `ip netns exec`), against the Prefect API in
PREFECT_API_URL. stdin: the step's JSON arguments; stdout's last line: its JSON answer.

- `setup`: the blocks (network, IPFS storage, wallets), the source, a work pool per provider.
- `registered`: waits until each provider's worker registered to the source.
- `records`: each pool's task records (task runs of its session flow runs), the UI's API URL, every
  block document and pool template.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

ECHO = Path(__file__).resolve().parents[1] / "flows" / "sources" / "echo" / "docker-compose.cpu.yml"
PROVIDERS = ("provider1", "provider2")


def setup(profile: dict[str, Any], ipfs: str, prefix: str) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    from ogpu_prefect.blocks import OGPUNetwork, OGPUStorage, OGPUWallet
    from ogpu_prefect.chain.connection import Chain
    from ogpu_prefect.chain.network import Network
    from ogpu_prefect.chain.types import DeliveryMethod
    from ogpu_prefect.client import OGPUClient
    from ogpu_prefect.models import SourceSpec
    from ogpu_prefect.worker.configuration import with_defaults
    from ogpu_prefect.worker.worker import OGPUProviderWorker

    def key(role: str) -> str:
        return str(profile["accounts"][role]["private_key"])

    network = OGPUNetwork.from_network(Network.from_profile(profile))
    network.save(f"{prefix}-net", overwrite=True)
    # The network's own upload API and its gateway, on the storage host: the one origin every
    # host is configured to read payloads from (the client's results, the workers' configs).
    storage = OGPUStorage(kind="ipfs", ipfs_api_url=f"{ipfs}/file/create", result_origins=[f"{ipfs}/ipfs/"])
    storage.save(f"{prefix}-store", overwrite=True)
    OGPUWallet(private_key=key("client")).save(f"{prefix}-client", overwrite=True)
    store = storage.store()
    client = OGPUClient(Chain(network.to_network()), key("client"), store)
    # The compose file travels through the storage too; the code it runs is on each worker host,
    # as an image would be in a registry.
    compose = ECHO.read_text().replace("x-ogpu-local:", f"x-ogpu-local:\n      working_dir: {ECHO.parent}")
    source = client.publish_source(
        SourceSpec(
            name="echo",
            cpu=store.put_body(compose.encode()),
            min_payment=10**15,
            min_available_lockup=10**18,
            max_expiry_duration=3600,
            delivery_method=DeliveryMethod.FIRST_RESPONSE,
        )
    )
    for role in PROVIDERS:
        wallet = OGPUWallet(private_key=key(role))
        wallet.save(f"{prefix}-{role}", overwrite=True)
        template = with_defaults(
            OGPUProviderWorker.get_default_base_job_template(),
            network=network,
            storage=storage,
            wallet=wallet,
            sources=[source],
            poll_interval_s=0.2,
            config_origins=[f"{ipfs}/ipfs/"],
        )
        with get_client(sync_client=True) as c:
            c.create_work_pool(
                WorkPoolCreate(name=f"{prefix}-{role}", type="ogpu-provider", base_job_template=template),
                overwrite=True,
            )
    return {"source": source}


def registered(profile: dict[str, Any], source: str, roles: list[str], timeout: float = 120) -> dict[str, Any]:
    from ogpu_prefect.chain.connection import Chain
    from ogpu_prefect.chain.network import Network

    chain = Chain(Network.from_profile(profile))
    deadline = time.time() + timeout
    for role in roles:
        while chain.source(source).get_registrant_id(profile["accounts"][role]["address"]) == 0:
            if time.time() > deadline:
                raise TimeoutError(f"{role}'s worker did not register to {source} in {timeout:.0f} s")
            time.sleep(0.3)
    time.sleep(1.0)  # the watcher starts right after the registration
    return {}


def records(prefix: str) -> dict[str, Any]:
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, WorkPoolFilter, WorkPoolFilterName
    from prefect.settings import PREFECT_API_URL

    runs: dict[str, list[dict[str, Any]]] = {}
    with get_client(sync_client=True) as c:
        for role in PROVIDERS:
            # records=tasks (the default): each task a task run (dynamic key: the task's address)
            # of its source's session flow run in the provider's pool
            pool = WorkPoolFilter(name=WorkPoolFilterName(any_=[f"{prefix}-{role}"]))
            sessions = [r.id for r in c.read_flow_runs(work_pool_filter=pool)]
            in_sessions = FlowRunFilter(id=FlowRunFilterId(any_=sessions))
            runs[role] = [
                {"task": t.dynamic_key.lower(), "state": t.state.type.value if t.state else None}
                for t in (c.read_task_runs(flow_run_filter=in_sessions) if sessions else [])
            ]
        configured = [
            d.model_dump(mode="json", exclude={"block_schema", "block_type"}) for d in c.read_block_documents()
        ]
        configured += [c.read_work_pool(f"{prefix}-{role}").base_job_template for role in PROVIDERS]
    api = str(PREFECT_API_URL.value())
    ui = httpx.get(f"{api.removesuffix('/api')}/ui-settings", timeout=10).json()["api_url"]
    return {"runs": runs, "ui_api_url": ui, "configured": json.dumps(configured)}


def main() -> int:
    import faulthandler

    faulthandler.dump_traceback_later(150, exit=True)  # a hung step says where (the test waits 180 s)
    step, args = sys.argv[1], json.loads(sys.stdin.read() or "{}")
    answer = {"setup": setup, "registered": registered, "records": records}[step](**args)
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
