"""Typed errors, named after the official SDK's `OGPUError` family, and revert decoding.

Protocol reverts are `Error(string)` whose reason starts with a token (`InsufficientBalance`,
`SourceInactive`, ...), optionally followed by `: detail`. `revert_error` maps the token to a class;
OpenZeppelin custom errors are decoded by selector.
"""

from __future__ import annotations

from typing import Any

from eth_abi import decode as abi_decode

from .signing import mask_keys

ERROR_STRING = bytes.fromhex("08c379a0")
PANIC = bytes.fromhex("4e487b71")


class OGPUError(Exception):
    """Root of every error this package raises about the protocol. Its text never shows a key
    this process has parsed (an error is printed, logged and stored in Prefect states)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*(mask_keys(a) if isinstance(a, str) else a for a in args))


class InvalidInputError(OGPUError, ValueError):
    """Bad input caught before any transaction was sent; `field` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        self.field = mask_keys(field, everything=True)
        # it echoes user input, where no 64-hex value belongs: none is shown
        super().__init__(mask_keys(f"{self.field}: {message}", everything=True))


class UnknownSourceInputError(InvalidInputError):
    """The source is not a source of this network's Nexus."""


class SourceNotActiveInputError(InvalidInputError):
    """The source is INACTIVE: it accepts no tasks."""


class PaymentOutOfRangeError(InvalidInputError):
    """Payment below the source's minPayment (or above what fits in 96 bits)."""


class ExpiryOutOfRangeError(InvalidInputError):
    """Expiry in the past, too close, or beyond the source's maxExpiryDuration."""


class BalanceTooLowError(InvalidInputError):
    """The client's Vault balance does not cover the batch."""


class BudgetExceededError(InvalidInputError):
    """Publishing would take the batch beyond its budget ceiling."""


class EscrowHeldError(OGPUError):
    """A client operation stopped with tasks on chain whose escrow it holds: `tasks` lists them
    (what a retry, a re-run with the same batch_key, or a settling must account for)."""

    def __init__(self, message: str, tasks: list[Any]) -> None:
        self.tasks = tasks
        super().__init__(message)


# ---- on-chain reverts ----


class TxError(OGPUError):
    """A transaction could not be sent, mined or succeeded."""


class TxRevertError(TxError):
    """The EVM reverted. `reason` is the decoded reason, `token` its protocol token if any."""

    def __init__(self, reason: str, *, context: str = "", token: str = "", data: bytes = b"") -> None:
        self.reason = reason
        self.context = context
        self.token = token
        self.data = data
        super().__init__(f"{context}: {reason}" if context else reason)


class NotFoundError(TxRevertError):
    """An address is not a known source, task or response of this deployment."""


class UnknownSourceError(NotFoundError):
    pass


class UnknownTaskError(NotFoundError):
    pass


class NoContractError(NotFoundError):
    """A view returned no data: nothing is deployed at the address (a wrong address, or a task
    of a chain that was reverted or reorganised)."""


class StateError(TxRevertError):
    """Not valid in the current on-chain state."""


class TaskExpiredError(StateError):
    pass


class TaskAlreadyFinalizedError(StateError):
    pass


class ResponseAlreadyConfirmedError(StateError):
    pass


class SourceInactiveError(StateError):
    pass


class NotCancelableError(StateError):
    pass


class NotExpiredError(StateError):
    pass


class AlreadyAttemptedError(StateError):
    pass


class NotAttemptedError(StateError):
    pass


class AlreadySubmittedError(StateError):
    pass


class PermissionDeniedError(TxRevertError):
    """The caller may not do this."""


class NotTaskOwnerError(PermissionDeniedError):
    pass


class NotSourceOwnerError(PermissionDeniedError):
    pass


class NotMasterError(PermissionDeniedError):
    pass


class NotProviderError(PermissionDeniedError):
    pass


class NotAuthorizedError(PermissionDeniedError):
    """Missing a Manager role or an Ownable owner."""


class VaultError(TxRevertError):
    pass


class InsufficientBalanceError(VaultError):
    pass


class InsufficientLockupError(VaultError):
    pass


class UnbondingPeriodNotElapsedError(VaultError):
    pass


class NotEligibleError(VaultError):
    pass


class InvalidParamsError(TxRevertError):
    """The contract refused a parameter (payment, expiry, environment, data)."""


class NonceError(TxError):
    """Our nonce was taken by a transaction we did not send (the key is used elsewhere)."""


class NonceConflictError(NonceError):
    """Other senders of the key kept taking the nonces of a batch being signed again."""


class TxReceiptTimeoutError(TxError):
    pass


class TxRpcError(TxError):
    """The RPC endpoint failed (transport, HTTP or a malformed reply) after retries."""


class RpcError(TxRpcError):
    """A JSON-RPC error object."""

    def __init__(self, method: str, code: int, message: str, data: Any = None) -> None:
        self.method = method
        self.code = code
        self.message = message
        self.data = data
        super().__init__(f"{method}: {message} (code {code})")

    @property
    def revert_data(self) -> bytes | None:
        """The revert payload of an eth_call / eth_estimateGas error, when there is one."""
        data = self.data
        if isinstance(data, dict):
            data = data.get("data")
        if isinstance(data, str) and data.startswith("0x"):
            return bytes.fromhex(data[2:])
        return None


TOKENS: dict[str, type[TxRevertError]] = {
    "UnknownSource": UnknownSourceError,
    "UnknownTask": UnknownTaskError,
    "UnknownResponse": NotFoundError,
    "Expired": TaskExpiredError,
    "AlreadyFinalized": TaskAlreadyFinalizedError,
    "AlreadyConfirmed": ResponseAlreadyConfirmedError,
    "SourceInactive": SourceInactiveError,
    "NotCancelable": NotCancelableError,
    "NotExpired": NotExpiredError,
    "AlreadyAttempted": AlreadyAttemptedError,
    "NotAttempted": NotAttemptedError,
    "AlreadySubmitted": AlreadySubmittedError,
    "NotMaster": NotMasterError,
    "NotProvider": NotProviderError,
    "NotController": NotAuthorizedError,
    "NotAuthorized": NotAuthorizedError,
    "NotNexus": NotAuthorizedError,
    "NotTerminal": NotAuthorizedError,
    "InsufficientBalance": InsufficientBalanceError,
    "InsufficientLockup": InsufficientLockupError,
    "UnbondingNotElapsed": UnbondingPeriodNotElapsedError,
    "NotEligible": NotEligibleError,
    "InvalidPayment": InvalidParamsError,
    "InvalidExpiry": InvalidParamsError,
    "InvalidEnvironment": InvalidParamsError,
    "InvalidData": InvalidParamsError,
}

CUSTOM_ERRORS = {
    "OwnableUnauthorizedAccount": NotAuthorizedError,
    "AccessControlUnauthorizedAccount": NotAuthorizedError,
}


def decode_revert_reason(data: bytes) -> tuple[str, str]:
    """Revert payload -> (reason text, token). Unknown payloads come back as hex."""
    if data[:4] == ERROR_STRING:
        reason = abi_decode(["string"], data[4:])[0]
        return reason, reason.split(":", 1)[0].strip()
    if data[:4] == PANIC:
        code = abi_decode(["uint256"], data[4:])[0]
        return f"Panic(0x{code:02x})", "Panic"
    from .abi import errors_by_selector

    known = errors_by_selector().get(data[:4])
    if known:
        name, types = known
        args = abi_decode(list(types), data[4:]) if types else ()
        return f"{name}({', '.join(map(str, args))})", name
    return (f"revert 0x{data.hex()}" if data else "reverted without a reason"), ""


def as_revert(error: Exception, context: str = "") -> TxRevertError | None:
    """The typed revert an RPC error reports (an eth_call / eth_estimateGas that reverted), or None
    for anything else (a transport failure, a node error): the one place that tells them apart."""
    if isinstance(error, RpcError) and (error.revert_data is not None or "revert" in error.message.lower()):
        return revert_error(error.revert_data or b"", context=context)
    return None


def revert_error(data: bytes, *, context: str = "") -> TxRevertError:
    """The typed exception for a revert payload; `context` names the call (`Controller.cancelTask`)."""
    reason, token = decode_revert_reason(data)
    cls = TOKENS.get(token) or CUSTOM_ERRORS.get(token)
    if cls is None:  # substring fallback, as the official SDK does
        cls = next((c for t, c in TOKENS.items() if t in reason), TxRevertError)
    if token == "NotOwner" or (cls is TxRevertError and "NotOwner" in reason):
        cls = NotSourceOwnerError if "source" in (context + reason).lower() else NotTaskOwnerError
    return cls(reason, context=context, token=token, data=data)


def already_known(e: RpcError) -> bool:
    """A node's answer to a transaction it has (the same bytes sent again)."""
    m = e.message.lower()
    return "already known" in m or "already imported" in m or "known transaction" in m


def nonce_too_low(e: RpcError) -> bool:
    """A node's answer to a transaction whose nonce its sender has used."""
    m = e.message.lower()
    return "nonce too low" in m or "nonce is too low" in m


def replacement_underpriced(e: RpcError) -> bool:
    """A node's answer to a transaction whose nonce another one holds in its pool."""
    m = e.message.lower()
    return "replacement transaction underpriced" in m or "replacement" in m and "underpriced" in m
