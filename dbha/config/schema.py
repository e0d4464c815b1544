"""Typed readers for parsed TOML that record problems instead of raising.

:mod:`dbha.config` describes *what* the config holds; this module holds the
generic machinery it uses to read it: a :class:`Report` that collects every
problem in one pass, a :class:`Table` that reads one TOML table key by key and
reports the keys nobody asked for, and small converters (``integer(10, 60000)``,
``ip_address``, ``array(...)``) that turn a raw value into a typed one or raise
:class:`Invalid`, which never leaves this module and :mod:`dbha.config`.

Every problem line has one shape: ``key = value: what is wrong`` (or
``key: what is wrong`` when there is no value to show), where ``key`` is the
full dotted name with array indices counted from 0, e.g.
``heartbeat.path[1].port = 70000: must be between 1 and 65535``.
"""

from __future__ import annotations

import datetime
import difflib
import ipaddress
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class _Nothing:
    """Marks "no value to show" (``None`` cannot: TOML has no null, but be explicit)."""


NOTHING = _Nothing()

_SHOW_LIMIT = 80


def show(value: object, depth: int = 0) -> str:
    """Render a parsed TOML value the way it would be written in TOML, shortened."""
    if depth > 2:
        return "..."
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        text = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        text = "nan" if math.isnan(value) else ("inf" if value == math.inf else repr(value))
        text = "-inf" if value == -math.inf else text
    elif isinstance(value, list):
        text = "[" + ", ".join(show(v, depth + 1) for v in value[:8]) + "]"
    elif isinstance(value, dict):
        items = list(value.items())[:8]
        text = "{ " + ", ".join(f"{k} = {show(v, depth + 1)}" for k, v in items) + " }"
    elif isinstance(value, datetime.date | datetime.time):
        text = value.isoformat()
    else:  # Path, addresses and other values dbha itself produced
        text = show(str(value), depth)
    return text if len(text) <= _SHOW_LIMIT else text[: _SHOW_LIMIT - 3] + "..."


class Invalid(Exception):
    """A converter's verdict: what is wrong with a value, or with some of its items.

    Each part is ``(suffix, value, message)``: ``suffix`` is appended to the
    key (``"[1]"`` for an array item, ``""`` for the value itself) and
    ``value`` is what to show (``NOTHING`` = the value of the key itself).
    """

    def __init__(self, message: str = "", *, parts: list[tuple[str, object, str]] | None = None):
        self.parts = parts if parts is not None else [("", NOTHING, message)]
        super().__init__("; ".join(p[2] for p in self.parts))


def problem(key: str, value: object, message: str) -> str:
    """One problem line: ``key = value: message`` (no ``= value`` when NOTHING)."""
    if value is NOTHING:
        return f"{key}: {message}"
    return f"{key} = {show(value)}: {message}"


def _prefixes(key: str) -> list[str]:
    """``a.b[1].c`` -> ``["a", "a.b", "a.b[1]", "a.b[1].c"]``."""
    cuts = [i for i, c in enumerate(key) if c in ".["] + [len(key)]
    return [key[:i] for i in cuts if i > 0]


class Report:
    """Every problem found so far, plus which keys were bad or explicitly given."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self._bad: set[str] = set()
        self._given: set[str] = set()
        self._known: dict[str, str] = {}  # leaf name -> first full key read with that leaf
        self._unknown: list[tuple[int, str, str]] = []  # (index in problems, key, local hint)

    def add(self, key: str, value: object, message: str) -> None:
        """Record a problem with ``key`` (whose value was ``value``, or NOTHING)."""
        self.problems.append(problem(key, value, message))
        self._bad.add(key)

    def known(self, leaf: str, key: str) -> None:
        """Note that ``key`` (whose last part is ``leaf``) is a key the schema reads."""
        self._known.setdefault(leaf, key)

    def unknown(self, key: str, near: str | None) -> None:
        """Record an unknown key; its message is written by :meth:`finish`."""
        self._unknown.append((len(self.problems), key, near or ""))
        self.problems.append(key)

    def finish(self) -> None:
        """Write the unknown-key messages, now that every table has been read.

        The hint is a near miss in the same table if there is one, else the
        same name in another table (``interval_ms`` written under [database]).
        """
        for index, key, near in self._unknown:
            leaf = key[len(_prefixes(key)[-2]) + 1 :] if len(_prefixes(key)) > 1 else key
            hint = near or self._known.get(leaf, "")
            self.problems[index] = f"{key}: unknown key" + (
                f" (did you mean {hint}?)" if hint else ""
            )

    def mark_bad(self, key: str) -> None:
        self._bad.add(key)

    def mark_given(self, key: str) -> None:
        self._given.add(key)

    def given(self, key: str) -> bool:
        """True if the file set ``key`` itself (rather than leaving the default)."""
        return key in self._given

    def ok(self, *keys: str) -> bool:
        """True if none of ``keys`` (nor a table holding one of them) had a problem.

        Cross-field rules check this first, so that one wrong value is reported
        once, not again by every rule that involves it.
        """
        return not any(p in self._bad for k in keys for p in _prefixes(k))


class Table:
    """One TOML table being read; typed getters record problems instead of raising."""

    def __init__(self, report: Report, name: str, data: object) -> None:
        self.report = report
        self.name = name
        self._seen: list[str] = []
        self._broken = False
        self._data: dict[str, object] = {}
        if isinstance(data, dict):
            self._data = data
        elif data is not None:
            report.add(name, data, "must be a table")
            self._broken = True

    def key(self, key: str) -> str:
        """The full dotted name of ``key`` in this table."""
        return f"{self.name}.{key}" if self.name else key

    def has(self, key: str) -> bool:
        return key in self._data

    def _take(self, key: str) -> object:
        if key not in self._seen:
            self._seen.append(key)
            self.report.known(key, self.key(key))
        value = self._data.get(key, NOTHING)
        if value is not NOTHING:
            self.report.mark_given(self.key(key))
        return value

    def _convert(self, key: str, value: object, convert: Callable[[object], T]) -> T | None:
        try:
            return convert(value)
        except Invalid as exc:
            for suffix, shown, message in exc.parts:
                self.report.add(
                    self.key(key) + suffix, value if shown is NOTHING else shown, message
                )
            self.report.mark_bad(self.key(key))
            return None

    def missing(self, key: str, why: str = "") -> None:
        """Record that required ``key`` is absent (silently if the table itself was bad)."""
        if not self._broken:
            self.report.add(self.key(key), NOTHING, "required key is missing" + why)
        self.report.mark_bad(self.key(key))

    def get(self, key: str, convert: Callable[[object], T], default: T) -> T:
        """The converted value of optional ``key``; ``default`` if absent or invalid."""
        value = self._take(key)
        if value is NOTHING:
            return default
        result = self._convert(key, value, convert)
        return default if result is None else result

    def opt(self, key: str, convert: Callable[[object], T]) -> T | None:
        """The converted value of optional ``key``, or None if absent or invalid."""
        value = self._take(key)
        return None if value is NOTHING else self._convert(key, value, convert)

    def need(self, key: str, convert: Callable[[object], T], placeholder: T) -> T:
        """The converted value of required ``key``; ``placeholder`` (and a problem) if not."""
        value = self._take(key)
        if value is NOTHING:
            self.missing(key)
            return placeholder
        result = self._convert(key, value, convert)
        return placeholder if result is None else result

    def forbid(self, key: str, message: str) -> None:
        """``key`` must not appear; if it does, report ``message`` without showing its value."""
        if self._take(key) is not NOTHING:
            self.report.add(self.key(key), NOTHING, message)

    def table(self, key: str) -> Table:
        """The sub-table ``key`` (empty if absent)."""
        value = self._take(key)
        return Table(self.report, self.key(key), None if value is NOTHING else value)

    def tables(self, key: str, *, required: bool, max_items: int) -> list[Table]:
        """The array of tables ``[[key]]``, each named with its index."""
        value = self._take(key)
        if value is NOTHING:
            if required:
                self.missing(key, f" (add at least one [[{self.key(key)}]] table)")
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.report.add(
                self.key(key), value, f"must be an array of tables ([[{self.key(key)}]])"
            )
            return []
        if required and not value:
            self.report.add(self.key(key), value, "must have at least 1 entry")
        if len(value) > max_items:
            self.report.add(self.key(key), value, f"must have at most {max_items} entries")
            return []
        return [Table(self.report, f"{self.key(key)}[{i}]", v) for i, v in enumerate(value)]

    def finish(self) -> None:
        """Report every key of this table that no getter asked for (see Report.finish)."""
        for key in self._data:
            if key in self._seen:
                continue
            near = difflib.get_close_matches(key, self._seen, n=1, cutoff=0.6)
            self.report.unknown(self.key(key), self.key(near[0]) if near else None)


# ----------------------------------------------------------------- converters


def integer(lo: int, hi: int) -> Callable[[object], int]:
    def convert(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid("must be an integer")
        if not lo <= value <= hi:
            raise Invalid(f"must be between {lo} and {hi}")
        return value

    return convert


def number(lo: float, hi: float) -> Callable[[object], float]:
    def convert(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid("must be a number")
        if not math.isfinite(value) or not lo <= value <= hi:
            raise Invalid(f"must be between {lo:g} and {hi:g}")
        return float(value)

    return convert


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid("must be true or false")
    return value


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid("must be a string")
    if "\x00" in value:
        raise Invalid("must not contain a NUL character")
    return value


def string(pattern: str = r".+", rule: str = "must not be empty") -> Callable[[object], str]:
    """A string that fully matches ``pattern``; ``rule`` says what that means."""
    compiled = re.compile(pattern)

    def convert(value: object) -> str:
        text = _string(value)
        if not compiled.fullmatch(text):
            raise Invalid(rule)
        return text

    return convert


def choice(*options: str) -> Callable[[object], str]:
    def convert(value: object) -> str:
        text = _string(value)
        if text not in options:
            near = difflib.get_close_matches(text, options, n=1, cutoff=0.6)
            hint = f' (did you mean "{near[0]}"?)' if near else ""
            raise Invalid("must be one of " + ", ".join(f'"{o}"' for o in options) + hint)
        return text

    return convert


def absolute_path(value: object) -> Path:
    text = _string(value)
    if not text.startswith("/"):
        raise Invalid("must be an absolute path")
    return Path(text)


_SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux


def socket_path(value: object) -> Path:
    path = absolute_path(value)
    if len(str(path).encode()) > _SUN_PATH_MAX:
        raise Invalid(f"must be at most {_SUN_PATH_MAX} bytes long (the Unix socket path limit)")
    return path


def ip_address(value: object) -> IPAddress:
    text = _string(value)
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise Invalid("must be an IP address") from None
    if address.is_unspecified or address.is_multicast:
        raise Invalid("must be the address of one host (not unspecified or multicast)")
    return address


def ip_interface(value: object) -> IPInterface:
    """An address with its prefix length, e.g. ``198.18.0.100/24``."""
    text = _string(value)
    example = 'e.g. "198.18.0.100/24"'
    if "/" not in text:
        raise Invalid(f"must include the prefix length, {example}")
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:
        raise Invalid(f"must be an IP address with a prefix length, {example}") from None
    net = iface.network
    if net.num_addresses > 2 and iface.ip == net.network_address:
        raise Invalid(f"is the network address of {net}")
    if net.version == 4 and net.num_addresses > 2 and iface.ip == net.broadcast_address:
        raise Invalid(f"is the broadcast address of {net}")
    return iface


def array(
    item: Callable[[object], T], *, min_items: int = 0, max_items: int = 64
) -> Callable[[object], tuple[T, ...]]:
    """An array whose items each pass ``item``; every bad item is reported."""

    def convert(value: object) -> tuple[T, ...]:
        if not isinstance(value, list):
            raise Invalid("must be an array")
        if len(value) < min_items:
            raise Invalid(f"must have at least {min_items} item{'s' if min_items > 1 else ''}")
        if len(value) > max_items:
            raise Invalid(f"must have at most {max_items} items")
        out: list[T] = []
        parts: list[tuple[str, object, str]] = []
        for i, raw in enumerate(value):
            try:
                out.append(item(raw))
            except Invalid as exc:
                for suffix, shown, message in exc.parts:
                    parts.append((f"[{i}]{suffix}", raw if shown is NOTHING else shown, message))
        if parts:
            raise Invalid(parts=parts)
        return tuple(out)

    return convert


def one_or_more(
    item: Callable[[object], T], *, max_items: int = 16
) -> Callable[[object], tuple[T, ...]]:
    """Either one value or an array of them; always a tuple."""
    many = array(item, max_items=max_items)

    def convert(value: object) -> tuple[T, ...]:
        return many(value) if isinstance(value, list) else (item(value),)

    return convert


def argv(value: object) -> tuple[str, ...]:
    """A command as an argument vector: no shell, and an absolute program path."""
    args = array(string(r"(?s).*", ""), min_items=1)(value)
    if not args[0].startswith("/"):
        raise Invalid(
            parts=[("[0]", args[0], "must be an absolute path (there is no $PATH lookup)")]
        )
    return args
