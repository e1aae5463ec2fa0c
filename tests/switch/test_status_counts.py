"""`p4lb status` on BMv2 at 2^20 flow places: the data plane's backend_open counts, read in one CPU-port request,
equal the full scan's open flows after flows are admitted, closed and reclaimed, and the read takes well under 2 s."""

from __future__ import annotations

import time

from test_p4lb_properties import check

from p4lb.controller.controller import Controller
from p4lb.controller.settings import HealthCheck, Settings, SwitchTarget
from p4lb.controller.switch import CPU_WRITE_TIMEOUT
from p4lb.lab.driver import tcp_frame
from p4lb.lab.lab import lab_artifacts
from p4lb.model.crc import ip
from p4lb.model.p4lb import SlotState
from p4lb.model.packet import ACK, FIN, PSH, RST, SYN, Packet

CLIENT = ip("10.0.1.1")
STATUS_BUDGET_S = 2.0  # the target for `p4lb status` at 2^20 places
SHORT_TIMEOUT_US = 100_000


def controller(lab) -> Controller:
    """A controller on the lab's P4Runtime session (the lab deployed the pipeline and the group)."""
    p4info, bmv2_json = lab_artifacts("p4lb")
    settings = Settings(lab.cfg, HealthCheck(), SwitchTarget(grpc=lab.bmv2.grpc, p4info=str(p4info), bmv2_json=str(bmv2_json)), lab.cfg.n, ())
    return Controller(settings, lab.switch, grace_s=0)


def counts(rows) -> list[int]:
    return [r.open_flows for r in rows]


def test_status_counts_equal_the_scan_and_take_under_2_s(p4lb_sw, capsys):
    lab, cfg = p4lb_sw, p4lb_sw.cfg
    assert 1 << cfg.flow_table_bits == 1 << 20 == lab.rt.register_size("flow_state")
    ports = range(7200, 7212)
    steps = [Packet(CLIENT, p, SYN) for p in ports]
    steps += [Packet(CLIENT, 7200, PSH | ACK), Packet(CLIENT, 7201, FIN | ACK), Packet(CLIENT, 7202, RST), Packet(CLIENT, 7203, FIN | ACK)]
    steps += [Packet(CLIENT, 7201, SYN), Packet(CLIENT, 7203, ACK)]  # a new flow after a close; a closing flow's packet
    run, _ = check(lab, steps)
    ctl = controller(lab)
    t0 = time.perf_counter()
    rows = ctl.status()
    took = time.perf_counter() - t0
    scan = ctl.status(scan=True)
    want = [run.state.backend_open.get(b, 0) for b in range(1, cfg.n + 1)]
    with capsys.disabled():
        print(f"\np4lb status on BMv2, {1 << cfg.flow_table_bits:,} flow places, {sum(counts(rows))} open: {took:.3f} s (budget {STATUS_BUDGET_S:g} s)")
    assert counts(rows) == counts(scan) == want and sum(want) == 10  # 12 admitted, 3 closed, one admitted again
    assert want == [sum(1 for e in run.state.flows.values() if e.state is SlotState.OPEN and e.backend == b) for b in range(1, cfg.n + 1)]
    assert took <= STATUS_BUDGET_S

    # every open flow idles past a short timeout; the scan no longer counts them, the counts keep their places
    lab.switch.cpu(CPU_WRITE_TIMEOUT, 0, SHORT_TIMEOUT_US)
    time.sleep(3 * SHORT_TIMEOUT_US / 1e6)
    assert counts(ctl.status(scan=True)) == [0] * cfg.n and counts(ctl.status()) == want
    for p in (7204, 7205, 7206):  # their own keys again: each reclaims its place (-1 on the old backend, +1 on the new)
        lab.send(tcp_frame(cfg, Packet(CLIENT, p, SYN)))
    lab.switch.cpu(CPU_WRITE_TIMEOUT, 0, cfg.idle_timeout_us)  # every OPEN place is open again at the long timeout
    rows, scan = ctl.status(), ctl.status(scan=True)
    assert counts(rows) == counts(scan) and sum(counts(rows)) == 10 and counts(rows) != want
