"""Run parameters that name files or URLs (stream_batch `inputs`, scheduled_batch `inbox`,
`pattern`): read only under the input roots, with memory bounded per line and per file. Real
files, a real HTTP server on loopback (a thread); no chain, no Prefect server."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from pathlib import Path

import fsspec
import pytest

from ogpu_prefect.chain.errors import InvalidInputError
from ogpu_prefect.stream_io import MAX_LINE_CHARS, InputStream, check_under_roots

from ..fetch_servers import SecretServer


@pytest.fixture
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    inbox = tmp_path / "in"
    inbox.mkdir()
    monkeypatch.setenv("PREFECT_INTEGRATIONS_OGPU_INPUT_ROOTS", json.dumps([str(inbox)]))
    return inbox


def test_inputs_at_an_internal_url_are_refused_unread(roots: Path) -> None:
    with SecretServer() as internal:
        with pytest.raises(InvalidInputError) as e:
            InputStream.open(f"{internal.url}/data.jsonl", "echo").check_all()
        assert e.value.field == "inputs" and internal.hits == 0


def test_inputs_outside_the_roots_are_refused(roots: Path, tmp_path: Path) -> None:
    private = tmp_path / "private.jsonl"
    private.write_text('{"db_password": "hunter2"}\n')
    (roots / "link.jsonl").symlink_to(private)
    (roots / "ok.jsonl").write_text('{"x": 1}\n')
    for bad in [str(private), f"file://{private}", f"{roots}/../private.jsonl", f"file://{roots}/link.jsonl"]:
        with pytest.raises(InvalidInputError) as e:
            InputStream.open(bad, "echo").check_all()
        assert e.value.field == "inputs", bad
    assert InputStream.open(f"file://{roots}/ok.jsonl", "echo").check_all() == 1
    (roots / "sub").mkdir()
    assert InputStream.open(f"{roots}/sub/../ok.jsonl", "echo").check_all() == 1


def test_an_allowed_http_root_must_resolve_where_it_says() -> None:
    assert check_under_roots("inputs", "https://8.8.8.8/in/a.jsonl", ["https://8.8.8.8/in/"])
    with pytest.raises(InvalidInputError):
        check_under_roots("inputs", "https://8.8.8.8/other/a.jsonl", ["https://8.8.8.8/in/"])
    with pytest.raises(InvalidInputError):
        check_under_roots("inputs", "s3://bucket/in/a::s3://x", ["s3://bucket/in/"])


def test_one_huge_line_in_a_gz_is_refused_without_holding_it(roots: Path) -> None:
    path = roots / "huge.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write('{"ok": 1}\n"')
        for _ in range(16):
            f.write("x" * 1024 * 1024)
        f.write('"\n')
    tracemalloc.start()
    try:
        with pytest.raises(InvalidInputError, match=f"line 2 of .* over {MAX_LINE_CHARS:,} characters"):
            InputStream.open(f"file://{path}", "echo").check_all()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 6 * 1024 * 1024, f"{peak:,} bytes held for one line"


def test_an_inbox_pattern_cannot_leave_the_inbox(roots: Path, tmp_path: Path) -> None:
    from ogpu_prefect.flows.scheduled_batch import inbox_files

    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "secret.json").write_text('{"db_password": "hunter2"}')
    (roots / "done").mkdir()
    (roots / "done" / "old.json").write_text("[1]")
    (roots / "a.json").write_text("[1]")
    (roots / "escape.json").symlink_to(tmp_path / "private" / "secret.json")
    fs, root = fsspec.core.url_to_fs(f"file://{roots}")
    for pattern in ["../private/*.json", "/etc/*", "~/x", "sub/../../private/*", "file:///etc/*"]:
        with pytest.raises(InvalidInputError) as e:
            inbox_files(fs, root, pattern)
        assert e.value.field == "pattern"
    assert inbox_files(fs, root, "*.json") == [f"{roots}/a.json"]
    assert inbox_files(fs, root, "**/*.json") == [f"{roots}/a.json"]


def test_a_big_json_inbox_file_is_refused_before_it_is_parsed(roots: Path) -> None:
    from ogpu_prefect.flows.scheduled_batch import MAX_JSON_FILE_BYTES, InboxInputs

    big = roots / "big.json"
    with open(big, "w") as f:
        f.write("[")
        for _ in range(3 * MAX_JSON_FILE_BYTES // 4096):
            f.write('{"x": "' + "y" * 4080 + '"},')
        f.write("1]")
    fs, _ = fsspec.core.url_to_fs(f"file://{roots}")
    tracemalloc.start()
    try:
        with pytest.raises(InvalidInputError, match="limit of a .json file") as e:
            InboxInputs(fs, [str(big)])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert e.value.field == "inbox"
    assert peak < 2 * MAX_JSON_FILE_BYTES, f"{peak:,} bytes held for a {big.stat().st_size:,}-byte file"
