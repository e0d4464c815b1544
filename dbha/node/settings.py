"""Do the two nodes share the settings they must (dbha.config.digest)?

Each beat carries the sender's digest of its shared settings. The loop shows
:meth:`SettingsWatch.seen` the peer's newest beat every tick (a string
comparison); when the digests differ, one short-lived thread asks the peer's
door for its ``status`` (bounded: :data:`ASK_TIMEOUT` per address), whose
``settings`` field lists its shared settings by key, and the keys that differ are
logged once (WARNING) and shown by ``dbha status`` and ``dbha check``. A beat
without a digest (an older peer) is "unknown": no mismatch is reported.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping
from typing import Any

from dbha.beat.wire import Beat
from dbha.config import Config
from dbha.config.digest import UNKNOWN, Value, differing, digest, key_id, shared_settings
from dbha.node.control import ControlError, peer_request

log = logging.getLogger("dbha")

# Bound on one question to the peer's door, per address (seconds).
ASK_TIMEOUT = 1.0
# While the digests differ and the keys are not known, ask again after FIRST_RETRY,
# doubling up to ASK_EVERY (seconds): a peer that has just started sends beats a
# moment before its door listens.
FIRST_RETRY = 0.2
ASK_EVERY = 5.0
# Keys that stay unknown this long after the mismatch was seen are logged as unknown.
UNKNOWN_AFTER = 3.0


class SettingsWatch:
    """This node's shared settings and digest, and what is known of the peer's.

    Thread-safe: the loop calls :meth:`seen`, the status door :meth:`view`, the
    reload :meth:`reconfigure`; the asking thread reports under the same lock."""

    def __init__(self, cfg: Config, key: bytes) -> None:
        self.peer_name = cfg.peer.name
        self._addrs = [(str(p.peer_address), p.port) for p in cfg.heartbeat.paths]
        self._key = key
        self._key_id = key_id(key)
        self._lock = threading.Lock()
        self.values: dict[str, Value] = {}
        self.digest = ""
        self._peer: str | None = None  # the digest in the peer's newest beat ("" not sent)
        self._differ: list[str] | None = None  # None: not known (yet)
        self._theirs: Mapping[str, object] = {}
        self._asking = False
        self._asked_at = -math.inf
        self._retry = 0.0  # how long after a failed question the next one goes
        # When (monotonic) the digests were first compared as they are now, and when the
        # differing keys became known: the status shows how long finding them took.
        self._since = -math.inf
        self._known_at: float | None = None
        self._logged: object = None  # what the last line said, so each change is logged once
        self.reconfigure(cfg)

    def reconfigure(self, cfg: Config) -> str:
        """Take ``cfg``'s shared settings (after a reload); return the new digest."""
        values = shared_settings(cfg, self._key_id)
        with self._lock:
            self.values, self.digest = values, digest(values)
            self._differ, self._theirs, self._asked_at, self._retry = None, {}, -math.inf, 0.0
            self._since, self._known_at = time.monotonic(), None
            return self.digest

    def seen(self, beat: Beat | None, now: float | None = None) -> None:
        """The loop's look at the peer's newest beat: starts a question to the peer
        when the digests differ and the keys are not known yet. Never blocks."""
        now = time.monotonic() if now is None else now
        theirs = None if beat is None else beat.settings
        with self._lock:
            if theirs != self._peer:
                self._peer, self._differ, self._theirs = theirs, None, {}
                self._asked_at, self._since, self._known_at = -math.inf, now, None
                self._retry = 0.0
            mine = self.digest
            mismatch = bool(theirs) and theirs != mine
            ask = mismatch and self._differ is None and not self._asking
            ask = ask and now - self._asked_at >= self._retry
            if ask:
                self._asking, self._asked_at = True, now
        if not mismatch:
            if theirs and self._logged is not None:
                log.info("settings: %s shares this node's settings again", self.peer_name)
                self._logged = None
            return
        if ask and theirs is not None:
            threading.Thread(
                target=self._ask, args=(theirs, mine), name="dbha-settings", daemon=True
            ).start()

    def _ask(self, theirs: str, mine: str) -> None:
        differ: list[str] | None = None
        values: Mapping[str, object] = {}
        why = ""
        try:
            reply = peer_request(self._addrs, self._key, {"cmd": "status"}, timeout=ASK_TIMEOUT)
            told = _map(_map(reply.get("status")).get("settings"))
            values = _map(told.get("values"))
            if told.get("digest") != theirs or not values:
                why = "its answer is not of the settings its beats name (changed meanwhile?)"
            else:
                differ = differing(self.values, values)
        except ControlError as exc:
            why = str(exc)
        except Exception as exc:  # a bug here must not end quietly: say it, ask again later
            why = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._asking = False
            if self._peer != theirs or self.digest != mine:
                return  # something changed meanwhile: the next tick asks again
            self._differ, self._theirs = differ, values
            now = time.monotonic()
            self._known_at = None if differ is None else now
            self._retry = min(ASK_EVERY, max(FIRST_RETRY, 2 * self._retry))
            here = dict(self.values)
            if differ is None and now - self._since < UNKNOWN_AFTER:
                return  # not yet worth a line: the next tick asks again soon
        self._report(theirs, mine, differ, here, values, why)

    def _report(
        self,
        theirs: str,
        mine: str,
        differ: list[str] | None,
        here: Mapping[str, object],
        there: Mapping[str, object],
        why: str,
    ) -> None:
        said = (theirs, mine, None if differ is None else tuple(differ))
        if said == self._logged:
            return
        self._logged = said
        if differ is None:
            log.warning(
                "settings differ from %s's (digest here %s, %s's %s); which keys: unknown (%s)",
                self.peer_name,
                mine,
                self.peer_name,
                theirs,
                why,
            )
            return
        detail = "; ".join(
            f"{k} here {_show(here, k)}, {self.peer_name} {_show(there, k)}" for k in differ
        )
        log.warning(
            "settings differ from %s's: %s (both nodes must share them: docs/config.md)",
            self.peer_name,
            detail or "no key differs, the digests do (another dbha release?)",
        )

    def view(self) -> dict[str, Any]:
        """The ``settings`` field of the status answer (no secret in it)."""
        with self._lock:
            theirs, known = self._peer, self._known_at
            return {
                "digest": self.digest,
                "peer": self.peer_name,
                "peer_digest": theirs or UNKNOWN,
                "match": None if not theirs else theirs == self.digest,
                "differ": None if self._differ is None else list(self._differ),
                # seconds from the tick that saw the peer's digest to the keys known
                "differ_found_in_s": None if known is None else round(known - self._since, 3),
                "values": dict(self.values),
            }


def _map(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}


def _show(values: Mapping[str, object], key: str) -> str:
    return repr(values[key]) if key in values else "(not set)"
