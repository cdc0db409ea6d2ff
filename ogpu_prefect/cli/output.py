"""What the everyday commands share about values and output: amounts (`1.5ogpu`, `0.01 OGPU`,
`10000 wei`, a bare integer of wei) parsed and printed in both units, `--json` as exactly one
object on stdout, a readable rendering otherwise, and a progress bar on stderr when it is a TTY.
Light on purpose: imported by `--help`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

MAX_AMOUNT = 2**256 - 1
AMOUNT_HELP = "1.5ogpu, 0.01 OGPU, 10 gwei, 10000 wei, or a whole number of wei"


def parse_amount(text: str) -> int:
    """An amount in wei: a bare whole number is wei, anything else goes through the package's
    one amount parser (`ogpu_prefect.amounts`: a unit, exact). Raises ValueError, never echoing
    a key-shaped value."""
    bare = text.strip() if isinstance(text, str) else ""
    if bare.isascii() and bare.isdigit():
        if len(bare) >= 64:  # 64 digits are a private key's shape, and no sane amount
            raise ValueError("this looks like a private key, which does not belong here")
        wei: int | None = int(bare)
    else:
        from ..amounts import amount_problem

        wei, why = amount_problem(text)
        if wei is None:
            raise ValueError(why)
    if wei < 0 or wei > MAX_AMOUNT:
        raise ValueError("out of range (0 to 2^256 - 1 wei)")
    return wei


def amount(text: str) -> int:
    """parse_amount as an argparse type: its error names the option ("argument --amount: ...")."""
    try:
        return parse_amount(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def whole_number(low: int, high: int | None = None, what: str = "a whole number") -> Callable[[str], int]:
    """An argparse type: a whole number from `low` to `high` (the text is never echoed: it may be
    a pasted key)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}") from None
        if value < low or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"{low} to {high}"
            raise argparse.ArgumentTypeError(f"expected {bounds}, got {value}")
        return value

    return parse


def listen_address(text: str) -> str:
    """An argparse type: an address of this host to listen on that is also the one put in the URLs
    other hosts use (a wildcard such as 0.0.0.0 listens everywhere but names no host)."""
    import ipaddress

    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an IP address of this host, got {text[:60]!r}") from None
    if address.is_unspecified:
        raise argparse.ArgumentTypeError(
            f"{text} names no host, and the URLs printed for other hosts would carry it: give this host's address"
        )
    return str(address)


seconds = whole_number(1, what="a whole number of seconds")
positive_int = whole_number(1)


def ogpu_text(wei: int) -> str:
    """`1500000000000000000` -> `"1.5"` (exact, no exponent)."""
    from ..amounts import format_ogpu

    return format_ogpu(wei).removesuffix(" OGPU")


def money(wei: int) -> dict[str, Any]:
    """An amount for output: `{"wei": 1500000000000000000, "ogpu": "1.5"}`."""
    return {"wei": int(wei), "ogpu": ogpu_text(int(wei))}


def _is_money(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"wei", "ogpu"}


def render(obj: Any, indent: int = 0) -> list[str]:
    """A JSON-able value as indented `key: value` lines; amounts as `1.5 OGPU (1500... wei)`."""
    pad = "  " * indent
    if isinstance(obj, dict):
        lines = []
        for key, value in obj.items():
            if _is_money(value):
                lines.append(f"{pad}{key}: {value['ogpu']} OGPU ({value['wei']} wei)")
            elif isinstance(value, dict):
                lines += [f"{pad}{key}:", *render(value, indent + 1)] if value else [f"{pad}{key}: -"]
            elif isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
                lines.append(f"{pad}{key}:")
                for item in value:
                    sub = render(item, indent + 2)
                    lines += [f"{pad}  - {sub[0].strip()}", *sub[1:]] if sub else [f"{pad}  -"]
            elif isinstance(value, list):
                lines.append(f"{pad}{key}: {', '.join(map(str, value)) or '-'}")
            else:
                lines.append(f"{pad}{key}: {'-' if value is None else value}")
        return lines
    if isinstance(obj, list):
        return [line for item in obj for line in render(item, indent)]
    return [f"{pad}{obj}"]


def emit(args: argparse.Namespace, obj: dict[str, Any], title: str | None = None) -> None:
    """`--json`: exactly one JSON object on stdout; otherwise a title and the rendered lines."""
    if getattr(args, "json", False):
        print(json.dumps(obj))
        return
    if title:
        print(title)
    print("\n".join(render(obj, 1 if title else 0)))


def note(text: str) -> None:
    """A line for the person at the terminal: stderr, so `--json` stdout stays one object."""
    print(text, file=sys.stderr)


class Progress:
    """`label [#####.....] done/total` redrawn in place on stderr, only when it is a terminal (a
    pipe or a log gets nothing)."""

    WIDTH = 30

    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        self.total, self.label = total, label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = total > 0 and bool(getattr(self.stream, "isatty", lambda: False)())
        self.done = 0
        self._drawn = 0.0

    def __enter__(self) -> Progress:
        self.update(0)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, done: int) -> None:
        self.done = min(done, self.total)
        now = time.monotonic()
        if not self.enabled or (now - self._drawn < 0.1 and self.done < self.total):
            return  # a redraw at most every 0.1 s: a fast loop must not flood the terminal
        self._drawn = now
        filled = self.WIDTH * self.done // self.total
        bar = "#" * filled + "." * (self.WIDTH - filled)
        self.stream.write(f"\r{self.label} [{bar}] {self.done}/{self.total}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._drawn = 0.0
            self.update(self.done)
            self.stream.write("\n")
            self.stream.flush()
            self.enabled = False
