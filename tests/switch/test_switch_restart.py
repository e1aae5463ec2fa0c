"""The controller's P4Runtime session survives a switch restart: a clear error while the pipeline is gone, then
`deploy` pushes it again through the same session object (reconnected) and service resumes."""

from __future__ import annotations

import pytest

from p4lb.controller.controller import Controller
from p4lb.controller.errors import SwitchError
from p4lb.controller.settings import HealthCheck, Settings, SwitchTarget
from p4lb.lab.driver import SwitchDriver, p4lb_design
from p4lb.lab.toolchain import artifacts
from p4lb.model.crc import ip
from p4lb.model.packet import SYN, Packet


def test_controller_reconnects_after_a_switch_restart(p4lb_sw):
    lab = p4lb_sw
    p4info, bmv2_json = artifacts("p4lb")
    settings = Settings(lab.cfg, HealthCheck(), SwitchTarget(grpc=lab.bmv2.grpc, p4info=str(p4info), bmv2_json=str(bmv2_json)), lab.cfg.n, ())
    ctl = Controller(settings, lab.switch, grace_s=0)
    assert ctl.deploy()  # the lab's fresh pipeline has no vip entry: a full deploy
    drv = SwitchDriver(lab, p4lb_design(lab.cfg))
    assert drv.packet(Packet(ip("10.0.1.1"), 100, SYN)).outcome.backend == 1
    lab.bmv2.restart()
    with pytest.raises(SwitchError, match="failed at"):
        lab.switch.read()
    assert ctl.deploy()  # reconnects, finds no pipeline, pushes and commits again
    assert ctl.deploy() == []
    assert drv.packet(Packet(ip("10.0.1.1"), 101, SYN)).outcome.backend == 1
