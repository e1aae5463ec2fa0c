"""Typed verdicts: proven, refuted (with a trace), unknown."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from p4lb.model.spec import Prop
from p4lb.model.trace import Trace

QUERY_TIMEOUT_MS = 300_000  # every proof query's wall-clock limit: a 20 s query on a quiet machine took over 90 s on a loaded 2-core CI; unknown is still a failure


class Verdict(enum.Enum):
    """What the prover concluded."""

    PROVEN = "proven"
    REFUTED = "refuted"
    UNKNOWN = "unknown"


@dataclass
class Result:
    """One design x property verdict."""

    design: str
    prop: Prop
    verdict: Verdict
    seconds: float
    detail: str  # depth of the counterexample, or invariant size, or why unknown
    trace: Trace | None = None
    notes: list[str] = field(default_factory=list)
    trace_path: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "design": self.design,
            "property": self.prop.name,
            "name": self.prop.value,
            "verdict": self.verdict.value,
            "seconds": round(self.seconds, 3),
            "detail": self.detail,
            "trace": self.trace.to_json() if self.trace else None,
            "trace_file": self.trace_path,
        }
