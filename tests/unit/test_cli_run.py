"""`dbha config check` and `dbha run` on a config whose secret files are missing.

A config is often checked before it is deployed: there a missing secret file is a
warning (exit 0) that says dbha run will refuse. `dbha run` refuses to start
without it (exit 2), naming the key and the path, before it starts anything.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from dbha.cli import main
from dbha.node import logs
from tests.unit.test_config import _with_files, changed


@pytest.fixture(autouse=True)
def _no_log_setup_left() -> Iterator[None]:
    yield
    logs.teardown()  # run_cmd sets up the process's log; this process is pytest's


def _config_file(tmp_path: Path) -> Path:
    """A valid config in ``tmp_path`` with every file it names made there."""
    cfg = _with_files(tmp_path)
    path = tmp_path / "pg-a.toml"
    path.write_text(
        changed(
            ("database.password_file", str(cfg.database.password_file)),
            ("heartbeat.key_file", str(cfg.heartbeat.key_file)),
            ("database.replication_passfile", str(cfg.database.replication_passfile)),
        )
    )
    return path


MISSING = [
    ("database.password_file", "pg.password"),
    ("heartbeat.key_file", "heartbeat.key"),
]


@pytest.mark.parametrize(("key", "name"), MISSING)
def test_config_check_warns_of_a_missing_secret_file_and_passes(
    tmp_path: Path, key: str, name: str
) -> None:
    path = _config_file(tmp_path)
    (tmp_path / name).unlink()
    result = CliRunner().invoke(main, ["config", "check", "-c", str(path)])
    assert result.exit_code == 0, result.output
    assert f"{path}: OK" in result.stdout
    assert f'warning: {key} = "{tmp_path / name}": does not exist on this host' in result.stderr
    assert "dbha run refuses to start" in result.stderr


def test_config_check_says_nothing_of_files_when_all_exist(tmp_path: Path) -> None:
    path = _config_file(tmp_path)
    result = CliRunner().invoke(main, ["config", "check", "-c", str(path)])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr


@pytest.mark.parametrize(("key", "name"), MISSING)
def test_run_refuses_to_start_without_a_secret_file(tmp_path: Path, key: str, name: str) -> None:
    path = _config_file(tmp_path)
    (tmp_path / name).unlink()
    result = CliRunner().invoke(main, ["run", "-c", str(path)])
    assert result.exit_code == 2, result.output
    assert "refusing to start" in result.stderr
    assert f'{key} = "{tmp_path / name}": does not exist' in result.stderr


def test_run_refuses_in_json_with_json_log(tmp_path: Path) -> None:
    """With --json-log even the refusal is a JSON line, its problems a list."""
    path = _config_file(tmp_path)
    (tmp_path / "heartbeat.key").unlink()
    result = CliRunner().invoke(main, ["run", "--json-log", "-c", str(path)])
    assert result.exit_code == 2, result.output
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    (line,) = lines
    assert line["level"] == "error" and line["logger"] == "dbha"
    assert line["message"].startswith("refusing to start: ")
    assert line["problems"] == [
        f'heartbeat.key_file = "{tmp_path / "heartbeat.key"}": does not exist'
    ]
