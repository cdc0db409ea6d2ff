"""The embedded default: anvil on 127.0.0.1 (or another address of this host: `host`, for a chain
other machines reach) with the protocol deployed, wired and funded.

`start()` returns a running `Devnet`; its `profile` (RPC URL, chain id, addresses, accounts by
role) is what `ogpu-prefect devnet up --json` prints and what `Network.from_profile` reads.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rlp
from eth_utils import to_canonical_address, to_checksum_address

from .._loopback import free_port
from .abi import keccak, spec
from .mining import check_mining, set_block_time
from .network import Network
from .rpc import Rpc
from .signing import Signer
from .tx import Call, TxSender

CHAIN_ID = 31337
ETHER = 10**18
# anvil's accounts from its default test mnemonic: public, for local development only.
DEV_KEYS = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
)
ROLES = ("admin", "client", "master", "provider1", "provider2", "provider3", "client2", "agent")


@dataclass(frozen=True)
class DevnetSettings:
    """What the devnet funds and sets. Amounts in wei."""

    client_deposit: int = 1_000 * ETHER
    provider_stake: int = 20 * ETHER
    min_lockup_per_source: int = 1 * ETHER
    unbonding_period: int = 60


ANVIL_VERSION = "1.7.1"  # contracts/package.json's pin (tests/unit/test_find_anvil.py keeps them equal)


def find_anvil(configured: str | None = None) -> str:
    """`configured` (the caller's `anvil` setting, PREFECT_INTEGRATIONS_OGPU_ANVIL); else a
    checkout's set-up's, anvil on PATH, foundryup's, or foundry's npm package in node_modules here,
    above, or npm's global one. The chain layer reads no settings: its callers pass them."""
    from .errors import InvalidInputError

    setting = "PREFECT_INTEGRATIONS_OGPU_ANVIL"
    if configured:  # said explicitly: never silently another one
        if Path(configured).is_file() and os.access(configured, os.X_OK):
            return configured
        raise InvalidInputError(setting, f"{configured} is not an executable file")
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    package, cwd = f"@foundry-rs/anvil-{sys.platform}-{arch}", Path.cwd()
    checkout = Path(__file__).resolve().parents[2] / "contracts"  # `npm --prefix contracts ci`'s
    roots = [checkout, cwd, *cwd.parents, Path("/usr/local/lib"), Path("/usr/lib")]
    npm = [root / "node_modules" / package / "bin" / "anvil" for root in roots]
    for found in [npm[0], shutil.which("anvil"), Path.home() / ".foundry" / "bin" / "anvil", *npm[1:]]:
        if found and os.access(found, os.X_OK):
            return str(found)
    raise InvalidInputError(
        setting,
        f"anvil not found: run `npm install {package}@{ANVIL_VERSION}` here (in a checkout: npm --prefix "
        "contracts ci), or set this setting to an anvil binary's path",
    )


def start_anvil(
    port: int,
    *,
    detach: bool = False,
    log_path: Path | None = None,
    hardfork: str | None = None,
    block_time: float | None = None,
    anvil: str | None = None,
    host: str = "127.0.0.1",
) -> subprocess.Popen[bytes]:
    """Starts anvil on host:port and waits until it answers. `hardfork`: e.g. "berlin" for a
    chain whose blocks carry no base fee (legacy transactions); `block_time`: a block every so many
    seconds from the start (default: one per transaction); `anvil`: the binary (find_anvil's
    `configured`); `host`: the address it listens on (an address of this host that other
    machines reach, for a chain they share)."""
    cmd = [find_anvil(anvil), "--host", host, "--port", str(port), "--silent", "--prune-history"]
    cmd += ["--chain-id", str(CHAIN_ID), "--gas-limit", "300000000"]  # a batch of a thousand tasks fits in a few blocks
    if hardfork:
        cmd += ["--hardfork", hardfork]
    if block_time is not None:
        cmd += ["--block-time", str(block_time)]
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115  (anvil keeps it)
    proc = subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=detach)
    rpc = Rpc(f"http://{_in_url(host)}:{port}", timeout=2, outage_s=0)
    deadline = time.monotonic() + 15
    while True:
        try:
            rpc.call("eth_chainId")
            return proc
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"anvil did not start on port {port} (exit {proc.poll()})") from None
            time.sleep(0.05)
        finally:
            pass


def _in_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host  # an IPv6 address, bracketed


def _create_address(sender: str, nonce: int) -> str:
    return to_checksum_address(keccak(rlp.encode([to_canonical_address(sender), nonce]))[12:])


def deploy_protocol(
    rpc: Rpc, admin: Signer, *, settings: DevnetSettings = DevnetSettings(), judge: str | None = None
) -> tuple[dict[str, str], dict[str, int]]:
    """Deploys and wires the eight contracts from `admin`. -> (addresses by name, gas by step).

    Deployments are pipelined: their addresses follow from the admin's nonces, so the wiring
    calls can be signed before anything is mined."""
    sender = TxSender(rpc, admin, CHAIN_ID)
    base = int(rpc.call("eth_getTransactionCount", [admin.address, "pending"]), 16)
    names = ["Manager", "Terminal", "Nexus", "Vault", "Controller", "Source", "Task", "Response"]
    addr = {n: _create_address(admin.address, base + i) for i, n in enumerate(names)}
    zero = "0x" + "00" * 20
    from .structs import ResponseParams, SourceParams, TaskParams
    from .types import DeliveryMethod

    ctor_args: dict[str, tuple[Any, ...]] = {
        "Manager": (),
        "Terminal": (addr["Manager"], zero),
        "Nexus": (addr["Manager"], addr["Terminal"], zero),
        "Vault": (addr["Manager"], addr["Nexus"], addr["Terminal"]),
        "Controller": (addr["Nexus"], addr["Terminal"], addr["Vault"]),
        "Source": (SourceParams(zero, "", 0, 0, 0, 0),),
        "Task": (TaskParams(zero, "", 0, 0), DeliveryMethod.MANUAL_CONFIRMATION, addr["Nexus"]),
        "Response": (ResponseParams(zero, zero, "", 0),),
    }
    deploys = [Call("", spec(n).deploy_data(*ctor_args[n]), 0, f"deploy {n}") for n in names]

    def tx(name: str, fn: str, *args: Any) -> Call:
        return Call(addr[name], spec(name).fn(fn).encode(args), 0, f"{name}.{fn}")

    controller_role = keccak(text="CONTROLLER")
    judge_role = keccak(text="JUDGE")
    wiring = [
        tx("Terminal", "setVault", addr["Vault"]),
        tx("Nexus", "setVault", addr["Vault"]),
        tx("Nexus", "setImplementations", addr["Source"], addr["Response"]),
        tx("Controller", "setTaskImplementation", addr["Task"]),
        tx("Manager", "grantRole", controller_role, addr["Controller"]),
        tx("Manager", "grantRole", judge_role, judge or admin.address),
        tx("Vault", "setMinLockupPerSource", settings.min_lockup_per_source),
        tx("Vault", "setMaxUnbondingPeriod", settings.unbonding_period),
    ]
    pending = sender.send(deploys, sender.estimate(deploys))
    assert [p.nonce for p in pending] == list(range(base, base + len(names))), "nonces moved under the deployer"
    pending += sender.send(wiring, 200_000)
    receipts = sender.wait(pending)
    for n, r in zip(names, receipts):
        if r.contract_address != addr[n]:
            raise RuntimeError(f"{n} deployed at {r.contract_address}, expected {addr[n]}")
    gas = {n: r.gas_used for n, r in zip(names, receipts)}
    return addr, gas


@dataclass
class Devnet:
    """A running devnet. `profile` is its public description (JSON-able)."""

    rpc_url: str
    contracts: dict[str, str]
    accounts: dict[str, dict[str, str]]
    pid: int
    deploy_gas: dict[str, int] = field(default_factory=dict)
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def profile(self) -> dict[str, Any]:
        return {
            "name": "devnet",
            "rpc_url": self.rpc_url,
            "chain_id": CHAIN_ID,
            "contracts": self.contracts,
            "accounts": self.accounts,
            "anvil_pid": self.pid,
        }

    @property
    def network(self) -> Network:
        return Network.from_profile(self.profile)

    def key(self, role: str) -> str:
        return self.accounts[role]["private_key"]

    def address(self, role: str) -> str:
        return self.accounts[role]["address"]

    def snapshot(self) -> str:
        return str(Rpc(self.rpc_url).call("evm_snapshot"))

    def revert(self, snapshot_id: str) -> None:
        """Rolls the chain back to `snapshot_id` and empties the transaction pool: anvil keeps the
        pool across a revert, and a leftover transaction would hold a nonce the rewound account
        is about to reuse."""
        rpc = Rpc(self.rpc_url)
        if not rpc.call("evm_revert", [snapshot_id]):
            raise RuntimeError(f"evm_revert({snapshot_id}) failed")
        rpc.call("anvil_dropAllTransactions")

    def stop(self) -> None:
        if self._proc is None:  # started by another process (`devnet up`)
            stop_pid(self.pid)
            return
        self._proc.terminate()  # our child: waiting reaps it (stop_pid's liveness probe sees a zombie as alive)
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def stop_pid(pid: int) -> bool:
    """Stops an anvil by pid; False if it was not running."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return True


def fund_accounts(rpc: Rpc, accounts: dict[str, Signer], contracts: dict[str, str], settings: DevnetSettings) -> None:
    """The client gets a vault balance; each provider a locked stake. Pipelined per account."""
    vault = spec("Vault")

    def call(fn: str, arg: object, value: int) -> Call:
        return Call(contracts["Vault"], vault.fn(fn).encode((arg,)), value, f"Vault.{fn}")

    pending = []
    for role, signer in accounts.items():
        calls: list[Call] = []
        if role.startswith("client"):
            calls.append(call("deposit", signer.address, settings.client_deposit))
        elif role.startswith("provider"):
            calls += [
                call("deposit", signer.address, settings.provider_stake),
                call("lock", settings.provider_stake, 0),
            ]
        if calls:
            sender = TxSender(rpc, signer, CHAIN_ID)
            pending.append((sender, sender.send(calls, 120_000)))
    for sender, p in pending:
        sender.wait(p)


def start(
    port: int | None = None,
    *,
    detach: bool = False,
    settings: DevnetSettings = DevnetSettings(),
    log_path: Path | None = None,
    hardfork: str | None = None,
    block_time: float | None = None,
    gas_limit: int | None = None,
    anvil: str | None = None,
    host: str = "127.0.0.1",
) -> Devnet:
    """Starts anvil, deploys, wires and funds. `detach` lets the devnet outlive this process.

    `block_time` (seconds) makes it mine a block every so often, as a real chain does, instead of
    one per transaction; `gas_limit` caps each block's gas (applied once the protocol is deployed:
    a contract's creation needs more). A whole number of seconds applies once the protocol is
    deployed and funded (on demand: ~2 s, against ~5 s with 1 s blocks from the start); anvil
    switches only whole seconds at run time, so a fraction is given to anvil from the start.
    `host`: the address anvil listens on and the profile's RPC URL names (default loopback)."""
    block_time = check_mining(block_time, gas_limit)
    port = port or free_port(host)
    whole = block_time is None or block_time.is_integer()
    proc = start_anvil(
        port,
        detach=detach,
        log_path=log_path,
        hardfork=hardfork,
        block_time=None if whole else block_time,
        anvil=anvil,
        host=host,
    )
    try:
        rpc = Rpc(f"http://{_in_url(host)}:{port}")
        signers = {role: Signer(key) for role, key in zip(ROLES, DEV_KEYS)}
        node_accounts = [to_checksum_address(a) for a in rpc.call("eth_accounts")]
        if node_accounts[: len(ROLES)] != [s.address for s in signers.values()]:
            raise RuntimeError("anvil's accounts are not the default test mnemonic's")
        contracts, gas = deploy_protocol(rpc, signers["admin"], settings=settings)
        fund_accounts(rpc, signers, contracts, settings)
        if gas_limit is not None:
            rpc.call("evm_setBlockGasLimit", [hex(gas_limit)])
        if whole and block_time is not None:
            set_block_time(rpc, block_time)
    except BaseException:
        proc.kill()
        raise
    accounts = {role: {"address": s.address, "private_key": key} for (role, s), key in zip(signers.items(), DEV_KEYS)}
    return Devnet(rpc.url, contracts, accounts, proc.pid, gas, None if detach else proc)


def load_profile(path: Path) -> dict[str, Any]:
    """A devnet profile file, checked: a corrupt or foreign file is an InvalidInputError naming it."""
    from .errors import InvalidInputError

    try:
        profile = json.loads(path.read_text())
        Network.from_profile(profile)
        int(profile["anvil_pid"])
        profile["accounts"]["client"]["address"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InvalidInputError(
            "profile",
            f"{path} is not a devnet profile ({type(e).__name__}); remove it, then run `ogpu-prefect devnet up`",
        ) from None
    return profile


def read_profile(path: Path) -> dict[str, Any] | None:
    """The profile of the devnet `up` started (at `path`: `profile_path(home)`), if it is still
    answering."""
    if not path.exists():
        return None
    profile = load_profile(path)
    try:
        Rpc(profile["rpc_url"], timeout=2, outage_s=0).call("eth_chainId")
    except Exception:
        return None
    return profile


def port_answers(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something listens on host:`port`."""
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def stop_own_anvil(profile: dict[str, Any]) -> str:
    """Stops the anvil a profile names, only if that pid is an anvil serving the profile's port
    (a pid can be reused by any process after a reboot or a crash): "stopped", "not running" or
    "foreign" (left alone)."""
    pid = int(profile["anvil_pid"])
    port = str(profile["rpc_url"]).rsplit(":", 1)[-1].strip("/")
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "not running"
    args = [a.decode(errors="replace") for a in argv]
    ours = (
        bool(args)
        and Path(args[0]).name == "anvil"
        and "--port" in args
        and args[args.index("--port") + 1 : args.index("--port") + 2] == [port]
    )
    if not ours:
        return "foreign"
    return "stopped" if stop_pid(pid) else "not running"


def write_profile(devnet: Devnet, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(devnet.profile, indent=1) + "\n")
    path.chmod(0o600)
    return path
