"""The mutants `tools/mutate.py` runs: realistic bugs in the model, the Z3 side and the compiled or source P4.

Each mutant names one file, one edit (an exact snippet that must occur exactly once, or a JSON selection that
must match exactly one node and hold the expected value) and what the bug means. A snippet that no longer
matches makes the tool fail loudly: update the list together with the code it mutates.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

MODEL, Z3, P4 = "model", "z3", "p4"
LAYERS = (MODEL, Z3, P4)


class StaleMutant(Exception):
    """A mutant's snippet or JSON selection no longer matches the code exactly once."""


@dataclass(frozen=True)
class Text:
    """Replace `old` (which must occur exactly once) by `new`."""

    old: str
    new: str

    def apply(self, text: str, where: str) -> str:
        """The mutated text."""
        count = text.count(self.old)
        if count != 1:
            raise StaleMutant(f"{where}: snippet occurs {count} times (want exactly 1): {self.old!r}")
        return text.replace(self.old, self.new)


def _nodes(obj: Any) -> Iterator[dict]:
    """Every dict inside a JSON value, depth first (the value itself first)."""
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from _nodes(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _nodes(v)


def _fragment(node: dict[str, Any]) -> Any:
    """The node's source_info.source_fragment (None if it has none)."""
    return node.get("source_info", {}).get("source_fragment")


def _matches(node: dict, sel: dict) -> bool:
    """The node has every key/value of the selector. Special keys: 'fragment' matches source_info.source_fragment;
    'fragments' the list of its primitives' fragments, in order (an action by the statements it runs, whatever
    p4c named it); 'has' a selector some dict inside the node matches (e.g. one of 32 expansions of a macro)."""
    for key, want in sel.items():
        if key == "has":
            if not any(_matches(n, want) for n in _nodes(node)):
                return False
            continue
        if key == "fragment":
            got = _fragment(node)
        elif key == "fragments":
            got = [_fragment(p) for p in node["primitives"]] if isinstance(node.get("primitives"), list) else KeyError
        else:
            got = node.get(key, KeyError)
        if got != want:
            return False
    return True


@dataclass(frozen=True)
class Json:
    """In a BMv2 JSON: narrow down by selectors (each must match exactly one dict), then set key from old to new."""

    select: tuple[dict, ...]
    key: str
    old: Any
    new: Any

    def apply(self, text: str, where: str) -> str:
        """The mutated JSON text."""
        data = json.loads(text)
        node: Any = data
        for sel in self.select:
            hits = [n for n in _nodes(node) if _matches(n, sel)]
            if len(hits) != 1:
                raise StaleMutant(f"{where}: selector {sel} matches {len(hits)} nodes (want exactly 1)")
            node = hits[0]
        if node.get(self.key, KeyError) != self.old:
            raise StaleMutant(f"{where}: {self.key} is {node.get(self.key)!r}, not {self.old!r}")
        node[self.key] = self.new
        return json.dumps(data, indent=1)


@dataclass(frozen=True)
class Mutant:
    """One realistic bug: where, the edit, what it means, and its layer (which picks its tests)."""

    id: str
    layer: str
    path: str
    edit: Text | Json | None
    desc: str

    @property
    def recompile(self) -> bool:
        """A P4 source mutant: the copy's p4lb.json is rebuilt with p4c-bm2-ss before the checks."""
        return self.path.endswith(".p4")


M_P4LB = "src/p4lb/model/p4lb.py"
M_PKT = "src/p4lb/model/packet.py"
M_SEED = "src/p4lb/model/seed.py"
M_CRC = "src/p4lb/model/crc.py"
M_POOL = "src/p4lb/model/pool.py"
M_SPEC = "src/p4lb/model/spec.py"
Z_ENC = "src/p4lb/verify/p4lb_enc.py"
Z_SHARED = "src/p4lb/verify/encoding.py"
Z_PROPS = "src/p4lb/verify/properties.py"
Z_INV = "src/p4lb/verify/invariants.py"
Z_HASH = "src/p4lb/verify/hashing.py"
Z_SEED = "src/p4lb/verify/seed_enc.py"
Z_VAC = "src/p4lb/verify/vacuity.py"
J_P4LB = "src/p4lb/p4/build/p4lb.json"
J_SEED = "src/p4lb/p4/build/seed.json"
P_SRC = "src/p4lb/p4/p4lb.p4"
P_ENTRIES = "src/p4lb/p4/entries.py"


def _model() -> list[Mutant]:
    """Bugs in the executable model."""
    return [
        Mutant("m01", MODEL, M_P4LB, Text("live = t - e.last_seen <= cfg.idle_timeout_us", "live = t - e.last_seen < cfg.idle_timeout_us"), "idle timeout: `<=` -> `<` (a flow expires one us early)"),
        Mutant("m02", MODEL, M_P4LB, Text("_put(var, st, slot, replace(e, state=state, last_seen=t))", "_put(var, st, slot, replace(e, state=state))"), "packets of an open flow do not refresh last_seen"),
        Mutant("m03", MODEL, M_PKT, Text("if syn and not flags & ACK:", "if flags == SYN:"), "SYN only if flags == SYN (ECN SYN 0xC2 is not)"),
        Mutant("m04", MODEL, M_P4LB, Text("return _count_drop(st, reason), dropped(reason)", "return st, dropped(reason)"), "a refused SYN is labelled FLOW_TABLE_FULL, not counted"),
        Mutant("m05", MODEL, M_P4LB, Text("state = SlotState.CLOSING if cls is FlagClass.CLOSE", "state = SlotState.FREE if cls is FlagClass.CLOSE"), "FIN/RST writes FREE instead of CLOSING"),
        Mutant("m06", MODEL, M_P4LB, Text("return first([(e.state != SlotState.FREE) & (e.key == key) for e in entries])", "return first([(e.state != SlotState.FREE) & ((e.key == key) | (e.state == SlotState.CLOSING)) for e in entries])"), "the CLOSING branch ignores the key (find matches a CLOSING place of any key)"),
        Mutant("m07", MODEL, M_P4LB, Text("if nxt >= n and not var.no_pointer_wrap:", "if nxt > n and not var.no_pointer_wrap:"), "rr_next wraps one past the group size"),
        Mutant("m08", MODEL, M_CRC, Text("(crc >> 1) ^ 0xA001", "(crc >> 1) ^ 0x8005"), "crc16: unreflected polynomial 0x8005"),
        Mutant("m09", MODEL, M_CRC, Text("crc = 0\n    for byte in data:", "crc = 0xFFFF\n    for byte in data:"), "crc16: init 0xFFFF (CRC-16/MODBUS)"),
        Mutant("m10", MODEL, M_P4LB, Text("return _count_drop(st, DropReason.UNKNOWN_FLOW), dropped(DropReason.UNKNOWN_FLOW)", "return _count_drop(st, DropReason.MALFORMED), dropped(DropReason.MALFORMED)"), "unknown-flow packet dropped as MALFORMED"),
        Mutant("m11", MODEL, M_P4LB, Text("b: st.backend_flows.get(b, 0) + 1}", "b: st.backend_flows.get(b, 0)}"), "backend_flows not incremented for a new flow"),
        Mutant("m12", MODEL, M_P4LB, Text("return _count_drop(st, DropReason.NO_BACKEND_ENTRY), dropped(DropReason.NO_BACKEND_ENTRY)", "return st, dropped(DropReason.NO_BACKEND_ENTRY)"), "NO_BACKEND_ENTRY drop not counted"),
        Mutant("m13", MODEL, M_SEED, Text("4: ((1, 1, 1), (2, 2, 2), (3, 3, 3)),", "4: ((2, 2, 2), (1, 1, 1), (3, 3, 3)),"), "seed: server 4's fallback order changed"),
        Mutant("m14", MODEL, M_SEED, Text("if m.myselect == m.max:", "if m.myselect > m.max:"), "seed: myselect reset only above max"),
        Mutant("m15", MODEL, M_PKT, Text("close = bool(flags & (FIN | RST))", "close = bool(flags & FIN)"), "RST is not a close"),
        Mutant("m16", MODEL, M_P4LB, Text("return (e.state == SlotState.OPEN) & (now - e.last_seen <= idle_timeout_us)", "return (e.state == SlotState.OPEN) & (now - e.last_seen < idle_timeout_us)"), "is_open (held: the refusal test) expires one us early"),
        Mutant("m17", MODEL, M_P4LB, Text("if i >= n and not var.no_pointer_wrap:", "if i > n and not var.no_pointer_wrap:"), "rr_next == size not reset to 0 on read"),
        Mutant("m18", MODEL, M_P4LB, Text('Write(Target.RR_NEXT, (s,), 0), ', ""), "the plan does not reset the staged rr_next"),
        Mutant("m19", MODEL, M_CRC, Text('+ src_port.to_bytes(2, "big")', '+ src_port.to_bytes(2, "little")'), "5-tuple packs the client port little-endian"),
        Mutant("m20", MODEL, M_P4LB, Text("return {b: 1 if var.ignores_weights else pool.weight(b) for b in listed}", "return {b: 1 for b in listed}"), "the planner ignores weights"),
        Mutant("m21", MODEL, M_POOL, Text("pick = max(credit, key=lambda b: (credit[b], -b))", "pick = min(credit, key=lambda b: (credit[b], -b))"), "interleave picks the poorest backend: copies miscounted"),
        Mutant("m22", MODEL, M_SPEC, Text("norm = [Fraction(counts[a], weights[a]) for a in counts]", "norm = [Fraction(counts[a], 1) for a in counts]"), "spec: P5 ignores weights"),
        Mutant("m24", MODEL, M_P4LB, Text(" or end.rr_next[staged] != 0:", ":"), "check_plan accepts a staged rr_next left non-zero (red team n04)"),
        Mutant("m25", MODEL, M_P4LB, Text("if Counter(group) != {b: after.weight(b) for b in after.eligible} or", "if not set(group) <= after.eligible or"), "check_plan accepts a group missing an eligible backend (red team n21)"),
        Mutant("m26", MODEL, M_SPEC, Text("    for b in reversed(run):", "    for b in run:"), "spec: P5 checks prefix windows only (red team n05)"),
        Mutant("m27", MODEL, M_SPEC, Text("run = spec.run if shares(pool) == shares(spec.pool) else ()", "run = ()"), "spec: every operation restarts P5's run (red team n23)"),
        Mutant("m28", MODEL, M_POOL, Text("holes = [i for i in range(total) if i >= len(live) or live[i] not in want]", "holes = [i for i in range(total) if i >= len(live)]"), "the in-place planner leaves a leaving backend in its place"),
        Mutant("m29", MODEL, M_POOL, Text("movers = [live[i] for i in reversed(kept) if i >= total]", "movers = [live[i] for i in kept if i >= total]"), "the in-place planner moves members into holes from the front, not the end (BMC's order differs)"),
        Mutant("m30", MODEL, M_P4LB, Text("if old.state == SlotState.OPEN and not (admitted and var.reclaim_keeps_open):", "if old.state == SlotState.OPEN and not admitted:"), "backend_open: a place reclaimed by a new flow keeps its old backend counted"),
        Mutant("m31", MODEL, M_P4LB, Text("    if e.state == SlotState.OPEN:\n        count = count | {open_cell(e): count.get(open_cell(e), 0) + 1}", "    if e.state == SlotState.OPEN and admitted:\n        count = count | {open_cell(e): count.get(open_cell(e), 0) + 1}"), "backend_open: a packet of an open flow takes one off its backend"),
        Mutant("m23", MODEL, M_SPEC, Text("run = spec.run if shares(pool) == shares(spec.pool) else ()", "run = spec.run if pool.eligible == spec.pool.eligible else ()"), "spec: a weight change does not restart P5's run"),
    ]


def _z3() -> list[Mutant]:
    """Bugs in the Z3 encoding, the properties and the invariant."""
    return [
        Mutant("z01", Z3, Z_ENC, Text("live = z3.And(lk.found, t - fl <= self.timeout)", "live = z3.And(lk.found, t - fl < self.timeout)"), "encoding: idle timeout `<=` -> `<`"),
        Mutant("z02", Z3, Z_ENC, Text("touch = z3.Or(c_est, c_close, new_flow)", "touch = z3.Or(c_est, new_flow)"), "encoding: CLOSING packets do not refresh last_seen"),
        Mutant("z03", Z3, Z_ENC, Text('sw["backend_flows"][b] + 1)', 'sw["backend_flows"][b] + 2)'), "encoding: backend_flows += 2"),
        Mutant("z04", Z3, Z_SHARED, Text("return z3.And(self.bit(0x02), z3.Not(self.bit(0x10)), z3.Not(self.bit(0x05)))", "return z3.And(self.bit(0x02), z3.Not(self.bit(0x05)))"), "encoding: SYN+ACK counts as a SYN"),
        Mutant("z05", Z3, Z_SHARED, Text("COUNTED = tuple(r for r in DropReason if r.counted)", "COUNTED = tuple(r for r in DropReason if r.counted and r is not DropReason.NO_BACKEND_ENTRY)"), "encoding: NO_BACKEND_ENTRY not in COUNTED"),
        Mutant("z06", Z3, Z_SHARED, Text("refresh = z3.Or(z3.And(is_open, z3.Not(pkt.close), z3.Not(pkt.malformed)), admitted)", "refresh = admitted"), "spec ghost: open-flow packets do not refresh `last`"),
        Mutant("z07", Z3, Z_SHARED, Text("z3.Store(cnt, out.backend, cnt[out.backend] + 1)", "z3.Store(cnt, out.backend, cnt[out.backend])"), "spec ghost: fairness count not incremented"),
        Mutant("z08", Z3, Z_PROPS, Text("        z3.And(z3.Not(any_eligible(spec, n)), z3.Not(none_ok)),\n", ""), "P3 without its 'none eligible' clause"),
        Mutant("z09", Z3, Z_PROPS, Text("            z3.And(refused, z3.Not(e.places_held)),\n", ""), "P8 without 'refused only when every place is held'"),
        Mutant("z10", Z3, Z_PROPS, Text("z3.And(out.fate == FATE_DROP, e.counted)))),", "out.fate == FATE_DROP))),"), "P4b without 'counted'"),
        Mutant("z11", Z3, Z_INV, Text('        sw["flow_state"][h] == OPEN,\n', ""), "invariant K1 without 'slot is OPEN'"),
        Mutant("z12", Z3, Z_HASH, Text("for i in range(KEY_BITS):", "for i in range(KEY_BITS - 1):"), "crc_slot drops the top key bit's column"),
        Mutant("z13", Z3, Z_ENC, Text("else z3.And(f == OPEN, t - last <= self.timeout)", "else z3.And(f != FREE, t - last <= self.timeout)"), "encoding: a live CLOSING place is held (refuses SYNs)"),
        Mutant("z14", Z3, Z_ENC, Text("z3.If(z3.And(z3.UGE(i + 1, size), z3.BoolVal(wrap)), bv8(0), i + 1)", "z3.If(z3.And(z3.UGT(i + 1, size), z3.BoolVal(wrap)), bv8(0), i + 1)"), "encoding: rr_next wraps one past size"),
        Mutant("z15", Z3, Z_ENC, Text("            ready = nxt == 0\n", "            ready = z3.BoolVal(True)\n"), "single-write commit without rr_next = 0"),
        Mutant("z16", Z3, Z_SHARED, Text("return z3.And(z3.UGE(b, 1), z3.ULE(b, n), spec[\"active\"][b], spec[\"healthy\"][b], z3.Not(spec[\"draining\"][b]))", "return z3.And(z3.UGE(b, 1), z3.ULE(b, n), spec[\"active\"][b], spec[\"healthy\"][b])"), "spec: draining backends are eligible"),
        Mutant("z17", Z3, Z_SEED, Text("syn = pkt.bit(0x02)", "syn = pkt.syn"), "seed encoding: SYN+ACK is not a SYN"),
        Mutant("z21", Z3, Z_ENC, Text("for f in dataclasses.fields(FlowEntry))", "for f in dataclasses.fields(FlowEntry)[:3])"), "P6 blind to last_seen (red team n08)"),
        Mutant("z22", Z3, Z_VAC, Text("    base = induction_premises(enc, s0, s1, e, w, watched, occupants=True, rely=True)\n", "    base = induction_premises(enc, s0, s1, e, w, watched, occupants=True, rely=True)[::2]\n"), "non-vacuity premises without the transition (red team n13)"),
        Mutant("z23", Z3, Z_PROPS, Text("none_ok = z3.And(out.fate == FATE_DROP, out.reason == reason(DropReason.NO_ELIGIBLE), counted)", "none_ok = z3.And(out.fate == FATE_DROP, counted)"), "P3: a no-eligible drop under any counted reason (red team n14)"),
        Mutant("z18", Z3, Z_PROPS, Text("> times(times(z3.IntVal(1), w1), w2)", "> times(times(z3.IntVal(2), w1), w2)"), "P5 bound doubled (count/weight within 2)"),
        Mutant("z19", Z3, Z_ENC, Text("return bv8(1) if self.var.ignores_weights else spec[\"weight\"][b]", "return bv8(1)"), "encoding: the group lists every backend once, whatever its weight"),
        Mutant("z24", Z3, Z_ENC, Text("return z3.Implies(ones, z3.And(*stay, *order))", "return z3.Implies(ones, z3.And(*order))"), "BMC's planner order leaves kept members free to move"),
        Mutant("z25", Z3, Z_ENC, Text("for i, k in zip(pos, kept, strict=True)][::-1] + list(zip(new, ids, strict=True))", "for i, k in zip(pos, kept, strict=True)] + list(zip(new, ids, strict=True))"), "BMC's planner order fills holes from the front of the live group"),
        Mutant("z26", Z3, Z_ENC, Text("gone = z3.Or(z3.And(c_est, pkt.close), z3.And(new_flow, fs == OPEN, z3.BoolVal(not var.reclaim_keeps_open)))", "gone = z3.And(c_est, pkt.close)"), "encoding: backend_open not decremented when a new flow reclaims an OPEN place"),
        Mutant("z20", Z3, Z_SHARED, Text("z3.And(eligible(new, bv8(b), n), old[\"weight\"][bv8(b)] != new[\"weight\"][bv8(b)])", "z3.BoolVal(False)"), "spec ghost: a weight change does not restart P5's counts"),
    ]


def _jsel(*select: dict) -> tuple[dict, ...]:
    """Selectors as a tuple."""
    return select


def _json() -> list[Mutant]:
    """Bugs in the compiled BMv2 JSON."""
    return [
        Mutant("j01", P4, J_P4LB, Json(_jsel({"op": "register_write", "fragment": "flow_state.write(meta.lb.slot, OPEN)"}, {"type": "hexstr", "value": "0x01"}), "value", "0x01", "0x02"), "json: a new flow is written CLOSING"),
        Mutant("j02", P4, J_P4LB, Json(_jsel({"fragment": "live && fs == OPEN"}, {"op": "<="}), "op", "<=", "<"), "json: established test `<=` -> `<`"),
        Mutant("j03", P4, J_P4LB, Json(_jsel({"name": "MyIngress.drop_counted", "id": 4}, {"type": "hexstr", "value": "0x00000002"}), "value", "0x00000002", "0x00000003"), "json: FLOW_TABLE_FULL counted at index 3"),
        Mutant("j04", P4, J_P4LB, Json(_jsel({"name": "calc", "algo": "crc32"}), "algo", "crc32", "csum16"), "json: way 0's flow hash crc32 -> csum16"),
        Mutant("j05", P4, J_P4LB, Json(_jsel({"name": "MyIngress.rr_group"}, {"action_id": 9}), "action_data", ["0x0"], ["0x1"]), "json: rr_group default set_group(1)"),
        Mutant("j06", P4, J_P4LB, Json(_jsel({"name": "MyIngress.rr_member"}, {"action_id": 10}), "action_data", ["0x0"], ["0x1"]), "json: rr_member default set_member(1)"),
        Mutant("j07", P4, J_P4LB, Json(_jsel({"fragment": "meta.lb.rr_cell = (bit<32>)meta.lb.service * 2 + (bit<32>)meta.lb.version"}, {"op": "&", "left": {"type": "field", "value": ["scalars", "metadata._lb_version2"]}}), "right", {"type": "hexstr", "value": "0xffffffff"}, {"type": "hexstr", "value": "0x00000000"}), "json: rr_cell drops the version: rr_position and rr_advance use rr_next[service * 2] always"),
        Mutant("j08", P4, J_P4LB, Json(_jsel({"fragments": ["flow_last_seen.write(meta.lb.slot, meta.lb.now)", "meta.lb.backend = fb", "admitted = true"]}, {"type": "register_array"}), "value", "MyIngress.flow_last_seen", "MyIngress.flow_key"), "json: CLOSING refresh writes flow_key"),
        Mutant("j09", P4, J_P4LB, Json(_jsel({"op": "count", "fragment": "backend_flows.count(meta.lb.svc_base + (bit<32>)meta.lb.backend)"}, {"type": "counter_array"}), "value", "MyIngress.backend_flows", "MyIngress.lb_drops"), "json: new flow counted in lb_drops"),
        Mutant("j10", P4, J_P4LB, Json(_jsel({"fragment": "meta.lb.held_mask =", "has": {"op": "?", "left": {"type": "hexstr", "value": "0x00000001"}}}, {"op": "==", "right": {"type": "hexstr", "value": "0x01"}}), "op", "==", "!="), "json: refusal tests fs != OPEN (candidate 0's held test)"),
        Mutant("j11", P4, J_SEED, Json(_jsel({"name": "node_13"}, {"op": "=="}), "op", "==", ">="), "seed.json: myselect reset at >= max"),
        Mutant("j12", P4, J_SEED, Json(_jsel({"name": "node_9"}, {"op": "!="}), "op", "!=", "=="), "seed.json: max-change test inverted"),
        Mutant("j13", P4, J_P4LB, Json(_jsel({"fragment": "syn && close"}, {"op": "and"}), "op", "and", "or"), "json: malformed = SYN or FIN/RST"),
        Mutant("j14", P4, J_P4LB, Json(_jsel({"fragment": "(bit<32>)hdr.cpu_in.service * 2 + (hdr.cpu_in.index & 1)"}, {"type": "hexstr", "value": "0x00000001"}), "value", "0x00000001", "0x00000000"), "json: CPU rr_next write always to the service's index 0"),
    ]


def _p4_source() -> list[Mutant]:
    """Bugs in p4lb.p4, recompiled with p4c-bm2-ss."""
    return [
        Mutant("s01", P4, P_SRC, Text("bool live = meta.lb.found == 1 && meta.lb.now - fl <= meta.lb.timeout;", "bool live = meta.lb.found == 1 && meta.lb.now - fl < meta.lb.timeout;"), "p4: idle timeout `<=` -> `<`"),
        Mutant("s02", P4, P_SRC, Text("                        backend_flows.count(meta.lb.svc_base + (bit<32>)meta.lb.backend);\n", ""), "p4: backend_flows not counted"),
        Mutant("s03", P4, P_SRC, Text("nxt >= meta.lb.size ? 8w0 : nxt", "nxt > meta.lb.size ? 8w0 : nxt"), "p4: rr_next wraps one past size"),
        Mutant("s04", P4, P_SRC, Text("meta.lb.held_mask = cs == OPEN && meta.lb.now - cl <= meta.lb.timeout ?", "meta.lb.held_mask = cs != FREE && meta.lb.now - cl <= meta.lb.timeout ?"), "p4: a live CLOSING place is held (refuses SYNs)"),
        Mutant("s05", P4, P_SRC, Text("drop_counted(UNKNOWN_FLOW);", "mark_to_drop(std);"), "p4: unknown flow dropped uncounted"),
        Mutant("s07", P4, P_SRC, Text("                drop_counted(MALFORMED);  /* its service's counter */", "                mark_to_drop(std);  /* its service's counter */"), "p4: bad IPv4 checksum to a VIP dropped uncounted (red team n15)"),
        Mutant("s08", P4, P_SRC, Text("                        if (fs == OPEN) {\n                            backend_open.read(count, held_cell);", "                        if (fs == CLOSING) {\n                            backend_open.read(count, held_cell);"), "p4: backend_open decremented for a reclaimed CLOSING place, not an OPEN one"),
        Mutant("s09", P4, P_SRC, Text("                    if (close) {\n                        backend_open.read(count, held_cell);", "                    if (!close) {\n                        backend_open.read(count, held_cell);"), "p4: backend_open decremented for every packet of an open flow but the close"),
        Mutant("s06", P4, P_SRC, Text("bool new_syn = syn && (flags & F_ACK) == 0;", "bool new_syn = flags == F_SYN;"), "p4: SYN only if flags == SYN (no ECN)"),
        Mutant("e01", P4, P_ENTRIES, Text('"lb_select", (("service", svc), ("version", version))', '"lb_select", (("service", svc), ("version", 1 - version))'), "controller entries: the vip entry selects the other version"),
        Mutant("e02", P4, P_ENTRIES, Text("(POSITION_KEY, position)), \"set_member\"", "(POSITION_KEY, position + 1)), \"set_member\""), "controller entries: rr_member keyed one position on"),
    ]


MUTANTS: list[Mutant] = _model() + _z3() + _json() + _p4_source()
