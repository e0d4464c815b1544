"""The check scripts shipped in checks/: their arguments, --help, exit codes, and
that dbha's check runner reads them right. Each runs as a real program against
real sockets and servers on loopback; the lab tests
(tests/lab/test_check_scripts_lab.py) run them against the lab's database
servers, up and down."""

from __future__ import annotations

import contextlib
import http.server
import importlib.machinery
import importlib.util
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from dbha.config import CheckConfig
from dbha.node.checkscripts import run_check

CHECKS = Path(__file__).resolve().parents[2] / "checks"
SCRIPTS = sorted(p.name for p in CHECKS.iterdir() if p.is_file())
PY = sys.executable  # the checkout's venv: psycopg and PyMySQL are there


def run(name: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, str(CHECKS / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def load(name: str) -> ModuleType:
    """A check script as a module (its functions, without running main)."""
    loader = importlib.machinery.SourceFileLoader(name.replace("-", "_"), str(CHECKS / name))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@contextlib.contextmanager
def listening() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections (the kernel does) and never
    answers: a server that hangs."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        yield srv.getsockname()[1]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_every_script_is_executable_with_a_python_first_line() -> None:
    assert {"check_dbha", "dbha-check-tcp", "dbha-check-postgres", "dbha-check-mysql"} <= set(
        SCRIPTS
    )
    for name in SCRIPTS:
        path = CHECKS / name
        assert path.stat().st_mode & 0o111 == 0o111, name
        # scripts/install rewrites exactly this line to the install's Python.
        assert path.read_text().splitlines()[0] == "#!/usr/bin/env python3", name


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_says_what_the_exit_codes_mean_and_how_long_it_may_take(name: str) -> None:
    res = run(name, "--help")
    assert res.returncode == 0, res.stderr
    assert "--timeout" in res.stdout
    assert "Exit" in res.stdout or "exit code" in res.stdout


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_scripts_type_check(name: str) -> None:
    mypy = Path(PY).parent / "mypy"
    res = subprocess.run(
        [str(mypy), "--strict", "--no-error-summary", str(CHECKS / name)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stdout


@pytest.mark.parametrize(
    ("name", "args", "named"),
    [
        ("dbha-check-tcp", ["127.0.0.1", "99999"], "port 99999"),
        ("dbha-check-tcp", ["127.0.0.1", "5432", "--timeout", "0"], "--timeout"),
        ("dbha-check-postgres", ["--port", "0"], "--port 0"),
        ("dbha-check-postgres", ["--password", "x"], "--password"),
        ("dbha-check-mysql", ["--host", "h", "--socket", "/s"], "--socket"),
        ("dbha-check-mysql", ["--defaults-file", "/nonexistent/my.cnf"], "--defaults-file"),
        ("dbha-check-ping", ["not-an-address"], "not-an-address"),
        ("dbha-check-ping", ["127.0.0.1", "--count", "20", "--timeout", "1"], "--count 20"),
        ("dbha-check-http", ["ftp://x/"], "http://"),
        ("dbha-check-http", ["http://x/", "--expect", "99"], "--expect"),
        ("dbha-check-disk", ["/", "--warning", "5", "--critical", "10"], "--critical 10"),
        ("dbha-check-disk", ["/", "--warning", "120"], "--warning"),
    ],
)
def test_bad_arguments_exit_3_naming_the_problem(name: str, args: list[str], named: str) -> None:
    res = run(name, *args)
    assert res.returncode == 3, (res.stdout, res.stderr)
    assert named in res.stderr, res.stderr


def test_check_dbha_bad_arguments_are_unknown_on_stdout() -> None:
    res = run("check_dbha")  # no -c
    assert res.returncode == 3
    assert res.stdout.splitlines()[-1].startswith("DBHA UNKNOWN - ")
    assert "-c/--config" in res.stdout


def test_no_password_option_on_any_command_line() -> None:
    # Secrets come from files or the environment: no script takes one as an argument.
    for name in SCRIPTS:
        res = run(name, "--help")
        assert "--password " not in res.stdout and "--password=" not in res.stdout, name


# -- TCP ----------------------------------------------------------------------


def _check(*argv: str) -> CheckConfig:
    return CheckConfig("c", (PY, *argv), interval_ms=5000, timeout_ms=4000, fall=1, rise=1)


def test_tcp_through_the_check_runner_up_and_down() -> None:
    with listening() as port:
        ok, detail = run_check(_check(str(CHECKS / "dbha-check-tcp"), "127.0.0.1", str(port)))
        assert ok, detail
        assert f"127.0.0.1:{port} accepted" in detail
    ok, detail = run_check(_check(str(CHECKS / "dbha-check-tcp"), "127.0.0.1", str(port)))
    assert not ok and detail.startswith("exit 2") and "refused" in detail, detail


# -- databases: refused and hung (the lab tests them against real servers) -----


@pytest.mark.parametrize("name", ["dbha-check-postgres", "dbha-check-mysql"])
def test_a_database_check_fails_on_a_refused_port(name: str) -> None:
    port = closed_port()
    res = run(name, "--host", "127.0.0.1", "--port", str(port), "--timeout", "3")
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert res.stdout.startswith("FAILURE: ") and f"127.0.0.1:{port}: " in res.stdout


@pytest.mark.parametrize("name", ["dbha-check-postgres", "dbha-check-mysql"])
def test_a_database_check_is_bounded_when_the_server_never_answers(name: str) -> None:
    with listening() as port:
        res = run(name, "--host", "127.0.0.1", "--port", str(port), "--timeout", "0.5")
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "no answer within 0.5 s" in res.stdout or "timed out" in res.stdout, res.stdout


def test_an_unreadable_password_file_is_named(tmp_path: Path) -> None:
    res = run("dbha-check-postgres", "--password-file", str(tmp_path / "none"))
    assert res.returncode == 3 and str(tmp_path / "none") in res.stderr


# -- ping -----------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("ping") is None, reason="no ping here")
def test_ping_answers_on_loopback() -> None:
    res = run("dbha-check-ping", "127.0.0.1", "--count", "2")
    assert res.returncode == 0, (res.stdout, res.stderr)
    assert res.stdout.startswith("OK: 127.0.0.1: 2/2 answered")


# -- HTTP -----------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        code = 200 if self.path == "/" else 404
        body = b"dbha says hello\n"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    worker = threading.Thread(target=srv.serve_forever, daemon=True)
    worker.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
        worker.join(5)


def test_http_expected_status_and_text(http_server: str) -> None:
    res = run("dbha-check-http", http_server + "/", "--contains", "hello")
    assert res.returncode == 0 and res.stdout.startswith("OK: "), res.stdout
    res = run("dbha-check-http", http_server + "/", "--contains", "goodbye")
    assert res.returncode == 2 and "lacks 'goodbye'" in res.stdout, res.stdout
    res = run("dbha-check-http", http_server + "/missing")
    assert res.returncode == 2 and "status 404" in res.stdout, res.stdout
    res = run("dbha-check-http", http_server + "/missing", "--expect", "404,410")
    assert res.returncode == 0, res.stdout


def test_http_refused_and_hung_are_failures() -> None:
    res = run("dbha-check-http", f"http://127.0.0.1:{closed_port()}/")
    assert res.returncode == 2 and "refused" in res.stdout.lower(), res.stdout
    with listening() as port:
        res = run("dbha-check-http", f"http://127.0.0.1:{port}/", "--timeout", "0.5")
    assert res.returncode == 2, res.stdout
    assert "no answer within 0.5 s" in res.stdout or "timed out" in res.stdout, res.stdout


# -- disk -----------------------------------------------------------------------


def test_disk_thresholds(tmp_path: Path) -> None:
    # The file system under tmp_path has some room and is not wholly free: 0 % and
    # 100 % bound every real figure.
    res = run("dbha-check-disk", str(tmp_path), "--warning", "0", "--critical", "0")
    assert res.returncode == 0 and "% free" in res.stdout, res.stdout
    res = run("dbha-check-disk", str(tmp_path), "--warning", "100", "--critical", "0")
    assert res.returncode == 1 and res.stdout.startswith("WARNING: "), res.stdout
    res = run("dbha-check-disk", str(tmp_path), "--warning", "100", "--critical", "100")
    assert res.returncode == 2 and res.stdout.startswith("FAILURE: "), res.stdout
    res = run("dbha-check-disk", str(tmp_path / "gone"))
    assert res.returncode == 2 and "No such file" in res.stdout, res.stdout


# -- check_dbha -----------------------------------------------------------------


def test_check_dbha_is_unknown_when_dbha_cannot_run(tmp_path: Path) -> None:
    res = run("check_dbha", "-c", str(tmp_path / "x.toml"), "--dbha", str(tmp_path / "none"))
    assert res.returncode == 3, res.stdout
    assert res.stdout.startswith("DBHA UNKNOWN - dbha check: cannot run"), res.stdout
    not_dbha = shutil.which("true")
    assert not_dbha is not None
    res = run("check_dbha", "-c", str(tmp_path / "x.toml"), "--dbha", not_dbha)
    assert res.returncode == 3 and "without a JSON answer" in res.stdout, res.stdout


def test_check_dbha_passes_dbha_checks_critical_through(tmp_path: Path) -> None:
    # The real dbha (beside this Python) on a config that does not exist: dbha check
    # answers CRITICAL, and the plugin says so with its exit code.
    res = run("check_dbha", "-c", str(tmp_path / "missing.toml"))
    assert res.returncode == 2, res.stdout
    assert res.stdout.startswith("DBHA CRITICAL - config "), res.stdout
    assert "|" not in res.stdout.splitlines()[0]  # nothing measured, no perfdata


PG_STATUS = {  # `dbha status --json`, as a PostgreSQL primary's supervisor answers it
    "local": {
        "epoch": 3,
        "database": {"lag_bytes": None, "lag_seconds": None, "probed_age_s": 0.2},
        "paths": {"hb": {"up": True, "last_beat_age_s": 0.25}, "lan": {"up": False}},
    },
    "peer": {"epoch": 3, "database": {"lag_bytes": 4096, "lag_seconds": 0.5}},
}
ROUND = {  # `dbha check --json` after a round of its own (no supervisor)
    "mode": "round",
    "state": {"epoch": 7},
    "observation": {
        "database": {"lag_transactions": 2, "lag_bytes": None},
        "paths": {"hb": True, "lan": True},
        "peer": {"heard_s_ago": 0.125},
    },
}


@pytest.mark.parametrize(
    ("check", "status", "want"),
    [
        (
            {"mode": "supervisor"},
            PG_STATUS,
            [
                "epoch=3",
                "lag_bytes=4096B",
                "lag_seconds=0.5s",
                "paths_up=1;;;0;2",
                "path_hb_age=0.25s",
                "db_probe_age=0.2s",
            ],
        ),
        (
            ROUND,
            None,
            ["epoch=7", "lag_transactions=2", "paths_up=2;;;0;2", "peer_heard_age=0.125s"],
        ),
        ({"mode": "error"}, None, []),
        ({"mode": "supervisor"}, {"local": "garbage", "peer": None}, []),
    ],
)
def test_check_dbha_perfdata(check: dict, status: dict | None, want: list[str]) -> None:  # type: ignore[type-arg]
    assert load("check_dbha").perfdata(check, status) == want
