"""Input checks shared by the client, the Prefect tasks and flows, the CLI and the worker: each
failure is a typed `InvalidInputError` naming the field, raised before any wei moves, and a value
shaped like a private key is refused without ever being echoed (errors, logs, Prefect parameters
and states all show `<redacted>`)."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any, TypeVar

from .chain.abi import checksum_address
from .chain.errors import InvalidInputError
from .chain.signing import looks_like_private_key

REDACTED = "<redacted: looked like a private key>"
E = TypeVar("E", bound=InvalidInputError)


class SecretInWrongFieldError(InvalidInputError):
    """A private key was given where something else (an address, a block name, data) belongs. The
    value is never echoed."""


def refuse_secret(field: str, value: Any) -> None:
    """Raises SecretInWrongFieldError when `value` (or any string inside it) looks like a key."""
    if contains_secret(value):
        raise SecretInWrongFieldError(
            field,
            "this looks like a private key, which does not belong here; it was "
            "not used, logged or stored. Keys go in an OGPUWallet block only",
        )


def contains_secret(value: Any, depth: int = 0) -> bool:
    if depth > 20:
        return False
    if isinstance(value, str):
        return looks_like_private_key(value)
    if isinstance(value, dict):
        return any(contains_secret(k, depth + 1) or contains_secret(v, depth + 1) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(contains_secret(v, depth + 1) for v in value)
    return False


def redact(value: Any, depth: int = 0) -> Any:
    """`value` with every key-shaped string replaced by REDACTED (for parameters and messages)."""
    if depth > 20:
        return value
    if isinstance(value, str):
        return REDACTED if looks_like_private_key(value) else value
    if isinstance(value, dict):
        return {redact(k, depth + 1): redact(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v, depth + 1) for v in value)
    return value


def check_address(field: str, value: Any, error: type[E] = InvalidInputError) -> str:  # type: ignore[assignment]
    """An EIP-55 address from 20 bytes of hex (`0x`-prefixed). Refused: anything else, and a
    key-shaped value (never echoed)."""
    refuse_secret(field, value)
    if not isinstance(value, str) or len(value) != 42 or not value.startswith(("0x", "0X")):
        raise error(field, f"expected a 0x-prefixed 20-byte address, got {_show(value)}")
    try:
        return checksum_address(value)
    except (ValueError, TypeError):
        raise error(field, f"expected a 0x-prefixed 20-byte address, got {_show(value)}") from None


def check_int(
    field: str,
    value: Any,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    error: type[E] = InvalidInputError,
) -> int:  # type: ignore[assignment]
    """An int (not a bool, not a float: amounts and times are exact) within the bounds."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(field, f"expected an integer, got {type(value).__name__} {_show(value)}")
    if minimum is not None and value < minimum:
        raise error(field, f"{value} is below the minimum {minimum}")
    if maximum is not None and value > maximum:
        raise error(field, f"{value} is above the maximum {maximum}")
    return value


def check_number(
    field: str,
    value: Any,
    *,
    minimum: float | None = None,
    exclusive_minimum: float | None = None,
    maximum: float | None = None,
) -> float:
    """A finite real number (int or float, not bool) within the bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)) or not math.isfinite(float(value)):
        raise InvalidInputError(field, f"expected a finite number, got {type(value).__name__} {_show(value)}")
    number = float(value)
    if minimum is not None and number < minimum:
        raise InvalidInputError(field, f"{number:g} is below the minimum {minimum:g}")
    if exclusive_minimum is not None and number <= exclusive_minimum:
        raise InvalidInputError(field, f"{number:g} must be above {exclusive_minimum:g}")
    if maximum is not None and number > maximum:
        raise InvalidInputError(field, f"{number:g} is above the maximum {maximum:g}")
    return number


def check_name(field: str, value: Any) -> str:
    """A non-empty name (a block name, a function name); key-shaped values refused unechoed."""
    refuse_secret(field, value)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(field, f"expected a non-empty name, got {_show(value)}")
    return value


M = TypeVar("M")


def parse_model(model: type[M], value: Any, field: str) -> M:
    """`value` as a pydantic `model` (as is if it is one); a validation failure becomes an
    InvalidInputError naming `field.<first bad field>` (the bad value is not echoed)."""
    from pydantic import BaseModel, ValidationError

    if isinstance(value, model):
        return value
    refuse_secret(field, value)
    try:
        return model.model_validate(value)  # type: ignore[attr-defined,no-any-return]
    except ValidationError as e:
        first = e.errors(include_input=False)[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        raise InvalidInputError(f"{field}.{where}" if where else field, first.get("msg", "invalid")) from None
    except (TypeError, AttributeError):
        kind = model.__name__ if isinstance(model, type) and issubclass(model, BaseModel) else "model"
        raise InvalidInputError(field, f"expected a {kind} or a dict") from None


def _show(value: Any) -> str:
    """A short, safe rendering of a rejected value for a message."""
    if contains_secret(value):
        return REDACTED
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
