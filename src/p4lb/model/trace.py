"""Runs of packets and controller operations on the executable model, checked step by step against P1..P8 and P4b."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from p4lb.model.config import table_fields
from p4lb.model.crc import ip, ip_str
from p4lb.model.design import Design, make_design
from p4lb.model.ops import Op, Target, Write, op_from_json, op_to_json
from p4lb.model.p4lb import Variant
from p4lb.model.packet import Outcome, Packet, flags_str, parse_flags
from p4lb.model.pool import Pool
from p4lb.model.spec import SAFE_UPDATE_PROPS, Prop, SpecState, StepView, is_open, spec_packet, spec_pool, violations


@dataclass(frozen=True)
class OpStep:
    """A controller operation; `atomic` applies all its writes at once, else one write per step (P7)."""

    op: Op
    atomic: bool = True


@dataclass(frozen=True)
class WriteStep:
    """One raw controller write; `pool` is the operator's new sets if this write is the operation's commit."""

    write: Write
    pool: Pool | None = None


Step = Packet | OpStep | WriteStep


@dataclass
class StepResult:
    """What happened at one step."""

    index: int
    step: Step
    outcome: Outcome | None
    violations: list[tuple[Prop, str]] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)


@dataclass
class Run:
    """A design's state and the spec's ghost state as steps are applied."""

    design: Design
    state: Any
    spec: SpecState
    results: list[StepResult] = field(default_factory=list)

    @classmethod
    def start(cls, design: Design, pool: Pool) -> Run:
        """Deploy `pool` and start checking."""
        return cls(design, design.initial(pool), SpecState(pool))

    def step(self, step: Step) -> StepResult:
        """Apply one step and record what it broke."""
        if isinstance(step, Packet):
            res = self._packet(step)
        elif isinstance(step, OpStep):
            res = self._op(step)
        else:
            res = self._write(step.write, step.pool)
        self.results.append(res)
        return res

    def _packet(self, pkt: Packet) -> StepResult:
        d, before, timeout = self.design, self.state, self.design.cfg.idle_timeout_us
        t = d.now(before, pkt)
        after, out = d.packet(before, pkt)
        others = {k for k in self.spec.flows if k != pkt.key and is_open(self.spec, k, t, timeout)}
        changed = frozenset(k for k in others if _record(d, before, k) != _record(d, after, k))
        counted = d.drops(after, out.reason) == d.drops(before, out.reason) + 1
        view = StepView(pkt, t, out, d.occupants(before, pkt), changed, counted)
        found = violations(self.spec, view, timeout)
        if self.spec.writes_seen:
            found += [(Prop.P7, f"{p.name} broken after a controller write: {why}") for p, why in found if p in SAFE_UPDATE_PROPS]
        self.state, self.spec = after, spec_packet(self.spec, pkt, t, timeout, out)
        return StepResult(len(self.results), pkt, out, found)

    def _op(self, step: OpStep) -> StepResult:
        pool = step.op.apply(self.spec.pool)
        writes = self.design.plan(self.state, self.spec.pool, pool)
        for w in writes:
            self.state = self.design.write(self.state, w)
        self.spec = spec_pool(self.spec, pool)
        self.spec = _count_writes(self.spec, len(writes))
        return StepResult(len(self.results), step, None, [], writes)

    def _write(self, w: Write, pool: Pool | None) -> StepResult:
        if w.target != "noop":
            self.state = self.design.write(self.state, w)
        if pool is not None:
            self.spec = spec_pool(self.spec, pool)
        self.spec = _count_writes(self.spec, 1)
        return StepResult(len(self.results), WriteStep(w, pool), None, [], [w])

    def expand(self, op: Op) -> list[WriteStep]:
        """An operation as its single writes, the last one carrying the new sets."""
        pool = op.apply(self.spec.pool)
        writes = self.design.plan(self.state, self.spec.pool, pool)
        if not writes:
            return [WriteStep(Write(Target.NOOP, (), 0), pool)]
        return [WriteStep(w, pool if i == len(writes) - 1 else None) for i, w in enumerate(writes)]


def _count_writes(spec: SpecState, n: int) -> SpecState:
    return replace(spec, writes_seen=spec.writes_seen + n)


def _record(d: Design, st: Any, key: int) -> Any:
    return d.record(st, key)


# ---- traces as JSON -------------------------------------------------------------------------


@dataclass
class Trace:
    """A design, its starting sets, and steps: what a counterexample is and what replay runs."""

    design: str
    n: int
    variant: Variant
    pool: Pool
    steps: list[Step]
    prop: Prop | None = None
    expect_step: int | None = None
    idle_timeout_us: int | None = None
    flow_table: tuple[int, int, int] | None = None  # (bits, ways, bucket); None: the design's default table

    def make_design(self) -> Design:
        """The design this trace runs on."""
        kw: dict[str, Any] = {} if self.idle_timeout_us is None else {"idle_timeout_us": self.idle_timeout_us}
        return make_design(self.design, self.n, self.variant, **kw, **table_fields(self.flow_table))

    def run(self) -> Run:
        """Replay on the executable model."""
        run = Run.start(self.make_design(), self.pool)
        for s in self.steps:
            run.step(s)
        return run

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "design": self.design,
            "n": self.n,
            "variant": {k: v for k, v in vars(self.variant).items() if v},
            "idle_timeout_us": self.idle_timeout_us,
            **({"flow_table": list(self.flow_table)} if self.flow_table is not None else {}),
            "pool": {"active": sorted(self.pool.active), "healthy": sorted(self.pool.healthy), "draining": sorted(self.pool.draining)},
            "property": self.prop.name if self.prop else None,
            "violated_at_step": self.expect_step,
            "steps": [step_to_json(s) for s in self.steps],
        }

    def save(self, path: Path) -> None:
        """Write as JSON."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Trace:
        """Inverse of to_json."""
        n = int(data["n"])
        p = data["pool"]
        pool = Pool(n, frozenset(p["active"]), frozenset(p["healthy"]), frozenset(p.get("draining", [])))
        prop = Prop.parse(data["property"]) if data.get("property") else None
        steps = [step_from_json(s, n) for s in data["steps"]]
        table = tuple(data["flow_table"]) if data.get("flow_table") else None
        return cls(data["design"], n, Variant(**data.get("variant", {})), pool, steps, prop, data.get("violated_at_step"), data.get("idle_timeout_us"), table)

    @classmethod
    def load(cls, path: Path) -> Trace:
        """Read from a JSON file."""
        return cls.from_json(json.loads(Path(path).read_text()))


def step_to_json(s: Step) -> dict[str, Any]:
    """JSON form of one step."""
    if isinstance(s, Packet):
        svc = {"service": s.service} if s.service else {}
        return {"packet": {"src": ip_str(s.src_ip), "sport": s.src_port, "flags": flags_str(s.flags), "time_us": s.time_us, **svc}}
    if isinstance(s, OpStep):
        return {"op": op_to_json(s.op), "atomic": s.atomic}
    w = {"target": s.write.target, "index": list(s.write.index), "value": s.write.value}
    if s.pool is not None:
        w["commit"] = {"active": sorted(s.pool.active), "healthy": sorted(s.pool.healthy), "draining": sorted(s.pool.draining)}
    return {"write": w}


def step_from_json(data: dict[str, Any], n: int) -> Step:
    """Inverse of step_to_json."""
    if "packet" in data:
        p = data["packet"]
        return Packet(ip(p["src"]), int(p["sport"]), parse_flags(str(p["flags"])), int(p.get("time_us", 0)), int(p.get("service", 0)))
    if "op" in data:
        return OpStep(op_from_json(data["op"]), bool(data.get("atomic", True)))
    w = data["write"]
    c = w.get("commit")
    pool = None if c is None else Pool(n, frozenset(c["active"]), frozenset(c["healthy"]), frozenset(c["draining"]))
    return WriteStep(Write(Target(w["target"]), tuple(w["index"]), int(w["value"])), pool)
