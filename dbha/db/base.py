"""The one interface every database driver implements, and its errors.

A driver is thin: it observes and acts on ONE local database server. It never
decides anything (that is ``decide()``'s job) and never raises a library
exception: psycopg, PyMySQL, OSError and subprocess errors are mapped to the
``DbError`` family below at the driver's boundary.

Every verb takes an explicit ``timeout`` in seconds and must return or raise
within it (plus a small constant for cleanup): connect, statement and lock
timeouts are set from it, and external tools run under ``dbha.proc.run``.

What a probe reports (:class:`~dbha.core.model.DbStatus`, ``Position``, ``Role``,
``ReplicaInfo``) is engine-neutral and lives in the core, which decides on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from dbha.core.model import DbStatus, Position
from dbha.errors import DbhaError, Refused

# --------------------------------------------------------------------- errors


class DbError(DbhaError):
    """A database verb failed. The message says what and why, never a secret."""


class DbUnreachable(DbError):
    """The server could not be reached or refused the login."""


class DbTimeout(DbError):
    """The server did not answer within the verb's timeout (hung, overloaded, locked)."""


class DbRefused(DbError, Refused):
    """The verb was refused because doing it would be unsafe (e.g. a rejoin that would
    discard errant transactions without ``force``, a promotion past a diverged timeline).
    Nothing was changed."""


class DbCommandFailed(DbError):
    """An external tool (pg_rewind, pg_basebackup, mariadb-dump, a start/stop command)
    failed; the message carries its last line of output."""


# ------------------------------------------------------- what the verbs return


@dataclass(frozen=True, slots=True)
class Upstream:
    """A server to follow: the new primary's node name, address and port."""

    name: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class PromoteResult:
    already_primary: bool  # promoting a primary is a no-op that says so
    position: Position | None


@dataclass(frozen=True, slots=True)
class RejoinReport:
    """What a rejoin did, for the operator: nothing is ever silently discarded."""

    method: str  # "follow" | "pg_rewind" | "pg_basebackup" | "repoint" | "reclone"
    set_aside: tuple[str, ...] = ()  # paths of data kept aside (old data dir, dumps)
    errant: str | None = None  # errant transactions found (GTID set), if any
    notes: tuple[str, ...] = ()


# ------------------------------------------------------------------ interface


@runtime_checkable
class DatabaseDriver(Protocol):
    """One local database server. Every method is bounded by ``timeout`` seconds."""

    engine: str  # "postgresql" | "mariadb" | "mysql"

    def probe(self, timeout: float) -> DbStatus:
        """Observe the server. Never raises: an unreachable or half-broken server
        gives ``reachable=False`` (or ``role=UNKNOWN``) with ``error`` saying why.
        Read-only; idempotent. May keep one session open between calls for the
        next probe (never used by another verb; dropped on any error), with the
        same bound on a frozen server; ``close`` ends it."""
        ...

    def close(self) -> None:
        """End whatever the driver keeps open between calls (the probe's session).
        Idempotent; never raises; the driver stays usable (a later probe connects
        again). The supervisor calls it when it stops."""
        ...

    def fence(self, timeout: float, hard: bool = False) -> None:
        """Stop accepting writes now: once this returns, a write by an application
        user fails. ``hard`` also stops the server (fast/immediate). Idempotent.
        Raises DbError if the fence could not be verified."""
        ...

    def unfence(self, timeout: float) -> None:
        """Accept writes again (only for a primary confirmed to stay primary).
        Idempotent. Raises DbError."""
        ...

    def wait_replayed(self, timeout: float) -> Position:
        """On a replica: wait until everything received is applied; return the final
        position. Raises DbTimeout if it is not done in time, DbError otherwise."""
        ...

    def promote(self, timeout: float) -> PromoteResult:
        """Make this server a writable primary (PostgreSQL: pg_promote(wait) then a
        CHECKPOINT; MySQL/MariaDB: stop and reset replication, lift read_only).
        Idempotent: on a primary it changes nothing and says ``already_primary``."""
        ...

    def follow(self, upstream: Upstream, timeout: float) -> None:
        """Make this server a replica of ``upstream``, restarting it only if needed.
        Idempotent when it already follows ``upstream``."""
        ...

    def rejoin(
        self,
        upstream: Upstream,
        timeout: float,
        force: bool = False,
        unacknowledged: bool = False,
    ) -> RejoinReport:
        """Turn a former primary into a replica of ``upstream``. Keeps aside (never
        discards) whatever ``upstream`` lacks and reports it. Raises DbRefused when
        that needs ``force`` and it was not given. ``unacknowledged``: the caller
        knows that what this server holds past ``upstream`` was never acknowledged
        to a client (it ran in synchronous mode and never acknowledged alone); a
        driver that can confirm it on the server (MySQL/MariaDB: lossless semi-sync,
        AFTER_SYNC, held since) sets it aside without ``force``."""
        ...

    def prepare_replica(self, timeout: float) -> None:
        """On a replica: make it acknowledge its primary's synchronous commits
        (afterwards ``probe().sync_ready`` is True). PostgreSQL: its WAL receiver's
        application_name becomes this node's name (primary_conninfo rewritten with
        ALTER SYSTEM and reloaded; the rest of the conninfo and the slot kept);
        MySQL/MariaDB: the replica side of semi-sync on, the receiver reconnected so
        that it registers. Never restarts the server. Idempotent. Raises DbRefused
        on a primary, or when it cannot be done safely (nothing changed)."""
        ...

    def covers(self, candidate: Position, reference: Position) -> bool:
        """True only if a server at ``candidate`` has everything a server at
        ``reference`` had (no acknowledged commit would be lost by promoting it).
        Pure; False when it cannot be sure (e.g. diverged timelines)."""
        ...

    def set_synchronous(self, on: bool, timeout: float) -> None:
        """On a primary: make commits wait for the peer's acknowledgement (``on``) or
        stop waiting (``off``); verified by reading the setting back, after which
        ``probe().sync_replication`` says the same. ``off`` releases the commits
        that were waiting. PostgreSQL: ``synchronous_standby_names`` naming the pair
        (ALTER SYSTEM, so it survives a restart); MySQL/MariaDB: the semi-sync
        primary side, with a wait that never falls back to asynchronous on its own
        (runtime only: after a restart the probe tells, and the caller re-asserts).
        ``on`` is refused (DbRefused, nothing changed) on a replica; ``off`` is
        accepted anywhere. Idempotent. Raises DbTimeout / DbUnreachable / DbError."""
        ...
