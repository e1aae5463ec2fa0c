"""Errors raised by the executable model."""


class ModelError(Exception):
    """Base error of the model package."""


class ConfigError(ModelError):
    """A configuration field is invalid; the message names the field, the value and the fix."""

    def __init__(self, field: str, value: object, fix: str) -> None:
        super().__init__(f"{field} = {value!r} is invalid: {fix}")
        self.field = field
        self.value = value
        self.fix = fix


class PlanError(ModelError):
    """A controller plan breaks the staging discipline that the proof of P7 assumes."""
