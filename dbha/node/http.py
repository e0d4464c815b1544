"""The HTTP door: health endpoints for load balancers, /status and /metrics.

Off unless the config has an ``[http]`` table (docs/http.md). One thread of its
own ("dbha-http") runs an asyncio server from the standard library: an idle or
slow connection costs a small object, not a thread, so many of them cannot
crowd out the loop or the beats, which run in threads of their own and never
wait for the door. Every request is bounded:

- at most ``http.max_connections`` open at once; one more is closed at once;
- the request head (request line and headers) at most ``MAX_HEAD_BYTES`` and
  ``MAX_HEADERS`` lines (else 431), no body (else 400);
- the whole exchange, from accepting the connection (after the TLS handshake,
  itself bounded by the same time) to the last byte written, within
  ``http.request_timeout_ms``: a client sending one byte a second (slowloris)
  is cut off there;
- one request per connection (``Connection: close``).

Answers come from :mod:`dbha.node.httpviews` (the health rules) and
:mod:`dbha.node.metrics`, both reading the view the loop left: a request never
probes the database. Refusals (4xx) are counted in
``dbha_http_refused_total`` by reason and say nothing else; no answer carries
a secret (the status has none, and an error names only what was wrong).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from dbha.config import HttpConfig
from dbha.errors import DbhaError
from dbha.node import httpviews as views
from dbha.node.metrics import CONTENT_TYPE, Metrics

log = logging.getLogger("dbha.http")

MAX_HEAD_BYTES = 8192
MAX_HEADERS = 64
BACKLOG = 512
START_WITHIN = 5.0  # seconds for the server thread to listen
METHODS = ("GET", "HEAD", "OPTIONS")
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


class Feed:
    """What the loop tells the door, and the view the door answers from.

    The loop calls :meth:`lease` with each lease it hands the keeper, marks the
    actions that stop serving with :meth:`stepping_down`, and :meth:`ticked` at
    the end of each tick. The door's :meth:`view` builds the status at most once
    per tick (``status`` is :meth:`dbha.node.daemon.Supervisor.status`), and
    reads the lease left and the loop's age at the request's own moment: a loop
    that stalls stops answering 200 on /primary when its lease runs out."""

    def __init__(self, status: Callable[[], dict[str, Any]], metrics: Metrics) -> None:
        self._status, self.metrics = status, metrics
        self._lock = threading.Lock()
        self._ticks = 0
        self._built = -1
        self._cached: dict[str, Any] | None = None
        self.lease_until: float | None = None
        self.ticked_at: float | None = None
        self.stepping = False

    def lease(self, until: float | None) -> None:
        self.lease_until = until

    def stepping_down(self, yes: bool) -> None:
        self.stepping = yes

    def ticked(self, began: float, ended: float) -> None:
        self.metrics.tick_seconds.observe(max(ended - began, 0.0))
        self.ticked_at = ended
        self.stepping = False  # the status now shows what the actions did
        self._ticks += 1

    def view(self) -> views.View:
        with self._lock:
            if self._built != self._ticks and self.ticked_at is not None:
                self._cached, self._built = dict(self._status()), self._ticks
            st = self._cached
        now = time.monotonic()
        until, at = self.lease_until, self.ticked_at
        return views.View(
            st,
            None if until is None else until - now,
            None if at is None else now - at,
            stepping_down=self.stepping,
        )

    def metrics_view(self) -> tuple[dict[str, Any] | None, float | None]:
        v = self.view()
        return v.status, v.lease_left


class HttpError(DbhaError):
    """The HTTP door could not start (address in use, a TLS file unreadable)."""


class _Refuse(Exception):
    def __init__(self, code: int, reason: str, text: str) -> None:
        super().__init__(text)
        self.code, self.reason, self.text = code, reason, text


class HttpDoor:
    """The server; ``start`` listens (or raises HttpError), ``stop`` ends it."""

    def __init__(
        self,
        cfg: HttpConfig,
        bounds: Callable[[], views.Bounds],
        view: Callable[[], views.View],
        metrics: Metrics,
    ) -> None:
        self.cfg, self.bounds, self.view, self.metrics = cfg, bounds, view, metrics
        self.timeout = cfg.request_timeout_ms / 1000
        self.open = 0  # connections being served now (read by tests and status)
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._auth: bytes | None = None
        self._ssl: ssl.SSLContext | None = None

    @property
    def where(self) -> str:
        scheme = "https" if self.cfg.tls else "http"
        host = self.cfg.address
        return f"{scheme}://{f'[{host}]' if host.version == 6 else host}:{self.cfg.port}"

    # -- life cycle -------------------------------------------------------

    def start(self) -> None:
        cfg = self.cfg
        self._auth = _read_auth(cfg)
        self._ssl = _tls_context(cfg)
        family = socket.AF_INET6 if cfg.address.version == 6 else socket.AF_INET
        try:
            sock = socket.create_server(
                (str(cfg.address), cfg.port), family=family, backlog=BACKLOG
            )
        except OSError as exc:
            raise HttpError(f"http door on {self.where}: {exc.strerror or exc}") from exc
        self._thread = threading.Thread(
            target=self._run, args=(sock,), name="dbha-http", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(START_WITHIN) or self._failed is not None:
            sock.close()
            raise HttpError(f"http door on {self.where}: did not start: {self._failed}")
        log.info("http door listening on %s", self.where)

    def stop(self, timeout: float = 2.0) -> None:
        loop, done = self._loop, self._done
        if loop is not None and done is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended meanwhile
                loop.call_soon_threadsafe(done.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, sock: socket.socket) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve_forever(sock))
        except Exception as exc:  # reported to start(), or logged
            self._failed = exc
            self._ready.set()
            log.error("http door stopped: %s", exc)
        finally:
            loop.close()

    async def _serve_forever(self, sock: socket.socket) -> None:
        self._done = asyncio.Event()
        server = await asyncio.start_server(
            self._client,
            sock=sock,
            ssl=self._ssl,
            limit=MAX_HEAD_BYTES,
            ssl_handshake_timeout=self.timeout if self._ssl else None,
            ssl_shutdown_timeout=self.timeout if self._ssl else None,
        )
        self._ready.set()
        async with server:
            await self._done.wait()
            server.close()
            for w in list(self._writers):
                w.transport.abort()

    # -- one connection -----------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open >= self.cfg.max_connections:
            self.metrics.http_refused.labels("too_many_connections").inc()
            writer.transport.abort()
            return
        self.open += 1
        self._writers.add(writer)
        cut = True  # abort the connection unless the exchange ended well
        try:
            async with asyncio.timeout(self.timeout):
                await self._exchange(reader, writer)
            cut = False
        except TimeoutError:
            self.metrics.http_refused.labels("timeout").inc()
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            self.metrics.http_refused.labels("connection_lost").inc()
        except Exception:  # a bug here must not end the door
            log.exception("http door: request failed")
        finally:
            self.open -= 1
            self._writers.discard(writer)
            if cut:
                writer.transport.abort()
            elif not writer.transport.is_closing():
                writer.close()  # the answer was drained; the transport closes after it

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            return await self._send(
                writer,
                "GET",
                "other",
                _Refuse(431, "oversize", f"request head over {MAX_HEAD_BYTES} bytes"),
            )
        except asyncio.IncompleteReadError as exc:
            if exc.partial:  # a connection that closed mid-request; a bare connect is a TCP check
                self.metrics.http_refused.labels("incomplete").inc()
            return None
        method, endpoint = "GET", "other"
        try:
            method, target, headers = _parse_head(head)
            path, query = _target(target)
            endpoint = path if path in views.PATHS else "other"
            if method not in METHODS:
                raise _Refuse(
                    405, "method", f"{method[:16]}: this door answers GET, HEAD and OPTIONS"
                )
            if (
                headers.get("transfer-encoding")
                or headers.get("content-length", "0").strip() != "0"
            ):
                raise _Refuse(400, "body", "this door takes no request body")
            if path not in views.PATHS:
                raise _Refuse(404, "not_found", "no such endpoint (docs/http.md lists them)")
            if path in views.GUARDED_PATHS:
                self._authorize(headers, writer)
            if path == "/metrics":
                return await self._send(
                    writer, method, endpoint, (200, self.metrics.render(), CONTENT_TYPE)
                )
            try:
                got = views.answer(path, query, self.view(), self.bounds())
            except views.BadRequest as exc:
                raise _Refuse(400, "bad_query", str(exc)) from None
            body = views.encode(got.body)
            await self._send(writer, method, endpoint, (got.code, body, "application/json"))
        except _Refuse as refused:
            await self._send(writer, method, endpoint, refused)

    def _authorize(self, headers: dict[str, str], writer: asyncio.StreamWriter) -> None:
        """/status and /metrics: a verified client certificate or the basic-auth
        credentials, when either is configured; open otherwise."""
        cert_ok = self.cfg.client_ca_file is not None and bool(writer.get_extra_info("peercert"))
        if (self._auth is None and self.cfg.client_ca_file is None) or cert_ok:
            return
        if self._auth is not None:
            given = _basic(headers.get("authorization", ""))
            if given is not None and hmac.compare_digest(given, self._auth):
                return
            raise _Refuse(401, "unauthorized", "credentials needed")
        raise _Refuse(403, "unauthorized", "a client certificate is needed")

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        method: str,
        endpoint: str,
        what: _Refuse | tuple[int, bytes, str],
    ) -> None:
        extra: list[str] = []
        if isinstance(what, _Refuse):
            self.metrics.http_refused.labels(what.reason).inc()
            code, body, ctype = what.code, views.encode({"error": what.text}), "application/json"
            if code == 401:
                extra.append('WWW-Authenticate: Basic realm="dbha", charset="UTF-8"')
        else:
            code, body, ctype = what
        if code == 405 or method == "OPTIONS":
            extra.append("Allow: " + ", ".join(METHODS))
        self.metrics.http_requests.labels(endpoint, str(code)).inc()
        length = 0 if method == "OPTIONS" else len(body)
        head = (
            f"HTTP/1.1 {code} {_REASONS.get(code, 'Error')}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {length}\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\n"
            + "".join(f"{h}\r\n" for h in extra)
            + "\r\n"
        ).encode()
        writer.write(head if method in ("HEAD", "OPTIONS") else head + body)
        await writer.drain()


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head[:-4].split(b"\r\n")
    if len(lines) - 1 > MAX_HEADERS:
        raise _Refuse(431, "oversize", f"more than {MAX_HEADERS} header lines")
    try:
        method, target, version = lines[0].decode("ascii").split(" ")
    except (UnicodeDecodeError, ValueError):
        raise _Refuse(400, "malformed", "malformed request line") from None
    if not version.startswith("HTTP/1.") or not method.isalpha() or not method.isupper():
        raise _Refuse(400, "malformed", "malformed request line")
    headers: dict[str, str] = {}
    for raw in lines[1:]:
        name, sep, value = raw.partition(b":")
        if not sep or not name or name != name.strip() or b" " in name:
            raise _Refuse(400, "malformed", "malformed header line")
        headers[name.decode("latin-1").lower()] = value.decode("latin-1").strip()
    return method, target, headers


def _target(target: str) -> tuple[str, str]:
    try:
        parts = urlsplit(target)
    except ValueError:
        raise _Refuse(400, "malformed", "malformed request target") from None
    if not parts.path.startswith("/"):
        raise _Refuse(400, "malformed", "the request target must be a path")
    path = parts.path.rstrip("/") or "/"
    return path, parts.query


def _basic(header: str) -> bytes | None:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        return base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


def _read_auth(cfg: HttpConfig) -> bytes | None:
    """The ``user:password`` of ``http.auth_file`` (its first line), or None."""
    if cfg.auth_file is None:
        return None
    try:
        line = cfg.auth_file.read_bytes()[:4096].split(b"\n", 1)[0].strip()
    except OSError as exc:
        raise HttpError(f"http.auth_file = {str(cfg.auth_file)!r}: {exc.strerror}") from exc
    user, sep, password = line.partition(b":")
    if not sep or not user or not password:
        raise HttpError(
            f"http.auth_file = {str(cfg.auth_file)!r}: its first line must be user:password"
        )
    return line


def _tls_context(cfg: HttpConfig) -> ssl.SSLContext | None:
    if cfg.cert_file is None or cfg.key_file is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
        if cfg.client_ca_file is not None:
            ctx.load_verify_locations(cfg.client_ca_file)
            # optional at the handshake (load balancers call the health endpoints
            # without one); /status and /metrics ask for it per request
            ctx.verify_mode = ssl.CERT_OPTIONAL
    except (OSError, ssl.SSLError) as exc:
        raise HttpError(f"http: TLS files: {exc}") from exc
    return ctx
