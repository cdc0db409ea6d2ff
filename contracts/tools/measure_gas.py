#!/usr/bin/env python3
"""Deploys the shipped artifacts on a fresh anvil with raw legacy (EIP-155, type 0, gasPrice only)
transactions and prints the gas of every lifecycle step: the figures in contracts/README.md.

It replays tests/test_chain.py's lifecycle (the devnet's accounts and funding, a 28-byte config
URL, "https://ipfs.example/ipfs/<task>" as response URL, each delivery method from the same funded
state, as each test there rolls the devnet back) without importing ogpu_prefect, so that it also
checks the bytecode on an old chain:

    .venv/bin/python contracts/tools/measure_gas.py                      # anvil's default hardfork
    .venv/bin/python contracts/tools/measure_gas.py --hardfork berlin    # pre-London: no base fee
    .venv/bin/python contracts/tools/measure_gas.py --hardfork berlin --deploy-only

Needs eth_account and eth_abi (web3's dependencies). anvil runs with --prune-history and is
stopped on exit.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from eth_abi import encode
from eth_account import Account
from eth_utils import keccak, to_checksum_address

HERE = Path(__file__).resolve().parent
ANVIL = HERE.parent / "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
ARTIFACTS = HERE.parents[1] / "ogpu_prefect/chain/artifacts"
MNEMONIC = "test test test test test test test test test test test junk"  # anvil's default: public
NAMES = ["Manager", "Terminal", "Nexus", "Vault", "Controller", "Source", "Task", "Response"]
ZERO = "0x" + "00" * 20
SP = "(address,string,uint8,uint256,uint256,uint256,bool,string,uint8,uint256)"
TP = "(address,string,uint256,uint256)"
RP = "(address,address,string,uint256)"
META, CONFIG = "http://127.0.0.1:9/meta.json", "http://127.0.0.1:9/task.json"
ETHER = 10**18


def calldata(sig: str, types: tuple | list = (), args: tuple | list = ()) -> bytes:
    return keccak(text=sig)[:4] + encode(list(types), list(args))


class Node:
    def __init__(self, hardfork: str | None) -> None:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        cmd = [
            str(ANVIL),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--silent",
            "--prune-history",
            "--gas-limit",
            "300000000",
        ]
        if hardfork:
            cmd += ["--hardfork", hardfork]
        self.proc = subprocess.Popen(cmd)
        self.url = f"http://127.0.0.1:{port}"
        self._id = 0
        self.nonces: dict[str, int] = {}
        for _ in range(200):
            try:
                self.chain_id = int(self.rpc("eth_chainId"), 16)
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("anvil did not answer")
        self.gas_price = int(self.rpc("eth_gasPrice"), 16)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)

    def rpc(self, method: str, params: list | None = None):
        self._id += 1
        body = json.dumps({"jsonrpc": "2.0", "id": self._id, "method": method, "params": params or []}).encode()
        req = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
        out = json.loads(urllib.request.urlopen(req, timeout=10).read())
        if "error" in out:
            raise RuntimeError(f"{method}: {out['error']}")
        return out["result"]

    def send(self, acct, to: str | None, data: bytes = b"", value: int = 0, gas: int = 6_000_000) -> dict:
        """Signs a legacy EIP-155 transaction (no type, no fee caps) and waits for its receipt."""
        nonce = self.nonces.get(acct.address)
        if nonce is None:
            nonce = int(self.rpc("eth_getTransactionCount", [acct.address, "pending"]), 16)
        self.nonces[acct.address] = nonce + 1
        tx = {
            "nonce": nonce,
            "gasPrice": self.gas_price,
            "gas": gas,
            "value": value,
            "data": data,
            "chainId": self.chain_id,
        }
        if to:
            tx["to"] = to
        raw = acct.sign_transaction(tx).raw_transaction.hex()
        raw = raw if raw.startswith("0x") else "0x" + raw
        assert int(raw[2:4], 16) >= 0xC0, "not a legacy transaction (an RLP list)"
        h = self.rpc("eth_sendRawTransaction", [raw])
        for _ in range(2000):
            receipt = self.rpc("eth_getTransactionReceipt", [h])
            if receipt:
                break
            time.sleep(0.005)
        else:
            raise RuntimeError(f"no receipt for {h}")
        if receipt["status"] != "0x1":
            raise RuntimeError(f"reverted ({int(receipt['gasUsed'], 16):,} gas used): {h}")
        return receipt

    def view(self, to: str, data: bytes) -> str:
        return self.rpc("eth_call", [{"to": to, "data": "0x" + data.hex()}, "latest"])

    def now(self) -> int:
        return int(self.rpc("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)


def gas(receipt: dict) -> int:
    return int(receipt["gasUsed"], 16)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hardfork", help="anvil --hardfork (default: anvil's own default, as the devnet)")
    ap.add_argument("--artifacts", type=Path, default=ARTIFACTS)
    ap.add_argument("--deploy-only", action="store_true", help="deploy and ask the views, no lifecycle")
    opts = ap.parse_args()
    art = {n: json.loads((opts.artifacts / f"{n}.json").read_text()) for n in NAMES}
    Account.enable_unaudited_hdwallet_features()
    # ogpu_prefect.chain.devnet's ROLES: admin, client, master, provider1, provider2, ...
    admin, client, _, p1, p2 = (Account.from_mnemonic(MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}") for i in range(5))

    node = Node(opts.hardfork)
    try:
        block = node.rpc("eth_getBlockByNumber", ["latest", False])
        print(
            f"anvil --hardfork {opts.hardfork or '(default)'}: chain id {node.chain_id}, "
            f"gasPrice {node.gas_price}, baseFeePerGas {block.get('baseFeePerGas')}; legacy transactions"
        )
        addr: dict[str, str] = {}
        deploy_gas: dict[str, int] = {}

        def deploy(name: str, types: list | tuple = (), args: list | tuple = ()) -> None:
            r = node.send(admin, None, bytes.fromhex(art[name]["bytecode"][2:]) + encode(list(types), list(args)))
            addr[name], deploy_gas[name] = to_checksum_address(r["contractAddress"]), gas(r)

        deploy("Manager")
        deploy("Terminal", ["address", "address"], [addr["Manager"], ZERO])
        deploy("Nexus", ["address"] * 3, [addr["Manager"], addr["Terminal"], ZERO])
        deploy("Vault", ["address"] * 3, [addr["Manager"], addr["Nexus"], addr["Terminal"]])
        deploy("Controller", ["address"] * 3, [addr["Nexus"], addr["Terminal"], addr["Vault"]])
        deploy("Source", [SP], [(ZERO, "", 0, 0, 0, 0, False, "", 0, 0)])
        deploy("Task", [TP, "uint8", "address"], [(ZERO, "", 0, 0), 0, addr["Nexus"]])
        deploy("Response", [RP], [(ZERO, ZERO, "", 0)])
        print("deployed: " + ", ".join(f"{n} {g:,} gas" for n, g in deploy_gas.items()))
        is_admin = int(
            node.view(
                addr["Manager"],
                calldata("hasRole(bytes32,address)", ["bytes32", "address"], [b"\0" * 32, admin.address]),
            ),
            16,
        )
        nexus_manager = to_checksum_address("0x" + node.view(addr["Nexus"], calldata("manager()"))[-40:])
        sources = int(node.view(addr["Nexus"], calldata("getSourceCount()")), 16)
        print(
            f"views: Manager.hasRole(DEFAULT_ADMIN_ROLE, deployer) = {bool(is_admin)}; "
            f"Nexus.manager() = Manager: {nexus_manager == addr['Manager']}; Nexus.getSourceCount() = {sources}"
        )
        assert is_admin and nexus_manager == addr["Manager"] and sources == 0
        if opts.deploy_only:
            return

        def tx(acct, name: str, sig: str, types: list | tuple = (), args: list | tuple = (), value: int = 0) -> dict:
            return node.send(acct, addr[name], calldata(sig, types, args), value)

        def logged(receipt: dict, event: str, index: int = 0) -> str:
            topic = "0x" + keccak(text=event).hex().removeprefix("0x")
            for log in receipt["logs"]:
                if log["topics"][0] == topic and log["address"].lower() == addr["Nexus"].lower():
                    return to_checksum_address("0x" + log["data"][2 + 64 * index + 24 : 2 + 64 * (index + 1)])
            raise RuntimeError(f"no {event} log")

        # Wiring and funding as ogpu_prefect.chain.devnet does.
        tx(admin, "Terminal", "setVault(address)", ["address"], [addr["Vault"]])
        tx(admin, "Nexus", "setVault(address)", ["address"], [addr["Vault"]])
        tx(admin, "Nexus", "setImplementations(address,address)", ["address"] * 2, [addr["Source"], addr["Response"]])
        tx(admin, "Controller", "setTaskImplementation(address)", ["address"], [addr["Task"]])
        for role, who in [("CONTROLLER", addr["Controller"]), ("JUDGE", admin.address)]:
            tx(admin, "Manager", "grantRole(bytes32,address)", ["bytes32", "address"], [keccak(text=role), who])
        tx(admin, "Vault", "setMinLockupPerSource(uint256)", ["uint256"], [ETHER])
        tx(admin, "Vault", "setMaxUnbondingPeriod(uint256)", ["uint256"], [60])
        tx(client, "Vault", "deposit(address)", ["address"], [client.address], value=1000 * ETHER)
        for p in (p1, p2):
            tx(p, "Vault", "deposit(address)", ["address"], [p.address], value=20 * ETHER)
            tx(p, "Vault", "lock(uint256)", ["uint256"], [20 * ETHER])
        funded = node.rpc("evm_snapshot")

        def publish_source(c, method: int) -> tuple[str, int]:
            r = tx(
                c,
                "Nexus",
                f"publishSource({SP})",
                [SP],
                [(c.address, META, 3, 10**16, ETHER, 3600, False, "", method, node.now())],
            )
            return logged(r, "SourcePublished(address)"), gas(r)

        def register(p, source: str, env: int = 1) -> int:
            return gas(
                tx(
                    p,
                    "Nexus",
                    "register(address,address,uint8)",
                    ["address", "address", "uint8"],
                    [source, p.address, env],
                )
            )

        def publish_task(c, source: str) -> tuple[str, int]:
            r = tx(c, "Controller", f"publishTask({TP})", [TP], [(source, CONFIG, node.now() + 600, 10**17)])
            return logged(r, "TaskPublished(address,address)"), gas(r)

        def attempt(p, task: str, suggested: int) -> int:
            return gas(
                tx(
                    p,
                    "Nexus",
                    "attempt(address,address,uint256)",
                    ["address", "address", "uint256"],
                    [task, p.address, suggested],
                )
            )

        for method, name in [(1, "FIRST_RESPONSE"), (0, "MANUAL_CONFIRMATION")]:
            node.rpc("evm_revert", [funded])
            funded = node.rpc("evm_snapshot")
            node.nonces.clear()
            c, p = client, p1
            source, g_source = publish_source(c, method)
            print(f"{name}: publishSource {g_source:,}, register {register(p, source):,}")
            for k in ("first task", "next task"):
                task, g_publish = publish_task(c, source)
                steps = [("publishTask", g_publish), ("attempt", attempt(p, task, 10**17))]
                r = tx(
                    p,
                    "Nexus",
                    f"submitResponse({RP})",
                    [RP],
                    [(task, p.address, f"https://ipfs.example/ipfs/{task}", 9 * 10**16)],
                )
                steps.append(("submitResponse", gas(r)))
                if method == 0:
                    response = logged(r, "ResponseSubmitted(address,address)")
                    steps.append(
                        (
                            "confirmResponse",
                            gas(tx(c, "Controller", "confirmResponse(address)", ["address"], [response])),
                        )
                    )
                print(
                    f"  {k}: " + ", ".join(f"{s} {g:,}" for s, g in steps) + f"; lifecycle {sum(g for _, g in steps):,}"
                )

        source, _ = publish_source(client, 1)
        published = [publish_task(client, source) for _ in range(3)]
        print(
            "publishTask x3 on a fresh source, the earlier ones left open: " + ", ".join(f"{g:,}" for _, g in published)
        )
        print(
            f"register: a provider's second source {register(p1, source):,}, "
            f"a provider's first source as its second registrant {register(p2, source, 2):,}"
        )
        task = published[0][0]
        print(f"attempt: first attempter {attempt(p1, task, 0):,}, second attempter {attempt(p2, task, 0):,}")
    finally:
        node.stop()


if __name__ == "__main__":
    main()
