"""`--smoke`, one way for every bench: the same code path at tiny sizes, in seconds, still ending
with its key=value line. tests/test_bench_smoke.py runs each bench so, so none rots unseen."""

from __future__ import annotations

import argparse
from typing import Any


def parse_args(ap: argparse.ArgumentParser, **tiny: Any) -> argparse.Namespace:
    """`ap`'s arguments; with `--smoke`, `tiny` replaces the defaults (options given still win)."""
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: does the bench still run? (CI)")
    if ap.parse_known_args()[0].smoke:
        ap.set_defaults(**tiny)
    return ap.parse_args()
