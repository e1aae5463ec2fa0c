"""Malformed input on p4lb.p4: never changes an open flow's state or the dispatch state (registers read before/after)."""

from __future__ import annotations

import pytest

from p4lb.lab.driver import SwitchDriver, p4lb_design, tcp_frame
from p4lb.lab.lab import mac
from p4lb.model.crc import ip, ip_str
from p4lb.model.packet import ACK, PSH, SYN, Packet

FLOWS = [Packet(ip("10.0.1.1"), 1000 + i, SYN) for i in range(3)]


COUNTED_MALFORMED = ("bad IPv4 checksum, SYN", "bad IPv4 checksum, open flow's RST", "SYN+FIN of an open flow", "SYN+RST of an open flow", "SYN+FIN+RST+ACK, new 5-tuple")


def _frames(cfg) -> dict[str, bytes]:
    """Each kind of bad input, aimed at the VIP and, where it has a 5-tuple, at an open flow's."""
    from scapy.layers.inet import IP, TCP  # noqa: PLC0415
    from scapy.layers.inet6 import IPv6  # noqa: PLC0415
    from scapy.layers.l2 import ARP, Ether  # noqa: PLC0415

    eth = Ether(src=mac(cfg.client_mac), dst=mac(0x00AA00000001))
    open_flow = FLOWS[0]
    ip4 = IP(src=ip_str(open_flow.src_ip), dst=ip_str(cfg.vip))
    syn = TCP(sport=open_flow.src_port, dport=cfg.vip_port, flags="S")
    new_syn = TCP(sport=4444, dport=cfg.vip_port, flags="S")
    good = bytes(eth / ip4 / new_syn)
    frames = {
        "ethernet only, IPv4 type": bytes(eth)[:12] + b"\x08\x00",
        "IPv4 header cut short": good[:14 + 12],
        "TCP header cut short": good[:14 + 20 + 8],
        "IHL 4 (below the minimum)": bytes(eth / IP(src=ip4.src, dst=ip4.dst, ihl=4) / new_syn),
        "IHL 15 past the packet end": bytes(eth / IP(src=ip4.src, dst=ip4.dst, ihl=15) / new_syn),
        "IP options (IHL 6), SYN": bytes(eth / IP(src=ip4.src, dst=ip4.dst, options=b"\x01\x01\x01\x00") / new_syn),
        "first fragment (MF) of a SYN": bytes(eth / IP(src=ip4.src, dst=ip4.dst, flags="MF") / new_syn),
        "later fragment, TCP-like bytes": bytes(eth / IP(src=ip4.src, dst=ip4.dst, frag=100, proto=6) / bytes(syn)),
        "IP version 6 in an IPv4 frame": bytes(eth / IP(src=ip4.src, dst=ip4.dst, version=6) / new_syn),
        "bad IPv4 checksum, SYN": bytes(eth / IP(src=ip4.src, dst=ip4.dst, chksum=0x1234) / new_syn),
        "bad IPv4 checksum, open flow's RST": bytes(eth / IP(src=ip4.src, dst=ip4.dst, chksum=0x1234) / TCP(sport=open_flow.src_port, dport=cfg.vip_port, flags="R")),
        "SYN+FIN of an open flow": bytes(eth / ip4 / TCP(sport=open_flow.src_port, dport=cfg.vip_port, flags="SF")),
        "SYN+RST of an open flow": bytes(eth / ip4 / TCP(sport=open_flow.src_port, dport=cfg.vip_port, flags="SR")),
        "SYN+FIN+RST+ACK, new 5-tuple": bytes(eth / ip4 / TCP(sport=4445, dport=cfg.vip_port, flags="SFRA")),
        "IPv6 TCP SYN": bytes(eth / IPv6(src="fd00::1", dst="fd00::2") / new_syn),
        "ARP for the VIP": bytes(Ether(src=mac(cfg.client_mac), dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=ip4.src, pdst=ip4.dst)),
        "UDP to the VIP's port": bytes(eth / ip4 / b"\x00\x50\x00\x50\x00\x08\x00\x00"),
    }
    frames["UDP to the VIP's port"] = bytes(eth / IP(src=ip4.src, dst=ip4.dst, proto=17) / b"\x04\xd2\x00\x50\x00\x08\x00\x00")
    return frames


@pytest.fixture
def opened(p4lb_sw):
    """p4lb deployed with three open flows; returns (lab, their backends)."""
    drv = SwitchDriver(p4lb_sw, p4lb_design(p4lb_sw.cfg))
    from p4lb.model.pool import Pool  # noqa: PLC0415

    drv.deploy(Pool.initial(p4lb_sw.cfg.n))
    backends = [drv.packet(p).outcome.backend for p in FLOWS]
    assert backends == [1, 2, 3]
    return p4lb_sw, drv, backends


def _snapshot(lab) -> dict:
    """The open flows' slots, the slots the bad packets' 5-tuples hash to, every open flow (all slots scanned),
    rr_next, the group, the counters."""
    from p4lb.model.p4lb import flow_slot  # noqa: PLC0415

    slots = {flow_slot(lab.cfg, p) for p in FLOWS} | {flow_slot(lab.cfg, Packet(FLOWS[0].src_ip, port, SYN)) for port in (4444, 4445)}
    regs = {slot: {k: v for k, v in lab.read_slot(slot).items() if k != "now"} for slot in sorted(slots)}
    view = lab.switch.read()
    return {"registers": regs, "open_flows": lab.switch.open_flows(), "group": view.groups, "version": view.version, "rr_next": view.rr_next, "backend_flows": view.backend_flows}


def test_malformed_input_changes_no_flow_and_no_dispatch_state(opened):
    lab, drv, backends = opened
    before = _snapshot(lab)
    frames = _frames(lab.cfg)
    counted = {}
    for name, frame in frames.items():
        malformed = lab.switch.read().lb_drops["malformed"]
        seen = lab.send(frame)
        to_backends = [s.port for s in seen if lab.backend_at(s.port)]
        assert not to_backends, f"{name}: reached backend port(s) {to_backends}"
        counted[name] = lab.switch.read().lb_drops["malformed"] - malformed
    for name in COUNTED_MALFORMED:  # each is dropped and counted once, as the model's MALFORMED drop
        assert counted[name] == 1, f"{name}: lb_drops[malformed] went up by {counted[name]}"
    after = _snapshot(lab)
    for key in before:
        assert after[key] == before[key], f"{key} changed"
    # the open flows still reach their backends
    for p, b in zip(FLOWS, backends, strict=True):
        assert drv.packet(Packet(p.src_ip, p.src_port, PSH | ACK)).outcome.backend == b


def test_bad_tcp_checksum_goes_to_the_pinned_backend_and_changes_nothing(opened):
    """p4lb does not verify TCP checksums; like the seed it recomputes them after the rewrite (see README, limits)."""
    lab, drv, backends = opened
    frame = bytearray(tcp_frame(lab.cfg, Packet(FLOWS[1].src_ip, FLOWS[1].src_port, ACK)))
    frame[14 + 20 + 16] ^= 0xFF
    from p4lb.model.p4lb import flow_slot  # noqa: PLC0415

    slot = flow_slot(lab.cfg, FLOWS[1])
    before = lab.read_slot(slot)
    seen = lab.send(bytes(frame))
    assert [lab.backend_at(s.port) for s in seen] == [backends[1]]
    after = lab.read_slot(slot)
    assert (after["flow_state"], after["flow_key"], after["flow_backend"]) == (before["flow_state"], before["flow_key"], before["flow_backend"])


def test_short_cpu_scan_request_is_dropped_and_the_switch_keeps_answering(p4lb_sw):
    """A CPU_SCAN whose payload is too short to fill is dropped (BMv2 would abort growing the packet)."""
    from p4lb.controller.switch import CPU_SCAN  # noqa: PLC0415

    p4lb_sw.rt.packet_out({"op": CPU_SCAN, "index": 0}, bytes(10))
    assert p4lb_sw.read_slot(5)["op"] == 1  # the next answer is the read's: the short scan produced none
    assert p4lb_sw.switch.open_flows() == {}
