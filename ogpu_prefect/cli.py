"""`ogpu-prefect`: the devnet, the demo, and (later) everyday source / task / vault commands.
Heavy packages are imported inside the commands, so `--help` stays instant."""

from __future__ import annotations

import argparse
import json
import sys


def _devnet_up(args: argparse.Namespace) -> int:
    from .chain import devnet

    profile = devnet.read_profile()
    if profile is None:
        log = devnet.state_dir() / "anvil.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        net = devnet.start(args.port, detach=True, log_path=log)
        devnet.write_profile(net)
        profile = net.profile
        fresh = True
    else:
        fresh = False
    if args.json:
        print(json.dumps(profile))
        return 0
    print(f"devnet {'started' if fresh else 'already running'}: {profile['rpc_url']} (chain id {profile['chain_id']})")
    for name, addr in profile["contracts"].items():
        print(f"  {name:<11} {addr}")
    print("accounts (anvil's public test keys; never use them elsewhere):")
    for role, acct in profile["accounts"].items():
        print(f"  {role:<10} {acct['address']}")
    print(f"profile: {devnet.profile_path()} (private keys there; --json prints them)")
    return 0


def _devnet_down(args: argparse.Namespace) -> int:
    from .chain import devnet

    path = devnet.profile_path()
    if not path.exists():
        print("no devnet profile; nothing to stop")
        return 0
    profile = json.loads(path.read_text())
    stopped = devnet.stop_pid(int(profile["anvil_pid"]))
    path.unlink()
    print("devnet stopped" if stopped else "devnet was not running; profile removed")
    return 0


def _devnet_status(args: argparse.Namespace) -> int:
    from .chain import devnet

    profile = devnet.read_profile()
    if args.json:
        print(json.dumps(profile))
    else:
        print(f"devnet running at {profile['rpc_url']}" if profile else "devnet not running")
    return 0 if profile else 1


def _demo(args: argparse.Namespace) -> int:
    from .demo import main

    return main(tasks=args.tasks, keep=args.keep)


def _lifecycle(args: argparse.Namespace) -> int:
    from .lifecycle import main

    return main()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ogpu-prefect", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("devnet", help="the local chain with the OpenGPU contracts").add_subparsers(
        dest="action", required=True
    )
    up = dev.add_parser("up", help="start anvil, deploy, wire and fund (idempotent)")
    up.add_argument("--port", type=int, default=None, help="RPC port (default: a free one)")
    up.add_argument("--json", action="store_true", help="print the profile as one JSON object")
    up.set_defaults(func=_devnet_up)
    down = dev.add_parser("down", help="stop the devnet started by `up`")
    down.set_defaults(func=_devnet_down)
    status = dev.add_parser("status", help="is the devnet up?")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_devnet_status)
    demo = sub.add_parser(
        "demo", help="the main job end to end: devnet, Prefect server, two provider workers, a sentiment batch"
    )
    demo.add_argument("--tasks", type=int, default=300, help="sentences to analyse (default 300)")
    demo.add_argument("--keep", action="store_true", help="leave everything running for exploring the UI")
    demo.set_defaults(func=_demo)
    life = sub.add_parser("lifecycle", help="one task through the raw protocol lifecycle, step by step, with gas")
    life.set_defaults(func=_lifecycle)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
