"""Simulated clocks: each node reads its own, with an offset and a rate error.

The simulation runs in steps of real time; a node's local clock reads
``offset + rate * t``. Offsets are large (the two clocks share no origin) and
rates differ by a fraction of a percent, far more than real quartz drift, so
any rule that compared one node's clock with the other's, or that measured a
deadline with no margin, fails in the simulation.
"""

from __future__ import annotations

import random

MAX_RATE_ERROR = 0.005


class Clock:
    __slots__ = ("offset", "rate")

    def __init__(self, offset: float, rate: float) -> None:
        self.offset = offset
        self.rate = rate

    @classmethod
    def random(cls, rng: random.Random) -> Clock:
        return cls(rng.uniform(0.0, 10_000.0), 1.0 + rng.uniform(-MAX_RATE_ERROR, MAX_RATE_ERROR))

    def local(self, t: float) -> float:
        """The local reading at real time ``t`` (seconds)."""
        return self.offset + self.rate * t
