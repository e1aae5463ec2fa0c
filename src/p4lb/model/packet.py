"""Packets as the load balancer sees them, their TCP flag classes, and what the switch did with them."""

from __future__ import annotations

import enum
from dataclasses import dataclass

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
FLAG_NAMES = (("FIN", FIN), ("SYN", SYN), ("RST", RST), ("PSH", PSH), ("ACK", ACK), ("URG", 0x20))


class FlagClass(enum.IntEnum):
    """How a packet's TCP flags are read by the spec and by p4lb."""

    SYN = 0  # SYN alone (no ACK, FIN, RST): opens a flow
    CLOSE = 1  # FIN or RST without SYN: closes an open flow
    OTHER = 2  # anything else (ACK, PSH, SYN+ACK, ...): a packet of an open flow
    MALFORMED = 3  # SYN together with FIN or RST: dropped and counted, never changes state


def classify(flags: int) -> FlagClass:
    """The class of a TCP flag byte."""
    syn = bool(flags & SYN)
    close = bool(flags & (FIN | RST))
    if syn and close:
        return FlagClass.MALFORMED
    if syn and not flags & ACK:
        return FlagClass.SYN
    if close:
        return FlagClass.CLOSE
    return FlagClass.OTHER


def flags_str(flags: int) -> str:
    """Flags as 'SYN|ACK'."""
    names = [name for name, bit in FLAG_NAMES if flags & bit]
    return "|".join(names) if names else "-"


def parse_flags(text: str) -> int:
    """'SYN|ACK' (or a number) to the flag byte."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    if text == "-":
        return 0
    table = dict(FLAG_NAMES)
    return sum(table[name.strip().upper()] for name in text.split("|"))


SERVICE_SHIFT = 48  # a flow key is service (8 bits) ++ client address (32) ++ client port (16)


def flow_key(service: int, src_ip: int, src_port: int) -> int:
    """The 56-bit flow key (service, client address, client port) of a packet to a service's VIP."""
    return (service << SERVICE_SHIFT) | (src_ip << 16) | src_port


def key_service(key: int) -> int:
    """The service of a flow key."""
    return key >> SERVICE_SHIFT


def key_packet(key: int, flags: int = 0, time_us: int = 0) -> Packet:
    """A packet of the flow with this key (its service, client address and port)."""
    return Packet((key >> 16) & 0xFFFFFFFF, key & 0xFFFF, flags, time_us, key_service(key))


@dataclass(frozen=True)
class Packet:
    """A TCP packet from a client to a service's VIP: only the fields the ingress reads."""

    src_ip: int
    src_port: int
    flags: int
    time_us: int = 0
    service: int = 0  # the service whose VIP:port the packet is addressed to (the `vip` entry's id)

    @property
    def key(self) -> int:
        """The flow key."""
        return flow_key(self.service, self.src_ip, self.src_port)

    @property
    def flag_class(self) -> FlagClass:
        """The class of the flags."""
        return classify(self.flags)


class DropReason(enum.IntEnum):
    """Why the switch dropped a packet; each counted reason is an index of the `lb_drops` counter."""

    NONE = 0
    NO_ELIGIBLE = 1  # a new flow's SYN while no backend is eligible
    FLOW_TABLE_FULL = 2  # a new flow's SYN whose slot holds another open flow
    UNKNOWN_FLOW = 3  # a non-SYN packet of no open flow
    MALFORMED = 4  # contradictory flags (SYN+FIN, SYN+RST)
    NO_BACKEND_ENTRY = 5  # the chosen backend has no `backend` entry: would be a black hole (never, if deployed by the controller)
    UNCOUNTED = 7  # dropped without any counter (the seed's only kind of drop)

    @property
    def counted(self) -> bool:
        """True if the drop increments a counter."""
        return self not in (DropReason.NONE, DropReason.UNCOUNTED)


class Fate(enum.IntEnum):
    """Where a packet went."""

    BACKEND = 0  # sent to backend `backend`
    DROP = 1  # dropped (reason says whether it was counted)
    LOST = 2  # sent to a port where no backend is (egress_spec left at 0): a silent black hole


@dataclass(frozen=True)
class Outcome:
    """The switch's decision for one packet."""

    fate: Fate
    backend: int = 0
    reason: DropReason = DropReason.NONE
    admitted: bool = False  # a new flow was admitted (first SYN dispatched)

    def __str__(self) -> str:
        if self.fate is Fate.BACKEND:
            return f"backend {self.backend}" + (" (new flow)" if self.admitted else "")
        if self.fate is Fate.DROP:
            return f"drop ({self.reason.name.lower()})"
        return f"lost (selector {self.backend}: no backend there)"


def to_backend(backend: int, admitted: bool = False) -> Outcome:
    """Outcome: forwarded to a backend."""
    return Outcome(Fate.BACKEND, backend, DropReason.NONE, admitted)


def dropped(reason: DropReason) -> Outcome:
    """Outcome: dropped."""
    return Outcome(Fate.DROP, 0, reason)
