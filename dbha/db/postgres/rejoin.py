"""PostgreSQL verbs that change what a server follows or what its data directory
holds: follow (re-point a standby, or restart a cleanly stopped primary as one)
and rejoin (pg_rewind, falling back to pg_basebackup).

Nothing is discarded silently: before pg_rewind the WAL written after the
divergence point is copied aside (and, when configured, the whole data
directory); before pg_basebackup the old data directory is renamed aside. The
report names every path set aside. Credentials reach the tools through
passfiles only: the replication passfile for primary_conninfo and
pg_basebackup, a short-lived 0600 passfile owned by the OS user for pg_rewind.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from psycopg import conninfo as pgconninfo
from psycopg import sql

from dbha.db.base import DbCommandFailed, DbError, DbRefused, DbTimeout, RejoinReport, Upstream
from dbha.db.postgres.conn import (
    POLL,
    Deadline,
    PgSettings,
    format_lsn,
    one,
    parse_lsn,
    read_password,
    session,
    walfile_segno,
    walfile_timeline,
)
from dbha.db.postgres.tools import Tools, chown_to, temp_passfile, write_owned

log = logging.getLogger(__name__)

ASIDE_MARK = ".dbha-aside-"
_DIVERGED_RE = re.compile(r"diverged at WAL location ([0-9A-F]+/[0-9A-F]+) on timeline (\d+)")


def primary_conninfo(s: PgSettings, up: Upstream) -> str:
    """The standby's primary_conninfo: replication user + passfile, never a password."""
    return pgconninfo.make_conninfo(
        "",
        host=up.host,
        port=up.port,
        user=s.replication_user,
        passfile=str(s.replication_passfile),
        application_name=s.node_name,
        connect_timeout=s.replication_connect_timeout,
    )


_UPSTREAM_KEYS = ("host", "port", "user", "passfile", "application_name")


def _same_upstream(current: str, want: str, keys: tuple[str, ...] = _UPSTREAM_KEYS) -> bool:
    try:
        a, b = pgconninfo.conninfo_to_dict(current), pgconninfo.conninfo_to_dict(want)
    except Exception:  # psycopg.ProgrammingError on a malformed setting: not the same
        return False

    def norm(d: Mapping[str, object], k: str) -> str:
        v = str(d.get(k) or "")
        return v or "5432" if k == "port" else v

    return all(norm(a, k) == norm(b, k) for k in keys)


# ---------------------------------------------------------------------- follow


def follow(s: PgSettings, tools: Tools, up: Upstream, deadline: Deadline) -> None:
    """Make the local server a streaming standby of ``up``.

    A running standby is re-pointed by ALTER SYSTEM + reload (no restart; a no-op
    when it already streams from ``up``). A running primary is stopped cleanly
    first. A stopped server gets primary_conninfo, primary_slot_name and
    standby.signal and is started. The slot is created on ``up`` if missing.
    Returns once the WAL receiver streams from ``up``.

    A former primary (running or stopped) follows only if it committed nothing
    past its fork from ``up``: its shutdown checkpoint there is rewound (the WAL
    kept aside). Raises DbRefused (the server is left stopped) when it committed
    transactions past the fork, or when that cannot be told: rejoin it instead.
    Raises DbTimeout when it does not stream in time (upstream unreachable)."""
    want = primary_conninfo(s, up)
    if tools.running(deadline):
        with session(s, deadline) as conn:
            row = one(
                conn,
                "SELECT pg_is_in_recovery() AS recovery, "
                "current_setting('primary_conninfo') AS conninfo, "
                "current_setting('primary_slot_name') AS slot",
            )
            if row["recovery"]:
                replaced = ""
                if not (_same_upstream(row["conninfo"], want) and row["slot"] == s.slot):
                    ensure_slot(s, tools, up, deadline)
                    replaced = str(row["slot"] or "")
                    conn.execute(
                        sql.SQL("ALTER SYSTEM SET primary_conninfo = {}").format(sql.Literal(want))
                    )
                    conn.execute(
                        sql.SQL("ALTER SYSTEM SET primary_slot_name = {}").format(
                            sql.Literal(s.slot)
                        )
                    )
                    conn.execute("SELECT pg_reload_conf()")
                wait_streaming(s, up, deadline)
                if replaced and _same_upstream(row["conninfo"], want, keys=("host", "port")):
                    # the old slot lived on this same upstream: it is free now
                    drop_replaced_slot(s, tools, up, replaced, deadline)
                return
        tools.stop("fast", deadline)
    if not (s.data_dir / "standby.signal").exists():
        # A former primary: it can follow if nothing it wrote past the fork is a
        # transaction (a clean shutdown writes a checkpoint record there: that one
        # is rewound, with the WAL kept aside).
        try:
            dry = rewind(s, tools, up, deadline, dry_run=True)
        except DbCommandFailed as exc:
            # e.g. its WAL back to the checkpoint before the fork is gone: it cannot
            # be told whether it wrote past the fork. Nothing was changed.
            raise DbRefused(
                f"follow: cannot tell whether this server wrote past its fork from "
                f"{up.name} ({exc}); it is left stopped: rejoin it (rewinds or re-copies, "
                "keeping its data aside)"
            ) from exc
        if not dry.no_rewind:
            commits = diverged_commits(s, tools, dry, deadline)
            if commits != 0:
                raise DbRefused(
                    f"follow: this server wrote {commits if commits else 'unknown'} "
                    f"transaction(s) past its fork from {up.name} at {dry.where()}; "
                    "it is left stopped: rejoin it (keeps them aside)"
                )
            aside = keep_diverged_wal(s, tools, dry, deadline)
            rewind(s, tools, up, deadline, dry_run=False)
            log.info(
                "follow: rewound past %s (no transactions); WAL kept in %s", dry.where(), aside
            )
    ensure_slot(s, tools, up, deadline)
    write_standby_config(s, up)
    tools.start(deadline)
    wait_streaming(s, up, deadline)


def diverged_commits(
    s: PgSettings, tools: Tools, dry: RewindOutcome, deadline: Deadline
) -> int | None:
    """How many transactions this (stopped) server committed past the divergence
    point, read from its own WAL with pg_waldump; None when that cannot be told."""
    if dry.diverged_at is None or dry.timeline is None:
        return None
    try:
        later = [
            t
            for f in (s.data_dir / "pg_wal").iterdir()
            if (t := walfile_timeline(f.name)) is not None and t > dry.timeline
        ]
    except OSError:
        return None
    if later:
        return None  # it went on to timelines of its own: one pg_waldump pass cannot tell
    argv = [
        tools.bin("pg_waldump"),
        "-p",
        str(s.data_dir / "pg_wal"),
        "-t",
        str(dry.timeline),
        "-s",
        format_lsn(dry.diverged_at),
        "-r",
        "Transaction",
    ]
    res = tools.run(argv, deadline, check=False)
    if res.returncode != 0 and not res.stdout.strip() and "invalid record" not in res.stderr:
        return None  # it could not read the WAL at all (end-of-WAL errors are normal)
    return sum(1 for line in res.stdout.splitlines() if re.search(r"desc: COMMIT", line))


def _replication_conninfo(s: PgSettings, up: Upstream) -> str:
    """A replication connection to ``up`` from this host, as the replication user."""
    return pgconninfo.make_conninfo(
        "",
        host=up.host,
        port=up.port,
        user=s.replication_user,
        passfile=str(s.replication_passfile),
        connect_timeout=s.replication_connect_timeout,
    )


def ensure_slot(s: PgSettings, tools: Tools, up: Upstream, deadline: Deadline) -> None:
    """Create this node's physical slot on ``up`` if it is missing (over a
    replication connection from this host, as the replication user)."""
    conn = _replication_conninfo(s, up)
    tools.run(
        [
            tools.bin("pg_receivewal"),
            "--create-slot",
            "--if-not-exists",
            "-S",
            s.slot,
            "-d",
            conn,
            "-w",
        ],
        deadline,
    )


def drop_replaced_slot(
    s: PgSettings, tools: Tools, up: Upstream, old: str, deadline: Deadline
) -> None:
    """Drop ``old``, the slot this standby used before it was re-pointed to its own
    slot, on ``up``: left there, inactive, it would hold WAL on the upstream for
    ever. Best effort (a slot still in use, or already gone, is left alone; the
    upstream refuses to drop an active slot), logged."""
    if not old or old == s.slot:
        return
    conn = _replication_conninfo(s, up)
    try:
        tools.run(
            [tools.bin("pg_receivewal"), "--drop-slot", "-S", old, "-d", conn, "-w"], deadline
        )
    except DbError as exc:
        log.warning("follow: the replaced slot %r on %s was not dropped: %s", old, up.name, exc)
        return
    log.info("follow: dropped the slot %r this standby used on %s before", old, up.name)


def write_standby_config(s: PgSettings, up: Upstream) -> None:
    """Point a stopped server at ``up``: rewrite primary_conninfo and
    primary_slot_name in postgresql.auto.conf (whatever pg_rewind or pg_basebackup
    copied there from the source) and create standby.signal."""
    auto = s.data_dir / "postgresql.auto.conf"
    try:
        lines = auto.read_text(encoding="utf-8").splitlines() if auto.exists() else []
        keep = [
            ln
            for ln in lines
            if ln.split("=", 1)[0].strip() not in ("primary_conninfo", "primary_slot_name")
        ]
        keep.append(f"primary_conninfo = {_conf_quote(primary_conninfo(s, up))}")
        keep.append(f"primary_slot_name = {_conf_quote(s.slot)}")
        write_owned(auto, "\n".join(keep) + "\n", s.os_user)
        write_owned(s.data_dir / "standby.signal", "", s.os_user)
        (s.data_dir / "recovery.signal").unlink(missing_ok=True)
    except OSError as exc:
        raise DbError(f"cannot write the standby settings in {s.data_dir}: {exc}") from exc


def _conf_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def wait_streaming(s: PgSettings, up: Upstream, deadline: Deadline) -> None:
    """Poll until the WAL receiver streams from ``up`` (new sessions: the server may
    have just started)."""
    last = "no answer"
    while True:
        try:
            with session(s, Deadline(min(deadline.left(), 3.0), deadline.what)) as conn:
                row = conn.execute(
                    "SELECT status, sender_host, sender_port FROM pg_stat_wal_receiver"
                ).fetchone()
            if row is None:
                last = "no WAL receiver"
            elif row["status"] != "streaming":
                last = f"WAL receiver {row['status']}"
            elif row["sender_host"] != up.host or row["sender_port"] != up.port:
                last = f"streaming from {row['sender_host']}:{row['sender_port']}"
            else:
                return
        except DbTimeout:
            if deadline.remaining() < POLL * 2:
                raise
        except DbError as exc:
            last = str(exc)
        if deadline.remaining() < POLL * 2:
            raise DbTimeout(
                f"{deadline.what}: not streaming from {up.name} ({up.host}:{up.port}) "
                f"within {deadline.timeout:g} s: {last}"
            )
        time.sleep(POLL * 2)


# ---------------------------------------------------------------------- rewind


@dataclass(frozen=True, slots=True)
class RewindOutcome:
    no_rewind: bool
    diverged_at: int | None = None
    timeline: int | None = None

    def where(self) -> str:
        if self.diverged_at is None:
            return "an unknown point"
        return f"{format_lsn(self.diverged_at)} on timeline {self.timeline}"


def rewind(
    s: PgSettings, tools: Tools, up: Upstream, deadline: Deadline, dry_run: bool
) -> RewindOutcome:
    """Run pg_rewind against ``up`` (the target must be stopped; pg_rewind itself
    finishes crash recovery of an unclean one). Raises DbCommandFailed if it fails."""
    with temp_passfile(s, s.user, read_password(s.password_file)) as passfile:
        source = pgconninfo.make_conninfo(
            "",
            host=up.host,
            port=up.port,
            user=s.user,
            dbname=s.dbname,
            passfile=str(passfile),
            connect_timeout=s.replication_connect_timeout,
        )
        argv = [tools.bin("pg_rewind"), "-D", str(s.data_dir), f"--source-server={source}"]
        res = tools.run([*argv, "--dry-run"] if dry_run else argv, deadline)
    out = res.stdout + "\n" + res.stderr
    if "no rewind required" in out:
        return RewindOutcome(no_rewind=True)
    m = _DIVERGED_RE.search(out)
    if m is None:
        return RewindOutcome(no_rewind=False)
    return RewindOutcome(False, parse_lsn(m.group(1)), int(m.group(2)))


def _aside_path(s: PgSettings) -> Path:
    base = s.data_dir.with_name(s.data_dir.name + ASIDE_MARK + time.strftime("%Y%m%dT%H%M%S"))
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def keep_diverged_wal(s: PgSettings, tools: Tools, dry: RewindOutcome, deadline: Deadline) -> Path:
    """Copy the WAL this server wrote past the divergence point (the transactions
    the new primary lacks) aside, with a note saying what it is."""
    aside = _aside_path(s)
    segsize = _segment_size(tools, deadline)
    div_seg = (dry.diverged_at or 0) // segsize
    div_tli = dry.timeline or 0
    try:
        os.mkdir(aside, 0o700)
        chown_to(aside, s.os_user)
        if s.rejoin_copy_before_rewind:
            tools.run(["cp", "-a", str(s.data_dir), str(aside / "data")], deadline)
        (aside / "pg_wal").mkdir(mode=0o700)
        chown_to(aside / "pg_wal", s.os_user)
        copied = 0
        for f in sorted((s.data_dir / "pg_wal").iterdir()):
            tli, seg = walfile_timeline(f.name), walfile_segno(f.name, segsize)
            if tli is None or seg is None:
                continue
            if tli > div_tli or (tli == div_tli and seg >= div_seg):
                shutil.copy2(f, aside / "pg_wal" / f.name)
                chown_to(aside / "pg_wal" / f.name, s.os_user)
                copied += 1
        note = (
            f"dbha rejoin of node {s.node_name}: this server diverged from its new "
            f"upstream at {dry.where()}.\npg_wal/ holds the {copied} WAL segment(s) it "
            "wrote from there on (read them with pg_waldump); pg_rewind then replaced "
            "that history in the data directory.\n"
        )
        if s.rejoin_copy_before_rewind:
            note += "data/ is a full copy of the data directory taken before pg_rewind.\n"
        write_owned(aside / "README.dbha", note, s.os_user)
    except OSError as exc:
        raise DbError(f"rejoin: cannot keep the diverged WAL aside in {aside}: {exc}") from exc
    return aside


def _segment_size(tools: Tools, deadline: Deadline) -> int:
    raw = tools.controldata(deadline).get("Bytes per WAL segment", "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else 16 * 1024 * 1024


# --------------------------------------------------------------------- rejoin


def rejoin(s: PgSettings, tools: Tools, up: Upstream, deadline: Deadline) -> RejoinReport:
    """Turn this server into a standby of ``up``.

    A standby is just re-pointed (method "follow"). Otherwise the server is
    stopped cleanly and compared with ``up`` (pg_rewind --dry-run): nothing
    diverged -> "follow"; diverged -> the diverged WAL is copied aside and
    pg_rewind runs ("pg_rewind"); if pg_rewind cannot run or fails, the data
    directory is renamed aside and a fresh pg_basebackup taken ("pg_basebackup";
    if that fails too, the old directory is put back). Then the standby settings
    are rewritten, the server started, and the call returns once it streams.
    Never refuses (PostgreSQL keeps the diverged data aside instead)."""
    if tools.running(deadline):
        with session(s, deadline) as conn:
            recovery = one(conn, "SELECT pg_is_in_recovery() AS r")["r"]
        if recovery:
            follow(s, tools, up, deadline)
            return RejoinReport(method="follow", notes=("was already a standby: re-pointed",))
        try:
            tools.stop("fast", Deadline(deadline.left() * 0.5, deadline.what))
        except DbError:
            tools.stop("immediate", deadline)
    ensure_slot(s, tools, up, deadline)
    notes: list[str] = []
    try:
        dry = rewind(s, tools, up, deadline, dry_run=True)
    except DbCommandFailed as exc:
        notes.append(f"pg_rewind cannot run: {exc}")
        return _basebackup(s, tools, up, deadline, notes)
    if dry.no_rewind:
        write_standby_config(s, up)
        tools.start(deadline)
        wait_streaming(s, up, deadline)
        return RejoinReport(method="follow", notes=("nothing diverged: no rewind needed",))
    commits = diverged_commits(s, tools, dry, deadline)
    errant = (
        f"{commits if commits is not None else 'an unknown number of'} transaction(s) "
        f"committed past {dry.where()}"
    )
    aside = keep_diverged_wal(s, tools, dry, deadline)
    notes.append(f"diverged at {dry.where()}; the WAL written since is kept in {aside}")
    try:
        rewind(s, tools, up, deadline, dry_run=False)
    except DbCommandFailed as exc:
        notes.append(f"pg_rewind failed: {exc}")
        report = _basebackup(s, tools, up, deadline, notes)
        return RejoinReport(
            method=report.method,
            set_aside=(str(aside), *report.set_aside),
            errant=errant if commits != 0 else None,
            notes=report.notes,
        )
    write_standby_config(s, up)
    tools.start(deadline)
    wait_streaming(s, up, deadline)
    return RejoinReport(
        method="pg_rewind",
        set_aside=(str(aside),),
        errant=errant if commits != 0 else None,
        notes=tuple(notes),
    )


def _basebackup(
    s: PgSettings, tools: Tools, up: Upstream, deadline: Deadline, notes: list[str]
) -> RejoinReport:
    aside = _aside_path(s)
    try:
        os.rename(s.data_dir, aside)
    except OSError as exc:
        raise DbError(f"rejoin: cannot move {s.data_dir} aside: {exc}") from exc
    try:
        os.mkdir(s.data_dir, 0o700)
        chown_to(s.data_dir, s.os_user)
        tools.run(
            [
                tools.bin("pg_basebackup"),
                "-D",
                str(s.data_dir),
                "-X",
                "stream",
                "-S",
                s.slot,
                "--checkpoint=fast",
                "-w",
                "-d",
                pgconninfo.make_conninfo(
                    "",
                    host=up.host,
                    port=up.port,
                    user=s.replication_user,
                    passfile=str(s.replication_passfile),
                    application_name=s.node_name,
                    connect_timeout=s.replication_connect_timeout,
                ),
            ],
            deadline,
        )
    except (DbError, OSError) as exc:
        # Put the old directory back: a half-copied one is worth nothing.
        shutil.rmtree(s.data_dir, ignore_errors=True)
        try:
            os.rename(aside, s.data_dir)
        except OSError:
            notes.append(f"the old data directory stays in {aside}")
        raise DbCommandFailed(
            f"rejoin: pg_basebackup from {up.name} failed ({exc}); " + "; ".join(notes)
        ) from exc
    notes.append(f"the old data directory is kept in {aside}")
    write_standby_config(s, up)
    tools.start(deadline)
    wait_streaming(s, up, deadline)
    return RejoinReport(method="pg_basebackup", set_aside=(str(aside),), notes=tuple(notes))
