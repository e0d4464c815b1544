"""The log of a dbha process: human lines, or one JSON object per line.

``dbha run`` (and the lease keeper it starts, which writes to the same stream)
calls :func:`setup` once. Text is the format it always had
(``<time> <LEVEL> <logger>: <message>``); ``json`` makes every line of the
process one JSON object, the lines of every logger included: ``time`` (ISO 8601,
UTC, milliseconds), ``level``, ``logger``, ``message``, the structured fields a
caller attached with ``extra={FIELDS: {...}}`` (a decision's rule, reason, role,
epoch, actions, error) as keys of their own, and an exception as ``exception``.
Uncaught exceptions (of the main thread or another) and Python's warnings go
through the log too, so nothing else reaches the stream.

The standard library is enough for this (a Formatter subclass); no dependency is
added for it.

Secrets: nothing in dbha logs one, and as a second line of defence every line is
masked: the text of a secret given to :func:`setup` (the database password, the
heartbeat key) is replaced by ``[secret]`` wherever it would appear.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from dbha.core.model import Decision, NodeState

# The attribute of a log record that carries structured fields:
# ``log.info("...", extra={FIELDS: {"rule": ...}})``.
FIELDS = "dbha_fields"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The keys every JSON line has; structured fields never replace them.
BASE_KEYS = ("time", "level", "logger", "message")
MASK = "[secret]"
# Shorter secrets are not masked: they would mask ordinary words.
MIN_MASKED = 4


# A decision that fails again as the last logged one did is logged again after this
# long (seconds), with how many times it repeated: a promotion a pre_promote hook
# vetoes is decided every tick, and must not flood the log.
REPEAT_FAILED_EVERY = 60.0


class Repeats:
    """Which failing lines to log: the first, then the same one at most every
    REPEAT_FAILED_EVERY seconds (``clock``: monotonic)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: object = None
        self._at = -math.inf
        self._count = 0

    def admit(self, key: object) -> int | None:
        """None: do not log ``key`` (it repeats); else log it, saying how many times
        it repeated since last logged. A None ``key`` (no failure) is always logged
        and does not interrupt a run of repeats: a vetoed promotion that alternates
        with a decision to wait is still the same failure again."""
        if key is None:
            return 0
        now = self._clock()
        if key == self._last and now - self._at < REPEAT_FAILED_EVERY:
            self._count += 1
            return None
        repeats = self._count if key == self._last else 0
        self._last, self._at, self._count = key, now, 0
        return repeats


def decision_line(
    d: Decision, state: NodeState, error: str, repeats: int = 0
) -> tuple[str, dict[str, object]]:
    """A decision's log line, and its fields for the JSON log (``state``: the node's
    before the decision)."""
    names = [type(a).__name__ for a in d.actions]
    acts = ", ".join(names)
    text = (
        f"{d.rule}: {d.reason}"
        + (f" [{acts}]" if acts else "")
        + (f" FAILED: {error}" if error else "")
        + (f" (the same {repeats} more times since)" if repeats else "")
    )
    fields: dict[str, object] = {
        "rule": d.rule,
        "reason": d.reason,
        "role": state.role.value,
        "epoch": state.epoch,
        "actions": names,
        "error": error or None,
    }
    if repeats:
        fields["repeated"] = repeats
    return text, fields


def iso_utc(created: float) -> str:
    """``created`` (seconds since the epoch) as ``2026-12-02T16:22:53.123Z``."""
    stamp = datetime.fromtimestamp(created, tz=UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


class _Masking:
    secrets: tuple[str, ...] = ()

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


class TextFormatter(_Masking, logging.Formatter):
    """The human format, secrets masked."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__(TEXT_FORMAT)
        self.secrets = _usable(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return self.mask(super().format(record))


class JsonFormatter(_Masking, logging.Formatter):
    """One JSON object per record, on one line (newlines in a message are escaped).

    ``static`` keys (the service and node) go into every line after the base keys.
    """

    def __init__(
        self, static: Mapping[str, object] | None = None, secrets: Iterable[str] = ()
    ) -> None:
        super().__init__()
        self.static = dict(static or {})
        self.secrets = _usable(secrets)

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": iso_utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self.mask(record.getMessage()),
        }
        for key, value in self.static.items():
            out.setdefault(key, value)
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, Mapping):
            for key, value in fields.items():
                out.setdefault(str(key), _masked(self, value))
        if record.exc_info:
            out["exception"] = self.mask(self.formatException(record.exc_info))
        elif record.exc_text:
            out["exception"] = self.mask(record.exc_text)
        if record.stack_info:
            out["stack"] = self.mask(self.formatStack(record.stack_info))
        return json.dumps(out, default=str, ensure_ascii=False)


def _masked(f: _Masking, value: object) -> object:
    if isinstance(value, str):
        return f.mask(value)
    if isinstance(value, list | tuple):
        return [_masked(f, v) for v in value]
    return value


def _usable(secrets: Iterable[str]) -> tuple[str, ...]:
    # Longest first: a secret that contains another is masked whole.
    return tuple(sorted({s for s in secrets if len(s) >= MIN_MASKED}, key=len, reverse=True))


def secrets_of(files: Iterable[Path | None]) -> list[str]:
    """The text of each secret file that can be read (whole, and without its trailing
    newline), to mask it in the log; a file that cannot be read is left out (the
    config checks report it)."""
    out: list[str] = []
    for path in files:
        if path is None:
            continue
        try:
            raw = path.read_bytes()[:4096]
        except OSError:
            continue
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            continue  # random bytes: never text in a log line
        out += [text, text.rstrip("\n"), text.strip()]
    return out


def setup(
    level: str = "info",
    *,
    json_lines: bool = False,
    static: Mapping[str, object] | None = None,
    secrets: Iterable[str] = (),
    stream: Any = None,
) -> logging.Handler:
    """Send every logger of this process to ``stream`` (stderr) in one format, at
    ``level`` and above; replaces the handler an earlier call set up (and no other).
    With ``json_lines``, uncaught exceptions and warnings are logged too."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    secrets = list(secrets)
    handler.setFormatter(JsonFormatter(static, secrets) if json_lines else TextFormatter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _OURS, False):
            root.removeHandler(old)
    setattr(handler, _OURS, True)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    if json_lines:
        logging.captureWarnings(True)
        sys.excepthook = _uncaught
        threading.excepthook = _uncaught_in_thread
    return handler


def teardown() -> None:
    """Undo :func:`setup` (for tests that run a command in-process)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _OURS, False):
            root.removeHandler(old)
    logging.captureWarnings(False)
    sys.excepthook = sys.__excepthook__
    threading.excepthook = threading.__excepthook__


_OURS = "_dbha_handler"
_crash = logging.getLogger("dbha.crash")


def _uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    _crash.critical("uncaught exception: %s", exc, exc_info=(kind, exc, tb))


def _uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    exc = args.exc_value if args.exc_value is not None else args.exc_type()
    _crash.critical(
        "uncaught exception in thread %s: %s",
        name,
        exc,
        exc_info=(args.exc_type, exc, args.exc_traceback),
    )
