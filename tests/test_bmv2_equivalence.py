"""The compiled P4 programs (BMv2 JSON) equal the model: proofs, mutants of the JSON, and a concrete differential."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import z3

from p4lb.model.config import P4LB_MID_TABLE_BITS, P4LB_SMALL_TABLE_BITS, default_config
from p4lb.model.p4lb import FREE, P4LB, FlowEntry, P4lbState, SlotState, flow_places, flow_slot, p4lb_packet
from p4lb.model.packet import ACK, FIN, PSH, RST, SYN, DropReason, Fate, Packet, key_service
from p4lb.model.seed import SeedState, seed_packet
from p4lb.p4 import artifacts
from p4lb.verify.bmv2 import equivalence
from p4lb.verify.bmv2.cex import counterexample_file, read_cex, save_counterexample
from p4lb.verify.bmv2.equivalence import (
    Verdict,
    check_equivalence,
    concrete_p4lb_env,
    replay_p4lb,
    run_concrete,
    tcp_to_vip,
)
from p4lb.verify.bmv2.program import load, load_json
from p4lb.verify.bmv2.replay import dry_replay
from p4lb.verify.bmv2.symbolic import Environment, Executor, Unlisted, fresh_input, value_max
from p4lb.verify.runner import fresh_process

# ---- JSON surgery -------------------------------------------------------------------------------------


def nodes(obj: object) -> Iterator[dict]:
    """Every dict inside a JSON value, depth first."""
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from nodes(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from nodes(v)


def op(node: dict) -> dict:
    """The operator node of an expression wrapper."""
    while node.get("type") == "expression":
        node = node["value"]
    return node


def refers(node: object, *path: str) -> bool:
    """The expression reads field `path` somewhere."""
    return any(n.get("type") == "field" and n.get("value") == list(path) for n in nodes(node))


def hexval(node: dict) -> int | None:
    """The value of a hexstr node (None for anything else)."""
    return int(node["value"], 16) if node.get("type") == "hexstr" else None


def conditionals(d: dict) -> list[dict]:
    """Every conditional of every pipeline."""
    return [c for p in d["pipelines"] for c in p["conditionals"]]


def flags_close_ternary(a: dict) -> list[dict]:
    """`close ? 1 : 0` inside an action (the FIN/RST -> CLOSING write)."""
    return [n for n in nodes(a["primitives"]) if n.get("op") == "?" and refers(n.get("cond"), "tcp", "flags") and hexval(n["left"]) == 1]


def pinned_action(d: dict) -> dict:
    """The action of the established-flow branch (flow_state := OPEN + close; last_seen := now)."""
    (a,) = [a for a in d["actions"] if flags_close_ternary(a)]
    return a


def fin_writes_free(d: dict) -> int:
    """FIN/RST on an open flow writes FREE (OPEN + 3) instead of CLOSING (OPEN + 1)."""
    hits = flags_close_ternary(pinned_action(d))
    for n in hits:
        n["left"] = {"type": "hexstr", "value": "0x03"}
    return len(hits)


def synack_opens(d: dict) -> int:
    """new_syn ignores ACK: the `(flags & ACK) == 0` tests always hold."""
    hits = [n for c in conditionals(d) for n in nodes(c) if n.get("op") == "&" and refers(n["left"], "tcp", "flags") and hexval(n["right"]) == 0x10]
    for n in hits:
        n["right"] = {"type": "hexstr", "value": "0x00"}
    return len(hits)


def closing_ignores_key(d: dict) -> int:
    """The CLOSING branch drops the key match: `live && fs == CLOSING`."""
    n = 0
    for c in conditionals(d):
        top = op(c["expression"])
        right = op(top.get("right") or {})
        if top.get("op") == "and" and right.get("op") == "==" and refers(right, "scalars", "fs_0") and hexval(right["right"]) == 2:
            inner = op(top["left"])
            top["left"] = inner["left"]
            n += 1
    return n


def pinned_no_refresh(d: dict) -> int:
    """A pinned packet does not refresh flow_last_seen."""
    a = pinned_action(d)
    before = len(a["primitives"])
    a["primitives"] = [p for p in a["primitives"] if not (p["op"] == "register_write" and p["parameters"][0]["value"].endswith("flow_last_seen"))]
    return before - len(a["primitives"])


def idle_strict(d: dict) -> int:
    """The idle test `now - last_seen <= timeout` of the found flow becomes `<` (the timeout: a local, or meta.lb.timeout)."""
    hits = [n for c in conditionals(d) for n in nodes(c) if n.get("op") == "<=" and any(f.get("type") == "field" and f["value"][0] == "scalars" and "timeout" in f["value"][1] for f in nodes(n["right"]))]
    for n in hits:
        n["op"] = "<"
    return len(hits)


def no_wrap(d: dict) -> int:
    """rr_advance writes position + 1 without wrapping at the group size."""
    (a,) = [a for a in d["actions"] if a["name"].endswith("rr_advance")]
    n = 0
    for p in a["primitives"]:
        if p["op"] == "assign" and op(p["parameters"][1]).get("op") == "?":
            p["parameters"][1] = {"type": "expression", "value": op(p["parameters"][1])["right"]}  # a primitive's parameter: wrapped twice, as p4c writes it (BMv2 needs it)
            n += 1
    return n


def wrong_drop_index(d: dict) -> int:
    """UNKNOWN_FLOW is counted at lb_drops[service * 8 + FLOW_TABLE_FULL] (the reason added to service * 8 in the action
    that counts it)."""
    counting = [a for a in d["actions"] if any(p["op"] == "count" and p["parameters"][0]["value"].endswith("lb_drops") for p in a["primitives"])]
    hits = [n for a in counting for p in a["primitives"] for n in nodes(p) if n.get("op") == "+" and n["right"].get("type") == "hexstr" and hexval(n["right"]) == int(DropReason.UNKNOWN_FLOW)]
    for n in hits:
        n["right"] = {"type": "hexstr", "value": f"0x{int(DropReason.FLOW_TABLE_FULL):08x}"}
    return len(hits)


def writes_backend_open(p: dict) -> bool:
    """A primitive writes the backend_open register."""
    return p["op"] == "register_write" and p["parameters"][0].get("value", "").endswith("backend_open")


def reclaim_keeps_open(d: dict) -> int:
    """A new flow over a place whose entry is OPEN (expired, or its own key re-admitted) forgets to take one off the
    old backend's backend_open: the action under `if (fs == OPEN)` loses its write."""
    tables = {t["name"]: t for p in d["pipelines"] for t in p["tables"]}
    under = [c["true_next"] for c in conditionals(d) if (e := op(c["expression"])).get("op") == "==" and refers(e["left"], "scalars", "fs_0") and hexval(e["right"]) == int(SlotState.OPEN)]
    ids = {i for name in under for i in tables[name]["action_ids"]}
    n = 0
    for a in d["actions"]:
        if a["id"] in ids:
            kept = [p for p in a["primitives"] if not writes_backend_open(p)]
            n += len(a["primitives"]) - len(kept)
            a["primitives"] = kept
    return n


MUTANTS: dict[str, Callable[[dict], int]] = {
    "reclaim_keeps_open": reclaim_keeps_open,
    "fin_writes_free": fin_writes_free,
    "synack_opens": synack_opens,
    "closing_ignores_key": closing_ignores_key,
    "pinned_no_refresh": pinned_no_refresh,
    "idle_strict": idle_strict,
    "no_wrap": no_wrap,
    "wrong_drop_index": wrong_drop_index,
}


MUTANT_TIMEOUT_MS = 300_000  # a differing query on the multi-way program: 16-250 s from run to run (fin_writes_free, pinned_no_refresh)


# ---- proofs --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("program", ["p4lb", "seed"])
def test_compiled_program_equals_model(program: str) -> None:
    r = check_equivalence(program)
    assert r.verdict is Verdict.EQUIVALENT, (r.failed(), r.counterexample)
    assert all(c.ok for c in r.checks)
    assert any(c.name.startswith("reachable") for c in r.checks)
    assert r.assumptions


@pytest.mark.parametrize("bits", [P4LB_SMALL_TABLE_BITS, P4LB_MID_TABLE_BITS])
def test_smaller_builds_equal_model_at_their_shape(bits: int) -> None:
    """p4lb_small.json (-DFLOW_BITS=5: 4 ways of one 8-place bucket, 32 places), the build the switch tests fill to
    see refusals, and p4lb_mid.json (-DFLOW_BITS=10: 1,024 places, the capacity spot-check's) are the model's step on
    LbConfig(flow_table_bits=bits) with the same ways and bucket."""
    cfg = default_config(4, flow_table_bits=bits)
    assert (cfg.shape.ways, cfg.shape.bucket, cfg.shape.places, cfg.shape.buckets_per_way) == (4, 8, 1 << bits, (1 << bits) // 32)
    r = check_equivalence("p4lb", flow_table_bits=bits)
    assert r.verdict is Verdict.EQUIVALENT, (r.failed(), r.counterexample)
    assert all(c.ok for c in r.checks)
    assert {"reachable: refusal", "reachable: dispatch", "(a) equivalence"} <= {c.name for c in r.checks}


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mutated_json_differs(name: str) -> None:
    data = copy.deepcopy(load_json("p4lb"))
    assert MUTANTS[name](data) > 0, "the mutation found nothing to change"
    r = fresh_process(check_equivalence, "p4lb", data=data, reachability=False, others=False, timeout_ms=MUTANT_TIMEOUT_MS)
    assert r.verdict is Verdict.DIFFERS
    cx = r.counterexample
    assert cx is not None and cx["failed"]
    _, outcome = replay_p4lb(cx)  # the model's side of the counterexample replays on the executable model
    assert outcome.fate.name == cx["model"]["fate"]


def seed_mutant() -> dict:
    """The seed's first failover (server 1 failed -> server 2) records server 3 in flowlet_select."""
    data = copy.deepcopy(load_json("seed"))
    (choose,) = [a for a in data["actions"] if a["name"].endswith("choose") and any(hexval(p["parameters"][1]) == 2 for p in a["primitives"] if p["op"] == "assign")][:1]
    for p in choose["primitives"]:
        if p["op"] == "register_write" and p["parameters"][0]["value"].endswith("flowlet_select"):
            p["parameters"][2] = {"type": "hexstr", "value": "0x03"}
    return data


def test_mutated_seed_differs() -> None:
    """The seed's first failover (server 1 failed -> server 2) records server 3 in flowlet_select."""
    data = seed_mutant()
    r = check_equivalence("seed", data=data, reachability=False, others=False)
    assert r.verdict is Verdict.DIFFERS
    assert "flowlet_select" in r.counterexample["failed"]


# ---- concrete differential: the executor on concrete values vs the executable model ---------------------


CFG = default_config(4)
FLAGS = (SYN, SYN | ACK, ACK, ACK | PSH, FIN | ACK, RST, SYN | FIN, SYN | RST, 0, FIN)


def random_case(rng: random.Random) -> tuple[P4lbState, Packet]:
    """A state with a flow entry in the packet's slot (same client or not, live or idle, any state) and a packet."""
    pkt = Packet(rng.choice([0x0A000102, 0x0A000103, rng.getrandbits(32)]), rng.choice([1234, 40000, rng.getrandbits(16)]), rng.choice(FLAGS), 0)
    now = rng.randrange(0, 1 << 40)
    t = now + rng.choice([0, 1, rng.randrange(0, 1000)])
    pkt = Packet(pkt.src_ip, pkt.src_port, pkt.flags, t)
    places = flow_places(CFG, pkt)
    slot = rng.choice([places[0], *places])  # any of the flow's candidates (multi-way table), the first more often
    age = rng.choice([0, CFG.idle_timeout_us, CFG.idle_timeout_us + 1, rng.randrange(0, 2 * CFG.idle_timeout_us)])
    last = max(0, now - age)
    key = pkt.key if rng.random() < 0.6 else rng.getrandbits(48)
    backend = rng.choice([1, 2, 3, 4, 1, 2, 0, 5])
    flows = {} if rng.random() < 0.15 else {slot: FlowEntry(rng.choice(list(SlotState)), key, backend, last)}
    if rng.random() < 0.05:  # an OPEN entry idle past the timeout at one of the places, and a SYN: a reclaim (backend_open -1 / +1)
        flows = {slot: FlowEntry(SlotState.OPEN, key, backend, max(0, now - CFG.idle_timeout_us - 1))}
        pkt = replace(pkt, flags=SYN)
    if rng.random() < 0.2:  # every candidate held by a live foreign flow: a new flow is refused
        flows = {p: FlowEntry(SlotState.OPEN, rng.getrandbits(48) | 1 << 47, 1, now) for p in places}
        pkt = replace(pkt, flags=rng.choice([SYN, SYN, ACK]))
    version = rng.randrange(2)
    sizes = [rng.choice([0, 1, 2, 3, 4, 4]) for _ in (0, 1)]
    members = {(v, i): rng.choice([1, 2, 3, 4, 4, 0, 6]) for v in (0, 1) for i in range(sizes[v]) if rng.random() < 0.95}
    nxt = tuple(rng.choice([0, 1, 2, 3, 5, 255]) for _ in (0, 1))
    opened = {b: rng.choice([0, 1, 2, 7, (1 << 32) - 1]) for b in range(6) if rng.random() < 0.7}  # any 32-bit value: compared mod 2^32
    st = P4lbState(version=version, rr_group=tuple(sizes), rr_member=members, rr_next=nxt, flows=flows, backend_open=opened, now=now)
    return st, pkt


def test_executor_agrees_with_executable_model() -> None:
    prog = load("p4lb")
    rng = random.Random(20240601)
    seen: set[str] = set()
    for _ in range(300):
        st, pkt = random_case(rng)
        st2, out = p4lb_packet(CFG, P4LB, st, pkt)
        run = run_concrete(prog, concrete_p4lb_env(prog, CFG, st), tcp_to_vip(prog, CFG, pkt.src_ip, pkt.src_port, pkt.flags, pkt.time_us), {"lb_drops": 8, "backend_flows": 8})
        seen.add(out.fate.name if out.fate is not Fate.DROP else out.reason.name)
        if out.fate is Fate.BACKEND:
            b = CFG.backend(out.backend)
            assert (run.dropped, run.egress_port, run.eth_dst, run.ip_dst) == (False, b.port, b.mac, b.ip), (st, pkt, out)
        else:
            assert out.fate is Fate.DROP and run.dropped, (st, pkt, out, run)
        drops = {i: a - b for i, (a, b) in enumerate(zip(st2.lb_drops, st.lb_drops, strict=True)) if a != b}
        assert run.counters["lb_drops"] == drops, (st, pkt, out)
        flows = {b: c - st.backend_flows.get(b, 0) for b, c in st2.backend_flows.items() if c != st.backend_flows.get(b, 0)}
        assert run.counters["backend_flows"] == flows, (st, pkt, out)
        for slot in flow_places(CFG, pkt):
            e = st2.flows.get(slot, FREE)
            got = tuple(run.registers[k](slot) for k in ("flow_state", "flow_key", "flow_backend", "flow_last_seen"))
            assert got == (int(e.state), e.key, e.backend, e.last_seen), (st, pkt, out, slot)
        assert (run.registers["rr_next"](0), run.registers["rr_next"](1)) == st2.rr_next, (st, pkt, out)
        assert [run.registers["backend_open"](b) for b in range(8)] == [st2.backend_open.get(b, 0) % (1 << 32) for b in range(8)], (st, pkt, out)
        if st2.backend_open != st.backend_open:  # which of backend_open's updates: by what happened to the place written
            moved = [(st.flows.get(p, FREE).state, st2.flows.get(p, FREE).state) for p in flow_places(CFG, pkt) if st2.flows.get(p) != st.flows.get(p)]
            seen.add("backend_open " + ("reclaim" if (SlotState.OPEN, SlotState.OPEN) in moved else "close" if (SlotState.OPEN, SlotState.CLOSING) in moved else "admit"))
    assert {"BACKEND", "NO_ELIGIBLE", "FLOW_TABLE_FULL", "UNKNOWN_FLOW", "MALFORMED", "NO_BACKEND_ENTRY", "backend_open admit", "backend_open close", "backend_open reclaim"} <= seen, seen


CPU_PORT, CPU_READ, CPU_WRITE_RR_NEXT, CPU_WRITE_TIMEOUT = 510, 1, 2, 3


def cpu_request(prog, op_code: int, index: int, value: int):
    """A controller PacketOut on the CPU port: cpu_out {op, index, value}."""
    from p4lb.verify.bmv2.equivalence import concrete_input  # noqa: PLC0415

    return concrete_input(prog, {("cpu_out", "op"): op_code, ("cpu_out", "index"): index, ("cpu_out", "value"): value}, 64, CPU_PORT, 5_000)


def cpu_state() -> P4lbState:
    """A deployed state with rr_next (5, 9) and one open flow."""
    st = P4lbState(rr_next=(5, 9), now=4_000)
    pkt = Packet(0x0A000105, 40_000, SYN, 1_000)
    return P4lbState(**{**vars(st), "flows": {flow_slot(CFG, pkt): FlowEntry(SlotState.OPEN, pkt.key, 3, 1_000)}})


@pytest.mark.parametrize(("index", "value", "want"), [(1, 0x1234, (5, 0x34)), (0, 7, (7, 9)), (3, 200, (5, 200))])
def test_executor_cpu_port_writes_rr_next_as_the_controller_expects(index: int, value: int, want: tuple[int, int]) -> None:
    """CPU_WRITE_RR_NEXT writes rr_next[index & 1] := value[7:0] and leaves the other version alone (the commit relies on it)."""
    from p4lb.verify.bmv2.symbolic import execute  # noqa: PLC0415

    prog = load("p4lb")
    res = execute(prog, concrete_p4lb_env(prog, CFG, cpu_state()), cpu_request(prog, CPU_WRITE_RR_NEXT, index, value), "cpu")
    rr_next = res.register("rr_next")
    got = tuple(z3_int(rr_next[z3_bv(v, rr_next.domain().size())]) for v in (0, 1))
    assert got == want
    assert z3_int(res.egress_port) == CPU_PORT and not z3_int(res.dropped)


def test_executor_cpu_port_writes_the_idle_timeout_and_reads_a_slot() -> None:
    """CPU_WRITE_TIMEOUT sets idle_timeout; CPU_READ answers with the slot (index wrapped to the table) and both rr_next."""
    from p4lb.verify.bmv2.symbolic import execute  # noqa: PLC0415

    prog = load("p4lb")
    env = concrete_p4lb_env(prog, CFG, cpu_state())
    res = execute(prog, env, cpu_request(prog, CPU_WRITE_TIMEOUT, 0, 123_456), "cpu")
    timeout = res.register("idle_timeout")
    assert z3_int(timeout[z3_bv(0, timeout.domain().size())]) == 123_456
    slot, entry = next(iter(cpu_state().flows.items()))
    res = execute(prog, env, cpu_request(prog, CPU_READ, slot + (1 << CFG.flow_table_bits), 0), "cpu")
    fields = {name: z3_int(res.field("cpu_in", name)) for name in ("flow_state", "flow_key", "flow_backend", "flow_last_seen", "rr_next0", "rr_next1", "index")}
    assert fields == {"flow_state": 1, "flow_key": entry.key, "flow_backend": 3, "flow_last_seen": 1_000, "rr_next0": 5, "rr_next1": 9, "index": slot + (1 << CFG.flow_table_bits)}
    assert z3_int(res.egress_port) == CPU_PORT


def random_term(rng: random.Random, leaves: list[z3.BitVecRef], depth: int) -> z3.BitVecRef:
    """A random bit-vector term of the shapes value_max reads (and some it does not), over 8-bit leaves."""
    if depth == 0 or rng.random() < 0.2:
        x = rng.choice(leaves) if rng.random() < 0.7 else z3.BitVecVal(rng.randrange(256), 8)
        return z3.Extract(7, 0, x) if x.size() != 8 else x
    a, b = random_term(rng, leaves, depth - 1), random_term(rng, leaves, depth - 1)
    c = z3.BitVecVal(rng.randrange(1, 9), 8)
    pick = rng.randrange(12)
    wide = [
        lambda: z3.Extract(7, 0, z3.ZeroExt(3, a) + z3.ZeroExt(3, b)),
        lambda: z3.Extract(7, 0, z3.Concat(z3.Extract(3, 0, a), z3.Extract(7, 4, b))),
        lambda: z3.Extract(7, 0, z3.SignExt(4, z3.LShR(a, 1))),
        lambda: a & b, lambda: a | b, lambda: a ^ b, lambda: a + b, lambda: a << c, lambda: z3.LShR(a, c),
        lambda: z3.URem(a, c), lambda: a * c, lambda: z3.If(z3.ULT(a, b), a, b),
    ]
    return wide[pick]()


def test_value_max_bounds_every_value() -> None:
    """value_max (which lets the executor skip its out-of-range check on a register index) is an upper bound of the
    term's unsigned value for every assignment: Z3 finds no assignment above it, over 300 random terms."""
    rng = random.Random(7)
    leaves = [z3.BitVec(f"v{i}", 8) for i in range(3)] + [z3.ZeroExt(4, z3.Extract(3, 0, z3.BitVec("n", 8)))]
    tight = 0
    for _ in range(300):
        t = random_term(rng, leaves, 4)
        top = value_max(t, {})
        s = z3.Solver()
        s.add(z3.UGT(t, z3.BitVecVal(top, 8)))
        assert s.check() == z3.unsat, (t, top)
        tight += top < 255
    assert tight >= 60, f"only {tight} of 300 terms got a bound below the full range: the test reaches too little"


def test_index_that_can_leave_its_array_is_a_fault() -> None:
    """The executor records a fault for an index that can leave its array (bounded by its shape or not), and none
    for one that cannot (bounded by its shape, or shown by simplification)."""
    prog = load("p4lb", load_json("p4lb"))
    x = Executor(prog, Environment({}, {}, Unlisted.ARBITRARY), fresh_input(prog, "ix"), "ix")
    v = z3.BitVec("ix", 12)
    inside = [z3.ZeroExt(1, z3.URem(v, 1000)), z3.ZeroExt(1, z3.Extract(9, 0, v)), z3.ZeroExt(1, z3.If(v == 3, v & 0xFF, z3.BitVecVal(1023, 12)))]
    outside = [z3.ZeroExt(1, v), z3.ZeroExt(1, z3.URem(v, 1025)), z3.ZeroExt(1, z3.ZeroExt(1, z3.Extract(9, 0, v)) + 1)]
    unknown_shape_inside = z3.ZeroExt(1, z3.Extract(9, 0, v) * z3.BitVecVal(1, 10))  # a product value_max does not read
    for i, idx in enumerate([*inside, unknown_shape_inside]):
        x._index(1024, idx, z3.BoolVal(True), f"inside {i}")
    assert x.faults == []
    for i, idx in enumerate(outside):
        x._index(1024, idx, z3.BoolVal(True), f"outside {i}")
    assert [what for _, what in x.faults] == [f"outside {i}: index out of range" for i in range(len(outside))]


def test_executor_set_valid_zeroes_an_invalid_header_as_bmv2_does() -> None:
    """add_header (setValid) on an invalid header zeroes its fields (BMv2's add_header resets them); on a valid one it keeps them."""
    import z3  # noqa: PLC0415

    from p4lb.verify.bmv2.program import Primitive, PrimitiveOp  # noqa: PLC0415
    from p4lb.verify.bmv2.symbolic import Executor  # noqa: PLC0415

    prog = load("p4lb")
    ex = Executor(prog, concrete_p4lb_env(prog, CFG, cpu_state()), cpu_request(prog, CPU_READ, 0, 0), "set")
    st = ex.initial()
    add = next(p for a in prog.actions.values() for p in a.primitives if p.op is PrimitiveOp.ADD_HEADER and "cpu_at" in str(p.args))
    assert isinstance(add, Primitive)
    after = ex.primitive(st, add, (), z3.BoolVal(True))
    assert z3_int(after.valid["cpu_at"]) == 1
    assert {z3_int(after.fields[("cpu_at", f"at{i}")]) for i in range(64)} == {0}
    written = replace(after, fields={**after.fields, ("cpu_at", "at5"): z3.BitVecVal(7, 32)})
    kept = ex.primitive(written, add, (), z3.BoolVal(True))  # valid already: a second setValid changes nothing
    assert z3_int(kept.fields[("cpu_at", "at5")]) == 7


def z3_bv(value: int, width: int):
    """A bit-vector constant."""
    import z3  # noqa: PLC0415

    return z3.BitVecVal(value, width)


def z3_int(term) -> int:
    """A concrete Z3 term (bit-vector or truth value) as an int."""
    import z3  # noqa: PLC0415

    v = z3.simplify(term)
    return int(z3.is_true(v)) if z3.is_bool(v) else v.as_long()


# ---- counterexample files: written, read back, replayed on the model and the JSON (no BMv2) -------------------


def mutant_file(tmp_path: Path, name: str) -> Path:
    """A JSON mutant written where a replay can push it."""
    data = copy.deepcopy(load_json("p4lb"))
    assert MUTANTS[name](data) > 0
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


def test_differing_json_writes_a_counterexample_file_that_round_trips(tmp_path: Path) -> None:
    """A mutated JSON: DIFFERS, a replayable counterexample file, read back equal, and the difference it names shows
    on the file's own state when the model and the JSON are run on it."""
    mutant = mutant_file(tmp_path, "fin_writes_free")
    r = fresh_process(check_equivalence, "p4lb", data=json.loads(mutant.read_text()), reachability=False, others=False, timeout_ms=MUTANT_TIMEOUT_MS)
    assert r.verdict is Verdict.DIFFERS and r.counterexample is not None
    path = save_counterexample(r, tmp_path / "out", mutant)
    assert path.parent == tmp_path / "out" and path.name.startswith("bmv2-cex-p4lb-")
    cex, made = read_cex(path), counterexample_file(r, mutant, artifacts("p4lb")[0])
    assert (cex.scenario, cex.failed, cex.kind, cex.replayable, cex.notes, cex.json_sha256, cex.p4info) == (made.scenario, made.failed, made.kind, made.replayable, made.notes, made.json_sha256, made.p4info)
    assert cex.to_json() == json.loads(path.read_text())  # what is read is what was written
    assert cex.bmv2_json == mutant.resolve() and cex.replayable and cex.failed == ("flow_state",)
    scn = cex.scenario
    assert scn.frame.ingress_port == 1 and len(scn.frame.data) >= 54 and scn.frame.data[12:14] == b"\x08\x00"
    assert {t.table for t in scn.tables} >= {"vip", "rr_group", "backend", "forward", "send_frame"}
    slot = scn.only_cell("flow_state")
    assert slot in flow_places(CFG, Packet(scn.register("flow_key", slot) >> 16, scn.register("flow_key", slot) & 0xFFFF, 0))  # packets can put it there
    assert scn.register("flow_state", slot) == SlotState.FREE or key_service(scn.register("flow_key", slot)) == 0  # a key of the service a replay installs
    rep = dry_replay(cex)
    assert [row.name for row in rep.differing()] == [f"flow_state[{slot}]"]
    (row,) = rep.differing()
    assert (row.model, row.json) == (str(int(SlotState.CLOSING)), str(int(SlotState.FREE)))


def test_counterexample_cli_prints_the_replay_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m p4lb.verify.bmv2 p4lb --json MUTANT`: exit 1, the file written, one replay command; that command
    with --no-switch: exit 0 and the table; a file that is not one: exit 2 with one line."""
    from p4lb.lab.replay import main as replay_main  # noqa: PLC0415
    from p4lb.verify.bmv2.__main__ import main  # noqa: PLC0415

    mutant = mutant_file(tmp_path, "wrong_drop_index")
    assert main(["p4lb", "--json", str(mutant), "--out", str(tmp_path / "out"), "--timeout", str(MUTANT_TIMEOUT_MS // 1000)]) == 1
    out = capsys.readouterr().out
    (cmd,) = [line.split(": ", 1)[1] for line in out.splitlines() if "replay it on BMv2" in line]
    assert cmd.startswith("python -m p4lb.lab.replay ") and Path(cmd.split()[-1]).is_file()
    assert replay_main([cmd.split()[-1], "--no-switch"]) == 0
    table = capsys.readouterr().out
    assert "lb_drops *" in table and "UNKNOWN_FLOW +1" in table and "FLOW_TABLE_FULL +1" in table
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert replay_main([str(bad), "--no-switch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: not a counterexample file")


def test_time_edge_counterexample_is_marked_not_replayable(tmp_path: Path) -> None:
    """idle_strict differs only at now - last_seen == timeout exactly: BMv2's clock cannot be set, so the file says so."""
    mutant = mutant_file(tmp_path, "idle_strict")
    r = fresh_process(check_equivalence, "p4lb", data=json.loads(mutant.read_text()), reachability=False, others=False, timeout_ms=MUTANT_TIMEOUT_MS)
    cex = read_cex(save_counterexample(r, tmp_path, mutant))
    assert not cex.replayable and any("no counterexample in a state BMv2 can be driven into" in n for n in cex.notes)


def test_seed_counterexample_file_is_in_reachable_registers(tmp_path: Path) -> None:
    """The seed mutant's counterexample: registers packets can produce, and its steps get there on the model."""
    from p4lb.verify.bmv2.reach import other_cell, seed_plan, seed_reachable  # noqa: PLC0415

    path = tmp_path / "seed.json"
    path.write_text(json.dumps(seed_mutant()))
    r = check_equivalence("seed", data=json.loads(path.read_text()), reachability=False, others=False)
    cex = read_cex(save_counterexample(r, tmp_path, path))
    scn, cfg = cex.scenario, cex.scenario.cfg()
    cell = scn.only_cell("flowlet_select")
    target = (scn.register("flowlet_select", cell), scn.register("myselect"), scn.register("mymax"))
    assert cex.replayable and target in seed_reachable()
    pkt = Packet(scn.frame.get("ipv4.srcAddr"), scn.frame.get("tcp.srcPort"), 0)
    plan = seed_plan(cfg, pkt, target)
    assert plan is not None
    st, off = SeedState(), other_cell(cfg, pkt)
    for step in plan:
        st = replace(st, set_max=step.set_max, set_status=step.status)
        st, _ = seed_packet(cfg, st, replace(pkt if step.at_cell else off, flags=SYN if step.syn else ACK))
    assert (st.flowlet_select.get(cell, 0), st.myselect, st.mymax) == target
    assert [row.name for row in dry_replay(cex).differing()] == [f"flowlet_select[{cell}]"]


def test_prove_saves_a_differing_programs_counterexample_and_prints_its_replay(tmp_path: Path) -> None:
    """The prover's run: a compiled program that differs gets its file beside the traces and the BMv2 replay command."""
    from rich.console import Console  # noqa: PLC0415

    from p4lb.verify.report import print_compiled  # noqa: PLC0415
    from p4lb.verify.runner import _save_cex  # noqa: PLC0415

    mutant = mutant_file(tmp_path, "fin_writes_free")
    r = fresh_process(check_equivalence, "p4lb", data=json.loads(mutant.read_text()), reachability=False, others=False, timeout_ms=MUTANT_TIMEOUT_MS)
    saved = _save_cex([r], 4, tmp_path / "out" / "traces")
    assert list(saved) == ["p4lb"] and Path(saved["p4lb"]).parent == tmp_path / "out" and read_cex(Path(saved["p4lb"])).replayable
    console = Console(record=True, width=200)
    print_compiled([r], console, saved)
    assert f"replay on BMv2: python -m p4lb.lab.replay {saved['p4lb']}" in console.export_text()


class _Stalls:
    """A solver stand-in: unknown ('timeout', or `reason`) with random seed 0, unsat with any other."""

    def __init__(self, timeout: int, reason: str, tries: list[tuple[int, int]]) -> None:
        self.timeout, self.reason, self.tries, self.seed = timeout, reason, tries, 0

    def set(self, key: str, value: int) -> None:
        self.seed = value if key == "random_seed" else self.seed

    def add(self, *_: object) -> None:
        return None

    def check(self) -> z3.CheckSatResult:
        self.tries.append((self.seed, self.timeout))
        return z3.unknown if self.seed == 0 else z3.unsat

    def reason_unknown(self) -> str:
        return self.reason


@pytest.mark.parametrize(("reason", "answer", "tries"), [("timeout", "unsat", [(0, 30_000), (1, 60_000)]), ("incomplete quantifiers", "unknown", [(0, 30_000)])])
def test_a_query_that_times_out_is_asked_again_with_another_seed(monkeypatch: pytest.MonkeyPatch, reason: str, answer: str, tries: list[tuple[int, int]]) -> None:
    """Z3's time on one query has a heavy tail: a timed-out try is restarted with another seed and twice the time;
    an unknown for another reason is final."""
    seen: list[tuple[int, int]] = []
    monkeypatch.setattr(equivalence, "_solver", lambda ms: _Stalls(ms, reason, seen))
    chk, _ = equivalence._check("q", [], z3.BoolVal(True), "unsat", 300_000)
    assert (chk.answer, seen) == (answer, tries)
