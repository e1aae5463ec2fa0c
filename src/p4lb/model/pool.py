"""The backend sets the operator controls: active, healthy, draining; eligible = active and healthy and not draining."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TypedDict, Unpack

from p4lb.model.errors import ConfigError


@dataclass(frozen=True)
class Pool:
    """What the controller wants: which of backends 1..n are active, healthy, draining."""

    n: int
    active: frozenset[int]
    healthy: frozenset[int]
    draining: frozenset[int] = frozenset()

    @classmethod
    def initial(cls, n: int, active: int | None = None) -> Pool:
        """All healthy, the first `active` (default all) active, none draining."""
        k = n if active is None else active
        return cls(n, frozenset(range(1, k + 1)), frozenset(range(1, n + 1)))

    @property
    def eligible(self) -> frozenset[int]:
        """Backends that may receive new flows."""
        return (self.active & self.healthy) - self.draining

    def members(self) -> tuple[int, ...]:
        """The eligible backends in the order the round-robin group lists them."""
        return tuple(sorted(self.eligible))

    def check_backend(self, backend: int) -> None:
        """Raise if `backend` is not in 1..n."""
        if not 1 <= backend <= self.n:
            raise ConfigError("backend", backend, f"use a backend id in 1..{self.n}")

    def describe(self) -> str:
        """Short text: eligible {..}."""
        return f"active={sorted(self.active)} healthy={sorted(self.healthy)} draining={sorted(self.draining)}"


def fmt_set(values: frozenset[int]) -> str:
    """{1,2,3}."""
    return "{" + ",".join(str(v) for v in sorted(values)) + "}"


class PoolSets(TypedDict, total=False):
    """The sets `with_sets` may replace (typing only)."""

    active: frozenset[int]
    healthy: frozenset[int]
    draining: frozenset[int]


def with_sets(pool: Pool, **changes: Unpack[PoolSets]) -> Pool:
    """A copy of `pool` with some sets replaced."""
    return replace(pool, **changes)
