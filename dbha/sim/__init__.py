"""The deterministic simulation of a dbha pair.

Two real decision cores (:func:`dbha.core.decide.decide`), simulated heartbeat paths
with loss, delay, duplication and partitions of each path, simulated
databases (:mod:`dbha.db.fake`), a simulated gateway and arbiter, simulated
clocks and supervisor stalls, driven by random fault schedules from a seed.
After every step the invariants of docs/design.md are checked
(:mod:`dbha.sim.invariants`).

Run it: ``python -m dbha.sim --schedules 10000 --seed 1 --workers 2``; replay
one seed with its trace: ``python -m dbha.sim --seed S --schedules 1 -v``.
"""

from dbha.sim.runner import World, run_seed
from dbha.sim.schedules import Schedule, generate
from dbha.sim.world import Result

__all__ = ["Result", "Schedule", "World", "generate", "run_seed"]
