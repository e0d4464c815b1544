"""The lab's dbha supervisors: one config per service per database host, and the
``dbha run`` processes that run on them inside the host namespaces.

Each config is rendered from the same facts as ``conf/*.toml`` (the lab's
addresses, heartbeat paths and ports, the gateway as the safety target, the
VIP on eth0) plus the lab's own paths: the node's unix socket, data
directory, password files and its start and stop lines. Everything a
supervisor owns lives in ``HOST/dbha/SERVICE/`` in the lab directory:
``dbha.toml``, ``state/``, ``control.sock``, ``supervisor.log`` and
``supervisor.pid``.

A supervisor is started as root in its host's namespace with the lab's own
Python (``python -m dbha run -c FILE``), in its own session, output to its log.
``hold`` is the lab's stand-in for it (``python -m dbha.lab.supervisors hold -c
FILE``): it checks the config the way ``dbha run`` does, inside the namespace,
then waits for SIGTERM. It exercises the process plumbing (pid files, logs,
kill-host, heal, down) without a supervisor acting on the pair.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dbha import proc
from dbha.errors import CommandFailed, CommandTimeout, LabError
from dbha.lab import procs
from dbha.lab import topology as topo
from dbha.lab.layout import Layout, remove_tree
from dbha.lab.maria import MariaNode
from dbha.lab.net import nsexec
from dbha.lab.pg import OWNER as PG_OWNER
from dbha.lab.pg import PGBIN, PgNode
from dbha.lab.wait import wait_until

# Whether ``dbha lab up`` starts supervisors when neither --supervisors nor
# --no-supervisors is given (and the lab has no earlier choice).
START_BY_DEFAULT = True
# What ``dbha run`` logs once it has started (see Supervisor.start).
RUN_STARTED = "event started: as "

Command = Literal["run", "hold"]
COMMANDS: tuple[Command, ...] = ("run", "hold")
STATUS_TIMEOUT = 5.0  # bound on one `dbha status --json` inside a namespace
STOP_TIMEOUT = 10.0  # SIGTERM, then SIGKILL after this long
HOLD_LIMIT = 6 * 3600.0  # the stand-in ends by itself after this long
_SUN_PATH_MAX = 107
_START_MARK = "--- dbha lab: "
HOLD_READY = "config OK"
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


@dataclass(frozen=True, slots=True)
class Paths:
    """The files of one supervisor."""

    dir: Path
    config: Path
    state_dir: Path
    control_socket: Path
    log: Path
    pidfile: Path


def paths(layout: Layout, service: str, host: str) -> Paths:
    d = layout.supervisor(host, service)
    return Paths(
        dir=d,
        config=d / "dbha.toml",
        state_dir=d / "state",
        control_socket=d / "control.sock",
        log=d / "supervisor.log",
        pidfile=d / "supervisor.pid",
    )


def _make_dirs(p: Paths) -> None:
    """The supervisor's directories, root's alone (the host directory stays 0755:
    the database users traverse it)."""
    for d in (p.dir.parent, p.dir, p.state_dir):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(d, 0o700)


def key_name(service: str) -> str:
    return f"{service}-heartbeat"


def argv_for(command: Command, config: Path) -> list[str]:
    """How a supervisor (or its stand-in) is started, inside the namespace."""
    if command == "run":
        return [sys.executable, "-m", "dbha", "run", "-c", str(config)]
    return [sys.executable, "-m", "dbha.lab.supervisors", "hold", "-c", str(config)]


# ---------------------------------------------------------------- rendering


def _value(v: object) -> str:
    """A TOML value: JSON string escapes are valid TOML basic-string escapes."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"no TOML rendering for {type(v).__name__}")


def _table(name: str, items: Sequence[tuple[str, object]], array: bool = False) -> list[str]:
    head = f"[[{name}]]" if array else f"[{name}]"
    return ["", head, *(f"{k} = {_value(v)}" for k, v in items)]


def render(
    prefix: str, layout: Layout, service: str, host: str, sync: bool, profile: str = "default"
) -> str:
    """The dbha config of ``service`` on ``host`` in lab ``prefix`` (TOML text), with
    the timing ``profile`` (topology.PROFILES)."""
    if service not in topo.SERVICES or host not in topo.DB_HOSTS:
        raise LabError(f"no supervisor for {service!r} on {host!r}")
    if profile not in topo.PROFILES:
        raise LabError(f"no profile {profile!r} (one of {', '.join(topo.PROFILES)})")
    timing = topo.PROFILES[profile]

    def tuned(table: str) -> list[tuple[str, object]]:
        return list(timing.get(table, {}).items())

    svc = topo.SERVICES[service]
    peer = next(h for h in topo.DB_HOSTS if h != host)
    p = paths(layout, service, host)
    if len(str(p.control_socket).encode()) > _SUN_PATH_MAX:
        raise LabError(
            f"control socket path {p.control_socket} is longer than {_SUN_PATH_MAX} bytes; "
            "use a shorter lab directory"
        )
    database: list[tuple[str, object]]
    if service == "pg":
        pg = PgNode(prefix, layout, host)
        database = [
            ("engine", svc.engine),
            ("socket", str(pg.run)),
            ("port", svc.port),
            ("user", "dbha"),
            ("dbname", "postgres"),
            ("password_file", str(layout.secret_path("pg-dbha"))),
            ("data_directory", str(pg.data)),
            ("bin_directory", str(PGBIN)),
            ("os_user", PG_OWNER),
            ("start_command", pg.start_argv()),
            ("stop_command", pg.stop_argv()),
            ("replication_user", "replicator"),
            ("replication_passfile", str(pg.passfile)),
        ]
    else:
        maria = MariaNode(prefix, layout, host)
        database = [
            ("engine", svc.engine),
            ("socket", str(maria.socket)),
            ("port", svc.port),
            ("user", "dbha"),
            ("dbname", "mysql"),
            ("password_file", str(layout.secret_path("mariadb-dbha"))),
            ("os_user", "mysql"),
            ("start_command", maria.start_argv()),
            ("stop_command", maria.stop_argv()),
            ("replication_user", "repl"),
            ("replication_password_file", str(layout.secret_path("mariadb-repl"))),
        ]
    lines = [
        f"# dbha config of service {service!r} on node {host} (peer {peer}) in lab {prefix!r}.",
        "# Written by `dbha lab up` from the lab's facts; rewritten at every up.",
        "# Every key is documented in docs/config.md.",
    ]
    lines += _table(
        "service",
        [
            ("id", service),
            ("state_dir", str(p.state_dir)),
            ("control_socket", str(p.control_socket)),
        ],
    )
    lines += _table("node", [("name", host)])
    peer_h = topo.HOSTS[peer]
    lines += _table("peer", [("name", peer), ("addresses", [peer_h.lan, peer_h.hb])])
    lines += _table("database", database)
    lines += _table(
        "heartbeat", [("key_file", str(layout.key_path(key_name(service)))), *tuned("heartbeat")]
    )
    for path in topo.host_paths(host):
        lines += _table(
            "heartbeat.path",
            [
                ("name", path.name),
                ("local_address", topo.host_address(host, path.name)),
                ("peer_address", topo.host_address(peer, path.name)),
                ("port", svc.heartbeat_port),
            ],
            array=True,
        )
    if tuned("safety"):
        lines += _table("safety", tuned("safety"))
    lines += _table("safety.target", [("kind", "icmp"), ("host", topo.GATEWAY)], array=True)
    if tuned("fence"):
        lines += _table("fence", tuned("fence"))
    lines += _table(
        "vip",
        [
            ("address", f"{svc.vip}/{topo.LAN_PREFIXLEN}"),
            ("interface", topo.PATHS["lan"].interface),
            *tuned("vip"),
        ],
    )
    # A synchronous lab falls back to asynchronous commits when the replica is gone
    # (after it has been silent longer than it would wait before promoting itself):
    # the lab shows failovers, and with "strict" a new primary would stop every
    # write until its old peer came back. docs/config.md explains the three modes.
    replication: list[tuple[str, object]] = [("mode", "sync" if sync else "async")]
    if sync:
        replication.append(("sync_fallback", "fallback"))
    lines += _table("replication", replication)
    lines += _table("log", [("format", "text"), ("level", "info")])
    # The HTTP door, where the lab's HAProxy (dbha lab up --haproxy) asks /primary.
    lines += _table("http", [("address", topo.HOSTS[host].lan), ("port", svc.http_port)])
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- processes


def run_available(timeout: float = 30.0) -> bool:
    """Whether this dbha has a ``dbha run`` command (asked the way an operator would)."""
    try:
        res = proc.run(
            [sys.executable, "-m", "dbha", "run", "--help"], timeout=timeout, check=False
        )
    except (CommandFailed, CommandTimeout):
        return False
    return res.returncode == 0


def require_run() -> None:
    if not run_available():
        raise LabError(
            "dbha run is not available in this dbha, so the lab cannot start supervisors; "
            "use --no-supervisors"
        )


class Supervisors:
    """Configs and supervisor processes of one lab."""

    def __init__(self, prefix: str, layout: Layout) -> None:
        self.prefix, self.layout = prefix, layout

    def paths(self, service: str, host: str) -> Paths:
        return paths(self.layout, service, host)

    def all(self) -> list[tuple[str, str]]:
        return [(s, h) for s in topo.SERVICES for h in topo.DB_HOSTS]

    # -- configs ----------------------------------------------------------------

    def write_configs(self, sync: bool, profile: str = "default") -> list[tuple[str, str]]:
        """Write every node's config (and the heartbeat keys); return the
        (service, host) pairs whose config changed."""
        changed = []
        for service, host in self.all():
            self.layout.key(key_name(service))
            p = self.paths(service, host)
            _make_dirs(p)
            text = render(self.prefix, self.layout, service, host, sync, profile)
            if p.config.exists() and p.config.read_text() == text:
                continue
            tmp = p.config.with_name(p.config.name + ".tmp")
            tmp.write_text(text)
            os.chmod(tmp, 0o644)  # no secret in it: only the paths of the secret files
            os.replace(tmp, p.config)
            changed.append((service, host))
        return changed

    def reset_state(self, service: str, host: str) -> None:
        """Forget a supervisor's persisted node state (for a pair rebuilt from scratch)."""
        p = self.paths(service, host)
        remove_tree(p.state_dir)
        _make_dirs(p)

    # -- processes --------------------------------------------------------------

    def pid(self, service: str, host: str) -> int | None:
        """The supervisor's PID if it runs (its pid file, checked against its command
        line so that a reused PID is never taken for it)."""
        p = self.paths(service, host)
        try:
            pid = int(p.pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        if str(p.config).encode() not in cmdline or not procs.alive(pid):
            return None
        return pid

    def _started_alive(self, service: str, host: str) -> bool:
        """Whether the process just started (the pid file's PID) still lives. Unlike
        pid(), it does not match the command line, which may still be a parent's
        between fork and exec."""
        try:
            pid = int(self.paths(service, host).pidfile.read_text().strip())
        except (OSError, ValueError):
            return False
        return procs.alive(pid)

    def command(self, service: str, host: str) -> Command | None:
        """What runs as this supervisor: "run", the "hold" stand-in, or nothing."""
        pid = self.pid(service, host)
        if pid is None:
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        return "hold" if b"dbha.lab.supervisors" in cmdline else "run"

    def start(self, service: str, host: str, command: Command) -> int:
        """Start the supervisor (no-op if it runs as ``command``; one that runs as
        the other command is stopped first) in its host's namespace; its PID."""
        pid = self.pid(service, host)
        if pid is not None and self.command(service, host) == command:
            return pid
        if pid is not None:
            self.stop(service, host)
        p = self.paths(service, host)
        if not p.config.exists():
            raise LabError(f"no config for {service} on {host} ({p.config}); run lab up")
        with open(p.log, "ab") as log:
            log.write(f"{_START_MARK}{time.strftime('%F %T')} lab starts {command}\n".encode())
            log.flush()
            child = subprocess.Popen(
                nsexec(self.prefix, host, argv_for(command, p.config)),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                env=_ENV,
            )
        # `ip netns exec` execs the command: the child's PID is the supervisor's.
        p.pidfile.write_text(f"{child.pid}\n")
        return child.pid

    def wait_started(
        self, service: str, host: str, command: Command, timeout: float = 15.0
    ) -> None:
        """Wait (bounded) until a supervisor just started is watching: ``dbha run``
        has logged its start (it has probed its database and listens for beats),
        the stand-in has said it holds. A supervisor that exited is not waited for."""
        if command == "hold":
            self.wait_held(service, host, timeout)
            return
        wait_until(
            lambda: (
                RUN_STARTED in self.log_since_start(service, host)
                or not self._started_alive(service, host)
            ),
            timeout,
            f"the {service} supervisor on {host} to start",
        )

    def log_since_start(self, service: str, host: str) -> str:
        """The supervisor's log since its latest start by the lab."""
        try:
            text = self.paths(service, host).log.read_text(errors="replace")
        except OSError:
            return ""
        return text[text.rfind(_START_MARK) :] if _START_MARK in text else text

    def wait_held(self, service: str, host: str, timeout: float = 30.0) -> None:
        """Wait (bounded) until the stand-in has checked its config and holds."""

        def held() -> bool:
            if HOLD_READY in self.log_since_start(service, host):
                return True
            if not self._started_alive(service, host):
                tail = self.log_since_start(service, host).strip().splitlines()[-3:]
                raise LabError(f"stand-in supervisor {service} on {host} exited: {tail}")
            return False

        wait_until(held, timeout, f"stand-in supervisor {service} on {host}", interval=0.05)

    def stop(self, service: str, host: str, timeout: float = STOP_TIMEOUT) -> bool:
        """SIGTERM (a clean stop, no failover), SIGKILL after ``timeout``; whether one ran."""
        pid = self.pid(service, host)
        self.paths(service, host).pidfile.unlink(missing_ok=True)
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGTERM)
        try:
            wait_until(lambda: not procs.alive(pid), timeout, f"supervisor {service} on {host}")
        except LabError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not procs.alive(pid), 5.0, f"supervisor {service} on {host}")
        return True

    def kill_all(self) -> list[int]:
        """SIGKILL every supervisor at once (for down: nothing must act any more)."""
        pids = [pid for s, h in self.all() if (pid := self.pid(s, h)) is not None]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids

    # -- status -----------------------------------------------------------------

    def status(self, service: str, host: str, query: bool) -> dict[str, Any]:
        """pid, alive, config and log paths; with ``query`` and a live supervisor,
        what ``dbha status -c FILE --json`` says inside the namespace (bounded)."""
        p = self.paths(service, host)
        pid = self.pid(service, host)
        st: dict[str, Any] = {
            "pid": pid,
            "alive": pid is not None,
            "config": str(p.config) if p.config.exists() else None,
            "log": str(p.log),
        }
        if query and pid is not None:
            st.update(self._ask_status(p.config, host))
        return st

    def _ask_status(self, config: Path, host: str) -> dict[str, Any]:
        argv = nsexec(
            self.prefix, host, [sys.executable, "-m", "dbha", "status", "-c", str(config), "--json"]
        )
        try:
            res = proc.run(argv, timeout=STATUS_TIMEOUT, check=False, env=_ENV)
        except (CommandFailed, CommandTimeout) as exc:
            return {"status": None, "status_error": str(exc)}
        try:
            answer: Any = json.loads(res.stdout)
        except ValueError:
            lines = (res.stderr or res.stdout).strip().splitlines()
            why = lines[-1] if lines else f"exit {res.returncode}, no output"
            return {"status": None, "status_error": why}
        if not isinstance(answer, dict):
            return {"status": None, "status_error": "dbha status --json gave no object"}
        return {"status": answer}

    def statuses(self, query: bool) -> dict[tuple[str, str], dict[str, Any]]:
        """Every supervisor's status; the queries run in parallel."""
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = {k: pool.submit(self.status, *k, query) for k in self.all()}
            return {k: f.result() for k, f in futures.items()}


# ------------------------------------------------------------------- stand-in


def hold(config_path: str) -> int:
    """The stand-in supervisor: check the config as ``dbha run`` does, then wait for
    SIGTERM (at most HOLD_LIMIT). Exit 2 when the config is not usable here."""
    from dbha import config
    from dbha.errors import ConfigError

    try:
        cfg = config.load(config_path)
    except ConfigError as exc:
        print(exc, flush=True)
        return 2
    problems = config.check_files(cfg) + config.missing_files(cfg)
    if problems:
        print(ConfigError(config_path, problems), flush=True)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(
        f"lab stand-in supervisor: {cfg.service.id} on {cfg.node.name}: {HOLD_READY}; "
        "holding until SIGTERM",
        flush=True,
    )
    stop.wait(HOLD_LIMIT)
    print("lab stand-in supervisor: stopped", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dbha.lab.supervisors")
    sub = parser.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("hold", help="the lab's stand-in supervisor")
    h.add_argument("-c", "--config", required=True)
    args = parser.parse_args(argv)
    return hold(args.config)


if __name__ == "__main__":
    sys.exit(main())
