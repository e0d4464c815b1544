"""tcpkill never raises and leaves names and bad ports alone (ending real sockets
is exercised by the MariaDB host-death scenario in tests/lab)."""

from __future__ import annotations

import pytest

from dbha.db import tcpkill


def test_a_name_or_a_bad_port_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[object] = []
    monkeypatch.setattr(tcpkill.proc, "run", lambda *a, **k: ran.append(a))
    assert tcpkill.end_connections("db-a.example", 3306, timeout=1.0) is False
    assert tcpkill.end_connections("198.18.0.12", 0, timeout=1.0) is False
    assert ran == []


def test_the_ss_filter_names_the_address_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[list[str]] = []
    monkeypatch.setattr(tcpkill.proc, "run", lambda argv, **k: ran.append(list(argv)))
    assert tcpkill.end_connections("198.18.0.12", 3306, timeout=1.0) is True
    assert tcpkill.end_connections("fd00::12", 3306, timeout=1.0) is True
    assert ran == [
        ["ss", "-K", "-t", "-4", "dst", "198.18.0.12", "dport", "=", "3306"],
        ["ss", "-K", "-t", "-6", "dst", "[fd00::12]", "dport", "=", "3306"],
    ]


def test_a_missing_tool_is_false_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tcpkill, "SS", "/nonexistent/ss")
    assert tcpkill.end_connections("198.18.0.12", 3306, timeout=1.0) is False
