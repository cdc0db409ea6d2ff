"""What a streaming batch (streaming.py) reads and writes, without holding it in memory.

- **Inputs**: a list, any iterable (from Python, inside a flow), or an fsspec URL of JSON lines
  (`.gz`/`.bz2`/... by suffix). A URL or a sized collection (a list) is checked whole before the
  first transaction (one streaming pass over a file); a one-pass iterable (a generator) is checked
  item by item as it is consumed.
- **Results**: JSON lines (one `TaskResult` per input, in the order they end) written in parts
  under a results folder, and `manifest.json` beside them: the batch's checkpoint. A part is
  written before the manifest that names it, so the manifest is the truth: a part it does not
  name (a crash between the two writes) is removed when the batch resumes, and its results are
  found again on chain (their tasks are reused, not re-published).
"""

from __future__ import annotations

import bisect
import json
import os
import time
from collections.abc import Iterable, Iterator, Sized
from dataclasses import dataclass, field
from typing import Any

from .chain.errors import InvalidInputError
from .models import TaskInput, TaskResult
from .storage import canonical_json, check_write_url
from .validation import refuse_secret

MANIFEST = "manifest.json"
PART_LINES = 1000
"""Results per part file."""
PART_EVERY_S = 10.0
"""A part is written at least this often while results come in (a crash loses no more)."""
MAX_LINE_CHARS = 1024 * 1024
"""Longest line of a JSON-lines input read (1 Mi characters; an input is at most 512 KiB as
canonical JSON): memory per line stays bounded whatever a file holds."""


def check_item(index: int, value: Any, function_name: str | None) -> TaskInput:
    """One input as a TaskInput, checked as publishing would (JSON, size, no key): typed errors
    name `inputs[index]`."""
    field_name = f"inputs[{index}]"
    refuse_secret(field_name, value)
    try:
        item = TaskInput.coerce(value, function_name)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(field_name, str(e).splitlines()[0]) from None
    canonical_json(item.to_config(), field=f"{field_name}.data")
    return item


def json_lines(f: Any, where: str, field: str) -> Iterator[Any]:
    """The values of an open JSON-lines text file, one at a time (blank lines skipped). A line
    is read at most MAX_LINE_CHARS (+1) at a time: a longer one raises InvalidInputError naming
    `field` before it is held whole, as does a line that is not JSON."""
    n = 0
    while line := f.readline(MAX_LINE_CHARS + 2):
        n += 1
        if len(line.rstrip("\n")) > MAX_LINE_CHARS:
            raise InvalidInputError(field, f"line {n} of {where} is over {MAX_LINE_CHARS:,} characters")
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except ValueError:
            raise InvalidInputError(field, f"line {n} of {where} is not JSON") from None


def read_jsonl(url: str, storage_options: dict[str, Any] | None = None) -> Iterator[Any]:
    """The values of a JSON-lines file at an fsspec URL (`json_lines`), `.gz`/... by suffix."""
    import fsspec

    with fsspec.open(url, "rt", compression="infer", encoding="utf-8", **(storage_options or {})) as f:
        yield from json_lines(f, url, "inputs")


def check_under_roots(field: str, value: str, roots: list[str] | None = None) -> str:
    """`value` (a path or an fsspec URL given as a run parameter) as a URL, if it lies under one
    of `roots` (default: the `input_roots` setting): dot segments resolved and symlinks followed
    first; an http(s) host must resolve to an address the root allows (fetching.py's rules).
    Otherwise InvalidInputError naming `field`, before anything is read."""
    from .fetching import UntrustedUrlError, checked_address, matching_origin
    from .settings import get_settings

    refuse_secret(field, value)
    if "::" in value:
        raise InvalidInputError(field, "chained fsspec URLs (a::b) are not accepted as run parameters")
    roots = get_settings().input_roots if roots is None else roots
    url, allowed = _as_url(value), [_as_url(r) for r in roots]
    root = matching_origin(url, allowed)
    if root is None:
        raise InvalidInputError(
            field, f"{value[:200]} is outside the input roots ({', '.join(roots) or 'none'}: the "
            "PREFECT_INTEGRATIONS_OGPU_INPUT_ROOTS setting)"
        )  # fmt: skip
    scheme, _, rest = url.partition("://")
    if scheme in ("http", "https"):
        from urllib.parse import urlsplit

        u, r = urlsplit(url), urlsplit(root)
        try:
            checked_address(u.hostname or "", u.port or (443 if scheme == "https" else 80), r.hostname or "")
        except (UntrustedUrlError, OSError) as e:
            raise InvalidInputError(field, str(e)) from None
    return url


def _as_url(value: str) -> str:
    """A local path or file:// URL as an absolute file:// URL (symlinks resolved); others as they are."""
    if value.startswith("file://"):
        value = value[len("file://") :]
    elif "://" in value:
        return value
    return "file://" + os.path.realpath(value)


@dataclass
class InputStream:
    """The batch's inputs, numbered: `items()` yields (index, TaskInput) skipping what is done."""

    source: Any
    function_name: str | None = None
    total: int | None = None  # known for a list or a file (after `check_all`)

    @classmethod
    def open(cls, inputs: Any, function_name: str | None) -> InputStream:
        if isinstance(inputs, str):
            refuse_secret("inputs", inputs)
            if "://" in inputs:
                check_write_url("inputs", inputs)  # a protocol fsspec knows
            elif not os.path.exists(inputs):
                raise InvalidInputError("inputs", f"no such file: {inputs[:200]}")
            return cls(check_under_roots("inputs", inputs), function_name)
        if isinstance(inputs, (bytes, dict)) or not isinstance(inputs, Iterable):
            raise InvalidInputError("inputs", f"a list, an iterable or a JSON-lines URL, not {type(inputs).__name__}")
        return cls(inputs, function_name, len(inputs) if _reiterable(inputs) else None)

    def _values(self) -> Iterator[Any]:
        return read_jsonl(self.source) if isinstance(self.source, str) else iter(self.source)

    def check_all(self) -> int:
        """Checks every input of a list or a file (one pass, nothing kept); returns how many. An
        iterable is left alone (it can be consumed once): its items are checked as they come."""
        if not isinstance(self.source, str) and not _reiterable(self.source):
            return -1
        n = 0
        try:
            for n, value in enumerate(self._values(), start=1):
                check_item(n - 1, value, self.function_name)
        except FileNotFoundError:
            raise InvalidInputError("inputs", f"no such file: {str(self.source)[:200]}") from None
        except OSError as e:
            raise InvalidInputError("inputs", f"cannot read {str(self.source)[:200]}: {e}") from None
        if not n:
            raise InvalidInputError("inputs", "no inputs")
        self.total = n
        return n

    def items(self, done: IndexRanges) -> Iterator[tuple[int, TaskInput]]:
        for i, value in enumerate(self._values()):
            if i not in done:
                yield i, check_item(i, value, self.function_name)


def _reiterable(value: Any) -> bool:
    """A sized collection (a list, a tuple, anything with len() that is not a one-pass iterator)."""
    return isinstance(value, Sized) and not isinstance(value, Iterator)


class IndexRanges:
    """A set of input indexes as sorted [start, end) ranges: inputs end roughly in order, so a
    batch of any size is a handful of ranges."""

    def __init__(self, ranges: Iterable[Iterable[int]] = ()) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        for start, end in ranges:
            for i in range(int(start), int(end)):
                self.add(i)

    def __contains__(self, i: int) -> bool:
        k = bisect.bisect_right(self.starts, i) - 1
        return k >= 0 and i < self.ends[k]

    def __len__(self) -> int:
        return sum(e - s for s, e in zip(self.starts, self.ends))

    def add(self, i: int) -> None:
        if i in self:
            return
        k = bisect.bisect_right(self.starts, i)  # the range after i
        joins_left = k > 0 and self.ends[k - 1] == i
        joins_right = k < len(self.starts) and self.starts[k] == i + 1
        if joins_left and joins_right:
            self.ends[k - 1] = self.ends[k]
            del self.starts[k], self.ends[k]
        elif joins_left:
            self.ends[k - 1] = i + 1
        elif joins_right:
            self.starts[k] = i
        else:
            self.starts.insert(k, i)
            self.ends.insert(k, i + 1)

    def to_json(self) -> list[list[int]]:
        return [[s, e] for s, e in zip(self.starts, self.ends)]


@dataclass
class ResultsWriter:
    """Results as JSON-lines parts under `url` (an fsspec folder) and the manifest naming them."""

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)  # credentials
    part_lines: int = PART_LINES
    every_s: float = PART_EVERY_S
    manifest: dict[str, Any] = field(default_factory=dict)
    done: IndexRanges = field(default_factory=IndexRanges)
    _lines: list[str] = field(default_factory=list)
    _last_write: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        import fsspec

        check_write_url("results_url", self.url)
        self._fs, root = fsspec.core.url_to_fs(self.url, **self.storage_options)
        self._root = root.rstrip("/")
        self._fs.makedirs(self._root, exist_ok=True)
        protocols = (self._fs.protocol,) if isinstance(self._fs.protocol, str) else tuple(self._fs.protocol)
        self._local = "file" in protocols

    def resume(self, identity: dict[str, Any]) -> None:
        """Loads the manifest of an earlier run of this batch (refusing another batch's folder)
        and removes parts it does not name; a new folder starts an empty manifest."""
        path = f"{self._root}/{MANIFEST}"
        saved = json.loads(self._fs.cat_file(path)) if self._fs.exists(path) else None
        if saved is not None:
            theirs = {k: saved.get(k) for k in identity}
            if theirs != identity:
                raise InvalidInputError(
                    "results_url", f"{self.url} holds the results of another batch ({theirs}); use another folder"
                )
            self.manifest = saved
            self.done = IndexRanges(saved.get("done", []))
        else:
            self.manifest = {**identity, "parts": [], "counts": {}, "done": [], "complete": False}
        named = {p["name"] for p in self.manifest["parts"]}
        for path in self._fs.glob(f"{self._root}/part-*.jsonl"):
            if path.rsplit("/", 1)[-1] not in named:
                self._fs.rm(path)

    def add(self, result: TaskResult) -> None:
        self._lines.append(result.model_dump_json(exclude={"chain_status"}))
        self.done.add(result.index)
        counts = self.manifest["counts"]
        counts[result.status] = counts.get(result.status, 0) + 1
        if result.status == "finalized":
            self.manifest["paid_wei"] = str(int(self.manifest.get("paid_wei", "0")) + result.payment)
        if len(self._lines) >= self.part_lines or time.monotonic() - self._last_write >= self.every_s:
            self.flush()

    def flush(self, *, complete: bool = False, **state: Any) -> None:
        """Writes the buffered results as a part, then the manifest (with `state` merged in)."""
        if self._lines:
            name = f"part-{len(self.manifest['parts']):06d}.jsonl"
            self._write(name, ("\n".join(self._lines) + "\n").encode())
            self.manifest["parts"].append({"name": name, "results": len(self._lines)})
            self._lines.clear()
        self.manifest.update(state, done=self.done.to_json(), complete=complete, updated_at=time.time())
        self._write(MANIFEST, json.dumps(self.manifest, indent=1).encode())
        self._last_write = time.monotonic()

    def _write(self, name: str, body: bytes) -> None:
        path = f"{self._root}/{name}"
        if self._local:  # a reader never sees half a file
            tmp = f"{path}.tmp"
            with open(tmp, "wb") as f:
                f.write(body)
            os.replace(tmp, path)
        else:  # object stores write whole objects
            self._fs.pipe_file(path, body)

    @property
    def part_urls(self) -> list[str]:
        return [f"{self.url.rstrip('/')}/{p['name']}" for p in self.manifest["parts"]]

    @property
    def manifest_url(self) -> str:
        return f"{self.url.rstrip('/')}/{MANIFEST}"


def read_results(url: str, storage_options: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Every result a streaming batch wrote under `url` (its results folder), part by part, as
    the manifest names them."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    root = root.rstrip("/")
    manifest = json.loads(fs.cat_file(f"{root}/{MANIFEST}"))
    for part in manifest["parts"]:
        with fs.open(f"{root}/{part['name']}", "rt", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)
