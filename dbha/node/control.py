"""How the CLI and the peer reach a running supervisor.

Two doors, one handler:

* the **local control socket** (``service.control_socket``): a unix stream
  socket, mode 0600, for ``dbha status``, ``switchover``, ``maintenance`` ...
  on the same host. The kernel's file permissions are the authentication.
* the **peer door**: TCP on each heartbeat path's local address and port (the
  same number as the UDP heartbeats), for the peer's host: its supervisor and
  the CLI run there (status, history, and the requests the daemon lists in
  ``PEER_REQUESTS``: a switchover run on the replica's host, maintenance set
  for the pair). Every exchange is challenge-response: the
  server sends a fresh random nonce, the client signs nonce + request with the
  shared heartbeat key (HMAC-SHA256), the server signs nonce + reply. A
  captured request cannot be replayed (the nonce differs), no clock sync is
  needed, and the key never crosses the wire.

A request and a reply are one JSON object on one line each, at most
``MAX_MESSAGE`` bytes. Every read has a timeout; a bad request gets an error
reply (or the connection is dropped), never an exception in the server.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import selectors
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dbha.config import Config
from dbha.errors import DbhaError

log = logging.getLogger("dbha.control")

MAX_MESSAGE = 256 * 1024
IO_TIMEOUT = 5.0
ASK_TIMEOUT = 3.0  # one question of Doors (status, history)
# How often an idle accept loop looks at its stop flag (seconds).
ACCEPT_POLL = 2.0

Handler = Callable[[dict[str, Any], str], dict[str, Any]]  # (request, origin) -> reply


class ControlError(DbhaError):
    """The supervisor could not be reached, or its answer could not be trusted."""


# ------------------------------------------------------------------ framing


def _read_line(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    buf = bytearray()
    while b"\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_MESSAGE:
            raise ValueError("message too long")
    line, _, _ = bytes(buf).partition(b"\n")
    return line


def _send(sock: socket.socket, obj: dict[str, Any]) -> None:
    data = json.dumps(obj, separators=(",", ":"), sort_keys=True, default=str).encode()
    if len(data) >= MAX_MESSAGE:
        raise ValueError("message too long")
    sock.sendall(data + b"\n")


def _parse(line: bytes) -> dict[str, Any]:
    obj = json.loads(line.decode("utf-8"))
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return obj


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, default=str).encode()


def _mac(key: bytes, nonce: str, tag: str, body: dict[str, Any]) -> str:
    msg = nonce.encode() + b"\0" + tag.encode() + b"\0" + _canonical(body)
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


# ------------------------------------------------------------------ servers


class _Server:
    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()

    def _serve(self, lsock: socket.socket, origin: str) -> None:
        lsock.settimeout(0.2)  # accept() only runs once the selector saw a connection
        with selectors.DefaultSelector() as sel:
            sel.register(lsock, selectors.EVENT_READ, "door")
            sel.register(self._wake_r, selectors.EVENT_READ, "wake")  # written by stop()
            while not self._stop.is_set():
                try:
                    if not any(key.data == "door" for key, _ in sel.select(ACCEPT_POLL)):
                        continue
                    conn, _ = lsock.accept()
                except TimeoutError:
                    continue
                except (OSError, ValueError):  # ValueError: a socket closed meanwhile
                    return
                # One short exchange per connection; a thread each keeps a slow
                # client from holding the door shut.
                threading.Thread(target=self._one, args=(conn, origin), daemon=True).start()

    def _one(self, conn: socket.socket, origin: str) -> None:
        with conn:
            try:
                self._exchange(conn, origin)
            except (OSError, ValueError) as exc:
                log.info("control: dropped a %s connection: %s", origin, exc)

    def _exchange(self, conn: socket.socket, origin: str) -> None:
        raise NotImplementedError

    def _reply(self, request: dict[str, Any], origin: str) -> dict[str, Any]:
        try:
            return self._handler(request, origin)
        except DbhaError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # the door must stay open whatever the handler does
            log.exception("control: handler failed on %s", request.get("cmd"))
            return {"ok": False, "error": f"internal error: {type(exc).__name__}"}

    def _start(self, lsock: socket.socket, origin: str) -> None:
        self._socks.append(lsock)
        t = threading.Thread(
            target=self._serve, args=(lsock, origin), daemon=True, name=f"dbha-control-{origin}"
        )
        t.start()
        self._threads.append(t)

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")  # wakes every accept loop's select()
        for t in self._threads:
            t.join(timeout)
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class LocalControlServer(_Server):
    """The unix control socket (0600) for the CLI on this host."""

    def __init__(self, path: Path, handler: Handler) -> None:
        super().__init__(handler)
        self.path = path

    def start(self) -> None:
        self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                self.path.unlink()  # a socket left by a supervisor that died
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o077)
        try:
            s.bind(str(self.path))
        except OSError as exc:
            s.close()
            raise ControlError(f"control socket {self.path}: {exc.strerror}") from exc
        finally:
            os.umask(old)
        s.listen(16)
        self._start(s, "local")

    def _exchange(self, conn: socket.socket, origin: str) -> None:
        line = _read_line(conn, IO_TIMEOUT)
        try:
            request = _parse(line)
        except ValueError as exc:
            _send(conn, {"ok": False, "error": f"bad request: {exc}"})
            return
        _send(conn, self._reply(request, origin))

    def stop(self, timeout: float = 2.0) -> None:
        super().stop(timeout)
        with contextlib.suppress(OSError):
            self.path.unlink()


class PeerControlServer(_Server):
    """The authenticated TCP door for the peer supervisor, on each heartbeat path."""

    def __init__(self, binds: list[tuple[str, int]], key: bytes, handler: Handler) -> None:
        super().__init__(handler)
        self.binds = binds
        self._key = key
        self.rejected = 0

    def start(self) -> None:
        for addr, port in self.binds:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((addr, port))
            except OSError as exc:
                s.close()
                self.stop()
                raise ControlError(f"peer control on {addr}:{port}: {exc.strerror}") from exc
            s.listen(16)
            self._start(s, "peer")

    def _exchange(self, conn: socket.socket, origin: str) -> None:
        nonce = secrets.token_hex(16)
        _send(conn, {"nonce": nonce})
        msg = _parse(_read_line(conn, IO_TIMEOUT))
        body, mac = msg.get("body"), msg.get("mac")
        if (
            not isinstance(body, dict)
            or not isinstance(mac, str)
            or not hmac.compare_digest(mac, _mac(self._key, nonce, "request", body))
        ):
            self.rejected += 1
            log.warning("control: rejected a peer request that is not signed with our key")
            return
        reply = self._reply(body, origin)
        _send(conn, {"body": reply, "mac": _mac(self._key, nonce, "reply", reply)})


# ------------------------------------------------------------------ clients


def local_request(
    path: Path,
    request: dict[str, Any],
    timeout: float = IO_TIMEOUT,
) -> dict[str, Any]:
    """Ask the supervisor on this host. Raises ControlError if it cannot be reached."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            _send(s, request)
            return _parse(_read_line(s, timeout))
    except FileNotFoundError as exc:
        raise ControlError(f"no supervisor is running ({path} does not exist)") from exc
    except ConnectionRefusedError as exc:
        raise ControlError(f"no supervisor is running (nothing listens on {path})") from exc
    except (OSError, ValueError) as exc:
        raise ControlError(f"supervisor at {path}: {exc}") from exc


def peer_request(
    addresses: list[tuple[str, int]],
    key: bytes,
    request: dict[str, Any],
    timeout: float = IO_TIMEOUT,
) -> dict[str, Any]:
    """Ask the peer supervisor, trying each address in turn; the reply is verified."""
    errors = []
    for addr, port in addresses:
        try:
            with socket.create_connection((addr, port), timeout=timeout) as s:
                hello = _parse(_read_line(s, timeout))
                nonce = hello.get("nonce")
                if not isinstance(nonce, str) or len(nonce) < 16:
                    raise ValueError("no challenge")
                _send(s, {"body": request, "mac": _mac(key, nonce, "request", request)})
                msg = _parse(_read_line(s, timeout))
                body, mac = msg.get("body"), msg.get("mac")
                if (
                    not isinstance(body, dict)
                    or not isinstance(mac, str)
                    or not (hmac.compare_digest(mac, _mac(key, nonce, "reply", body)))
                ):
                    raise ValueError("reply not signed with our key")
                return body
        except (OSError, ValueError) as exc:
            errors.append(f"{addr}:{port}: {exc}")
    raise ControlError("peer supervisor unreachable: " + "; ".join(errors))


class Doors:
    """This node's supervisor over its control socket, the peer's over its door (the
    CLI's one way to ask either): each answer a dict, or a str saying why none came."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.me, self.peer = cfg.node.name, cfg.peer.name
        self._key: bytes | None = None

    def ask(self, node: str, request: dict[str, Any], timeout: float = ASK_TIMEOUT) -> Any:
        """The supervisor's reply (a dict), or why it gave none (a str)."""
        try:
            if node == self.me:
                return local_request(self.cfg.service.control_socket, request, timeout)
            if self._key is None:
                self._key = self.cfg.heartbeat.key_file.read_bytes().strip()
            addrs = [(str(p.peer_address), p.port) for p in self.cfg.heartbeat.paths]
            return peer_request(addrs, self._key, request, timeout)
        except (ControlError, OSError) as exc:
            return str(exc)

    def status(self, node: str) -> dict[str, Any] | str:
        got = self.ask(node, {"cmd": "status"})
        if isinstance(got, str):
            return got
        if not got.get("ok") or not isinstance(got.get("status"), dict):
            return str(got.get("error"))
        status: dict[str, Any] = got["status"]
        return status

    def history(self, node: str, last: int = 20) -> list[dict[str, Any]]:
        got = self.ask(node, {"cmd": "history", "last": last})
        if isinstance(got, dict) and isinstance(got.get("events"), list):
            return [e for e in got["events"] if isinstance(e, dict)]
        return []
