"""`ogpu-prefect server up|down|status`: a Prefect server stack under the `home` setting, embedded
(SQLite, the default) or production-shaped (PostgreSQL + Redis, several API servers)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .output import listen_address, whole_number

STACKS = ("sqlite", "production")


def register(sub: Any) -> None:
    srv = sub.add_parser("server", help="a Prefect server stack: SQLite, or PostgreSQL + Redis").add_subparsers(
        dest="action", required=True
    )
    up = srv.add_parser("up", help="start the stack and print the API URL(s) to export (idempotent)")
    up.add_argument("--stack", choices=STACKS, default="sqlite", help="sqlite (default, embedded) or production")
    up.add_argument("--servers", type=whole_number(1, 16), default=1, help="API servers (production only; default 1)")
    up.add_argument(
        "--host",
        type=listen_address,
        default="127.0.0.1",
        metavar="ADDRESS",
        help="the address the API servers listen on and their UI calls: one of this host's, for workers and "
        "clients on other machines (default 127.0.0.1; PostgreSQL and Redis stay on loopback)",
    )
    up.add_argument("--json", action="store_true", help="print the stack as one JSON object")
    up.set_defaults(func=_up)
    down = srv.add_parser("down", help="stop the stack `up` started (only its own processes)")
    down.add_argument("--json", action="store_true")
    down.set_defaults(func=_down)
    status = srv.add_parser("status", help="is the stack up and answering? (exit 1 if not)")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)


def _up(args: argparse.Namespace) -> int:
    from ..stack import PrefectStack

    stack = PrefectStack(stack=args.stack, servers=args.servers, host=args.host)
    was_running = stack.status()["running"]
    info = stack.start()
    if args.json:
        print(json.dumps({**info.to_json(), "started": not was_running}))
        return 0
    what = f"{len(info.api_urls)} API server(s)"
    if info.redis:
        what += f", background services, PostgreSQL ({info.database_url}), Redis {info.redis[0]}:{info.redis[1]}"
    print(f"Prefect {info.stack} stack {'already running' if was_running else 'started'}: {what}")
    print(f"export PREFECT_API_URL={info.api_url}")
    for url in info.api_urls[1:]:
        print(f"  (or another API server of the same stack: PREFECT_API_URL={url})")
    print(f"Prefect UI: {info.api_url.removesuffix('/api')}")
    print(f"state and logs: {stack.dir}")
    return 0


def _down(args: argparse.Namespace) -> int:
    from ..stack import PrefectStack

    stopped = PrefectStack().stop()
    if args.json:
        print(json.dumps({"stopped": stopped}))
    else:
        print(f"stopped: {', '.join(stopped)}" if stopped else "no stack running; nothing to stop")
    return 0


def _status(args: argparse.Namespace) -> int:
    from ..stack import PrefectStack

    status = PrefectStack().status()
    if args.json:
        print(json.dumps(status))
    elif status["running"]:
        print(f"Prefect {status['stack']} stack running: {', '.join(status['api_urls'])}")
    elif status["components"]:
        down = [name for name, ok in status["components"].items() if not ok]
        print(f"Prefect {status['stack']} stack not healthy: {', '.join(down)} not answering")
    else:
        print("no Prefect stack running")
    return 0 if status["running"] else 1
