"""The backend sets the operator controls: active, healthy, draining; eligible = active and healthy and not draining.

Each backend also has a weight (1..MAX_WEIGHT, default 1): the round-robin group lists an eligible backend as many
times as its weight, interleaved (smooth weighted round robin), so new flows are spread in proportion to weights.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import TypedDict, Unpack

from p4lb.model.errors import ConfigError

MAX_WEIGHT = 8  # a backend's weight is 1..MAX_WEIGHT (the proofs unroll weights up to this bound)
MAX_POSITIONS = 255  # rr_group sizes are bit<8>: the eligible backends' weights add up to at most this


@dataclass(frozen=True)
class Pool:
    """What the controller wants: which of backends 1..n are active, healthy, draining."""

    n: int
    active: frozenset[int]
    healthy: frozenset[int]
    draining: frozenset[int] = frozenset()
    weights: tuple[int, ...] = ()  # backend b's weight is weights[b - 1]; () means every weight is 1

    def __post_init__(self) -> None:
        if not self.weights:
            object.__setattr__(self, "weights", (1,) * self.n)
        if len(self.weights) != self.n:
            raise ConfigError("weights", self.weights, f"give one weight per backend 1..{self.n}")
        for b, w in enumerate(self.weights, 1):
            if not 1 <= w <= MAX_WEIGHT:
                raise ConfigError(f"backend[{b}].weight", w, f"use 1..{MAX_WEIGHT}")

    @classmethod
    def initial(cls, n: int, active: int | None = None, weights: tuple[int, ...] = ()) -> Pool:
        """All healthy, the first `active` (default all) active, none draining, the given weights (default all 1)."""
        k = n if active is None else active
        return cls(n, frozenset(range(1, k + 1)), frozenset(range(1, n + 1)), frozenset(), weights)

    def weight(self, backend: int) -> int:
        """A backend's weight."""
        return self.weights[backend - 1]

    @property
    def eligible(self) -> frozenset[int]:
        """Backends that may receive new flows."""
        return (self.active & self.healthy) - self.draining

    def members(self) -> tuple[int, ...]:
        """The round-robin group planned from scratch: each eligible backend as many times as its weight, interleaved."""
        return interleave({b: self.weight(b) for b in self.eligible})

    def check_positions(self) -> None:
        """Raise if the eligible backends' weights add up to more positions than a group has."""
        total = sum(self.weight(b) for b in self.eligible)
        if total > MAX_POSITIONS:
            raise ConfigError("backend.weight", total, f"the eligible backends' weights add up to {total}: keep the sum at most {MAX_POSITIONS}")

    def check_backend(self, backend: int) -> None:
        """Raise if `backend` is not in 1..n."""
        if not 1 <= backend <= self.n:
            raise ConfigError("backend", backend, f"use a backend id in 1..{self.n}")

    def describe(self) -> str:
        """Short text: eligible {..}."""
        text = f"active={sorted(self.active)} healthy={sorted(self.healthy)} draining={sorted(self.draining)}"
        heavy = {b: w for b, w in enumerate(self.weights, 1) if w != 1}
        return text + (f" weights={heavy}" if heavy else "")


def interleave(weights: dict[int, int]) -> tuple[int, ...]:
    """Smooth weighted round robin: each turn every backend gains its weight, the richest (lowest id on ties) is listed and pays the total."""
    total = sum(weights.values())
    credit = dict.fromkeys(sorted(weights), 0)
    out = []
    for _ in range(total):
        for b in credit:
            credit[b] += weights[b]
        pick = max(credit, key=lambda b: (credit[b], -b))
        credit[pick] -= total
        out.append(pick)
    return tuple(out)


def in_place(live: tuple[int, ...], want: dict[int, int]) -> tuple[int, ...]:
    """`want`'s group (backend -> copies) keeping `live`'s members in their places: a leaving copy's place takes one moved from the end, new backends go last; a listed backend changing its copies, or no live group, takes the full interleave."""
    want = {b: w for b, w in want.items() if w > 0}
    have = Counter(live)
    if not live or any(b in want and want[b] != c for b, c in have.items()):
        return interleave(want)
    total = sum(want.values())
    kept = [i for i, b in enumerate(live) if b in want]
    holes = [i for i in range(total) if i >= len(live) or live[i] not in want]
    movers = [live[i] for i in reversed(kept) if i >= total]
    extras = interleave({b: w for b, w in want.items() if b not in have})
    group = list(live[:total]) + [0] * (total - len(live))
    for i, b in zip(holes, movers + list(extras), strict=True):
        group[i] = b
    return tuple(group)


def fmt_set(values: frozenset[int]) -> str:
    """{1,2,3}."""
    return "{" + ",".join(str(v) for v in sorted(values)) + "}"


class PoolSets(TypedDict, total=False):
    """The sets `with_sets` may replace (typing only)."""

    active: frozenset[int]
    healthy: frozenset[int]
    draining: frozenset[int]
    weights: tuple[int, ...]


def with_sets(pool: Pool, **changes: Unpack[PoolSets]) -> Pool:
    """A copy of `pool` with some sets replaced."""
    return replace(pool, **changes)
