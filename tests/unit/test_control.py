"""The control doors: the local unix socket and the signed peer door (on loopback)."""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dbha.errors import DbhaError
from dbha.node.control import (
    ControlError,
    LocalControlServer,
    PeerControlServer,
    local_request,
    peer_request,
)

KEY = b"k" * 32


def handler(request: dict[str, Any], origin: str) -> dict[str, Any]:
    if request.get("cmd") == "boom":
        raise RuntimeError("bug")
    if request.get("cmd") == "refuse":
        raise DbhaError("replica b lags 3 MB behind: refused (use --force)")
    return {"ok": True, "echo": request, "origin": origin}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "run" / "pg.sock"
    srv = LocalControlServer(path, handler)
    srv.start()
    yield path
    srv.stop()
    assert not path.exists()


@pytest.fixture
def peer() -> Iterator[tuple[PeerControlServer, int]]:
    port = _free_port()
    srv = PeerControlServer([("127.0.0.1", port)], KEY, handler)
    srv.start()
    yield srv, port
    srv.stop()


def test_local_socket_is_root_only_and_answers(local: Path) -> None:
    assert stat.S_IMODE(os.stat(local).st_mode) & 0o077 == 0
    assert local_request(local, {"cmd": "status"}) == {
        "ok": True,
        "echo": {"cmd": "status"},
        "origin": "local",
    }


def test_handler_errors_become_replies_not_crashes(local: Path) -> None:
    assert local_request(local, {"cmd": "refuse"})["error"].startswith("replica b lags")
    assert local_request(local, {"cmd": "boom"}) == {
        "ok": False,
        "error": "internal error: RuntimeError",
    }
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(local))
        s.sendall(b"not json\n")
        assert "bad request" in json.loads(s.makefile().readline())["error"]
    assert local_request(local, {"cmd": "status"})["ok"] is True  # still serving


def test_no_supervisor_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="no supervisor is running"):
        local_request(tmp_path / "absent.sock", {"cmd": "status"})


def test_peer_door_answers_a_signed_request(peer: tuple[PeerControlServer, int]) -> None:
    _, port = peer
    reply = peer_request([("127.0.0.1", port)], KEY, {"cmd": "status"})
    assert reply["origin"] == "peer" and reply["echo"] == {"cmd": "status"}


def test_peer_door_rejects_another_key_and_replays(peer: tuple[PeerControlServer, int]) -> None:
    srv, port = peer
    with pytest.raises(ControlError, match="unreachable"):
        peer_request([("127.0.0.1", port)], b"x" * 32, {"cmd": "fence"})
    # Capture a correctly signed request for one nonce and replay it on a new connection.
    from dbha.node.control import _mac

    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        f = s.makefile("rwb")
        nonce = json.loads(f.readline())["nonce"]
        signed = {"body": {"cmd": "fence"}, "mac": _mac(KEY, nonce, "request", {"cmd": "fence"})}
        f.write(json.dumps(signed).encode() + b"\n")
        f.flush()
        assert json.loads(f.readline())["body"]["ok"] is True
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        f = s.makefile("rwb")
        f.readline()  # a new nonce
        f.write(json.dumps(signed).encode() + b"\n")
        f.flush()
        assert f.readline() == b""  # dropped, no answer
    assert srv.rejected == 2


def test_peer_request_tries_every_address(peer: tuple[PeerControlServer, int]) -> None:
    _, port = peer
    dead = _free_port()
    reply = peer_request([("127.0.0.1", dead), ("127.0.0.1", port)], KEY, {"cmd": "x"}, 2)
    assert reply["ok"] is True
    with pytest.raises(ControlError, match=f"127.0.0.1:{dead}"):
        peer_request([("127.0.0.1", dead)], KEY, {"cmd": "x"}, 2)
