"""Errors raised by the controller."""

from __future__ import annotations


class ControllerError(Exception):
    """Base error of the runtime package."""


class ConfigFileError(ControllerError):
    """A field of the TOML configuration is invalid: names the field, the bad value and the fix."""

    def __init__(self, field: str, value: object, fix: str) -> None:
        super().__init__(f"{field} = {value!r} is invalid: {fix}")
        self.field = field
        self.value = value
        self.fix = fix


class StateFileError(ControllerError):
    """The state file (the operator's sets) is unreadable, unwritable or contradicts the config."""


class UsageError(ControllerError):
    """The command line is invalid; `usage` is the usage line of the (sub)command `prog`, if known."""

    def __init__(self, message: str, usage: str = "", prog: str = "p4lb") -> None:
        super().__init__(message)
        self.usage = usage
        self.prog = prog


class SwitchError(ControllerError):
    """The switch is unreachable or refused a request."""


class MissingExtraError(SwitchError):
    """The real-switch path needs p4runtime-shell and gRPC, which are not installed."""

    def __init__(self, module: str | None) -> None:
        super().__init__(f"{module or 'p4runtime_sh'} is not importable: install the switch extra: pip install 'p4lb[switch]'")
        self.module = module
