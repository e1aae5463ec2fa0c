"""The compiled P4 programs (BMv2 JSON) equal the model: proofs, mutants of the JSON, and a concrete differential."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator

import pytest

from p4lb.model.config import default_config
from p4lb.model.p4lb import FREE, P4LB, FlowEntry, P4lbState, SlotState, flow_slot, p4lb_packet
from p4lb.model.packet import ACK, FIN, PSH, RST, SYN, DropReason, Fate, Packet
from p4lb.verify.bmv2.equivalence import (
    Verdict,
    check_equivalence,
    concrete_p4lb_env,
    replay_p4lb,
    run_concrete,
    tcp_to_vip,
)
from p4lb.verify.bmv2.program import load, load_json

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
    """The idle test `now - last_seen <= timeout` becomes `<`."""
    hits = [n for c in conditionals(d) for n in nodes(c) if n.get("op") == "<=" and refers(n["right"], "scalars", "timeout_0")]
    for n in hits:
        n["op"] = "<"
    return len(hits)


def no_wrap(d: dict) -> int:
    """rr_advance writes position + 1 without wrapping at the group size."""
    (a,) = [a for a in d["actions"] if a["name"].endswith("rr_advance")]
    n = 0
    for p in a["primitives"]:
        if p["op"] == "assign" and op(p["parameters"][1]).get("op") == "?":
            p["parameters"][1] = op(p["parameters"][1])["right"]
            n += 1
    return n


def wrong_drop_index(d: dict) -> int:
    """UNKNOWN_FLOW is counted at lb_drops[FLOW_TABLE_FULL]."""
    hits = [p for a in d["actions"] for p in a["primitives"] if p["op"] == "count" and p["parameters"][0]["value"].endswith("lb_drops") and hexval(p["parameters"][1]) == int(DropReason.UNKNOWN_FLOW)]
    for p in hits:
        p["parameters"][1] = {"type": "hexstr", "value": f"0x{int(DropReason.FLOW_TABLE_FULL):08x}"}
    return len(hits)


MUTANTS: dict[str, Callable[[dict], int]] = {
    "fin_writes_free": fin_writes_free,
    "synack_opens": synack_opens,
    "closing_ignores_key": closing_ignores_key,
    "pinned_no_refresh": pinned_no_refresh,
    "idle_strict": idle_strict,
    "no_wrap": no_wrap,
    "wrong_drop_index": wrong_drop_index,
}


# ---- proofs --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("program", ["p4lb", "seed"])
def test_compiled_program_equals_model(program: str) -> None:
    r = check_equivalence(program)
    assert r.verdict is Verdict.EQUIVALENT, (r.failed(), r.counterexample)
    assert all(c.ok for c in r.checks)
    assert any(c.name.startswith("reachable") for c in r.checks)
    assert r.assumptions
    assert r.seconds < 20


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mutated_json_differs(name: str) -> None:
    data = copy.deepcopy(load_json("p4lb"))
    assert MUTANTS[name](data) > 0, "the mutation found nothing to change"
    r = check_equivalence("p4lb", data=data, reachability=False, others=False)
    assert r.verdict is Verdict.DIFFERS
    cx = r.counterexample
    assert cx is not None and cx["failed"]
    _, outcome = replay_p4lb(cx)  # the model's side of the counterexample replays on the executable model
    assert outcome.fate.name == cx["model"]["fate"]


def test_mutated_seed_differs() -> None:
    """The seed's first failover (server 1 failed -> server 2) records server 3 in flowlet_select."""
    data = copy.deepcopy(load_json("seed"))
    (choose,) = [a for a in data["actions"] if a["name"].endswith("choose") and any(hexval(p["parameters"][1]) == 2 for p in a["primitives"] if p["op"] == "assign")][:1]
    for p in choose["primitives"]:
        if p["op"] == "register_write" and p["parameters"][0]["value"].endswith("flowlet_select"):
            p["parameters"][2] = {"type": "hexstr", "value": "0x03"}
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
    slot = flow_slot(CFG, pkt)
    age = rng.choice([0, CFG.idle_timeout_us, CFG.idle_timeout_us + 1, rng.randrange(0, 2 * CFG.idle_timeout_us)])
    last = max(0, now - age)
    key = pkt.key if rng.random() < 0.6 else rng.getrandbits(48)
    backend = rng.choice([1, 2, 3, 4, 1, 2, 0, 5])
    flows = {} if rng.random() < 0.15 else {slot: FlowEntry(rng.choice(list(SlotState)), key, backend, last)}
    version = rng.randrange(2)
    sizes = [rng.choice([0, 1, 2, 3, 4, 4]) for _ in (0, 1)]
    members = {(v, i): rng.choice([1, 2, 3, 4, 4, 0, 6]) for v in (0, 1) for i in range(sizes[v]) if rng.random() < 0.95}
    nxt = tuple(rng.choice([0, 1, 2, 3, 5, 255]) for _ in (0, 1))
    st = P4lbState(version=version, rr_group=tuple(sizes), rr_member=members, rr_next=nxt, flows=flows, now=now)
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
        slot = flow_slot(CFG, pkt)
        e = st2.flows.get(slot, FREE)
        got = tuple(run.registers[k](slot) for k in ("flow_state", "flow_key", "flow_backend", "flow_last_seen"))
        assert got == (int(e.state), e.key, e.backend, e.last_seen), (st, pkt, out)
        assert (run.registers["rr_next"](0), run.registers["rr_next"](1)) == st2.rr_next, (st, pkt, out)
    assert {"BACKEND", "NO_ELIGIBLE", "FLOW_TABLE_FULL", "UNKNOWN_FLOW", "MALFORMED", "NO_BACKEND_ENTRY"} <= seen


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


def z3_bv(value: int, width: int):
    """A bit-vector constant."""
    import z3  # noqa: PLC0415

    return z3.BitVecVal(value, width)


def z3_int(term) -> int:
    """A concrete Z3 term (bit-vector or truth value) as an int."""
    import z3  # noqa: PLC0415

    v = z3.simplify(term)
    return int(z3.is_true(v)) if z3.is_bool(v) else v.as_long()
