"""The settings both nodes of a pair must share, and their digest.

Pure: a function of a :class:`Config` and the heartbeat key's id (never the key).
Each node puts the digest in its beats (:mod:`dbha.beat.wire`); a node whose
peer's digest differs from its own reports it (docs/config.md, "Settings the
two nodes share"), and asks the peer's door which keys differ.

The digest is the first 8 bytes (16 hex digits) of SHA-256 over a canonical
encoding: compact JSON with sorted keys of ``{"v": VERSION, "settings": ...}``.
Changing the list of shared keys bumps ``VERSION``, so two releases that judge
different keys never claim to agree.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping

from dbha.config.model import Config

VERSION = 1
DIGEST_LEN = 16  # hex digits
# What a node says of a digest it was not told (a peer of an older release).
UNKNOWN = "unknown"

Value = str | int | float | bool | None | list[str]


def key_id(key: bytes) -> str:
    """A short id of the heartbeat key that says nothing of the key: HMAC-SHA256 keyed
    with the key over a fixed label, 8 hex digits."""
    return hmac.new(key, b"dbha heartbeat key id", hashlib.sha256).hexdigest()[:8]


def shared_settings(cfg: Config, key_ident: str) -> dict[str, Value]:
    """The settings the two nodes must agree on, by dotted key (docs/config.md).

    ``key_ident`` is :func:`key_id` of the heartbeat key. Per-node settings (names,
    addresses, the VIP's interface, files and directories, commands) are left out;
    so are secrets."""
    hb, rep, arb = cfg.heartbeat, cfg.replication, cfg.arbiter
    return {
        "database.engine": cfg.database.engine,
        "service.cron_period_ms": cfg.service.cron_period_ms,
        "heartbeat.interval_ms": hb.interval_ms,
        "heartbeat.misses": hb.misses,
        "heartbeat.rise": hb.rise,
        "heartbeat.key_id": key_ident,
        # A path is a name and a port on both nodes (the addresses are mirrored).
        "heartbeat.path": [f"{p.name}:{p.port}" for p in hb.paths],
        "fence.self_fence_deadline_ms": cfg.fence.self_fence_deadline_ms,
        "vip.address": str(cfg.vip.address),
        "replication.mode": rep.mode,
        "replication.sync_fallback": rep.sync_fallback,
        "replication.max_lag_bytes": rep.max_lag_bytes,
        "replication.max_lag_transactions": rep.max_lag_transactions,
        "replication.max_lag_seconds": rep.max_lag_seconds,
        "arbiter.key": None if arb is None else arb.key,
        "arbiter.lease_ttl_ms": None if arb is None else arb.lease_ttl_ms,
    }


def digest(settings: Mapping[str, object]) -> str:
    """16 lowercase hex digits over the canonical encoding of ``settings``."""
    body = json.dumps(
        {"v": VERSION, "settings": dict(settings)},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )
    return hashlib.sha256(body.encode("ascii")).hexdigest()[:DIGEST_LEN]


def differing(mine: Mapping[str, object], theirs: Mapping[str, object]) -> list[str]:
    """The keys whose values differ, or that only one side has, sorted."""
    both = set(mine) & set(theirs)
    return sorted((set(mine) ^ set(theirs)) | {k for k in both if mine[k] != theirs[k]})


def mismatch_text(settings_status: object) -> str | None:
    """What ``dbha check`` says of a status answer's ``settings`` field: None when the
    digests agree or one is unknown; else the keys that differ (or that they are not
    known yet)."""
    if not isinstance(settings_status, Mapping) or settings_status.get("match") is not False:
        return None
    keys = settings_status.get("differ")
    peer = settings_status.get("peer")
    who = peer if isinstance(peer, str) else "the peer"
    if isinstance(keys, list) and keys:
        return f"settings differ from {who}: " + ", ".join(str(k)[:64] for k in keys[:20])
    if isinstance(keys, list):
        return f"settings digests differ from {who}'s, no key does (another dbha release?)"
    return f"settings differ from {who} (which keys: not known yet)"
