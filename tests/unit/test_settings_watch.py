"""A supervisor's watch over the pair's shared settings (dbha.node.settings), with
the peer's door on loopback: a differing digest in the peer's beats makes it ask
the door which keys differ, log them once and show them; a beat without a digest
(an older peer) is unknown, not a mismatch."""

from __future__ import annotations

import dataclasses
import logging
import socket
import time
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from dbha import config
from dbha.beat.wire import Beat
from dbha.core.model import NodeRole
from dbha.node import settings as watch
from dbha.node.control import PeerControlServer
from dbha.node.settings import SettingsWatch

CONF = Path(__file__).resolve().parents[2] / "conf"
KEY = b"k" * 32
KEY_NAME = "replication.max_lag_bytes"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cfg(name: str, port: int, **replication: Any) -> config.Config:
    cfg = config.load(CONF / name)
    lo = ip_address("127.0.0.1")
    path = dataclasses.replace(cfg.heartbeat.paths[0], local_address=lo, peer_address=lo, port=port)
    cfg = dataclasses.replace(cfg, heartbeat=dataclasses.replace(cfg.heartbeat, paths=(path,)))
    rep = dataclasses.replace(cfg.replication, **replication)
    return dataclasses.replace(cfg, replication=rep)


def _beat(digest: str) -> Beat:
    return Beat("pg", "b", "lan", "b0" * 16, 1, 3, NodeRole.REPLICA, settings=digest)


@pytest.fixture
def pair() -> Iterator[tuple[SettingsWatch, SettingsWatch]]:
    """Node a's watch, and node b's (its lag bound doubled) behind b's door."""
    port = _free_port()
    a = SettingsWatch(_cfg("postgresql-a.toml", port), KEY)
    b = SettingsWatch(_cfg("postgresql-b.toml", port, max_lag_bytes=2 * 1024 * 1024), KEY)
    door = PeerControlServer(
        [("127.0.0.1", port)], KEY, lambda req, _o: {"ok": True, "status": {"settings": b.view()}}
    )
    door.start()
    yield a, b
    door.stop()


def _until(what: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "not within the bound"
        time.sleep(0.01)


def test_a_differing_digest_names_the_keys_once(
    pair: tuple[SettingsWatch, SettingsWatch], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = pair
    assert a.digest != b.digest
    caplog.set_level(logging.INFO, logger="dbha")
    a.seen(_beat(b.digest))
    assert a.view()["match"] is False and a.view()["peer_digest"] == b.digest
    _until(lambda: a.view()["differ"] is not None)
    view = a.view()
    assert view["differ"] == [KEY_NAME] and view["differ_found_in_s"] >= 0
    for _ in range(20):  # later ticks ask nothing more and log nothing more
        a.seen(_beat(b.digest))
    time.sleep(0.1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"settings differ from b's: {KEY_NAME} here 1048576, b 2097152 "
        "(both nodes must share them: docs/config.md)"
    ]
    a.seen(_beat(a.digest))  # b fixed: they agree again, and it is said once
    assert a.view()["match"] is True and a.view()["differ"] is None
    assert any("shares this node's settings again" in r.getMessage() for r in caplog.records)


def test_a_beat_without_a_digest_is_unknown_not_a_mismatch(
    pair: tuple[SettingsWatch, SettingsWatch], caplog: pytest.LogCaptureFixture
) -> None:
    a, _ = pair
    for beat in (None, _beat("")):
        a.seen(beat)
        view = a.view()
        assert (view["match"], view["peer_digest"], view["differ"]) == (None, "unknown", None)
    time.sleep(0.1)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def _ticking(a: SettingsWatch, beat: Beat, what: Any) -> Any:
    """``what`` once the loop's ticks (``seen`` every 20 ms) have made it true."""

    def tick() -> Any:
        a.seen(beat)
        return what()

    _until(tick)
    return what()


def test_an_unreachable_door_says_the_keys_are_unknown(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watch, "UNKNOWN_AFTER", 0.3)
    a = SettingsWatch(_cfg("postgresql-a.toml", _free_port()), KEY)  # nobody listens there
    caplog.set_level(logging.WARNING, logger="dbha")
    _ticking(a, _beat("0" * 16), lambda: any("unknown" in r.getMessage() for r in caplog.records))
    assert a.view()["match"] is False and a.view()["differ"] is None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "settings differ from b's" in lines[0]


def test_a_door_that_opens_late_is_asked_again_and_nothing_unknown_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A peer that has just started beats a moment before its door listens."""
    port = _free_port()
    a = SettingsWatch(_cfg("postgresql-a.toml", port), KEY)
    b = SettingsWatch(_cfg("postgresql-b.toml", port, max_lag_bytes=1), KEY)
    caplog.set_level(logging.WARNING, logger="dbha")
    beat = _beat(b.digest)
    a.seen(beat)
    _until(lambda: not a._asking)  # the first question found no door
    door = PeerControlServer(
        [("127.0.0.1", port)], KEY, lambda req, _o: {"ok": True, "status": {"settings": b.view()}}
    )
    door.start()
    try:
        assert _ticking(a, beat, lambda: a.view()["differ"]) == [KEY_NAME]
    finally:
        door.stop()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "unknown" not in lines[0] and KEY_NAME in lines[0], lines


def test_a_reload_of_a_shared_key_changes_the_digest(
    pair: tuple[SettingsWatch, SettingsWatch],
) -> None:
    a, b = pair
    old = a.digest
    paths = a.values["heartbeat.path"]
    assert isinstance(paths, list)
    port = int(paths[0].rsplit(":", 1)[1])
    new = a.reconfigure(_cfg("postgresql-a.toml", port, max_lag_bytes=2 * 1024 * 1024))
    assert new != old and new == a.digest == b.digest
    assert a.values[KEY_NAME] == 2 * 1024 * 1024
