"""The PTF base test: test parameters, deployment through p4lb's controller code, and model-predicted packets.

Run by the standard `ptf` runner against a simple_switch_grpc the user started (with --cpu-port 510); ports
are the ptf port map (`--interface 0@IF ...`): 0 = no host (a black hole is seen there), 1 = the client,
2..5 = backends 1..4. Test parameters (`--test-params "k='v';..."`): grpcaddr, p4info, bmv2_json (p4lb's),
and optionally seed_p4info, seed_bmv2_json, small_p4info, small_bmv2_json (p4lb on the 32-place table; default: the
package's builds), device_id (default 0).
Every packet is sent with ptf.testutils.send_packet; the executable model says where it must leave
(verify_packet on that port, with the rewritten headers) or that it is dropped (and which lb_drops counter
counts it); verify_no_other_packets then checks that nothing else left on any port.
"""

from __future__ import annotations

from pathlib import Path

import ptf
from ptf import testutils
from ptf.base_tests import BaseTest
from ptf.mask import Mask
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from p4lb.controller.p4rt import P4rt
from p4lb.controller.switch import P4RuntimeSwitch
from p4lb.lab.driver import expected_frame, install_seed_rt, seed_write_rt, tcp_frame
from p4lb.model.config import P4LB_TABLE_BITS, LbConfig, default_config
from p4lb.model.design import Design, make_design
from p4lb.model.ops import Write
from p4lb.model.p4lb import P4lbState, p4lb_plan
from p4lb.model.packet import Fate, Outcome, Packet
from p4lb.model.pool import Pool
from p4lb.model.trace import OpStep, Run, Step
from p4lb.p4 import artifacts, p4lb_build

SINK_PORT = 0  # the port BMv2 sends a packet to when no egress was chosen


def param(name: str, default: str | None = None) -> str:
    """A --test-params value, or the default; a missing one without default is an error naming it."""
    value = testutils.test_param_get(name, default)
    if value is None:
        raise ValueError(f"--test-params lacks {name}= (give grpcaddr, p4info and bmv2_json)")
    return str(value)


def program_files(program: str, table_bits: int = P4LB_TABLE_BITS) -> tuple[Path, Path]:
    """(P4Info, BMv2 JSON) of p4lb from the test params (small_p4info, small_bmv2_json for the small table, by
    default the package's p4lb_small build); of the seed from them or the package's build."""
    if program == "p4lb" and table_bits == P4LB_TABLE_BITS:
        return Path(param("p4info")), Path(param("bmv2_json"))
    prefix = "seed" if program == "seed" else "small"
    p4info, bmv2_json = artifacts(program if program == "seed" else p4lb_build(table_bits))
    return Path(param(f"{prefix}_p4info", str(p4info))), Path(param(f"{prefix}_bmv2_json", str(bmv2_json)))


def lost_mask(cfg: LbConfig, pkt: Packet) -> Mask:
    """The client's frame as it leaves on the sink port: its rewritten fields and checksums not cared for."""
    m = Mask(Ether(tcp_frame(cfg, pkt)))
    m.set_do_not_care_scapy(Ether, "dst")
    for f in ("dst", "ttl", "chksum"):
        m.set_do_not_care_scapy(IP, f)
    m.set_do_not_care_scapy(TCP, "chksum")
    return m


class P4lbPtfTest(BaseTest):
    """A fresh pipeline per test, pushed and written through p4lb's controller code (P4RuntimeSwitch, P4rt)."""

    program = "p4lb"
    table_bits = P4LB_TABLE_BITS  # P4LB_SMALL_TABLE_BITS: the small build (32 places), where refusals can be seen

    def setUp(self) -> None:
        """Connect (primary), push the program: every table, register and counter starts empty."""
        BaseTest.setUp(self)
        self.dataplane = ptf.dataplane_instance
        self.dataplane.flush()
        self.cfg = default_config(4, flow_table_bits=self.table_bits)
        grpc, device = param("grpcaddr"), int(param("device_id", "0"))
        p4info, bmv2_json = program_files(self.program, self.table_bits)
        if self.program == "p4lb":
            self.switch = P4RuntimeSwitch(grpc, device, (0, 1), str(p4info), str(bmv2_json), self.cfg)
            self.rt = self.switch.rt
            self.switch.install_pipeline()
        else:
            self.rt = P4rt(grpc, device)
            self.rt.push(p4info, bmv2_json)

    def tearDown(self) -> None:
        """End the P4Runtime session."""
        self.rt.close()
        BaseTest.tearDown(self)

    def design(self) -> Design:
        """The design this test's program implements, on the test's backends (p4lb: and its flow table)."""
        return make_design(self.program, self.cfg.n) if self.program == "seed" else Design("p4lb", self.cfg)

    def deploy(self, design: Design, pool: Pool) -> None:
        """Static entries, then `pool`'s group, as the controller writes them."""
        if design.is_seed:
            install_seed_rt(self.rt, self.cfg, pool)
            return
        self.switch.install_backends(design.cfg)
        for w in p4lb_plan(design.variant, P4lbState(), pool):
            self.switch.write(w)

    def write(self, design: Design, w: Write) -> None:
        """One controller write, under the model's name."""
        if w.target == "noop":
            return
        if design.is_seed:
            seed_write_rt(self.rt, self.cfg, w)
        else:
            self.switch.write(w)

    def drops(self, design: Design) -> dict[int, int]:
        """lb_drops by reason (the seed counts nothing)."""
        return {} if design.is_seed else self.rt.counter_read("lb_drops")

    def check_packet(self, design: Design, pkt: Packet, out: Outcome) -> None:
        """Send from the client; verify the model's outcome on the ports (and in lb_drops for a counted drop)."""
        before = self.drops(design)
        testutils.send_packet(self, self.cfg.client_port, tcp_frame(self.cfg, pkt))
        if out.fate is Fate.BACKEND:
            testutils.verify_packet(self, expected_frame(design, pkt, out.backend), self.cfg.backend(out.backend).port)
        elif out.fate is Fate.LOST:
            testutils.verify_packet(self, lost_mask(self.cfg, pkt), SINK_PORT)
        testutils.verify_no_other_packets(self)
        if out.fate is Fate.DROP and out.reason.counted and not design.is_seed:
            after = self.drops(design)
            self.assertEqual(after.get(int(out.reason), 0), before.get(int(out.reason), 0) + 1, f"lb_drops[{out.reason.name}] after {pkt}")

    def run_steps(self, steps: list[Step], pool: Pool | None = None, design: Design | None = None) -> tuple[Run, list[Outcome]]:
        """Deploy, then each step on the model and on the switch; the model's outcome of each packet verified."""
        design = design or self.design()
        pool = pool or Pool.initial(self.cfg.n)
        run, outs = Run.start(design, pool), []
        self.deploy(design, pool)
        for step in steps:
            res = run.step(step)
            if isinstance(step, Packet):
                assert res.outcome is not None
                self.check_packet(design, step, res.outcome)
                outs.append(res.outcome)
            else:
                for w in res.writes if isinstance(step, OpStep) else [step.write]:
                    self.write(design, w)
        return run, outs

    def run_p4lb(self, steps: list[Step], pool: Pool | None = None) -> list[int]:
        """p4lb: run, require no property broken in the model's run; the backend of each packet (0 = dropped)."""
        run, outs = self.run_steps(steps, pool)
        self.run = run  # the model's run, for the state its packets left (e.g. where a flow sits)
        broken = [(r.index, v) for r in run.results for v in r.violations]
        self.assertEqual(broken, [])
        return [o.backend if o.fate is Fate.BACKEND else 0 for o in outs]
