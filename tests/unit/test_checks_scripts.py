"""The check scripts shipped in checks/ work with dbha's check runner."""

from __future__ import annotations

import socket
from pathlib import Path

from dbha.config import CheckConfig
from dbha.node.checkscripts import run_check

TCP = str(Path(__file__).resolve().parents[2] / "checks" / "dbha-check-tcp")


def _check(*args: str) -> CheckConfig:
    return CheckConfig("tcp", (TCP, *args), interval_ms=2000, timeout_ms=1500, fall=1, rise=1)


def test_tcp_check_passes_on_a_listening_port_and_fails_on_a_closed_one() -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        ok, detail = run_check(_check("127.0.0.1", str(port), "0.5"))
        assert ok, detail
    ok, detail = run_check(_check("127.0.0.1", str(port), "0.5"))  # closed now
    assert not ok and "exit 1" in detail


def test_tcp_check_refuses_bad_arguments() -> None:
    ok, detail = run_check(_check("127.0.0.1", "99999"))
    assert not ok and "exit 2" in detail
