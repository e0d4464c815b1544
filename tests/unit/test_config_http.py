"""The ``[http]`` table: defaults, problems named by key, files checked, the summary."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from dbha import config

from .test_config import BASE, changed, mutate, problems_of, render

HTTP = {"address": "198.18.0.11"}


def test_without_the_table_the_door_is_off() -> None:
    assert config.loads(render(BASE)).http is None


def test_defaults() -> None:
    cfg = config.loads(changed(("http", HTTP)))
    h = cfg.http
    assert h is not None and h.address == ipaddress.ip_address("198.18.0.11")
    assert (h.port, h.max_connections, h.request_timeout_ms) == (8008, 256, 2000)
    assert not h.tls and h.auth_file is None and h.client_ca_file is None
    assert "http://198.18.0.11:8008" in config.summary(cfg)


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({}, "http.address: required key is missing"),
        ({**HTTP, "port": 70000}, "http.port = 70000: must be between 1 and 65535"),
        ({**HTTP, "port": 5405}, "http.port = 5405: is the peer door's port on heartbeat.path[0]"),
        ({"address": "0.0.0.0"}, 'http.address = "0.0.0.0": must be the address of one host'),
        ({**HTTP, "cert_file": "/etc/dbha/c.pem"}, "http.key_file: required key is missing"),
        ({**HTTP, "key_file": "/etc/dbha/k.pem"}, "http.cert_file: required key is missing"),
        ({**HTTP, "client_ca_file": "/etc/dbha/ca.pem"}, "http.client_ca_file"),
        ({**HTTP, "auth_file": "relative"}, "http.auth_file"),
        ({**HTTP, "max_connections": 0}, "http.max_connections = 0"),
        ({**HTTP, "request_timeout_ms": 10}, "http.request_timeout_ms = 10"),
        ({**HTTP, "listen": "x"}, "http.listen"),
    ],
)
def test_problems_name_the_key(table: dict[str, object], expected: str) -> None:
    found = problems_of(render(mutate(BASE, "http", table)))
    assert any(line.startswith(expected) for line in found), found


def test_a_port_of_another_address_is_fine() -> None:
    cfg = config.loads(changed(("http", {"address": "198.18.0.11", "port": 5406})))
    assert cfg.http is not None and cfg.http.port == 5406


def test_the_doors_files_are_checked(tmp_path: Path) -> None:
    key, auth, cert = tmp_path / "k", tmp_path / "auth", tmp_path / "c"
    key.write_text("k")
    key.chmod(0o644)
    cert.write_text("c")
    table = {**HTTP, "cert_file": str(cert), "key_file": str(key), "auth_file": str(auth)}
    cfg = config.loads(changed(("http", table)))
    found = config.check_files(cfg)
    assert any(f.startswith(f'http.key_file = "{key}": is readable by group') for f in found)
    missing = config.missing_files(cfg)
    assert any(f.startswith(f'http.auth_file = "{auth}": does not exist') for f in missing)
    assert not any("cert_file" in f for f in found + missing)
