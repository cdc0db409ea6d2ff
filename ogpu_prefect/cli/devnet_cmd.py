"""`ogpu-prefect devnet up|down|status`: the local chain with the OpenGPU contracts."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .output import listen_address, whole_number


def register(sub: Any) -> None:
    dev = sub.add_parser("devnet", help="the local chain with the OpenGPU contracts").add_subparsers(
        dest="action", required=True
    )
    up = dev.add_parser("up", help="start anvil, deploy, wire and fund (idempotent)")
    up.add_argument(
        "--port", type=whole_number(1, 65535, "a port number"), default=None, help="RPC port (default: a free one)"
    )
    up.add_argument(
        "--host",
        type=listen_address,
        default="127.0.0.1",
        metavar="ADDRESS",
        help="the address anvil listens on and the profile's RPC URL names: one of this host's, for other "
        "machines to reach (default 127.0.0.1)",
    )
    up.add_argument(
        "--block-time",
        type=block_time,
        default=None,
        metavar="S",
        help="mine a block every S seconds, as a real chain does (default: one block per transaction)",
    )
    up.add_argument(
        "--gas-limit", type=_gas_limit, default=None, metavar="G", help="each block's gas limit (default 300000000)"
    )
    up.add_argument("--json", action="store_true", help="print the profile as one JSON object")
    up.set_defaults(func=_up)
    down = dev.add_parser("down", help="stop the devnet started by `up` (only that anvil)")
    down.set_defaults(func=_down)
    status = dev.add_parser("status", help="is the devnet up?")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)


def block_time(text: str) -> float:
    """--block-time as seconds, checked by the devnet's own rule (imported only when given)."""
    from ..chain.errors import InvalidInputError
    from ..chain.mining import check_mining

    try:
        return float(check_mining(float(text), None) or 0)
    except InvalidInputError as e:
        raise argparse.ArgumentTypeError(str(e).partition(": ")[2]) from None
    except ValueError:
        raise argparse.ArgumentTypeError("expected seconds, e.g. 1 or 0.5") from None


def _gas_limit(text: str) -> int:
    from ..chain.mining import MIN_GAS_LIMIT

    return whole_number(MIN_GAS_LIMIT, None, "a whole number of gas")(text)


def _up(args: argparse.Namespace) -> int:
    from ..chain import devnet
    from ..chain.network import profile_path
    from .context import anvil, home

    profile = devnet.read_profile(profile_path(home()))
    fresh = profile is None
    if profile is None:
        if args.port is not None and devnet.port_answers(args.port, args.host):
            from ..chain.errors import InvalidInputError

            raise InvalidInputError(
                "--port",
                f"port {args.port} already answers (another process): pick another one, or omit --port for a free one",
            )
        log = home() / "anvil.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        net = devnet.start(
            args.port,
            detach=True,
            log_path=log,
            block_time=args.block_time,
            gas_limit=args.gas_limit,
            anvil=anvil(),
            host=args.host,
        )
        devnet.write_profile(net, profile_path(home()))
        profile = net.profile
    if args.json:
        print(json.dumps(profile))
        return 0
    print(f"devnet {'started' if fresh else 'already running'}: {profile['rpc_url']} (chain id {profile['chain_id']})")
    for name, addr in profile["contracts"].items():
        print(f"  {name:<11} {addr}")
    print("accounts (anvil's public test keys; never use them elsewhere):")
    for role, acct in profile["accounts"].items():
        print(f"  {role:<10} {acct['address']}")
    print(f"profile: {profile_path(home())} (private keys there; --json prints them)")
    return 0


def _down(args: argparse.Namespace) -> int:
    from ..chain import devnet
    from ..chain.network import profile_path
    from .context import home

    path = profile_path(home())
    if not path.exists():
        print("no devnet profile; nothing to stop")
        return 0
    profile = devnet.load_profile(path)
    outcome = devnet.stop_own_anvil(profile)
    if outcome == "foreign":
        print(
            f"pid {profile['anvil_pid']} is not the anvil this profile started (it is another process): "
            f"left alone; profile removed"
        )
    else:
        print("devnet stopped" if outcome == "stopped" else "devnet was not running; profile removed")
    path.unlink()
    return 0


def _status(args: argparse.Namespace) -> int:
    from ..chain import devnet
    from ..chain.network import profile_path
    from .context import home

    profile = devnet.read_profile(profile_path(home()))
    if args.json:  # one object either way (a script reads `running`)
        print(json.dumps({**profile, "running": True} if profile else {"running": False}))
    else:
        print(f"devnet running at {profile['rpc_url']}" if profile else "devnet not running")
    return 0 if profile else 1
