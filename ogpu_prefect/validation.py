"""Input checks shared by the client, the Prefect tasks and flows, the CLI and the worker: each
failure is a typed `InvalidInputError` naming the field, raised before any wei moves, and a value
holding a private key in any form (a run of 64+ hex digits anywhere: quoted, `NAME=0x..`, `0X..`,
upper case, bare) is refused without ever being echoed (errors, logs, Prefect parameters and
states all show `<redacted>`). Where tx hashes belong, only the keys in use are (`hashes=True`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, TypeVar

from .chain.abi import checksum_address
from .chain.errors import InvalidInputError
from .chain.signing import holds_key_in_use, looks_like_private_key

REDACTED = "<redacted: looked like a private key>"
E = TypeVar("E", bound=InvalidInputError)


class SecretInWrongFieldError(InvalidInputError):
    """A private key was given where something else (an address, a block name, data) belongs. The
    value is never echoed."""


def refuse_secret(field: str, value: Any, *, hashes: bool = False) -> None:
    """Raises SecretInWrongFieldError when `value` (or any string inside it) holds a 64-hex run;
    with `hashes` (a value where tx hashes or content addresses belong), a key in use."""
    if contains_secret(value, in_use=hashes):
        raise SecretInWrongFieldError(
            field,
            "this looks like a private key, which does not belong here; it was "
            "not used, logged or stored. Keys go in an OGPUWallet block only",
        )


def contains_secret(value: Any, depth: int = 0, *, in_use: bool = False) -> bool:
    """Whether a string in `value` holds a 64-hex run (with `in_use`: a key this process uses)."""
    if depth > 20:
        return False
    if isinstance(value, str):
        return holds_key_in_use(value) if in_use else looks_like_private_key(value)
    if isinstance(value, dict):
        return any(
            contains_secret(k, depth + 1, in_use=in_use) or contains_secret(v, depth + 1, in_use=in_use)
            for k, v in value.items()
        )
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(contains_secret(v, depth + 1, in_use=in_use) for v in value)
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
    optional: bool = False,
) -> int:  # type: ignore[assignment]
    """An int (not a bool, not a float: amounts and times are exact) within the bounds (or, if
    `optional`, None)."""
    if optional and value is None:
        return value  # type: ignore[no-any-return]
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
    optional: bool = False,
) -> float:
    """A finite real number (int or float, not bool) within the bounds (or, if `optional`, None)."""
    if optional and value is None:
        return value  # type: ignore[no-any-return]
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


def check_name(field: str, value: Any, optional: bool = False) -> str:
    """A non-empty name (a block name, a function name; if `optional`, or None); key-shaped values
    refused unechoed."""
    if optional and value is None:
        return value  # type: ignore[no-any-return]
    refuse_secret(field, value)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(field, f"expected a non-empty name, got {_show(value)}")
    return value


def check_list(field: str, value: Any, length: int | None = None) -> list[Any]:
    """A list (or tuple) of values, of `length` items if given; a string or a dict, which
    iterate, is refused."""
    if isinstance(value, (str, bytes, dict)) or not isinstance(value, Sequence):
        raise InvalidInputError(field, f"expected a list, got {type(value).__name__} {_show(value)}")
    if length is not None and len(value) != length:
        raise InvalidInputError(field, f"{len(value)} item(s) given for {length} input(s): one per input")
    return list(value)


def check_signer(field: str, value: Any) -> Any:
    """A TxSigner from a private key, a LocalAccount or a signer (chain/signing.py `as_signer`);
    a bad key is refused without being echoed."""
    from .chain.signing import as_signer

    try:
        return as_signer(value)
    except (ValueError, TypeError):
        raise InvalidInputError(field, "expected a 32-byte private key, a LocalAccount or a signer") from None


def check_batch_shape(inputs: Any, marks: Any, indexes: Any) -> tuple[list[Any], list[Any], list[int]]:
    """A batch's inputs (a list), marks (one dict per input, default `{}`) and indexes (one int >= 0
    per input, default 0..n-1). A key in a mark is refused: marks go into public task configs."""
    inputs = check_list("inputs", inputs)
    indexes = check_list("indexes", indexes, len(inputs)) if indexes is not None else list(range(len(inputs)))
    marks = check_list("marks", marks, len(inputs)) if marks is not None else [{} for _ in inputs]
    for i, (mark, index) in enumerate(zip(marks, indexes)):
        check_int(f"indexes[{i}]", index, minimum=0)
        if not isinstance(mark, dict):
            raise InvalidInputError(f"marks[{i}]", f"expected a dict, not {type(mark).__name__}")
        refuse_secret(f"marks[{i}]", mark)
    return inputs, marks, indexes


def check_addresses(field: str, values: Any) -> list[str]:
    """A list of addresses; typed errors name `field[i]`."""
    return [check_address(f"{field}[{i}]", v) for i, v in enumerate(check_list(field, values))]


def check_url(field: str, value: Any, schemes: Sequence[str] | None = None) -> str:
    """A `scheme://...` URL (with `schemes`, one of those); key-shaped values refused unechoed."""
    refuse_secret(field, value)
    if not isinstance(value, str) or "://" not in value:
        raise InvalidInputError(field, f"expected a URL (scheme://...), got {_show(value)}")
    scheme = value.split("://", 1)[0].lower()
    if schemes is not None and scheme not in schemes:
        raise InvalidInputError(field, f"expected a {' or '.join(schemes)} URL, got {_show(value)}")
    return value


M = TypeVar("M")


def parse_model(model: type[M], value: Any, field: str, *, hashes: bool = False) -> M:
    """`value` as a pydantic `model` (as is if it is one); a validation failure becomes an
    InvalidInputError naming `field.<first bad field>` (the bad value is not echoed). `hashes`: a
    model that carries tx hashes or content addresses (PublishedTask): only keys in use are refused."""
    from pydantic import BaseModel, ValidationError

    if isinstance(value, model):
        return value
    refuse_secret(field, value, hashes=hashes)
    try:
        return model.model_validate(value)  # type: ignore[attr-defined,no-any-return]
    except ValidationError as e:
        first = e.errors(include_input=False)[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        raise InvalidInputError(f"{field}.{where}" if where else field, first.get("msg", "invalid")) from None
    except (TypeError, AttributeError):
        kind = model.__name__ if isinstance(model, type) and issubclass(model, BaseModel) else "model"
        raise InvalidInputError(field, f"expected a {kind} or a dict") from None


def parse_delivery(delivery: Any, options: Any) -> Any:
    """The delivery method `delivery` configured with `options`. Typed errors name `delivery` or
    `delivery_options[.option]`: options are checked against the method's signature here, so that
    a mistyped one fails before any task is published, not while tasks hold escrow."""
    from .delivery import DeliveryStrategy
    from .plugin_manager import PluginKind

    check_name("delivery", delivery)
    cls = plugin_class("delivery", PluginKind.DELIVERY_METHOD, delivery)
    options = check_plugin_options("delivery_options", cls, options, no_options=DeliveryStrategy.__init__)
    try:
        return cls(**options)
    except (TypeError, ValueError) as e:
        raise InvalidInputError("delivery_options", str(e)) from None


def plugin_class(field: str, kind: Any, name: str) -> Any:
    """The installed plugin of `kind` called `name`; InvalidInputError naming `field` if none."""
    from .plugin_manager import PluginError, installed

    try:
        table = installed(kind)
    except PluginError as e:
        raise InvalidInputError(field, str(e)) from None
    if name not in table:
        raise InvalidInputError(field, f"unknown {kind} {name!r}; installed: {', '.join(sorted(table))}")
    return table[name]


def configured_policy(kind: Any, field: str, name: Any, options: Any) -> Any | None:
    """The installed policy plugin of `kind` called `name`, a dataclass built with `options` (a
    dict of its fields); None for None or "off". Typed errors name `field` or
    `<field>_options[.option]` (a key among the options is refused unechoed)."""
    from dataclasses import fields

    opt_field = f"{field}_options"
    refuse_secret(opt_field, options)
    if options is not None and not isinstance(options, dict):
        raise InvalidInputError(opt_field, f"a dict of options, not {type(options).__name__}")
    if name is None or name == "off":
        return None
    cls = plugin_class(field, kind, check_name(field, name))
    known = [f.name for f in fields(cls)]
    for key in options or {}:
        if key not in known:
            raise InvalidInputError(f"{opt_field}.{key}", f"not an option of {name!r} (options: {', '.join(known)})")
    try:
        return cls(**(options or {}))
    except InvalidInputError as e:
        raise InvalidInputError(f"{opt_field}.{e.field}", str(e).partition(": ")[2]) from None
    except (TypeError, ValueError) as e:
        raise InvalidInputError(opt_field, str(e)) from None


def check_plugin_options(
    field: str, cls: Any, options: Any, *, no_options: Any = None, reserved: Sequence[str] = ()
) -> dict[str, Any]:
    """`options` (a dict, or None: none) checked against plugin `cls`'s constructor: each a named
    parameter (not one of `reserved`, which the caller passes itself) of the annotated type.
    `no_options`: a base `__init__` whose `**options` means "none". Typed errors name
    `field[.option]`; a key among them is refused unechoed."""
    import inspect
    from typing import get_type_hints

    from pydantic import ConfigDict, TypeAdapter, ValidationError

    refuse_secret(field, options)
    if options is not None and not isinstance(options, dict):
        raise InvalidInputError(field, f"a dict of options, not {type(options).__name__}")
    options = options or {}
    # The base class's **options means "no options"; a plugin's own **options takes any.
    params = {} if cls.__init__ is no_options else dict(inspect.signature(cls).parameters)
    any_name = any(p.kind is p.VAR_KEYWORD for p in params.values())
    named = [n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and n not in reserved]
    try:
        hints = get_type_hints(cls.__init__)
    except Exception:  # unresolvable annotations: the constructor alone checks
        hints = {}
    strict = ConfigDict(strict=True, allow_inf_nan=False, arbitrary_types_allowed=True)
    for name, value in options.items():
        if (name not in named and not any_name) or name in reserved:
            raise InvalidInputError(
                f"{field}.{name}",
                f"not an option of {getattr(cls, '__name__', cls)} (options: {', '.join(named) or 'none'})",
            )
        if name in hints:
            try:
                TypeAdapter(hints[name], config=strict).validate_python(value)
            except ValidationError as e:
                raise InvalidInputError(f"{field}.{name}", e.errors(include_input=False)[0]["msg"]) from None
            except Exception:  # a type pydantic cannot check: the constructor alone checks
                pass
    return options


def parse_models(model: type[M], values: Any, field: str, *, hashes: bool = False) -> list[M]:
    """A list of `model`s (each as parse_model); typed errors name `field[i]...`."""
    return [parse_model(model, v, f"{field}[{i}]", hashes=hashes) for i, v in enumerate(check_list(field, values))]


def _show(value: Any) -> str:
    """A short, safe rendering of a rejected value for a message."""
    if contains_secret(value):
        return REDACTED
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
