"""A small test agent that runs dbha's real code inside a lab namespace.

Started by lab tests and the benchmark as
``ip netns exec NS python -m tests.lab.agent COMMAND ...``; it writes one JSON
object per line on stdout (flushed), each with ``t``, the monotonic clock of the
machine (the same clock in every namespace, so lines from several agents can
be compared). Every loop is bounded by ``--duration``; SIGTERM ends it early.

Commands:

- ``heartbeat``: a HeartbeatService; ``event`` lines (path transitions, with
  ``noticed``, when the agent saw them) and ``snapshot`` lines.
- ``capture``: outgoing UDP datagrams to a port on an interface (AF_PACKET),
  as hex, to be replayed later.
- ``send``: send datagrams given as hex to ADDR:PORT.
- ``safety``: run the safety check, one ``safety`` line per run.
- ``vip``: add / remove / holder, one ``vip`` line (or an ``error`` line).
- ``client``: connect to PostgreSQL at an address in a tight loop; ``conn``
  lines when the server answering changes, ``neigh`` lines when the ARP entry
  for the address changes (polled in a thread, every millisecond).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from dbha.config import SafetyTarget

STOP = threading.Event()
_out_lock = threading.Lock()


def emit(line_type: str, /, **fields: Any) -> None:
    line = json.dumps({"type": line_type, "t": time.monotonic(), **fields}, default=str)
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _on_term(_sig: int, _frm: object) -> None:
    STOP.set()


# ------------------------------------------------------------------ heartbeat


def cmd_heartbeat(a: argparse.Namespace) -> int:
    from dbha.beat.service import HeartbeatService, PathConfig

    paths = []
    for spec in a.path:
        name, local, peer, port = spec.split(",")
        paths.append(PathConfig(name, local, peer, int(port)))
    svc = HeartbeatService(
        paths=paths,
        key=Path(a.key_file).read_bytes(),
        service=a.service,
        node=a.node,
        peer=a.peer,
        interval_ms=a.interval_ms,
        misses=a.misses,
        rise=a.rise,
    )
    svc.start()
    emit("started", boot_id=svc.boot_id, pid=os.getpid())
    end = time.monotonic() + a.duration
    next_snap = 0.0
    try:
        while not STOP.is_set() and time.monotonic() < end:
            now = time.monotonic()
            if now >= next_snap:
                snap = svc.snapshot()
                emit(
                    "snapshot",
                    peer_silent=snap.peer_silent,
                    paths={p.name: {"up": p.up, "changes": p.changes} for p in snap.paths},
                    counters=snap.counters.as_dict(),
                    last_seq=snap.last_beat.seq if snap.last_beat else None,
                    peer_boot=snap.last_beat.boot_id if snap.last_beat else None,
                    events_lost=snap.events_lost,
                )
                next_snap = now + a.report_ms / 1000.0
            noticed = time.monotonic()
            for e in svc.drain_events():
                emit("event", kind=e.kind.value, path=e.path, at=e.at, noticed=noticed)
            STOP.wait(0.005)
    finally:
        svc.stop()
        emit("stopped")
    return 0


# ------------------------------------------------------------------ capture / send


def cmd_capture(a: argparse.Namespace) -> int:
    """Capture outgoing IPv4/UDP datagrams to ``--port`` on ``--iface``."""
    # ETH_P_ALL: only "all protocols" packet sockets see what the host sends.
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    sock.bind((a.iface, 0x0003))
    end = time.monotonic() + a.duration
    got: list[str] = []
    with sock:
        while len(got) < a.count and time.monotonic() < end:
            sock.settimeout(max(0.001, end - time.monotonic()))
            try:
                frame, addr = sock.recvfrom(65536)
            except TimeoutError:
                break
            if addr[2] != 4:  # PACKET_OUTGOING: what this host sends
                continue
            ip = frame[14:]
            if frame[12:14] != b"\x08\x00" or len(ip) < 28 or ip[9] != 17:
                continue
            ihl = (ip[0] & 0x0F) * 4
            udp = ip[ihl:]
            if int.from_bytes(udp[2:4], "big") != a.port:
                continue
            length = int.from_bytes(udp[4:6], "big")
            got.append(udp[8:length].hex())
    emit("captured", payloads=got)
    return 0 if len(got) >= a.count else 1


def cmd_send(a: argparse.Namespace) -> int:
    items = json.loads(Path(a.file).read_text())
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for item in items:
            s.sendto(bytes.fromhex(item["hex"]), (item["to"], int(item["port"])))
            sent += 1
            time.sleep(a.gap_ms / 1000.0)
    emit("sent", count=sent)
    return 0


# ------------------------------------------------------------------ safety


def _target(spec: str) -> SafetyTarget:
    parts = spec.split(",")
    port = int(parts[2]) if len(parts) > 2 else None
    return SafetyTarget(parts[0], ipaddress.ip_address(parts[1]), port)  # type: ignore[arg-type]


def cmd_safety(a: argparse.Namespace) -> int:
    from dbha.host.safety import SafetyCheck

    check = SafetyCheck(
        targets=[_target(t) for t in a.target],
        peer_addresses=a.peer,
        engine=a.engine,
        db_port=a.port,
        timeout=a.timeout_ms / 1000.0,
    )
    for _ in range(a.runs):
        emit("safety", **check.run().as_dict())
    return 0


# ------------------------------------------------------------------ vip


def cmd_vip(a: argparse.Namespace) -> int:
    from dbha.host.vip import Vip, VipConflict, VipError

    try:
        with Vip(
            a.address, a.iface, arp_count=a.count, arp_interval_ms=a.interval_ms
        ) as vip:  # the Garp socket opens here, at "start-up"
            emit("ready", mac=vip.garp.mac)
            if a.action == "add":
                t0 = time.monotonic()
                acq = vip.acquire(vip.probe_ahead() if a.ahead else None)
                emit(
                    "vip",
                    action="add",
                    started=t0,
                    added=acq.added,
                    sent_at=list(acq.announcement.sent_at),
                    send_errors=list(acq.announcement.errors),
                    holds=vip.holds_vip(),
                    mac=vip.garp.mac,
                )
            elif a.action == "remove":
                was = vip.release()
                emit("vip", action="remove", was=was, holds=vip.holds_vip())
            else:
                emit("vip", action="holder", **vip.holder().as_dict())
    except VipConflict as exc:
        emit("error", error=str(exc), kind="VipConflict", mac=exc.mac)
        return 3
    except VipError as exc:
        emit("error", error=str(exc), kind=type(exc).__name__)
        return 2
    return 0


# ------------------------------------------------------------------ client


def _neigh_watch(address: str, end: float) -> None:
    from pyroute2 import IPRoute

    last: tuple[str | None, int | None] | None = None
    with IPRoute() as ipr:
        while not STOP.is_set() and time.monotonic() < end:
            found = ipr.get_neighbours(dst=address, family=2)
            mac = found[0].get("NDA_LLADDR") if found else None
            state = found[0]["state"] if found else None
            if (mac, state) != last:
                emit("neigh", mac=mac, state=state)
                last = (mac, state)
            STOP.wait(0.001)


def cmd_client(a: argparse.Namespace) -> int:
    import psycopg

    password = Path(a.password_file).read_text().strip()
    end = time.monotonic() + a.duration
    watcher = threading.Thread(target=_neigh_watch, args=(a.address, end), daemon=True)
    watcher.start()
    last: str | None = "start"
    streak = 0
    attempts = 0
    while not STOP.is_set() and time.monotonic() < end:
        attempts += 1
        host: str | None = None
        error = ""
        try:
            # A fast TCP check first: libpq will not wait less than 2 s to connect.
            socket.create_connection((a.address, a.port), timeout=0.1).close()
            with psycopg.connect(
                host=a.address,
                port=a.port,
                user=a.user,
                dbname=a.dbname,
                password=password,
                connect_timeout=2,
            ) as conn:
                row = conn.execute("SHOW cluster_name").fetchone()
                host = str(row[0]) if row else None
        except (OSError, psycopg.Error) as exc:
            error = type(exc).__name__
        if host != last:
            emit("conn", host=host, error=error, attempts=attempts)
            last = host
        streak = streak + 1 if host == a.until_host else 0
        if a.until_host and streak >= a.until_count:
            break
    STOP.set()
    watcher.join(2.0)
    emit("done", attempts=attempts, last=last)
    return 0


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _on_term)
    ap = argparse.ArgumentParser(prog="python -m tests.lab.agent")
    sub = ap.add_subparsers(dest="cmd", required=True)

    hb = sub.add_parser("heartbeat")
    hb.add_argument("--node", required=True)
    hb.add_argument("--peer", required=True)
    hb.add_argument("--service", default="pg")
    hb.add_argument("--key-file", required=True)
    hb.add_argument("--path", action="append", required=True, help="NAME,LOCAL,PEER,PORT")
    hb.add_argument("--interval-ms", type=int, default=100)
    hb.add_argument("--misses", type=int, default=5)
    hb.add_argument("--rise", type=int, default=3)
    hb.add_argument("--report-ms", type=int, default=200)
    hb.add_argument("--duration", type=float, default=60.0)

    cap = sub.add_parser("capture")
    cap.add_argument("--iface", required=True)
    cap.add_argument("--port", type=int, required=True)
    cap.add_argument("--count", type=int, default=3)
    cap.add_argument("--duration", type=float, default=10.0)

    snd = sub.add_parser("send")
    snd.add_argument("--file", required=True)
    snd.add_argument("--gap-ms", type=float, default=1.0)

    sf = sub.add_parser("safety")
    sf.add_argument("--target", action="append", default=[], help="icmp,ADDR or tcp,ADDR,PORT")
    sf.add_argument("--peer", action="append", default=[])
    sf.add_argument("--engine", default="postgresql")
    sf.add_argument("--port", type=int, default=5432)
    sf.add_argument("--timeout-ms", type=int, default=300)
    sf.add_argument("--runs", type=int, default=1)

    vp = sub.add_parser("vip")
    vp.add_argument("action", choices=["add", "remove", "holder"])
    vp.add_argument("--address", required=True)
    vp.add_argument("--iface", default="eth0")
    vp.add_argument("--count", type=int, default=3)
    vp.add_argument("--interval-ms", type=int, default=200)
    vp.add_argument("--ahead", action="store_true", help="add: probe ahead on a thread first")

    cl = sub.add_parser("client")
    cl.add_argument("--address", required=True)
    cl.add_argument("--port", type=int, default=5432)
    cl.add_argument("--user", default="app")
    cl.add_argument("--dbname", default="app")
    cl.add_argument("--password-file", required=True)
    cl.add_argument("--duration", type=float, default=30.0)
    cl.add_argument("--until-host")
    cl.add_argument("--until-count", type=int, default=5)

    a = ap.parse_args(argv)
    commands = {
        "heartbeat": cmd_heartbeat,
        "capture": cmd_capture,
        "send": cmd_send,
        "safety": cmd_safety,
        "vip": cmd_vip,
        "client": cmd_client,
    }
    return commands[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())


# ------------------------------------------------------------------ the test side


class Agent:
    """An agent process started in a lab namespace; its lines collected by a thread.

    Tests and the benchmark use it; ``stop()`` ends the process by its PID
    (SIGTERM, then SIGKILL after a bound) and is safe to call twice.
    """

    def __init__(self, lab: Any, host: str, *args: str) -> None:
        import subprocess

        root = Path(__file__).resolve().parents[2]
        argv = lab.exec_argv(host, [sys.executable, "-m", "tests.lab.agent", *args])
        self.host = host
        self.proc = subprocess.Popen(
            argv,
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self.stderr = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._err_reader = threading.Thread(target=self._read_err, daemon=True)
        self._err_reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                self.lines.append(obj)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()[-4000:]

    def of(self, kind: str) -> list[dict[str, Any]]:
        with self._cond:
            return [x for x in self.lines if x["type"] == kind]

    def wait_for(self, what: str, pred: Any, timeout: float = 20.0) -> dict[str, Any]:
        """The first line for which ``pred(line)`` holds; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    if pred(line):
                        return line
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"agent on {self.host}: no line for {what} within {timeout:g} s "
                        f"(exit {self.proc.poll()}, stderr: {self.stderr[-800:]})"
                    )
                self._cond.wait(min(left, 0.2))

    def wait_exit(self, timeout: float = 30.0) -> int:
        import subprocess

        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"agent on {self.host} still running after {timeout:g} s") from exc
        self._reader.join(2.0)
        self._err_reader.join(2.0)
        return code

    def stop(self) -> None:
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5.0)
        self._reader.join(2.0)
        self._err_reader.join(2.0)


def run_agent(lab: Any, host: str, *args: str, timeout: float = 30.0) -> Agent:
    """Run an agent to completion (bounded) and return it, lines collected."""
    agent = Agent(lab, host, *args)
    try:
        agent.wait_exit(timeout)
    finally:
        agent.stop()
    return agent


LAB_PATHS = {  # host -> [(path, own address, peer address)]
    "a": [("lan", "198.18.0.11", "198.18.0.12"), ("hb", "198.18.1.1", "198.18.1.2")],
    "b": [("lan", "198.18.0.12", "198.18.0.11"), ("hb", "198.18.1.2", "198.18.1.1")],
}


def start_heartbeats(
    lab: Any,
    key_file: Path,
    *,
    port: int = 5405,
    interval_ms: int = 100,
    misses: int = 5,
    rise: int = 3,
    duration: float = 120.0,
    report_ms: int = 200,
) -> dict[str, Agent]:
    """Heartbeat agents on a and b over both lab paths; the caller stops them."""
    agents: dict[str, Agent] = {}
    for node, peer in (("a", "b"), ("b", "a")):
        args = ["heartbeat", "--node", node, "--peer", peer, "--key-file", str(key_file)]
        for name, own, other in LAB_PATHS[node]:
            args += ["--path", f"{name},{own},{other},{port}"]
        args += ["--interval-ms", str(interval_ms), "--misses", str(misses)]
        args += ["--rise", str(rise), "--duration", str(duration), "--report-ms", str(report_ms)]
        agents[node] = Agent(lab, node, *args)
    return agents


def all_up(line: dict[str, Any]) -> bool:
    """A snapshot line in which every path is up and the peer is heard."""
    return (
        line["type"] == "snapshot"
        and not line["peer_silent"]
        and all(p["up"] for p in line["paths"].values())
    )


def make_key(path: Path) -> Path:
    """A fresh random heartbeat key file, mode 0600."""
    path.write_bytes(os.urandom(32))
    path.chmod(0o600)
    return path
