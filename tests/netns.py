"""Hosts on this machine: Linux network namespaces joined by a bridge of their own (in a switch
namespace), each with one address on it and its own loopback. Nothing has an address on the bridge
in this machine's own namespace and there is no route out, so traffic between the hosts stays
among them. Needs root (`ip netns add`);
`netns_refusal()` says why it cannot run here, for a skip."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

SUBNET = "10.231.0"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def netns_refusal() -> str | None:
    """Why network namespaces cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"ogpu-probe-{os.getpid()}"
    try:
        made = _ip("netns", "add", probe, check=False)
    except FileNotFoundError:
        return "the `ip` command (iproute2) is not installed"
    if made.returncode:
        return f"`ip netns add` is not permitted here: {made.stderr.strip()[:200]}"
    _ip("netns", "del", probe, check=False)
    return None


class Hosts:
    """`names` as hosts `ogpu-<name>-<tag>` at SUBNET.<n>; `with Hosts(...) as hosts:` removes
    every process left in them, the namespaces and the links on exit, failure or not."""

    def __init__(self, names: Mapping[str, int]) -> None:
        self.tag = secrets.token_hex(2)  # two runs at once never share a name
        self.numbers = dict(names)
        self.switch = f"ogpu-switch-{self.tag}"
        self.procs: list[subprocess.Popen[bytes]] = []

    def host_name(self, name: str) -> str:
        """The name every host resolves to `name`'s address (`/etc/netns/<ns>/hosts`, which `ip
        netns exec` puts in place of /etc/hosts): a private network's internal DNS."""
        return f"{name}.internal"

    def ns(self, name: str) -> str:
        return f"ogpu-{name}-{self.tag}"

    def address(self, name: str) -> str:
        return f"{SUBNET}.{self.numbers[name]}"

    def __enter__(self) -> Hosts:
        try:
            # The bridge lives in a namespace of its own (the switch): bridged frames then meet that
            # namespace's empty netfilter tables, not this machine's (with br_netfilter and, e.g.,
            # Docker's FORWARD policy DROP, the hosts could not reach one another).
            _ip("netns", "add", self.switch)
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
            for name, n in self.numbers.items():
                ns, outer, inner = self.ns(name), f"o{self.tag}h{n}", f"o{self.tag}i{n}"
                _ip("netns", "add", ns)
                etc = Path("/etc/netns") / ns
                etc.mkdir(parents=True, exist_ok=True)
                names = "".join(f"{self.address(other)} {self.host_name(other)}\n" for other in self.numbers)
                (etc / "hosts").write_text(f"127.0.0.1 localhost\n{names}")
                _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
                _ip("link", "set", outer, "netns", self.switch)
                _ip("-n", self.switch, "link", "set", outer, "master", "br0", "up")
                _ip("link", "set", inner, "netns", ns)
                for cmd in (
                    ["link", "set", "lo", "up"],
                    ["link", "set", inner, "name", "eth0"],
                    ["addr", "add", f"{self.address(name)}/24", "dev", "eth0"],
                    ["link", "set", "eth0", "up"],
                ):
                    _ip("-n", ns, *cmd)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def command(self, name: str, cmd: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns(name), *cmd]

    def run(
        self, name: str, cmd: Sequence[str], env: Mapping[str, str], timeout: float = 300, check: bool = True
    ) -> str:
        """`cmd` on host `name`; its stdout (`check`: an AssertionError with its stderr if it failed)."""
        done = subprocess.run(self.command(name, cmd), env=dict(env), capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0 or not check, f"{' '.join(cmd)} on {name}: {done.stderr[-3000:]}"
        return done.stdout

    def spawn(
        self, name: str, cmd: Sequence[str], env: Mapping[str, str], log: Path, **kw: object
    ) -> subprocess.Popen[bytes]:
        """`cmd` on host `name` in a session of its own (`ip netns exec` execs it: same pid)."""
        with open(log, "ab") as out:
            proc = subprocess.Popen(  # type: ignore[call-overload]
                self.command(name, cmd), env=dict(env), stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, **kw,
            )  # fmt: skip
        self.procs.append(proc)
        return proc

    def pids(self, name: str) -> list[int]:
        """Every process in host `name` (what `ip netns pids` lists)."""
        done = _ip("netns", "pids", self.ns(name), check=False)
        return [int(p) for p in done.stdout.split()]

    def listening(self, name: str) -> list[tuple[str, int, str]]:
        """(address, port, program) of each TCP socket listening in host `name` (`ss -ltnpH` there)."""
        out = subprocess.run(self.command(name, ["ss", "-ltnpH"]), capture_output=True, text=True, check=True).stdout
        found = []
        for line in out.splitlines():
            fields = line.split()
            address, _, port = fields[3].rpartition(":")
            program = fields[5].split('"')[1] if len(fields) > 5 and '"' in fields[5] else "?"
            found.append((address.strip("[]"), int(port), program))
        return found

    def close(self) -> None:
        for proc in self.procs:  # ours first, by group, then whatever they left in our hosts
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        for name in self.numbers:
            for pid in self.pids(name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(self.pids(n) for n in self.numbers) and time.monotonic() < deadline:
            time.sleep(0.1)
        for name in self.numbers:  # a namespace's links go with it (a veth pair goes as a whole)
            _ip("netns", "del", self.ns(name), check=False)
            shutil.rmtree(Path("/etc/netns") / self.ns(name), ignore_errors=True)
        _ip("netns", "del", self.switch, check=False)
        for n in self.numbers.values():  # a pair made before its move into the switch failed
            _ip("link", "del", f"o{self.tag}h{n}", check=False)
