"""The table entries the controller writes are the JSON proof's table assumptions (p4lb.p4.entries, defined once)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from p4lb.controller.switch import P4RuntimeSwitch
from p4lb.model.config import default_config
from p4lb.model.ops import Target, Write
from p4lb.p4 import entries
from p4lb.p4.entries import TableEntry
from p4lb.verify.bmv2.cex import p4lb_tables
from p4lb.verify.bmv2.equivalence import Verdict, bound_entry, check_equivalence
from p4lb.verify.bmv2.program import load
from p4lb.verify.errors import VerifyError

CFG = replace(default_config(4), service=7)


class Recorder:
    """A P4rt stand-in that keeps the entries upserted and answers CPU requests with nothing."""

    def __init__(self) -> None:
        self.upserts: list[tuple[str, dict[str, Any], str, dict[str, int]]] = []

    def upsert(self, table: str, match: dict[str, Any], action: str, params: dict[str, int] | None = None) -> None:
        self.upserts.append((table, match, action, params or {}))


def test_every_entry_the_controller_writes_binds_to_the_compiled_program() -> None:
    """Each entry kind, by the program's key and parameter names; a deploy writes entries.static and nothing else."""
    prog = load("p4lb")
    writes = [entries.of_write(CFG, Write(Target.VIP, (), 1)), entries.of_write(CFG, Write(Target.RR_GROUP, (1,), 3)), entries.of_write(CFG, Write(Target.RR_MEMBER, (1, 2), 4))]
    bound = [bound_entry(prog, e) for e in (*writes, *entries.static(CFG))]
    assert {t.rsplit(".", 1)[-1] for t, _ in bound} == {"vip", "rr_group", "rr_member", "backend", "forward", "send_frame"}
    assert bound[0][1].params == (7, 1) and [m.value for m in bound[2][1].match] == [7, 1, 2]
    sw = P4RuntimeSwitch.__new__(P4RuntimeSwitch)
    rec = Recorder()
    sw._ready = lambda: rec  # type: ignore[method-assign]
    sw.cpu = lambda *a, **k: {}  # type: ignore[method-assign]
    sw.cfg = CFG
    sw.install_backends(CFG, check=False)
    assert rec.upserts == [(e.table, dict(e.match), e.action, dict(e.params)) for e in entries.static(CFG)]
    assert sw._entry(Write(Target.RR_MEMBER, (1, 2), 4)) == ("rr_member", dict(writes[2].match), "set_member", {"backend": 4})


def test_a_counterexample_replays_the_controllers_entries() -> None:
    """cex.p4lb_tables: the same entries, as service REPLAY_SERVICE (0)."""
    got = p4lb_tables(CFG, 1, (2, 0), {(0, 0): 1, (0, 1): 2})
    zero = replace(CFG, service=0)
    assert got == (entries.vip(zero, 1), entries.rr_group(zero, 0, 2), entries.rr_group(zero, 1, 0), entries.rr_member(zero, 0, 0, 1), entries.rr_member(zero, 0, 1, 2), *entries.static(zero))


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        (TableEntry("rr_group", (("meta.lb.version", 0), ("meta.lb.service", 7)), "set_group", (("size", 1),)), "the program's key is (meta.lb.service, meta.lb.version)"),
        (TableEntry("vip", (("hdr.ipv4.dstAddr", 1), ("hdr.tcp.dstPort", 80)), "lb_select", (("version", 0), ("service", 7))), "the program's action takes (service, version)"),
        (TableEntry("backend", (("meta.lb.service", 7), ("meta.lb.backend", 1)), "set_nhop", ()), "has no action set_nhop"),
    ],
)
def test_an_entry_the_program_does_not_take_is_refused(entry: TableEntry, says: str) -> None:
    with pytest.raises(VerifyError, match=says.replace("(", r"\(").replace(")", r"\)")):
        bound_entry(load("p4lb"), entry)


def test_a_controller_writing_other_members_fails_the_json_proof(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mutant controller whose rr_member entries name the next backend: the proof's tables are the controller's,
    so the compiled program no longer does what the model does."""
    real = entries.rr_member
    monkeypatch.setattr(entries, "rr_member", lambda cfg, v, p, b, service=None: real(cfg, v, p, b + 1, service))
    r = check_equivalence("p4lb", reachability=False, others=False)
    assert r.verdict is Verdict.DIFFERS and r.counterexample is not None
