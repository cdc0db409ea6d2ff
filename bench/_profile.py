"""py-spy profiles of a bench's processes: `start_profilers` attaches `py-spy record` to each,
`stop_profilers` stops them and prints each one's top functions (inclusive and self, by share of
samples in threads that were not idle); `dump_threads` counts where a process' threads are at one
moment. py-spy runs through `uvx` (not a project dependency)."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path


def start_profilers(targets: dict[str, int], out: Path, rate: int) -> list[tuple[str, subprocess.Popen[bytes], Path]]:
    profs = []
    for name, pid in targets.items():
        path = out / f"pyspy-{name}.txt"
        cmd = ["uvx", "py-spy", "record", "--nonblocking", "--rate", str(rate), "--format", "raw"]
        proc = subprocess.Popen(
            [*cmd, "-o", str(path), "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        profs.append((name, proc, path))
    time.sleep(2.0)  # py-spy attaches
    return profs


def stop_profilers(profs: list[tuple[str, subprocess.Popen[bytes], Path]], top: int = 14) -> None:
    for _, proc, _ in profs:
        proc.send_signal(signal.SIGINT)
    for name, proc, path in profs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if not path.exists():
            print(f"py-spy {name}: no profile written")
            continue
        inclusive: Counter[str] = Counter()
        leaf: Counter[str] = Counter()
        total = 0
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = [_frame(f) for f in stack.split(";")]
            for f in set(frames):
                inclusive[f] += n
            leaf[frames[-1]] += n
        print(f"py-spy {name}: {total} samples (threads not idle)")
        print("  inclusive: " + "; ".join(f"{f} {100 * c / total:.0f}%" for f, c in _interesting(inclusive, top)))
        print("  self:      " + "; ".join(f"{f} {100 * c / total:.0f}%" for f, c in leaf.most_common(top)))


def dump_threads(targets: dict[str, int], after: float, out: list[str]) -> threading.Thread:
    """After `after` seconds, `py-spy dump` of each target: its threads counted by where they are
    (the innermost frame, and the innermost of ogpu_prefect's), appended to `out` as text."""

    def run() -> None:
        time.sleep(after)
        for name, pid in targets.items():
            done = subprocess.run(["uvx", "py-spy", "dump", "-p", str(pid)], capture_output=True, text=True)
            where: Counter[str] = Counter()
            for block in done.stdout.split("\nThread ")[1:]:
                lines = [ln.strip() for ln in block.splitlines()[1:] if ln.strip().endswith(")")]
                if not lines:
                    continue
                ours = next((ln for ln in lines if "ogpu_prefect" in ln), "-")
                where[f"{_frame(lines[0])} <- {_frame(ours) if ours != '-' else '-'}"] += 1
            out.append(
                f"py-spy dump {name} at {after:.0f}s into the batch ({sum(where.values())} threads): "
                + "; ".join(f"{n}x {w}" for w, n in where.most_common(12))
            )

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _frame(f: str) -> str:
    """`function (path/file.py:line)` -> `function (file.py)`: one entry per function."""
    m = re.match(r"(.*) \((.*?):\d+\)$", f)
    return f"{m.group(1)} ({Path(m.group(2)).name})" if m else f


def _interesting(inclusive: Counter[str], top: int) -> list[tuple[str, int]]:
    boring = ("<module>", "run (threading.py)", "_bootstrap", "worker (thread.py)", "run (thread.py)")
    return [(f, c) for f, c in inclusive.most_common(top * 4) if not any(b in f for b in boring)][:top]
