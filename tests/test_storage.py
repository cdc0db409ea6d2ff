"""Payload storage: content-addressed fsspec writes, the IPFS upload API publisher against a
loopback server speaking that API, reading back, and the typed errors for bad payloads."""

from __future__ import annotations

from pathlib import Path

import pytest

from ogpu_prefect.blocks import OGPUStorage
from ogpu_prefect.chain.errors import InvalidInputError
from ogpu_prefect.storage import MAX_PAYLOAD_BYTES, FsspecStore, IpfsStore, LocalStore, StorageError, fetch_json

from .ipfs_stub import IpfsStub


def test_fsspec_store_is_content_addressed(tmp_path: Path) -> None:
    store = FsspecStore(f"file://{tmp_path}")
    a = store.put_json({"b": 1, "a": [1, 2]})
    b = store.put_json({"a": [1, 2], "b": 1})
    assert a == b and a.startswith(f"file://{tmp_path}/") and a.endswith(".json")
    assert len(list(tmp_path.iterdir())) == 1
    assert fetch_json(a) == {"a": [1, 2], "b": 1}


def test_memory_store_and_block() -> None:
    block = OGPUStorage(write_url="memory://ogpu-test")
    url = block.store().put_json({"x": 1})
    assert url.startswith("memory://ogpu-test/") and fetch_json(url) == {"x": 1}
    with pytest.raises(ValueError, match="write_url"):
        OGPUStorage().store()


def test_local_store_serves_over_http(tmp_path: Path) -> None:
    with LocalStore(tmp_path) as store:
        url = store.put_json({"hello": "world"})
        assert url.startswith("http://127.0.0.1:")
        assert fetch_json(url) == {"hello": "world"}
        with pytest.raises(StorageError, match="404"):
            fetch_json(store.base_url + "/missing.json")


def test_bad_payloads_get_typed_errors(tmp_path: Path) -> None:
    store = FsspecStore(f"file://{tmp_path}")
    with pytest.raises(InvalidInputError) as info:
        store.put_json({"when": object()}, field="inputs[7].data")
    assert info.value.field == "inputs[7].data"
    with pytest.raises(InvalidInputError, match="limit"):
        store.put_json("x" * (MAX_PAYLOAD_BYTES + 1))
    with pytest.raises(InvalidInputError):
        store.put_json({"nan": float("nan")})
    assert not list(tmp_path.iterdir()), "nothing written"


def test_ipfs_store_uploads_once_and_links_read_back() -> None:
    with IpfsStub() as stub:
        store = IpfsStore(f"{stub.url}/file/create", backoff=0.01)
        link = store.put_json({"function_name": "f", "data": {"x": 1}})
        assert link.startswith(f"{stub.url}/ipfs/Qm")
        assert store.put_json({"data": {"x": 1}, "function_name": "f"}) == link
        assert stub.uploads == 1, "a re-upload of the same payload is a no-op"
        assert fetch_json(link) == {"data": {"x": 1}, "function_name": "f"}


def test_ipfs_store_retries_5xx_and_fails_fast_on_4xx() -> None:
    with IpfsStub(fail_next=2) as stub:
        store = IpfsStore(f"{stub.url}/file/create", retries=3, backoff=0.01)
        assert store.put_json({"a": 1}).startswith(stub.url)
        assert stub.uploads == 1
        with pytest.raises(StorageError, match="refused"):
            IpfsStore(f"{stub.url}/wrong/path", backoff=0.01).put_json({"a": 2})
    with IpfsStub(fail_next=5) as stub, pytest.raises(StorageError, match="after 2 attempts"):
        IpfsStore(f"{stub.url}/file/create", retries=2, backoff=0.01).put_json({"a": 3})
