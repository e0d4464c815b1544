"""The heartbeat wire format: signed beats, their verification, replay defence.

Pure: no sockets, no clock, no logging. Everything here is a function of its
arguments, so the rules can be read and tested as tables.

A datagram is ``MAGIC | VERSION | payload | MAC``:

- ``MAGIC`` is ``b"DBHA"``, ``VERSION`` one byte (currently 1);
- ``payload`` is compact JSON (ASCII) of one :class:`Beat`;
- ``MAC`` is HMAC-SHA256, keyed with the pair's shared key, over everything
  before it.

The whole datagram is at most :data:`MAX_DATAGRAM` bytes, so a beat fits in
one Ethernet frame and is never fragmented (a lost fragment would lose the
beat; a reassembly queue is something an attacker can fill).

Within one version, unknown payload keys are ignored (a newer minor release may
add fields) and every known key must be present with its exact type, except the
optional ones later releases added, which an older sender's beats lack: ``plan``
and ``lag`` (see :class:`Beat`), and ``cfg``, the digest of the settings the pair
shares (:mod:`dbha.config.digest`; read as ``""``: unknown).

Replay defence, in short (the full rule is on :class:`ReplayGuard`): a beat is
admitted when its sequence number is newer than the last one admitted on its
path from the same boot, or when it starts a new boot *and proves it is fresh*
by echoing our own current boot id with a sequence number of ours newer than
any the current boot has echoed. Superseded boots are remembered and dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from dbha.core.model import NodeRole
from dbha.errors import DbhaError

MAGIC = b"DBHA"
VERSION = 1
MAC_LEN = hashlib.sha256().digest_size
HEADER_LEN = len(MAGIC) + 1
# 1400 leaves room for IPv4/IPv6 and UDP headers (and a VLAN tag or a small
# tunnel) inside a 1500-byte MTU, so a beat is never fragmented.
MAX_DATAGRAM = 1400
# Sequence numbers and epochs must fit a signed 64-bit integer, so every
# consumer (status JSON, a database column) can hold them.
MAX_INT = 2**63 - 1

_BOOT_RE = re.compile(r"[0-9a-f]{32}")
_DIGEST_RE = re.compile(r"[0-9a-f]{16}")


# What the sender believes it is: a NodeRole, or this word for a sender that does
# not know yet (``Beat.role`` None; read as fenced: it cannot serve).
UNKNOWN_ROLE = "unknown"


def role_of(word: str) -> NodeRole | None:
    """The role a beat's word names (None for UNKNOWN_ROLE); ValueError for any other."""
    return None if word == UNKNOWN_ROLE else NodeRole(word)


class DropReason(StrEnum):
    """Why a received datagram was not admitted. The set is fixed; status counts each."""

    MALFORMED = "malformed"  # bad length, magic, version, JSON, field or type
    OVERSIZE = "oversize"  # longer than MAX_DATAGRAM
    BAD_SIGNATURE = "bad_signature"  # unsigned, truncated MAC, or another key
    UNKNOWN_SERVICE = "unknown_service"  # signed, but for another service id
    UNKNOWN_NODE = "unknown_node"  # sender is not our peer (or claims to be us)
    WRONG_PATH = "wrong_path"  # sent for another path than the one it arrived on
    REPLAYED = "replayed"  # sequence not newer than the last admitted one
    STALE_BOOT = "stale_boot"  # from a boot id that a newer boot superseded
    UNPROVEN_BOOT = "unproven_boot"  # a new boot id that has not yet proven it is fresh


class BeatEncodeError(DbhaError):
    """A beat could not be encoded (it would exceed MAX_DATAGRAM)."""


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(what)


def _is_int(value: object) -> bool:
    # bool is a subclass of int; a JSON true must not pass for a number.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_name(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 200 and value.isprintable()


@dataclass(frozen=True)
class DbSummary:
    """The sender's view of its own database, as carried in a beat.

    ``position`` is opaque text (a PostgreSQL ``LSN@timeline``, a GTID set);
    the receiver compares positions with the engine driver, never here.
    """

    reachable: bool = False
    writable: bool = False
    position: str = ""

    def __post_init__(self) -> None:
        _require(isinstance(self.reachable, bool), "db.reachable must be a bool")
        _require(isinstance(self.writable, bool), "db.writable must be a bool")
        _require(isinstance(self.position, str), "db.position must be a string")


@dataclass(frozen=True)
class Beat:
    """One heartbeat, as sent by ``node`` on ``path``.

    ``boot_id`` is random per start of the sender (32 lowercase hex digits);
    ``seq`` grows by one per send round within a boot and is the same on every
    path of a round. ``echo_boot``/``echo_seq`` are the receiver's own boot id
    and the newest sequence number the sender admitted from it (``""``/0 when
    it has heard nothing); they let the receiver tell a fresh beat from a
    replayed one. ``sent_at`` is the sender's wall clock, for display only:
    nothing decides on it, because the two clocks are not assumed in sync.

    The constructor validates every field and raises ValueError.
    """

    service: str
    node: str
    path: str
    boot_id: str
    seq: int
    epoch: int
    role: NodeRole | None  # None: the sender does not know yet ("unknown" on the wire)
    db: DbSummary = field(default_factory=DbSummary)
    maintenance: bool = False
    sent_at: float = 0.0
    echo_boot: str = ""
    echo_seq: int = 0
    # What the decision core needs of the peer beyond the above (see dbha.core.model.Announce).
    needs_resync: bool = False
    sync_mark: int | None = None  # the epoch of a "replica not in sync" mark
    eligible: bool = False  # a replica that could be promoted, by its own account
    # A node handing over: the handover is an operator's planned switchover. Optional
    # on the wire ("plan"): a beat without it (an older sender) says False.
    planned: bool = False
    # A replica: how far it is behind its primary, by its own account (bytes for
    # PostgreSQL, transactions for MySQL/MariaDB); None: unknown. Optional ("lag").
    behind: int | None = None
    # The digest of the settings the pair shares (16 hex digits); "" when not sent.
    settings: str = ""

    def __post_init__(self) -> None:
        # Every beat sent and received passes here: the checks are written out
        # rather than called (this is most of a heartbeat's CPU otherwise).
        problem = _beat_problem(self)
        if problem is not None:
            raise ValueError(problem)
        if type(self.role) is not NodeRole and self.role is not None:
            object.__setattr__(self, "role", role_of(self.role))  # ValueError on another word
        if type(self.sent_at) is not float:
            object.__setattr__(self, "sent_at", float(self.sent_at))


def _beat_problem(b: Any) -> str | None:  # Any: the fields are what is checked
    """What is wrong with ``b``'s fields, or None."""
    for name, value in (("service", b.service), ("node", b.node), ("path", b.path)):
        if not (type(value) is str and 0 < len(value) <= 200 and value.isprintable()):
            return f"{name} must be a printable, non-empty string"
    if not (type(b.boot_id) is str and _BOOT_RE.fullmatch(b.boot_id)):
        return "boot_id must be 32 lowercase hex digits"
    if not (type(b.seq) is int and 1 <= b.seq <= MAX_INT):
        return "seq must be in 1..2^63-1"
    if not (type(b.epoch) is int and 0 <= b.epoch <= MAX_INT):
        return "epoch must be in 0..2^63-1"
    if b.role is not None and not isinstance(b.role, str):
        return "role must be a string"
    if type(b.db) is not DbSummary:
        return "db must be a DbSummary"
    if type(b.maintenance) is not bool:
        return "maintenance must be a bool"
    if not (type(b.sent_at) in (int, float) and math.isfinite(b.sent_at)):
        return "sent_at must be a finite number"
    if not (b.echo_boot == "" or (type(b.echo_boot) is str and _BOOT_RE.fullmatch(b.echo_boot))):
        return "echo_boot must be empty or 32 lowercase hex digits"
    if not (type(b.echo_seq) is int and 0 <= b.echo_seq <= MAX_INT):
        return "echo_seq must be in 0..2^63-1"
    if (b.echo_boot == "") != (b.echo_seq == 0):
        return "echo_boot and echo_seq go together"
    if type(b.needs_resync) is not bool:
        return "needs_resync must be a bool"
    if not (b.sync_mark is None or (type(b.sync_mark) is int and 0 <= b.sync_mark <= MAX_INT)):
        return "sync_mark must be null or in 0..2^63-1"
    if type(b.eligible) is not bool:
        return "eligible must be a bool"
    if type(b.planned) is not bool:
        return "planned must be a bool"
    if not (b.behind is None or (type(b.behind) is int and 0 <= b.behind <= MAX_INT)):
        return "behind must be null or in 0..2^63-1"
    if not (b.settings == "" or (type(b.settings) is str and _DIGEST_RE.fullmatch(b.settings))):
        return "settings must be empty or 16 lowercase hex digits"
    return None


@dataclass(frozen=True)
class Drop:
    """A datagram that was not admitted: the reason (counted) and a detail (logged)."""

    reason: DropReason
    detail: str


def new_boot_id() -> str:
    """Return a fresh random boot id (128 bits, hex)."""
    return secrets.token_hex(16)


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "sha256")  # the one-shot C path


def _payload(beat: Beat) -> dict[str, Any]:
    return {
        "svc": beat.service,
        "node": beat.node,
        "path": beat.path,
        "boot": beat.boot_id,
        "seq": beat.seq,
        "epoch": beat.epoch,
        "role": UNKNOWN_ROLE if beat.role is None else beat.role.value,
        "db": {"up": beat.db.reachable, "rw": beat.db.writable, "pos": beat.db.position},
        "maint": beat.maintenance,
        "sent": beat.sent_at,
        "echo": {"boot": beat.echo_boot, "seq": beat.echo_seq},
        "resync": beat.needs_resync,
        "mark": beat.sync_mark,
        "elig": beat.eligible,
        "plan": beat.planned,
        "lag": beat.behind,
        **({"cfg": beat.settings} if beat.settings else {}),
    }


def encode(beat: Beat, key: bytes) -> bytes:
    """Return the signed datagram for ``beat``.

    Raises BeatEncodeError when it would exceed MAX_DATAGRAM (typically a very
    long GTID set in ``db.position``); the caller decides what to leave out.
    """
    return _sign(_payload(beat), key)


def encode_paths(beat: Beat, key: bytes, paths: Sequence[str]) -> list[bytes]:
    """``encode(replace(beat, path=p), key)`` for every ``p`` of ``paths``, in order,
    with the beat validated and laid out once (a send round's datagrams differ
    only in their path). Raises ValueError on an invalid path name and
    BeatEncodeError as ``encode`` does."""
    for path in paths:
        _require(_is_name(path), "path must be a printable, non-empty string")
    payload = _payload(beat)
    out = []
    for path in paths:
        payload["path"] = path
        out.append(_sign(payload, key))
    return out


def _sign(payload: dict[str, Any], key: bytes) -> bytes:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    signed = MAGIC + bytes([VERSION]) + body.encode("ascii")
    size = len(signed) + MAC_LEN
    if size > MAX_DATAGRAM:
        raise BeatEncodeError(f"beat is {size} bytes, more than the {MAX_DATAGRAM}-byte limit")
    return signed + _mac(key, signed)


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; Python's parser accepts them unless told not to.
    raise ValueError(f"non-standard JSON constant {name}")


def _beat_from(obj: object) -> Beat:
    """Build a Beat from a parsed payload; raises ValueError/TypeError/KeyError on any defect."""
    if not isinstance(obj, dict):
        raise ValueError("payload is not an object")
    db = obj["db"]
    echo = obj["echo"]
    _require(isinstance(db, dict) and isinstance(echo, dict), "db and echo must be objects")
    return Beat(
        service=obj["svc"],
        node=obj["node"],
        path=obj["path"],
        boot_id=obj["boot"],
        seq=obj["seq"],
        epoch=obj["epoch"],
        role=obj["role"],
        db=DbSummary(reachable=db["up"], writable=db["rw"], position=db["pos"]),
        maintenance=obj["maint"],
        sent_at=obj["sent"],
        echo_boot=echo["boot"],
        echo_seq=echo["seq"],
        needs_resync=obj["resync"],
        sync_mark=obj["mark"],
        eligible=obj["elig"],
        planned=obj.get("plan", False),
        behind=obj.get("lag"),
        settings=obj.get("cfg", ""),  # optional: older senders do not send it
    )


def decode(data: bytes, key: bytes) -> Beat | Drop:
    """Check framing and signature, then parse: a Beat, or a Drop saying why not.

    Never raises, whatever ``data`` holds. The signature is checked before the
    payload is parsed, so nobody without the key reaches the JSON parser.
    Identity (service, node, path) and freshness are checked by :func:`verify`.
    """
    n = len(data)
    if n > MAX_DATAGRAM:
        return Drop(DropReason.OVERSIZE, f"{n} bytes > {MAX_DATAGRAM}")
    if n < HEADER_LEN + 2 + MAC_LEN:  # the smallest payload is "{}"
        return Drop(DropReason.MALFORMED, f"too short ({n} bytes)")
    if data[: len(MAGIC)] != MAGIC:
        return Drop(DropReason.MALFORMED, "bad magic")
    if data[len(MAGIC)] != VERSION:
        return Drop(DropReason.MALFORMED, f"unsupported version {data[len(MAGIC)]}")
    signed, mac = data[:-MAC_LEN], data[-MAC_LEN:]
    if not hmac.compare_digest(mac, _mac(key, signed)):
        return Drop(DropReason.BAD_SIGNATURE, "MAC does not verify")
    try:
        obj = json.loads(signed[HEADER_LEN:].decode("ascii"), parse_constant=_reject_constant)
        return _beat_from(obj)
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        # Only a key holder gets here: a sender bug or a version skew, worth a clear detail.
        return Drop(DropReason.MALFORMED, f"bad payload: {type(exc).__name__}: {exc}"[:200])


@dataclass(frozen=True)
class ReplayGuard:
    """Which beats from one peer are new: pure state, one instance per peer.

    ``own_boot`` is the receiver's own boot id. The rule, applied in order:

    1. Same boot as the current one: admitted iff ``seq`` is greater than the
       last seq admitted *on that path* (each path has its own counter because
       paths reorder against each other); otherwise REPLAYED.
    2. A boot id in ``superseded`` (a bounded list, newest last): STALE_BOOT.
       A captured beat from an old boot, re-sent, lands here.
    3. No current boot yet (we just started): admitted, and it becomes the
       current boot. We have no memory to judge it by; if it was a replay, the
       live peer displaces it by rule 4 within about two intervals.
    4. A new boot id: admitted, and the current boot is superseded, only when
       the beat *proves it is fresh*: it echoes our own boot id with an
       ``echo_seq`` greater than any the current boot has echoed. Only a beat
       made after the peer heard our recent beats can carry that, so a captured
       beat from an older boot can never displace a live one. Otherwise
       UNPROVEN_BOOT. A restarted peer proves itself as soon as it has heard
       one of our beats on any path, about one interval after it starts.

    A signature only proves who made a beat, not when; rule 4 is what stops
    a replayed old boot from superseding (and so locking out) the live peer.
    """

    own_boot: str
    boot: str | None = None
    seqs: tuple[tuple[str, int], ...] = ()
    echo_high: int = 0
    superseded: tuple[str, ...] = ()
    keep: int = 16

    def last_seq(self) -> int:
        """The newest seq admitted from the current boot on any path (0 if none)."""
        return max((s for _, s in self.seqs), default=0)

    def admit(self, beat: Beat) -> tuple[ReplayGuard, DropReason | None]:
        """Return the guard after seeing ``beat`` and None, or the unchanged guard and a reason."""
        echoed = beat.echo_seq if beat.echo_boot == self.own_boot else 0
        if beat.boot_id == self.boot:
            seqs = dict(self.seqs)
            if beat.seq <= seqs.get(beat.path, 0):
                return self, DropReason.REPLAYED
            seqs[beat.path] = beat.seq
            guard = replace(
                self, seqs=tuple(sorted(seqs.items())), echo_high=max(self.echo_high, echoed)
            )
            return guard, None
        if beat.boot_id in self.superseded:
            return self, DropReason.STALE_BOOT
        if self.boot is not None and echoed <= self.echo_high:
            return self, DropReason.UNPROVEN_BOOT
        superseded = self.superseded
        if self.boot is not None:
            superseded = (*superseded, self.boot)[-self.keep :]
        guard = replace(
            self,
            boot=beat.boot_id,
            seqs=((beat.path, beat.seq),),
            echo_high=echoed,
            superseded=superseded,
        )
        return guard, None


def verify(
    data: bytes,
    *,
    key: bytes,
    service: str,
    me: str,
    peer: str,
    path: str,
    guard: ReplayGuard,
) -> tuple[ReplayGuard, Beat | Drop]:
    """Decide whether ``data``, received on ``path``, is a new beat from ``peer``.

    Returns the guard to keep and either the admitted Beat or a Drop. Never
    raises. Checks run cheapest-and-least-trusting first: framing, signature,
    service, node, path, freshness. A beat claiming to come from ``me`` is
    UNKNOWN_NODE: that is our own beat reflected back (or a misconfiguration).
    """
    decoded = decode(data, key)
    if isinstance(decoded, Drop):
        return guard, decoded
    beat = decoded
    if beat.service != service:
        return guard, Drop(DropReason.UNKNOWN_SERVICE, f"service {beat.service!r}")
    if beat.node == me:
        return guard, Drop(DropReason.UNKNOWN_NODE, f"beat claims to come from us ({me!r})")
    if beat.node != peer:
        return guard, Drop(DropReason.UNKNOWN_NODE, f"node {beat.node!r} is not our peer")
    if beat.path != path:
        return guard, Drop(DropReason.WRONG_PATH, f"sent for path {beat.path!r}, came on {path!r}")
    guard, reason = guard.admit(beat)
    if reason is not None:
        return guard, Drop(reason, f"boot {beat.boot_id[:8]} seq {beat.seq}")
    return guard, beat
