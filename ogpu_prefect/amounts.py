"""Amounts of OGPU: exact, in wei, and written with their unit wherever a person types them.

`Amount` is the type of the flows' money parameters (`payment`, `budget`). From Python an `int`
is wei (as everywhere in this package) and a `Decimal` is OGPU; in a run form, on the command line
or in a prefect.yaml it is a string with its unit: `"0.01 OGPU"`, `"10 gwei"`,
`"10000000000000000 wei"`. A float is refused (0.1 as a float is not 0.1 OGPU), and so is a string
without a unit (wei or OGPU? a factor of 10^18 is not a guess to make with money). After
validation an amount is an `int` of wei; it is shown in OGPU (`format_ogpu`).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation, localcontext
from typing import Annotated, Any

from pydantic import PlainValidator, WithJsonSchema

from .chain.errors import InvalidInputError
from .validation import E, contains_secret, refuse_secret

WEI_PER_OGPU = 10**18
UNITS = {"ogpu": WEI_PER_OGPU, "gwei": 10**9, "wei": 1}
PATTERN = r"^\s*([0-9][0-9_]*(?:\.[0-9]+)?)\s*([oO][gG][pP][uU]|[gG][wW][eE][iI]|[wW][eE][iI])\s*$"
EXAMPLES = ["0.01 OGPU", "10 gwei", "10000000000000000 wei"]
_AMOUNT = re.compile(PATTERN)
_HOW = "an amount with its unit ('0.01 OGPU', '10 gwei', '10000000000000000 wei'), an int of wei or a Decimal of OGPU"


def amount_problem(value: Any) -> tuple[int | None, str]:
    """(wei, "") for a good amount; (None, why) for anything else (a key is never echoed)."""
    if contains_secret(value):
        return None, "this looks like a private key, which does not belong here"
    if isinstance(value, bool):
        return None, f"expected {_HOW}, got a bool"
    if isinstance(value, int):
        return value, ""
    if isinstance(value, float):
        exact = f"'{value!r} OGPU' or Decimal('{value!r}')"
        return None, f"expected {_HOW}; a float ({value!r}) is not exact: write {exact}"
    if isinstance(value, Decimal):
        return _scaled(value, WEI_PER_OGPU, f"Decimal('{value}') OGPU")
    if isinstance(value, str):
        match = _AMOUNT.match(value)
        if match is None:
            shown = value if len(value) <= 40 else value[:37] + "..."
            if re.fullmatch(r"\s*[0-9][0-9_.]*\s*", value):
                units = "'{0} OGPU'" if "." in value else "'{0} OGPU' or '{0} wei'"
                return None, f"{shown!r} has no unit: write {units.format(shown.strip())}"
            return None, f"expected {_HOW}, got {shown!r}"
        return _scaled(Decimal(match.group(1)), UNITS[match.group(2).lower()], value.strip())
    return None, f"expected {_HOW}, got {type(value).__name__}"


def _scaled(number: Decimal, unit: int, shown: str) -> tuple[int | None, str]:
    try:
        if not number.is_finite():
            return None, f"{shown} is not a finite amount"
        with localcontext(prec=len(number.as_tuple().digits) + 40):  # exact: no rounding
            wei = number * unit
        if wei != wei.to_integral_value():
            return None, f"{shown} is not a whole number of wei (1 wei = 0.000000000000000001 OGPU)"
        return int(wei), ""
    except InvalidOperation:
        return None, f"{shown} is not a number"


def parse_amount(field: str, value: Any, *, error: type[E] = InvalidInputError, optional: bool = False) -> int:  # type: ignore[assignment]
    """`value` as an int of wei (see the module's docstring); anything else raises `error` naming
    `field` (a key-shaped value is refused as such, unechoed)."""
    if optional and value is None:
        return value  # type: ignore[no-any-return]
    refuse_secret(field, value)
    wei, why = amount_problem(value)
    if wei is None:
        raise error(field, why)
    return wei


def format_ogpu(wei: int) -> str:
    """`wei` in OGPU, exactly: 10**16 -> '0.01 OGPU', 10**18 -> '1 OGPU', 1 -> '0.000000000000000001 OGPU'."""
    whole, frac = divmod(abs(wei), WEI_PER_OGPU)
    text = f"{whole}.{frac:018d}".rstrip("0").rstrip(".")
    return f"{'-' if wei < 0 else ''}{text} OGPU"


def _validate(value: Any) -> int:
    wei, why = amount_problem(value)
    if wei is None:
        raise ValueError(why)
    return wei


Amount = Annotated[
    int,
    PlainValidator(_validate),
    WithJsonSchema({"type": "string", "pattern": PATTERN, "examples": EXAMPLES}, mode="validation"),
]
"""An amount (a flow parameter): validated to an int of wei; a string with its unit in a form."""


def is_amount(annotation: Any) -> bool:
    """Whether a parameter's annotation is `Amount`, or a union or `Annotated` of it (`Amount | None`)."""
    from typing import get_args, get_origin

    if annotation == Amount:
        return True
    args = get_args(annotation)
    if get_origin(annotation) is Annotated:
        return is_amount(args[0])
    return any(is_amount(a) for a in args)
