"""`ogpu-prefect`: the devnet, the demo, the protocol walk-through, and everyday source / task /
vault / provider commands. Heavy packages are imported inside the commands, so `--help` stays
instant. Bad input is one line on stderr naming the option, and a non-zero exit."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from . import devnet_cmd, provider_cmd, server_cmd, source_cmd, task_cmd, vault_cmd
from .output import positive_int

GROUPS = (devnet_cmd, server_cmd, source_cmd, task_cmd, vault_cmd, provider_cmd)


class Parser(argparse.ArgumentParser):
    """argparse echoes what it refuses (`unrecognized arguments: --key 0x...`): a key pasted on
    the command line is not printed back."""

    def error(self, message: str) -> NoReturn:
        from ..chain.signing import mask_keys

        super().error(mask_keys(message, everything=True))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="ogpu-prefect", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    demo = sub.add_parser(
        "demo", help="the main job end to end: devnet, Prefect server, two provider workers, a sentiment batch"
    )
    demo.add_argument("--tasks", type=positive_int, default=300, help="sentences to analyse (default 300, at most 300)")
    demo.add_argument("--keep", action="store_true", help="leave everything running for exploring the UI")
    demo.add_argument(
        "--block-time",
        type=devnet_cmd.block_time,
        default=None,
        metavar="S",
        help="the devnet mines a block every S seconds (default: one block per transaction)",
    )
    demo.set_defaults(func=_demo)
    life = sub.add_parser("lifecycle", help="one task through the raw protocol lifecycle, step by step, with gas")
    life.set_defaults(func=_lifecycle)
    return parser


def _demo(args: argparse.Namespace) -> int:
    from ..demo import main

    return main(tasks=args.tasks, keep=args.keep, block_time=args.block_time)


def _lifecycle(args: argparse.Namespace) -> int:
    from ..lifecycle import main
    from .context import anvil

    return main(anvil=anvil())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except Exception as e:  # one clear line, not a traceback: typed errors carry their field
        from ..chain.errors import InvalidInputError, OGPUError

        if not isinstance(e, OGPUError):
            raise
        print(f"ogpu-prefect: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, InvalidInputError) else 1
