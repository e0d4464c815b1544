"""Config keys of the idle-cost work: ``database.probe_interval_ms`` (the local
probe's cadence) and ``fence.watchdog_device`` (the lease keeper's watchdog)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dbha import config
from tests.unit.test_config import BASE, _with_files, changed, problems_of, render


def test_defaults() -> None:
    cfg = config.loads(render(BASE))
    assert cfg.database.probe_interval_ms == config.DEFAULT_PROBE_INTERVAL_MS == 500
    assert cfg.fence.watchdog_device is None
    summary = config.summary(cfg)
    assert "probed every 500 ms" in summary and "watchdog" not in summary


def test_both_keys_load() -> None:
    cfg = config.loads(
        changed(("database.probe_interval_ms", 250), ("fence.watchdog_device", "/dev/watchdog"))
    )
    assert cfg.database.probe_interval_ms == 250
    assert cfg.fence.watchdog_device == Path("/dev/watchdog")
    assert "watchdog /dev/watchdog" in config.summary(cfg)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("database.probe_interval_ms", 5, "database.probe_interval_ms = 5: must be between 10"),
        (
            "database.probe_interval_ms",
            60_001,
            "probe_interval_ms = 60001: must be between 10 and 60000",
        ),
        ("database.probe_interval_ms", "1s", 'database.probe_interval_ms = "1s": must be an int'),
        ("fence.watchdog_device", "watchdog", 'fence.watchdog_device = "watchdog": must be an abs'),
        ("fence.watchdog_device", 1, "fence.watchdog_device = 1: must be"),
    ],
)
def test_mistakes_are_named(key: str, value: object, expected: str) -> None:
    got = problems_of(changed((key, value)))
    assert len(got) == 1 and expected in got[0] and got[0].startswith(key), got


def test_the_watchdog_device_must_be_a_writable_character_device(tmp_path: Path) -> None:
    plain = tmp_path / "watchdog"
    plain.write_text("")
    cfg = _with_files(tmp_path, ("fence.watchdog_device", str(plain)))
    assert config.check_files(cfg) == [
        f'fence.watchdog_device = "{plain}": is not a character device '
        "(a watchdog device such as /dev/watchdog)"
    ]
    gone = tmp_path / "gone"
    cfg = _with_files(tmp_path, ("fence.watchdog_device", str(gone)))
    assert config.check_files(cfg) == []
    assert config.missing_files(cfg) == [f'fence.watchdog_device = "{gone}": does not exist']


@pytest.mark.skipif(not os.access("/dev/null", os.W_OK), reason="needs a writable /dev/null")
def test_a_character_device_passes(tmp_path: Path) -> None:
    # /dev/null is no watchdog, but it is the kind of file the check looks for.
    cfg = _with_files(tmp_path, ("fence.watchdog_device", "/dev/null"))
    assert config.check_files(cfg) == [] and config.missing_files(cfg) == []
