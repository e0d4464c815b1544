"""tcpkill: which sockets it would end, and that it never raises. Ending real
sockets is exercised by the MariaDB host-death scenario in tests/lab."""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

import pytest

from dbha.db import tcpkill

HEAD = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  inode\n"
# 198.18.0.11:36716 -> 198.18.0.12:3306 (SYN-SENT, inode 111); the same peer from
# another socket (inode 222, say a safety probe); another port; the kernel's
# little-endian words on this machine.
TCP4 = HEAD + (
    "   0: 0B0012C6:8F6C 0C0012C6:0CEA 02 00000001:00000000 01:00000064 00000002   107 0 111 1 0\n"
    "   1: 0B0012C6:8F70 0C0012C6:0CEA 02 00000001:00000000 01:00000064 00000002     0 0 222 1 0\n"
    "   2: 0B0012C6:8F74 0C0012C6:1538 01 00000000:00000000 00:00000000 00000000   107 0 111 1 0\n"
    "   3: garbage\n"
)
TCP6 = HEAD + (
    "   0: 00000000000000000000000001000000:8F6C 000000000000000000000000010000FF:0CEA "
    "02 00000001:00000000 01:00000064 00000002 107 0 333 1 0\n"
)
PEER = ipaddress.ip_address("198.18.0.12")


@pytest.mark.skipif(sys.byteorder != "little", reason="the fixture is little-endian")
def test_only_the_owners_sockets_to_that_peer_and_port_are_chosen() -> None:
    assert tcpkill.connections(TCP4, {111}, PEER, 3306) == [
        (ipaddress.ip_address("198.18.0.11"), 0x8F6C)
    ]
    assert tcpkill.connections(TCP4, {111, 222}, PEER, 3306) == [
        (ipaddress.ip_address("198.18.0.11"), 0x8F6C),
        (ipaddress.ip_address("198.18.0.11"), 0x8F70),
    ]
    assert tcpkill.connections(TCP4, {999}, PEER, 3306) == []
    assert tcpkill.connections(TCP4, {111}, ipaddress.ip_address("198.18.0.13"), 3306) == []
    six = tcpkill.connections(TCP6, {333}, ipaddress.ip_address("::ff00:1"), 3306)
    assert [(str(a), p) for a, p in six] == [("::1", 0x8F6C)]


def test_end_connections_asks_ss_for_each_owned_socket(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "tcp").write_text(TCP4)
    monkeypatch.setattr(tcpkill, "PROC", tmp_path)
    monkeypatch.setattr(tcpkill, "socket_inodes", lambda pid: {111} if pid == 42 else set())
    ran: list[list[str]] = []
    monkeypatch.setattr(tcpkill.proc, "run", lambda argv, **k: ran.append(list(argv)))
    if sys.byteorder == "little":
        assert tcpkill.end_connections(42, "198.18.0.12", 3306, timeout=1.0) == 1
        sport = str(0x8F6C)
        assert ran == [
            [
                "ss",
                "-K",
                "-t",
                "-4",
                "src",
                "198.18.0.11",
                "sport",
                "=",
                sport,
                "dst",
                "198.18.0.12",
                "dport",
                "=",
                "3306",
            ]
        ]
    ran.clear()
    assert tcpkill.end_connections(7, "198.18.0.12", 3306, timeout=1.0) == 0  # owns none
    assert tcpkill.end_connections(42, "db-b.example", 3306, timeout=1.0) == 0  # a name
    assert tcpkill.end_connections(42, "198.18.0.12", 0, timeout=1.0) == 0
    assert ran == []


def test_a_missing_tool_or_process_is_zero_not_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "tcp").write_text(TCP4)
    monkeypatch.setattr(tcpkill, "PROC", tmp_path)
    monkeypatch.setattr(tcpkill, "socket_inodes", lambda pid: {111})
    monkeypatch.setattr(tcpkill, "SS", "/nonexistent/ss")
    assert tcpkill.end_connections(42, "198.18.0.12", 3306, timeout=1.0) == 0


def test_no_such_process_has_no_sockets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tcpkill, "PROC", tmp_path)
    assert tcpkill.socket_inodes(12345) == set()


def test_socket_inodes_reads_this_process() -> None:
    import socket

    with socket.socket() as s:
        assert os.fstat(s.fileno()).st_ino in tcpkill.socket_inodes(os.getpid())
