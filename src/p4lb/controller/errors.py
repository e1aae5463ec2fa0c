"""Errors raised by the controller."""


class ControllerError(Exception):
    """Base error of the runtime package."""


class ConfigFileError(ControllerError):
    """A field of the TOML configuration is invalid: names the field, the bad value and the fix."""

    def __init__(self, field: str, value: object, fix: str) -> None:
        super().__init__(f"{field} = {value!r} is invalid: {fix}")
        self.field = field
        self.value = value
        self.fix = fix


class SwitchError(ControllerError):
    """The switch is unreachable or refused a request."""
