"""HAProxy in the lab: writes and reads routed by the supervisors' HTTP doors.

``dbha lab up --haproxy`` starts Debian's haproxy inside host ``c`` (the client's
host), as a process of its own in the foreground (``-db``), its PID in a pid
file under the lab directory; ``lab down`` stops it by PID with everything else
in the namespace, ``lab status`` shows which servers each backend routes to.

Per service, two frontends on c's LAN address: writes (``FRONTENDS[service][0]``)
go to the node whose door answers 200 on ``/primary``, reads (``[1]``) to a
replica answering 200 on ``/replica``. The checks ask with ``OPTIONS``, as
HAProxy does by default; ``on-marked-down shutdown-sessions`` cuts the
sessions of a node that stops being primary, so clients reconnect to the new
one. Timing (``CHECK``): a write server is marked down after ``fall`` failed
checks and up only after ``rise`` good ones, ``rise > fall``: a new primary's
doors answer 200 only after the old one's answer 503 (it fenced first), so the
old is marked down before the new is marked up and the write backend never
routes to two nodes at once. Every server state change is logged
(``haproxy.log``); :func:`write_timeline` reads it back.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from dbha import proc
from dbha.errors import CommandFailed, CommandTimeout, LabError
from dbha.lab import net, procs
from dbha.lab import topology as topo
from dbha.lab.layout import Layout
from dbha.lab.wait import wait_until

HOST = "c"
HAPROXY = "/usr/sbin/haproxy"
FRONTENDS = {"pg": (15432, 15433), "mariadb": (13306, 13307)}  # (writes, reads) on c
CHECK = {"inter_ms": 500, "fall": 2, "rise": 3, "timeout_ms": 400}
READ_LAG = {"pg": "16MB", "mariadb": "100"}  # the read backend's ?lag= bound
START_TIMEOUT = 10.0
STATS_TIMEOUT = 2.0
_STATE = re.compile(
    r"(?:\[WARNING\]|\[ALERT\]|\[NOTICE\])?.*?Server (?P<backend>\w+)/(?P<server>\w+) is "
    r"(?P<state>UP|DOWN)"
)


def backend(service: str, kind: str) -> str:
    return f"{service}_{kind}"


def render(layout: Layout) -> str:
    """The lab's haproxy.cfg: stats socket, and two frontends and backends per service."""
    d = directory(layout)
    c = CHECK
    lines = [
        "# haproxy.cfg of the dbha lab, written by `dbha lab up --haproxy`; rewritten",
        "# at every up. conf/haproxy.cfg is the annotated example for operators.",
        "global",
        "    maxconn 512",
        f"    stats socket {d / 'stats.sock'} mode 600 level admin",
        "    log stdout format raw local0 info",
        "",
        "defaults",
        "    mode tcp",
        "    log global",
        "    option tcplog",
        "    option dontlog-normal",
        "    timeout connect 1s",
        "    timeout client 30m",
        "    timeout server 30m",
        f"    timeout check {c['timeout_ms']}ms",
    ]
    lan = topo.HOSTS[HOST].lan
    for service, svc in topo.SERVICES.items():
        for kind, port, uri in (
            ("write", FRONTENDS[service][0], "/primary"),
            ("read", FRONTENDS[service][1], f"/replica?lag={READ_LAG[service]}"),
        ):
            name = backend(service, kind)
            lines += [
                "",
                f"frontend {name}",
                f"    bind {lan}:{port}",
                f"    default_backend {name}",
                "",
                f"backend {name}",
                "    option httpchk",
                f"    http-check send meth OPTIONS uri {uri} ver HTTP/1.1 hdr Host dbha",
                "    http-check expect status 200",
                f"    default-server inter {c['inter_ms']}ms fall {c['fall']} rise {c['rise']} "
                "on-marked-down shutdown-sessions",
            ]
            lines += [
                f"    server {h} {topo.HOSTS[h].lan}:{svc.port} check port {svc.http_port}"
                for h in topo.DB_HOSTS
            ]
    return "\n".join(lines) + "\n"


def directory(layout: Layout) -> Path:
    return layout.root / HOST / "haproxy"


@dataclass(frozen=True, slots=True)
class Files:
    config: Path
    pidfile: Path
    log: Path
    stats: Path

    @classmethod
    def of(cls, layout: Layout) -> Files:
        d = directory(layout)
        return cls(d / "haproxy.cfg", d / "haproxy.pid", d / "haproxy.log", d / "stats.sock")


class HAProxy:
    """The lab's HAProxy: start, stop and ask it, by PID and stats socket."""

    def __init__(self, prefix: str, layout: Layout) -> None:
        self.prefix, self.layout = prefix, layout
        self.files = Files.of(layout)

    def pid(self) -> int | None:
        try:
            pid = int(self.files.pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        if str(self.files.config).encode() not in cmdline or not procs.alive(pid):
            return None
        return pid

    def start(self) -> int:
        """Write the config, check it, start haproxy (no-op if it runs with this
        config) and wait (bounded) until its stats socket answers; its PID."""
        f = self.files
        f.config.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        text = render(self.layout)
        pid = self.pid()
        if pid is not None and f.config.exists() and f.config.read_text() == text:
            return pid
        if pid is not None:
            self.stop()
        f.config.write_text(text)
        try:
            proc.run([HAPROXY, "-c", "-q", "-f", str(f.config)], timeout=15.0)
        except (CommandFailed, CommandTimeout) as exc:
            raise LabError(f"haproxy config {f.config}: {exc}") from exc
        with open(f.log, "ab") as log:
            child = subprocess.Popen(
                net.nsexec(self.prefix, HOST, [HAPROXY, "-db", "-f", str(f.config)]),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        f.pidfile.write_text(f"{child.pid}\n")  # `ip netns exec` execs haproxy itself
        wait_until(
            lambda: self._answers() or child.poll() is not None,
            START_TIMEOUT,
            "haproxy to answer on its stats socket",
        )
        if child.poll() is not None:
            tail = f.log.read_text(errors="replace").strip().splitlines()[-3:]
            raise LabError(f"haproxy exited at start: {tail}")
        return child.pid

    def stop(self, timeout: float = 5.0) -> bool:
        pid = self.pid()
        self.files.pidfile.unlink(missing_ok=True)
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        try:
            wait_until(lambda: not procs.alive(pid), timeout, "haproxy to stop")
        except LabError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not procs.alive(pid), 5.0, "haproxy to die")
        return True

    def _answers(self) -> bool:
        try:
            return bool(self.ask("show info"))
        except OSError:
            return False

    def ask(self, command: str) -> str:
        """One command on the stats socket (bounded); its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(STATS_TIMEOUT)
            s.connect(str(self.files.stats))
            s.sendall(command.encode() + b"\n")
            out = b""
            deadline = time.monotonic() + STATS_TIMEOUT
            while time.monotonic() < deadline and (chunk := s.recv(65536)):
                out += chunk
            return out.decode(errors="replace")

    def servers(self) -> dict[str, dict[str, str]]:
        """backend -> server -> status ("UP", "DOWN", "UP 1/3", ...) from ``show stat``."""
        text = self.ask("show stat")
        lines = text.strip().splitlines()
        if not lines or not lines[0].startswith("# "):
            raise LabError(f"haproxy show stat: unexpected answer {text[:80]!r}")
        head = lines[0][2:].split(",")
        at = {k: i for i, k in enumerate(head)}
        out: dict[str, dict[str, str]] = {}
        for line in lines[1:]:
            row = line.split(",")
            name = row[at["svname"]]
            if name in ("FRONTEND", "BACKEND"):
                continue
            out.setdefault(row[at["pxname"]], {})[name] = row[at["status"]]
        return out

    def status(self) -> dict[str, object]:
        pid = self.pid()
        st: dict[str, object] = {"pid": pid, "alive": pid is not None, "log": str(self.files.log)}
        if pid is not None:
            try:
                st["servers"] = self.servers()
            except (OSError, LabError) as exc:
                st["error"] = str(exc)
        return st

    def log_text(self) -> str:
        try:
            return self.files.log.read_text(errors="replace")
        except OSError:
            return ""


def write_timeline(log_text: str, service: str) -> list[tuple[str, str]]:
    """The write backend's server state changes, in the order HAProxy logged them:
    (server, "UP" | "DOWN"). HAProxy in the foreground writes each change both as
    a warning and as a log line: a repeat of the change just read is one change."""
    name = backend(service, "write")
    out: list[tuple[str, str]] = []
    for line in log_text.splitlines():
        m = _STATE.search(line)
        if m and m["backend"] == name and (not out or out[-1] != (m["server"], m["state"])):
            out.append((m["server"], m["state"]))
    return out


def most_up_at_once(timeline: list[tuple[str, str]], start: dict[str, bool]) -> int:
    """Replaying ``timeline`` from the servers' states ``start``: the largest number
    of write servers HAProxy held UP at the same moment."""
    up = dict(start)
    most = sum(up.values())
    for server, state in timeline:
        up[server] = state == "UP"
        most = max(most, sum(up.values()))
    return most
