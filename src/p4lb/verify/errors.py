"""Errors raised by the prover."""


class VerifyError(Exception):
    """Base error of the verify package."""


class EncodingMismatch(VerifyError):
    """The Z3 encoding and the executable model disagree on a concrete run."""


class ReplayError(VerifyError):
    """A counterexample did not reproduce on the executable model."""
