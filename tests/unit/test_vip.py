"""ARP frames (pure) and the Vip driver's argument checks and error mapping.

Nothing here changes the machine's network: the driver is only pointed at an
interface that does not exist. Adding, removing and announcing for real are
lab tests (tests/lab/test_vip_lab.py).
"""

from __future__ import annotations

import os

import pytest

from dbha.host.garp import (
    ARP_REPLY,
    ARP_REQUEST,
    BROADCAST,
    ZERO_MAC,
    ArpPacket,
    arp_frame,
    claims,
    mac_bytes,
    mac_text,
    parse_arp,
)
from dbha.host.vip import Vip, VipConflict, VipError

OURS = "02:00:00:00:00:01"
THEIRS = "02:00:00:00:00:02"
VIP = "198.18.0.100"


def test_mac_round_trip() -> None:
    assert mac_text(mac_bytes(OURS)) == OURS
    for bad in ("02:00", "zz:00:00:00:00:01", "0200.0000.0001", ""):
        with pytest.raises(ValueError):
            mac_bytes(bad)


def test_probe_frame_is_rfc5227() -> None:
    frame = arp_frame(
        op=ARP_REQUEST,
        src_mac=mac_bytes(OURS),
        sender_ip="0.0.0.0",
        target_mac=ZERO_MAC,
        target_ip=VIP,
        dst=BROADCAST,
    )
    assert len(frame) == 60  # padded to the Ethernet minimum
    assert frame[:6] == BROADCAST and frame[6:12] == mac_bytes(OURS)
    assert frame[12:14] == b"\x08\x06"
    assert parse_arp(frame) == ArpPacket(ARP_REQUEST, OURS, "0.0.0.0", mac_text(ZERO_MAC), VIP)


def test_announcements_carry_the_address_as_sender_and_target() -> None:
    for op in (ARP_REQUEST, ARP_REPLY):
        frame = arp_frame(
            op=op,
            src_mac=mac_bytes(OURS),
            sender_ip=VIP,
            target_mac=ZERO_MAC,
            target_ip=VIP,
            dst=BROADCAST,
        )
        p = parse_arp(frame)
        assert p is not None and p.op == op and p.sender_ip == p.target_ip == VIP


def test_parse_never_raises_on_junk() -> None:
    assert parse_arp(b"") is None
    assert parse_arp(b"\xff" * 12 + b"\x08\x00" + b"\0" * 46) is None  # IPv4, not ARP
    assert parse_arp(b"\xff" * 12 + b"\x08\x06" + b"\0" * 10) is None  # too short
    assert parse_arp(b"\xff" * 12 + b"\x08\x06" + b"\0\x06\x08\x00\x06\x04" + b"\0" * 40) is None
    for _ in range(200):
        junk = os.urandom(12) + b"\x08\x06" + os.urandom(46)
        parse_arp(junk)  # returns a packet or None, never raises


@pytest.mark.parametrize(
    ("packet", "conflict"),
    [
        (ArpPacket(ARP_REPLY, THEIRS, VIP, OURS, "0.0.0.0"), True),  # answers our probe
        (ArpPacket(ARP_REQUEST, THEIRS, VIP, "00:00:00:00:00:00", VIP), True),  # announces it
        (ArpPacket(ARP_REQUEST, THEIRS, "0.0.0.0", "00:00:00:00:00:00", VIP), True),  # probes it
        (ArpPacket(ARP_REQUEST, OURS, VIP, "00:00:00:00:00:00", VIP), False),  # ourselves
        (ArpPacket(ARP_REQUEST, THEIRS, "198.18.0.20", "00:00:00:00:00:00", VIP), False),  # asks
        (ArpPacket(ARP_REPLY, THEIRS, "198.18.0.12", OURS, "198.18.0.11"), False),  # unrelated
    ],
)
def test_what_counts_as_another_holder(packet: ArpPacket, conflict: bool) -> None:
    assert claims(packet, VIP, OURS) is conflict


def test_vip_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="IPv4"):
        Vip("2001:db8::1/64", "eth0", arp_count=3, arp_interval_ms=200)
    with pytest.raises(ValueError):
        Vip("198.18.0.100/24", "eth0", arp_count=0, arp_interval_ms=200)
    with pytest.raises(ValueError):
        Vip("not an address", "eth0", arp_count=3, arp_interval_ms=200)


def test_a_missing_interface_is_a_vip_error() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (netlink and AF_PACKET)")
    with pytest.raises(VipError, match="dbha-nosuch0"):
        Vip("198.18.0.100/24", "dbha-nosuch0", arp_count=3, arp_interval_ms=200)


def test_conflict_error_names_the_mac() -> None:
    err = VipConflict("198.18.0.100/24", "eth0", THEIRS)
    assert isinstance(err, VipError)
    assert THEIRS in str(err) and "198.18.0.100" in str(err) and err.mac == THEIRS
