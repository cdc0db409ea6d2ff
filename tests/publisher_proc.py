"""`python -m tests.publisher_proc PROFILE KEY SOURCE N TAG STORE_DIR STORE_URL`: one process
publishing N tasks with a key other processes use at the same time (tests/scenarios.py). Prints
the number published."""

from __future__ import annotations

import sys

from ogpu_prefect.chain.connection import Chain
from ogpu_prefect.chain.network import Network
from ogpu_prefect.client import OGPUClient
from ogpu_prefect.models import TaskInput
from ogpu_prefect.storage import FsspecStore


def main(argv: list[str]) -> int:
    profile, key, source, n, tag, store_dir, store_url = argv
    client = OGPUClient(Chain(Network.from_profile(profile)), key, FsspecStore(f"file://{store_dir}", store_url))
    inputs = [TaskInput(function_name="echo", data={"proc": tag, "i": i}) for i in range(int(n))]
    published = client.publish_tasks(source, inputs, 10**16, client.chain.now() + 600)
    print(len(published))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
