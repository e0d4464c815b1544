"""The numbers the decision core decides with, and the fixed shares they are
derived with. :func:`dbha.config.params.params` derives them from a config, once
(a supervisor at its start, a cron round with its longer deadline, each node of
the simulation); :func:`dbha.core.decide.decide` takes them as they are."""

from __future__ import annotations

from dataclasses import dataclass

# Fraction of the self-fence deadline a lease lasts after its evidence.
LEASE_FRACTION = 0.85
# A synchronous primary falls back (fallback/arbiter modes) after its replica
# has been gone this many self-fence deadlines. The replica's own unilateral
# promotion must fit in FALLBACK_WINDOW_SHARE of it after the primary's last
# echo: it waits a deadline plus a safety check after the silence starts, so
# two deadlines left too thin a margin with a short deadline (the fast profile).
FALLBACK_DEADLINES = 3.0
# A replica in fallback mode promotes only within this share of that wait,
# counted from the newest beat of its own the primary echoed (clock margin).
FALLBACK_WINDOW_SHARE = 0.9
# The peer is "quiet" (ask for a safety check) after this many intervals
# without a beat on any path, before the paths are declared down.
QUIET_INTERVALS = 1.5


@dataclass(frozen=True, slots=True)
class Params:
    """The numbers decide() needs (seconds unless named otherwise)."""

    deadline: float  # D, seconds
    lease: float  # LEASE_FRACTION * D
    quiet: float  # ask for a safety check after this long without a beat
    safety_every: float  # at most one safety check per this long
    safety_timeout: float
    fallback_wait: float  # W
    fallback_window: float  # W * FALLBACK_WINDOW_SHARE
    handover_timeout: float
    lag_units: int
    lag_seconds: float
    sync: bool
    fallback: str  # "strict" | "fallback" | "arbiter"
    auto_rejoin: bool
    me: str
    peer: str
