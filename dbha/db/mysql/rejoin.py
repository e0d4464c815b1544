"""Rejoin a former MySQL/MariaDB primary as a replica of the new one.

1. Fence the local server (read_only, clients ended): a rejoining server takes
   no writes, whatever happens next.
2. Read what the upstream has (its GTID state, over the network with the
   client tool, so it works from wherever ``tool_prefix`` runs tools) and find
   the *errant* transactions: those this server executed that the upstream
   lacks (:func:`dbha.db.gtid.missing`).
3. None: re-point (``follow``) and report ``repoint``. If the upstream has
   purged the binlog this server needs to catch up, that needs a re-clone (5),
   and so ``force``, although nothing is errant.
4. Some, without ``force``: :class:`~dbha.db.base.DbRefused`; the server stays
   fenced and nothing else changes.
5. Some, with ``force``: keep aside, under ``aside_dir/rejoin-<time>-<name>/``,
   the errant transactions as binlog events (``errant-binlog.sql``, from the
   binlog tool reading this server's binlog over the connection), a full
   logical dump of this server (``local-data.sql``) and a summary
   (``rejoin-report.txt``); only then empty this server (its non-system
   databases and its binlog, without logging any of it) and re-clone it from
   the upstream (dump tool piped into the client tool, with the GTID position
   the dump carries), then start replicating. Report ``reclone``.

The system schema (accounts, grants) is not re-cloned: it is kept as it is and
the report says so. Credentials reach the tools through 0600 option files.
From the moment the server is emptied until it replicates, a marker file
(``aside_dir/reclone-unfinished``) says so: a rejoin that finds it resumes the
re-clone instead of mistaking a half-copied server for a clean one.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Protocol

from dbha.db import gtid
from dbha.db.base import DbError, DbRefused, DbTimeout, RejoinReport, Upstream
from dbha.db.mysql.conn import (
    Deadline,
    MysqlSettings,
    ReplicationStopped,
    Session,
    boundary,
    read_secret,
)
from dbha.db.mysql.flavour import Flavour
from dbha.db.mysql.rows import SYSTEM_SCHEMAS, ReplicaRow, ServerVars, parse_semisync
from dbha.db.mysql.tools import (
    option_file,
    option_text,
    pipe_tools,
    query_tool,
    spawn_to_file,
)


class Server(Protocol):
    """What a rejoin needs of the local server: its settings, a session bounded by
    the rejoin's deadline, and the driver's verbs it runs on the way (the MySQL
    driver is one; the rejoin never needs the rest of it)."""

    settings: MysqlSettings

    def session(self, deadline: Deadline, what: str) -> Session: ...

    def state(self, s: Session) -> tuple[ServerVars, ReplicaRow | None]: ...

    def semisync_as_replica(self, s: Session, rep: ReplicaRow | None) -> bool: ...

    def wait_streaming(self, s: Session, dl: Deadline, what: str) -> None: ...

    def fence(self, timeout: float, hard: bool = False) -> None: ...

    def follow(self, upstream: Upstream, timeout: float) -> None: ...

    def point_at(
        self, s: Session, upstream: Upstream, v: ServerVars, rep: ReplicaRow | None
    ) -> None: ...


log = logging.getLogger("dbha.db.mysql")

UNFINISHED = "reclone-unfinished"  # under aside_dir: a re-clone began and has not finished
FENCE_SHARE = 0.25  # of the budget, at most, for the fence that opens a rejoin
_GTID_LINE = re.compile(r"\bGTID\s+(\d+-\d+-\d+)\b|\bGTID_NEXT\s*=\s*'([^']+)'", re.IGNORECASE)
COMMON_DUMP_ARGS = ["--routines", "--events", "--triggers", "--hex-blob"]


def rejoin(
    driver: Server,
    upstream: Upstream,
    timeout: float,
    force: bool,
    unacknowledged: bool = False,
) -> RejoinReport:
    """Turn this former primary into a replica of ``upstream``; see the module text.
    Raises DbRefused (errant transactions and no ``force``, or the upstream is this
    very server), DbTimeout, DbCommandFailed, DbError."""
    settings = driver.settings
    dl, what = Deadline(timeout), f"rejoin {settings.name} -> {upstream.name}"
    with driver.session(dl, what) as s:
        v, rep = driver.state(s)
        if rep is not None and rep.follows(upstream.host, upstream.port) and rep.streaming:
            if driver.semisync_as_replica(s, rep):
                s.run(s.flavour.start_replica_sql)
                driver.wait_streaming(s, dl, what)
            return RejoinReport("follow", notes=(f"already replicating from {upstream.name}",))
    driver.fence(min(dl.left(what), max(1.0, timeout * FENCE_SHARE)))
    with driver.session(dl, what) as s:
        f = s.flavour
        v, rep = driver.state(s)
        if rep is not None:
            s.run(f.stop_replica_sql)  # keep what we compare still
            v, rep = driver.state(s)
    up_id, up_have = upstream_state(settings, f, upstream, dl, what)
    if up_have is None or v.executed is None:
        raise DbError(f"{what}: cannot read the GTID state of {upstream.name} or of this server")
    if up_id is not None and up_id == v.server_id:
        raise DbRefused(f"{what}: {upstream.name} has this server's own server id {up_id}")
    resumed = unfinished(settings)
    if resumed is not None:
        copy_from(driver, f, upstream, up_have, dl, what, resumed)
        return RejoinReport(
            "reclone",
            set_aside=resumed,
            notes=("resumed a re-clone an earlier rejoin left unfinished",),
        )
    errant = gtid.missing(f.name, v.executed, up_have)
    if errant is None:
        raise DbError(f"{what}: cannot compare {v.executed!r} with {up_have!r}")
    if not errant:
        try:
            driver.follow(upstream, dl.left(what))
        except ReplicationStopped as exc:
            if exc.row.io_errno not in f.binlog_gone_errnos:
                raise
            if not force:
                raise DbRefused(
                    f"{what}: {upstream.name} no longer has the binlog this server needs "
                    f"({exc.row.io_error}); it stays fenced. A forced rejoin re-clones it."
                ) from exc
            replication_reaches(settings, f, upstream, dl, what)
            kept, notes = keep_aside(driver, f, dl, what, v.executed, up_have, "")
            copy_from(driver, f, upstream, up_have, dl, what, kept)
            gone = f"{upstream.name} had purged the binlog this server needed: re-cloned"
            return RejoinReport("reclone", set_aside=kept, notes=(gone, *notes))
        return RejoinReport(
            "repoint",
            notes=(f"{upstream.name} has everything this server had ({v.executed})",),
        )
    lossless = unacknowledged and _lossless(driver, dl, what)
    if not force and not lossless:
        why = (
            "the server does not confirm that lossless semi-synchronous replication "
            "(AFTER_SYNC) held, so some may have been acknowledged"
            if unacknowledged
            else "they may have been acknowledged to clients (asynchronous commits)"
        )
        raise DbRefused(
            f"{what}: this server has transactions {upstream.name} lacks (errant: {errant}): "
            f"{why}; it stays fenced. A forced rejoin keeps them aside and re-clones it."
        )
    replication_reaches(settings, f, upstream, dl, what)
    log.warning("%s: errant transactions %s: keeping them aside, then re-cloning", what, errant)
    kept, notes = keep_aside(driver, f, dl, what, v.executed, up_have, errant)
    copy_from(driver, f, upstream, up_have, dl, what, kept)
    log.info("%s: re-cloned; kept aside: %s", what, ", ".join(kept))
    if lossless and not force:
        notes.insert(
            0,
            f"the errant transactions ({errant}) were never acknowledged to a client: "
            "they waited for a semi-synchronous acknowledgement (AFTER_SYNC) that never "
            "came; kept aside, not replayed",
        )
    return RejoinReport("reclone", set_aside=kept, errant=errant, notes=tuple(notes))


def _lossless(driver: Server, dl: Deadline, what: str) -> bool:
    """The server still has the primary side of semi-sync held with the lossless
    wait point (AFTER_SYNC) that dbha arms: then none of its commits was visible,
    nor acknowledged, before a replica had it. A restart of the server would have
    lost that runtime setting, so a server that still holds it held it throughout
    since dbha armed it."""
    with driver.session(dl, what) as s:
        semi = parse_semisync(s.rows(s.flavour.semisync_sql))
    return semi.holds and semi.wait_point == "AFTER_SYNC"


def upstream_state(
    settings: MysqlSettings, f: Flavour, upstream: Upstream, dl: Deadline, what: str
) -> tuple[int | None, str | None]:
    """The upstream's server id and everything it has applied (GTID text)."""
    lines = _upstream_query(settings, f, upstream, f.upstream_sql, dl, what)
    return f.parse_upstream(lines[0]) if lines else (None, None)


def _upstream_query(
    settings: MysqlSettings, f: Flavour, upstream: Upstream, sql: str, dl: Deadline, what: str
) -> list[str]:
    password = read_secret(settings.password_file, what)
    opts = option_text(settings.user, password, upstream.host, upstream.port, None)
    with option_file(opts, what) as cnf:
        return query_tool(
            [*_client(settings, f, cnf), "--batch", "--skip-column-names"],
            sql,
            dl,
            f"{what}: ask {upstream.name}",
        )


def replication_reaches(
    settings: MysqlSettings, f: Flavour, upstream: Upstream, dl: Deadline, what: str
) -> None:
    """Before anything is emptied: the replication account can log in to the
    upstream. A re-clone that copies the data and then cannot replicate (the
    upstream out of connections, held by commits that wait for a semi-sync
    acknowledgement; a wrong password) would leave this server emptied. Raises
    DbRefused with the reason; nothing has been changed then."""
    password = read_secret(settings.repl_password_file, f"{what}: replication")
    opts = option_text(settings.repl_user, password, upstream.host, upstream.port, None)
    try:
        with option_file(opts, what) as cnf:
            query_tool(
                [*_client(settings, f, cnf), "--batch", "--skip-column-names"],
                "SELECT 1;\n",
                dl,
                f"{what}: log in to {upstream.name} as {settings.repl_user}",
            )
    except DbTimeout:
        raise
    except DbError as exc:
        raise DbRefused(
            f"{what}: the replication account cannot log in to {upstream.name} ({exc}); "
            "nothing was changed and this server stays fenced"
        ) from exc


def release_waiters(
    settings: MysqlSettings,
    f: Flavour,
    upstream: Upstream,
    older_than: float,
    dl: Deadline,
    what: str,
) -> int:
    """End the upstream's sessions whose commit has waited for a semi-sync
    acknowledgement for longer than ``older_than`` seconds (since before the copy
    began): their transactions are in the copy or in the binlog this server
    replicates from, but it replicates from after them and will never acknowledge
    them, and each holds a connection the replication account may need. KILL
    CONNECTION, never KILL QUERY (which returns OK to the client: an
    acknowledgement): the client learns its outcome is unknown, which is the truth.
    Returns how many were ended; never raises on a session that is already gone."""
    sql = (
        "SELECT ID FROM information_schema.PROCESSLIST WHERE STATE LIKE "
        f"'Waiting for semi-sync ACK%' AND TIME >= {max(1, int(older_than + 0.999))};\n"
    )
    ids = [x.strip() for x in _upstream_query(settings, f, upstream, sql, dl, what)]
    ids = [x for x in ids if x.isdigit()]
    if ids:
        kill = "".join(f"KILL CONNECTION {i};\n" for i in ids)
        try:
            _upstream_query(settings, f, upstream, kill, dl, what)
        except DbError as exc:  # a session may have ended meanwhile (1094)
            log.info("%s: ending waiting sessions on %s: %s", what, upstream.name, exc)
        log.warning(
            "%s: ended %d session(s) on %s whose commits waited for an acknowledgement "
            "since before the copy (their clients were not told they committed)",
            what,
            len(ids),
            upstream.name,
        )
    return len(ids)


def _tool(settings: MysqlSettings, program: str, cnf: str) -> list[str]:
    """argv start of a client tool reading its credentials from option file ``cnf``
    (``--defaults-extra-file`` must come first)."""
    return [*settings.tool_prefix, program, f"--defaults-extra-file={cnf}"]


def _client(settings: MysqlSettings, f: Flavour, cnf: str) -> list[str]:
    connect = max(1, int(settings.connect_timeout + 0.999))
    return [*_tool(settings, f.client, cnf), f"--connect-timeout={connect}"]


def keep_aside(
    driver: Server, f: Flavour, dl: Deadline, what: str, had: str, up_have: str, errant: str
) -> tuple[tuple[str, ...], list[str]]:
    """Write the errant transactions (if any) as binlog events, a full dump and a
    summary under a new directory of ``aside_dir``; return their paths and notes for
    the report. Changes nothing on the server; raises if anything cannot be kept."""
    settings = driver.settings
    aside = _aside_dir(settings, what)
    summary = aside / "rejoin-report.txt"
    binlog_file, dump_file = aside / "errant-binlog.sql", aside / "local-data.sql"
    password = read_secret(settings.password_file, what)
    local = option_text(settings.user, password, settings.host, settings.port, settings.socket)
    with driver.session(dl, what) as s:
        logs = s.rows(f.binary_logs_sql)
    first_log = str(logs[0].get("Log_name", "")) if logs else ""
    kept: list[str] = []
    with option_file(local, what) as cnf:
        if errant and first_log:
            spawn_to_file(
                [
                    *_tool(settings, f.binlog, cnf),
                    "--read-from-remote-server",
                    "--to-last-log",
                    *f.binlog_args(errant, up_have),
                    first_log,
                ],
                binlog_file,
                dl,
                f"{what}: keep the errant transactions aside",
            )
            kept.append(str(binlog_file))
        spawn_to_file(
            [*_tool(settings, f.dump, cnf), *f.aside_dump_args(), *COMMON_DUMP_ARGS],
            dump_file,
            dl,
            f"{what}: keep this server's data aside",
        )
        kept.append(str(dump_file))
    found = _gtids_in(binlog_file) if errant and first_log else []
    notes = []
    if errant:
        notes.append(
            f"errant transactions ({errant}) kept aside in {binlog_file}"
            + (f": {len(found)} found ({found[0]} .. {found[-1]})" if found else "")
        )
        if not found:
            notes.append("WARNING: the binlog no longer holds the errant events: see the dump")
    notes += [
        f"this server's data before the re-clone kept in {dump_file}",
        "accounts and grants (the mysql schema) were kept as they were, not re-cloned",
    ]
    _write_summary(summary, what, had, up_have, errant, found)
    return (*kept, str(summary)), notes


def copy_from(
    driver: Server,
    f: Flavour,
    upstream: Upstream,
    up_have: str,
    dl: Deadline,
    what: str,
    kept: tuple[str, ...],
) -> None:
    """Empty this server, copy the upstream's databases into it and replicate.

    A marker under ``aside_dir`` (naming what was kept aside) lives from before the
    server is emptied until it replicates, so that a rejoin interrupted half-way is
    resumed as a re-clone, never mistaken for a server with a clean history."""
    settings = driver.settings
    copy_began = time.monotonic()
    marker = Path(settings.aside_dir) / UNFINISHED
    with boundary(f"{what}: write {marker}"):
        marker.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write("".join(f"{path}\n" for path in kept))
    databases = [
        line.strip()
        for line in _upstream_query(settings, f, upstream, "SHOW DATABASES;\n", dl, what)
        if line.strip() and line.strip().lower() not in SYSTEM_SCHEMAS
    ]
    _empty(driver, f, upstream, dl, what)
    password = read_secret(settings.password_file, what)
    local = option_text(settings.user, password, settings.host, settings.port, settings.socket)
    remote = option_text(settings.user, password, upstream.host, upstream.port, None)
    if databases:
        with option_file(local, what) as cnf, option_file(remote, what) as up_cnf:
            pipe_tools(
                [
                    *_tool(settings, f.dump, up_cnf),
                    *f.reclone_dump_args(),
                    *COMMON_DUMP_ARGS,
                    "--databases",
                    *databases,
                ],
                [*_client(settings, f, cnf), f"--init-command={f.no_binlog_sql}"],
                dl,
                f"{what}: copy from {upstream.name}",
            )
    release_waiters(settings, f, upstream, time.monotonic() - copy_began + 1.0, dl, what)
    with driver.session(dl, what) as s:
        if not databases:
            s.run(f.set_position_sql, (f.start_position(up_have),))
        if f.seed_history_sql is not None:
            # The copy holds at least what the upstream had before it was taken.
            v, _ = driver.state(s)
            history = gtid.merge(f.name, up_have, v.slave_pos or None)
            s.run(f.seed_history_sql, (history,))
        s.run(f.start_replica_sql)
        driver.wait_streaming(s, dl, what)
    with boundary(f"{what}: remove {marker}"):
        marker.unlink(missing_ok=True)


def unfinished(settings: MysqlSettings) -> tuple[str, ...] | None:
    """What an interrupted re-clone kept aside, if one was interrupted."""
    try:
        text = (Path(settings.aside_dir) / UNFINISHED).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeError) as exc:
        raise DbError(f"cannot read {settings.aside_dir}/{UNFINISHED}: {exc}") from exc
    return tuple(line for line in text.splitlines() if line.strip())


def _empty(driver: Server, f: Flavour, upstream: Upstream, dl: Deadline, what: str) -> None:
    """Drop this server's non-system databases and binlog, unlogged, and point it
    at the upstream (not started)."""
    with driver.session(dl, what) as s:
        s.run(f.no_binlog_sql)
        v, rep = driver.state(s)
        if rep is not None:
            s.run(f.stop_replica_sql)
            s.run(f.reset_replica_sql)
        for row in s.rows(f.databases_sql):
            name = str(row.get("name", ""))
            if name and name.lower() not in SYSTEM_SCHEMAS:
                s.run(f"DROP DATABASE `{name.replace('`', '``')}`")
        s.run(f.reset_binlogs_sql)
        if f.seed_history_sql is not None:
            s.run(f.set_position_sql, ("",))
        v, _ = driver.state(s)
        driver.point_at(s, upstream, v, None)


def _aside_dir(settings: MysqlSettings, what: str) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = Path(settings.aside_dir)
    path = base / f"rejoin-{stamp}-{settings.name}"
    with boundary(f"{what}: make {path}"):
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        n = 1
        while path.exists():
            n += 1
            path = base / f"rejoin-{stamp}-{settings.name}-{n}"
        path.mkdir(mode=0o700)
    return path


def _gtids_in(binlog_sql: Path) -> list[str]:
    """The GTIDs of the transactions in a binlog tool's output, in order."""
    found: list[str] = []
    try:
        with open(binlog_sql, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.startswith(("#", "SET")):
                    continue
                m = _GTID_LINE.search(line)
                if m:
                    found.append(m.group(1) or m.group(2))
    except OSError:
        return found
    return found


def _write_summary(
    path: Path, what: str, had: str, up_have: str, errant: str, found: list[str]
) -> None:
    text = (
        f"{what} at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n"
        f"this server had:      {had}\n"
        f"the upstream had:     {up_have}\n"
        f"errant (kept aside):  {errant or 'none'}\n"
        f"errant GTIDs found in the binlog: {', '.join(found) or 'none'}\n"
    )
    with boundary(f"{what}: write {path}"):
        path.write_text(text, encoding="utf-8")
        path.chmod(0o600)
