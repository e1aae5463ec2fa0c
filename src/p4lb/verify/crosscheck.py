"""Run concrete steps through the Z3 encoding, to compare with the executable model step by step.

`pin` unrolls the encoding once per step and pins every input (packet fields, the operation's sets and
plan, each single controller write) to the concrete step, while the executable model runs the same steps
alongside. `compare` then asks Z3 whether any outcome or register may differ from the model's: unsat means
the encoding forces exactly the model's values, not merely that one of its runs agrees.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import Any

import z3

from p4lb.model.design import Design
from p4lb.model.ops import Fail, Heal, Op, Scale
from p4lb.model.p4lb import P4lbState, SlotState, planned_counts
from p4lb.model.packet import DropReason, Fate, FlagClass, Outcome, Packet, flow_key, key_packet
from p4lb.model.pool import Pool
from p4lb.model.seed import SeedState
from p4lb.model.trace import OpStep, Run, Step, WriteStep
from p4lb.verify.encoding import B8, Out, PacketIn, StepEnc, Sym, bv8, uninterpreted
from p4lb.verify.errors import EncodingMismatch
from p4lb.verify.p4lb_enc import P4lbEncoding
from p4lb.verify.seed_enc import SeedEncoding

Encoding = SeedEncoding | P4lbEncoding
WHAT = {"rr_member": 0, "rr_group": 1, "rr_next": 2}  # the stage-write selector of P4lbEncoding.stage_write


def encoding_for(design: Design, follow_planner: bool = False) -> Encoding:
    """The Z3 encoding of an executable design, with BMv2's real crc16 (follow_planner: as bounded model checking runs it)."""
    if design.is_seed:
        return SeedEncoding(design.cfg, real_hash=True)
    return P4lbEncoding(design.cfg, design.variant, real_hash=True, follow_planner=follow_planner)


@dataclass
class Pinned:
    """An unrolling of the encoding with every step's inputs pinned, and the model's run of the same steps."""

    design: Design
    enc: Encoding
    solver: z3.Solver
    states: list[Sym]
    steps: list[StepEnc]
    concrete: list[Step]
    run: Run
    encoded: Design
    flip: int = 0  # the model deploys under version 1, the encoding under 0: encoding version = model version ^ flip
    follow_planner: bool = False  # the encoding lists committed groups in the planner's order itself (not pinned)
    after: list[Any] = field(default_factory=list)  # the model's switch state after each step


def _members(st: P4lbState, ver: int) -> z3.ArrayRef:
    """A version's rr_member table as a Z3 array (missing entries read 0, as a table miss does)."""
    arr = z3.K(B8, bv8(0))
    for (v, i), b in sorted(st.rr_member.items()):
        if v == ver:
            arr = z3.Store(arr, bv8(i), bv8(b))
    return arr


def _sets(tag: str, pool: Pool) -> list[z3.BoolRef]:
    """Pin an operation's fresh sets (named as P4lbEncoding.new_sets names them) to `pool`."""
    cons = []
    for name, members in (("active", pool.active), ("healthy", pool.healthy), ("draining", pool.draining)):
        arr = z3.Array(f"{name}_op_{tag}", B8, z3.BoolSort())
        cons += [arr[bv8(b)] == (b in members) for b in range(1, pool.n + 1)]
    weight = z3.Array(f"weight_op_{tag}", B8, B8)
    return cons + [weight[bv8(b)] == pool.weight(b) for b in range(1, pool.n + 1)]


def _pin_packet(e: StepEnc, pkt: Packet) -> list[z3.BoolRef]:
    p = e.pkt
    return [e.inputs["kind"] == 0, p.src_ip == pkt.src_ip, p.src_port == pkt.src_port, p.flags == pkt.flags, p.t == pkt.time_us, p.service == pkt.service]


def _pin_seed_op(e: StepEnc, op: object) -> list[z3.BoolRef]:
    inp = e.inputs
    if isinstance(op, Scale):
        return [inp["kind"] == 1, inp["k"] == op.active]
    if isinstance(op, Fail | Heal):
        return [inp["kind"] == 2, inp["b"] == op.backend, inp["fail"] == isinstance(op, Fail)]
    raise EncodingMismatch(f"the seed has no operation {op}")


def _pin_p4lb_op(p: Pinned, e: StepEnc, tag: str, after: Pool) -> list[z3.BoolRef]:
    """An atomic operation: which branch, the new sets, and the committed version and group the plan writes (not the
    group if the encoding follows the planner: then it must force the model's group itself)."""
    design, run = p.design, p.run
    before = run.spec.pool
    changed = planned_counts(design.variant, before) != planned_counts(design.variant, after)
    cons = [e.inputs["kind"] == (1 if changed else 2), *_sets(tag, after)]
    writes = design.plan(run.state, before, after)
    if changed and writes:
        end = run.state
        for w in writes:
            end = design.write(end, w)
        ver = writes[-1].value
        cons.append(z3.Bool(f"cver_{tag}") == bool(ver ^ p.flip))
        if not p.follow_planner:
            cons += [z3.BitVec(f"size_{tag}", 8) == end.rr_group[ver], z3.Array(f"mem_{tag}", B8, B8) == _members(end, ver)]
    return cons


def _pin_write(e: StepEnc, tag: str, ws: WriteStep, flip: int) -> list[z3.BoolRef]:
    """One p4lb controller write: a staged entry, the commit (with the new sets), or a no-op change of sets."""
    w, pool = ws.write, ws.pool
    kind = e.inputs["kind"]
    if w.target == "vip" and pool is not None:
        return [kind == 1, z3.Bool(f"cver_{tag}") == bool(w.value & 1 ^ flip), *_sets(tag, pool)]
    if w.target == "noop" and pool is not None:
        return [kind == 2, *_sets(tag, pool)]
    if w.target in WHAT and pool is None:
        idx = w.index[1] if w.target == "rr_member" else 0
        return [kind == 3, z3.Bool(f"wver_{tag}") == bool(w.index[0] ^ flip), z3.BitVec(f"what_{tag}", 2) == WHAT[w.target], z3.BitVec(f"widx_{tag}", 8) == idx, z3.BitVec(f"wval_{tag}", 8) == w.value % 256]
    raise EncodingMismatch(f"the encoding has no single write {w} (commit {pool})")


@dataclass(frozen=True)
class _Template:
    """One step of the encoding built once (pre-state tag _TA, post _TB, inputs _TT), renamed per step by substitution."""

    e: StepEnc
    consts: tuple[tuple[z3.ExprRef, str, str], ...]  # (constant, name without its tag, which tag)

    def instance(self, i: int) -> StepEnc:
        """The step from state c{i} to c{i+1} with inputs tagged c{i}: what enc.step(.., f"c{i}") builds, only faster."""
        tags = {"TA": f"c{i}", "TB": f"c{i + 1}", "TT": f"c{i}"}
        n = len(self.consts)
        renamed = [z3.Const(f"{base}_{tags[which]}", c.sort()) for c, base, which in self.consts]  # kept alive while used
        src, dst = (z3.Ast * n)(), (z3.Ast * n)()
        for j, ((c, _, _), r) in enumerate(zip(self.consts, renamed, strict=True)):
            src[j], dst[j] = c.as_ast(), r.as_ast()

        def sub(x: z3.ExprRef, _keep: list[z3.ExprRef] = renamed) -> z3.ExprRef:
            """z3.substitute without its per-pair checks (sorts equal by construction); _keep holds the new constants."""
            return z3.z3._to_expr_ref(z3.Z3_substitute(x.ctx_ref(), x.as_ast(), n, src, dst), x.ctx)

        e = self.e
        out = Out(sub(e.out.fate), sub(e.out.backend), sub(e.out.reason))
        inputs = {k: sub(v) for k, v in e.inputs.items()}
        return StepEnc(sub(e.trans), sub(e.is_packet), PacketIn.fresh(f"c{i}"), out, sub(e.places_held), sub(e.counted), lambda k: sub(e.record_changed(k)), inputs)


@functools.cache
def _template(design: Design, atomic: bool, follow_planner: bool = False) -> _Template:
    """The step template of a design (operations atomic or as single writes)."""
    enc = encoding_for(design, follow_planner)
    e = enc.step(enc.fresh("TA"), enc.fresh("TB"), "TT", atomic)
    found = {c.decl().name(): c for c in uninterpreted([e.trans, e.is_packet, e.out.fate, e.out.backend, e.out.reason, e.places_held, e.counted, *e.inputs.values()])}
    consts = tuple((c, name[:-3], name[-2:]) for name, c in found.items() if name[-3:] in ("_TA", "_TB", "_TT"))
    return _Template(e, consts)


def pin(design: Design, pool: Pool, steps: list[Step], free_reset: bool = False, encoded: Design | None = None, follow_planner: bool = False) -> Pinned:
    """Unroll the encoding over `steps` from the deployed `pool` with all inputs pinned; also run the model.

    `encoded` is the design whose encoding is unrolled (default: `design`; another one only to test the checks);
    `follow_planner` unrolls it as bounded model checking does, the committed groups left to the encoding.
    """
    if pool != Pool.initial(design.cfg.n):
        raise EncodingMismatch(f"the encoding starts from the initial pool, not {pool.describe()}")
    encoded = encoded or design
    enc = encoding_for(encoded, follow_planner)
    states = [enc.fresh("c0")]
    solver = z3.Solver()
    solver.add(enc.init(states[0]))
    run = Run.start(design, pool)
    p = Pinned(design, enc, solver, states, [], list(steps), run, encoded, follow_planner=follow_planner)
    if isinstance(enc, P4lbEncoding):
        p.flip = run.state.version
        solver.add(*[states[0].sw[f"rr_member{v ^ p.flip}"] == _members(run.state, v) for v in (0, 1)])
    for i, step in enumerate(steps):
        _pin_step(p, i, step, free_reset)
    return p


def _pin_step(p: Pinned, i: int, step: Step, free_reset: bool) -> None:
    """Add step i to the unrolling, pin its inputs, and run it on the model."""
    tag = f"c{i}"
    p.states.append(p.enc.fresh(f"c{i + 1}"))
    e = _template(p.encoded, not isinstance(step, WriteStep), p.follow_planner).instance(i)
    p.steps.append(e)
    p.solver.add(e.trans)
    if not free_reset:
        p.solver.add(z3.Not(e.inputs["reset"]))
    if isinstance(step, Packet):
        p.solver.add(*_pin_packet(e, step))
    elif isinstance(step, OpStep) and isinstance(p.enc, SeedEncoding):
        p.solver.add(*_pin_seed_op(e, step.op))
    elif isinstance(step, OpStep):
        p.solver.add(*_pin_p4lb_op(p, e, tag, step.op.apply(p.run.spec.pool)))
    elif isinstance(p.enc, P4lbEncoding):
        p.solver.add(*_pin_write(e, tag, step, p.flip))
    else:
        raise EncodingMismatch("single writes are pinned for p4lb only; give the seed its operations")
    p.run.step(step)
    p.after.append(p.run.state)


# ---- comparing the encoding with the model ---------------------------------------------------------------


def _outcome_terms(e: StepEnc, out: Outcome) -> list[tuple[str, z3.ExprRef, int]]:
    """(name, Z3 term, the model's value) for a packet's outcome."""
    backend = out.backend if out.fate is not Fate.DROP else 0
    return [("fate", e.out.fate, int(out.fate)), ("backend", e.out.backend, backend), ("reason", e.out.reason, int(out.reason))]


def _p4lb_terms(enc: P4lbEncoding, s: Sym, st: P4lbState, slots: list[int], flip: int) -> list[tuple[str, z3.ExprRef, int]]:
    """(name, Z3 term, the model's value) for p4lb's registers and counters (flow registers at `slots`)."""
    sw = s.sw
    out: list[tuple[str, z3.ExprRef, int]] = [("version", z3.If(sw["version"], bv8(1 ^ flip), bv8(flip)), st.version), ("now", sw["now"], st.now)]
    for v in (0, 1):
        z = v ^ flip
        out += [(f"rr_group{v}", sw[f"rr_group{z}"], st.rr_group[v]), (f"rr_next{v}", sw[f"rr_next{z}"], st.rr_next[v])]
        out += [(f"rr_member{v}[{i}]", sw[f"rr_member{z}"][bv8(i)], st.rr_member.get((v, i), 0)) for i in range(st.rr_group[v])]
    out += [(f"lb_drops[{r.name}]", sw["lb_drops"][z3.BitVecVal(int(r), 3)], st.lb_drops[r]) for r in DropReason]
    out += [(f"backend_flows[{b}]", sw["backend_flows"][bv8(b)], st.backend_flows.get(b, 0)) for b in range(enc.n + 1)]
    cells = sorted({0, *range(1, enc.n + 1), *st.backend_open})  # service 0's backends, and every cell the run moved
    out += [(f"backend_open[{c}]", sw["backend_open"][z3.BitVecVal(c, 16)], st.backend_open.get(c, 0)) for c in cells]
    for slot in slots:
        e = st.flows.get(slot)
        idx = z3.BitVecVal(slot, enc.cfg.flow_table_bits)
        out.append((f"flow_state[{slot}]", sw["flow_state"][idx], int(e.state) if e else int(SlotState.FREE)))
        if e is not None and e.state != SlotState.FREE:
            out += [(f"flow_key[{slot}]", sw["flow_key"][idx], e.key), (f"flow_backend[{slot}]", sw["flow_backend"][idx], e.backend), (f"flow_last_seen[{slot}]", sw["flow_last_seen"][idx], e.last_seen)]
    return out


def _seed_terms(s: Sym, st: SeedState, slots: list[int]) -> list[tuple[str, z3.ExprRef, int]]:
    """(name, Z3 term, the model's value) for the seed's registers and control-plane parameters."""
    sw = s.sw
    out = [("myselect", sw["myselect"], st.myselect), ("mymax", sw["mymax"], st.mymax), ("set_max", sw["set_max"], st.set_max)]
    out += [(f"fail{k}", z3.If(sw[f"fail{k}"], z3.BitVecVal(1, 1), z3.BitVecVal(0, 1)), st.set_status[k - 1]) for k in range(1, 5)]
    return out + [(f"flowlet_select[{i}]", sw["flowlet_select"][z3.BitVecVal(i, 13)], st.record(i)) for i in slots]


def _terms(p: Pinned, i: int, slots: list[int]) -> list[tuple[str, z3.ExprRef, int]]:
    """Everything compared after step i."""
    res = p.run.results[i]
    out = _outcome_terms(p.steps[i], res.outcome) if res.outcome is not None else []
    if isinstance(p.enc, P4lbEncoding):
        return out + _p4lb_terms(p.enc, p.states[i + 1], p.after[i], slots, p.flip)
    return out + _seed_terms(p.states[i + 1], p.after[i], slots)


def _const(term: z3.ExprRef, value: int) -> z3.ExprRef:
    """`value` in the sort of `term`."""
    if z3.is_bv(term):
        return z3.BitVecVal(value, term.size())
    return z3.IntVal(value)


def compare(design: Design, pool: Pool, steps: list[Step], slots: list[int], encoded: Design | None = None, follow_planner: bool = False) -> list[Step]:
    """Raise EncodingMismatch unless the encoding forces the model's outcome and registers after every step.

    `slots` are the flow-table (or flowlet) indices whose registers are compared; `encoded` and `follow_planner` as
    for `pin`. Returns the steps run.
    """
    p = pin(design, pool, steps, encoded=encoded, follow_planner=follow_planner)
    if p.solver.check() != z3.sat:
        raise EncodingMismatch("the encoding admits no run for these steps (the executable model ran them)")
    terms = [(i, name, t, v) for i in range(len(steps)) for name, t, v in _terms(p, i, slots)]
    p.solver.add(z3.Or(*[t != _const(t, v) for _, _, t, v in terms]))
    r = p.solver.check()
    if r == z3.unsat:
        return p.concrete
    if r == z3.unknown:
        raise EncodingMismatch(f"solver: {p.solver.reason_unknown()}")
    m = p.solver.model()
    for i, name, t, v in terms:
        got = m.eval(t, model_completion=True)
        if not z3.is_true(z3.simplify(got == _const(t, v))):
            raise EncodingMismatch(f"step {i} ({steps[i]}): {name} is {v} in the model but may be {got} in the encoding")
    raise EncodingMismatch("the encoding admits another run")  # pragma: no cover - the disjunction names a term


# ---- generated runs: abstract steps made concrete on the model -------------------------------------------


@dataclass(frozen=True)
class Send:
    """A packet of keys[key]: `edge` in -1, 0, 1 times it at its slot's last-seen + idle timeout + edge, else `dt` later."""

    key: int
    flags: int
    dt: int = 0
    edge: int | None = None


@dataclass(frozen=True)
class Operate:
    """An operator action: applied at once (atomic), or queued as single writes that NextWrite sends one by one."""

    op: Op
    atomic: bool = True


@dataclass(frozen=True)
class NextWrite:
    """Send the next `count` queued single writes (fewer if fewer are queued)."""

    count: int = 1


Abstract = Send | Operate | NextWrite
FEATURES = ("dispatches>=5", "refusals", "closing", "expiries", "commits", "draining", "no_eligible", "mid-op packets", "boundary t")


def colliding_keys(design: Design, sizes: tuple[int, ...] = (4, 2, 1)) -> tuple[int, ...]:
    """Client keys 10.0.1.1:port grouped by first candidate place: sizes[0] keys share one, sizes[1] another, ..."""
    groups: dict[int, list[int]] = {}
    port = 1000
    while not _enough(groups, sizes):
        k = flow_key(0, 0x0A000101, port)
        groups.setdefault(design.places(Packet(0x0A000101, port, 0))[0], []).append(k)
        port += 1
    ranked = sorted(groups.values(), key=len, reverse=True)
    return tuple(k for g, size in zip(ranked, sizes, strict=False) for k in g[:size])


def _enough(groups: dict[int, list[int]], sizes: tuple[int, ...]) -> bool:
    """The largest groups are at least as large as the wanted sizes (sizes given largest first)."""
    have = sorted((len(g) for g in groups.values()), reverse=True)
    return len(have) >= len(sizes) and all(h >= n for h, n in zip(have, sizes, strict=False))


@dataclass
class Concrete:
    """A generated run made concrete: its steps, the model's run of them, and what it reached."""

    steps: list[Step]
    run: Run
    reached: set[str] = field(default_factory=set)


def _time(run: Run, design: Design, pkt: Packet, s: Send) -> int:
    """When the packet arrives: dt after the switch's clock, or at its slot's expiry edge (never before the clock)."""
    now = run.state.now if not design.is_seed else max((r.step.time_us for r in run.results if isinstance(r.step, Packet)), default=0)
    e = None if design.is_seed else design.record(run.state, pkt.key)
    if s.edge is None or e is None or e.state == SlotState.FREE:
        return now + s.dt
    return int(max(now, e.last_seen + design.cfg.idle_timeout_us + s.edge))


def _send(c: Concrete, design: Design, keys: tuple[int, ...], s: Send) -> None:
    """Time a packet, step the model, and note what it reached."""
    k = keys[s.key % len(keys)]
    raw = key_packet(k, s.flags)
    t = _time(c.run, design, raw, s)
    pkt = replace(raw, time_us=t)
    timeout = design.cfg.idle_timeout_us
    old = c.run.spec.flows.get(k)
    if old is not None and t - old.last > timeout:
        c.reached.add("expiries")
    if old is not None and t - old.last in (timeout - 1, timeout, timeout + 1):
        c.reached.add("boundary t")
    was_open = old is not None and t - old.last <= timeout
    res = c.run.step(pkt)
    c.steps.append(pkt)
    out = res.outcome
    assert out is not None  # a packet step always has an outcome
    if out.reason is DropReason.FLOW_TABLE_FULL:
        c.reached.add("refusals")
    if out.reason is DropReason.NO_ELIGIBLE:
        c.reached.add("no_eligible")
    if was_open and pkt.flag_class is FlagClass.CLOSE:
        c.reached.add("closing")
    if sum(1 for r in c.run.results if r.outcome is not None and r.outcome.admitted) >= 5:
        c.reached.add("dispatches>=5")


def _emit(c: Concrete, step: Step) -> None:
    """Run an operation or a single write on the model."""
    res = c.run.step(step)
    c.steps.append(step)
    if any(w.target in ("vip", "set_max") or w.target.startswith("set_status") for w in res.writes):
        c.reached.add("commits")
    if c.run.spec.pool.draining:
        c.reached.add("draining")


def concretize(design: Design, pool: Pool, abstract: list[Abstract], keys: tuple[int, ...]) -> Concrete:
    """Make generated steps concrete on the model (times, single writes), stepping it as they are made."""
    c = Concrete([], Run.start(design, pool))
    queued: list[WriteStep] = []
    for a in abstract:
        if isinstance(a, Send):
            if queued and c.steps and isinstance(c.steps[-1], WriteStep):
                c.reached.add("mid-op packets")
            _send(c, design, keys, a)
        elif isinstance(a, NextWrite):
            for _ in range(min(a.count, len(queued))):
                _emit(c, queued.pop(0))
        elif isinstance(a, Operate):
            while queued:
                _emit(c, queued.pop(0))
            if design.is_seed and not design.plan(c.run.state, c.run.spec.pool, a.op.apply(c.run.spec.pool)):
                continue  # the seed's controller writes nothing: no step (its sets are unchanged)
            if a.atomic or design.is_seed:
                _emit(c, OpStep(a.op))
            else:
                queued = c.run.expand(a.op)
    return c


@dataclass
class Coverage:
    """How many generated runs reached each feature."""

    runs: int = 0
    hits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FEATURES, 0))

    def add(self, reached: set[str]) -> None:
        """Count one run."""
        self.runs += 1
        for f in reached:
            self.hits[f] += 1

    def table(self, title: str) -> str:
        """The counts as a small table."""
        rows = [f"{title}: {self.runs} runs"] + [f"  {f:<16}{n:>5}  {100 * n / max(self.runs, 1):5.1f}%" for f, n in self.hits.items()]
        return "\n".join(rows)

    def below(self, floor: float, features: tuple[str, ...] = FEATURES) -> list[str]:
        """The features reached by fewer than `floor` of the runs."""
        return [f for f in features if self.hits[f] < floor * self.runs]
