"""Controller operations: what the operator asks for, and the exact switch writes that carry it out."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, cast

from p4lb.model.errors import ConfigError
from p4lb.model.pool import Pool, fmt_set, with_sets


class Target(enum.StrEnum):
    """What a write changes: a table or register of the P4 programs, by its P4 name (NOOP: nothing, a change that needs no write)."""

    VIP = "vip"  # p4lb: the vip entry's lb_select(version), the commit point
    RR_GROUP = "rr_group"
    RR_MEMBER = "rr_member"
    RR_NEXT = "rr_next"
    BACKEND = "backend"  # the backend table's entries (installed at deploy, outside the proofs' plans)
    SET_MAX = "set_max"  # the seed's tables
    SET_STATUS1 = "set_status1"
    SET_STATUS2 = "set_status2"
    SET_STATUS3 = "set_status3"
    SET_STATUS4 = "set_status4"
    NOOP = "noop"


@dataclass(frozen=True)
class Write:
    """One atomic switch write: a table entry's action parameter or a register cell, named as in the P4 program."""

    target: Target
    index: tuple[int, ...]
    value: int

    def __post_init__(self) -> None:
        """Accept a target's P4 name (JSON traces, the switch tests); refuse anything else."""
        if not isinstance(cast(object, self.target), Target):
            try:
                object.__setattr__(self, "target", Target(self.target))
            except ValueError:
                raise ConfigError("write.target", self.target, f"use one of {', '.join(t.value for t in Target)}") from None

    def __str__(self) -> str:
        idx = ",".join(str(i) for i in self.index)
        return f"{self.target}[{idx}] := {self.value}"


@dataclass(frozen=True)
class Scale:
    """Make backends 1..active the active ones (the seed's `max`)."""

    active: int

    def apply(self, pool: Pool) -> Pool:
        if not 0 <= self.active <= pool.n:
            raise ConfigError("active", self.active, f"use 0..{pool.n}")
        return with_sets(pool, active=frozenset(range(1, self.active + 1)))

    def __str__(self) -> str:
        return f"scale --active {self.active}"


@dataclass(frozen=True)
class Fail:
    """Mark a backend failed."""

    backend: int

    def apply(self, pool: Pool) -> Pool:
        pool.check_backend(self.backend)
        return with_sets(pool, healthy=pool.healthy - {self.backend})

    def __str__(self) -> str:
        return f"fail {self.backend}"


@dataclass(frozen=True)
class Heal:
    """Mark a backend healthy."""

    backend: int

    def apply(self, pool: Pool) -> Pool:
        pool.check_backend(self.backend)
        return with_sets(pool, healthy=pool.healthy | {self.backend})

    def __str__(self) -> str:
        return f"heal {self.backend}"


@dataclass(frozen=True)
class Drain:
    """Stop new flows to a backend; its open flows stay."""

    backend: int

    def apply(self, pool: Pool) -> Pool:
        pool.check_backend(self.backend)
        return with_sets(pool, draining=pool.draining | {self.backend})

    def __str__(self) -> str:
        return f"drain {self.backend}"


@dataclass(frozen=True)
class Undrain:
    """Let a drained backend take new flows again."""

    backend: int

    def apply(self, pool: Pool) -> Pool:
        pool.check_backend(self.backend)
        return with_sets(pool, draining=pool.draining - {self.backend})

    def __str__(self) -> str:
        return f"undrain {self.backend}"


@dataclass(frozen=True)
class Weight:
    """Set a backend's weight (its share of new flows is weight / the eligible backends' total)."""

    backend: int
    weight: int

    def apply(self, pool: Pool) -> Pool:
        pool.check_backend(self.backend)
        weights = list(pool.weights)
        weights[self.backend - 1] = self.weight
        after = replace(pool, weights=tuple(weights))
        after.check_positions()
        return after

    def __str__(self) -> str:
        return f"weight {self.backend} {self.weight}"


@dataclass(frozen=True)
class Configure:
    """Set all three sets (and the weights) at once (what a counterexample's abstract operation becomes)."""

    active: frozenset[int]
    healthy: frozenset[int]
    draining: frozenset[int] = frozenset()
    weights: tuple[int, ...] = ()  # () keeps the pool's weights

    def apply(self, pool: Pool) -> Pool:
        for b in self.active | self.healthy | self.draining:
            pool.check_backend(b)
        after = Pool(pool.n, frozenset(self.active), frozenset(self.healthy), frozenset(self.draining), self.weights or pool.weights)
        after.check_positions()
        return after

    def __str__(self) -> str:
        heavy = {b: w for b, w in enumerate(self.weights, 1) if w != 1}
        text = f"configure active={fmt_set(self.active)} healthy={fmt_set(self.healthy)} draining={fmt_set(self.draining)}"
        return text + (f" weights={heavy}" if heavy else "")


Op = Scale | Fail | Heal | Drain | Undrain | Weight | Configure


def op_to_json(op: Op) -> dict[str, Any]:
    """JSON form of an operation."""
    if isinstance(op, Configure):
        out: dict[str, Any] = {"op": "configure", "active": sorted(op.active), "healthy": sorted(op.healthy), "draining": sorted(op.draining)}
        return out | ({"weights": list(op.weights)} if op.weights else {})
    if isinstance(op, Scale):
        return {"op": "scale", "active": op.active}
    if isinstance(op, Weight):
        return {"op": "weight", "backend": op.backend, "weight": op.weight}
    return {"op": type(op).__name__.lower(), "backend": op.backend}


def op_from_json(data: dict[str, Any]) -> Op:
    """Inverse of op_to_json."""
    kind = data.get("op")
    if kind == "configure":
        return Configure(frozenset(data["active"]), frozenset(data["healthy"]), frozenset(data.get("draining", [])), tuple(data.get("weights", ())))
    if kind == "scale":
        return Scale(int(data["active"]))
    if kind == "weight":
        return Weight(int(data["backend"]), int(data["weight"]))
    table: dict[str, Callable[[int], Op]]
    table = {"fail": Fail, "heal": Heal, "drain": Drain, "undrain": Undrain}
    if kind not in table:
        raise ConfigError("op", kind, f"use one of configure, scale, weight, {', '.join(table)}")
    return table[kind](int(data["backend"]))


def op_between(before: Pool, after: Pool) -> Op:
    """The simplest operation that turns `before` into `after`."""
    n = before.n
    same_active, same_healthy, same_draining = before.active == after.active, before.healthy == after.healthy, before.draining == after.draining
    moved = [b for b in range(1, n + 1) if before.weight(b) != after.weight(b)]
    if moved:
        if same_active and same_healthy and same_draining and len(moved) == 1:
            return Weight(moved[0], after.weight(moved[0]))
        return Configure(after.active, after.healthy, after.draining, after.weights)
    if same_active and same_draining and len(before.healthy ^ after.healthy) == 1:
        (b,) = before.healthy ^ after.healthy
        return Heal(b) if b in after.healthy else Fail(b)
    if same_active and same_healthy and len(before.draining ^ after.draining) == 1:
        (b,) = before.draining ^ after.draining
        return Drain(b) if b in after.draining else Undrain(b)
    k = len(after.active)
    if same_healthy and same_draining and after.active == frozenset(range(1, k + 1)) and k <= n:
        return Scale(k)
    return Configure(after.active, after.healthy, after.draining)
