"""fetching.py's rules against real HTTP servers on loopback (threads) and real files: what a URL
chosen by someone else can make a reader fetch. No chain, no Prefect."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ogpu_prefect.fetching import StorageError, UntrustedUrlError, checked_address, fetch_json, is_trusted
from ogpu_prefect.storage import IPFS_GATEWAY, LocalStore

from ..fetch_servers import RedirectServer, SecretServer, TrickleServer


def test_dot_segments_are_resolved_before_the_prefix_check() -> None:
    allowed = ["http://127.0.0.1:8000/payloads/"]
    assert is_trusted("http://127.0.0.1:8000/payloads/a/../b.json", allowed)
    for url in [
        "http://127.0.0.1:8000/payloads/../secret",
        "http://127.0.0.1:8000/payloads/%2e%2e/secret",
        "http://127.0.0.1:8000/payloads/.%2E/.%2e/secret",
        "http://127.0.0.1:8000/payloads%2f..%2fsecret",
        "http://127.0.0.1:8000/payloads/..\\secret",
    ]:
        assert not is_trusted(url, allowed), url


def test_a_dot_segment_url_is_never_requested() -> None:
    with SecretServer() as internal:
        allowed = [f"{internal.url}/payloads/"]
        with pytest.raises(UntrustedUrlError):
            fetch_json(f"{internal.url}/payloads/../secret", allowed_origins=allowed)
        assert internal.paths == []
        # inside the prefix, the resolved path is what the server is asked for
        assert fetch_json(f"{internal.url}/payloads/x/../a.json", allowed_origins=allowed) == {"db_password": "hunter2"}
        assert internal.paths == ["/payloads/a.json"]


def test_loopback_and_files_are_not_read_unless_allowed(tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text('{"db_password": "hunter2"}')
    with SecretServer() as internal:
        for url in [f"{internal.url}/config.json", f"file://{secret}", f"http://localhost:{internal.port}/x"]:
            with pytest.raises(UntrustedUrlError):
                fetch_json(url, allowed_origins=[IPFS_GATEWAY])
        assert internal.hits == 0
    assert fetch_json(f"file://{secret}", allowed_origins=[f"file://{tmp_path}/"]) == {"db_password": "hunter2"}


def test_a_named_host_must_resolve_to_a_public_address() -> None:
    """What a prefix naming a host (not an address) lets through: a name resolving to loopback,
    a private range or link-local (DNS rebinding, a cloud's metadata service) is refused; an
    address the prefix names literally is the operator's choice."""
    for address in ["127.0.0.1", "10.1.2.3", "192.168.1.1", "169.254.169.254", "::1", "fd00::1", "0.0.0.0"]:
        with pytest.raises(UntrustedUrlError):
            checked_address(address, 80, "storage.example.com")
        assert checked_address(address, 80, address) == address
    assert checked_address("8.8.8.8", 443, "dns.example.com") == "8.8.8.8"
    with pytest.raises(UntrustedUrlError):
        checked_address("10.0.0.1", 80, "localhost")


def test_an_internal_name_may_resolve_to_a_private_address_never_to_loopback_or_link_local() -> None:
    """A prefix naming a host no public DNS answers for (one label, `.internal`, `.home.arpa`): the
    operator's own storage on a private network, by the name its resolver gives it (the old code
    refused every private address a name resolved to, so only a literal address could be allowed).
    Loopback and link-local (a cloud's metadata service) stay refused; public names are unchanged."""
    for name in ["storage", "storage.internal", "ipfs.lab.internal", "nas.home.arpa", "STORAGE.Internal."]:
        for address in ["10.1.2.3", "192.168.1.1", "172.16.0.9", "fd00::1"]:
            assert checked_address(address, 80, name) == address
        for address in ["127.0.0.1", "169.254.169.254", "::1", "0.0.0.0", "fe80::1"]:
            with pytest.raises(UntrustedUrlError):
                checked_address(address, 80, name)
    for name in ["storage.example.com", "internal.example.com", "localhost", "10.0.0.1", ""]:
        with pytest.raises(UntrustedUrlError):
            checked_address("10.1.2.3", 80, name)


def test_a_symlink_or_fifo_under_an_allowed_folder_is_not_followed_out(tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text('{"db_password": "hunter2"}')
    store = tmp_path / "store"
    store.mkdir()
    (store / "link.json").symlink_to(outside)
    os.mkfifo(store / "fifo.json")
    allowed = [f"file://{store}"]
    with pytest.raises(UntrustedUrlError):
        fetch_json(f"file://{store}/link.json", allowed_origins=allowed)
    t0 = time.monotonic()
    with pytest.raises(StorageError, match="not a regular file"):
        fetch_json(f"file://{store}/fifo.json", allowed_origins=allowed)
    assert time.monotonic() - t0 < 10, "a FIFO's open must not block the fetch"


@pytest.mark.parametrize("headers_too", [False, True])
def test_the_deadline_is_for_the_whole_read(headers_too: bool) -> None:
    with TrickleServer(every_s=0.3, for_s=8.0, headers_too=headers_too) as slow:
        t0 = time.monotonic()
        with pytest.raises(StorageError, match="longer than 2 s"):
            fetch_json(f"{slow.url}/config.json", allowed_origins=[slow.url], timeout=2)
        assert time.monotonic() - t0 < 7, "cut by the 2 s deadline, not at the 8 s trickle's end"


def test_redirects_are_followed_only_inside_the_allowed_set(tmp_path: Path) -> None:
    with SecretServer() as internal, LocalStore(tmp_path) as store:
        url = store.put_json({"function_name": "echo"})
        with RedirectServer(f"{internal.url}/secret") as hop, RedirectServer(url) as good_hop:
            with pytest.raises(UntrustedUrlError):
                fetch_json(f"{hop.url}/config.json", allowed_origins=[hop.url, store.base_url])
            assert hop.hits == 1 and internal.hits == 0
            got = fetch_json(f"{good_hop.url}/c.json", allowed_origins=[good_hop.url, store.base_url])
            assert got == {"function_name": "echo"}


def test_a_body_over_the_cap_is_not_read(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_text("[" + "1," * 400_000 + "1]")
    with LocalStore(tmp_path) as store:
        with pytest.raises(StorageError, match="payload limit"):
            fetch_json(f"{store.base_url}/big.json", allowed_origins=[store.base_url])
        assert fetch_json(f"{store.base_url}/big.json", allowed_origins=[store.base_url], max_bytes=10**6)[0] == 1


def test_the_config_origins_job_variable_takes_urls_only() -> None:
    from pydantic import ValidationError

    from ogpu_prefect.worker.configuration import ProviderVariables

    schema = ProviderVariables.model_json_schema()["properties"]["config_origins"]
    assert schema["title"] == "Config origins" and "refused unread" in schema["description"]
    assert ProviderVariables(config_origins=["http://10.0.0.5:8080/payloads/"]).config_origins == [
        "http://10.0.0.5:8080/payloads/"
    ]
    with pytest.raises(ValidationError, match="config_origins"):
        ProviderVariables(config_origins=["payloads/"])
