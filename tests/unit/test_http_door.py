"""The HTTP door's server (dbha.node.http) on loopback: requests, refusals, bounds, TLS.

The view it answers from is a fixed status dict (the rules themselves are
tests/unit/test_httpviews.py); the server, its parser, its limits and TLS are
the real ones, talking to real sockets.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dbha.config import HttpConfig
from dbha.node.http import MAX_HEAD_BYTES, Feed, HttpDoor, HttpError
from dbha.node.httpviews import Bounds, View
from dbha.node.metrics import Metrics

from .test_httpviews import primary

BOUNDS = Bounds("postgresql", 1 << 20, 100, 30.0)
SECRET = "s3cret-Pa55"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_cfg(**kw: Any) -> HttpConfig:
    base: dict[str, Any] = {
        "address": ipaddress.ip_address("127.0.0.1"),
        "port": free_port(),
        "cert_file": None,
        "key_file": None,
        "client_ca_file": None,
        "auth_file": None,
        "max_connections": 16,
        "request_timeout_ms": 500,
    }
    base.update(kw)
    return HttpConfig(**base)


class Door:
    def __init__(self, cfg: HttpConfig, status: dict[str, Any] | None = None) -> None:
        self.status = status if status is not None else primary()
        self.metrics = Metrics()
        self.metrics.watch(lambda: (self.status, 3.0))
        self.cfg = cfg
        self.door = HttpDoor(cfg, lambda: BOUNDS, self.view, self.metrics)

    def view(self) -> View:
        return View(self.status, 3.0, 0.1)

    def ask(self, method: str, path: str, headers: dict[str, str] | None = None, **kw: Any):
        c = http.client.HTTPConnection("127.0.0.1", self.cfg.port, timeout=5, **kw)
        try:
            c.request(method, path, headers=headers or {})
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            c.close()

    def refused(self, reason: str) -> float:
        v = self.metrics.registry.get_sample_value("dbha_http_refused_total", {"reason": reason})
        return v or 0.0


def raw(port: int, data: bytes, *, wait: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


@pytest.fixture
def door() -> Iterator[Door]:
    d = Door(http_cfg())
    d.door.start()
    yield d
    d.door.stop()


def test_get_head_and_options_answer_alike(door: Door) -> None:
    code, headers, body = door.ask("GET", "/primary")
    assert code == 200 and json.loads(body)["ok"] is True
    assert headers["Connection"] == "close"
    code, headers, body = door.ask("HEAD", "/primary")
    assert code == 200 and body == b""
    code, headers, body = door.ask("OPTIONS", "/primary")
    assert code == 200 and body == b"" and "OPTIONS" in headers["Allow"]
    door.status = dict(door.status, role="fenced")
    assert door.ask("OPTIONS", "/primary")[0] == 503
    assert door.ask("GET", "/replica")[0] == 503


def test_status_and_metrics(door: Door) -> None:
    code, headers, body = door.ask("GET", "/status")
    assert code == 200 and json.loads(body)["role"] == "primary"
    code, headers, body = door.ask("GET", "/metrics")
    text = body.decode()
    assert code == 200 and headers["Content-Type"].startswith("text/plain")
    assert 'dbha_role{role="primary"} 1.0' in text
    assert "dbha_lease_remaining_seconds 3.0" in text
    assert 'dbha_http_requests_total{code="200",endpoint="/status"} 1.0' in text


@pytest.mark.parametrize(
    ("request_bytes", "code", "reason"),
    [
        (b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", 404, "not_found"),
        (b"POST /primary HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405, "method"),
        (b"GET /primary HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 400, "body"),
        (b"GARBAGE\r\n\r\n", 400, "malformed"),
        (b"GET /primary SPDY/3\r\n\r\n", 400, "malformed"),
        (b"GET /primary HTTP/1.1\r\nno colon here\r\n\r\n", 400, "malformed"),
        (b"GET /replica?lag=lots HTTP/1.1\r\n\r\n", 400, "bad_query"),
        (b"GET /primary HTTP/1.1\r\n" + b"X-A: b\r\n" * 65 + b"\r\n", 431, "oversize"),
        (
            b"GET /primary HTTP/1.1\r\nX-Big: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n",
            431,
            "oversize",
        ),
    ],
)
def test_bad_requests_get_a_4xx_and_a_count(
    door: Door, request_bytes: bytes, code: int, reason: str
) -> None:
    before = door.refused(reason)
    out = raw(door.cfg.port, request_bytes)
    assert out.startswith(f"HTTP/1.1 {code} ".encode()), out[:80]
    assert door.refused(reason) == before + 1
    assert door.ask("GET", "/primary")[0] == 200  # the door still serves


def test_a_slow_client_is_cut_off_at_the_request_timeout(door: Door) -> None:
    """Slowloris: one byte at a time never finishes a head; the door ends it at
    request_timeout_ms, answering others meanwhile."""
    s = socket.create_connection(("127.0.0.1", door.cfg.port), timeout=5)
    s.sendall(b"GET /pri")
    assert door.ask("GET", "/primary")[0] == 200
    began = time.monotonic()
    try:
        for ch in b"mary HTTP/1.1\r\nX: " + b"y" * 50:
            s.sendall(bytes([ch]))
            time.sleep(0.05)
    except OSError:
        pass  # the door closed it under us
    s.settimeout(5)
    try:
        rest = s.recv(100)
    except OSError:
        rest = b""
    s.close()
    assert rest == b"" and time.monotonic() - began < 5
    assert door.refused("timeout") >= 1


def test_connections_over_the_bound_are_closed_at_once(door: Door) -> None:
    idle = [socket.create_connection(("127.0.0.1", door.cfg.port)) for _ in range(16)]
    time.sleep(0.2)
    extra = socket.create_connection(("127.0.0.1", door.cfg.port), timeout=2)
    assert extra.recv(10) == b""  # closed without a word
    extra.close()
    assert door.refused("too_many_connections") >= 1
    for s in idle:
        s.close()
    time.sleep(0.2)
    assert door.ask("GET", "/primary")[0] == 200


def test_a_bare_tcp_check_is_not_a_refusal(door: Door) -> None:
    socket.create_connection(("127.0.0.1", door.cfg.port)).close()
    time.sleep(0.1)
    assert door.refused("incomplete") == 0 and door.refused("malformed") == 0


def test_the_door_does_not_start_on_a_taken_port() -> None:
    taken = socket.create_server(("127.0.0.1", 0))
    cfg = http_cfg(port=taken.getsockname()[1])
    with pytest.raises(HttpError, match=r"127\.0\.0\.1"):
        Door(cfg).door.start()
    taken.close()


def test_basic_auth_guards_status_and_metrics_only(tmp_path: Path) -> None:
    auth = tmp_path / "auth"
    auth.write_text(f"monitor:{SECRET}\n")
    auth.chmod(0o600)
    d = Door(http_cfg(auth_file=auth))
    d.door.start()
    try:
        assert d.ask("GET", "/primary")[0] == 200  # load balancers ask unauthenticated
        code, headers, body = d.ask("GET", "/status")
        assert code == 401 and "Basic" in headers["WWW-Authenticate"]
        assert SECRET not in body.decode()
        wrong = base64.b64encode(b"monitor:nope").decode()
        assert d.ask("GET", "/metrics", {"Authorization": f"Basic {wrong}"})[0] == 401
        assert d.ask("GET", "/metrics", {"Authorization": "Basic !!!"})[0] == 401
        good = base64.b64encode(f"monitor:{SECRET}".encode()).decode()
        code, _, body = d.ask("GET", "/status", {"Authorization": f"Basic {good}"})
        assert code == 200 and SECRET not in body.decode()
        assert d.refused("unauthorized") == 3
    finally:
        d.door.stop()


def test_an_auth_file_without_user_and_password_stops_the_start(tmp_path: Path) -> None:
    auth = tmp_path / "auth"
    auth.write_text("justonepart\n")
    with pytest.raises(HttpError, match=r"http.auth_file.*user:password") as got:
        Door(http_cfg(auth_file=auth)).door.start()
    assert "justonepart" not in str(got.value)


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=dbha test CA",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"))  # fmt: skip
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"))  # fmt: skip
        ext = d / f"{name}.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1\n")
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.crt"),
                 "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2",
                 "-extfile", str(ext), "-out", str(d / f"{name}.crt"))  # fmt: skip
    return d


def test_tls_with_client_certificates(pki: Path) -> None:
    cfg = http_cfg(
        cert_file=pki / "server.crt", key_file=pki / "server.key", client_ca_file=pki / "ca.crt"
    )
    d = Door(cfg)
    d.door.start()
    try:
        bare = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        c = http.client.HTTPSConnection("127.0.0.1", cfg.port, timeout=5, context=bare)
        c.request("GET", "/primary")
        assert c.getresponse().status == 200
        c.close()
        c = http.client.HTTPSConnection("127.0.0.1", cfg.port, timeout=5, context=bare)
        c.request("GET", "/metrics")
        assert c.getresponse().status == 403  # no client certificate
        c.close()
        mutual = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        mutual.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
        c = http.client.HTTPSConnection("127.0.0.1", cfg.port, timeout=5, context=mutual)
        c.request("GET", "/metrics")
        r = c.getresponse()
        assert r.status == 200 and b"dbha_epoch" in r.read()
        c.close()
        # plain HTTP to a TLS door: no answer, and the door goes on
        with pytest.raises((http.client.HTTPException, OSError)):
            d.ask("GET", "/primary")
    finally:
        d.door.stop()


def test_the_feed_builds_the_status_once_per_tick() -> None:
    built = []

    def status() -> dict[str, Any]:
        built.append(1)
        return primary()

    feed = Feed(status, Metrics())
    assert feed.view().status is None and not built  # before the first tick
    feed.ticked(0.0, time.monotonic())
    for _ in range(5):
        feed.view()
    assert len(built) == 1
    feed.ticked(0.0, time.monotonic())
    feed.view()
    assert len(built) == 2
    feed.lease(time.monotonic() + 2)
    assert 1.5 < (feed.view().lease_left or 0) <= 2
    feed.stepping_down(True)
    assert feed.view().stepping_down
    feed.ticked(0.0, time.monotonic())
    assert not feed.view().stepping_down


def test_many_requests_from_threads_all_answer(door: Door) -> None:
    codes: list[int] = []
    lock = threading.Lock()

    def ask() -> None:
        for _ in range(20):
            code = door.ask("GET", "/primary")[0]
            with lock:
                codes.append(code)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert codes == [200] * 160
