"""Pure parts of the PostgreSQL driver: LSNs, covers, settings, error mapping,
and the guard that keeps secrets off every command line."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg import errors as pgerr

from dbha.core.model import Position
from dbha.db.base import (
    DatabaseDriver,
    DbCommandFailed,
    DbError,
    DbTimeout,
    DbUnreachable,
    Upstream,
)
from dbha.db.postgres.conn import (
    PgSettings,
    format_lsn,
    map_error,
    parse_lsn,
    walfile_segno,
    walfile_timeline,
)
from dbha.db.postgres.driver import PostgresDriver, covers
from dbha.db.postgres.rejoin import _conf_quote, _same_upstream, primary_conninfo
from dbha.db.postgres.tools import Tools, check_argv, pgpass_line, pgpass_passwords
from dbha.errors import CommandFailed, CommandTimeout


def settings(tmp_path: Path, **kw: object) -> PgSettings:
    pw = tmp_path / "dbha.password"
    pw.write_text("s3cr:et\\pw\n")
    rp = tmp_path / "pgpass"
    rp.write_text(pgpass_line("replicator", "repl:secret"))
    values: dict[str, object] = {
        "node_name": "a",
        "data_dir": tmp_path / "data",
        "host": "/run/postgresql",
        "password_file": pw,
        "replication_passfile": rp,
    }
    values.update(kw)
    return PgSettings(**values)  # type: ignore[arg-type]


# ------------------------------------------------------------------------ LSNs


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0/0", 0),
        ("0/3000060", 0x3000060),
        ("16/B374D848", (0x16 << 32) | 0xB374D848),
        ("16/b374d848", (0x16 << 32) | 0xB374D848),
        ("FFFFFFFF/FFFFFFFF", (1 << 64) - 1),
        (" 1/2 ", (1 << 32) | 2),
        ("", None),
        ("1/", None),
        ("/1", None),
        ("1/2/3", None),
        ("123456789/0", None),  # more than 32 bits in a half
        ("G/0", None),
        (None, None),
        (12, None),
    ],
)
def test_parse_lsn(text: object, value: int | None) -> None:
    assert parse_lsn(text) == value


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_format_then_parse_is_identity(lsn: int) -> None:
    assert parse_lsn(format_lsn(lsn)) == lsn


@pytest.mark.parametrize("bad", [-1, 1 << 64])
def test_format_lsn_refuses_out_of_range(bad: int) -> None:
    with pytest.raises(ValueError):
        format_lsn(bad)


def test_position_text_matches_postgresql_notation() -> None:
    assert str(Position("postgresql", timeline=2, lsn=0x16B374D848)) == "16/B374D848@tl2"


@pytest.mark.parametrize(
    ("name", "tli", "segno"),
    [
        ("000000010000000000000003", 1, 3),
        ("0000000A0000000100000002", 10, 256 + 2),
        ("00000002.history", 2, None),
        ("000000010000000000000003.partial", None, None),
        ("archive_status", None, None),
    ],
)
def test_walfile_names(name: str, tli: int | None, segno: int | None) -> None:
    assert walfile_timeline(name) == tli
    assert walfile_segno(name, 16 * 1024 * 1024) == segno


# ---------------------------------------------------------------------- covers


def pos(tl: int | None, lsn: int | None, engine: str = "postgresql") -> Position:
    return Position(engine=engine, timeline=tl, lsn=lsn)


@pytest.mark.parametrize(
    ("candidate", "reference", "expected", "why"),
    [
        (pos(1, 100), pos(1, 100), True, "same point"),
        (pos(1, 101), pos(1, 100), True, "further on the same timeline"),
        (pos(1, 99), pos(1, 100), False, "behind on the same timeline"),
        (pos(2, 200), pos(1, 100), False, "later timeline: fork point unknown"),
        (pos(1, 200), pos(2, 100), False, "earlier timeline"),
        (pos(None, 200), pos(1, 100), False, "timeline unknown"),
        (pos(1, None), pos(1, 100), False, "lsn unknown"),
        (pos(1, 200), pos(1, None), False, "reference unknown"),
        (pos(1, 200, "mariadb"), pos(1, 100), False, "another engine"),
        (Position("mariadb", gtid="0-1-5"), pos(1, 1), False, "a GTID is no LSN"),
    ],
)
def test_covers_truth_table(
    candidate: Position, reference: Position, expected: bool, why: str
) -> None:
    assert covers(candidate, reference) is expected, why


def test_driver_implements_the_protocol(tmp_path: Path) -> None:
    drv = PostgresDriver(settings(tmp_path))
    assert isinstance(drv, DatabaseDriver)
    assert drv.covers(pos(1, 5), pos(1, 4)) and drv.engine == "postgresql"


# -------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("override", "complaint"),
    [
        ({"node_name": "Node-A"}, "node_name"),
        ({"node_name": ""}, "node_name"),
        ({"node_name": "x" * 64}, "node_name"),
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"data_dir": Path("data")}, "data_dir"),
        ({"host": ""}, "host"),
        ({"stop_argv": ("pg_ctl", "stop", "-m", "fast")}, "{mode}"),
        ({"replication_connect_timeout": 0}, "replication_connect_timeout"),
        ({"peer_name": "Node-B"}, "peer_name"),
        ({"peer_name": "a"}, "peer_name must differ"),
    ],
)
def test_settings_refuse_bad_values(
    tmp_path: Path, override: dict[str, object], complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint.replace("{", r"\{").replace("}", r"\}")):
        settings(tmp_path, **override)


def test_sync_standby_names_are_the_same_on_both_nodes(tmp_path: Path) -> None:
    """The value names both nodes in one order, so the copy of postgresql.auto.conf
    that pg_rewind / pg_basebackup bring to the other node is right there too, and a
    primary never waits for itself; without the peer's name there is none."""
    on_a = settings(tmp_path, node_name="a", peer_name="b").sync_standby_names()
    on_b = settings(tmp_path, node_name="b", peer_name="a").sync_standby_names()
    assert on_a == on_b == 'FIRST 1 ("a", "b")'
    assert settings(tmp_path).sync_standby_names() is None


def test_default_start_and_stop_commands(tmp_path: Path) -> None:
    s = settings(tmp_path)
    start = s.start_command(7.2)
    assert start[:4] == ["/usr/lib/postgresql/15/bin/pg_ctl", "start", "-D", str(tmp_path / "data")]
    assert start[-3:] == ["-w", "-t", "8"]
    assert "-l" in start  # without a log file the server would hold pg_ctl's pipes
    stop = s.stop_command("immediate", 3)
    assert stop[stop.index("-m") + 1] == "immediate"
    custom = settings(tmp_path, stop_argv=("svc", "stop", "--mode={mode}"))
    assert custom.stop_command("fast", 3) == ["svc", "stop", "--mode=fast"]


# --------------------------------------------------------------- error mapping


def _all_subclasses(cls: type[Any]) -> set[type[Any]]:
    out: set[type[Any]] = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _all_subclasses(sub)
    return out


def _instance(cls: type[BaseException]) -> BaseException:
    try:
        return cls("boom")
    except TypeError:
        return cls.__new__(cls)


PSYCOPG_ERRORS = sorted(_all_subclasses(psycopg.Error) | {psycopg.Error}, key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", PSYCOPG_ERRORS, ids=lambda c: c.__name__)
def test_every_psycopg_error_maps_to_a_db_error(cls: type[psycopg.Error]) -> None:
    mapped = map_error(_instance(cls), "probe")
    assert isinstance(mapped, DbError)
    assert type(mapped).__module__ == "dbha.db.base"
    if issubclass(cls, (pgerr.QueryCanceled, pgerr.LockNotAvailable, pgerr.ConnectionTimeout)):
        assert isinstance(mapped, DbTimeout)
    elif issubclass(cls, (psycopg.OperationalError, psycopg.InterfaceError)):
        assert isinstance(mapped, (DbUnreachable, DbTimeout))


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (CommandTimeout("pg_rewind: no answer"), DbTimeout),
        (CommandFailed("pg_rewind: exit 1: could not find common ancestor"), DbCommandFailed),
        (subprocess.TimeoutExpired(["x"], 1), DbTimeout),
        (subprocess.CalledProcessError(1, ["x"]), DbCommandFailed),
        (TimeoutError("t"), DbTimeout),
        (ConnectionRefusedError(111, "refused"), DbUnreachable),
        (PermissionError(13, "denied"), DbError),
        (FileNotFoundError(2, "missing"), DbError),
        (OSError(5, "io"), DbError),
        (ValueError("odd"), DbError),
    ],
)
def test_tool_and_os_errors_map(exc: BaseException, kind: type[DbError]) -> None:
    mapped = map_error(exc, "rejoin")
    assert isinstance(mapped, kind) and str(mapped).startswith("rejoin: ")


@pytest.mark.parametrize("cls", [*_all_subclasses(OSError), OSError], ids=lambda c: c.__name__)
def test_every_os_error_maps_to_a_db_error(cls: type[OSError]) -> None:
    assert isinstance(map_error(_instance(cls), "fence"), DbError)


def test_a_watchdog_cut_is_a_timeout_whatever_psycopg_says() -> None:
    mapped = map_error(psycopg.OperationalError("server closed the connection"), "fence", True)
    assert isinstance(mapped, DbTimeout)


def test_db_errors_pass_through_unchanged() -> None:
    err = DbUnreachable("x")
    assert map_error(err, "probe") is err


# ------------------------------------------------------------ secrets and argv


def test_pgpass_escapes_and_reads_back(tmp_path: Path) -> None:
    line = pgpass_line("dbha", "a:b\\c")
    assert line == "*:*:*:dbha:a\\:b\\\\c\n"
    (tmp_path / "p").write_text("# comment\n" + line)
    assert pgpass_passwords(tmp_path / "p") == ["a:b\\c"]
    assert pgpass_passwords(tmp_path / "missing") == []


def test_argv_guard_refuses_secrets(tmp_path: Path) -> None:
    tools = Tools(settings(tmp_path))
    assert tools.secrets() == ["repl:secret", "s3cr:et\\pw"]
    ok = tools.argv(["pg_rewind", "-D", "/d", "--source-server=host=x passfile=/tmp/p"])
    assert ok[0] == "setpriv" and ok[-1].endswith("passfile=/tmp/p")
    for bad in (
        ["pg_rewind", "--source-server=host=x password=hunter2"],
        ["pg_basebackup", "-d", "host=x password = 'y'"],
        ["tool", "s3cr:et\\pw"],
        ["tool", "--pw=repl:secret"],
    ):
        with pytest.raises(DbError, match="secret"):
            tools.argv(bad)


def test_check_argv_accepts_passfile_options() -> None:
    check_argv(["pg_basebackup", "-d", "host=x passfile=/p user=replicator"], ["zz-secret"])


def test_primary_conninfo_names_a_passfile_never_a_password(tmp_path: Path) -> None:
    s = settings(tmp_path)
    ci = primary_conninfo(s, Upstream("b", "198.18.0.12", 5432))
    assert "password" not in ci.replace("passfile", "")
    assert f"passfile={s.replication_passfile}" in ci
    assert "application_name=a" in ci and "user=replicator" in ci
    assert _same_upstream(ci, primary_conninfo(s, Upstream("b", "198.18.0.12", 5432)))
    assert not _same_upstream(ci, primary_conninfo(s, Upstream("b", "198.18.0.13", 5432)))
    assert not _same_upstream("host='unterminated", ci)


def test_conf_quote_escapes_for_postgresql_conf() -> None:
    assert _conf_quote("host=x passfile='/a b'") == "'host=x passfile=''/a b'''"
    assert _conf_quote("a\\b") == "'a\\\\b'"
