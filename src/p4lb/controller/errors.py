"""Errors raised by the controller: one base class, and the gRPC status codes switch errors are classified by."""

from __future__ import annotations

import enum


class GrpcCode(enum.IntEnum):
    """gRPC / google.rpc status codes (a SwitchError's `code`; the label of p4lb_p4runtime_errors_total)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class ControllerError(Exception):
    """Base error of the runtime package."""


def _short_repr(value: object, limit: int = 80) -> str:
    """repr() cut to `limit` characters, so a hostile value never floods the message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ConfigFileError(ControllerError):
    """A field of the TOML configuration is invalid: names the field, the bad value and the fix."""

    def __init__(self, field: str, value: object, fix: str) -> None:
        super().__init__(f"{field} = {_short_repr(value)} is invalid: {fix}")
        self.field = field
        self.value = value
        self.fix = fix


class StateFileError(ControllerError):
    """The state file (the operator's sets) is unreadable, unwritable or contradicts the config."""


class RefusedError(ControllerError):
    """The command does not apply to the service as it stands (a retired service's operations, say); nothing was
    written, and the message names the command that does."""


class LockError(ControllerError):
    """Another controller holds the switch's lock (the message names it: pid and command)."""


class UsageError(ControllerError):
    """The command line is invalid; `usage` is the usage line of the (sub)command `prog`, if known."""

    def __init__(self, message: str, usage: str = "", prog: str = "p4lb") -> None:
        super().__init__(message)
        self.usage = usage
        self.prog = prog


class SwitchError(ControllerError):
    """The switch is unreachable or refused a request; `code` is the gRPC status code behind it (UNKNOWN if none)."""

    def __init__(self, message: str, code: GrpcCode = GrpcCode.UNKNOWN) -> None:
        super().__init__(message)
        self.code = code


class MissingExtraError(SwitchError):
    """The real-switch path needs p4runtime-shell and gRPC, which are not installed."""

    def __init__(self, module: str | None) -> None:
        super().__init__(f"{module or 'p4runtime_sh'} is not importable: install the switch extra: pip install 'p4lb[switch]'")
        self.module = module
